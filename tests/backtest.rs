//! `backtest` on small hand-made histories whose right figures are known by hand, the command
//! as users run it (JSON report, sweep, errors, determinism), and the HTML report in headless
//! Chromium.
//!
//! The history (tests/data/backtest/history.jsonl): three grade B customers with a limit of
//! 100,000, terms 30 days, each with a first order of 10,000 shipped on 2 January (due
//! 1 February) and a second order on 11 February, when that first receivable is 10 days past
//! due. The baseline (defaults: grade B allows 15 days) approves every second order; the
//! candidate (tests/data/backtest/strict.toml: 5 days) holds them with OVERDUE_DAYS.
//! - BAD's second order (4,000) ships and is never paid: on 1 October, the end of the file, it
//!   is 200 days past due, a write-off candidate. Held by the candidate until its hold expires
//!   (30 days): a **loss avoided** of 4,000.
//! - GOOD pays its first receivable on 13 February; the candidate then releases the second
//!   order (6,000), which ships and is paid on time: **good business delayed**, 2 days on hold.
//! - LOST pays its first receivable only on 20 March, after the candidate's hold expired; its
//!   second order (3,000) shipped anyway and was paid on time: **good business lost**.

use credit_sentinel::backtest::{self, compare::Effect, Options, PolicyRun};
use credit_sentinel::config;
use credit_sentinel::model::Currency;
use rust_decimal::Decimal;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data(name: &str) -> PathBuf {
    root().join("tests/data/backtest").join(name)
}

fn policy(label: &str, files: &[&Path]) -> PolicyRun {
    PolicyRun {
        label: label.into(),
        source: label.into(),
        policy: config::load_layers(files, Vec::new()).unwrap().policy,
    }
}

fn run_backtest(baseline: PolicyRun, candidate: PolicyRun) -> backtest::report::Report {
    let file = std::fs::File::open(data("history.jsonl")).unwrap();
    let opts = Options {
        file: "history.jsonl".into(),
        max_message_bytes: 1 << 20,
        late_days: 30,
        sweep: None,
    };
    backtest::backtest(
        std::io::BufReader::new(file),
        baseline,
        vec![candidate],
        &opts,
    )
    .unwrap()
}

fn eur(n: i64) -> Decimal {
    Decimal::from(n)
}

fn tally(r: &backtest::compare::TradeOff, e: Effect) -> (u64, Decimal) {
    let t = r.get(e);
    (t.orders, t.in_currency(Currency::parse("EUR").unwrap()))
}

#[test]
fn a_held_order_later_written_off_is_a_loss_avoided() {
    let strict = data("strict.toml");
    let report = run_backtest(
        policy("baseline", &[]),
        policy("candidate", &[strict.as_path()]),
    );
    assert_eq!(report.input.orders, 6);
    assert_eq!(report.comparisons.len(), 1);
    let c = &report.comparisons[0];
    assert_eq!(c.changed, 3);
    assert_eq!(tally(&c.totals, Effect::LossAvoided), (1, eur(4000)));
    assert_eq!(tally(&c.totals, Effect::BusinessDelayed), (1, eur(6000)));
    assert_eq!(tally(&c.totals, Effect::BusinessLost), (1, eur(3000)));
    for e in [
        Effect::LossAdded,
        Effect::BusinessGained,
        Effect::StricterNoOutcome,
        Effect::LooserNoOutcome,
        Effect::SameFate,
    ] {
        assert_eq!(tally(&c.totals, e), (0, Decimal::ZERO), "{e:?}");
    }
    let order = |id: &str| c.changed_orders.iter().find(|o| o.order_id == id).unwrap();
    let bad = order("O-B2");
    assert_eq!(
        (bad.effect, bad.outcome, bad.outcome_days),
        ("losses_avoided", "write_off_candidate", Some(200))
    );
    assert_eq!(bad.baseline, ["approved"]);
    assert_eq!(bad.candidate, ["held", "rejected"]);
    assert_eq!(bad.reasons, ["OVERDUE_DAYS"]);
    let good = order("O-G2");
    assert_eq!(
        (good.effect, good.outcome),
        ("business_delayed", "paid_on_time")
    );
    assert_eq!(good.candidate, ["held", "released"]);
    assert_eq!(good.candidate_hold_days, Some(eur(2)));
    let lost = order("O-L2");
    assert_eq!(
        (lost.effect, lost.outcome),
        ("business_lost", "paid_on_time")
    );
    // Each changed order links to its events: placed, shipped, and the payment that settled it.
    let kinds: Vec<&str> = good.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        ["order.placed", "shipment.shipped", "payment.received"]
    );
    assert_eq!(good.events[0].event_id, "e11");
    // By grade, reason and month.
    assert_eq!(c.by_grade.keys().collect::<Vec<_>>(), ["B"]);
    assert_eq!(
        tally(&c.by_reason["OVERDUE_DAYS"], Effect::LossAvoided),
        (1, eur(4000))
    );
    assert_eq!(
        tally(&c.by_month["2026-02"], Effect::BusinessLost),
        (1, eur(3000))
    );
    // The counterfactual as the report states it: shipments against the candidate's holds
    // still book, and raise SHIPPED_WITHOUT_RELEASE under the candidate only.
    let alerts = |i: usize| {
        report.policies[i]
            .alerts
            .get("SHIPPED_WITHOUT_RELEASE")
            .copied()
    };
    assert_eq!((alerts(0), alerts(1)), (None, Some(2)));
    assert_eq!(report.policies[1].fates["stopped"], 2);
    assert_eq!(report.policies[1].fates["delayed"], 1);
    // The history's outcomes: first orders all paid 11 to 77 days late, except BAD's (open);
    // GOOD's and LOST's second orders paid on time.
    assert_eq!(report.outcomes["write_off_candidate"].orders, 2);
    assert_eq!(report.outcomes["paid_late"].orders, 2);
    assert_eq!(report.outcomes["paid_on_time"].orders, 2);
}

