//! How a response's reward is composed, as open-instruct composes it:
//!
//! 1. a learned reward model's score times `reward_model_multiplier` (Tülu 3's PPO; the score
//!    comes from the learner, which holds the model);
//! 2. plus the verifiable reward, `verified_reward` (10) times the verdict's score, when
//!    `apply_verifiable_reward` is on;
//! 3. an R1-style format reward: added when the response has the format, or (not additive) the
//!    verifiable reward is kept only for responses that have it ([`FormatReward`]);
//! 4. a length penalty growing linearly with the response's share of its token budget;
//! 5. a response that ended without EOS gets `non_stop_penalty`'s value instead of all of the
//!    above, when that penalty is on;
//! 6. DAPO's overlong shaping, added last ([`Overlong`]).
//!
//! [`Composition::reward`] returns each component beside the total, for per-component metrics.

use regex::Regex;

use crate::Verdict;

/// The reward's components and settings (the recipe's `rlvr` reward keys).
#[derive(Debug, Clone)]
pub struct Composition {
    /// Reward of a verified response (`verified_reward`), when the verifiable reward is on
    /// (`apply_verifiable_reward`).
    pub verified_reward: Option<f64>,
    /// Weight of the reward model's score (`reward_model_multiplier`; 0: no reward model).
    pub reward_model_multiplier: f64,
    /// The format reward, when it is on.
    pub format: Option<FormatReward>,
    /// Penalty at the full token budget, growing linearly with the response's length (0: off).
    pub length_penalty: f64,
    /// The response-length budget the length penalties measure against.
    pub max_tokens: usize,
    /// The reward of a response that ended without EOS, replacing the others, when the
    /// non-stop penalty is on.
    pub non_stop_penalty: Option<f64>,
    /// DAPO's overlong shaping.
    pub overlong: Option<Overlong>,
}

impl Default for Composition {
    /// Tülu 3's RLVR reward: 10 for a verified response, −10 for one without EOS.
    fn default() -> Self {
        Self {
            verified_reward: Some(10.0),
            reward_model_multiplier: 0.0,
            format: None,
            length_penalty: 0.0,
            max_tokens: 0,
            non_stop_penalty: Some(-10.0),
            overlong: None,
        }
    }
}

/// What is known of one response when its reward is composed.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// The verifier's verdict.
    pub verdict: &'a Verdict,
    /// The decoded response (what the format reward reads).
    pub text: &'a str,
    /// Its token count.
    pub tokens: usize,
    /// Whether it ended with an end-of-sequence token (or a stop string).
    pub stopped: bool,
    /// The reward model's score, when one scored it.
    pub reward_model: Option<f64>,
}

/// A response's reward and its components (each as it entered the total; a component that is
/// off is 0, and a non-stop penalty zeroes those it replaces).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Reward {
    /// The reward.
    pub total: f64,
    /// The verifiable reward.
    pub verifiable: f64,
    /// The reward model's score times its multiplier.
    pub reward_model: f64,
    /// The format reward (additive form).
    pub format: f64,
    /// The length penalty.
    pub length: f64,
    /// The non-stop penalty's value, when it replaced the others.
    pub non_stop: f64,
    /// DAPO's overlong penalty.
    pub overlong: f64,
    /// Whether the response had the format (false when the format reward is off).
    pub formatted: bool,
}

impl Composition {
    /// The reward of `r` and its components.
    pub fn reward(&self, r: &Response) -> Reward {
        let mut out = Reward {
            reward_model: r.reward_model.unwrap_or(0.0) * self.reward_model_multiplier,
            verifiable: self.verified_reward.map_or(0.0, |v| v * r.verdict.score),
            length: -self.length_penalty * r.tokens as f64 / self.max_tokens.max(1) as f64,
            ..Reward::default()
        };
        if let Some(format) = &self.format {
            let formatted = format.matches(r.text);
            out.formatted = formatted;
            match format.additive {
                true => out.format = if formatted { format.reward } else { 0.0 },
                false if !formatted => out.verifiable = 0.0,
                false => {}
            }
        }
        if let (Some(penalty), false) = (self.non_stop_penalty, r.stopped) {
            out = Reward {
                non_stop: penalty,
                formatted: out.formatted,
                ..Reward::default()
            };
        }
        out.overlong = self.overlong.map_or(0.0, |o| o.penalty(r.tokens));
        out.total = out.verifiable + out.reward_model + out.format + out.length + out.non_stop + out.overlong;
        out
    }
}

