//! Loading, `extends`, `--set` and the errors a user sees.

use std::path::PathBuf;

use rlvr_recipes::spec::StageKind;
use rlvr_recipes::{catalog, load, RecipeError, Resolved};

fn stage(r: Resolved) -> rlvr_recipes::Recipe {
    match r {
        Resolved::Stage(r) => *r,
        Resolved::Pipeline(p) => panic!("{} is a pipeline", p.name),
    }
}

/// A directory holding `files`, removed when it drops.
fn tmp(name: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("rlvr-load-{name}-"))
        .tempdir()
        .unwrap();
    for (f, text) in files {
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    dir
}

#[test]
fn every_catalogue_recipe_resolves_and_validates() {
    let names = catalog::names();
    assert!(names.len() >= 28, "{names:?}");
    for name in names {
        let r = load(name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.name(), name);
        // The resolved TOML reads back as the same recipe.
        if let Resolved::Stage(s) = &r {
            let back: rlvr_recipes::Recipe = toml::from_str(&r.to_toml()).unwrap();
            assert_eq!(&back, s.as_ref(), "{name}");
        }
    }
}

#[test]
fn catalogue_embeds_every_file_in_the_directory() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("catalog");
    let on_disk = std::fs::read_dir(&dir).unwrap().filter(|e| {
        let p = e.as_ref().unwrap().path();
        p.extension().is_some_and(|x| x == "toml")
    });
    assert_eq!(on_disk.count(), catalog::names().len());
}

#[test]
fn unknown_recipe_lists_the_known_ones() {
    let err = load("no-such-recipe", &[]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RecipeError::UnknownRecipe { .. }));
    assert!(msg.contains("tulu3-70b") && msg.contains("smollm2-135m"), "{msg}");
}

#[test]
fn unknown_key_in_a_file_names_file_line_and_choices() {
    let dir = tmp(
        "unknown",
        &[(
            "bad.toml",
            "name = \"bad\"\nkind = \"sft\"\n\n[train]\nlearning_rate = 1e-5\nlerning_rate = 2\n",
        )],
    );
    let path = dir.path().join("bad.toml");
    let err = load(path.to_str().unwrap(), &[]).unwrap_err();
    match &err {
        RecipeError::Parse { file, line, message } => {
            assert!(file.ends_with("bad.toml"));
            assert_eq!(*line, 6, "{err}");
            assert!(
                message.contains("lerning_rate") && message.contains("learning_rate"),
                "{message}"
            );
        }
        other => panic!("{other}"),
    }
}

#[test]
fn wrong_type_names_the_line() {
    let dir = tmp(
        "type",
        &[("t.toml", "name = \"t\"\nkind = \"sft\"\nseed = \"seven\"\n")],
    );
    let err = load(dir.path().join("t.toml").to_str().unwrap(), &[]).unwrap_err();
    assert!(matches!(err, RecipeError::Parse { line: 3, .. }), "{err}");
    let dir = tmp("kind", &[("k.toml", "name = \"k\"\nkind = \"ppo\"\n")]);
    let err = load(dir.path().join("k.toml").to_str().unwrap(), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains(":2:") && err.contains("rlvr"), "{err}");
}

#[test]
fn a_file_extends_a_catalogue_recipe_and_overrides_it() {
    let dir = tmp(
        "extends",
        &[(
            "mine.toml",
            "name = \"mine\"\nextends = \"tulu3-8b-sft\"\n[train]\nlearning_rate = 1e-5\n",
        )],
    );
    let r = stage(load(dir.path().join("mine.toml").to_str().unwrap(), &[]).unwrap());
    assert_eq!(r.name, "mine");
    assert_eq!(r.train.learning_rate, 1e-5);
    assert_eq!(r.train.num_train_epochs, 2, "inherited");
    assert_eq!(r.model.config.hidden_size, 4096, "inherited through two levels");
    assert!(r.extends.is_none());
}

#[test]
fn extends_cycles_are_reported() {
    let dir = tmp(
        "cycle",
        &[
            ("a.toml", "name = \"a\"\nextends = \"b\"\n"),
            ("b.toml", "name = \"b\"\nextends = \"a\"\n"),
        ],
    );
    let err = load(dir.path().join("a.toml").to_str().unwrap(), &[]).unwrap_err();
    assert!(matches!(err, RecipeError::ExtendsCycle { .. }), "{err}");
}

