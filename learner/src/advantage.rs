//! Advantages from rewards, on plain numbers: GRPO's group normalisation (each response against
//! the other responses to the same prompt).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_normalised_separately() {
        let a = group_normalized(&[1.0, 0.0, 0.0, 5.0, 5.0, 5.0], 3);
        // First group: mean 1/3, sample std sqrt(1/3).
        let std = (1.0f64 / 3.0).sqrt();
        assert!((a[0] - (2.0 / 3.0) / std).abs() < 1e-6);
        assert!((a[1] + (1.0 / 3.0) / std).abs() < 1e-6);
        assert_eq!(&a[3..], &[0.0, 0.0, 0.0][..]);
        let sum: f64 = a[..3].iter().sum();
        assert!(sum.abs() < 1e-9);
    }
}
