//! `credit-sentinel demo`: the embedded run at a simulated pace with a live terminal view.

use super::embedded::{embedded, Load};
use anyhow::Result;
use credit_sentinel::model::Timestamp;
use credit_sentinel::Engine;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The command's arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Simulated days per real minute while the history (which ends today) is sent; then
    /// the traffic goes on in real time until stopped. The default, 20, is one day every
    /// 3 s: a 30-day hold expires after 90 s.
    #[arg(long, default_value_t = 20.0)]
    pub speed: f64,
    /// Days of history before today.
    #[arg(long, default_value_t = 120)]
    pub days: u32,
    /// Customers in the generated traffic.
    #[arg(long, default_value_t = 200)]
    pub customers: usize,
    /// Partitions of every topic on the embedded broker.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// "exactly_once" or "at_least_once".
    #[arg(long, default_value = "exactly_once")]
    pub delivery: String,
    /// Where the HTTP API and /metrics listen ("off" to disable).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: String,
}

/// Checks the pace, then runs the demo until Ctrl-C or `--duration`.
pub fn run(args: Args) -> Result<()> {
    let Args {
        duration,
        speed,
        days,
        customers,
        partitions,
        delivery,
        http,
    } = args;
    anyhow::ensure!(
        speed > 0.0 && speed.is_finite(),
        "--speed must be a positive number of simulated days per minute"
    );
    demo(&Load {
        brokers: None,
        duration,
        rate: 0,
        customers,
        days,
        partitions,
        delivery,
        http,
        speed: Some(speed * 86_400.0 / 60.0),
    })
}

/// Held orders and the five highest utilizations, for the demo's live view (read once a
/// second through the state handle, off the decision path's per-batch work).
fn live_holds_and_top(engines: &[&Engine]) -> (usize, Vec<String>, Option<String>) {
    let mut held = 0;
    let mut top = Vec::new();
    // The earliest-held order by id, for the demo to offer as one to release.
    let mut example: Option<String> = None;
    for engine in engines {
        for a in engine.accounts() {
            held += a.holds().len();
            if let Some(first) = a.holds().first() {
                if example.as_ref().is_none_or(|e| first < e) {
                    example = Some(first.clone());
                }
            }
            let Some(limit) = engine.terms(&a.customer_id).map(|t| t.limit_effective) else {
                continue;
            };
            if let Some(u) =
                credit_sentinel::engine::warnings::utilization(a.exposure_total(), limit)
            {
                top.push((u, a.customer_id.clone()));
            }
        }
    }
    top.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let top = top
        .into_iter()
        .take(5)
        .map(|(u, c)| format!("{c} {}", credit_sentinel::model::format_ratio(u)))
        .collect();
    (held, top, example)
}

/// `demo`: the embedded run with a live terminal view once a second.
fn demo(load: &Load) -> Result<()> {
    let mut last = (Instant::now(), 0u64);
    let speed = load.speed.unwrap_or(1.0);
    embedded(load, Duration::from_secs(1), |e| {
        let (stats, sent, started) = (&e.stats, &e.sent, e.started);
        let events = stats.events.load(Ordering::Relaxed);
        let rate_now = (events - last.1) as f64 / last.0.elapsed().as_secs_f64().max(0.001);
        last = (Instant::now(), events);
        let d: Vec<String> = credit_sentinel::model::DecisionStatus::ALL
            .iter()
            .zip(&stats.decisions)
            .map(|(s, n)| format!("{} {}", s.as_str(), n.load(Ordering::Relaxed)))
            .collect();
        let (held, top, example) = e.state.read(live_holds_and_top);
        let simulated = Timestamp(e.simulated.load(Ordering::Relaxed));
        let pace = if Timestamp::now().0 - simulated.0 < 60_000_000 {
            "live, real time".to_string()
        } else {
            format!(
                "history, {:.0} simulated days a minute",
                speed * 60.0 / 86_400.0
            )
        };
        let mut view = format!(
            "\n[{:>4}s] {} ({pace}) | sent {} | consumed {} ({:.0}/s) | batches {} | {} | holds waiting {} | alerts {} | dead-letters {}\n",
            started.elapsed().as_secs(),
            simulated.to_date(),
            sent.load(Ordering::Relaxed),
            events,
            rate_now,
            stats.batches.load(Ordering::Relaxed),
            d.join(", "),
            held,
            stats.alerts.load(Ordering::Relaxed),
            stats.dead_letters.load(Ordering::Relaxed),
        );
        view.push_str(&format!("  top utilization: {}\n", top.join(", ")));
        if let Some(order) = example {
            view.push_str(&format!(
                "  a held order to try: {order}  (POST /v1/holds/{order}/release with the approver token; README)\n"
            ));
        }
        if let Ok(recent) = stats.recent_alerts.lock() {
            for a in recent.iter().rev().take(4) {
                view.push_str(&format!("  alert: {a}\n"));
            }
        }
        print!("{view}");
        io::stdout().flush().ok();
    })?;
    println!("demo stopped");
    Ok(())
}
