//! Reward shaping as Tülu 3 did it: a verified response earns `verified_reward` (10), an
//! unverified one 0, and a response that ended without EOS gets `non_stop_penalty` instead of
//! either when the penalty is on.

use crate::Verdict;

/// Shaping settings (the recipe's `rlvr.verified_reward`, `rlvr.non_stop_penalty`,
/// `rlvr.penalty_reward_value`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shaping {
    /// Reward of a verified response.
    pub verified_reward: f64,
    /// Replace the reward of responses without EOS.
    pub non_stop_penalty: bool,
    /// The reward they get instead.
    pub penalty_reward_value: f64,
}

impl Default for Shaping {
    fn default() -> Self {
        Self {
            verified_reward: 10.0,
            non_stop_penalty: true,
            penalty_reward_value: -10.0,
        }
    }
}

/// The reward of one response.
pub fn reward(verdict: &Verdict, stopped_at_eos: bool, shaping: &Shaping) -> f64 {
    if shaping.non_stop_penalty && !stopped_at_eos {
        shaping.penalty_reward_value
    } else {
        verdict.score * shaping.verified_reward
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tulu3_shaping() {
        let yes = Verdict {
            score: 1.0,
            verified: true,
            reason: String::new(),
        };
        let no = Verdict {
            score: 0.0,
            verified: false,
            reason: String::new(),
        };
        let s = Shaping::default();
        assert_eq!(reward(&yes, true, &s), 10.0);
        assert_eq!(reward(&no, true, &s), 0.0);
        assert_eq!(reward(&yes, false, &s), -10.0);
        let off = Shaping {
            non_stop_penalty: false,
            ..s
        };
        assert_eq!(reward(&yes, false, &off), 10.0);
    }
}
