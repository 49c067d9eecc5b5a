//! Advantages from rewards, on plain numbers, one [`Estimator`] per family: GRPO's group
//! normalisation (each response against the other responses to the same prompt), RLOO's
//! leave-one-out baseline, REINFORCE++'s returns normalised over the whole batch (with or
//! without a group baseline first), and PPO's generalised advantage estimation with batch
//! whitening.

/// How a step's advantages are made from its per-token rewards (the verifier's score on the
/// last token, minus β·KL on every token when the KL penalty is in the reward).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Estimator {
    /// GRPO: each response's total reward against its group's, divided by the group's standard
    /// deviation when `scale` (Dr. GRPO: not), on every token.
    Grpo {
        /// Divide by the group's standard deviation.
        scale: bool,
    },
    /// RLOO: each response's total reward minus the mean of the other responses' to its
    /// prompt, on every token.
    Rloo,
    /// REINFORCE++: each token's discounted return, whitened over every token of the batch.
    ReinforcePp {
        /// Discount γ.
        gamma: f64,
    },
    /// REINFORCE++-baseline: each response's total reward minus its group's mean, on every
    /// token, whitened over every token of the batch.
    ReinforcePpBaseline,
    /// PPO: GAE over the value model's estimates, whitened over the batch when `whiten`.
    Gae {
        /// Discount γ.
        gamma: f64,
        /// GAE λ.
        lam: f64,
        /// Whiten over the batch.
        whiten: bool,
    },
}

/// A step's advantages and, for PPO, the value targets, per response and token.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Advantages {
    /// Each response's per-token advantages.
    pub advantages: Vec<Vec<f32>>,
    /// Each response's per-token value targets (empty without a value model).
    pub returns: Vec<Vec<f32>>,
}

impl Estimator {
    /// True when the estimator needs the value model's estimates.
    pub fn needs_values(self) -> bool {
        matches!(self, Self::Gae { .. })
    }

    /// Advantages of a step's responses from their per-token rewards (`token_rewards`, one
    /// vector per response, groups of `group` consecutive responses to one prompt) and, for
    /// GAE, the value model's per-token estimates (`values`; ignored otherwise).
    pub fn estimate(self, token_rewards: &[Vec<f64>], values: &[Vec<f32>], group: usize) -> Advantages {
        let totals: Vec<f64> = token_rewards.iter().map(|r| r.iter().sum()).collect();
        let on_every_token = |per_response: Vec<f64>| -> Vec<Vec<f32>> {
            per_response
                .iter()
                .zip(token_rewards)
                .map(|(a, r)| vec![*a as f32; r.len()])
                .collect()
        };
        let advantages = match self {
            Self::Grpo { scale: true } => on_every_token(group_normalized(&totals, group)),
            Self::Grpo { scale: false } => on_every_token(group_centered(&totals, group)),
            Self::Rloo => on_every_token(leave_one_out(&totals, group)),
            Self::ReinforcePp { gamma } => {
                let mut a: Vec<Vec<f32>> = token_rewards
                    .iter()
                    .map(|r| discounted_returns(r, gamma))
                    .collect();
                whiten(&mut a);
                a
            }
            Self::ReinforcePpBaseline => {
                let mut a = on_every_token(group_centered(&totals, group));
                whiten(&mut a);
                a
            }
            Self::Gae {
                gamma,
                lam,
                whiten: w,
            } => {
                let (mut advantages, returns): (Vec<_>, Vec<_>) = token_rewards
                    .iter()
                    .zip(values)
                    .map(|(r, v)| {
                        let r: Vec<f32> = r.iter().map(|&x| x as f32).collect();
                        gae(&r, v, gamma, lam)
                    })
                    .unzip();
                if w {
                    whiten(&mut advantages);
                }
                return Advantages { advantages, returns };
            }
        };
        Advantages {
            advantages,
            returns: Vec::new(),
        }
    }
}

