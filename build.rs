//! Build script: records the git commit for the `build_info` metric, and tells the test suites
//! which external checkers this machine lacks (promtool, openapi-spec-validator, schemathesis,
//! Python's confluent-kafka for the client examples, and node + Playwright + Chromium for the
//! console), so that a test needing one is reported *ignored*, with the line that installs it, instead of
//! passing without having run. Under `CI=true` nothing is marked: `.ci/run` installs every
//! tool, and a test whose tool is missing fails.

use std::path::{Path, PathBuf};

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default()
}

fn on_path(tool: &str) -> bool {
    path_dirs().iter().any(|d| d.join(tool).is_file())
}

/// The commit `git` says HEAD is, for the `build_info` metric; `unknown` outside a checkout.
fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether `python3` can import `module`.
fn python_has(module: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!(
        "cargo:rustc-env=CREDIT_SENTINEL_GIT_COMMIT={}",
        git_commit()
    );
    // A new commit moves HEAD (or the branch it names).
    for f in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=CHROMIUM");
    // A tool installed later (apt-get, pip, npm ci) changes one of these folders.
    for dir in path_dirs().iter().filter(|d| d.is_dir()) {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    // `npm ci --prefix tests/console` creates node_modules there.
    println!("cargo:rerun-if-changed=tests/console");
    let console = Path::new("tests/console/node_modules/playwright-core");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = [
        ("no_promtool", !on_path("promtool")),
        ("no_confluent_kafka", !python_has("confluent_kafka")),
        ("no_openapi_validator", !on_path("openapi-spec-validator")),
        ("no_schemathesis", !on_path("schemathesis")),
        (
            "no_browser",
            !(on_path("node") && console.is_dir() && Path::new(&chromium).is_file()),
        ),
    ];
    for (cfg, _) in missing {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        return;
    }
    for (cfg, absent) in missing {
        if absent {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
}
