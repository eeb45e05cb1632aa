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

/// The node's CPU time so far, from /proc/stat's first line: (busy, total) in ticks, busy being
/// all but idle and iowait. Two readings tell whether a stretch was bound by CPU.
pub fn node_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return (0, 0) };
    let Some(line) = stat.lines().next() else { return (0, 0) };
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Waits until the node has been nearly idle (under 5% busy) for a tenth of a second, at most
/// `limit`; answers how long that took. What a scenario leaves the kernel to finish after its
/// last answer (network namespaces torn down, mounts released) then runs before the next one
/// and not among its samples, for both runtimes alike.
pub async fn quiet(limit: std::time::Duration) -> std::time::Duration {
    let began = std::time::Instant::now();
    let mut last = node_ticks();
    while began.elapsed() < limit {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = node_ticks();
        let (busy, total) = (now.0 - last.0, now.1 - last.1);
        if total > 0 && busy * 20 < total {
            break;
        }
        last = now;
    }
    began.elapsed()
}
