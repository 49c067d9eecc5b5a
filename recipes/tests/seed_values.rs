//! Every number of the seed document (`shared/seed/llm-train-recipe.md`: the Tülu 3 command
//! lines and the SmolLM2 tables) against the resolved recipes, one row per value, so a typo in
//! a recipe fails the build.

use rlvr_recipes::{load, Resolved};
use serde_json::{json, Value};

fn stage(name: &str) -> Value {
    match load(name, &[]).unwrap_or_else(|e| panic!("{name}: {e}")) {
        Resolved::Stage(r) => serde_json::to_value(&*r).unwrap(),
        Resolved::Pipeline(_) => panic!("{name} is a pipeline"),
    }
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| match key.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[key],
    })
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * y.abs().max(1e-30),
        _ => a == b,
    }
}

/// (recipe, key, value in the seed).
fn table() -> Vec<(&'static str, &'static str, Value)> {
    let mut rows = vec![
        // Llama-3.1-Tulu-3-8B-SFT
        (
            "tulu3-8b-sft",
            "model.name_or_path",
            json!("meta-llama/Llama-3.1-8B"),
        ),
        (
            "tulu3-8b-sft",
            "model.tokenizer",
            json!("meta-llama/Llama-3.1-8B"),
        ),
        ("tulu3-8b-sft", "launch.nodes", json!(8)),
        ("tulu3-8b-sft", "launch.gpus", json!(64)),
        // accelerate's `mixed_precision bf16`: rlvr computes in the model's dtype.
        ("tulu3-8b-sft", "model.dtype", json!("bf16")),
        ("tulu3-8b-sft", "data.max_seq_length", json!(4096)),
        ("tulu3-8b-sft", "train.per_device_train_batch_size", json!(1)),
        ("tulu3-8b-sft", "train.gradient_accumulation_steps", json!(2)),
        ("tulu3-8b-sft", "train.learning_rate", json!(5e-6)),
        ("tulu3-8b-sft", "train.lr_scheduler", json!("linear")),
        ("tulu3-8b-sft", "train.warmup_ratio", json!(0.03)),
        ("tulu3-8b-sft", "train.weight_decay", json!(0.0)),
        ("tulu3-8b-sft", "train.num_train_epochs", json!(2)),
        ("tulu3-8b-sft", "train.logging_steps", json!(1)),
        ("tulu3-8b-sft", "train.reduce_loss", json!("sum")),
        (
            "tulu3-8b-sft",
            "data.mix.0.dataset",
            json!("allenai/tulu-3-sft-mixture"),
        ),
        ("tulu3-8b-sft", "data.mix.0.amount", json!(1.0)),
        ("tulu3-8b-sft", "train.checkpointing_steps", json!("epoch")),
        ("tulu3-8b-sft", "seed", json!(123)),
        // Llama-3.1-Tulu-3-70B-SFT
        (
            "tulu3-70b-sft",
            "model.name_or_path",
            json!("meta-llama/Llama-3.1-70B"),
        ),
        (
            "tulu3-70b-sft",
            "model.tokenizer",
            json!("meta-llama/Llama-3.1-70B"),
        ),
        ("tulu3-70b-sft", "launch.nodes", json!(8)),
        ("tulu3-70b-sft", "launch.gpus", json!(64)),
        ("tulu3-70b-sft", "data.max_seq_length", json!(4096)),
        ("tulu3-70b-sft", "train.per_device_train_batch_size", json!(1)),
        ("tulu3-70b-sft", "train.gradient_accumulation_steps", json!(2)),
        ("tulu3-70b-sft", "train.learning_rate", json!(2e-6)),
        ("tulu3-70b-sft", "train.lr_scheduler", json!("linear")),
        ("tulu3-70b-sft", "train.warmup_ratio", json!(0.03)),
        ("tulu3-70b-sft", "train.weight_decay", json!(0.0)),
        ("tulu3-70b-sft", "train.num_train_epochs", json!(2)),
        ("tulu3-70b-sft", "train.reduce_loss", json!("sum")),
        (
            "tulu3-70b-sft",
            "data.mix.0.dataset",
            json!("allenai/tulu-3-sft-mixture"),
        ),
        ("tulu3-70b-sft", "data.mix.0.amount", json!(1.0)),
        ("tulu3-70b-sft", "train.checkpointing_steps", json!(1000)),
        ("tulu3-70b-sft", "train.keep_last_n_checkpoints", json!(20)),
        ("tulu3-70b-sft", "train.gradient_checkpointing", json!(true)),
        ("tulu3-70b-sft", "seed", json!(456)),
        // Llama-3.1-Tulu-3-8B-DPO
        (
            "tulu3-8b-dpo",
            "model.name_or_path",
            json!("allenai/Llama-3.1-Tulu-3-8B-SFT"),
        ),
        (
            "tulu3-8b-dpo",
            "model.tokenizer",
            json!("allenai/Llama-3.1-Tulu-3-8B-SFT"),
        ),
        ("tulu3-8b-dpo", "launch.nodes", json!(1)),
        ("tulu3-8b-dpo", "launch.gpus", json!(8)),
        ("tulu3-8b-dpo", "data.max_seq_length", json!(2048)),
        ("tulu3-8b-dpo", "train.per_device_train_batch_size", json!(1)),
        ("tulu3-8b-dpo", "train.gradient_accumulation_steps", json!(16)),
        ("tulu3-8b-dpo", "train.learning_rate", json!(5e-7)),
        ("tulu3-8b-dpo", "train.lr_scheduler", json!("linear")),
        ("tulu3-8b-dpo", "train.warmup_ratio", json!(0.1)),
        ("tulu3-8b-dpo", "train.weight_decay", json!(0.0)),
        ("tulu3-8b-dpo", "train.num_train_epochs", json!(1)),
        ("tulu3-8b-dpo", "train.gradient_checkpointing", json!(true)),
        (
            "tulu3-8b-dpo",
            "data.mix.0.dataset",
            json!("allenai/llama-3.1-tulu-3-8b-preference-mixture"),
        ),
        ("tulu3-8b-dpo", "data.mix.0.amount", json!(1.0)),
        ("tulu3-8b-dpo", "dpo.loss_type", json!("dpo_norm")),
        ("tulu3-8b-dpo", "dpo.beta", json!(5.0)),
        ("tulu3-8b-dpo", "train.checkpointing_steps", json!(1000)),
        // Llama-3.1-Tulu-3-70B-DPO
        (
            "tulu3-70b-dpo",
            "model.name_or_path",
            json!("allenai/Llama-3.1-Tulu-3-70B-SFT"),
        ),
        ("tulu3-70b-dpo", "launch.nodes", json!(8)),
        ("tulu3-70b-dpo", "launch.gpus", json!(64)),
        ("tulu3-70b-dpo", "launch.offload_optimizer", json!(true)),
        ("tulu3-70b-dpo", "data.max_seq_length", json!(2048)),
        ("tulu3-70b-dpo", "train.per_device_train_batch_size", json!(1)),
        ("tulu3-70b-dpo", "train.gradient_accumulation_steps", json!(2)),
        ("tulu3-70b-dpo", "train.learning_rate", json!(2e-7)),
        ("tulu3-70b-dpo", "train.lr_scheduler", json!("linear")),
        ("tulu3-70b-dpo", "train.warmup_ratio", json!(0.1)),
        ("tulu3-70b-dpo", "train.weight_decay", json!(0.0)),
        ("tulu3-70b-dpo", "train.num_train_epochs", json!(1)),
        ("tulu3-70b-dpo", "train.gradient_checkpointing", json!(true)),
        (
            "tulu3-70b-dpo",
            "data.mix.0.dataset",
            json!("allenai/llama-3.1-tulu-3-70b-preference-mixture"),
        ),
        ("tulu3-70b-dpo", "dpo.loss_type", json!("dpo_norm")),
        ("tulu3-70b-dpo", "dpo.beta", json!(5.0)),
        ("tulu3-70b-dpo", "train.checkpointing_steps", json!("epoch")),
        // Llama-3.1-Tulu-3-405B-DPO
        (
            "tulu3-405b-dpo",
            "model.name_or_path",
            json!("allenai/Llama-3.1-Tulu-3-405B-SFT"),
        ),
        (
            "tulu3-405b-dpo",
            "model.tokenizer",
            json!("allenai/Llama-3.1-Tulu-3-70B-SFT"),
        ),
        ("tulu3-405b-dpo", "launch.nodes", json!(32)),
        ("tulu3-405b-dpo", "launch.gpus", json!(256)),
        ("tulu3-405b-dpo", "data.max_seq_length", json!(2048)),
        ("tulu3-405b-dpo", "train.per_device_train_batch_size", json!(1)),
        ("tulu3-405b-dpo", "train.gradient_accumulation_steps", json!(1)),
        ("tulu3-405b-dpo", "train.learning_rate", json!(2e-7)),
        ("tulu3-405b-dpo", "train.lr_scheduler", json!("linear")),
        ("tulu3-405b-dpo", "train.warmup_ratio", json!(0.1)),
        ("tulu3-405b-dpo", "train.weight_decay", json!(0.0)),
        ("tulu3-405b-dpo", "train.num_train_epochs", json!(1)),
        (
            "tulu3-405b-dpo",
            "data.mix.0.dataset",
            json!("ai2-adapt-dev/405b_preference_mix"),
        ),
        ("tulu3-405b-dpo", "data.mix.0.amount", json!(1.0)),
        ("tulu3-405b-dpo", "dpo.loss_type", json!("dpo_norm")),
        ("tulu3-405b-dpo", "dpo.beta", json!(5.0)),
        ("tulu3-405b-dpo", "train.checkpointing_steps", json!(1000)),
        // Llama-3.1-Tulu-3-8B-RM
        (
            "tulu3-8b-rm",
            "model.name_or_path",
            json!("allenai/Llama-3.1-Tulu-3-8B-SFT"),
        ),
        (
            "tulu3-8b-rm",
            "data.mix.0.dataset",
            json!("allenai/llama-3.1-tulu-3-8b-preference-mixture"),
        ),
        ("tulu3-8b-rm", "data.mix.0.amount", json!(1.0)),
        (
            "tulu3-8b-rm",
            "data.eval_mix.0.dataset",
            json!("allenai/ultrafeedback_binarized_cleaned"),
        ),
        ("tulu3-8b-rm", "data.eval_mix.0.split", json!("test_prefs")),
        ("tulu3-8b-rm", "data.chat_template", json!("tulu")),
        ("tulu3-8b-rm", "train.learning_rate", json!(3e-6)),
        ("tulu3-8b-rm", "train.per_device_train_batch_size", json!(1)),
        ("tulu3-8b-rm", "train.gradient_accumulation_steps", json!(32)),
        ("tulu3-8b-rm", "data.max_seq_length", json!(2048)),
        ("tulu3-8b-rm", "data.max_prompt_length", json!(2048)),
        ("tulu3-8b-rm", "train.num_train_epochs", json!(1)),
        ("tulu3-8b-rm", "train.gradient_checkpointing", json!(true)),
        // Llama-3.1-Tulu-3-8B (RLVR)
        (
            "tulu3-8b-rlvr",
            "data.mix.0.dataset",
            json!("allenai/RLVR-GSM-MATH-IF-Mixed-Constraints"),
        ),
        ("tulu3-8b-rlvr", "data.mix.0.amount", json!(1.0)),
        (
            "tulu3-8b-rlvr",
            "data.eval_mix.0.dataset",
            json!("allenai/RLVR-GSM-MATH-IF-Mixed-Constraints"),
        ),
        ("tulu3-8b-rlvr", "data.eval_mix.0.amount", json!(16)),
        ("tulu3-8b-rlvr", "rlvr.max_token_length", json!(2048)),
        ("tulu3-8b-rlvr", "rlvr.max_prompt_token_length", json!(2048)),
        ("tulu3-8b-rlvr", "rlvr.response_length", json!(2048)),
        (
            "tulu3-8b-rlvr",
            "model.name_or_path",
            json!("allenai/Llama-3.1-Tulu-3-8B-DPO"),
        ),
        (
            "tulu3-8b-rlvr",
            "rlvr.reward_model_path",
            json!("allenai/Llama-3.1-Tulu-3-8B-RM"),
        ),
        ("tulu3-8b-rlvr", "rlvr.non_stop_penalty", json!(true)),
        ("tulu3-8b-rlvr", "rlvr.stop_token", json!("eos")),
        ("tulu3-8b-rlvr", "rlvr.temperature", json!(1.0)),
        ("tulu3-8b-rlvr", "data.chat_template", json!("tulu")),
        ("tulu3-8b-rlvr", "train.learning_rate", json!(3e-7)),
        ("tulu3-8b-rlvr", "rlvr.total_episodes", json!(10_000_000)),
        ("tulu3-8b-rlvr", "rlvr.penalty_reward_value", json!(-10.0)),
        ("tulu3-8b-rlvr", "launch.zero_stage", json!(3)),
        ("tulu3-8b-rlvr", "train.per_device_train_batch_size", json!(2)),
        ("tulu3-8b-rlvr", "rlvr.local_rollout_forward_batch_size", json!(2)),
        ("tulu3-8b-rlvr", "rlvr.local_mini_batch_size", json!(32)),
        ("tulu3-8b-rlvr", "rlvr.local_rollout_batch_size", json!(32)),
        ("tulu3-8b-rlvr", "rlvr.actor_num_gpus_per_node", json!([7])),
        ("tulu3-8b-rlvr", "rlvr.vllm_tensor_parallel_size", json!(1)),
        ("tulu3-8b-rlvr", "rlvr.beta", json!(0.05)),
        ("tulu3-8b-rlvr", "rlvr.apply_verifiable_reward", json!(true)),
        ("tulu3-8b-rlvr", "seed", json!(3)),
        ("tulu3-8b-rlvr", "rlvr.num_evals", json!(3)),
        ("tulu3-8b-rlvr", "rlvr.save_freq", json!(100)),
        ("tulu3-8b-rlvr", "rlvr.reward_model_multiplier", json!(0.0)),
        ("tulu3-8b-rlvr", "train.gradient_checkpointing", json!(true)),
        ("tulu3-8b-rlvr", "rlvr.verifier_mode", json!("tulu3")),
        // Llama-3.1-Tulu-3-70B (RLVR)
        (
            "tulu3-70b-rlvr",
            "data.mix.0.dataset",
            json!("allenai/RLVR-GSM-MATH-IF-Mixed-Constraints"),
        ),
        ("tulu3-70b-rlvr", "data.eval_mix.0.amount", json!(16)),
        ("tulu3-70b-rlvr", "rlvr.max_token_length", json!(2048)),
        ("tulu3-70b-rlvr", "rlvr.max_prompt_token_length", json!(2048)),
        ("tulu3-70b-rlvr", "rlvr.response_length", json!(2048)),
        (
            "tulu3-70b-rlvr",
            "model.name_or_path",
            json!("allenai/Llama-3.1-Tulu-3-70B-DPO"),
        ),
        (
            "tulu3-70b-rlvr",
            "rlvr.reward_model_path",
            json!("allenai/Llama-3.1-Tulu-3-8B-RM"),
        ),
        ("tulu3-70b-rlvr", "rlvr.beta", json!(0.07)),
        ("tulu3-70b-rlvr", "train.warmup_ratio", json!(0.1)),
        ("tulu3-70b-rlvr", "seed", json!(8)),
        ("tulu3-70b-rlvr", "rlvr.non_stop_penalty", json!(true)),
        ("tulu3-70b-rlvr", "rlvr.temperature", json!(1.0)),
        ("tulu3-70b-rlvr", "train.learning_rate", json!(1e-7)),
        ("tulu3-70b-rlvr", "rlvr.total_episodes", json!(400_000)),
        ("tulu3-70b-rlvr", "rlvr.penalty_reward_value", json!(-10.0)),
        ("tulu3-70b-rlvr", "train.per_device_train_batch_size", json!(1)),
        (
            "tulu3-70b-rlvr",
            "rlvr.local_rollout_forward_batch_size",
            json!(1),
        ),
        ("tulu3-70b-rlvr", "rlvr.local_mini_batch_size", json!(16)),
        ("tulu3-70b-rlvr", "rlvr.local_rollout_batch_size", json!(16)),
        (
            "tulu3-70b-rlvr",
            "rlvr.actor_num_gpus_per_node",
            json!([8, 8, 8, 8, 8]),
        ),
        ("tulu3-70b-rlvr", "rlvr.vllm_num_engines", json!(1)),
        ("tulu3-70b-rlvr", "rlvr.vllm_tensor_parallel_size", json!(4)),
        ("tulu3-70b-rlvr", "rlvr.reward_model_multiplier", json!(0.0)),
        ("tulu3-70b-rlvr", "rlvr.num_evals", json!(3)),
        ("tulu3-70b-rlvr", "rlvr.save_freq", json!(40)),
        ("tulu3-70b-rlvr", "model.config.num_hidden_layers", json!(80)),
        // Llama-3.1-Tulu-3-405B (RLVR)
        (
            "tulu3-405b-rlvr",
            "data.mix.0.dataset",
            json!("allenai/RLVR-MATH"),
        ),
        (
            "tulu3-405b-rlvr",
            "data.eval_mix.0.dataset",
            json!("allenai/RLVR-MATH"),
        ),
        ("tulu3-405b-rlvr", "data.eval_mix.0.amount", json!(128)),
        ("tulu3-405b-rlvr", "rlvr.max_token_length", json!(2048)),
        ("tulu3-405b-rlvr", "rlvr.max_prompt_token_length", json!(2048)),
        ("tulu3-405b-rlvr", "rlvr.response_length", json!(1024)),
        (
            "tulu3-405b-rlvr",
            "rlvr.reward_model_path",
            json!("allenai/Llama-3.1-Tulu-3-8B-RM"),
        ),
        ("tulu3-405b-rlvr", "rlvr.beta", json!(0.05)),
        ("tulu3-405b-rlvr", "train.learning_rate", json!(1e-7)),
        ("tulu3-405b-rlvr", "rlvr.total_episodes", json!(400_000)),
        ("tulu3-405b-rlvr", "rlvr.num_epochs", json!(4)),
        ("tulu3-405b-rlvr", "rlvr.penalty_reward_value", json!(-10.0)),
        ("tulu3-405b-rlvr", "train.per_device_train_batch_size", json!(1)),
        (
            "tulu3-405b-rlvr",
            "rlvr.local_rollout_forward_batch_size",
            json!(1),
        ),
        ("tulu3-405b-rlvr", "rlvr.local_mini_batch_size", json!(8)),
        ("tulu3-405b-rlvr", "rlvr.local_rollout_batch_size", json!(8)),
        ("tulu3-405b-rlvr", "rlvr.vllm_num_engines", json!(1)),
        ("tulu3-405b-rlvr", "rlvr.vllm_tensor_parallel_size", json!(16)),
        ("tulu3-405b-rlvr", "rlvr.reward_model_multiplier", json!(0.0)),
        ("tulu3-405b-rlvr", "seed", json!(3)),
        ("tulu3-405b-rlvr", "rlvr.num_evals", json!(3)),
        ("tulu3-405b-rlvr", "rlvr.save_freq", json!(25)),
        ("tulu3-405b-rlvr", "launch.nodes", json!(32)),
        ("tulu3-405b-rlvr", "model.config.num_hidden_layers", json!(126)),
    ];
    rows.push((
        "tulu3-405b-rlvr",
        "rlvr.actor_num_gpus_per_node",
        json!(vec![8; 29]),
    ));
    // SmolLM2 tables: pretraining, SFT, DPO per size.
    for (size, lr, tokens, sft_rows) in [
        ("135m", 3e-3, 2e12, 500_000),
        ("360m", 3e-3, 4e12, 500_000),
        ("1.7b", 5e-4, 11e12, 1_100_000),
    ] {
        let pre: &'static str = Box::leak(format!("smollm2-{size}-pretrain").into_boxed_str());
        let sft: &'static str = Box::leak(format!("smollm2-{size}-sft").into_boxed_str());
        let dpo: &'static str = Box::leak(format!("smollm2-{size}-dpo").into_boxed_str());
        rows.extend([
            (pre, "train.total_tokens", json!(tokens)),
            (pre, "train.learning_rate", json!(lr)),
            (pre, "train.lr_scheduler", json!("wsd")),
            (pre, "train.warmup_steps", json!(2000)),
            (pre, "train.decay_ratio", json!(0.1)),
            (pre, "data.max_seq_length", json!(2048)),
            (pre, "train.global_batch_tokens", json!(2_097_152)),
            (pre, "train.adam_beta1", json!(0.9)),
            (pre, "train.adam_beta2", json!(0.999)),
            (sft, "data.rows", json!(sft_rows)),
            (sft, "train.learning_rate", json!(3e-4)),
            (sft, "train.lr_scheduler", json!("wsd")),
            (sft, "train.num_train_epochs", json!(2)),
            (sft, "data.max_seq_length", json!(8192)),
            (sft, "train.global_batch_size", json!(128)),
            (dpo, "train.learning_rate", json!(1e-6)),
            (dpo, "train.lr_scheduler", json!("wsd")),
            (dpo, "train.num_train_epochs", json!(2)),
            (dpo, "data.max_seq_length", json!(1024)),
            (dpo, "train.global_batch_size", json!(128)),
            (dpo, "dpo.beta", json!(0.5)),
            (
                dpo,
                "data.mix.0.dataset",
                json!("HuggingFaceH4/ultrafeedback_binarized"),
            ),
        ]);
    }
    rows
}

