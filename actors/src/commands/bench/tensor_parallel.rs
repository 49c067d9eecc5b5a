//! `rlvr bench generate --tensor-parallel N`: one engine split over N local ranks against one
//! whole engine, side by side in one run. Every rank builds the same seeded learner and loads its
//! share of its weights; rank 0 first times the whole engine alone (with every core), then all
//! ranks time the split one together, and rank 0 reports both, whether they drew the same
//! tokens, and how far apart their log-probs are (per token, the maximum).

use std::sync::Arc;

use anyhow::Result;
use rlvr_core::{Completion, SamplingParams};
use rlvr_rollout::{Engine, NativeEngine};
use serde_json::json;

use super::generate::{engine, logprob_gap, timed, workload, GenerateArgs};

/// Run as one rank, or spawn the ranks and print rank 0's report.
pub(super) fn generate(args: &GenerateArgs) -> Result<()> {
    let (device, kind) = (args.model.device.device()?, args.model.dtype.kind());
    let Some((group, device)) = super::join_ranks(device, args.tensor_parallel, "tp")? else {
        return Ok(());
    };
    let group = Arc::new(group);
    let (rank, world) = (group.rank(), group.world_size());
    let (learner, label) = super::learner(&args.model, device, kind)?;
    let config = learner.model().config().clone();
    let chunks = learner.export_weights(1)?;
    let (requests, params) = workload(args, &config);
    let greedy = SamplingParams {
        temperature: 0.0,
        ..params.clone()
    };
    let sequences = args.batch * args.samples;
    let whole = if rank == 0 {
        // The ranks split the cores; alone, the whole engine gets all of them.
        let threads = tch::get_num_threads();
        tch::set_num_threads(threads * world as i32);
        let mut engine = engine(args, |max| Ok(NativeEngine::new(&config, device, kind, max, 0)))?;
        engine.load_weights(&chunks, 1)?;
        let (seconds, out) = timed(&mut engine, &requests, &params, args.repeats, device)?;
        let greedy = engine.generate(&requests, &greedy)?;
        tch::set_num_threads(threads);
        Some((seconds, out, greedy))
    } else {
        None
    };
    group.barrier()?;
    let mut engine = engine(args, |max| {
        NativeEngine::tensor_parallel(&config, device, kind, max, 0, group.clone())
    })?;
    engine.load_weights(&chunks, 1)?;
    let (seconds, out) = timed(&mut engine, &requests, &params, args.repeats, device)?;
    let split_greedy = engine.generate(&requests, &greedy)?;
    group.barrier()?;
    let Some((whole_seconds, whole_out, whole_greedy)) = whole else {
        return Ok(());
    };
    let tokens = (sequences * args.new_tokens) as f64;
    let same = |ours: &[Completion], theirs: &[Completion]| {
        ours.iter()
            .zip(theirs)
            .filter(|(a, b)| a.token_ids == b.token_ids)
            .count()
    };
    // Per token, over the completions that drew the same tokens (a sampled one may part at a
    // near tie: the split sums its products in another order).
    let gap = out
        .iter()
        .zip(&whole_out)
        .chain(split_greedy.iter().zip(&whole_greedy))
        .filter(|(a, b)| a.token_ids == b.token_ids)
        .flat_map(|(a, b)| a.logprobs.iter().zip(&b.logprobs).map(|(x, y)| (x - y).abs()))
        .fold(0.0f32, f32::max);
    let (same_sampled, same_greedy) = (same(&out, &whole_out), same(&split_greedy, &whole_greedy));
    let report = json!({
        "device": format!("{device:?}"), "dtype": format!("{:?}", args.model.dtype), "model": label,
        "backend": format!("{:?}", group.backend()), "tensor_parallel": world,
        "batch": args.batch, "samples": args.samples, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "tokens_per_s": tokens / seconds, "whole_tokens_per_s": tokens / whole_seconds,
        "split_over_whole": whole_seconds / seconds,
        "completions": out.len(), "same_tokens_sampled": same_sampled, "same_tokens_greedy": same_greedy,
        "logprob_max_abs_diff_vs_whole": gap, "logprob_max_abs_diff_vs_learner": logprob_gap(&learner, &requests, &out, 8),
    });
    if args.model.json {
        println!("{report}");
    } else {
        println!(
            "native engine over {world} ranks ({:?}), {label} model, {:?} on {device:?}",
            group.backend(),
            args.model.dtype
        );
        println!(
            "  {:.0} tokens/s against {:.0} for one whole engine ({:.2}x)",
            tokens / seconds,
            tokens / whole_seconds,
            whole_seconds / seconds
        );
        println!(
            "  of {} completions, {same_greedy} greedy and {same_sampled} sampled drew the whole engine's tokens; their log-probs within {gap:.1e}",
            out.len()
        );
    }
    Ok(())
}
