//! The report as text tables.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{Op, Report, TierRow};

/// The report as text tables.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bookstore bench: {} (each run: at most {} requests or {} s)",
        report.frontend, report.requests_per_run, report.duration_limit_s
    );
    let _ = writeln!(
        out,
        "\n{:<7} {:>7} {:>9} {:>7} {:>7} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "op",
        "clients",
        "requests",
        "errors",
        "failed",
        "throughput/s",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for run in &report.runs {
        let _ = writeln!(
            out,
            "{:<7} {:>7} {:>9} {:>7} {:>7} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            run.op.as_str(),
            run.clients,
            run.requests,
            run.errors,
            run.failed_buys,
            run.throughput,
            run.mean_ms,
            run.p50_ms,
            run.p99_ms,
            run.max_ms
        );
    }
    let ops: BTreeSet<Op> = report.runs.iter().map(|r| r.op).collect();
    for op in ops {
        let rows: Vec<&TierRow> = report.tiers.iter().filter(|t| t.op == op).collect();
        if rows.is_empty() {
            continue;
        }
        let clients: Vec<usize> = report
            .runs
            .iter()
            .filter(|r| r.op == op)
            .map(|r| r.clients)
            .collect();
        let mut tiers: Vec<&str> = Vec::new();
        for row in &rows {
            if !tiers.contains(&row.tier.as_str()) {
                tiers.push(&row.tier);
            }
        }
        let _ = write!(
            out,
            "\nPer-tier mean latency of {} in ms, by concurrent clients\n{:<52}",
            op.as_str(),
            "tier"
        );
        for c in &clients {
            let _ = write!(out, " {:>8}", c);
        }
        let _ = write!(out, "\n{:<52}", "client → frontend (end to end, bench)");
        for run in report.runs.iter().filter(|r| r.op == op) {
            let _ = write!(out, " {:>8.3}", run.mean_ms);
        }
        out.push('\n');
        for tier in tiers {
            let _ = write!(out, "{tier:<52}");
            for c in &clients {
                match rows.iter().find(|r| r.tier == tier && r.clients == *c) {
                    Some(row) => {
                        let _ = write!(out, " {:>8.3}", row.mean_ms);
                    }
                    None => {
                        let _ = write!(out, " {:>8}", "-");
                    }
                }
            }
            out.push('\n');
        }
    }
    if !report.memory.is_empty() {
        let _ = writeln!(
            out,
            "\nMemory (MB resident)\n{:<12} {:>8} {:>8} {:>8} {:>8}",
            "member", "pid", "idle", "after", "peak"
        );
        for row in &report.memory {
            let _ = writeln!(
                out,
                "{:<12} {:>8} {:>8.1} {:>8.1} {:>8.1}",
                row.member, row.pid, row.idle_rss_mb, row.after_rss_mb, row.peak_rss_mb
            );
        }
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}
