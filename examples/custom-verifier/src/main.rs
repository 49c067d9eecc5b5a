//! A verifier written outside rlvr's tree, trained with through the library API: implement
//! [`Verifier`], hand it to [`run_with`] beside the recipe, and route a data set to it by name
//! (`rlvr.dataset_verifiers`). Here the verifier accepts an answer whose last number equals the
//! label, and the recipe is `tiny-arith-rlvr` for a few steps:
//!
//! ```sh
//! cargo run --release -p custom-verifier -- /tmp/custom-run
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use rlvr_actors::commands::run::{run_with, Args};
use rlvr_verifiers::{Truth, TruthError, Verdict, Verifier};

/// Accepts a response whose last number is the label.
#[derive(Debug)]
struct LastNumber;

impl Verifier for LastNumber {
    fn name(&self) -> &str {
        "last_number"
    }

    fn parse_truth(&self, raw: &str) -> Result<Truth, TruthError> {
        match raw.trim().parse::<i64>() {
            Ok(_) => Ok(Truth::Text(raw.trim().to_string())),
            Err(e) => Err(TruthError {
                truth: raw.to_string(),
                message: format!("not an integer: {e}"),
            }),
        }
    }

    fn verify(&self, response: &str, truth: &Truth) -> Verdict {
        let Truth::Text(want) = truth else {
            return Verdict::new(0.0, false, "label of another verifier");
        };
        let last = response
            .split(|c: char| !c.is_ascii_digit() && c != '-')
            .rfind(|t| !t.is_empty() && *t != "-");
        let verified = last == Some(want.as_str());
        let score = if verified { 1.0 } else { 0.0 };
        Verdict::new(score, verified, format!("last number {last:?}, label {want}"))
    }
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("runs/custom-verifier"), PathBuf::from);
    let overrides = [
        "train.max_steps=3",
        "rlvr.local_rollout_batch_size=4",
        "rlvr.local_mini_batch_size=32",
        "rlvr.num_evals=1",
        "data.eval_mix=[{dataset = \"builtin:arith-rlvr\", amount = 8, split = \"test\"}]",
        // The data set's rows go to the verifier registered below, by its name.
        "rlvr.dataset_verifiers={\"builtin:arith-rlvr\" = \"last_number\"}",
    ];
    let args = Args {
        recipe: "tiny-arith-rlvr".into(),
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
        out: Some(out),
        resume: false,
        overwrite: true,
        listen: None,
        cookie_file: None,
        rehearse: false,
        max_ranks: None,
    };
    run_with(&args, &[Arc::new(LastNumber)])
}
