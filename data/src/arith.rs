//! Arithmetic word problems the tiny recipes train on, generated on the fly so the tiny
//! recipes need no download. Problem `i` of a seed is always the same; the test split is a
//! fixed set of problems (chosen by a hash of the numbers) that the train split never yields.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which problems to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Problems for training (never in `Test`).
    Train,
    /// Held-out problems for evaluation.
    Test,
}

/// One problem with its worked answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The question, one line of lower-case text.
    pub question: String,
    /// The worked solution ending in GSM8K's `#### N`.
    pub solution: String,
    /// The final answer.
    pub answer: i64,
}

impl Problem {
    /// Pretraining text: question and worked answer.
    pub fn text(&self) -> String {
        format!("question: {}\nanswer: {}\n", self.question, self.solution)
    }
}

const NAMES: [&str; 8] = ["tom", "ana", "li", "sam", "mia", "raj", "eva", "ben"];
const ITEMS: [&str; 6] = ["apples", "pens", "cards", "books", "coins", "shells"];

fn held_out(op: u8, a: i64, b: i64) -> bool {
    (a * 31 + b * 17 + i64::from(op) * 7) % 10 == 3
}

/// Problem `index` of `split` for `seed`.
pub fn problem(seed: u64, index: u64, split: Split) -> Problem {
    let stream = match split {
        Split::Train => 0,
        Split::Test => 1,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    rng.set_stream(stream);
    rng.set_word_pos(u128::from(index) * 64);
    loop {
        let op: u8 = rng.gen_range(0..3);
        let (a, b) = match op {
            2 => (rng.gen_range(2..=9), rng.gen_range(2..=9)),
            _ => (rng.gen_range(1..=49), rng.gen_range(1..=49)),
        };
        let (a, b) = if op == 1 && b > a { (b, a) } else { (a, b) };
        if held_out(op, a, b) != (split == Split::Test) {
            continue;
        }
        let name = NAMES[rng.gen_range(0..NAMES.len())];
        let item = ITEMS[rng.gen_range(0..ITEMS.len())];
        let (question, sign, answer) = match op {
            0 => (
                format!("{name} has {a} {item}. {name} gets {b} more. how many {item} does {name} have now?"),
                '+',
                a + b,
            ),
            1 => (
                format!("{name} has {a} {item}. {name} gives away {b}. how many {item} are left?"),
                '-',
                a - b,
            ),
            _ => (
                format!("{name} buys {a} bags with {b} {item} in each. how many {item} is that?"),
                '*',
                a * b,
            ),
        };
        let solution = format!("{a}{sign}{b}={answer}. #### {answer}");
        return Problem {
            question,
            solution,
            answer,
        };
    }
}
