//! The `credit-sentinel` binary as users run it: replay writes the contract's output and a
//! summary, is byte-for-byte deterministic, reads stdin, and bad settings fail with the key named.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_credit-sentinel"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    // Tests must not pick up the developer's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("CREDIT_SENTINEL") {
            c.env_remove(k);
        }
    }
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("binary runs")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn replay_of_the_sample_is_deterministic_and_summarised() {
    let a = run(bin().args(["replay", "--input", "examples/sample-events.jsonl"]));
    let b = run(bin().args(["replay", "--input", "examples/sample-events.jsonl"]));
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(a.stdout.len() > 1_000_000);
    assert_eq!(a.stdout, b.stdout, "same input and policy, same bytes");
    let summary = String::from_utf8_lossy(&a.stderr);
    for needle in [
        "events by type:",
        "decisions by status: approved",
        "alerts by kind:",
        "dead-letters by error:",
        "final exposure by currency:",
        "EUR: 250 accounts",
    ] {
        assert!(
            summary.contains(needle),
            "{needle} missing from:\n{summary}"
        );
    }
}

#[test]
fn replay_writes_to_a_file_and_reads_stdin() {
    let out = std::env::temp_dir().join(format!("cs-replay-{}.jsonl", std::process::id()));
    let status = run(bin()
        .args([
            "replay",
            "--quiet",
            "--input",
            "tests/data/limit-and-release.jsonl",
            "--output",
        ])
        .arg(&out));
    assert!(status.status.success());
    assert!(status.stderr.is_empty(), "--quiet prints nothing");
    let from_file = std::fs::read(&out).expect("output file");
    std::fs::remove_file(&out).ok();

    let mut child = bin()
        .args(["replay", "--quiet", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            &std::fs::read(root().join("tests/data/limit-and-release.jsonl")).expect("example"),
        )
        .expect("write");
    let piped = child.wait_with_output().expect("wait");
    assert_eq!(piped.stdout, from_file);
    assert_eq!(String::from_utf8_lossy(&from_file).lines().count(), 5);
}

#[test]
fn bad_input_is_dead_lettered_and_processing_goes_on() {
    let o = run(bin().args(["replay", "--input", "tests/data/bad-input.jsonl"]));
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let topics: Vec<&str> = text
        .lines()
        .map(|l| l.split('"').nth(3).unwrap_or(""))
        .collect();
    assert_eq!(
        topics,
        [
            "credit.dead-letter",
            "credit.dead-letter",
            "credit.decisions"
        ]
    );
}

#[test]
fn settings_errors_name_the_key() {
    let o = run(bin()
        .args(["replay", "--input", "tests/data/overdue.jsonl"])
        .env("CREDIT_SENTINEL__POLICY__RELEASE_ORDER", "random"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("policy.release_order"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(bin().args(["check-config"]));
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("hold_expiry_days = 30"));
    let o = run(bin().args(["check-config", "--config", "does-not-exist.toml"]));
    assert_eq!(o.status.code(), Some(2));
    // Each message once (it was printed twice, "X: X"), and a misspelt librdkafka property is
    // refused by name.
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(err.matches("does-not-exist.toml").count(), 1, "{err}");
    let dir = std::env::temp_dir().join(format!("cs-cli-props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("misspelt.toml");
    std::fs::write(
        &file,
        "[kafka.properties]\n\"bootstrap.servrs\" = \"broker:9092\"\n",
    )
    .expect("write");
    let o = run(bin().arg("check-config").arg("--config").arg(&file));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("kafka.properties.bootstrap.servrs")
            && err.contains("No such configuration property"),
        "{err}"
    );
}

/// `run` against a broker nobody runs, in each delivery mode, for 3 s, then SIGTERM: what it
/// logged, how long the exit took after the signal, and the exit code.
fn run_without_a_broker(delivery: &str) -> (String, std::time::Duration, Option<i32>) {
    let child = bin()
        .arg("run")
        .env("CREDIT_SENTINEL__KAFKA__BROKERS", "127.0.0.1:9")
        .env("CREDIT_SENTINEL__KAFKA__DELIVERY", delivery)
        .env("CREDIT_SENTINEL__KAFKA__RETRY_BACKOFF_MAX_MS", "1000")
        .env("CREDIT_SENTINEL__HTTP__ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run starts");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let signalled = std::time::Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let o = child.wait_with_output().expect("output");
    (
        String::from_utf8_lossy(&o.stderr).into_owned(),
        signalled.elapsed(),
        o.status.code(),
    )
}

#[test]
fn a_missing_broker_is_one_clear_line_per_retry_in_both_modes() {
    let mut codes = Vec::new();
    for delivery in ["at_least_once", "exactly_once"] {
        let (log, took, code) = run_without_a_broker(delivery);
        let retries = log
            .lines()
            .filter(|l| {
                l.contains("broker unreachable")
                    && l.contains("127.0.0.1:9")
                    && l.contains("retrying in")
            })
            .count();
        let librdkafka = log.lines().filter(|l| l.contains("librdkafka")).count();
        eprintln!("{delivery}: {retries} retry lines, {librdkafka} librdkafka lines, exit {code:?} {took:?} after SIGTERM");
        assert!(
            retries >= 2,
            "{delivery}: a line per retry naming the broker:\n{log}"
        );
        // Before: hundreds of librdkafka ERROR lines, each twice. Now each kind once a minute.
        assert!(
            librdkafka <= 3,
            "{delivery}: librdkafka's lines at most once per kind:\n{log}"
        );
        assert!(
            !log.contains("cannot initialise transactions"),
            "{delivery}: an unreachable broker is not a transaction problem:\n{log}"
        );
        assert!(!log.contains('\u{1b}'), "no ANSI escape on a pipe: {log}");
        assert!(
            took < std::time::Duration::from_secs(3),
            "{delivery}: SIGTERM honoured while waiting (took {took:?})"
        );
        codes.push(code);
    }
    assert_eq!(codes[0], codes[1], "the same exit code in both modes");
}

#[test]
fn a_missing_input_file_is_a_clear_error() {
    let o = run(bin().args(["replay", "--input", "nope.jsonl"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot open nope.jsonl"));
}

#[test]
fn the_sample_file_is_what_the_documented_generator_makes() {
    let o = run(bin().args(["generate"]));
    assert!(o.status.success());
    let committed = std::fs::read(root().join("examples/sample-events.jsonl")).expect("sample");
    assert!(o.stdout == committed, "examples/sample-events.jsonl is stale: run `credit-sentinel generate --output examples/sample-events.jsonl`");
}

#[test]
fn the_worked_examples_replay_to_their_golden_output() {
    // Decision and alert ids are a promise to consumers: they must not change by accident.
    // After an intended change, regenerate with
    // `credit-sentinel replay --quiet --input tests/data/X.jsonl --output tests/data/X.expected.jsonl`.
    for name in ["limit-and-release", "overdue", "bad-input"] {
        let o = run(bin().args([
            "replay",
            "--quiet",
            "--input",
            &format!("tests/data/{name}.jsonl"),
        ]));
        let want = std::fs::read(root().join(format!("tests/data/{name}.expected.jsonl")))
            .expect("golden file");
        assert!(
            o.stdout == want,
            "{name}: output differs from its golden file:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

#[test]
fn check_config_redacts_secrets() {
    let dir = std::env::temp_dir().join(format!("cs-redact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        "[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n\"sasl.username\" = \"engine\"\n",
    )
    .expect("write");
    let o = run(bin().args(["check-config", "--config"]).arg(&cfg));
    std::fs::remove_dir_all(&dir).ok();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("<redacted>") && text.contains("engine"));
}

/// Runs a reporting command (`soak`, `bench`) with `--output file`; its Markdown report.
fn report_of(args: &[&str], file: &std::path::Path) -> String {
    let out = run(bin().args(args).arg("--output").arg(file));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(file).expect("report file")
}

#[test]
fn soak_runs_for_its_duration_and_reports_rows_and_memory() {
    let out_file = std::env::temp_dir().join(format!("cs-soak-{}.md", std::process::id()));
    let report = report_of(
        &[
            "soak",
            "--duration",
            "12",
            "--interval",
            "2",
            "--rate",
            "300",
            "--customers",
            "60",
            "--days",
            "30",
            "--delivery",
            "at_least_once",
        ],
        &out_file,
    );
    let rows = report
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains(" s |"))
        .count();
    assert!(rows >= 5, "a row per interval: {report}");
    assert!(report.contains("Command: `credit-sentinel soak --duration 12"));
    assert!(report.contains("Resident memory:"), "{report}");
    let last = report
        .lines()
        .rfind(|l| l.starts_with("| ") && l.contains(" s |"))
        .expect("row");
    let events: u64 = last
        .split('|')
        .nth(3)
        .and_then(|c| c.trim().parse().ok())
        .expect("events column");
    assert!(events > 0, "the engine consumed events: {last}");
    let _ = std::fs::remove_file(out_file);
}

/// `bench` end to end on a small input: both throughput rows with a ratio, the latency rows,
/// the memory line and the restore line (the restore checks itself that every account came
/// back), each with figures (not a timing assertion: a smoke test of the
/// measurement itself).
#[test]
fn bench_reports_throughput_latency_and_memory() {
    let out_file = std::env::temp_dir().join(format!("cs-bench-{}.md", std::process::id()));
    let report = report_of(
        &[
            "bench",
            "--customers",
            "20",
            "--rate",
            "500",
            "--seconds",
            "2",
            "--commit-intervals-ms",
            "20",
            "--memory-accounts",
            "2000",
            "--restore-accounts",
            "3000",
            "--restore-partitions",
            "4",
        ],
        &out_file,
    );
    for delivery in ["at_least_once", "exactly_once"] {
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {delivery} |")) && l.ends_with("% |"))
            .unwrap_or_else(|| panic!("no throughput row for {delivery}: {report}"));
        let inputs: u64 = row
            .split('|')
            .nth(2)
            .and_then(|c| c.trim().parse().ok())
            .expect("inputs");
        assert!(inputs > 100, "{row}");
        // The same-run baseline: the engine writing its changelog with every batch.
        let every: Vec<f64> = row
            .split('|')
            .nth(6)
            .map(|c| c.split(',').filter_map(|v| v.trim().parse().ok()).collect())
            .unwrap_or_default();
        assert!(
            every.len() == 3 && every.iter().all(|v| *v > 0.0),
            "events/s, records and busy µs of the every-batch baseline: {row}"
        );
    }
    let latency_rows = report
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains(" | 500 | "))
        .count();
    assert_eq!(
        latency_rows, 2,
        "one at_least_once and one exactly_once run: {report}"
    );
    assert!(report.contains("Memory: 2000 accounts"), "{report}");
    assert!(
        report.contains("Restore over the embedded broker: 3000 account snapshots"),
        "{report}"
    );
    let _ = std::fs::remove_file(out_file);
}

/// TLS and SASL to Kafka: the settings reach librdkafka as given (the build carries SSL and
/// SASL/SCRAM support, so a client with them is created), the password comes from
/// `kafka.properties_file`, and `check-config` never shows it.
#[test]
fn tls_and_sasl_settings_reach_the_kafka_client() {
    let dir = std::env::temp_dir().join(format!("cs-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let secrets = dir.join("kafka.properties");
    std::fs::write(&secrets, "# mounted secret\nsasl.password=s3cret-hunter2\n").expect("write");
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"broker-1.example:9093\"\nproperties_file = {:?}\n\
             [kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"credit-sentinel\"\n\"ssl.ca.location\" = \"/etc/ssl/certs/ca-certificates.crt\"\n\
             \"ssl.endpoint.identification.algorithm\" = \"https\"\n",
            secrets.display().to_string()
        ),
    )
    .expect("write");
    let settings =
        credit_sentinel::config::load_with_env(Some(cfg.as_path()), Vec::<(String, String)>::new())
            .expect("settings");
    let client = credit_sentinel::runtime::client_config(&settings.kafka);
    assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(client.get("sasl.password"), Some("s3cret-hunter2"));
    // librdkafka checks these when the client is created (unknown mechanism, unreadable CA,
    // a build without SSL or SASL would all fail here); nothing connects yet.
    let producer: Result<rdkafka::producer::BaseProducer, _> = client.create();
    assert!(producer.is_ok(), "{:?}", producer.err());

    let o = run(bin().args(["check-config", "--config"]).arg(&cfg));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("SASL_SSL") && text.contains("SCRAM-SHA-512"),
        "{text}"
    );
    assert!(!text.contains("s3cret-hunter2"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A broken TLS setting stops `run` at once with librdkafka's reason, naming the setting, and
/// without the SASL password anywhere in the output.
#[test]
fn a_broken_tls_setting_fails_fast_naming_it_without_secrets() {
    let dir = std::env::temp_dir().join(format!("cs-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        "[kafka]\nbrokers = \"127.0.0.1:9\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
         \"sasl.mechanism\" = \"SCRAM-SHA-256\"\n\"sasl.username\" = \"engine\"\n\
         \"sasl.password\" = \"s3cret-hunter2\"\n\"ssl.ca.location\" = \"/nonexistent/ca.pem\"\n\
         [http]\nenabled = false\n",
    )
    .expect("write");
    let o = run(bin()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("CREDIT_SENTINEL_LOG", "debug"));
    std::fs::remove_dir_all(&dir).ok();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{all}");
    assert!(all.contains("ssl.ca.location"), "{all}");
    assert!(!all.contains("s3cret-hunter2"), "{all}");
}

/// The demo plays its history on a simulated clock that ends today, then follows the wall
/// clock: the view shows the date moving, and holds are not all expired at once (a wall-clock
/// tick expired every one when the history ran behind it).
#[test]
fn the_demo_plays_history_at_a_pace_and_ends_in_the_present() {
    let o = run(bin().args([
        "demo",
        "--duration",
        "8",
        "--http",
        "off",
        "--speed",
        "600",
        "--days",
        "60",
    ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let views: Vec<&str> = out.lines().filter(|l| l.contains("| sent ")).collect();
    assert!(views.len() >= 5, "{out}");
    let date = |l: &str| l.split_whitespace().nth(2).unwrap_or_default().to_string();
    let (first, last) = (date(views[0]), date(views[views.len() - 1]));
    assert!(first < last, "the simulated date moves: {first} .. {last}");
    let count = |l: &str, what: &str| -> u64 {
        l.split(what)
            .nth(1)
            .and_then(|r| {
                r.split(|c: char| !c.is_ascii_digit())
                    .find(|t| !t.is_empty())
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let final_view = views[views.len() - 1];
    let (held, rejected) = (count(final_view, "held "), count(final_view, "rejected "));
    assert!(held > 0, "{final_view}");
    assert!(
        rejected < held,
        "holds are not all expired at once: {final_view}"
    );
    // 60 days at 600 a minute take 6 s: then the traffic follows the wall clock.
    assert!(final_view.contains("live, real time"), "{final_view}");
}
