//! A small run of `bookstore bench` against `bookstore up` as real
//! processes, to keep the load generator working. It checks that the output
//! parses, that every request was answered and that the CPU per request of
//! the store's processes was read; it never checks speed.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{TempDir, UpProcess, local_cluster};

#[test]
fn bench_measures_every_operation_with_the_tier_breakdown() {
    let dir = TempDir::new("bench");
    let inventory = dir.path().join("inventory.txt");
    let written = Command::new(env!("CARGO_BIN_EXE_bookstore"))
        .args([
            "bench",
            "--books",
            "16",
            "--stock",
            "100000",
            "--write-inventory",
        ])
        .arg(&inventory)
        .output()
        .expect("run bookstore bench --write-inventory");
    assert!(written.status.success(), "{written:?}");

    let up = UpProcess::start(dir.path(), local_cluster(2), &inventory, &[]);
    let output = Command::new(env!("CARGO_BIN_EXE_bookstore"))
        .args(["bench", "--frontend", &up.frontend()])
        .args(["--ops", "search,lookup,buy", "--clients", "1,4"])
        .args(["--requests", "150", "--duration", "20", "--warmup", "20"])
        .arg("--cluster")
        .arg(&up.cluster_file)
        .arg("--data-dir")
        .arg(&up.data_dir)
        .arg("--inventory")
        .arg(&inventory)
        .arg("--json")
        .output()
        .expect("run bookstore bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("bench --json prints JSON");

    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 6, "three operations at two client counts");
    for run in runs {
        assert_eq!(run["errors"], 0, "{run}");
        assert_eq!(run["failed_buys"], 0, "{run}");
        assert!(run["requests"].as_u64().unwrap_or(0) > 0, "{run}");
        assert!(run["throughput"].as_f64().unwrap_or(0.0) > 0.0, "{run}");
        let (p50, p99, max) = (&run["p50_ms"], &run["p99_ms"], &run["max_ms"]);
        assert!(
            p50.as_f64() <= p99.as_f64() && p99.as_f64() <= max.as_f64(),
            "{run}"
        );
    }

    // CPU per request: every store process (the six members and `up`
    // itself) has a figure in every run, and the bench's own is apart. A
    // short run may spend less than a clock tick in one process, so only
    // the store's sum over all runs is required to be above zero.
    let mut store_cpu = 0.0;
    for run in runs {
        let cpu = &run["cpu"];
        let processes = cpu["processes"].as_array().expect("cpu.processes");
        assert_eq!(processes.len(), 7, "{cpu}");
        for process in processes {
            assert!(process["us_per_request"].as_f64().is_some(), "{process}");
        }
        store_cpu += cpu["store_us_per_request"]
            .as_f64()
            .unwrap_or_else(|| panic!("store CPU of {run}"));
        assert!(cpu["bench_us_per_request"].as_f64().is_some(), "{cpu}");
    }
    assert!(store_cpu > 0.0, "the store spent no CPU: {runs:?}");

    // The per-tier breakdown names the hops of a buy, down to the replicas.
    let tiers: Vec<&str> = report["tiers"]
        .as_array()
        .expect("tiers")
        .iter()
        .filter(|t| t["op"] == "buy")
        .filter_map(|t| t["tier"].as_str())
        .collect();
    for hop in [
        "frontend → order (buy)",
        "order → catalog (update)",
        "catalog → catalog-replica (replicate)",
        "order → order-replica (replicate)",
    ] {
        assert!(tiers.contains(&hop), "no {hop} in {tiers:?}");
    }
    assert!(
        report["tiers"]
            .as_array()
            .expect("tiers")
            .iter()
            .any(|t| t["op"] == "lookup" && t["tier"] == "frontend → cache (lookup)"),
        "{}",
        report["tiers"]
    );
    assert_eq!(
        report["memory"].as_array().map(Vec::len),
        Some(6),
        "memory of every service process: {}",
        report["memory"]
    );

    // The text tables render too.
    let text = Command::new(env!("CARGO_BIN_EXE_bookstore"))
        .args(["bench", "--frontend", &up.frontend()])
        .args(["--ops", "lookup", "--clients", "2", "--requests", "50"])
        .arg("--cluster")
        .arg(&up.cluster_file)
        .arg("--data-dir")
        .arg(&up.data_dir)
        .arg("--inventory")
        .arg(&inventory)
        .output()
        .expect("run bookstore bench");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("throughput/s"), "{text}");
    assert!(
        text.contains("Per-tier mean latency of lookup in ms"),
        "{text}"
    );
    assert!(text.contains("store µs/req"), "{text}");
    assert!(text.contains("CPU per request of lookup in µs"), "{text}");

    // Against a store whose pids are not known, the store's CPU is n/a,
    // not zero.
    let elsewhere = dir.path().join("no-such-data-dir");
    let remote = Command::new(env!("CARGO_BIN_EXE_bookstore"))
        .args(["bench", "--frontend", &up.frontend()])
        .args(["--ops", "lookup", "--clients", "1", "--requests", "20"])
        .arg("--no-tiers")
        .arg("--data-dir")
        .arg(&elsewhere)
        .arg("--inventory")
        .arg(&inventory)
        .arg("--json")
        .output()
        .expect("run bookstore bench");
    let remote: Value = serde_json::from_slice(&remote.stdout).expect("bench --json prints JSON");
    let cpu = &remote["runs"][0]["cpu"];
    assert!(cpu["store_us_per_request"].is_null(), "{cpu}");
    assert_eq!(cpu["processes"].as_array().map(Vec::len), Some(0), "{cpu}");
}
