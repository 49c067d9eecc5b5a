//! Errors of the recipe crate. Each names the file (or `--set` key) and, where a file is at
//! fault, its line.

use std::path::PathBuf;

/// Everything that can go wrong loading, overriding or planning a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// No recipe of that name; lists the names that exist.
    #[error("unknown recipe `{name}`; known recipes: {}", known.join(", "))]
    UnknownRecipe {
        /// The name asked for.
        name: String,
        /// Every catalogue name.
        known: Vec<String>,
    },
    /// A recipe file could not be read.
    #[error("cannot read recipe file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A recipe file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// The file (catalogue name or path).
        file: String,
        /// 1-based line of the offending key or value.
        line: usize,
        /// What is wrong, with the valid choices where there is a fixed set.
        message: String,
    },
    /// More than one level of `extends` leads back to the same file.
    #[error("{file}: `extends` cycle: {}", chain.join(" -> "))]
    ExtendsCycle {
        /// The file that closes the cycle.
        file: String,
        /// The chain of names.
        chain: Vec<String>,
    },
    /// A key no recipe has; lists the keys of the table it would be in.
    #[error("no recipe key `{key}`; {hint}")]
    UnknownKey {
        /// The dotted key asked for.
        key: String,
        /// The keys that table has, or that it has none.
        hint: String,
    },
    /// A `--set key=value` that is malformed, names an unknown key or has a bad value.
    #[error("--set {key}: {message}")]
    Override {
        /// The key as given.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value outside its valid range, or a required value missing.
    #[error("recipe `{recipe}`: {key}: {message}")]
    Invalid {
        /// Recipe name.
        recipe: String,
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, RecipeError>;
