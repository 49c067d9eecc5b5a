//! The order rows are visited in: a fresh seeded permutation each epoch, and a position that
//! says exactly where a run stands, so a resumed run reads the rows it would have read.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Epoch-wise shuffled row order over `rows` rows.
#[derive(Debug, Clone)]
pub struct Sampler {
    rows: u64,
    seed: u64,
    position: u64,
    epoch_order: Vec<u64>,
    epoch: u64,
}

impl Sampler {
    /// Start at row 0 of epoch 0. `rows` must be positive.
    pub fn new(rows: u64, seed: u64) -> Self {
        let mut s = Self {
            rows: rows.max(1),
            seed,
            position: 0,
            epoch_order: Vec::new(),
            epoch: u64::MAX,
        };
        s.prepare(0);
        s
    }

    fn prepare(&mut self, epoch: u64) {
        if self.epoch == epoch {
            return;
        }
        let mut order: Vec<u64> = (0..self.rows).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ epoch);
        order.shuffle(&mut rng);
        self.epoch_order = order;
        self.epoch = epoch;
    }

    /// Rows consumed so far over all epochs.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Current epoch (0-based).
    pub fn epoch(&self) -> u64 {
        self.position / self.rows
    }

    /// Jump to a position saved by [`Sampler::position`].
    pub fn set_position(&mut self, position: u64) {
        self.position = position;
        self.prepare(position / self.rows);
    }

    /// The next `n` row indices, crossing epochs as needed.
    pub fn take(&mut self, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| {
                self.prepare(self.position / self.rows);
                let row = self.epoch_order[(self.position % self.rows) as usize];
                self.position += 1;
                row
            })
            .collect()
    }
}
