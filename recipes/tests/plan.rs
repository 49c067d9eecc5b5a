//! The planner's formulas against published figures, and its verdicts on the shipped recipes.

use rlvr_recipes::plan::{
    activation_bytes, kv_bytes_per_token, model_state_bytes, plan_stage, PlanRequest, StagePlan,
};
use rlvr_recipes::spec::{Dtype, ModelConfig};
use rlvr_recipes::{load, Resolved};

/// `tulu3-8b-rlvr` with the `sets` overrides, planned on one node of 8 GPUs of 80 GiB.
fn tulu3_8b_rlvr(sets: &[&str]) -> StagePlan {
    let req = PlanRequest {
        gpus: 8,
        gpu_mem_gib: 80.0,
        nodes: 1,
    };
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    plan_stage(load("tulu3-8b-rlvr", &sets).unwrap().stages()[0], &req)
}

fn config(name: &str) -> ModelConfig {
    match load(name, &[]).unwrap() {
        Resolved::Stage(r) => r.model.config.clone(),
        Resolved::Pipeline(_) => unreachable!(),
    }
}

#[test]
fn zero_paper_table_1_model_state_memory() {
    // Rajbhandari et al., "ZeRO", Table 1: Ψ = 7.5B, N_d = 64, K = 12 (mixed-precision Adam):
    // baseline 120 GB, P_os 31.4 GB, P_os+g 16.6 GB, P_os+g+p 1.88 GB (GB = 1e9 bytes).
    let psi = 7.5e9;
    let gb = |stage: u8| model_state_bytes(psi, Dtype::Bf16, stage, 64, false).total() / 1e9;
    assert!((gb(0) - 120.0).abs() < 0.05, "{}", gb(0));
    assert!((gb(1) - 31.4).abs() < 0.05, "{}", gb(1));
    assert!((gb(2) - 16.6).abs() < 0.05, "{}", gb(2));
    assert!((gb(3) - 1.88).abs() < 0.01, "{}", gb(3));
    // Same table, Ψ = 1T on 1024 GPUs with stage 3: 15.6 GB.
    let t = model_state_bytes(1e12, Dtype::Bf16, 3, 1024, false).total() / 1e9;
    assert!((t - 15.6).abs() < 0.05, "{t}");
    // Offloading removes the optimiser term from the GPU.
    let off = model_state_bytes(psi, Dtype::Bf16, 3, 64, true);
    assert_eq!(off.optimizer, 0.0);
}

#[test]
fn parameter_counts_match_the_published_models() {
    // Totals from each model's safetensors index / model card.
    for (recipe, params) in [
        ("tulu3-8b-sft", 8_030_261_248u64),
        ("tulu3-70b-sft", 70_553_706_496),
        ("tulu3-405b-dpo", 405_853_388_800),
        ("smollm2-135m-sft", 134_515_008),
        ("smollm2-360m-sft", 361_821_120),
        ("smollm2-1.7b-sft", 1_711_376_384),
    ] {
        assert_eq!(config(recipe).num_params(), params, "{recipe}");
    }
}

#[test]
fn kv_cache_per_token_matches_known_figures() {
    // Llama 3.1 8B: 32 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes = 128 KiB per token;
    // 70B: 80 layers -> 320 KiB.
    assert_eq!(kv_bytes_per_token(&config("tulu3-8b-sft")), 131_072.0);
    assert_eq!(kv_bytes_per_token(&config("tulu3-70b-sft")), 327_680.0);
}

