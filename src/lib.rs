//! credit-sentinel: streaming credit-limit enforcement.
//!
//! The crate is a pure, deterministic core (`engine`) that turns validated events (`model`,
//! decoded by `codec`) into decisions, alerts and dead-letters under a `policy`, plus the shells
//! that feed it: `replay` over a JSON Lines file, the Kafka `runtime`, and the `http` API.
//! The tools around it (generator, load, soak, bench) belong to the binary (`src/tools/`).
//! See ARCHITECTURE.md for the map and the invariants.

pub mod backtest;
pub mod codec;
pub mod config;
pub mod engine;
pub mod feed;
pub mod http;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod replay;
pub mod runtime;
pub mod signing;
pub mod state;
pub mod traces;

pub use engine::{Engine, FutureGuard, Outcome};
pub use policy::Policy;
