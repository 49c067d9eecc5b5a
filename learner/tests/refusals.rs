//! A model rlvr does not implement is refused, never guessed at: each kind of refusal names
//! the directory or file, the field or tensor, and what is supported. (`actors/tests/cli/`
//! checks that the command exits 2 on them.)

use std::path::{Path, PathBuf};

use rlvr_learner::{Learner, LearnerConfig, LearnerError};
use serde_json::{json, Value};
use tch::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(name)
}

/// A copy of fixture `name` in a fresh directory, its `config.json` edited by `edit`.
fn copy_of(name: &str, tag: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlvr-refuse-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(fixture(name).join(f), dir.join(f)).unwrap();
    }
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    dir
}

/// Loading `dir` fails with a refusal whose message holds every one of `words`.
fn refused(dir: &Path, words: &[&str]) {
    let err = Learner::from_pretrained(dir, LearnerConfig::constant(1e-3, Device::Cpu))
        .err()
        .expect("the model must be refused");
    assert!(
        matches!(err, LearnerError::Unsupported { .. }),
        "a refusal, not {err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&dir.display().to_string()),
        "names the place: {message}"
    );
    for w in words {
        assert!(message.contains(w), "`{w}` in: {message}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unknown_model_type_is_refused_with_the_supported_ones() {
    let dir = copy_of("llama31", "gemma", |c| {
        c["model_type"] = json!("gemma");
        c["architectures"] = json!(["GemmaForCausalLM"]);
    });
    refused(
        &dir,
        &["model_type", "gemma", "llama, mistral, qwen2, qwen3, olmo2"],
    );
    let dir = copy_of("llama31", "no-type", |c| {
        c.as_object_mut().unwrap().remove("model_type");
    });
    refused(&dir, &["model_type", "missing"]);
    let dir = copy_of("llama31", "arch", |c| c["architectures"] = json!(["LlamaModel"]));
    refused(&dir, &["architectures", "LlamaForCausalLM"]);
}

#[test]
fn an_active_sliding_window_is_refused() {
    let dir = copy_of("mistral", "window", |c| c["sliding_window"] = json!(16));
    refused(&dir, &["sliding_window", "16", "full attention"]);
    let dir = copy_of("qwen2", "qwen-window", |c| c["use_sliding_window"] = json!(true));
    refused(&dir, &["sliding_window"]);
    let dir = copy_of("qwen3", "layer-types", |c| {
        c["layer_types"] = json!(["full_attention", "sliding_attention"])
    });
    refused(&dir, &["sliding_window", "layer_types"]);
    // A window as long as the context limits nothing: Mistral loads.
    let dir = copy_of("mistral", "long-window", |c| c["sliding_window"] = json!(64));
    Learner::from_pretrained(&dir, LearnerConfig::constant(1e-3, Device::Cpu)).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn config_values_not_implemented_are_refused() {
    let dir = copy_of("llama31", "yarn", |c| {
        c["rope_parameters"] = json!({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0})
    });
    refused(&dir, &["rope_parameters.rope_type", "yarn", "default, llama3"]);
    let dir = copy_of("llama31", "gelu", |c| {
        c["hidden_act"] = json!("gelu_pytorch_tanh")
    });
    refused(&dir, &["hidden_act", "gelu_pytorch_tanh", "silu"]);
    let dir = copy_of("llama31", "quant", |c| {
        c["quantization_config"] = json!({"quant_method": "gptq"})
    });
    refused(&dir, &["quantization_config", "quantised"]);
    let dir = copy_of("qwen3", "head", |c| c["head_dim"] = json!(7));
    refused(&dir, &["head_dim", "even"]);
}

/// A copy of fixture `name` whose weights are edited by `edit`.
fn with_tensors(name: &str, tag: &str, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> PathBuf {
    let dir = copy_of(name, tag, |_| {});
    let path = dir.join("model.safetensors");
    let mut tensors = Tensor::read_safetensors(&path).unwrap();
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, &path).unwrap();
    dir
}

#[test]
fn a_missing_extra_or_misshapen_tensor_is_refused() {
    // Qwen2's q/k/v biases are part of the model: a checkpoint without them is not Qwen2.
    let dir = with_tensors("qwen2", "missing", |t| {
        t.retain(|(n, _)| n != "model.layers.1.self_attn.k_proj.bias")
    });
    refused(&dir, &["model.layers.1.self_attn.k_proj.bias", "missing"]);
    // A tensor the model would not use (a bias Mistral does not have) is not dropped.
    let dir = with_tensors("mistral", "extra", |t| {
        t.push((
            "model.layers.0.self_attn.q_proj.bias".into(),
            Tensor::zeros([32], tch::kind::FLOAT_CPU),
        ))
    });
    refused(
        &dir,
        &["model.layers.0.self_attn.q_proj.bias", "refused, not dropped"],
    );
    let dir = with_tensors("olmo2", "shape", |t| {
        for (n, v) in t.iter_mut() {
            if n == "model.layers.0.self_attn.k_norm.weight" {
                *v = Tensor::ones([8], tch::kind::FLOAT_CPU);
            }
        }
    });
    refused(&dir, &["model.layers.0.self_attn.k_norm.weight", "[8]", "[16]"]);
    let dir = copy_of("llama31", "no-weights", |_| {});
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    refused(&dir, &["no model.safetensors"]);
}

#[test]
fn a_tied_head_stored_beside_the_embedding_loads_only_when_it_is_the_embedding() {
    // Some writers store `lm_head.weight` for a tied model: the same bytes load.
    let dir = with_tensors("smollm2", "tied-copy", |t| {
        let embed = t
            .iter()
            .find(|(n, _)| n == "model.embed_tokens.weight")
            .unwrap()
            .1
            .copy();
        t.push(("lm_head.weight".into(), embed));
    });
    Learner::from_pretrained(&dir, LearnerConfig::constant(1e-3, Device::Cpu)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let dir = with_tensors("smollm2", "tied-other", |t| {
        let embed = t
            .iter()
            .find(|(n, _)| n == "model.embed_tokens.weight")
            .unwrap()
            .1
            .copy();
        t.push(("lm_head.weight".into(), embed + 1.0));
    });
    refused(&dir, &["lm_head.weight"]);
}