#[test]
fn checkpointed_activations_follow_korthikanti_2sbhl() {
    // Korthikanti et al. 2022: full recomputation keeps 2sbhL bytes; on top we count one
    // layer's activations during its recomputation and the logits.
    let c = config("tulu3-8b-sft");
    let (s, b) = (4096u64, 1u64);
    let with = activation_bytes(&c, s, b, true);
    let without = activation_bytes(&c, s, b, false);
    let h = c.hidden_size as f64;
    let kv = (c.num_key_value_heads * c.head_dim()) as f64;
    let i = c.intermediate_size as f64;
    let one_layer = (s * b) as f64 * (12.0 * h + 4.0 * kv + 8.0 * i);
    let logits = (s * b * c.vocab_size) as f64 * 6.0;
    assert_eq!(
        with,
        2.0 * (s * b) as f64 * h * c.num_hidden_layers as f64 + one_layer + logits
    );
    assert_eq!(without, one_layer * c.num_hidden_layers as f64 + logits);
    assert!(without > 10.0 * (with - logits - one_layer));
}

fn plan(name: &str, gpus: u64) -> Vec<rlvr_recipes::plan::StagePlan> {
    let req = PlanRequest {
        gpus,
        gpu_mem_gib: 80.0,
        nodes: 1,
    };
    load(name, &[])
        .unwrap()
        .stages()
        .into_iter()
        .map(|r| plan_stage(r, &req))
        .collect()
}

#[test]
fn tulu3_70b_fits_on_64_gpus_and_not_on_one() {
    let ok = plan("tulu3-70b", 64);
    assert!(
        ok.iter().all(|p| p.fits),
        "{:#?}",
        ok.iter().map(|p| &p.advice).collect::<Vec<_>>()
    );
    let bad = plan("tulu3-70b", 1);
    assert!(bad.iter().all(|p| !p.fits));
    let sft = &bad[0];
    assert!(
        sft.advice.iter().any(|a| a.contains("use at least")),
        "{:?}",
        sft.advice
    );
    // The suggested count really fits.
    let n: u64 = sft
        .advice
        .iter()
        .find_map(|a| a.split("--gpus ").nth(1)?.trim_end_matches(')').parse().ok())
        .unwrap();
    let req = PlanRequest {
        gpus: n,
        gpu_mem_gib: 80.0,
        nodes: 1,
    };
    let r = load("tulu3-70b-sft", &[]).unwrap();
    assert!(plan_stage(r.stages()[0], &req).fits);
    let req = PlanRequest {
        gpus: n - 1,
        gpu_mem_gib: 80.0,
        nodes: 1,
    };
    assert!(!plan_stage(r.stages()[0], &req).fits);
}

#[test]
fn steps_follow_from_data_batch_and_epochs() {
    // 939,344 rows / (1 x 2 x 64 = 128 per step) rounded up, x 2 epochs.
    let p = &plan("tulu3-8b-sft", 64)[0];
    assert_eq!(p.global_batch, 128);
    assert_eq!(p.steps, Some(939_344u64.div_ceil(128) * 2));
    // On 32 GPUs the accumulation doubles to keep the global batch.
    let p = &plan("tulu3-8b-sft", 32)[0];
    assert_eq!(p.gradient_accumulation_steps, 4);
    // RLVR 8B: 10M episodes / (32 prompts x 7 learner GPUs).
    let p = &plan("tulu3-8b-rlvr", 8)[0];
    assert_eq!(p.global_batch, 224);
    assert_eq!(p.steps, Some(10_000_000 / 224));
    assert_eq!(p.learner_gpus, 7);
    // SmolLM2-135M pretraining: 2T tokens / 2,097,152 tokens per step.
    let p = &plan("smollm2-135m-pretrain", 64)[0];
    assert_eq!(p.tokens_per_step, 2_097_152);
    assert_eq!(p.steps, Some((2e12f64 / 2_097_152.0).ceil() as u64));
}

#[test]
fn rlvr_engine_needs_gpus_of_its_own() {
    let p = &plan("tulu3-8b-rlvr", 1)[0];
    assert!(!p.fits);
    assert!(
        p.advice.iter().any(|a| a.contains("rollout engines take 1 GPUs")),
        "{:?}",
        p.advice
    );
}

