//! A weighted sum of verifiers: every part scores the same response against the same ground
//! truth (each parses the label its own way), and the verdict's score is the sum of the parts'
//! scores times their weights. The response counts as verified when every part verifies it;
//! the verdict keeps each part's score for per-verifier metrics.

use std::sync::Arc;

use crate::{Truth, TruthError, Verdict, VerdictPart, Verifier};

/// Verifiers whose weighted scores add up to one verdict.
pub struct WeightedSum {
    name: String,
    parts: Vec<(Arc<dyn Verifier>, f64)>,
}

impl WeightedSum {
    /// A sum named `name` of `parts`, each a verifier and its weight.
    pub fn new(name: impl Into<String>, parts: Vec<(Arc<dyn Verifier>, f64)>) -> Self {
        Self {
            name: name.into(),
            parts,
        }
    }

    fn judge(&self, response: &str, truth: &Truth, explain: bool) -> Verdict {
        let Truth::Parts(truths) = truth else {
            return Verdict::new(0.0, false, "a label not parsed by this weighted sum");
        };
        let mut verdict = Verdict::new(0.0, !self.parts.is_empty(), "");
        let mut reasons = Vec::new();
        for ((verifier, weight), truth) in self.parts.iter().zip(truths) {
            let part = match explain {
                true => verifier.verify(response, truth),
                false => verifier.verify_score(response, truth),
            };
            verdict.score += weight * part.score;
            verdict.verified &= part.verified;
            if explain {
                reasons.push(format!("{}: {}", verifier.name(), part.reason));
            }
            verdict.parts.push(VerdictPart {
                verifier: verifier.name().to_string(),
                weight: *weight,
                score: part.score,
            });
        }
        verdict.reason = reasons.join("; ");
        verdict
    }
}

impl Verifier for WeightedSum {
    fn name(&self) -> &str {
        &self.name
    }

    fn parse_truth(&self, raw: &str) -> Result<Truth, TruthError> {
        let truths = self
            .parts
            .iter()
            .map(|(verifier, _)| {
                verifier.parse_truth(raw).map_err(|e| TruthError {
                    truth: e.truth,
                    message: format!("{} (part `{}` of `{}`)", e.message, verifier.name(), self.name),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Truth::Parts(truths))
    }

    fn verify(&self, response: &str, truth: &Truth) -> Verdict {
        self.judge(response, truth, true)
    }

    fn verify_score(&self, response: &str, truth: &Truth) -> Verdict {
        self.judge(response, truth, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Gsm8k, IfEval, Mode};

    #[test]
    fn the_score_is_the_weighted_sum_and_verified_needs_every_part() {
        let gsm8k: Arc<dyn Verifier> = Arc::new(Gsm8k::new(Mode::Default));
        let ifeval: Arc<dyn Verifier> = Arc::new(IfEval::new(Mode::Default));
        // Two checks of one label: the number, and (as an IF constraint) nothing it can parse.
        let sum = WeightedSum::new("both", vec![(gsm8k.clone(), 1.0), (gsm8k, 0.5)]);
        let truth = sum.parse_truth("42").unwrap();
        let right = sum.verify("so the answer is 42", &truth);
        assert_eq!(right.score, 1.5);
        assert!(right.verified);
        assert_eq!(right.parts.len(), 2);
        assert_eq!((right.parts[1].weight, right.parts[1].score), (0.5, 1.0));
        assert!(right.reason.starts_with("gsm8k: "), "{}", right.reason);
        let wrong = sum.verify_score("so the answer is 41", &truth);
        assert_eq!((wrong.score, wrong.verified), (0.0, false));

        let mixed = WeightedSum::new("mixed", vec![(ifeval, 1.0)]);
        let err = mixed.parse_truth("42").unwrap_err();
        assert!(
            err.message.contains("part `ifeval` of `mixed`"),
            "{}",
            err.message
        );
    }
}
