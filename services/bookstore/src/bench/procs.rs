//! The store's processes, from the pids file of `bookstore up`, and what
//! /proc says about them: resident memory, and the CPU time each spent
//! during a run, divided by the run's requests.
//!
//! CPU is read just before and just after the load itself, inside the
//! metrics scrapes, so the scrapes' own cost is not counted. The bench's own
//! process is measured too and reported apart: on one machine the load
//! generator shares the cores with the store it measures.

use std::path::Path;
use std::time::Duration;

use bookstore_core::process::ProcessStat;

use super::{ProcessCpu, RunCpu};
use crate::up::{PIDS_FILE, Pids};

/// What the CPU table calls `bookstore up`'s own process, which runs the
/// coordinator (and restarts children, which costs nothing during a run).
const SUPERVISOR: &str = "up (coordinator)";

/// The pids file of `bookstore up` in `data_dir`; `None` when there is none
/// (the store runs elsewhere, or under another data directory).
pub(super) fn read_pids(data_dir: &Path) -> Option<Pids> {
    let bytes = std::fs::read(data_dir.join(PIDS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Every process of the store, by name: the members and the supervisor.
pub(super) fn store_processes(pids: &Pids) -> Vec<(String, u32)> {
    pids.members
        .iter()
        .map(|(name, &pid)| (name.clone(), pid))
        .chain([(SUPERVISOR.to_owned(), pids.supervisor)])
        .collect()
}

/// (resident, peak resident) memory of `pid` in MB, from /proc.
pub(super) fn memory_of(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The CPU time every known process had spent at one moment; `None` for a
/// process that could not be read (gone, or no /proc).
#[derive(Debug, Clone, Default)]
pub(super) struct CpuReading {
    pub(super) store: Vec<(String, u32, Option<Duration>)>,
    pub(super) bench: Option<Duration>,
}

impl CpuReading {
    pub(super) fn take(processes: &[(String, u32)]) -> Self {
        Self {
            store: processes
                .iter()
                .map(|(name, pid)| (name.clone(), *pid, ProcessStat::read(*pid).map(|s| s.cpu())))
                .collect(),
            bench: ProcessStat::read_self().map(|s| s.cpu()),
        }
    }
}

/// CPU per request between two readings. A process missing from either
/// reading, or whose CPU went down (its pid now names another process, as
/// after a restart), has no figure, and then neither has the store's total:
/// a total over some processes would look like a cheaper store.
pub(super) fn cpu_per_request(before: &CpuReading, after: &CpuReading, requests: u64) -> RunCpu {
    let per_request = |before: Option<Duration>, after: Option<Duration>| -> Option<f64> {
        let spent = after?.checked_sub(before?)?;
        (requests > 0).then(|| spent.as_secs_f64() * 1e6 / requests as f64)
    };
    let processes: Vec<ProcessCpu> = after
        .store
        .iter()
        .map(|(member, pid, spent_after)| {
            let spent_before = before
                .store
                .iter()
                .find(|(_, before_pid, _)| before_pid == pid)
                .and_then(|(_, _, spent)| *spent);
            ProcessCpu {
                member: member.clone(),
                pid: *pid,
                us_per_request: per_request(spent_before, *spent_after),
            }
        })
        .collect();
    let store_us_per_request = if processes.is_empty() {
        None
    } else {
        processes.iter().map(|p| p.us_per_request).sum()
    };
    RunCpu {
        store_us_per_request,
        bench_us_per_request: per_request(before.bench, after.bench),
        processes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(store: &[(&str, u32, Option<u64>)], bench: Option<u64>) -> CpuReading {
        CpuReading {
            store: store
                .iter()
                .map(|&(name, pid, ms)| (name.to_owned(), pid, ms.map(Duration::from_millis)))
                .collect(),
            bench: bench.map(Duration::from_millis),
        }
    }

    #[test]
    fn cpu_per_request_is_the_growth_over_the_requests() {
        let before = reading(
            &[("catalog-0", 10, Some(100)), ("order-0", 11, Some(50))],
            Some(7),
        );
        let after = reading(
            &[("catalog-0", 10, Some(400)), ("order-0", 11, Some(150))],
            Some(107),
        );
        let cpu = cpu_per_request(&before, &after, 1000);
        // 300 ms and 100 ms over 1000 requests: 300 µs and 100 µs each.
        let figures: Vec<(&str, Option<f64>)> = cpu
            .processes
            .iter()
            .map(|p| (p.member.as_str(), p.us_per_request))
            .collect();
        assert_eq!(
            figures,
            vec![("catalog-0", Some(300.0)), ("order-0", Some(100.0))]
        );
        assert_eq!(cpu.store_us_per_request, Some(400.0));
        assert_eq!(cpu.bench_us_per_request, Some(100.0));
    }

    #[test]
    fn without_known_pids_the_store_figure_is_not_zero_but_absent() {
        let cpu = cpu_per_request(&reading(&[], Some(0)), &reading(&[], Some(50)), 100);
        assert_eq!(cpu.store_us_per_request, None);
        assert!(cpu.processes.is_empty());
        assert_eq!(cpu.bench_us_per_request, Some(500.0));
    }

    #[test]
    fn a_process_that_vanished_or_restarted_leaves_the_total_unknown() {
        let before = reading(
            &[("catalog-0", 10, Some(100)), ("order-0", 11, Some(500))],
            None,
        );
        // catalog-0 is gone; order-0's pid now names a younger process.
        let after = reading(&[("catalog-0", 10, None), ("order-0", 11, Some(20))], None);
        let cpu = cpu_per_request(&before, &after, 100);
        assert!(cpu.processes.iter().all(|p| p.us_per_request.is_none()));
        assert_eq!(cpu.store_us_per_request, None);
        assert_eq!(cpu.bench_us_per_request, None);
    }

    #[test]
    fn a_run_without_requests_has_no_figures() {
        let before = reading(&[("catalog-0", 10, Some(100))], Some(0));
        let after = reading(&[("catalog-0", 10, Some(200))], Some(10));
        let cpu = cpu_per_request(&before, &after, 0);
        assert_eq!(cpu.store_us_per_request, None);
        assert_eq!(cpu.bench_us_per_request, None);
    }

    #[test]
    fn the_supervisor_counts_as_a_store_process() {
        let pids = Pids {
            supervisor: 1,
            members: [("frontend-0".to_owned(), 2)].into_iter().collect(),
        };
        assert_eq!(
            store_processes(&pids),
            vec![("frontend-0".to_owned(), 2), (SUPERVISOR.to_owned(), 1)]
        );
    }
}
