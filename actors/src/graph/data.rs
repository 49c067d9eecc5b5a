//! Data actor: serves RL prompts from the recipe's data set in a seeded, epoch-wise shuffled
//! order, and says exactly where it stands so a resumed run reads the prompts it would have.
//! Prompts are tokenized and their ground truths parsed when the data loads, so a malformed
//! label fails the run at start, naming the row.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rlvr_data::arith::Split;
use rlvr_data::{read_rlvr_jsonl, rlvr_sample, Builtin, ChatTemplate, PromptRow, Sampler, Tokenizer};
use rlvr_recipes::spec::{Amount, MixEntry};
use rlvr_verifiers::{Registry, Truth, Verifier};

/// One prompt ready to roll out and verify.
#[derive(Clone)]
pub struct Prompt {
    /// Row of its data set.
    pub row: u64,
    /// Token ids (BOS included when the tokenizer has one).
    pub prompt_ids: Vec<u32>,
    /// The verifier its data set routes to.
    pub verifier: Arc<dyn Verifier>,
    /// Its parsed ground truth.
    pub truth: Arc<Truth>,
}

/// The rows of one mix entry: a generated built-in data set (`split` of it), the compiled-in
/// `builtin:rlvr-sample`, or a JSON-lines file in the Tülu 3 RLVR format.
fn rows(entry: &MixEntry, split: Split, seed: u64, template: &ChatTemplate) -> Result<Vec<PromptRow>> {
    let count = |len: u64| match entry.amount {
        Amount::Count(n) => n.min(len),
        Amount::Fraction(f) => ((len as f64 * f).round() as u64).min(len),
    };
    if entry.dataset.ends_with(".jsonl") {
        let rows = read_rlvr_jsonl(Path::new(&entry.dataset), template)?;
        let n = count(rows.len() as u64) as usize;
        return Ok(rows.into_iter().take(n).collect());
    }
    let source = Builtin::parse(&entry.dataset)?;
    if source == Builtin::RlvrSample {
        let rows = rlvr_sample();
        let n = count(rows.len() as u64) as usize;
        return Ok(rows.into_iter().take(n).collect());
    }
    let Amount::Count(n) = entry.amount else {
        bail!(
            "data set `{}`: a generated data set needs a row count",
            entry.dataset
        );
    };
    (0..n)
        .map(|row| {
            source
                .prompt(seed, row, split)
                .with_context(|| format!("data set `{}` holds no RL prompts", entry.dataset))
        })
        .collect()
}

/// Load the prompts of one mix entry: conversations of JSON-lines files rendered with
/// `template`, tokenized, routed to a verifier by their `dataset` column, ground truth parsed
/// (a malformed one names the data set, row and field).
pub fn load_prompts(
    entry: &MixEntry,
    split: Split,
    seed: u64,
    tok: &Tokenizer,
    template: &ChatTemplate,
    verifiers: &Registry,
) -> Result<Vec<Prompt>> {
    rows(entry, split, seed, template)?
        .into_iter()
        .enumerate()
        .map(|(row, p)| {
            let at = || format!("data set `{}`, row {}", entry.dataset, row + 1);
            let verifier = verifiers
                .get(&p.dataset)
                .with_context(|| format!("{}, field dataset", at()))?
                .clone();
            let truth = verifier
                .parse_truth(&p.ground_truth)
                .with_context(|| format!("{}, field ground_truth", at()))?;
            let mut prompt_ids: Vec<u32> = tok.bos_id.into_iter().collect();
            prompt_ids.extend(tok.encode(&p.prompt));
            Ok(Prompt {
                row: row as u64,
                prompt_ids,
                verifier,
                truth: Arc::new(truth),
            })
        })
        .collect()
}

/// Messages of the data actor.
pub enum DataMsg {
    /// The next `n` prompts.
    Next(usize, RpcReplyPort<Vec<Prompt>>),
    /// Prompts served so far (the resume position).
    Position(RpcReplyPort<u64>),
}

/// Start-up arguments of the data actor.
pub struct DataArgs {
    /// Every prompt of the data set.
    pub prompts: Vec<Prompt>,
    /// Shuffling seed.
    pub seed: u64,
    /// Where to start (prompts already served before a resume).
    pub position: u64,
}

/// State of the data actor.
pub struct DataState {
    prompts: Vec<Prompt>,
    sampler: Sampler,
}

/// The data actor.
pub struct DataActor;

impl Actor for DataActor {
    type Msg = DataMsg;
    type State = DataState;
    type Arguments = DataArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<DataMsg>,
        args: DataArgs,
    ) -> Result<DataState, ActorProcessingErr> {
        if args.prompts.is_empty() {
            return Err("the RL data set holds no prompts".into());
        }
        let mut sampler = Sampler::new(args.prompts.len() as u64, args.seed);
        sampler.set_position(args.position);
        Ok(DataState {
            prompts: args.prompts,
            sampler,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<DataMsg>,
        message: DataMsg,
        state: &mut DataState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DataMsg::Next(n, reply) => {
                let rows = state.sampler.take(n);
                let _ = reply.send(
                    rows.into_iter()
                        .map(|r| state.prompts[r as usize].clone())
                        .collect(),
                );
            }
            DataMsg::Position(reply) => {
                let _ = reply.send(state.sampler.position());
            }
        }
        Ok(())
    }
}
