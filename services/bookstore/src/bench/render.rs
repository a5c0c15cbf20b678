//! The report as text tables: the runs, then per operation the per-tier
//! latencies and the CPU per request of each store process, then memory.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{Op, Report, RunResult, TierRow};

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
        "\n{:<7} {:>7} {:>9} {:>7} {:>7} {:>12} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "op",
        "clients",
        "requests",
        "errors",
        "failed",
        "throughput/s",
        "store µs/req",
        "bench µs/req",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for run in &report.runs {
        let _ = writeln!(
            out,
            "{:<7} {:>7} {:>9} {:>7} {:>7} {:>12.0} {:>12} {:>12} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            run.op.as_str(),
            run.clients,
            run.requests,
            run.errors,
            run.failed_buys,
            run.throughput,
            micros(run.cpu.store_us_per_request),
            micros(run.cpu.bench_us_per_request),
            run.mean_ms,
            run.p50_ms,
            run.p99_ms,
            run.max_ms
        );
    }
    let ops: BTreeSet<Op> = report.runs.iter().map(|r| r.op).collect();
    for op in ops {
        let runs: Vec<&RunResult> = report.runs.iter().filter(|r| r.op == op).collect();
        render_tiers(&mut out, op, &runs, &report.tiers);
        render_cpu(&mut out, op, &runs);
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

/// The mean of every hop of `op`'s runs, one column per client count.
fn render_tiers(out: &mut String, op: Op, runs: &[&RunResult], tiers: &[TierRow]) {
    let rows: Vec<&TierRow> = tiers.iter().filter(|t| t.op == op).collect();
    if rows.is_empty() {
        return;
    }
    let clients: Vec<usize> = runs.iter().map(|r| r.clients).collect();
    let mut names: Vec<&str> = Vec::new();
    for row in &rows {
        if !names.contains(&row.tier.as_str()) {
            names.push(&row.tier);
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
    for run in runs {
        let _ = write!(out, " {:>8.3}", run.mean_ms);
    }
    out.push('\n');
    for tier in names {
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

/// The CPU per request of every store process during `op`'s runs, one
/// column per client count; left out when the store's pids are not known
/// (the main table then says n/a).
fn render_cpu(out: &mut String, op: Op, runs: &[&RunResult]) {
    let Some(first) = runs.iter().find(|r| !r.cpu.processes.is_empty()) else {
        return;
    };
    let _ = write!(
        out,
        "\nCPU per request of {} in µs (user + system), by concurrent clients\n{:<52}",
        op.as_str(),
        "process"
    );
    for run in runs {
        let _ = write!(out, " {:>8}", run.clients);
    }
    out.push('\n');
    for (index, process) in first.cpu.processes.iter().enumerate() {
        let name = format!("{} (pid {})", process.member, process.pid);
        let figures = runs.iter().map(|run| {
            let process = run.cpu.processes.get(index)?;
            process.us_per_request
        });
        cpu_row(out, &name, figures);
    }
    let store = runs.iter().map(|run| run.cpu.store_us_per_request);
    cpu_row(out, "store, all processes", store);
    let bench = runs.iter().map(|run| run.cpu.bench_us_per_request);
    cpu_row(out, "bench (the load generator)", bench);
}

fn cpu_row(out: &mut String, name: &str, figures: impl Iterator<Item = Option<f64>>) {
    let _ = write!(out, "{name:<52}");
    for figure in figures {
        let _ = write!(out, " {:>8}", micros(figure));
    }
    out.push('\n');
}

/// A CPU figure in µs, or `n/a` when it is not known (never a made-up 0).
fn micros(figure: Option<f64>) -> String {
    figure.map_or_else(|| "n/a".to_owned(), |us| format!("{us:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::{Counts, summarize};
    use crate::bench::{ProcessCpu, RunCpu};

    fn report(cpu: RunCpu) -> Report {
        Report {
            frontend: "http://127.0.0.1:8000".to_owned(),
            requests_per_run: 100,
            duration_limit_s: 1.0,
            runs: vec![summarize(
                Op::Buy,
                32,
                &Counts::default(),
                vec![1_000; 100],
                cpu,
            )],
            tiers: Vec::new(),
            memory: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn cpu_per_request_is_printed_beside_the_throughput_and_by_process() {
        let text = render(&report(RunCpu {
            store_us_per_request: Some(512.0),
            bench_us_per_request: Some(80.0),
            processes: vec![ProcessCpu {
                member: "catalog-0".to_owned(),
                pid: 42,
                us_per_request: Some(512.0),
            }],
        }));
        assert!(text.contains("store µs/req bench µs/req"), "{text}");
        let buy = text
            .lines()
            .find(|l| l.starts_with("buy"))
            .expect("a buy row");
        assert!(buy.contains(" 512.0 ") && buy.contains(" 80.0 "), "{buy}");
        assert!(text.contains("CPU per request of buy in µs"), "{text}");
        let process = text.lines().find(|l| l.starts_with("catalog-0 (pid 42)"));
        assert!(process.is_some_and(|l| l.ends_with(" 512.0")), "{text}");
    }

    #[test]
    fn unknown_store_cpu_reads_n_a_not_zero() {
        let text = render(&report(RunCpu {
            bench_us_per_request: Some(80.0),
            ..RunCpu::default()
        }));
        let buy = text
            .lines()
            .find(|l| l.starts_with("buy"))
            .expect("a buy row");
        assert!(buy.contains(" n/a ") && buy.contains(" 80.0 "), "{buy}");
        assert!(!text.contains("CPU per request of buy"), "{text}");
    }
}
