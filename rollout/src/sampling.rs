//! Choosing the next token from one row of log-probabilities: greedy, temperature, top-k and
//! top-p, driven by a per-completion random stream so results reproduce; and greedy or
//! temperature choices for a whole batch of rows on their device ([`choose_rows`]).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rlvr_core::SamplingParams;
use tch::{Device, Kind, Tensor};

/// Pick a token from `logp` (log-softmax of the temperature-scaled logits). Returns the token
/// and its log-probability under the distribution it was drawn from: the full one without
/// top-k/top-p, else the kept tokens' renormalised (`log p − log S`, S the kept mass), which is
/// what the learner recomputes (`rlvr_learner::policy::TokenDistribution`).
pub fn sample(logp: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> (u32, f32) {
    if params.temperature <= 0.0 {
        let (i, &lp) = logp
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        return (i as u32, lp);
    }
    let full = params.top_k == 0 || params.top_k >= logp.len();
    if full && params.top_p >= 1.0 {
        // Inverse-CDF sampling over the whole vocabulary, no sort needed.
        let u: f64 = rng.gen::<f64>();
        let mut acc = 0.0f64;
        let mut last = 0;
        for (i, &lp) in logp.iter().enumerate() {
            let p = f64::from(lp).exp();
            if p > 0.0 {
                last = i;
            }
            acc += p;
            if acc > u {
                return (i as u32, lp);
            }
        }
        return (last as u32, logp[last]);
    }
    // Candidates in descending probability, cut by top-k then top-p.
    let mut order: Vec<u32> = (0..logp.len() as u32).collect();
    let k = if full { logp.len() } else { params.top_k };
    let by_prob = |a: &u32, b: &u32| logp[*b as usize].total_cmp(&logp[*a as usize]);
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_prob);
        order.truncate(k);
    }
    order.sort_unstable_by(by_prob);
    let mut kept = 0;
    let mut mass = 0.0f64;
    for &t in &order {
        mass += f64::from(logp[t as usize]).exp();
        kept += 1;
        if mass >= params.top_p {
            break;
        }
    }
    let u = rng.gen::<f64>() * mass;
    let renormalised = |t: u32| (f64::from(logp[t as usize]) - mass.ln()) as f32;
    let mut acc = 0.0f64;
    for &t in &order[..kept] {
        acc += f64::from(logp[t as usize]).exp();
        if acc > u {
            return (t, renormalised(t));
        }
    }
    let t = order[kept - 1];
    (t, renormalised(t))
}

/// Each row's token of `logits` (`[rows, vocab]`) with its log-probability: the greedy choice
/// (no `draws`) or a draw from `softmax(logits / temperature)` (one uniform draw per row), in
/// libtorch's operations on `logits`' device (a log-softmax, its exponential, a cumulative
/// sum, searched there with each row's draw); only the chosen tokens and their
/// log-probabilities come back. On an x86-64 CPU `rlvr_learner::model::choose_tokens` does the
/// same in one fused kernel.
pub fn choose_rows(logits: &Tensor, temperature: f64, draws: Option<&[f32]>) -> Vec<(u32, f32)> {
    let scaled = if temperature == 1.0 {
        logits.shallow_clone()
    } else {
        logits / temperature
    };
    let logp = scaled.log_softmax(-1, Kind::Float);
    let index = match draws {
        None => logp.argmax(-1, true),
        Some(draws) => sample_cdf_rows(&logp.exp().cumsum(-1, Kind::Float), draws),
    };
    // Tokens and log-probs come back in one copy, as f64 (exact for both).
    let chosen = logp.gather(1, &index, false);
    let packed = Tensor::cat(&[index.to_kind(Kind::Double), chosen.to_kind(Kind::Double)], 1);
    let packed = Vec::<f64>::try_from(packed.to_device(Device::Cpu).view([-1])).unwrap_or_default();
    packed
        .chunks(2)
        .map(|pair| (pair[0] as u32, pair[1] as f32))
        .collect()
}

