//! Advantages from rewards, on plain numbers: GRPO's group normalisation (each response against
//! the other responses to the same prompt), and PPO's generalised advantage estimation with
//! batch whitening.

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