/// DeepSeek-R1's format reward: a response whose text matches `pattern` from its start.
#[derive(Debug, Clone)]
pub struct FormatReward {
    pattern: Regex,
    /// The reward of a response with the format (additive form).
    pub reward: f64,
    /// Add `reward` to formatted responses (true), or keep the verifiable reward of formatted
    /// responses only (false: open-instruct's default).
    pub additive: bool,
}

impl FormatReward {
    /// A format reward for `pattern` (matched from the start of the response, as Python's
    /// `re.match`); a pattern that does not compile is an error with the reason.
    pub fn new(pattern: &str, reward: f64, additive: bool) -> Result<Self, regex::Error> {
        Ok(Self {
            pattern: Regex::new(&format!(r"\A(?:{pattern})"))?,
            reward,
            additive,
        })
    }

    /// Whether `text` has the format.
    pub fn matches(&self, text: &str) -> bool {
        self.pattern.is_match(text)
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

    /// DeepSeek-R1's format (the recipes' default `format_pattern`).
    const R1: &str = r"(?s).*?</think>\s*<answer>.*?</answer>";

    fn response<'a>(verdict: &'a Verdict, text: &'a str, tokens: usize, stopped: bool) -> Response<'a> {
        Response {
            verdict,
            text,
            tokens,
            stopped,
            reward_model: None,
        }
    }

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
        let yes = Verdict::new(1.0, true, "");
        let no = Verdict::new(0.0, false, "");
        let s = Composition::default();
        assert_eq!(s.reward(&response(&yes, "", 3, true)).total, 10.0);
        assert_eq!(s.reward(&response(&no, "", 3, true)).total, 0.0);
        let cut = s.reward(&response(&yes, "", 3, false));
        assert_eq!((cut.total, cut.non_stop, cut.verifiable), (-10.0, -10.0, 0.0));
        let off = Composition {
            non_stop_penalty: None,
            ..s
        };
        assert_eq!(off.reward(&response(&yes, "", 3, false)).total, 10.0);
    }

    #[test]
    fn components_add_up_as_open_instruct_adds_them() {
        let yes = Verdict::new(1.0, true, "");
        let s = Composition {
            verified_reward: Some(10.0),
            reward_model_multiplier: 0.5,
            format: Some(FormatReward::new(R1, 1.0, true).unwrap()),
            length_penalty: 2.0,
            max_tokens: 8,
            non_stop_penalty: None,
            overlong: Some(Overlong {
                max_tokens: 8,
                buffer: 4,
                factor: 1.0,
            }),
        };
        let formatted = "think\n</think> <answer>4</answer>";
        let r = s.reward(&Response {
            reward_model: Some(3.0),
            ..response(&yes, formatted, 6, true)
        });
        // 10 verified + 0.5·3 model + 1 format − 2·6/8 length − (6−4)/4 overlong.
        assert_eq!(
            r,
            Reward {
                total: 10.0 + 1.5 + 1.0 - 1.5 - 0.5,
                verifiable: 10.0,
                reward_model: 1.5,
                format: 1.0,
                length: -1.5,
                non_stop: 0.0,
                overlong: -0.5,
                formatted: true,
            }
        );
        // Without the format: no format reward; the reward model alone when verification is off.
        let plain = s.reward(&response(&yes, "4", 6, true));
        assert_eq!(plain.format, 0.0);
        let model_only = Composition {
            verified_reward: None,
            ..s.clone()
        };
        let r = model_only.reward(&Response {
            reward_model: Some(-2.0),
            ..response(&yes, "4", 0, true)
        });
        assert_eq!((r.total, r.verifiable, r.reward_model), (-1.0 + 0.0, 0.0, -1.0));
    }

    #[test]
    fn a_gating_format_reward_keeps_the_verified_reward_of_formatted_responses_only() {
        let yes = Verdict::new(1.0, true, "");
        let s = Composition {
            format: Some(FormatReward::new(R1, 1.0, false).unwrap()),
            non_stop_penalty: None,
            ..Composition::default()
        };
        let formatted = s.reward(&response(&yes, "a</think>\n<answer>4</answer> tail", 3, true));
        assert_eq!((formatted.total, formatted.format), (10.0, 0.0));
        // Matched from the start, as re.match: text before is allowed by `.*?`, but a
        // pattern anchored to the answer tag must begin the response.
        assert_eq!(
            s.reward(&response(&yes, "<answer>4</answer>", 3, true)).total,
            0.0
        );
        let anchored = FormatReward::new("<answer>", 1.0, true).unwrap();
        assert!(anchored.matches("<answer>4"));
        assert!(!anchored.matches("x<answer>4"));
    }
}
