//! One sample of a cgroup's resource use (CPU time and its split, CFS throttling, memory,
//! processes), read the same way for containers and pods, and the CPU rate between samples.
//! On v1 and hybrid hosts the v1 controllers hold the numbers; on v2 the one directory does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::{Cgroups, Layout, keyed};

/// One sample of a cgroup's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_nanos: u64,
    pub cpu_user_nanos: u64,
    pub cpu_system_nanos: u64,
    /// CFS bandwidth periods that elapsed, were throttled, and the time throttled.
    pub cfs_periods: u64,
    pub cfs_throttled_periods: u64,
    pub cfs_throttled_nanos: u64,
    pub memory_usage: u64,
    pub memory_working_set: u64,
    pub memory_rss: u64,
    pub memory_cache: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub memory_limit: Option<u64>,
    pub pids: u64,
}

impl Usage {
    /// The use of several cgroups together (a pod's containers); no limit, `None` for none.
    pub fn sum(samples: &[Usage]) -> Option<Usage> {
        (!samples.is_empty()).then(|| {
            samples.iter().fold(Usage::default(), |a, u| Usage {
                cpu_nanos: a.cpu_nanos + u.cpu_nanos,
                cpu_user_nanos: a.cpu_user_nanos + u.cpu_user_nanos,
                cpu_system_nanos: a.cpu_system_nanos + u.cpu_system_nanos,
                cfs_periods: a.cfs_periods + u.cfs_periods,
                cfs_throttled_periods: a.cfs_throttled_periods + u.cfs_throttled_periods,
                cfs_throttled_nanos: a.cfs_throttled_nanos + u.cfs_throttled_nanos,
                memory_usage: a.memory_usage + u.memory_usage,
                memory_working_set: a.memory_working_set + u.memory_working_set,
                memory_rss: a.memory_rss + u.memory_rss,
                memory_cache: a.memory_cache + u.memory_cache,
                page_faults: a.page_faults + u.page_faults,
                major_page_faults: a.major_page_faults + u.major_page_faults,
                memory_limit: None,
                pids: a.pids + u.pids,
            })
        })
    }
}

impl Cgroups {
    /// A sample for the cgroup at `path` (the OCI spec's cgroupsPath); `None` if it is gone.
    pub fn usage(&self, path: &str) -> Option<Usage> {
        let stat = self.read("memory", path, "memory.stat")?;
        let cpu_stat = self.read("cpu", path, "cpu.stat").unwrap_or_default();
        let pids = self.number("pids", path, "pids.current").unwrap_or(0);
        match self.layout {
            Layout::V1 => {
                let usage = self.number("memory", path, "memory.usage_in_bytes").unwrap_or(0);
                Some(Usage {
                    cpu_nanos: self.number("cpuacct", path, "cpuacct.usage").unwrap_or(0),
                    cpu_user_nanos: self.number("cpuacct", path, "cpuacct.usage_user").unwrap_or(0),
                    cpu_system_nanos: self.number("cpuacct", path, "cpuacct.usage_sys").unwrap_or(0),
                    cfs_periods: keyed(&cpu_stat, "nr_periods"),
                    cfs_throttled_periods: keyed(&cpu_stat, "nr_throttled"),
                    cfs_throttled_nanos: keyed(&cpu_stat, "throttled_time"),
                    memory_usage: usage,
                    memory_working_set: usage.saturating_sub(keyed(&stat, "total_inactive_file")),
                    memory_rss: keyed(&stat, "total_rss"),
                    memory_cache: keyed(&stat, "total_cache"),
                    page_faults: keyed(&stat, "total_pgfault"),
                    major_page_faults: keyed(&stat, "total_pgmajfault"),
                    // v1 reports "no limit" as a huge page-aligned number.
                    memory_limit: self.number("memory", path, "memory.limit_in_bytes").filter(|l| *l < (1 << 62)),
                    pids,
                })
            }
            Layout::V2 => {
                let usage = self.number("memory", path, "memory.current").unwrap_or(0);
                Some(Usage {
                    cpu_nanos: keyed(&cpu_stat, "usage_usec") * 1000,
                    cpu_user_nanos: keyed(&cpu_stat, "user_usec") * 1000,
                    cpu_system_nanos: keyed(&cpu_stat, "system_usec") * 1000,
                    cfs_periods: keyed(&cpu_stat, "nr_periods"),
                    cfs_throttled_periods: keyed(&cpu_stat, "nr_throttled"),
                    cfs_throttled_nanos: keyed(&cpu_stat, "throttled_usec") * 1000,
                    memory_usage: usage,
                    memory_working_set: usage.saturating_sub(keyed(&stat, "inactive_file")),
                    memory_rss: keyed(&stat, "anon"),
                    memory_cache: keyed(&stat, "file"),
                    page_faults: keyed(&stat, "pgfault"),
                    major_page_faults: keyed(&stat, "pgmajfault"),
                    // "max" does not parse: no limit.
                    memory_limit: self.number("memory", path, "memory.max"),
                    pids,
                })
            }
        }
    }
}

