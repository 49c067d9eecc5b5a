//! Memory: what each learner rank holds ([`ranks_memory`], logged per step and per stage) and
//! the process's resident memory.
//!
//! The graph returns freed heap memory to the OS after each learner step and rollout job. The
//! learner and the engine run on tokio's blocking threads, and glibc's allocator gives each
//! thread an arena that keeps what it frees for reuse. A step frees gigabytes (logits, activations,
//! gradients of a batch) in whichever arena its thread had, and the next step, on another
//! thread, grows another: a SmolLM2-135M GRPO run on the CPU grew by ~2 GiB a step until the OOM
//! killer stopped it at 23 GiB (BENCHMARKS.md, "Memory"). `malloc_trim`
//! ([`rlvr_learner::runtime::return_freed_memory`]) hands those free pages back.

/// What one learner rank holds: its ZeRO-3 slices (all zero without ZeRO-3) and its process's
/// peak resident memory.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RankMemory {
    /// Bytes of parameter, gradient and optimiser slices held between steps.
    pub held_bytes: f64,
    /// Of those, the optimiser state's bytes in host memory.
    pub offloaded_bytes: f64,
    /// What one unsharded learner holds for the same.
    pub unsharded_bytes: f64,
    /// The most bytes of gathered parameters alive at once.
    pub peak_gathered_bytes: f64,
    /// The process's peak resident memory, MiB.
    pub peak_rss_mb: f64,
}

/// Every learner rank's [`RankMemory`], in rank order (a collective over the learner's group;
/// alone, this process's).
pub(crate) fn ranks_memory(learner: &rlvr_learner::Learner) -> anyhow::Result<Vec<RankMemory>> {
    let m = learner.shard_memory();
    let mine = [
        m.map_or(0, |m| m.held) as f64,
        m.map_or(0, |m| m.offloaded) as f64,
        m.map_or(0, |m| m.unsharded) as f64,
        m.map_or(0, |m| m.peak_gathered) as f64,
        peak_rss_mb(),
    ];
    let all = match learner.with_group(|g| gather_f64s(g, &mine, learner.device())) {
        Some(gathered) => gathered?,
        None => mine.to_vec(),
    };
    Ok(all
        .chunks(mine.len())
        .map(|f| RankMemory {
            held_bytes: f[0],
            offloaded_bytes: f[1],
            unsharded_bytes: f[2],
            peak_gathered_bytes: f[3],
            peak_rss_mb: f[4],
        })
        .collect())
}

/// Every rank's `values` (as many on each) over `group`, whose collectives run on `device`.
fn gather_f64s(
    group: &rlvr_dist::ProcessGroup,
    values: &[f64],
    device: tch::Device,
) -> anyhow::Result<Vec<f64>> {
    let mut all = tch::Tensor::zeros(
        [(values.len() * group.world_size()) as i64],
        (tch::Kind::Double, device),
    );
    group.all_gather(&mut all, &tch::Tensor::from_slice(values).to_device(device))?;
    Ok(Vec::<f64>::try_from(all.to_device(tch::Device::Cpu))?)
}

/// A `/proc/self/status` figure in MiB (`VmRSS`: resident now; `VmHWM`: the peak); 0 where
/// /proc is missing.
fn status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The process's peak resident memory (`VmHWM`), in MiB.
pub(crate) fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// The process's resident memory now (`VmRSS`), in MiB.
pub(crate) fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}
