//! The soak report: what `credit-sentinel soak` samples while the engine runs under generated
//! load on the embedded broker (throughput, decision latency percentiles, resident memory,
//! accounts and holds per interval), and the Markdown table it writes at the end.
//!
//! Latency percentiles come from the `decision_latency_seconds` histogram: the difference of
//! its bucket counts between two samples gives that interval's distribution, and a percentile
//! is reported as the upper bound of the bucket it falls in (so "≤ 0.025 s" means between the
//! next lower bound and 25 ms). Resident memory is `VmRSS` from `/proc/self/status`.

use prometheus::core::Collector;
use prometheus::Histogram;
use std::fmt::Write as _;
use std::time::Duration;

/// Cumulative bucket counts of a histogram, with their upper bounds (the last is +Inf).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
}

impl Buckets {
    pub fn of(h: &Histogram) -> Buckets {
        let mut b = Buckets::default();
        for family in h.collect() {
            for m in family.get_metric() {
                let hist = m.get_histogram();
                for bucket in hist.get_bucket() {
                    b.bounds.push(bucket.upper_bound());
                    b.counts.push(bucket.cumulative_count());
                }
                b.bounds.push(f64::INFINITY);
                b.counts.push(hist.get_sample_count());
            }
        }
        b
    }

    /// The upper bound of the bucket holding quantile `q` of the observations made between
    /// `earlier` and `self`; `None` if there were none.
    pub fn quantile_since(&self, earlier: &Buckets, q: f64) -> Option<f64> {
        let delta: Vec<u64> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| c - earlier.counts.get(i).copied().unwrap_or(0))
            .collect();
        let total = *delta.last()?;
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        delta
            .iter()
            .position(|c| *c >= rank)
            .map(|i| self.bounds[i])
    }
}

/// Resident memory of this process in bytes (Linux), `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One interval of the soak.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub elapsed: Duration,
    pub events_per_s: f64,
    pub events_total: u64,
    pub decisions_total: u64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max_bucket: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub accounts: usize,
    pub held: usize,
}

fn seconds(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(s) if s.is_infinite() => "> 10 s".into(),
        Some(s) if s < 1.0 => format!("≤ {} ms", s * 1000.0),
        Some(s) => format!("≤ {s} s"),
    }
}

fn mib(v: Option<u64>) -> String {
    v.map_or("–".into(), |b| format!("{:.1}", b as f64 / 1048576.0))
}

/// The header of the report's table.
pub const HEADER: &str = "| elapsed | events/s | events | decisions | latency p50 | latency p99 | slowest bucket | RSS MiB | accounts | held |";

/// One row of the report's table.
pub fn row(x: &Sample) -> String {
    format!(
        "| {} s | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
        x.elapsed.as_secs(),
        x.events_per_s,
        x.events_total,
        x.decisions_total,
        seconds(x.p50),
        seconds(x.p99),
        seconds(x.max_bucket),
        mib(x.rss_bytes),
        x.accounts,
        x.held
    )
}

/// The report: the command, the settings, a row per interval, and start versus end memory.
pub fn report(command: &str, settings: &str, samples: &[Sample]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Command: `{command}`\n\n{settings}\n");
    let _ = writeln!(s, "{HEADER}");
    let _ = writeln!(
        s,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for x in samples {
        let _ = writeln!(s, "{}", row(x));
    }
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let _ = writeln!(
            s,
            "\nResident memory: {} MiB after the first interval, {} MiB at the end; accounts {} → {}.",
            mib(first.rss_bytes),
            mib(last.rss_bytes),
            first.accounts,
            last.accounts
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_quantiles_come_from_bucket_differences() {
        let h = Histogram::with_opts(
            prometheus::HistogramOpts::new("t", "t").buckets(vec![0.001, 0.01, 0.1]),
        )
        .expect("histogram");
        for _ in 0..100 {
            h.observe(0.0005);
        }
        let before = Buckets::of(&h);
        for _ in 0..98 {
            h.observe(0.005);
        }
        h.observe(0.05);
        h.observe(5.0);
        let after = Buckets::of(&h);
        assert_eq!(after.quantile_since(&before, 0.5), Some(0.01));
        assert_eq!(after.quantile_since(&before, 0.99), Some(0.1));
        assert_eq!(after.quantile_since(&before, 1.0), Some(f64::INFINITY));
        assert_eq!(after.quantile_since(&after, 0.5), None);
        assert_eq!(
            Buckets::of(&h).quantile_since(&Buckets::default(), 0.5),
            Some(0.001)
        );
    }

    #[test]
    fn the_report_has_a_row_per_sample_and_the_memory_summary() {
        let sample = Sample {
            elapsed: Duration::from_secs(60),
            events_per_s: 500.0,
            events_total: 30000,
            decisions_total: 9000,
            p50: Some(0.025),
            p99: Some(0.1),
            max_bucket: Some(0.25),
            rss_bytes: Some(64 * 1048576),
            accounts: 5000,
            held: 12,
        };
        let r = report(
            "credit-sentinel soak",
            "settings",
            &[sample.clone(), sample],
        );
        assert_eq!(r.matches("| 60 s | 500 |").count(), 2, "{r}");
        assert!(r.contains("≤ 25 ms"));
        assert!(r.contains("64.0 MiB after the first interval"));
    }
}
