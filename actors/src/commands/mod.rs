//! One module per subcommand.

pub mod plan;
pub mod recipes;
pub mod run;
pub mod show;
