//! Evaluation of a model on named tasks (`rlvr_data::evals`): every question rendered with a chat
//! template, all of them generated in one batch through the rollout engine, each completion
//! scored by its verifier. The one code behind `rlvr eval` and the evaluations inside RLVR and
//! DPO stages.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use rlvr_core::{Completion, FinishReason, GenerationRequest, SamplingParams};
use rlvr_data::evals::{self, EvalItem, Preset};
use rlvr_data::{ChatTemplate, Tokenizer};
use rlvr_rollout::NativeEngine;
use rlvr_verifiers::{GoogleIfEval, Mode, Registry, Truth};
use serde::Serialize;
use serde_json::{json, Value};

use crate::UsageError;

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Task names (`gsm8k`, `math500`, `ifeval`, `builtin:word-problems`,
    /// `builtin:if-word-problems`) or data files of RLVR rows.
    pub tasks: Vec<String>,
    /// The first this many questions of each task.
    pub limit: Option<usize>,
    /// How questions are asked.
    pub preset: Preset,
    /// The chat template (`data.chat_template`'s forms; empty: the model's own).
    pub chat_template: String,
    /// Completions per question (pass@k is reported for k = this).
    pub samples: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f64,
    /// Most new tokens per completion.
    pub max_new_tokens: usize,
    /// The verifiers' rules.
    pub mode: Mode,
    /// Seed of the sampling and of the generated task's questions.
    pub seed: u64,
    /// Stop strings, beside the model's end-of-sequence ids.
    pub stop: Vec<String>,
}

/// One scored completion.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// The task.
    pub task: String,
    /// The question's id within it.
    pub id: String,
    /// Which of its completions this is.
    pub index: usize,
    /// The rendered prompt.
    pub prompt: String,
    /// The completion's text.
    pub response: String,
    /// The completion's token ids, as generated (its stop token included), to pin down where
    /// two runs part.
    pub response_ids: Vec<u32>,
    /// Whether the verifier accepted it.
    pub verified: bool,
    /// The verifier's score.
    pub score: f64,
    /// Why.
    pub reason: String,
    /// Whether it ended on a stop token or string (not cut at the token limit).
    pub finished: bool,
    /// IFEval: per instruction, followed strictly and loosely.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifeval: Option<(Vec<bool>, Vec<bool>)>,
}

/// What a task scored.
#[derive(Debug, Clone, Serialize)]
pub struct TaskScore {
    /// Questions.
    pub n: usize,
    /// Completions scored (`n` × samples).
    pub samples: usize,
    /// Mean over completions of the verifier's verdict (IFEval: prompt-level strict).
    pub accuracy: f64,
    /// With several samples: the fraction of questions with at least one verified completion.
    #[serde(skip_serializing_if = "Option::is_none", rename = "pass@k")]
    pub pass_at_k: Option<f64>,
    /// Completions cut at the token limit.
    pub truncated: usize,
    /// Mean completion length in tokens.
    pub mean_tokens: f64,
    /// IFEval's four accuracies.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub ifeval: Option<IfEvalScores>,
}

/// IFEval's accuracies, at the prompt level (every instruction of a prompt followed) and the
/// instruction level, on the response as written (strict) and relaxed (loose).
#[derive(Debug, Clone, Serialize)]
pub struct IfEvalScores {
    /// Prompt-level strict.
    pub prompt_strict: f64,
    /// Prompt-level loose (Tülu 3's headline).
    pub prompt_loose: f64,
    /// Instruction-level strict.
    pub instruction_strict: f64,
    /// Instruction-level loose.
    pub instruction_loose: f64,
}

/// A question ready to generate: its task, rendered prompt, ids and parsed label.
struct Question {
    task: String,
    item: EvalItem,
    prompt: String,
    ids: Vec<u32>,
    truth: Truth,
}

/// The questions of an evaluation, rendered for one model and their labels parsed: what
/// `rlvr eval` generates with its engine and an RLVR stage with its rollout workers.
pub struct Questions {
    settings: Settings,
    registry: Registry,
    items: Vec<Question>,
}

