//! `credit-sentinel run`: live enforcement on Kafka, with the HTTP API and metrics beside it
//! until SIGINT or SIGTERM.

use super::{shutdown_on_signal, start_http};
use anyhow::Result;
use credit_sentinel::{config, runtime};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The command takes the settings file alone.
pub type Args = super::SettingsFile;

/// Runs the engine until a signal, then stops the HTTP server.
pub fn run(args: Args) -> Result<()> {
    let settings = config::load(args.config.as_deref())?;
    let shutdown = shutdown_on_signal();
    let stats = Arc::new(runtime::Stats::default());
    let options = runtime::Options::served();
    let server = start_http(&settings, &options, &stats, &shutdown)?;
    let result = runtime::run(settings, Arc::clone(&shutdown), stats, options);
    shutdown.store(true, Ordering::Relaxed);
    if let Some(s) = server {
        let _ = s.thread.join();
    }
    result
}