/// An unsharded RLVR learner holds each policy version's weights once more for its engines (a
/// copy on its device); a ZeRO-3 learner assembles them in host memory.
#[test]
fn an_unsharded_rlvr_learner_counts_its_copy_of_each_version() {
    let extra = |set: &[&str]| tulu3_8b_rlvr(set).extra_model_bytes;
    let weights = 2.0 * config("tulu3-8b-rlvr").num_params() as f64;
    let (unsharded, sharded) = (
        extra(&["launch.zero_stage=0", "rlvr.algorithm=\"grpo\""]),
        extra(&["launch.zero_stage=3", "rlvr.algorithm=\"grpo\""]),
    );
    // Unsharded: the reference and the copy, each whole; ZeRO-3: the reference's shard alone.
    assert_eq!(unsharded, 2.0 * weights);
    assert_eq!(sharded, weights / 7.0);
}

/// An unsharded learner sends each version device to device: the engine's first GPU holds it
/// whole (in the learner's bf16) until it loads it, and has that much less for its KV cache; a
/// ZeRO-3 learner's versions arrive in host memory.
#[test]
fn an_engine_counts_the_version_an_unsharded_learner_sends_it() {
    let engine = |set: &str| tulu3_8b_rlvr(&[set, "rlvr.algorithm=\"grpo\""]).engine.unwrap();
    let (unsharded, sharded) = (engine("launch.zero_stage=0"), engine("launch.zero_stage=3"));
    assert_eq!(
        unsharded.received_bytes,
        2.0 * config("tulu3-8b-rlvr").num_params() as f64
    );
    assert_eq!(sharded.received_bytes, 0.0);
    assert!(unsharded.resident_sequences < sharded.resident_sequences);
    // Under ZeRO-3 the version waits whole in each engine rank's host memory instead.
    assert_eq!(
        (unsharded.received_host_bytes, sharded.received_host_bytes),
        (0.0, unsharded.received_bytes)
    );
}

#[test]
fn the_engine_plan_follows_the_engines_dtype() {
    let engine = |set: &[&str]| tulu3_8b_rlvr(set).engine.unwrap();
    // tulu3-8b-rlvr trains in bf16, so its engines default to bf16: 2 bytes a parameter.
    let (bf16, f32) = (engine(&[]), engine(&["rollout.dtype=\"f32\""]));
    assert_eq!(
        bf16.weight_bytes,
        2.0 * config("tulu3-8b-rlvr").num_params() as f64
    );
    assert_eq!(f32.weight_bytes, 2.0 * bf16.weight_bytes);
    assert_eq!(f32.kv_full_batch_bytes, 2.0 * bf16.kv_full_batch_bytes);
}

/// `rollout.kv_cache_gib` bounds the sequences resident at once (a sequence holds its response
/// and its share of the prompt, which its prompt's samples share); a budget larger than what
/// the weights leave of the GPU does not fit, and a non-positive one is refused at load.
#[test]
fn the_kv_cache_budget_bounds_resident_sequences() {
    let stage = tulu3_8b_rlvr;
    let free = stage(&[]).engine.unwrap();
    let per_seq = free.kv_full_batch_bytes / free.batch_per_engine as f64;
    let budget = stage(&["rollout.kv_cache_gib=1"]);
    let one_gib = budget.engine.unwrap();
    assert_eq!(
        one_gib.resident_sequences,
        ((1u64 << 30) as f64 / per_seq).floor() as u64
    );
    assert!(one_gib.resident_sequences < free.resident_sequences);
    let too_big = stage(&["rollout.kv_cache_gib=500"]);
    assert!(!too_big.fits);
    assert!(
        too_big.advice.iter().any(|a| a.contains("rollout.kv_cache_gib")),
        "{:?}",
        too_big.advice
    );
    let err = load("tulu3-8b-rlvr", &["rollout.kv_cache_gib=0".to_string()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("rollout.kv_cache_gib"), "{err}");
}