/// An evaluation's result: each task's score, in the order the settings name them, and every
/// sample.
pub struct Report {
    /// Per task.
    pub scores: Vec<(String, TaskScore)>,
    /// Every completion, scored.
    pub samples: Vec<Sample>,
}

impl Questions {
    /// The questions of `settings` for a model with tokenizer `tok`. A label that does not
    /// parse, or a model without a chat template when the settings name none, is an error.
    pub fn new(settings: &Settings, tok: &Tokenizer) -> Result<Self> {
        if settings.chat_template.is_empty() && tok.chat_template().is_none() {
            bail!(UsageError(
                "the model's tokenizer_config.json has no chat_template: name one (tulu, chatml, \
                 or a model directory) with --chat-template / eval.chat_template"
                    .into()
            ));
        }
        let registry = Registry::new(settings.mode);
        let template = ChatTemplate::resolve(&settings.chat_template, tok)?;
        let mut items = Vec::new();
        for task in &settings.tasks {
            let all = evals::task(task, settings.preset, settings.seed)?;
            let take = settings.limit.unwrap_or(all.len()).min(all.len());
            for item in all.into_iter().take(take) {
                let truth = registry
                    .parse_truth(&item.verifier, &item.ground_truth)
                    .with_context(|| format!("task `{task}`, question {}", item.id))?;
                let prompt = template.render(&item.messages, true)?;
                items.push(Question {
                    task: task.clone(),
                    ids: tok.encode_prompt(&prompt),
                    prompt,
                    item,
                    truth,
                });
            }
        }
        Ok(Self {
            settings: settings.clone(),
            registry,
            items,
        })
    }

    /// Refuse questions whose prompt leaves no room for an answer within the model's context,
    /// naming the first.
    pub fn check_fits(&self, max_positions: i64) -> Result<()> {
        match self.items.iter().find(|q| q.ids.len() as i64 >= max_positions) {
            Some(q) => bail!(UsageError(format!(
                "task `{}`, question {}: its prompt of {} tokens leaves no room for an answer within the model's max_position_embeddings = {max_positions}",
                q.task,
                q.item.id,
                q.ids.len()
            ))),
            None => Ok(()),
        }
    }

    /// Questions in all.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// One request per question (id: its index), each sampled `settings.samples` times.
    pub fn requests(&self) -> Vec<GenerationRequest> {
        self.items
            .iter()
            .enumerate()
            .map(|(i, q)| GenerationRequest {
                id: i as u64,
                prompt_ids: q.ids.clone(),
                n: self.settings.samples.max(1),
                seed: self.settings.seed.wrapping_add(i as u64),
            })
            .collect()
    }

    /// How to sample, for a model whose stop ids are `stop_token_ids`.
    pub fn sampling(&self, stop_token_ids: Vec<u32>) -> SamplingParams {
        SamplingParams {
            temperature: self.settings.temperature,
            max_new_tokens: self.settings.max_new_tokens,
            stop_token_ids,
            stop: self.settings.stop.clone(),
            ..SamplingParams::default()
        }
    }

    /// Score `completions` of [`Questions::requests`] (any order).
    pub fn score(&self, completions: &[Completion], tok: &Tokenizer) -> Result<Report> {
        let mut samples = Vec::with_capacity(completions.len());
        let mut lengths = Vec::with_capacity(completions.len());
        for c in completions {
            let q = self
                .items
                .get(c.request_id as usize)
                .with_context(|| format!("a completion of no question ({})", c.request_id))?;
            // Special tokens (the stop token among them) are not part of the answer.
            let text = tok.decode(&c.token_ids);
            let (verdict, ifeval) = match &q.truth {
                Truth::Instructions(prompt) => {
                    let (v, f) = GoogleIfEval.judge(&text, prompt);
                    (v, Some((f.strict, f.loose)))
                }
                truth => (self.registry.get(&q.item.verifier)?.verify(&text, truth), None),
            };
            lengths.push(c.token_ids.len());
            samples.push(Sample {
                task: q.task.clone(),
                id: q.item.id.clone(),
                index: c.index,
                prompt: q.prompt.clone(),
                response: text,
                response_ids: c.token_ids.clone(),
                verified: verdict.verified,
                score: verdict.score,
                reason: verdict.reason,
                finished: c.finish_reason == FinishReason::Stop,
                ifeval,
            });
        }
        let scores = self
            .settings
            .tasks
            .iter()
            .map(|task| {
                let mine: Vec<(&Sample, usize)> = samples
                    .iter()
                    .zip(&lengths)
                    .filter(|(s, _)| &s.task == task)
                    .map(|(s, &l)| (s, l))
                    .collect();
                (task.clone(), score(&mine, self.settings.samples.max(1)))
            })
            .collect();
        Ok(Report { scores, samples })
    }
}

