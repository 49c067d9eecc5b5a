//! Built-in data, the tokenizer and the sampler.

mod common;

use std::collections::HashSet;

use rlvr_data::arith::{problem, Split};
use rlvr_data::{Builtin, Sampler, Tokenizer};

#[test]
fn problems_are_deterministic_correct_and_splits_disjoint() {
    let train: HashSet<String> = (0..3000).map(|i| problem(7, i, Split::Train).question).collect();
    let test: Vec<_> = (0..300).map(|i| problem(7, i, Split::Test)).collect();
    assert!(test.iter().all(|p| !train.contains(&p.question)));
    assert_eq!(problem(7, 42, Split::Train), problem(7, 42, Split::Train));
    assert_ne!(problem(7, 42, Split::Train), problem(8, 42, Split::Train));
    for p in &test {
        let (expr, _) = p.solution.split_once('=').unwrap();
        let (a, op, b) = if let Some((a, b)) = expr.split_once('+') {
            (a, '+', b)
        } else if let Some((a, b)) = expr.split_once('-') {
            (a, '-', b)
        } else {
            let (a, b) = expr.split_once('*').unwrap();
            (a, '*', b)
        };
        let (a, b): (i64, i64) = (a.parse().unwrap(), b.parse().unwrap());
        let want = match op {
            '+' => a + b,
            '-' => a - b,
            _ => a * b,
        };
        assert_eq!(p.answer, want, "{}", p.solution);
        assert!(p.solution.ends_with(&format!("#### {want}")));
    }
}

#[test]
fn demonstrations_slip_on_multiplication_only_at_the_documented_rate() {
    let problems: Vec<_> = (0..6000).map(|i| problem(7, i, Split::Train)).collect();
    let (mut products, mut slips) = (0, 0);
    for p in &problems {
        if p.solution.contains('*') {
            products += 1;
            if p.demonstration != p.solution {
                slips += 1;
                assert!(p.demonstration.contains('+'), "{}", p.demonstration);
            }
        } else {
            assert_eq!(p.demonstration, p.solution);
        }
        assert!(p.solution.ends_with(&format!("#### {}", p.answer)));
    }
    let rate = 100.0 * slips as f64 / products as f64;
    let want = rlvr_data::arith::SLIP_PERCENT as f64;
    assert!(
        (rate - want).abs() < 4.0,
        "{slips}/{products} = {rate:.1}% slips, want {want}%"
    );
}

