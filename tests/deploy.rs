//! The deploy assets are valid and true to the engine: the compose file, the Kubernetes
//! manifests, the Prometheus alert rules and the Grafana dashboard parse; every metric they
//! name is one the engine exports; `promtool check rules` passes (ignored where build.rs found
//! no promtool, never under CI, where `.ci/run` installs Debian's prometheus package); `docker compose config` where the client
//! has compose.

use credit_sentinel::metrics::Metrics;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

fn yaml(rel: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
        })
        .collect()
}

/// Metric family names the engine exports (histograms with their series suffixes). Vectors
/// are touched once so that families without series yet still appear.
fn exported() -> BTreeSet<String> {
    let m = Metrics::new();
    m.events
        .with_label_values(&["order.placed", "applied"])
        .inc();
    m.decision_reasons
        .with_label_values(&["held", "CREDIT_LIMIT_EXCEEDED"])
        .inc();
    m.consumer_lag
        .with_label_values(&["credit.orders", "0"])
        .set(0);
    m.commands_published
        .with_label_values(&["command.block"])
        .inc();
    m.http_requests
        .with_label_values(&["/healthz", "GET", "200"])
        .inc();
    m.http_duration
        .with_label_values(&["/healthz"])
        .observe(0.0);
    for g in [
        &m.exposure,
        &m.credit_limit,
        &m.held_amount,
        &m.open_receivables_overdue,
    ] {
        g.with_label_values(&["EUR"]).set(0.0);
    }
    m.accounts.with_label_values(&["EUR"]).set(0);
    let text = m.render();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_string());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
        }
    }
    assert!(names.len() >= 25, "{names:?}");
    names
}

/// The engine's metric names an expression uses (`credit_sentinel_*` and the `process_*`
/// metrics it exports).
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    for prefix in ["credit_sentinel_", "process_"] {
        let mut i = 0;
        while let Some(pos) = expr[i..].find(prefix) {
            let start = i + pos;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            let word_start = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            if word_start {
                out.insert(expr[start..end].to_string());
            }
            i = end;
        }
    }
    out
}

#[test]
fn alert_rules_name_only_exported_metrics() {
    let docs = yaml("prometheus/alerts.yml");
    let known = exported();
    let mut rules = 0;
    for group in docs[0]["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            let expr = rule["expr"].as_str().expect("expr");
            assert!(
                rule["labels"]["severity"].is_string(),
                "{name} has a severity"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name} has a summary"
            );
            for m in metric_names_in(expr) {
                assert!(
                    known.contains(&m),
                    "{name} uses {m}, which the engine does not export"
                );
            }
            rules += 1;
        }
    }
    assert!(
        rules >= 5,
        "lag, dead-letters, no decisions, over-limit, aborts"
    );
}

/// Runs promtool with `args` in deploy/prometheus and asserts it succeeded.
fn promtool(args: &[&str]) {
    // Ignored where build.rs found no promtool (never under CI): here it must be there.
    let promtool = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("promtool"))
                .find(|f| f.is_file())
        })
        .expect("promtool is not installed (.ci/run installs it)");
    let out = std::process::Command::new(promtool)
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[cfg_attr(
    no_promtool,
    ignore = "promtool not installed: sudo apt-get install prometheus (.ci/run does)"
)]
fn promtool_accepts_the_alert_rules() {
    promtool(&["check", "rules", "alerts.yml"]);
}

/// Every rule fires on the input series where it should and stays quiet where it should not
/// (`promtool test rules`, deploy/prometheus/alerts.test.yml).
#[test]
#[cfg_attr(
    no_promtool,
    ignore = "promtool not installed: sudo apt-get install prometheus (.ci/run does)"
)]
fn promtool_unit_tests_of_the_alert_rules_pass() {
    promtool(&["test", "rules", "alerts.test.yml"]);
}

/// Each alert rule has a unit test that sees it fire, and a runbook line in
/// docs/operations.md under the anchor its `runbook` annotation names.
#[test]
fn every_alert_rule_is_unit_tested_and_has_a_runbook() {
    let rules = yaml("prometheus/alerts.yml");
    let tests = yaml("prometheus/alerts.test.yml");
    let mut firing = BTreeSet::new();
    for t in tests[0]["tests"].as_sequence().expect("tests") {
        for case in t["alert_rule_test"].as_sequence().expect("alert_rule_test") {
            let fires = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty());
            if fires {
                firing.insert(case["alertname"].as_str().expect("alertname").to_string());
            }
        }
    }
    let ops =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .expect("docs/operations.md");
    for group in rules[0]["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            assert!(
                firing.contains(name),
                "{name} has no unit test that sees it fire"
            );
            let runbook = rule["annotations"]["runbook"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no runbook annotation"));
            assert_eq!(
                runbook,
                format!("docs/operations.md#{}", name.to_lowercase()),
                "{name}'s runbook anchor"
            );
            assert!(
                ops.contains(&format!("#### {name}")),
                "docs/operations.md has no runbook heading for {name}"
            );
        }
    }
}

