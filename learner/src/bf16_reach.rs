//! How much of a bf16 model a run's updates can move at all. A 16-bit weight trains through an
//! f32 master that starts on its bf16 value ([`crate::optim`]); the bf16 weight the forward pass
//! (and a rollout engine) reads changes only once the master has moved more than half a bf16
//! step, `2^(⌊log2 |w|⌋ − 8)`. AdamW moves a master by about the learning rate a step at most,
//! so a run of `n` steps at peak rate `lr` can change only the weights whose half step is below
//! `n × lr` (`scripts/bf16-reach.py` counts the same from a safetensors file).

use tch::{Kind, Tensor};

/// Elements per piece: the temporaries stay small whatever the tensor.
const PIECE: i64 = 1 << 24;

/// The share of the elements of `weights` whose bf16 value a master that moves by at most
/// `displacement` can change (zeros always can); 1 when there are none.
pub fn movable_share(weights: &[Tensor], displacement: f64) -> f64 {
    let (mut movable, mut total) = (0i64, 0i64);
    tch::no_grad(|| {
        for w in weights {
            let flat = w.detach().reshape([-1]);
            let n = flat.numel() as i64;
            let mut start = 0;
            while start < n {
                let len = PIECE.min(n - start);
                let magnitude = flat.narrow(0, start, len).to_kind(Kind::Float).abs();
                let half_step = (magnitude.clamp_min(1e-38).log2().floor() - 8.0).exp2();
                let moves = half_step.lt(displacement).logical_or(&magnitude.eq(0.0));
                movable += moves.sum(Kind::Int64).int64_value(&[]);
                start += len;
            }
            total += n;
        }
    });
    match total {
        0 => 1.0,
        n => movable as f64 / n as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::movable_share;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn a_weight_moves_once_its_master_can_cross_half_a_bf16_step() {
        // Half steps: 1.0 -> 2^-8, 2^-4 -> 2^-12, 2^-10 -> 2^-18; zero always moves.
        let w = Tensor::from_slice(&[1.0f32, 0.0625, -0.0009765625, 0.0]).to_kind(Kind::BFloat16);
        let share = |d: f64| movable_share(&[w.shallow_clone()], d);
        assert_eq!(share(1e-7), 0.25);
        assert_eq!(share(2e-5), 0.5);
        assert_eq!(share(3e-4), 0.75);
        assert_eq!(share(5e-3), 1.0);
        assert_eq!(
            movable_share(&[Tensor::zeros([0], (Kind::Float, Device::Cpu))], 1e-9),
            1.0
        );
    }
}
