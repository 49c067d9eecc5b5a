//! The IF constraint functions one by one, the Tülu 3 release's defects against default mode,
//! and labels that must fail when they load.

use rlvr_verifiers::{IfEval, Mode, Verifier};
use serde_json::Value;

fn label(func: &str, args: serde_json::Value) -> String {
    let mut m = args.as_object().cloned().unwrap_or_default();
    m.insert("func_name".into(), func.into());
    m.insert("unused".into(), Value::Null);
    Value::Object(m).to_string()
}

fn check(mode: Mode, func: &str, args: serde_json::Value, response: &str) -> bool {
    let v = IfEval::new(mode);
    v.verify(response, &v.parse_truth(&label(func, args)).unwrap())
        .verified
}

#[test]
fn each_function() {
    let d = Mode::Default;
    assert!(check(
        d,
        "verify_keywords",
        serde_json::json!({"keyword_list": ["Cat", "dog"]}),
        "a cat and a DOG"
    ));
    assert!(!check(
        d,
        "verify_keywords",
        serde_json::json!({"keyword_list": ["cat", "cow"]}),
        "a cat"
    ));
    assert!(check(
        d,
        "verify_keyword_frequency",
        serde_json::json!({"word": "the", "N": 2}),
        "The cat, the hat, theme."
    ));
    assert!(check(
        d,
        "validate_forbidden_words",
        serde_json::json!({"forbidden_words": ["bad"]}),
        "good"
    ));
    assert!(check(
        d,
        "verify_letter_frequency",
        serde_json::json!({"letter": "a", "N": 3}),
        "banana"
    ));
    assert!(check(
        d,
        "verify_paragraph_count",
        serde_json::json!({"N": 2}),
        "one\n* * *\ntwo"
    ));
    assert!(!check(
        d,
        "verify_paragraph_count",
        serde_json::json!({"N": 3}),
        "one\n* * *\n* * *\ntwo"
    ));
    assert!(check(
        d,
        "validate_word_constraint",
        serde_json::json!({"N": 10, "quantifier": "around"}),
        "a b c d e f g h i"
    ));
    let three = serde_json::json!({"N": 3, "quantifier": "at least"});
    assert!(check(
        d,
        "verify_sentence_constraint",
        three.clone(),
        "Wow! Great. Fine."
    ));
    assert!(
        !check(
            Mode::Tulu3,
            "verify_sentence_constraint",
            three.clone(),
            "Wow! Great. Fine."
        ),
        "the release does not split after `!`: 2"
    );
    assert!(
        check(
            Mode::Tulu3,
            "verify_sentence_constraint",
            three,
            "One. Mr. Two? Three!"
        ),
        "the release splits after `One.` and `Two?`, not after `Mr.`: 3"
    );
    for mode in [d, Mode::Tulu3] {
        let german = serde_json::json!({"language": "de"});
        let text = "Ich habe heute keine Zeit, weil ich arbeiten muss und sehr müde bin.";
        assert!(check(mode, "validate_response_language", german.clone(), text));
        assert!(!check(
            mode,
            "validate_response_language",
            german,
            "I have no time today because I must work and I am tired."
        ));
    }
    assert!(check(
        d,
        "validate_paragraphs",
        serde_json::json!({"N": 2, "first_word": "However", "i": 2}),
        "Intro\n\nHowever, yes"
    ));
    assert!(check(
        d,
        "verify_postscript",
        serde_json::json!({"postscript_marker": "P.S."}),
        "Hi\nP.S. bye"
    ));
    assert!(!check(
        d,
        "verify_postscript",
        serde_json::json!({"postscript_marker": "P.S."}),
        "Hi P.S."
    ));
    assert!(check(
        d,
        "verify_bullet_points",
        serde_json::json!({"N": 2}),
        "* a\n- b\nc"
    ));
    assert!(check(
        d,
        "validate_title",
        serde_json::json!({}),
        "<<Title>> body"
    ));
    assert!(check(
        d,
        "validate_highlighted_sections",
        serde_json::json!({"N": 2}),
        "*a* and *b*"
    ));
    assert!(check(
        d,
        "validate_sections",
        serde_json::json!({"N": 2, "section_splitter": "SECTION"}),
        "SECTION 1 a SECTION 2 b"
    ));
    assert!(check(
        d,
        "validate_json_format",
        serde_json::json!({}),
        " {\"a\": 1} "
    ));
    assert!(check(
        d,
        "validate_repeat_prompt",
        serde_json::json!({"original_prompt": "Say hi"}),
        "Say hi. Hi!"
    ));
    assert!(check(
        d,
        "validate_two_responses",
        serde_json::json!({}),
        "one\n******\ntwo"
    ));
    assert!(!check(
        d,
        "validate_two_responses",
        serde_json::json!({}),
        "same\n******\nsame"
    ));
    assert!(check(d, "validate_uppercase", serde_json::json!({}), "HELLO 123"));
    assert!(check(d, "validate_lowercase", serde_json::json!({}), "hello 123"));
    assert!(check(
        d,
        "validate_frequency_capital_words",
        serde_json::json!({"N": 2, "quantifier": "at least"}),
        "AB cd EF"
    ));
    assert!(check(
        d,
        "validate_end",
        serde_json::json!({"end_phrase": "Any questions?"}),
        "Done. Any questions?"
    ));
    assert!(check(
        d,
        "validate_quotation",
        serde_json::json!({}),
        "\"quoted\""
    ));
    assert!(check(
        d,
        "validate_no_commas",
        serde_json::json!({}),
        "no commas here"
    ));
}

#[test]
fn tulu3_defects_and_default_fixes() {
    let ph = serde_json::json!({"N": 3});
    assert!(check(
        Mode::Tulu3,
        "validate_placeholders",
        ph.clone(),
        "no placeholders"
    ));
    assert!(!check(
        Mode::Default,
        "validate_placeholders",
        ph.clone(),
        "no placeholders"
    ));
    assert!(check(Mode::Default, "validate_placeholders", ph, "[a] [b] [c]"));
    let opts = serde_json::json!({"options": ["My answer is yes.", "My answer is no."]});
    assert!(check(
        Mode::Default,
        "validate_choice",
        opts.clone(),
        "Thinking... My answer is yes."
    ));
    assert!(!check(
        Mode::Tulu3,
        "validate_choice",
        opts.clone(),
        "Thinking... My answer is yes."
    ));
    assert!(
        check(Mode::Tulu3, "validate_choice", opts, "yes"),
        "the reversed test"
    );
    // Tülu 3 scores the text after the last assistant marker, stripped.
    assert!(check(
        Mode::Tulu3,
        "validate_lowercase",
        serde_json::json!({}),
        "SYSTEM<|assistant|>\n  all lower  "
    ));
}

#[test]
fn bad_labels_fail_at_load_time() {
    let v = IfEval::new(Mode::Default);
    for (raw, why) in [
        ("not json", "not JSON"),
        ("{\"N\": 2}", "func_name"),
        ("{\"func_name\": \"verify_magic\"}", "unknown func_name"),
        (
            "{\"func_name\": \"verify_bullet_points\", \"N\": null}",
            "needs `N`",
        ),
        (
            "{\"func_name\": \"verify_bullet_points\", \"N\": \"two\"}",
            "wrong type",
        ),
        (
            "{\"func_name\": \"verify_letter_frequency\", \"letter\": \"ab\", \"N\": 1}",
            "one character",
        ),
    ] {
        let err = v.parse_truth(raw).unwrap_err().to_string();
        assert!(err.contains(why), "{raw}: {err}");
    }
}