#[test]
fn dashboard_panels_query_exported_metrics() {
    let text = std::fs::read_to_string(deploy("grafana/dashboards/credit-sentinel.json"))
        .expect("dashboard");
    let d: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let known = exported();
    let panels = d["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Decision rate",
        "Decision latency",
        "Commit and flush latency",
        "Consumer lag per partition",
        "Held orders",
        "Releases",
        "utilization",
        "Alerts by kind",
        "Rebalances",
        "Restore duration",
        "Requests by status",
        "Resident memory",
        "Builds running",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "a panel about {want}: {titles:?}"
        );
    }
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in [
        "Health",
        "Throughput and latency",
        "Consumer lag",
        "Holds and releases",
        "Alerts and dead-letters",
        "Restore and rebalance",
        "HTTP",
    ] {
        assert!(rows.contains(&want), "a row {want}: {rows:?}");
    }
    // Variables: the data source (no hard-coded uid) and the instance every query filters by.
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for want in ["datasource", "instance", "partition"] {
        assert!(vars.contains(&want), "a variable {want}: {vars:?}");
    }
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "unique panel ids"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {:?} uses the datasource variable",
            p["title"]
        );
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            assert!(
                expr.contains("instance=~\"$instance\""),
                "panel {:?} filters by the instance variable: {expr}",
                p["title"]
            );
            let names = metric_names_in(expr);
            assert!(!names.is_empty(), "{expr}");
            for m in names {
                assert!(known.contains(&m), "panel {:?} uses {m}", p["title"]);
            }
        }
    }
    // Provisioning points at the folder the compose file mounts the dashboard into.
    let prov = yaml("grafana/provisioning/dashboards/dashboards.yml");
    assert_eq!(
        prov[0]["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );
}

#[test]
fn compose_file_runs_kafka_in_kraft_mode_with_the_stack() {
    let c = &yaml("compose.yaml")[0];
    let services = c["services"].as_mapping().expect("services");
    for s in ["kafka", "topics", "engine", "prometheus", "grafana"] {
        assert!(
            services.contains_key(serde_yaml::Value::from(s)),
            "service {s}"
        );
    }
    let kafka = &c["services"]["kafka"]["environment"];
    assert_eq!(
        kafka["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller")
    );
    let env = &c["services"]["engine"]["environment"];
    assert_eq!(
        env["CREDIT_SENTINEL__KAFKA__BROKERS"].as_str(),
        Some("kafka:9092")
    );
    // Every engine setting named in the compose file is a real key.
    let pairs: Vec<(String, String)> = env
        .as_mapping()
        .expect("env")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().expect("key").to_string(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{v:?}")),
            )
        })
        .collect();
    credit_sentinel::config::load_with_env(None, pairs).expect("compose settings load");
    for mount in c["services"]["prometheus"]["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .chain(
            c["services"]["grafana"]["volumes"]
                .as_sequence()
                .expect("volumes"),
        )
    {
        let src = mount
            .as_str()
            .expect("mount")
            .split(':')
            .next()
            .expect("src");
        assert!(deploy(src).exists(), "{src} exists");
    }
}

/// `docker compose config` validates the compose file against the compose schema. No machine
/// of this project has the compose plugin (no Docker engine either), so CI cannot require it:
/// the test is ignored rather than passing without running. Run it where compose exists:
/// `cargo test --test deploy -- --ignored`.
#[test]
#[ignore = "needs the docker compose plugin, which this project's machines do not have"]
fn docker_compose_accepts_the_compose_file() {
    let out = std::process::Command::new("docker")
        .args(["compose", "-f"])
        .arg(deploy("compose.yaml"))
        .args(["config", "--quiet"])
        .output()
        .expect("docker compose runs (install the compose plugin)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kubernetes_manifests_are_complete() {
    let mut kinds = BTreeSet::new();
    for f in std::fs::read_dir(deploy("kubernetes")).expect("dir") {
        let path = f.expect("entry").path();
        let rel = format!(
            "kubernetes/{}",
            path.file_name().expect("name").to_string_lossy()
        );
        for doc in yaml(&rel) {
            let kind = doc["kind"].as_str().expect("kind").to_string();
            assert!(doc["apiVersion"].is_string(), "{rel} apiVersion");
            kinds.insert(kind);
        }
    }
    for k in [
        "ConfigMap",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ] {
        assert!(kinds.contains(k), "{k} manifest");
    }
    let sts = &yaml("kubernetes/statefulset.yaml")[0];
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert_eq!(
        sts["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"].as_str(),
        Some("credit-sentinel-secrets")
    );
    // The mounted settings file is valid for the engine (secrets files aside).
    let cm = &yaml("kubernetes/configmap.yaml")[0];
    let toml_text = cm["data"]["credit-sentinel.toml"].as_str().expect("toml");
    let cleaned: String = toml_text
        .lines()
        .filter(|l| !l.contains("_file ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = std::env::temp_dir().join(format!("cs-k8s-{}.toml", std::process::id()));
    std::fs::write(&file, cleaned).expect("write");
    credit_sentinel::config::load_with_env(Some(&file), Vec::<(String, String)>::new())
        .expect("the ConfigMap's settings load");
}
