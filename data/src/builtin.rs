//! Data sets the project generates itself, named `builtin:NAME` in recipes.

use crate::arith::{self, Split};
use crate::DataError;

/// A built-in data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Arithmetic problems with worked answers as plain text (pretraining).
    Arith,
    /// The same problems as a user/assistant chat (SFT).
    ArithChat,
    /// The problems as prompts with the answer as ground truth (RLVR).
    ArithRlvr,
}

impl Builtin {
    /// Every built-in data set with its recipe name.
    pub const ALL: [(&'static str, Builtin); 3] = [
        ("builtin:arith", Builtin::Arith),
        ("builtin:arith-chat", Builtin::ArithChat),
        ("builtin:arith-rlvr", Builtin::ArithRlvr),
    ];

    /// Look a data set up by its recipe name.
    pub fn parse(name: &str) -> Result<Self, DataError> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .ok_or_else(|| DataError::UnknownDataset {
                name: name.to_string(),
                known: Self::ALL.iter().map(|(n, _)| n.to_string()).collect(),
            })
    }

    /// Pretraining text of row `index` (only [`Builtin::Arith`] is plain text).
    pub fn text(&self, seed: u64, index: u64, split: Split) -> Option<String> {
        match self {
            Builtin::Arith => Some(arith::problem(seed, index, split).text()),
            Builtin::ArithChat | Builtin::ArithRlvr => None,
        }
    }
}