#[test]
fn every_seed_value_is_in_the_recipes() {
    let mut wrong = Vec::new();
    for (recipe, key, want) in table() {
        let v = stage(recipe);
        let got = get(&v, key);
        if !same(got, &want) {
            wrong.push(format!("{recipe}: {key} = {got}, the seed says {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "recipes disagree with the seed:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn smollm2_batches_multiply_to_the_seed_global_batch() {
    for size in ["135m", "360m", "1.7b"] {
        for kind in ["sft", "dpo"] {
            let v = stage(&format!("smollm2-{size}-{kind}"));
            let product = [
                "train.per_device_train_batch_size",
                "train.gradient_accumulation_steps",
                "launch.gpus",
            ]
            .iter()
            .map(|k| get(&v, k).as_u64().unwrap())
            .product::<u64>();
            assert_eq!(product, 128, "smollm2-{size}-{kind}");
        }
        let v = stage(&format!("smollm2-{size}-pretrain"));
        let seqs = [
            "train.per_device_train_batch_size",
            "train.gradient_accumulation_steps",
            "launch.gpus",
        ]
        .iter()
        .map(|k| get(&v, k).as_u64().unwrap())
        .product::<u64>();
        assert_eq!(
            seqs * 2048,
            2_097_152,
            "2M tokens per step = 1024 sequences of 2048"
        );
    }
}

#[test]
fn pipelines_run_the_seed_stages_in_order() {
    for (name, stages) in [
        (
            "tulu3-8b",
            vec!["tulu3-8b-sft", "tulu3-8b-rm", "tulu3-8b-dpo", "tulu3-8b-rlvr"],
        ),
        (
            "tulu3-70b",
            vec!["tulu3-70b-sft", "tulu3-70b-dpo", "tulu3-70b-rlvr"],
        ),
        ("tulu3-405b", vec!["tulu3-405b-dpo", "tulu3-405b-rlvr"]),
        (
            "smollm2-135m",
            vec!["smollm2-135m-pretrain", "smollm2-135m-sft", "smollm2-135m-dpo"],
        ),
        (
            "smollm2-360m",
            vec!["smollm2-360m-pretrain", "smollm2-360m-sft", "smollm2-360m-dpo"],
        ),
        (
            "smollm2-1.7b",
            vec!["smollm2-1.7b-pretrain", "smollm2-1.7b-sft", "smollm2-1.7b-dpo"],
        ),
    ] {
        let Resolved::Pipeline(p) = load(name, &[]).unwrap() else {
            panic!("{name} is not a pipeline")
        };
        let got: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(got, stages, "{name}");
    }
}
