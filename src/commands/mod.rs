//! One module per command of the binary that has outgrown `main.rs` (the rest follow).

pub mod backtest;
