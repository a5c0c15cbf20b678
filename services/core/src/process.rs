//! What the kernel says about a process's CPU time and resident memory, from
//! `/proc/<pid>/stat`: the `process_*` series of every service's `/metrics`
//! and the bench's CPU per request read the same fields the same way.
//!
//! The parse is a pure function over the file's text, so its corner cases
//! (a process name with spaces and parentheses) are tested without a process.
//! Off Linux there is no `/proc`: the readers return `None`.

use std::sync::OnceLock;
use std::time::Duration;

/// The kernel's clock tick for `utime`/`stime` when `sysconf` cannot say:
/// Linux reports those fields in USER_HZ, which is 100 on every architecture.
const FALLBACK_CLOCK_TICKS_PER_SECOND: u64 = 100;
/// The page size to count resident pages in when `sysconf` cannot say.
const FALLBACK_PAGE_SIZE: u64 = 4096;

/// The fields of `/proc/<pid>/stat` that the store reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStat {
    /// User plus system CPU time (fields 14 and 15), in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size (field 24), in pages.
    pub resident_pages: u64,
}

impl ProcessStat {
    /// Parses the text of `/proc/<pid>/stat`. The second field is the
    /// process name in parentheses, which may itself contain spaces and
    /// parentheses, so the fields are counted from after the last `)`.
    pub fn parse(text: &str) -> Option<Self> {
        let (_, after_name) = text.rsplit_once(')')?;
        // After the name come field 3 (state), 4 (ppid), ...: field N is at
        // index N - 3.
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
        Some(Self {
            cpu_ticks: field(14)?.checked_add(field(15)?)?,
            resident_pages: field(24)?,
        })
    }

    /// Reads `/proc/<pid>/stat`; `None` when the process is gone (or there
    /// is no `/proc`).
    pub fn read(pid: u32) -> Option<Self> {
        Self::read_path(&format!("/proc/{pid}/stat"))
    }

    /// Reads the calling process's own `/proc/self/stat`.
    pub fn read_self() -> Option<Self> {
        Self::read_path("/proc/self/stat")
    }

    fn read_path(path: &str) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// The CPU time, user plus system.
    pub fn cpu(&self) -> Duration {
        ticks_to_duration(self.cpu_ticks, clock_ticks_per_second())
    }

    /// The resident memory in bytes.
    pub fn resident_bytes(&self) -> u64 {
        self.resident_pages.saturating_mul(page_size())
    }
}

/// `ticks` clock ticks at `per_second` ticks a second.
fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(per_second);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The unit of `utime` and `stime` (`sysconf(_SC_CLK_TCK)`), read once.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| sysconf_or(libc::_SC_CLK_TCK, FALLBACK_CLOCK_TICKS_PER_SECOND))
}

/// The unit of the resident set size (`sysconf(_SC_PAGESIZE)`), read once.
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| sysconf_or(libc::_SC_PAGESIZE, FALLBACK_PAGE_SIZE))
}

fn sysconf_or(name: libc::c_int, fallback: u64) -> u64 {
    // SAFETY: sysconf reads a configuration value; it has no preconditions
    // and returns -1 for a name it does not know.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line of `/proc/<pid>/stat` (a sleeping shell), with `comm`,
    /// utime, stime and rss replaced by the arguments.
    fn stat_line(comm: &str, utime: u64, stime: u64, rss: u64) -> String {
        format!(
            "4242 ({comm}) S 1 4242 4242 0 -1 4194560 1043 0 0 0 {utime} {stime} 0 0 20 0 1 0 \
             123456 9400320 {rss} 18446744073709551615 1 1 0 0 0 0 65536 3686404 1266761467 \
             0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        )
    }

    #[test]
    fn cpu_is_user_plus_system_ticks_and_rss_is_in_pages() {
        let stat = ProcessStat::parse(&stat_line("bookstore", 250, 40, 2048)).expect("parses");
        assert_eq!(
            stat,
            ProcessStat {
                cpu_ticks: 290,
                resident_pages: 2048
            }
        );
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = ProcessStat::parse(&stat_line("tokio (worker) 1) x", 7, 3, 11)).expect("parses");
        assert_eq!(stat.cpu_ticks, 10);
        assert_eq!(stat.resident_pages, 11);
    }

    #[test]
    fn truncated_or_garbled_lines_are_rejected() {
        assert_eq!(ProcessStat::parse(""), None);
        assert_eq!(ProcessStat::parse("4242 (bookstore"), None);
        assert_eq!(ProcessStat::parse("4242 (bookstore) S 1 2 3"), None);
        let garbled = stat_line("bookstore", 250, 40, 2048).replace(" 250 ", " x ");
        assert_eq!(ProcessStat::parse(&garbled), None);
    }

    #[test]
    fn ticks_become_time_at_the_clock_rate() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(1, 1000), Duration::from_millis(1));
        // A zero rate (never returned, but not trusted) does not divide by zero.
        assert_eq!(ticks_to_duration(3, 0), Duration::from_secs(3));
    }

    #[test]
    fn this_process_can_read_its_own_stat() {
        let stat = ProcessStat::read_self().expect("/proc/self/stat on Linux");
        assert!(stat.resident_bytes() > 0, "{stat:?}");
        assert!(ProcessStat::read(std::process::id()).is_some());
    }
}
