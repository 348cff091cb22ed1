//! One module per command of the binary (`main.rs` holds the command table), and what
//! several commands share: the output writer, the HTTP server and the shutdown signal.

pub mod backtest;
pub mod bench;
pub mod check_config;
pub mod demo;
mod embedded;
pub mod generate;
pub mod loadgen;
pub mod replay;
pub mod run;
pub mod soak;

use anyhow::{Context, Result};
use credit_sentinel::{config, http, runtime};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The settings file that `run`, `replay`, `loadgen` and `check-config` take.
#[derive(clap::Args)]
pub struct SettingsFile {
    /// Settings file (TOML) layered over the embedded defaults; environment variables
    /// CREDIT_SENTINEL__SECTION__KEY override both.
    #[arg(long, short, env = "CREDIT_SENTINEL_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Records to a file (created) or, without one, to stdout; buffered.
pub(crate) fn output_writer(path: Option<&PathBuf>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(BufWriter::with_capacity(
            1 << 16,
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
    })
}

/// Starts the HTTP server when `http.enabled`, sharing the runtime's state and metrics.
pub(crate) fn start_http(
    settings: &config::Settings,
    options: &runtime::Options,
    stats: &Arc<runtime::Stats>,
    shutdown: &Arc<AtomicBool>,
) -> Result<Option<http::Server>> {
    if !settings.http.enabled {
        return Ok(None);
    }
    let app = http::app_state(
        Arc::new(settings.clone()),
        options.state.clone().unwrap_or_default(),
        options.metrics.clone().unwrap_or_default(),
        Arc::clone(stats),
        options.feed.clone(),
    )?;
    Ok(Some(http::spawn(app, Arc::clone(shutdown))?))
}

/// A flag set by SIGINT or SIGTERM.
pub(crate) fn shutdown_on_signal() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&flag);
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            #[cfg(unix)]
            {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            tracing::info!("signal received: finishing the open batch");
            f.store(true, Ordering::Relaxed);
        });
    });
    flag
}
