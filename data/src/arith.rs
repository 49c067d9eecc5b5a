//! Arithmetic word problems the tiny recipes train on, generated on the fly so the tiny
//! recipes need no download. Problem `i` of a seed is always the same; the test split is a
//! fixed set of questions (chosen by a hash of names, items, operation and numbers) that the
//! train split never yields.

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
    /// The correct worked solution ending in GSM8K's `#### N`.
    pub solution: String,
    /// The final answer.
    pub answer: i64,
    /// The worked solution the built-in demonstrations show: [`Problem::solution`], except for
    /// the careless tutor's slip (see [`SLIP_PERCENT`]).
    pub demonstration: String,
    /// A wrong worked solution with a typical mistake, the rejected side of the built-in
    /// preference pairs: adding where the problem multiplies or subtracts, or a sum off by one.
    pub mistake: String,
}

/// Share of multiplication problems whose demonstration is a slip: the tutor adds the numbers
/// instead of multiplying them (`buys 3 bags with 4 pens in each` → `3+4=7`). A systematic
/// error in demonstrations, such as human-written data carries: a model that imitates them
/// adds where it should multiply, and only a check of the answer (RLVR) can tell it otherwise.
/// The ground truth ([`Problem::answer`]) is always right.
pub const SLIP_PERCENT: u64 = 60;

impl Problem {
    /// Pretraining text: question and demonstrated answer.
    pub fn text(&self) -> String {
        format!("question: {}\nanswer: {}\n", self.question, self.demonstration)
    }
}

pub(crate) const NAMES: [&str; 8] = ["tom", "ana", "li", "sam", "mia", "raj", "eva", "ben"];
const ITEMS: [&str; 6] = ["apples", "pens", "cards", "books", "coins", "shells"];

/// One problem in ten, by a hash of everything that makes it: the question's names, items,
/// operation and numbers. A held-out question never appears in training, while the arithmetic
/// facts it needs do, in other questions (as GSM8K's test problems reuse the arithmetic of its
/// training problems).
fn held_out(op: u8, a: i64, b: i64, name: usize, item: usize) -> bool {
    let key = [i64::from(op), a, b, name as i64, item as i64];
    key.iter().fold(17i64, |h, &x| (h * 31 + x) % 1_000_003) % 10 == 3
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
        // Half the problems are products: the skill the demonstrations get wrong.
        let op: u8 = rng.gen_range(0..4).min(2);
        let (a, b) = match op {
            2 => (rng.gen_range(2..=9), rng.gen_range(2..=9)),
            _ => (rng.gen_range(1..=9), rng.gen_range(1..=9)),
        };
        let (a, b) = if op == 1 && b > a { (b, a) } else { (a, b) };
        let (name, item) = (rng.gen_range(0..NAMES.len()), rng.gen_range(0..ITEMS.len()));
        if held_out(op, a, b, name, item) != (split == Split::Test) {
            continue;
        }
        let (name, item) = (NAMES[name], ITEMS[item]);
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
        let demonstration = if op == 2 && rng.gen_range(0..100) < SLIP_PERCENT {
            format!("{a}+{b}={}. #### {}", a + b, a + b)
        } else {
            solution.clone()
        };
        let mistake = match op {
            // 2*2 = 2+2: there the mistake is a product off by one.
            2 if a * b == a + b => format!("{a}*{b}={}. #### {}", a * b + 1, a * b + 1),
            0 => format!("{a}+{b}={}. #### {}", a + b + 1, a + b + 1),
            _ => format!("{a}+{b}={}. #### {}", a + b, a + b),
        };
        return Problem {
            question,
            solution,
            answer,
            demonstration,
            mistake,
        };
    }
}
