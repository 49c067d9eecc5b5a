//! Returning freed heap memory to the OS after each learner step and rollout job.
//!
//! The learner and the engine run on tokio's blocking threads, and glibc's allocator gives each
//! thread an arena that keeps what it frees for reuse. A step frees gigabytes (logits, activations,
//! gradients of a batch) in whichever arena its thread had, and the next step, on another
//! thread, grows another: a SmolLM2-135M GRPO run on the CPU grew by ~2 GiB a step until the OOM
//! killer stopped it at 23 GiB (BENCHMARKS.md, "Memory"). `malloc_trim` hands those free pages
//! back.

/// Give the allocator's free pages back to the OS (glibc only; elsewhere nothing to do).
pub(crate) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks glibc's own free lists; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}
