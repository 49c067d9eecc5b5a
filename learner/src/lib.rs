//! # rlvr-learner
//!
//! The training engine behind every stage, on libtorch through `tch`. It knows nothing of
//! actors: give it batches, it takes optimiser steps and reports [`rlvr_core::StepMetrics`].
//!
//! - [`model`]: the causal LMs (Llama 3.x and SmolLM2, Mistral, Qwen2/2.5, Qwen3, OLMo 2) with
//!   Hugging Face tensor names, one implementation of each layer and each family's differences
//!   as data; configurations rlvr does not implement are refused.
//! - [`Learner`]: model + AdamW ([`optim`]) + learning-rate [`schedule`], one call per step.
//! - [`advantage`]: advantages from rewards (GRPO, RLOO, REINFORCE++ and its baseline form,
//!   PPO's GAE and whitening).
//! - [`preference`]: preference-pair losses (DPO, Tülu 3's `dpo_norm`, SimPO) with a cached
//!   reference pass ([`Learner::sequence_logps`], [`Learner::preference_step`]).
//! - [`policy`]: the RL policy-gradient losses (PPO/DAPO's token clip, GSPO's sequence ratio,
//!   CISPO's clipped weight; KL to a frozen reference) and PPO's clipped value loss for the
//!   value model ([`Learner::attach_critic`]); a frozen reward model scores responses for a
//!   learned reward ([`Learner::attach_reward_model`], [`Learner::score`]).
//! - [`off_policy`]: truncated importance sampling, IcePop and sequence masking between the
//!   rollout's behaviour policy and the learner's, and the mismatch between them.
//! - [`checkpoint`]: Hugging Face safetensors in and out, plus optimiser state for resume.
//! - [`runtime`]: libtorch start-up (CUDA registration, threads).
//! - [`bf16_reach`]: how much of a bf16 model a run's updates can move at all.

pub mod advantage;
pub mod bf16_reach;
pub mod checkpoint;
mod error;
mod learner;
pub mod model;
pub mod off_policy;
pub mod optim;
pub mod policy;
pub mod preference;
pub mod runtime;
pub mod schedule;
mod value;
mod zero;

pub use error::{LearnerError, Result};
pub use learner::{BatchScores, Learner, LearnerConfig, Objective, Reduction};
pub use zero::ShardMemory;
