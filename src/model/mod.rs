//! The domain's data types: exact money, event time, validated input events, and the records
//! the engine produces. No logic beyond parsing and printing lives here.

pub mod event;
pub mod money;
pub mod output;
pub mod time;

pub use event::*;
pub use money::{format_money, format_ratio, parse_amount, Currency};
pub use output::*;
pub use time::{Timestamp, DAY_US};