/// Pick a token from each row of cumulative probabilities `cdf` (`[rows, vocab]`, f32; the last
/// entry of a row is its total mass, 1 up to rounding) with that row's uniform draw in `[0, 1)`:
/// the first token whose cumulative probability exceeds `draw × total`. Runs on `cdf`'s device
/// (one search per row, no copy of the table); returns `[rows, 1]` int64 token ids.
pub fn sample_cdf_rows(cdf: &Tensor, draws: &[f32]) -> Tensor {
    let vocab = cdf.size()[1];
    let u = Tensor::from_slice(draws).to_device(cdf.device()).view([-1, 1]) * cdf.narrow(1, vocab - 1, 1);
    u.searchsorted(cdf, false, true, "right", None::<Tensor>)
        .clamp_max(vocab - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn logp(p: &[f64]) -> Vec<f32> {
        p.iter().map(|x| x.ln() as f32).collect()
    }

    #[test]
    fn greedy_top_k_and_top_p() {
        let lp = logp(&[0.1, 0.5, 0.15, 0.25]);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let greedy = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        assert_eq!(sample(&lp, &greedy, &mut rng).0, 1);
        let top1 = SamplingParams {
            top_k: 1,
            ..Default::default()
        };
        assert!((0..50).all(|_| sample(&lp, &top1, &mut rng).0 == 1));
        // top_p 0.7 keeps {1, 3} (0.5 + 0.25).
        let nucleus = SamplingParams {
            top_p: 0.7,
            ..Default::default()
        };
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[sample(&lp, &nucleus, &mut rng).0 as usize] += 1;
        }
        assert_eq!(seen[0] + seen[2], 0, "{seen:?}");
        assert!((seen[1] as f64 / 2000.0 - 2.0 / 3.0).abs() < 0.05, "{seen:?}");
        // The log-probability reported is of the kept support, renormalised: 0.5 / 0.75.
        let (token, reported) = (0..50)
            .map(|_| sample(&lp, &nucleus, &mut rng))
            .find(|s| s.0 == 1)
            .unwrap();
        assert_eq!(token, 1);
        assert!(
            (f64::from(reported) - (0.5f64 / 0.75).ln()).abs() < 1e-6,
            "{reported}"
        );
        // top_k 1 keeps one token: log 1.
        assert!(sample(&lp, &top1, &mut rng).1.abs() < 1e-6);
    }

    #[test]
    fn cdf_sampling_follows_the_distribution() {
        let p = [0.1f32, 0.5, 0.0, 0.15, 0.25];
        let cdf: Vec<f32> = p
            .iter()
            .scan(0.0, |acc, x| {
                *acc += x;
                Some(*acc)
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let draws: Vec<f32> = (0..20000).map(|_| rng.gen()).collect();
        let table = Tensor::from_slice(&cdf).view([1, 5]).repeat([20000, 1]);
        let tokens = Vec::<i64>::try_from(sample_cdf_rows(&table, &draws).view([-1])).unwrap();
        let mut seen = [0usize; 5];
        for t in tokens {
            seen[t as usize] += 1;
        }
        assert_eq!(seen[2], 0, "zero-probability tokens are never drawn");
        for (i, want) in p.iter().enumerate() {
            assert!((seen[i] as f32 / 20000.0 - want).abs() < 0.015, "{seen:?}");
        }
    }

    #[test]
    fn full_sampling_follows_the_distribution_and_reports_its_logprob() {
        let lp = logp(&[0.1, 0.5, 0.15, 0.25]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let params = SamplingParams::default();
        let mut seen = [0usize; 4];
        for _ in 0..20000 {
            let (t, l) = sample(&lp, &params, &mut rng);
            assert_eq!(l, lp[t as usize]);
            seen[t as usize] += 1;
        }
        for (i, p) in [0.1, 0.5, 0.15, 0.25].iter().enumerate() {
            assert!((seen[i] as f64 / 20000.0 - p).abs() < 0.015, "{seen:?}");
        }
    }
}