#[test]
fn set_overrides_go_through_the_typed_path() {
    let r = stage(
        load(
            "tulu3-8b-sft",
            &[
                "train.learning_rate=1e-6".into(),
                "model.name_or_path=./my-model".into(),
                "seed=9".into(),
            ],
        )
        .unwrap(),
    );
    assert_eq!(r.train.learning_rate, 1e-6);
    assert_eq!(r.model.name_or_path, "./my-model");
    assert_eq!(r.seed, 9);

    let err = load("tulu3-8b-sft", &["train.lerning_rate=1".into()]).unwrap_err();
    assert!(
        matches!(&err, RecipeError::Override { key, .. } if key == "train.lerning_rate"),
        "{err}"
    );
    assert!(
        err.to_string().contains("learning_rate"),
        "lists the valid keys: {err}"
    );

    let err = load("tulu3-8b-sft", &["train.learning_rate=fast".into()]).unwrap_err();
    assert!(matches!(&err, RecipeError::Override { .. }), "{err}");

    let err = load("tulu3-8b-sft", &["train.learning_rate=-1".into()]).unwrap_err();
    assert!(
        matches!(&err, RecipeError::Invalid { key, .. } if key == "train.learning_rate"),
        "{err}"
    );

    let err = load("tulu3-8b-sft", &["no_equals_sign".into()]).unwrap_err();
    assert!(matches!(&err, RecipeError::Override { .. }), "{err}");

    // Engines split over launched ranks need GPUs to launch them on.
    let err = load("tiny-arith-rlvr", &["rlvr.vllm_tensor_parallel_size=2".into()]).unwrap_err();
    assert!(
        matches!(&err, RecipeError::Invalid { key, message, .. }
            if key == "rlvr.vllm_tensor_parallel_size" && message.contains("launch.gpus > 1")),
        "{err}"
    );
    let sets = ["rlvr.vllm_tensor_parallel_size=2".into(), "launch.gpus=3".into()];
    assert!(load("tiny-arith-rlvr", &sets).is_ok());
}

#[test]
fn pipeline_overrides_are_scoped_by_stage_kind_or_name() {
    let Resolved::Pipeline(p) = load(
        "tulu3-8b",
        &[
            "dpo.dpo.beta=0.1".into(),
            "tulu3-8b-sft.train.learning_rate=1e-5".into(),
            "seed=5".into(),
        ],
    )
    .unwrap() else {
        panic!()
    };
    let by_kind = |k: StageKind| p.stages.iter().find(|s| s.kind == Some(k)).unwrap();
    assert_eq!(by_kind(StageKind::Dpo).dpo.as_ref().unwrap().beta, 0.1);
    assert_eq!(by_kind(StageKind::Sft).train.learning_rate, 1e-5);
    assert_eq!(
        by_kind(StageKind::Rlvr).train.learning_rate,
        3e-7,
        "others untouched"
    );
    assert!(
        p.stages.iter().all(|s| s.seed == 5),
        "unscoped keys apply to every stage"
    );
    let err = load("tulu3-8b", &["pretrain.seed=1".into()]).unwrap_err();
    assert!(matches!(err, RecipeError::Override { .. }), "{err}");
}

#[test]
fn verifier_mode_is_checked_and_datasets_remap() {
    let err = load("tulu3-8b-rlvr", &["rlvr.verifier_mode=strict".into()]).unwrap_err();
    assert!(
        err.to_string().contains("default") && err.to_string().contains("tulu3"),
        "{err}"
    );
    let r = stage(load("tiny-arith-rlvr", &[]).unwrap());
    let rl = r.rlvr.unwrap();
    assert_eq!(
        rl.dataset_verifiers.get("builtin:arith-rlvr").map(String::as_str),
        Some("gsm8k")
    );
    assert_eq!(
        stage(load("tulu3-70b-rlvr", &[]).unwrap())
            .rlvr
            .unwrap()
            .verifier_mode,
        rlvr_recipes::spec::VerifierMode::Tulu3,
        "inherited"
    );
}
