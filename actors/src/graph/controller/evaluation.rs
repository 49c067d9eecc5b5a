//! The controller's evaluations during a run: greedy accuracy on the held-out prompts, and the
//! `[eval]` test sets scored as `rlvr eval` scores them.

use std::time::Instant;

use anyhow::Result;
use rlvr_core::SamplingParams;
use serde_json::json;

use super::ControllerState;
use crate::graph::step::{accuracy, rollout, rollout_requests, verify};

impl ControllerState {
    /// The test sets of `[eval]` scored as `rlvr eval` scores them, logged as an `eval_tasks`
    /// record (each task's accuracy and, for IFEval, its four accuracies).
    pub(super) async fn evaluate_tasks(&mut self) -> Result<()> {
        let Some(tasks) = &self.eval_tasks else {
            return Ok(());
        };
        let t = Instant::now();
        let completions = rollout_requests(&self.roles, tasks.questions.requests(), &tasks.sampling)
            .await?
            .completions;
        let report = tasks.questions.score(&completions, &self.tokenizer)?;
        self.metrics.write(&json!({
            "stage": "rlvr", "step": self.step, "eval_tasks": crate::evaluation::scores_json(&report.scores),
            "policy_version": self.version, "eval_s": t.elapsed().as_secs_f64(),
            "elapsed_s": self.started.elapsed().as_secs_f64(),
        }))?;
        let line: Vec<String> = report
            .scores
            .iter()
            .map(|(task, s)| format!("{task} {:.3}", s.accuracy))
            .collect();
        self.say(format!(
            "rlvr step {:>4}  test sets: {}",
            self.step,
            line.join(", ")
        ));
        Ok(())
    }

    /// Whether the test sets are due after the current step (`every`, or with the held-out
    /// evaluations).
    pub(super) fn tasks_due(&self) -> bool {
        let every = match &self.eval_tasks {
            Some(t) if t.every > 0 => t.every,
            Some(_) => self.settings.eval_every.max(1),
            None => return false,
        };
        self.step.is_multiple_of(every) || self.step == self.settings.steps
    }

    /// Greedy accuracy on the held-out prompts, logged as an `eval_accuracy` record.
    pub(super) async fn evaluate(&mut self) -> Result<f64> {
        let params = SamplingParams {
            temperature: 0.0,
            ..self.settings.sampling.clone()
        };
        let completions = rollout(&self.roles, &self.eval_prompts, 1, &params, 0)
            .await?
            .completions;
        let (_, verdicts) = verify(&self.roles, &self.tokenizer, &self.eval_prompts, &completions).await?;
        let (acc, per) = accuracy(&self.eval_prompts, &verdicts);
        self.metrics.write(&json!({
            "stage": "rlvr", "step": self.step, "eval_accuracy": acc, "eval_accuracy_per_verifier": per,
            "eval_prompts": self.eval_prompts.len(), "policy_version": self.version,
            "elapsed_s": self.started.elapsed().as_secs_f64(),
        }))?;
        self.say(format!(
            "rlvr step {:>4}  held-out accuracy {:.3} ({} prompts, greedy)",
            self.step,
            acc,
            self.eval_prompts.len()
        ));
        self.evals.push((self.step, acc));
        Ok(acc)
    }
}
