//! Data actor: serves RL prompts from the recipe's data set in a seeded, epoch-wise shuffled
//! order, and says exactly where it stands so a resumed run reads the prompts it would have.
//! Prompts are tokenized and their ground truths parsed when the data loads, so a malformed
//! label fails the run at start, naming the row.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rlvr_data::{At, DataError, PromptRow, Sampler, Tokenizer};
use rlvr_verifiers::{Registry, Truth, Verifier};

/// One prompt ready to roll out and verify.
#[derive(Clone)]
pub struct Prompt {
    /// Its index in the stage's mix.
    pub row: u64,
    /// Token ids (BOS included when the tokenizer has one).
    pub prompt_ids: Vec<u32>,
    /// The verifier its data set routes to.
    pub verifier: Arc<dyn Verifier>,
    /// Its parsed ground truth.
    pub truth: Arc<Truth>,
    /// The ground truth as the data set wrote it (what a verifier on another node parses).
    pub label: Arc<str>,
}

impl Prompt {
    /// Tokenize `p`, route it to its verifier by its `dataset` and parse its ground truth; a
    /// failure is an error about the row at `at`.
    pub fn new(p: &PromptRow, at: At, tok: &Tokenizer, verifiers: &Registry) -> Result<Self, DataError> {
        let verifier = verifiers
            .get(&p.dataset)
            .map_err(|e| at.bad("dataset", e.to_string()))?
            .clone();
        let truth = verifier
            .parse_truth(&p.ground_truth)
            .map_err(|e| at.bad("ground_truth", e.to_string()))?;
        let prompt_ids = tok.encode_prompt(&p.prompt);
        Ok(Self {
            row: 0,
            prompt_ids,
            verifier,
            truth: Arc::new(truth),
            label: p.ground_truth.as_str().into(),
        })
    }
}

/// Messages of the data actor.
#[derive(ractor_cluster::RactorMessage)]
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