/// The CPU rate of containers or pods (`usage_nano_cores`): the previous sample of each, so
/// a rate is known from the second sample on. Entries leave with their objects (`forget`).
#[derive(Debug, Default)]
pub struct CpuRates {
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl CpuRates {
    /// Records `cpu_nanos` for `id` now; the rate since its previous sample, in nanocores.
    pub fn sample(&self, id: &str, cpu_nanos: u64) -> Option<u64> {
        self.sample_at(id, cpu_nanos, Instant::now())
    }

    fn sample_at(&self, id: &str, cpu_nanos: u64, now: Instant) -> Option<u64> {
        let prev = self.last.lock().expect("cpu rates poisoned").insert(id.to_string(), (now, cpu_nanos));
        let (then, before) = prev?;
        let elapsed = now.checked_duration_since(then)?.as_nanos();
        (elapsed > 0).then(|| (u128::from(cpu_nanos.saturating_sub(before)) * 1_000_000_000 / elapsed) as u64)
    }

    pub fn forget(&self, id: &str) {
        self.last.lock().expect("cpu rates poisoned").remove(id);
    }

    /// How many objects have a sample (a table the metrics watch for leaks).
    pub fn tracked(&self) -> usize {
        self.last.lock().expect("cpu rates poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::write_test_file as write;
    use super::*;
    use std::time::Duration;

    #[test]
    fn v1_layout() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(
            r,
            "memory/kube/crio-1/memory.stat",
            "cache 10\ntotal_cache 20\ntotal_inactive_file 100\ntotal_rss 300\ntotal_rss_huge 5\ntotal_pgfault 7\ntotal_pgmajfault 1\n",
        );
        write(r, "memory/kube/crio-1/memory.usage_in_bytes", "1000\n");
        write(r, "memory/kube/crio-1/memory.limit_in_bytes", "9223372036854771712\n");
        write(r, "memory/kube/crio-1/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        write(r, "cpuacct/kube/crio-1/cpuacct.usage", "123456\n");
        write(r, "cpuacct/kube/crio-1/cpuacct.usage_user", "100000\n");
        write(r, "cpuacct/kube/crio-1/cpuacct.usage_sys", "23456\n");
        write(r, "cpu/kube/crio-1/cpu.stat", "nr_periods 10\nnr_throttled 4\nthrottled_time 5000\n");
        write(r, "pids/kube/crio-1/pids.current", "3\n");
        let c = Cgroups::detect(r);
        assert_eq!(c.layout(), Layout::V1);
        let u = c.usage("/kube/crio-1").unwrap();
        assert_eq!(
            u,
            Usage {
                cpu_nanos: 123456,
                cpu_user_nanos: 100000,
                cpu_system_nanos: 23456,
                cfs_periods: 10,
                cfs_throttled_periods: 4,
                cfs_throttled_nanos: 5000,
                memory_usage: 1000,
                memory_working_set: 900,
                memory_rss: 300,
                memory_cache: 20,
                page_faults: 7,
                major_page_faults: 1,
                memory_limit: None,
                pids: 3
            }
        );
        assert_eq!(c.oom_kills("/kube/crio-1"), 2);
        assert!(c.usage("/kube/gone").is_none());
    }

    #[test]
    fn v2_layout() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "cgroup.controllers", "cpu memory pids\n");
        write(r, "kube/crio-2/memory.stat", "anon 400\nfile 30\ninactive_file 50\npgfault 9\npgmajfault 2\n");
        write(r, "kube/crio-2/memory.current", "500\n");
        write(r, "kube/crio-2/memory.max", "1048576\n");
        write(r, "kube/crio-2/memory.events", "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n");
        write(r, "kube/crio-2/cpu.stat", "usage_usec 42\nuser_usec 40\nsystem_usec 2\nnr_periods 6\nnr_throttled 1\nthrottled_usec 7\n");
        let c = Cgroups::detect(r);
        let u = c.usage("kube/crio-2").unwrap();
        assert_eq!((u.cpu_nanos, u.cpu_user_nanos, u.cpu_system_nanos), (42_000, 40_000, 2_000));
        assert_eq!((u.cfs_periods, u.cfs_throttled_periods, u.cfs_throttled_nanos), (6, 1, 7_000));
        assert_eq!((u.memory_working_set, u.memory_rss, u.memory_cache, u.memory_limit), (450, 400, 30, Some(1_048_576)));
        assert_eq!(c.oom_kills("kube/crio-2"), 1);
    }

    #[test]
    fn cpu_rate_from_the_second_sample() {
        let rates = CpuRates::default();
        let t0 = Instant::now();
        assert_eq!(rates.sample_at("a", 1_000, t0), None);
        // Half a CPU for two seconds.
        assert_eq!(rates.sample_at("a", 1_000 + 1_000_000_000, t0 + Duration::from_secs(2)), Some(500_000_000));
        // A counter that went back (a recreated cgroup) reads as idle, not as a wrap.
        assert_eq!(rates.sample_at("a", 10, t0 + Duration::from_secs(3)), Some(0));
        assert_eq!(rates.tracked(), 1);
        rates.forget("a");
        assert_eq!(rates.tracked(), 0);
    }
}
