//! The verifiers against the differential corpus (`fixtures/corpus/`, made by
//! `scripts/verifier-corpus.py`): answers in the forms models write, each with its semantic
//! truth and the verdicts of the Python references — the Tülu 3 release's functions, HF
//! math-verify, Google's IFEval with NLTK. Per family, `--mode tulu3` must give the release's
//! verdicts, default mode the semantic truth (and at least math-verify's agreement with it), and
//! `google_ifeval` Google's strict and loose results. Every remaining disagreement must be listed,
//! with its reason, in `fixtures/corpus/DISAGREEMENTS.md` — and nothing else may be listed there.
//! Run with `--nocapture` for the per-family table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rlvr_verifiers::{GoogleIfEval, IfEvalPrompt, Mode, Registry};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

fn items(name: &str) -> Vec<Value> {
    let path = dir().join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Agreement counts of one family: (agreed, compared) per comparison.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, (usize, usize)>);

impl Tally {
    fn add(&mut self, what: &'static str, agree: bool) {
        let e = self.0.entry(what).or_default();
        e.0 += usize::from(agree);
        e.1 += 1;
    }
    fn rate(&self, what: &str) -> Option<f64> {
        self.0.get(what).map(|(a, n)| *a as f64 / *n as f64)
    }
}

/// Every comparison of every item: per verifier and family, the tallies; and the ids that
/// disagree, with what they disagree on.
fn run() -> (BTreeMap<(String, String), Tally>, BTreeMap<String, String>) {
    let default = Registry::new(Mode::Default);
    let tulu3 = Registry::new(Mode::Tulu3);
    let mut tallies: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut disagree = BTreeMap::new();
    for (file, verifier) in [("gsm8k", "gsm8k"), ("math", "math"), ("if", "ifeval")] {
        for it in items(file) {
            let (id, family) = (it["id"].as_str().unwrap(), it["family"].as_str().unwrap());
            let (response, label) = (
                it["response"].as_str().unwrap(),
                it["ground_truth"].as_str().unwrap(),
            );
            let tally = tallies.entry((file.into(), family.into())).or_default();
            let ours = |r: &Registry| r.verify(verifier, response, label).map(|v| v.verified);
            let (d, t) = (ours(&default), ours(&tulu3));
            match (&it["tulu3"], &t) {
                (Value::Bool(want), Ok(got)) => {
                    tally.add("tulu3 = release", got == want);
                    if got != want {
                        disagree.insert(id.to_string(), format!("tulu3 {got}, release {want}"));
                    }
                }
                (Value::Bool(_), Err(e)) => {
                    tally.add("tulu3 = release", false);
                    disagree.insert(id.to_string(), format!("tulu3 error {e}"));
                }
                _ => {}
            }
            if let Value::Bool(truth) = it["truth"] {
                let got = d.as_ref().is_ok_and(|v| *v);
                tally.add("default = truth", got == truth);
                if got != truth {
                    disagree
                        .entry(id.to_string())
                        .or_insert_with(|| format!("default {got}, truth {truth}"));
                }
                if let Value::Bool(mv) = it["math_verify"] {
                    tally.add("math-verify = truth", mv == truth);
                }
            }
        }
    }
    for it in items("google_ifeval") {
        let id = it["id"].as_str().unwrap();
        let family = it["family"].as_str().unwrap();
        let row: Value = serde_json::from_str(it["ground_truth"].as_str().unwrap()).unwrap();
        let prompt = IfEvalPrompt::from_row(&row).unwrap();
        let f = GoogleIfEval.follow(it["response"].as_str().unwrap(), &prompt);
        let want = |k: &str| -> Vec<bool> { serde_json::from_value(it[k].clone()).unwrap() };
        let tally = tallies
            .entry(("google_ifeval".into(), family.into()))
            .or_default();
        let (s, l) = (f.strict == want("strict"), f.loose == want("loose"));
        tally.add("strict = Google", s);
        tally.add("loose = Google", l);
        if !(s && l) {
            disagree.insert(
                id.to_string(),
                format!(
                    "strict {:?} vs {:?}, loose {:?} vs {:?}",
                    f.strict,
                    want("strict"),
                    f.loose,
                    want("loose")
                ),
            );
        }
    }
    (tallies, disagree)
}

/// Ids listed in DISAGREEMENTS.md (each line `- \`ID\`: reason`).
fn listed() -> BTreeSet<String> {
    let text = std::fs::read_to_string(dir().join("DISAGREEMENTS.md")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("- `")?.split('`').next().map(str::to_string))
        .collect()
}

#[test]
fn the_verifiers_agree_with_the_references_family_by_family() {
    let (tallies, disagree) = run();
    let mut totals: BTreeMap<(String, &str), (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    eprintln!("{:<14} {:<40} agreement", "verifier", "family");
    for ((file, family), t) in &tallies {
        let cells: Vec<String> =
            t.0.iter()
                .map(|(what, (a, n))| format!("{what} {a}/{n}"))
                .collect();
        eprintln!("{file:<14} {family:<40} {}", cells.join(", "));
        for (what, (a, n)) in &t.0 {
            let e = totals.entry((file.clone(), what)).or_default();
            e.0 += a;
            e.1 += n;
        }
        // Default mode at or above math-verify on every family it has a verdict for.
        if let (Some(ours), Some(mv)) = (t.rate("default = truth"), t.rate("math-verify = truth")) {
            if ours < mv {
                failures.push(format!(
                    "{file} {family}: default {ours:.3} below math-verify {mv:.3}"
                ));
            }
        }
    }
    for ((file, what), (a, n)) in &totals {
        eprintln!(
            "{file:<14} {what:<24} {a}/{n} = {:.2}%",
            100.0 * *a as f64 / *n as f64
        );
    }
    let rate = |file: &str, what: &str| {
        totals
            .get(&(file.to_string(), what))
            .map(|(a, n)| *a as f64 / *n as f64)
    };
    for (file, what, target) in [
        ("gsm8k", "tulu3 = release", 0.995),
        ("math", "tulu3 = release", 0.995),
        ("if", "tulu3 = release", 0.995),
        ("gsm8k", "default = truth", 0.995),
        ("math", "default = truth", 0.98),
        ("google_ifeval", "strict = Google", 0.998),
        ("google_ifeval", "loose = Google", 0.998),
    ] {
        let got = rate(file, what).unwrap_or(0.0);
        if got < target {
            failures.push(format!(
                "{file}: {what} {:.2}% < {:.1}%",
                100.0 * got,
                100.0 * target
            ));
        }
    }
    let listed = listed();
    let unlisted: Vec<String> = disagree
        .iter()
        .filter(|(id, _)| !listed.contains(*id))
        .map(|(id, why)| format!("{id}: {why}"))
        .collect();
    if !unlisted.is_empty() {
        failures.push(format!(
            "disagreements not in DISAGREEMENTS.md:\n{}",
            unlisted.join("\n")
        ));
    }
    let stale: Vec<&String> = listed.iter().filter(|id| !disagree.contains_key(*id)).collect();
    if !stale.is_empty() {
        failures.push(format!("listed in DISAGREEMENTS.md but agreeing now: {stale:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