/// Evaluate the model in `engine` (with tokenizer `tok`): every question of every task in one
/// batch, `progress(done, total)` called as completions finish.
pub fn evaluate(
    engine: &mut NativeEngine,
    tok: &Tokenizer,
    settings: &Settings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report> {
    let questions = Questions::new(settings, tok)?;
    questions.check_fits(engine.config().max_position_embeddings)?;
    let params = questions.sampling(rlvr_rollout::stop_token_ids(tok, engine.config()));
    let completions = engine.generate_reporting(&questions.requests(), &params, progress)?;
    questions.score(&completions, tok)
}

/// A task's score from its samples (with their lengths in tokens).
fn score(samples: &[(&Sample, usize)], per_question: usize) -> TaskScore {
    let total = samples.len().max(1) as f64;
    let mut by_question: BTreeMap<&str, bool> = BTreeMap::new();
    for (s, _) in samples {
        *by_question.entry(s.id.as_str()).or_default() |= s.verified;
    }
    let ifeval = samples.iter().any(|(s, _)| s.ifeval.is_some()).then(|| {
        let (mut ps, mut pl, mut is, mut il, mut instructions) = (0, 0, 0, 0, 0);
        for (s, _) in samples {
            if let Some((strict, loose)) = &s.ifeval {
                ps += usize::from(strict.iter().all(|b| *b));
                pl += usize::from(loose.iter().all(|b| *b));
                is += strict.iter().filter(|b| **b).count();
                il += loose.iter().filter(|b| **b).count();
                instructions += strict.len();
            }
        }
        let per = |k: usize, of: usize| k as f64 / of.max(1) as f64;
        IfEvalScores {
            prompt_strict: per(ps, samples.len()),
            prompt_loose: per(pl, samples.len()),
            instruction_strict: per(is, instructions),
            instruction_loose: per(il, instructions),
        }
    });
    TaskScore {
        n: by_question.len(),
        samples: samples.len(),
        accuracy: samples.iter().filter(|(s, _)| s.verified).count() as f64 / total,
        pass_at_k: (per_question > 1)
            .then(|| by_question.values().filter(|v| **v).count() as f64 / by_question.len().max(1) as f64),
        truncated: samples.iter().filter(|(s, _)| !s.finished).count(),
        mean_tokens: samples.iter().map(|(_, l)| *l as f64).sum::<f64>() / total,
        ifeval,
    }
}

/// The scores as `results.json` spells them: `{"gsm8k": {"accuracy": ..., "n": ...}, ...}`.
pub fn scores_json(scores: &[(String, TaskScore)]) -> Value {
    Value::Object(
        scores
            .iter()
            .map(|(t, s)| (t.clone(), serde_json::to_value(s).unwrap_or(json!(null))))
            .collect(),
    )
}

/// The headline figure of a task: IFEval's prompt-level loose accuracy under the Tülu 3 preset
/// (its headline), else the mean accuracy.
pub fn headline(score: &TaskScore, preset: Preset) -> f64 {
    match (&score.ifeval, preset) {
        (Some(i), Preset::Tulu3) => i.prompt_loose,
        _ => score.accuracy,
    }
}
