//! Chat templates against known rendered strings: the built-in `tulu` and `chatml`, a model's
//! own Jinja template from `tokenizer_config.json` under transformers' semantics, and the
//! assistant spans and token mask SFT trains on.

mod common;

use rlvr_data::{ChatTemplate, DataError, Message, Tokenizer};

fn conversation() -> Vec<Message> {
    vec![
        Message::new("system", "Be brief."),
        Message::new("user", "2+2?"),
        Message::new("assistant", "4"),
        Message::new("user", "3+3?"),
        Message::new("assistant", "6"),
    ]
}

#[test]
fn tulu_renders_open_instructs_training_format() {
    let t = ChatTemplate::builtin("tulu", "</s>").unwrap();
    assert_eq!(
        t.render(&conversation(), false).unwrap(),
        "<|system|>\nBe brief.\n<|user|>\n2+2?\n<|assistant|>\n4</s>\n<|user|>\n3+3?\n<|assistant|>\n6</s>"
    );
    assert_eq!(
        t.render(&conversation()[..2], true).unwrap(),
        "<|system|>\nBe brief.\n<|user|>\n2+2?\n<|assistant|>\n"
    );
    let err = t.render(&[Message::new("tool", "x")], false).unwrap_err();
    assert!(
        err.to_string().contains("the tulu template has no role tool"),
        "{err}"
    );
}

#[test]
fn chatml_renders_smollm2s_format() {
    let t = ChatTemplate::builtin("chatml", "<|im_end|>").unwrap();
    assert_eq!(
        t.render(&conversation()[1..3], false).unwrap(),
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    );
    assert_eq!(
        t.render(&conversation()[1..2], true).unwrap(),
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let err = ChatTemplate::builtin("vicuna", "</s>").unwrap_err();
    assert!(err.to_string().contains("built in: tulu, chatml"), "{err}");
}

/// A Llama-3-like template in the style models ship: blocks trimmed, Python string methods,
/// `raise_exception`, `bos_token`, loop controls.
const MODEL_TEMPLATE: &str = r#"{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system = messages[0]['content'] %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system = '' %}
{%- endif %}
{%- if system %}{{- '<|start_header_id|>system<|end_header_id|>\n\n' + system.strip() + '<|eot_id|>' }}{%- endif %}
{%- for message in messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'done' %}{% break %}{% endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"#;

fn write_config(dir: &std::path::Path, chat_template: serde_json::Value) -> std::path::PathBuf {
    let path = dir.join("tokenizer_config.json");
    let config = serde_json::json!({
        "bos_token": "<|begin_of_text|>",
        "eos_token": {"content": "<|eot_id|>", "lstrip": false},
        "chat_template": chat_template,
    });
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[test]
fn a_models_own_template_renders_with_transformers_semantics() {
    let dir = std::env::temp_dir().join(format!("rlvr-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = write_config(&dir, serde_json::json!(MODEL_TEMPLATE));
    let t = ChatTemplate::from_tokenizer_config(&path).unwrap();
    assert_eq!(t.eos_token(), "<|eot_id|>");
    let messages = vec![
        Message::new("system", "  Be brief.  "),
        Message::new("user", "2+2? "),
        Message::new("assistant", "4"),
    ];
    assert_eq!(
        t.render(&messages, false).unwrap(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
    );
    assert!(t
        .render(&messages[..2], true)
        .unwrap()
        .ends_with("2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"));
    // raise_exception surfaces as an error naming the file, with the template's message.
    let err = t.render(&[Message::new("assistant", "hi")], false).unwrap_err();
    assert!(matches!(err, DataError::Template { .. }));
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    assert!(err.to_string().contains("roles must alternate"), "{err}");

    // transformers' list form: the template named `default`.
    let path = write_config(
        &dir,
        serde_json::json!([{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{{ messages[0].content }}!"}]),
    );
    let t = ChatTemplate::from_tokenizer_config(&path).unwrap();
    assert_eq!(t.render(&messages[1..2], false).unwrap(), "2+2? !");
    // A template that does not compile is an error at load time.
    let path = write_config(&dir, serde_json::json!("{% for m in messages %}"));
    let err = ChatTemplate::from_tokenizer_config(&path).unwrap_err();
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn assistant_turns_are_the_trained_spans_and_tokens() {
    let tulu = ChatTemplate::builtin("tulu", "</s>").unwrap();
    let chat = tulu.render_for_training(&conversation()).unwrap();
    let spans: Vec<&str> = chat.assistant.iter().map(|r| &chat.text[r.clone()]).collect();
    assert_eq!(spans, ["4</s>", "6</s>"]);

    let chatml = ChatTemplate::builtin("chatml", "<|im_end|>").unwrap();
    let messages = [
        Message::new("user", "what is 2+2?"),
        Message::new("assistant", "answer: 4"),
    ];
    let chat = chatml.render_for_training(&messages).unwrap();
    assert_eq!(&chat.text[chat.assistant[0].clone()], "answer: 4<|im_end|>\n");
    // Token by token with the built-in character tokenizer: the trained tokens spell the
    // assistant's turn, `<|im_end|>` (one token) included.
    let tok = Tokenizer::builtin_chars();
    let (ids, trained) = tok.encode_chat(&chat);
    assert_eq!(ids.len(), trained.len());
    let kept: Vec<u32> = ids
        .iter()
        .zip(&trained)
        .filter(|(_, t)| **t)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(tok.decode(&kept), "answer: 4\n");
    assert_eq!(kept.len(), "answer: 4".len() + 2);
}

#[test]
fn jsonl_rows_encode_with_loss_on_assistant_turns_or_on_all_text() {
    let dir = std::env::temp_dir().join(format!("rlvr-lm-jsonl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rows.jsonl");
    let chat =
        r#"{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}"#;
    let text = r#"{"text": "abc"}"#;
    std::fs::write(&path, format!("{chat}\n\n{text}\n")).unwrap();
    let tok = Tokenizer::builtin_chars();
    let chatml = ChatTemplate::builtin("chatml", "<|im_end|>").unwrap();
    let rows = common::read_all(&path, |v, at| rlvr_data::lm_row(v, at, &chatml, &tok, 128)).unwrap();
    assert_eq!(rows.len(), 2);
    let learned = |(ids, labels): &(Vec<i64>, Vec<i64>)| {
        let kept: Vec<u32> = ids
            .iter()
            .zip(labels)
            .filter(|(_, l)| **l != rlvr_core::IGNORE)
            .map(|(i, _)| *i as u32)
            .collect();
        tok.decode(&kept)
    };
    assert_eq!(learned(&rows[0]), "2\n", "the assistant turn and its end only");
    assert_eq!(
        learned(&rows[1]),
        "abc",
        "all of plain text, EOS included (decoded away)"
    );
    assert_eq!(*rows[1].0.last().unwrap(), i64::from(tok.eos_id));
    // Truncation to the maximum length keeps ids and labels aligned.
    let short = common::read_all(&path, |v, at| rlvr_data::lm_row(v, at, &chatml, &tok, 5)).unwrap();
    assert!(short.iter().all(|(i, l)| i.len() == 5 && l.len() == 5));
    // A bad row names file, line and field.
    std::fs::write(&path, format!("{chat}\n{{\"text\": 3}}\n")).unwrap();
    let err = common::read_all(&path, |v, at| rlvr_data::lm_row(v, at, &chatml, &tok, 128))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows.jsonl:2: field `text`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
