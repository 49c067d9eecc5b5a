//! Reward shaping as Tülu 3 did it: a verified response earns `verified_reward` (10), an
//! unverified one 0, and a response that ended without EOS gets `non_stop_penalty` instead of
//! either when the penalty is on; DAPO's overlong shaping takes a little more from responses
//! that run into the end of their length budget ([`Overlong`]).

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

/// DAPO's soft overlong punishment: a response of `len` tokens within `buffer` tokens of the
/// `max_tokens` budget loses `factor · (len − (max_tokens − buffer)) / buffer`, growing linearly
/// to `factor` at the budget; shorter responses lose nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overlong {
    /// The response-length budget.
    pub max_tokens: usize,
    /// The window before the budget where the penalty grows (> 0).
    pub buffer: usize,
    /// The penalty at the budget.
    pub factor: f64,
}

impl Overlong {
    /// The penalty (≤ 0) added to the reward of a response of `len` tokens.
    pub fn penalty(&self, len: usize) -> f64 {
        let free = self.max_tokens.saturating_sub(self.buffer);
        if len <= free || self.buffer == 0 {
            return 0.0;
        }
        let over = (len - free).min(self.buffer) as f64;
        -self.factor * over / self.buffer as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_penalty_grows_linearly_over_the_buffer() {
        let o = Overlong {
            max_tokens: 20,
            buffer: 4,
            factor: 1.0,
        };
        let got: Vec<f64> = [10, 16, 17, 18, 20, 25].iter().map(|&n| o.penalty(n)).collect();
        assert_eq!(got, [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]);
    }

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