/// GRPO advantages: `(r − mean) / (std + 1e-8)` within consecutive groups of `group` rewards
/// (the responses to one prompt), with the sample standard deviation as `torch.std`. A group
/// whose responses all scored the same gets zero advantages: it teaches nothing.
pub fn group_normalized(rewards: &[f64], group: usize) -> Vec<f64> {
    let group = group.max(1);
    rewards
        .chunks(group)
        .flat_map(|g| {
            let n = g.len() as f64;
            let mean = g.iter().sum::<f64>() / n;
            let var = if g.len() > 1 {
                g.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)
            } else {
                0.0
            };
            let std = var.sqrt();
            g.iter().map(move |r| (r - mean) / (std + 1e-8))
        })
        .collect()
}

/// Dr. GRPO advantages: `r − mean` within consecutive groups of `group` rewards, not divided by
/// the group's standard deviation (which weights near-unanimous groups up).
pub fn group_centered(rewards: &[f64], group: usize) -> Vec<f64> {
    rewards
        .chunks(group.max(1))
        .flat_map(|g| {
            let mean = g.iter().sum::<f64>() / g.len() as f64;
            g.iter().map(move |r| r - mean)
        })
        .collect()
}

/// RLOO advantages: each reward minus the mean of the other `group − 1` rewards of its group,
/// `(r − mean) · n / (n − 1)`; 0 in a group of one.
pub fn leave_one_out(rewards: &[f64], group: usize) -> Vec<f64> {
    rewards
        .chunks(group.max(1))
        .flat_map(|g| {
            let (n, total) = (g.len() as f64, g.iter().sum::<f64>());
            g.iter()
                .map(move |r| if n > 1.0 { r - (total - r) / (n - 1.0) } else { 0.0 })
        })
        .collect()
}

/// Each token's discounted return `Σ_{k ≥ t} γ^(k−t) r_k` over one response.
pub fn discounted_returns(rewards: &[f64], gamma: f64) -> Vec<f32> {
    let mut out = vec![0.0f32; rewards.len()];
    let mut running = 0.0f64;
    for t in (0..rewards.len()).rev() {
        running = rewards[t] + gamma * running;
        out[t] = running as f32;
    }
    out
}

