//! The store's processes, from the pids file of `bookstore up`, and what
//! /proc says about them.

use std::collections::BTreeMap;
use std::path::Path;

use crate::up::{PIDS_FILE, Pids};

pub(super) fn read_pids(data_dir: &Path) -> BTreeMap<String, u32> {
    std::fs::read(data_dir.join(PIDS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Pids>(&bytes).ok())
        .map(|pids| pids.members)
        .unwrap_or_default()
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
