//! Models as a user brings them to the `rlvr` binary: every family's checkpoint (the parity
//! fixtures of `learner/tests`) trains and generates, what rlvr writes carries its architecture,
//! dtype, tokenizer, template and end-of-sequence ids; a model rlvr does not implement exits 2
//! naming the field or tensor; and `rlvr generate` takes its prompts every way it offers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn rlvr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlvr"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlvr-models-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// ChatML, as SmolLM2's template without its default system prompt.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A copy of parity fixture `family` (vocabulary 64) with the built-in character tokenizer
/// (53 tokens) and, when `template` is set, a ChatML chat template: a model as a user brings it.
fn model(family: &str, tag: &str, template: bool) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../learner/tests/fixtures/parity")
        .join(family);
    let dir = tmp(tag);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    rlvr_data::Tokenizer::builtin_chars().save(&dir).unwrap();
    if template {
        let path = dir.join("tokenizer_config.json");
        let mut config = read_json(&path);
        config["chat_template"] = json!(CHATML);
        std::fs::write(path, config.to_string()).unwrap();
    }
    dir
}

/// `rlvr generate ... --json` on `dir`: the completions' objects.
fn generate(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["generate", "--model", dir.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let out = rlvr(&all);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(v: &Value) -> Vec<u64> {
    v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

#[test]
fn sft_from_qwen3_and_olmo2_checkpoints_writes_models_that_carry_what_they_need() {
    for family in ["qwen3", "olmo2"] {
        let init = model(family, &format!("sft-init-{family}"), false);
        let out = tmp(&format!("sft-{family}"));
        let run = rlvr(&[
            "run",
            "tiny-arith-sft",
            "--out",
            out.to_str().unwrap(),
            "--set",
            &format!("model.name_or_path={}", init.display()),
            "--set",
            "train.max_steps=2",
            "--set",
            "train.per_device_train_batch_size=4",
            "--set",
            "data.max_seq_length=64",
        ]);
        assert!(run.status.success(), "{family}: {}", text(&run.stderr));
        let dir = out.join("tiny-arith-sft");
        let config = read_json(&dir.join("config.json"));
        assert_eq!(config["model_type"], family);
        let class = if family == "qwen3" {
            "Qwen3ForCausalLM"
        } else {
            "Olmo2ForCausalLM"
        };
        assert_eq!(config["architectures"][0], class);
        assert_eq!(config["torch_dtype"], "float32");
        assert_eq!(config["head_dim"], if family == "qwen3" { 16 } else { 8 });
        // The tokenizer, its special tokens, the template the stage trained with and the
        // end-of-sequence ids travel with the model.
        let tok_config = read_json(&dir.join("tokenizer_config.json"));
        assert_eq!(tok_config["eos_token"], "</s>");
        assert!(tok_config["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>"));
        assert_eq!(read_json(&dir.join("generation_config.json"))["eos_token_id"], 2);
        assert!(dir.join("tokenizer.json").is_file());
        // rlvr loads what it wrote and generates from it, greedily the same twice.
        let a = generate(
            &dir,
            &["--prompt", "1+1=", "--temperature", "0", "--max-new-tokens", "6"],
        );
        let b = generate(
            &dir,
            &["--prompt", "1+1=", "--temperature", "0", "--max-new-tokens", "6"],
        );
        assert_eq!(ids(&a[0]), ids(&b[0]));
        assert!(!ids(&a[0]).is_empty());
        for d in [init, out] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}

/// `rlvr generate` on a model whose `config.json` is edited by `edit` exits 2 naming `words`.
fn refused(tag: &str, edit: impl FnOnce(&mut Value), words: &[&str]) {
    let dir = model("llama31", tag, false);
    let path = dir.join("config.json");
    let mut config = read_json(&path);
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    let out = rlvr(&["generate", "--model", dir.to_str().unwrap(), "--prompt", "1"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{tag}: {err}");
    for w in words {
        assert!(err.contains(w), "{tag}: `{w}` in {err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn models_rlvr_does_not_implement_exit_2_naming_what_is_wrong() {
    refused(
        "gemma",
        |c| c["model_type"] = json!("gemma"),
        &["model_type", "gemma", "qwen3"],
    );
    refused(
        "window",
        |c| {
            c["model_type"] = json!("mistral");
            c["architectures"] = json!(["MistralForCausalLM"]);
            c["sliding_window"] = json!(16);
        },
        &["sliding_window", "16"],
    );
    refused(
        "rope",
        |c| c["rope_parameters"] = json!({"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}),
        &["rope_type", "yarn"],
    );
    refused(
        "act",
        |c| c["hidden_act"] = json!("gelu"),
        &["hidden_act", "silu"],
    );
    // A tensor the config implies but the checkpoint lacks (Qwen2 has q/k/v biases).
    refused(
        "missing",
        |c| {
            c["model_type"] = json!("qwen2");
            c["architectures"] = json!(["Qwen2ForCausalLM"]);
        },
        &["_proj.bias", "missing"],
    );
    // A tensor the checkpoint has that the config does not use (Llama without biases reading a
    // checkpoint with them).
    let dir = model("llama_bias", "extra", false);
    let path = dir.join("config.json");
    let mut config = read_json(&path);
    config["attention_bias"] = json!(false);
    std::fs::write(&path, config.to_string()).unwrap();
    let out = rlvr(&["generate", "--model", dir.to_str().unwrap(), "--prompt", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused, not dropped"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_starting_model_without_a_tokenizer_is_an_error_naming_its_directory() {
    let init = model("llama31", "no-tokenizer", false);
    std::fs::remove_file(init.join("tokenizer.json")).unwrap();
    let out = tmp("no-tokenizer-run");
    let run = rlvr(&[
        "run",
        "tiny-arith-sft",
        "--out",
        out.to_str().unwrap(),
        "--set",
        &format!("model.name_or_path={}", init.display()),
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stderr));
    let err = text(&run.stderr);
    assert!(
        err.contains(init.to_str().unwrap()) && err.contains("no tokenizer.json"),
        "{err}"
    );
    // model.tokenizer names where it is.
    let tokenizer = model("llama31", "tokenizer-elsewhere", false);
    let run = rlvr(&[
        "run",
        "tiny-arith-sft",
        "--out",
        out.to_str().unwrap(),
        "--set",
        &format!("model.name_or_path={}", init.display()),
        "--set",
        &format!("model.tokenizer={}", tokenizer.display()),
        "--overwrite",
        "--set",
        "train.max_steps=1",
        "--set",
        "train.per_device_train_batch_size=2",
        "--set",
        "data.max_seq_length=64",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(out.join("tiny-arith-sft/tokenizer.json").is_file());
    for d in [init, tokenizer, out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn generate_takes_text_chat_messages_prompt_files_and_token_ids() {
    let dir = model("smollm2", "generate", true);
    let greedy = ["--temperature", "0", "--max-new-tokens", "5"];
    let with = |extra: &[&str]| -> Vec<Value> {
        let mut a: Vec<&str> = extra.to_vec();
        a.extend_from_slice(&greedy);
        generate(&dir, &a)
    };
    // Text through the tokenizer (BOS first, as the built-in tokenizer adds it) is the same
    // prompt as its ids.
    let by_text = with(&["--prompt", "2+2="]);
    let by_ids = with(&["--prompt-ids", "1,34,47,34,50"]);
    assert_eq!(ids(&by_text[0]), ids(&by_ids[0]));
    // --chat renders the user turn with the model's template: the same as the rendered text
    // given raw, and as --messages.
    let chat = with(&["--prompt", "2+2=", "--chat"]);
    let rendered = with(&[
        "--prompt",
        "<|im_start|>user\n2+2=<|im_end|>\n<|im_start|>assistant\n",
    ]);
    assert_eq!(ids(&chat[0]), ids(&rendered[0]));
    let messages = tmp("messages.json");
    std::fs::write(&messages, r#"[{"role": "user", "content": "2+2="}]"#).unwrap();
    assert_eq!(
        ids(&with(&["--messages", messages.to_str().unwrap()])[0]),
        ids(&chat[0])
    );
    // --system adds a system turn first.
    let system = with(&["--prompt", "2+2=", "--chat", "--system", "be brief"]);
    let rendered_system = with(&[
        "--prompt",
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n2+2=<|im_end|>\n<|im_start|>assistant\n",
    ]);
    assert_eq!(ids(&system[0]), ids(&rendered_system[0]));
    // A prompt file: every form of line, batched, in input order, each as it is alone; its
    // text is used byte for byte (a trailing newline inside a prompt stays).
    let file = tmp("prompts.jsonl");
    std::fs::write(
        &file,
        "\"2+2=\"\n[{\"role\": \"user\", \"content\": \"2+2=\"}]\n{\"prompt\": \"7*3=\\n\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"2+2=\"}]}\n",
    )
    .unwrap();
    let batched = with(&["--prompt-file", file.to_str().unwrap()]);
    let order: Vec<u64> = batched
        .iter()
        .map(|c| c["prompt_index"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2, 3]);
    assert_eq!(ids(&batched[0]), ids(&by_text[0]));
    assert_eq!(ids(&batched[1]), ids(&chat[0]));
    assert_eq!(ids(&batched[2]), ids(&with(&["--prompt", "7*3=\n"])[0]));
    assert_ne!(
        ids(&batched[2]),
        ids(&with(&["--prompt", "7*3="])[0]),
        "the newline counts"
    );
    assert_eq!(ids(&batched[3]), ids(&chat[0]));
    // --device and --dtype.
    let bf16 = with(&["--prompt", "2+2=", "--device", "cpu", "--dtype", "bf16"]);
    assert_eq!(bf16.len(), 1);
    // Bad input exits 2.
    for (args, words) in [
        (
            vec!["--prompt", "x", "--device", "tpu"],
            "expected cpu, cuda or cuda:N",
        ),
        (vec!["--prompt-ids", "1,999"], "outside the model's vocabulary"),
        (vec!["--prompt-file", "/nonexistent.jsonl"], "/nonexistent.jsonl"),
    ] {
        let mut a = vec!["generate", "--model", dir.to_str().unwrap()];
        a.extend(args);
        let out = rlvr(&a);
        assert_eq!(out.status.code(), Some(2), "{a:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(words), "{a:?}: {}", text(&out.stderr));
    }
    let plain = model("smollm2", "no-template", false);
    let out = rlvr(&[
        "generate",
        "--model",
        plain.to_str().unwrap(),
        "--prompt",
        "x",
        "--chat",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no chat_template"),
        "{}",
        text(&out.stderr)
    );
    for d in [dir, plain, file, messages] {
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_file(&d);
    }
}