#[test]
fn char_tokenizer_round_trips_and_keeps_specials_whole() {
    let tok = Tokenizer::builtin_chars();
    let text = problem(1, 0, Split::Train).text();
    let ids = tok.encode(&text);
    assert_eq!(ids.len(), text.chars().count());
    assert_eq!(tok.decode(&ids), text);
    let chat = tok.encode("<|im_start|>user\nhi<|im_end|>");
    assert_eq!(chat.len(), 1 + "user\nhi".len() + 1);
    assert_eq!(chat[0], 4);
    assert_eq!(tok.decode(&[tok.eos_id]), "");
    // The saved tokenizer.json loads back through the file path with the same ids.
    let dir = std::env::temp_dir().join(format!("rlvr-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    tok.save(&dir).unwrap();
    let back = Tokenizer::from_file(&dir).unwrap();
    assert_eq!(back.encode(&text), ids);
    assert_eq!(back.eos_id, tok.eos_id);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(Tokenizer::from_file(std::path::Path::new("/nonexistent/tokenizer.json")).is_err());
}

#[test]
fn sampler_visits_every_row_once_per_epoch_and_resumes_exactly() {
    let mut s = Sampler::new(10, 3);
    let epoch0 = s.take(10);
    let mut sorted = epoch0.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    let epoch1 = s.take(10);
    assert_ne!(epoch0, epoch1, "reshuffled each epoch");
    let mut a = Sampler::new(10, 3);
    a.take(7);
    let rest_a = a.take(9);
    let mut b = Sampler::new(10, 3);
    b.set_position(7);
    assert_eq!(b.take(9), rest_a);
}

#[test]
fn unknown_builtin_lists_the_known_ones() {
    let err = Builtin::parse("builtin:nope").unwrap_err().to_string();
    assert!(err.contains("builtin:arith"), "{err}");
    assert!(Builtin::parse("builtin:arith")
        .unwrap()
        .example(0, 0, Split::Train)
        .is_some());
}

#[test]
fn chat_examples_mask_the_prompt() {
    let tok = Tokenizer::builtin_chars();
    let e = Builtin::parse("builtin:arith-chat")
        .unwrap()
        .example(5, 3, Split::Train)
        .unwrap();
    assert!(e.prompt.starts_with("<|im_start|>user\n") && e.prompt.ends_with("<|im_start|>assistant\n"));
    assert!(e.completion.contains("#### ") && e.completion.ends_with("<|im_end|>\n"));
    let (ids, labels) = e.encode(&tok, 1000);
    let masked = labels.iter().take_while(|&&l| l == rlvr_core::IGNORE).count();
    assert_eq!(
        masked,
        1 + tok.encode(&e.prompt).len(),
        "BOS and the prompt carry no loss"
    );
    assert_eq!(&ids[masked..], &labels[masked..]);
    assert_eq!(*ids.last().unwrap(), i64::from(tok.eos_id));
    let (short, short_labels) = e.encode(&tok, 10);
    assert_eq!((short.len(), short_labels.len()), (10, 10));
    assert!(Builtin::parse("builtin:arith-rlvr")
        .unwrap()
        .example(0, 0, Split::Train)
        .is_none());
}

#[test]
fn preference_pairs_prefer_the_correct_answer_over_a_wrong_one() {
    let tok = Tokenizer::builtin_chars();
    let prefs = Builtin::parse("builtin:arith-prefs").unwrap();
    for i in 0..500 {
        let p = problem(9, i, Split::Train);
        let pair = prefs.pair(9, i, Split::Train).unwrap();
        assert_eq!(pair.chosen, format!("{}<|im_end|>\n", p.solution));
        assert_ne!(p.mistake, p.solution);
        assert!(
            !p.mistake.ends_with(&format!("#### {}", p.answer)),
            "{}",
            p.mistake
        );
        let ((c, cl), (r, rl)) = pair.encode(&tok, 1000);
        // Same prompt, both masked alike; the answers differ.
        let masked = cl.iter().take_while(|&&l| l == rlvr_core::IGNORE).count();
        assert_eq!(masked, rl.iter().take_while(|&&l| l == rlvr_core::IGNORE).count());
        assert_eq!(c[..masked], r[..masked]);
        assert_ne!(c, r);
    }
    assert!(prefs.example(0, 0, Split::Train).is_none());
    assert!(Builtin::parse("builtin:arith-chat")
        .unwrap()
        .pair(0, 0, Split::Train)
        .is_none());
}

#[test]
fn rlvr_rows_read_the_tulu_format_and_bad_rows_name_file_line_and_field() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rlvr-sample-300.jsonl");
    let chatml = rlvr_data::ChatTemplate::builtin("chatml", "<|im_end|>").unwrap();
    let rows = common::read_all(&sample, |v, at| {
        rlvr_data::rlvr_row(v, at, &chatml, rlvr_data::PromptFormat::FewShot)
    })
    .unwrap();
    assert_eq!(rows.len(), 300);
    for dataset in ["gsm8k", "MATH", "ifeval"] {
        assert_eq!(
            rows.iter().filter(|r| r.dataset == dataset).count(),
            100,
            "{dataset}"
        );
    }
    assert!(rows.iter().all(|r| r.prompt.starts_with("<|im_start|>user\n")));
    assert!(rows.iter().all(|r| r.prompt.ends_with("<|im_start|>assistant\n")));
    // Tülu 3's own format with its template: the answer is what follows `<|assistant|>\n`.
    let tulu = rlvr_data::ChatTemplate::resolve("tulu", &rlvr_data::Tokenizer::builtin_chars()).unwrap();
    let rows = common::read_all(&sample, |v, at| {
        rlvr_data::rlvr_row(v, at, &tulu, rlvr_data::PromptFormat::FewShot)
    })
    .unwrap();
    assert!(rows
        .iter()
        .all(|r| r.prompt.starts_with("<|user|>\n") && r.prompt.ends_with("\n<|assistant|>\n")));

    let dir = std::env::temp_dir().join(format!("rlvr-data-rows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.jsonl");
    let good =
        r#"{"messages": [{"role": "user", "content": "hi"}], "ground_truth": "1", "dataset": "gsm8k"}"#;
    let no_truth =
        r#"{"messages": [{"role": "user", "content": "hi"}], "ground_truth": 7, "dataset": "gsm8k"}"#;
    std::fs::write(&bad, format!("{good}\n\n{no_truth}\n")).unwrap();
    let err = common::read_all(&bad, |v, at| {
        rlvr_data::rlvr_row(v, at, &chatml, rlvr_data::PromptFormat::FewShot)
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad.jsonl:3: field `ground_truth`"), "{err}");
    std::fs::write(&bad, format!("{good}\n{{\"messages\": []}}\n")).unwrap();
    let err = common::read_all(&bad, |v, at| {
        rlvr_data::rlvr_row(v, at, &chatml, rlvr_data::PromptFormat::FewShot)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("bad.jsonl:2: field `messages`: no messages"),
        "{err}"
    );
    std::fs::write(
        &bad,
        format!("{good}\n{{\"messages\": [{{\"role\": \"user\", \"content\": \"x\"}}]}}\n"),
    )
    .unwrap();
    let err = common::read_all(&bad, |v, at| {
        rlvr_data::rlvr_row(v, at, &chatml, rlvr_data::PromptFormat::FewShot)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("bad.jsonl:2: field `ground_truth`: missing"),
        "{err}"
    );
    // A role the template refuses names the row and field.
    let tool = r#"{"messages": [{"role": "tool", "content": "x"}], "ground_truth": "1", "dataset": "gsm8k"}"#;
    std::fs::write(&bad, format!("{tool}\n")).unwrap();
    let err = common::read_all(&bad, |v, at| {
        rlvr_data::rlvr_row(v, at, &tulu, rlvr_data::PromptFormat::FewShot)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("bad.jsonl:1: field `messages`") && err.contains("no role tool"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn special_tokens_come_from_the_tokenizer_and_generation_configs() {
    let dir = std::env::temp_dir().join(format!("rlvr-tok-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Tokenizer::builtin_chars().save(&dir).unwrap();
    // What it saved: its special tokens and BOS rule travel with it.
    let saved = Tokenizer::from_file(&dir).unwrap();
    assert_eq!(
        (saved.eos_id, saved.pad_id, saved.bos_id, saved.add_bos),
        (2, 0, Some(1), true)
    );
    // Without the configs, by name alone: `</s>` (2), `<pad>` (0); BOS from the
    // post-processor.
    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    let plain = Tokenizer::from_file(&dir).unwrap();
    assert_eq!(
        (plain.eos_id, plain.pad_id, plain.bos_id, plain.add_bos),
        (2, 0, Some(1), true)
    );
    assert_eq!(plain.encode_prompt("1+1"), [1, 33, 47, 33], "BOS once");
    assert_eq!(
        plain.encode_prompt("<s>1"),
        [1, 33],
        "a text that starts with BOS keeps one"
    );
    // generation_config.json's first eos_token_id (a list, as Llama 3.1 Instruct has); every
    // id of the list stops generation.
    std::fs::write(dir.join("generation_config.json"), r#"{"eos_token_id": [5, 2]}"#).unwrap();
    let listed = Tokenizer::from_file(&dir).unwrap();
    assert_eq!((listed.eos_id, listed.stop_ids.as_slice()), (5, &[5, 2][..]));
    // tokenizer_config.json wins, its tokens as strings or AddedToken objects.
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": {"content": "<|im_start|>", "special": true}, "pad_token": "<|im_end|>"}"#,
    )
    .unwrap();
    let tok = Tokenizer::from_file(&dir).unwrap();
    assert_eq!((tok.eos_id, tok.pad_id), (4, 5));
    std::fs::write(dir.join("tokenizer_config.json"), "{not json").unwrap();
    let err = Tokenizer::from_file(&dir).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("not JSON"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
