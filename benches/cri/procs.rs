//! What a runtime costs the node, read from /proc: CPU time (own and reaped children's) and
//! memory (RSS and PSS, which splits shared pages fairly between processes).

/// Pids whose command line (split at NULs) satisfies `pred`.
pub fn matching(pred: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd: Vec<String> =
                raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            pred(&cmd).then_some(pid)
        })
        .collect()
}

/// Seconds of CPU a process used, with its reaped children's (the runc calls it waited for).
pub fn cpu_seconds(pid: u32) -> f64 {
    times(pid, 4)
}

/// Seconds of CPU a process used itself, without any child's.
pub fn own_cpu_seconds(pid: u32) -> f64 {
    times(pid, 2)
}

/// The sum of the first `n` of utime, stime, cutime and cstime, in seconds.
fn times(pid: u32, n: usize) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command: state is field 3; utime..cstime are 14..17.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(n).filter_map(|v| v.parse().ok()).collect();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    f.iter().sum::<u64>() as f64 / ticks
}

/// (RSS, PSS) in bytes.
pub fn memory(pid: u32) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else { return (0, 0) };
    let kb = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0)
    };
    (kb("Rss:") * 1024, kb("Pss:") * 1024)
}

/// The node's CPU time so far, from /proc/stat's first line, in ticks. Two readings tell
/// whether a stretch was bound by CPU, and how much of it the VM's host took: steal is time a
/// virtual CPU wanted to run and the hypervisor ran something else, so a run with much of it
/// measured a disturbed machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeTicks {
    /// All but idle, iowait and steal.
    pub busy: u64,
    pub steal: u64,
    pub total: u64,
}

impl NodeTicks {
    pub fn now() -> NodeTicks {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return NodeTicks::default() };
        let Some(line) = stat.lines().next() else { return NodeTicks::default() };
        // user nice system idle iowait irq softirq steal (guest time is inside user already).
        let f: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|v| v.parse().ok()).collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        let total: u64 = f.iter().sum();
        NodeTicks { busy: total - at(3) - at(4) - at(7), steal: at(7), total }
    }

    /// What went by between `earlier` and this reading.
    pub fn since(self, earlier: NodeTicks) -> NodeTicks {
        NodeTicks {
            busy: self.busy.saturating_sub(earlier.busy),
            steal: self.steal.saturating_sub(earlier.steal),
            total: self.total.saturating_sub(earlier.total),
        }
    }

    pub fn busy_percent(&self) -> f64 {
        self.busy as f64 * 100.0 / self.total.max(1) as f64
    }

    pub fn steal_percent(&self) -> f64 {
        self.steal as f64 * 100.0 / self.total.max(1) as f64
    }
}

/// Waits until the node has been nearly idle (under 5% busy) for a tenth of a second, at most
/// `limit`; answers how long that took. What a scenario leaves the kernel to finish after its
/// last answer (network namespaces torn down, mounts released) then runs before the next one
/// and not among its samples, for both runtimes alike.
pub async fn quiet(limit: std::time::Duration) -> std::time::Duration {
    let began = std::time::Instant::now();
    let mut last = NodeTicks::now();
    while began.elapsed() < limit {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = NodeTicks::now();
        let went = now.since(last);
        if went.total > 0 && went.busy * 20 < went.total {
            break;
        }
        last = now;
    }
    began.elapsed()
}
