//! One module per subcommand.

pub mod bench;
pub mod convert;
pub mod ctl;
pub mod data;
pub mod eval;
pub mod generate;
pub mod plan;
pub mod plot;
pub mod recipes;
pub mod rehearse;
pub mod run;
pub mod show;
pub mod verify;
pub mod worker;
