//! Learning-rate schedules, as multipliers of the peak rate for optimiser step `step`
//! (0-based), with the same lambdas as `transformers`' schedulers so runs match open-instruct
//! and TRL step for step.

/// A schedule's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Linear decay to zero after warmup (`get_linear_schedule_with_warmup`).
    Linear,
    /// Half-cosine decay to zero after warmup (`get_cosine_schedule_with_warmup`).
    Cosine,
    /// Warmup, constant, then linear decay to zero over the last `decay_steps`
    /// (warmup–stable–decay, as SmolLM2 trained).
    Wsd {
        /// Steps of the final decay.
        decay_steps: u64,
    },
    /// Constant after warmup.
    Constant,
}

/// A learning-rate schedule over a known number of optimiser steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Warmup steps (linear from 0).
    pub warmup_steps: u64,
    /// All optimiser steps.
    pub total_steps: u64,
    /// Shape after warmup.
    pub shape: Shape,
}

impl Schedule {
    /// Learning rate at optimiser step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        self.peak * self.factor(step)
    }

    fn factor(&self, step: u64) -> f64 {
        let (s, w, n) = (step as f64, self.warmup_steps as f64, self.total_steps as f64);
        if step < self.warmup_steps {
            return s / w.max(1.0);
        }
        match self.shape {
            Shape::Constant => 1.0,
            Shape::Linear => ((n - s) / (n - w).max(1.0)).max(0.0),
            Shape::Cosine => {
                let progress = (s - w) / (n - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
            Shape::Wsd { decay_steps } => {
                let decay_start = self
                    .total_steps
                    .saturating_sub(decay_steps)
                    .max(self.warmup_steps);
                if step < decay_start {
                    1.0
                } else {
                    let d = (self.total_steps - decay_start).max(1) as f64;
                    (1.0 - (s - decay_start as f64) / d).max(0.0)
                }
            }
        }
    }
}