#[test]
fn the_reverse_policy_reverses_the_trade_off() {
    let strict = data("strict.toml");
    let report = run_backtest(
        policy("baseline", &[strict.as_path()]),
        policy("candidate", &[]),
    );
    let c = &report.comparisons[0];
    assert_eq!(tally(&c.totals, Effect::LossAdded), (1, eur(4000)));
    assert_eq!(tally(&c.totals, Effect::BusinessGained), (2, eur(9000)));
    assert_eq!(tally(&c.totals, Effect::LossAvoided), (0, Decimal::ZERO));
}

#[test]
fn the_same_policy_changes_nothing() {
    let report = run_backtest(policy("baseline", &[]), policy("candidate", &[]));
    assert_eq!(report.comparisons[0].changed, 0);
    assert!(report.comparisons[0].changed_orders.is_empty());
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_credit-sentinel"));
    c.current_dir(root());
    for (k, _) in std::env::vars() {
        if k.starts_with("CREDIT_SENTINEL") {
            c.env_remove(k);
        }
    }
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cs-backtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn the_command_prints_a_summary_and_writes_the_same_json_every_time() {
    let (a, b) = (tmp("a.json"), tmp("b.json"));
    let mut outs = Vec::new();
    for path in [&a, &b] {
        outs.push(ok(bin()
            .args(["backtest", "--input", "tests/data/backtest/history.jsonl"])
            .args(["--policy", "tests/data/backtest/strict.toml", "--json"])
            .arg(path)
            .output()
            .unwrap()));
    }
    let summary = String::from_utf8_lossy(&outs[0].stdout);
    for needle in [
        "6 orders",
        "3 orders decided differently",
        "losses avoided                    1 orders  EUR 4,000.00",
        "good business delayed             1 orders  EUR 6,000.00",
        "good business lost                1 orders  EUR 3,000.00",
    ] {
        assert!(summary.contains(needle), "{needle:?} in\n{summary}");
    }
    let (ja, jb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ja, jb, "same history and policies, same report bytes");
    let v: serde_json::Value = serde_json::from_slice(&ja).unwrap();
    let totals = &v["comparisons"][0]["totals"];
    assert_eq!(totals["losses_avoided"]["amount"]["EUR"], "4000.00");
    assert_eq!(totals["business_delayed"]["orders"], 1);
    assert_eq!(v["assumptions"]["late_days"], 30);
    assert!(v["assumptions"]["counterfactual"][0]
        .as_str()
        .unwrap()
        .contains("SHIPPED_WITHOUT_RELEASE"));
}

#[test]
fn a_sweep_gives_one_row_per_value() {
    let json = tmp("sweep.json");
    let out = ok(bin()
        .args(["backtest", "--input", "tests/data/backtest/history.jsonl"])
        .args([
            "--sweep",
            "policy.grades.B.overdue_days_max=5,10,15",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = v["sweep"]["rows"].as_array().unwrap();
    let figures: Vec<(String, u64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["value"].as_str().unwrap().to_string(),
                r["changed"].as_u64().unwrap(),
                r["totals"]["losses_avoided"]["amount"]["EUR"]
                    .as_str()
                    .unwrap_or("0")
                    .to_string(),
            )
        })
        .collect();
    // 10 days past due holds at 5 allowed, not at 10 (not more than allowed) or 15.
    assert_eq!(
        figures,
        [
            ("5".to_string(), 3, "4000.00".to_string()),
            ("10".to_string(), 0, "0".to_string()),
            ("15".to_string(), 0, "0".to_string()),
        ]
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("sweep of policy.grades.B.overdue_days_max"),
        "{summary}"
    );
}

#[test]
fn bad_input_lines_are_counted_and_valid_ones_kept() {
    let file = tmp("with-garbage.jsonl");
    let mut text = std::fs::read_to_string(data("history.jsonl")).unwrap();
    text.insert_str(0, "not json\n{\"type\": \"order.placed\"}\n\u{0}\u{1}\n");
    std::fs::write(&file, text).unwrap();
    let json = tmp("garbage.json");
    ok(bin()
        .args([
            "backtest",
            "--quiet",
            "--policy",
            "tests/data/backtest/strict.toml",
        ])
        .arg("--input")
        .arg(&file)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["input"]["undecodable"], 3);
    assert_eq!(v["input"]["orders"], 6);
    assert_eq!(v["comparisons"][0]["changed"], 3);
}

#[test]
fn wrong_arguments_are_errors_that_say_what_is_wrong() {
    let cases: [(&[&str], &str); 4] = [
        (&[], "needs a candidate"),
        (
            &["--sweep", "policy.grades.B.overdue_days_mx=1"],
            "overdue_days_mx",
        ),
        (
            &["--sweep", "policy.hold_expiry_days"],
            "expected KEY=V1,V2",
        ),
        (
            &["--policy", "tests/data/backtest/missing.toml"],
            "missing.toml",
        ),
    ];
    for (args, needle) in cases {
        let out = bin()
            .args(["backtest", "--input", "tests/data/backtest/history.jsonl"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {needle:?} in {err}");
    }
}

/// The HTML report in headless Chromium (tests/console/backtest.mjs, Playwright): it renders
/// with no script error and fetches nothing, the charts are there, the changed orders sort by
/// amount both ways, and an order's link opens its events. Once for a candidate file, once for
/// a sweep. Screenshots go to docs/backtest/.
#[test]
#[cfg_attr(
    no_browser,
    ignore = "needs node, chromium (sudo apt-get install nodejs npm chromium) and npm ci --prefix tests/console (.ci/run does)"
)]
fn the_html_report_in_a_browser() {
    let dir = root().join("tests/console");
    let shots = root().join("docs/backtest");
    std::fs::create_dir_all(&shots).unwrap();
    for sweep in [false, true] {
        let html = tmp(if sweep { "sweep.html" } else { "report.html" });
        let mut c = bin();
        c.args([
            "backtest",
            "--quiet",
            "--input",
            "tests/data/backtest/history.jsonl",
        ]);
        if sweep {
            c.args(["--sweep", "policy.grades.B.overdue_days_max=0,5,15"]);
        } else {
            c.args(["--policy", "tests/data/backtest/strict.toml"]);
        }
        ok(c.arg("--report").arg(&html).output().unwrap());
        let out = Command::new("node")
            .arg("backtest.mjs")
            .current_dir(&dir)
            .env("REPORT", &html)
            .env("SHOTS", &shots)
            .env("SWEEP", if sweep { "1" } else { "0" })
            .env(
                "CHROMIUM",
                std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            )
            .output()
            .expect("node runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the report's browser test failed");
        assert!(stdout.contains("backtest report passed"));
        let shot = shots.join(if sweep {
            "backtest-sweep.png"
        } else {
            "backtest.png"
        });
        assert!(shot.is_file(), "{}", shot.display());
    }
}
