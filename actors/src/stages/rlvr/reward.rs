//! The reward `[rlvr]` composes ([`rlvr_verifiers::reward::Composition`]): the verifiable
//! reward, a reward model's score, the R1-style format reward, the length penalty, the non-stop
//! penalty and DAPO's overlong shaping, with the combinations rlvr does not run refused by key.

use anyhow::{bail, Result};
use rlvr_recipes::spec::RlvrSpec;
use rlvr_verifiers::reward::{Composition, FormatReward, Overlong};

use crate::UsageError;

/// The reward of stage `stage` from its `[rlvr]` keys (`dynamic_sampling`: whether the
/// algorithm filters groups by reward); a value out of range is a usage error naming its key.
pub(crate) fn composition(stage: &str, rl: &RlvrSpec, dynamic_sampling: bool) -> Result<Composition> {
    let refuse = |key: &str, message: String| -> Result<Composition> {
        bail!(UsageError(format!("stage `{stage}`: rlvr.{key}: {message}")))
    };
    let learned = rl.reward_model_multiplier != 0.0;
    if !rl.apply_verifiable_reward && !learned {
        return refuse(
            "apply_verifiable_reward",
            "false with reward_model_multiplier = 0 leaves no reward: turn the verifiable reward \
             on, or give a reward model (reward_model_path) a non-zero multiplier"
                .into(),
        );
    }
    if learned && rl.reward_model_path.is_empty() {
        return refuse(
            "reward_model_multiplier",
            format!(
                "{}: a reward model must score, but rlvr.reward_model_path is empty",
                rl.reward_model_multiplier
            ),
        );
    }
    if learned && dynamic_sampling {
        return refuse(
            "reward_model_multiplier",
            "dynamic sampling filters groups before the learner scores them, so it cannot use a \
             reward model's score: set rlvr.dynamic_sampling = false"
                .into(),
        );
    }
    if !rl.reward_model_multiplier.is_finite() {
        return refuse(
            "reward_model_multiplier",
            format!("{}: must be finite", rl.reward_model_multiplier),
        );
    }
    if !(rl.length_penalty >= 0.0 && rl.length_penalty.is_finite()) {
        return refuse(
            "length_penalty",
            format!(
                "{}: must be a finite number >= 0 (the penalty at the full response_length)",
                rl.length_penalty
            ),
        );
    }
    if rl.overlong_buffer_length > rl.response_length {
        return refuse(
            "overlong_buffer_length",
            format!(
                "{} is longer than response_length = {}",
                rl.overlong_buffer_length, rl.response_length
            ),
        );
    }
    let format = match rl.apply_r1_style_format_reward {
        true => match FormatReward::new(
            &rl.format_pattern,
            rl.r1_style_format_reward,
            rl.additive_format_reward,
        ) {
            Ok(f) => Some(f),
            Err(e) => {
                return refuse(
                    "format_pattern",
                    format!("{:?} does not compile: {e}", rl.format_pattern),
                )
            }
        },
        false => None,
    };
    Ok(Composition {
        verified_reward: rl.apply_verifiable_reward.then_some(rl.verified_reward),
        reward_model_multiplier: rl.reward_model_multiplier,
        format,
        length_penalty: rl.length_penalty,
        max_tokens: rl.response_length as usize,
        non_stop_penalty: rl.non_stop_penalty.then_some(rl.penalty_reward_value),
        overlong: (rl.overlong_buffer_length > 0).then_some(Overlong {
            max_tokens: rl.response_length as usize,
            buffer: rl.overlong_buffer_length as usize,
            factor: rl.overlong_penalty_factor,
        }),
    })
}
