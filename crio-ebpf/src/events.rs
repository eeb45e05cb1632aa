//! Ring buffer records decoded into `KernelEvent`s, with kernel boot-clock times turned into
//! wall-clock times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crio_ebpf_common::{EVENT_EXEC, EVENT_EXIT, EVENT_FORK, EVENT_INTRUSION, EVENT_OOM, Event, FLAG_MEMCG_KNOWN, c_str};

use crate::sched::Intrusion;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Exec {
        filename: String,
    },
    Fork,
    /// `code` as a shell reports it: the exit code, or 128 + the signal.
    Exit {
        code: i32,
        signal: Option<i32>,
    },
    /// `memcg_id`: the memory cgroup whose limit fired; `None` when none did (the node ran out).
    Oom {
        memcg_id: Option<u64>,
    },
    /// Something else ran on `cpu`, isolated for the container (the event's pid is the
    /// intruder's id: thread id, IRQ number or softirq vector; comm its name).
    Intrusion {
        cpu: u32,
        what: Intrusion,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEvent {
    pub time: SystemTime,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub comm: String,
    pub kind: EventKind,
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Exec { .. } => "exec",
            EventKind::Fork => "fork",
            EventKind::Exit { .. } => "exit",
            EventKind::Oom { .. } => "oom",
            EventKind::Intrusion { .. } => "intrusion",
        }
    }
}

/// Wall clock minus CLOCK_BOOTTIME, in nanoseconds, now.
pub(crate) fn boot_to_wall() -> i128 {
    let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    wall.as_nanos() as i128 - (boot.tv_sec as i128 * 1_000_000_000 + boot.tv_nsec as i128)
}

pub(crate) fn decode(bytes: &[u8], boot_to_wall: i128) -> Option<KernelEvent> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    let e = read_event(bytes);
    let text = |b: &[u8]| String::from_utf8_lossy(c_str(b)).into_owned();
    let kind = match e.kind {
        EVENT_EXEC => EventKind::Exec { filename: text(&e.filename) },
        EVENT_FORK => EventKind::Fork,
        EVENT_EXIT => {
            let status = e.exit_code;
            let signal = status & 0x7f;
            if signal == 0 {
                EventKind::Exit { code: (status >> 8) & 0xff, signal: None }
            } else {
                EventKind::Exit { code: 128 + signal, signal: Some(signal) }
            }
        }
        EVENT_OOM => EventKind::Oom { memcg_id: (e.flags & FLAG_MEMCG_KNOWN != 0 && e.memcg_id != 0).then_some(e.memcg_id) },
        EVENT_INTRUSION => EventKind::Intrusion { cpu: e.cpu, what: Intrusion::from_raw(e.intrusion)? },
        _ => return None,
    };
    let comm = match kind {
        EventKind::Intrusion { what: Intrusion::Softirq, .. } => crate::sched::softirq_name(e.pid).to_string(),
        _ => text(&e.comm),
    };
    let wall = (e.timestamp_ns as i128 + boot_to_wall).max(0) as u128;
    Some(KernelEvent {
        time: UNIX_EPOCH + Duration::from_nanos(wall as u64),
        cgroup_id: e.cgroup_id,
        pid: e.pid,
        tid: e.tid,
        ppid: e.ppid,
        comm,
        kind,
    })
}

/// The fields of an `Event` record, read from its bytes in the native byte order.
fn read_event(b: &[u8]) -> Event {
    let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let mut comm = [0u8; crio_ebpf_common::COMM_LEN];
    comm.copy_from_slice(&b[56..72]);
    let mut filename = [0u8; crio_ebpf_common::FILENAME_LEN];
    filename.copy_from_slice(&b[72..328]);
    Event {
        timestamp_ns: u64_at(0),
        cgroup_id: u64_at(8),
        memcg_id: u64_at(16),
        kind: u32_at(24),
        pid: u32_at(28),
        tid: u32_at(32),
        ppid: u32_at(36),
        exit_code: u32_at(40) as i32,
        flags: u32_at(44),
        cpu: u32_at(48),
        intrusion: u32_at(52),
        comm,
        filename,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, exit_code: i32, flags: u32, memcg: u64) -> Vec<u8> {
        let mut b = vec![0u8; 328];
        b[0..8].copy_from_slice(&5_000_000_000u64.to_ne_bytes());
        b[8..16].copy_from_slice(&42u64.to_ne_bytes());
        b[16..24].copy_from_slice(&memcg.to_ne_bytes());
        b[24..28].copy_from_slice(&kind.to_ne_bytes());
        b[28..32].copy_from_slice(&100u32.to_ne_bytes());
        b[32..36].copy_from_slice(&101u32.to_ne_bytes());
        b[36..40].copy_from_slice(&7u32.to_ne_bytes());
        b[40..44].copy_from_slice(&exit_code.to_ne_bytes());
        b[44..48].copy_from_slice(&flags.to_ne_bytes());
        b[56..60].copy_from_slice(b"sh\0\0");
        b[72..81].copy_from_slice(b"/bin/true");
        b
    }

    #[test]
    fn intrusions_decode_with_cpu_kind_and_name() {
        let mut b = record(EVENT_INTRUSION, 0, 0, 0);
        b[48..52].copy_from_slice(&3u32.to_ne_bytes());
        b[52..56].copy_from_slice(&crio_ebpf_common::INTRUSION_KTHREAD.to_ne_bytes());
        let e = decode(&b, 0).unwrap();
        assert_eq!(e.kind, EventKind::Intrusion { cpu: 3, what: Intrusion::Kthread });
        assert_eq!(e.comm, "sh");
        // A softirq is named by its vector (the kernel sends none); pid 100 is out of range.
        b[52..56].copy_from_slice(&crio_ebpf_common::INTRUSION_SOFTIRQ.to_ne_bytes());
        b[28..32].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(decode(&b, 0).unwrap().comm, "NET_RX");
        b[52..56].copy_from_slice(&9u32.to_ne_bytes());
        assert!(decode(&b, 0).is_none(), "an unknown kind is dropped");
    }

    #[test]
    fn records_decode_with_wall_clock_times() {
        let e = decode(&record(EVENT_EXEC, 0, 0, 0), 1_000_000_000).unwrap();
        assert_eq!((e.cgroup_id, e.pid, e.tid, e.ppid, e.comm.as_str()), (42, 100, 101, 7, "sh"));
        assert_eq!(e.kind, EventKind::Exec { filename: "/bin/true".into() });
        assert_eq!(e.time, UNIX_EPOCH + Duration::from_secs(6));
        assert_eq!(decode(&record(EVENT_EXIT, 3 << 8, 0, 0), 0).unwrap().kind, EventKind::Exit { code: 3, signal: None });
        assert_eq!(decode(&record(EVENT_EXIT, 9, 0, 0), 0).unwrap().kind, EventKind::Exit { code: 137, signal: Some(9) });
        assert_eq!(decode(&record(EVENT_OOM, 0, FLAG_MEMCG_KNOWN, 77), 0).unwrap().kind, EventKind::Oom { memcg_id: Some(77) });
        assert_eq!(decode(&record(EVENT_OOM, 0, FLAG_MEMCG_KNOWN, 0), 0).unwrap().kind, EventKind::Oom { memcg_id: None });
        assert!(decode(&record(99, 0, 0, 0), 0).is_none());
        assert!(decode(&[0u8; 10], 0).is_none());
    }
}
