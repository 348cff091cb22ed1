//! `credit-sentinel check-config`: the settings validated and printed, secrets redacted.

use anyhow::{Context, Result};
use credit_sentinel::{config, runtime};

/// The command takes the settings file alone.
pub type Args = super::SettingsFile;

/// Loads the settings (an error names the bad key) and prints the effective ones.
pub fn run(args: Args) -> Result<()> {
    let settings = config::load(args.config.as_deref())?;
    let mut raw = settings.raw.clone();
    for (k, v) in raw.kafka.properties.iter_mut() {
        if runtime::is_secret(k) {
            *v = "<redacted>".into();
        }
    }
    for t in raw.http.tokens.values_mut() {
        t.token = "<redacted>".into();
    }
    let text = toml::to_string_pretty(&raw).context("cannot print settings")?;
    println!("# effective settings (defaults, file, environment): OK\n{text}");
    Ok(())
}