/// Generalised advantage estimation over one response: per-token `rewards` and value
/// estimates `values` (the value after the last token is 0). Returns the advantages and the
/// value targets (advantage + value).
pub fn gae(rewards: &[f32], values: &[f32], gamma: f64, lam: f64) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut adv = vec![0.0f32; n];
    let mut running = 0.0f64;
    for t in (0..n).rev() {
        let next = if t + 1 < n { f64::from(values[t + 1]) } else { 0.0 };
        let delta = f64::from(rewards[t]) + gamma * next - f64::from(values[t]);
        running = delta + gamma * lam * running;
        adv[t] = running as f32;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// Whiten every token's advantage over the whole batch: `(a − mean) / sqrt(var + 1e-8)`, with
/// the sample variance (open-instruct's `masked_whiten`).
pub fn whiten(advantages: &mut [Vec<f32>]) {
    let all: Vec<f64> = advantages.iter().flatten().map(|&a| f64::from(a)).collect();
    if all.len() < 2 {
        return;
    }
    let n = all.len() as f64;
    let mean = all.iter().sum::<f64>() / n;
    let var = all.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let scale = 1.0 / (var + 1e-8).sqrt();
    for a in advantages.iter_mut().flatten() {
        *a = ((f64::from(*a) - mean) * scale) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_normalised_separately() {
        let c = group_centered(&[1.0, 0.0, 0.0, 5.0, 5.0, 5.0], 3);
        let want = [2.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0, 0.0, 0.0, 0.0];
        assert!(c.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{c:?}");
        let a = group_normalized(&[1.0, 0.0, 0.0, 5.0, 5.0, 5.0], 3);
        // First group: mean 1/3, sample std sqrt(1/3).
        let std = (1.0f64 / 3.0).sqrt();
        assert!((a[0] - (2.0 / 3.0) / std).abs() < 1e-6);
        assert!((a[1] + (1.0 / 3.0) / std).abs() < 1e-6);
        assert_eq!(&a[3..], &[0.0, 0.0, 0.0][..]);
        let sum: f64 = a[..3].iter().sum();
        assert!(sum.abs() < 1e-9);
    }

    #[test]
    fn leave_one_out_subtracts_the_other_responses_mean() {
        let a = leave_one_out(&[1.0, 0.0, 0.0, 1.0, 5.0], 4);
        // First group of 4: 1 − 1/3, 0 − 2/3, 0 − 2/3, 1 − 1/3; a group of one gets 0.
        let want = [2.0 / 3.0, -2.0 / 3.0, -2.0 / 3.0, 2.0 / 3.0, 0.0];
        assert!(a.iter().zip(want).all(|(x, y)| (x - y).abs() < 1e-12), "{a:?}");
        let e = Estimator::Rloo.estimate(&[vec![0.0, 1.0], vec![0.0, 0.0, 0.0]], &[], 2);
        assert_eq!(e.advantages, vec![vec![1.0f32; 2], vec![-1.0f32; 3]]);
    }

    #[test]
    fn reinforce_pp_whitens_discounted_returns_over_the_batch() {
        // Rewards: −0.1 KL on each token, score 1 on the last; γ = 1.
        let rewards = vec![vec![-0.1, -0.1, 0.9], vec![-0.1, -0.1]];
        let returns = [[0.7, 0.8, 0.9].as_slice(), &[-0.2, -0.1]].concat();
        let mean = returns.iter().sum::<f64>() / 5.0;
        let std = (returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
        let e = Estimator::ReinforcePp { gamma: 1.0 }.estimate(&rewards, &[], 2);
        let got: Vec<f32> = e.advantages.concat();
        for (g, r) in got.iter().zip(&returns) {
            assert!((f64::from(*g) - (r - mean) / std).abs() < 1e-5, "{got:?}");
        }
        assert_eq!(discounted_returns(&[1.0, 0.0, 2.0], 0.5), [1.5, 1.0, 2.0]);
    }

    #[test]
    fn reinforce_pp_baseline_centres_in_the_group_then_whitens_over_tokens() {
        // Totals 1 and 0 in one group: ±0.5 on 2 and 1 tokens; whitened over the 3 tokens.
        let e = Estimator::ReinforcePpBaseline.estimate(&[vec![0.0, 1.0], vec![0.0]], &[], 2);
        let raw = [0.5f64, 0.5, -0.5];
        let mean = 0.5 / 3.0;
        let std = (raw.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        let got = e.advantages.concat();
        for (g, r) in got.iter().zip(raw) {
            assert!((f64::from(*g) - (r - mean) / std).abs() < 1e-5, "{got:?}");
        }
        assert!(e.returns.is_empty());
    }

    #[test]
    fn gae_matches_a_hand_computation() {
        // γ = 1, λ = 0.5; rewards [0, 0, 1], values [0.2, 0.4, 0.6], terminal value 0.
        let (adv, ret) = gae(&[0.0, 0.0, 1.0], &[0.2, 0.4, 0.6], 1.0, 0.5);
        let d = [0.0 + 0.4 - 0.2, 0.0 + 0.6 - 0.4, 1.0 - 0.6];
        let a2 = d[2];
        let a1 = d[1] + 0.5 * a2;
        let a0 = d[0] + 0.5 * a1;
        for (got, want) in adv.iter().zip([a0, a1, a2]) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{adv:?}");
        }
        assert!((ret[0] - (adv[0] + 0.2)).abs() < 1e-6);
        // λ = 1 and zero values: every advantage is the sum of the rewards still to come.
        let (adv, _) = gae(&[1.0, 2.0, 3.0], &[0.0; 3], 1.0, 1.0);
        assert_eq!(adv, [6.0, 5.0, 3.0]);
    }

    #[test]
    fn whitening_gives_zero_mean_unit_variance_over_all_tokens() {
        let mut a = vec![vec![1.0, 2.0], vec![3.0, 4.0, 10.0]];
        whiten(&mut a);
        let all: Vec<f32> = a.iter().flatten().copied().collect();
        let mean: f32 = all.iter().sum::<f32>() / 5.0;
        let var: f32 = all.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "{all:?}");
    }
}
