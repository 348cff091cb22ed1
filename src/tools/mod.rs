//! The tools around the engine, kept out of the library: the traffic `generator` (sample
//! histories), `traffic` (generated load to a broker), `soak` (bounded load with a report) and
//! `bench` (the end-to-end benchmark). They use only the library's public API; tests and
//! benches that need one compile it from its source (`#[path]`), so the library's public
//! surface is the engine, its shells and nothing else.

pub mod bench;
pub mod generator;
pub mod soak;
pub mod traffic;
