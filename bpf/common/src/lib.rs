//! `#[repr(C)]` mirrors of `bpf/crio_events.h`, the types the kernel programs and the loader
//! exchange through maps and the ring buffer. Sizes are checked at compile time on both
//! sides (`_Static_assert` in the header, `const` asserts here).
#![no_std]
#![deny(unsafe_code)]

pub const COMM_LEN: usize = 16;
pub const FILENAME_LEN: usize = 256;
/// Runtime ids are 64 hex digits: room for them and a NUL, so bpftool prints strings.
pub const ID_LEN: usize = 72;

pub const EVENT_EXEC: u32 = 1;
pub const EVENT_FORK: u32 = 2;
pub const EVENT_EXIT: u32 = 3;
pub const EVENT_OOM: u32 = 4;
pub const EVENT_INTRUSION: u32 = 5;

/// What ran on an isolated CPU that was not the container's.
pub const INTRUSION_TASK: u32 = 1;
pub const INTRUSION_KTHREAD: u32 = 2;
pub const INTRUSION_IRQ: u32 = 3;
pub const INTRUSION_SOFTIRQ: u32 = 4;

/// Slots of the `known_slots` filter: tracked cgroups are counted at their id's low bits.
pub const KNOWN_SLOTS: u32 = 1 << 16;

/// Log2 slots of the scheduling delay histogram: slot i counts waits of [2^i, 2^(i+1)) ns.
pub const SCHED_SLOTS: usize = 36;

pub const CGROUP_CONTAINER: u32 = 1;
pub const CGROUP_POD: u32 = 2;

/// OOM events: `memcg_id` was looked for (0 then means the node's limit fired).
pub const FLAG_MEMCG_KNOWN: u32 = 1;

/// Index in the `counters` per-CPU array: events dropped because the ring buffer was full.
pub const COUNTER_LOST: u32 = 0;

/// Value of the `containers` map, keyed by cgroup id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupInfo {
    pub pod_id: [u8; ID_LEN],
    pub container_id: [u8; ID_LEN],
    pub kind: u32,
    pub reserved: u32,
}

/// Value of the `net` per-CPU map (one per CPU; sum them), keyed by the socket owner's cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tcp_rx_bytes: u64,
    pub tcp_tx_bytes: u64,
    pub udp_rx_bytes: u64,
    pub udp_tx_bytes: u64,
}

impl core::ops::AddAssign for NetCounters {
    fn add_assign(&mut self, o: Self) {
        self.rx_bytes += o.rx_bytes;
        self.rx_packets += o.rx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_packets += o.tx_packets;
        self.tcp_rx_bytes += o.tcp_rx_bytes;
        self.tcp_tx_bytes += o.tcp_tx_bytes;
        self.udp_rx_bytes += o.udp_rx_bytes;
        self.udp_tx_bytes += o.udp_tx_bytes;
    }
}

/// One ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// CLOCK_BOOTTIME nanoseconds.
    pub timestamp_ns: u64,
    pub cgroup_id: u64,
    pub memcg_id: u64,
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub exit_code: i32,
    pub flags: u32,
    /// Intrusion events: the CPU and the kind (`INTRUSION_*`).
    pub cpu: u32,
    pub intrusion: u32,
    pub comm: [u8; COMM_LEN],
    pub filename: [u8; FILENAME_LEN],
}

const _: () = assert!(core::mem::size_of::<CgroupInfo>() == 152);
const _: () = assert!(core::mem::size_of::<Event>() == 328);
const _: () = assert!(core::mem::size_of::<SchedDelay>() == 304);
const _: () = assert!(core::mem::size_of::<IsolatedCpu>() == 16);
const _: () = assert!(core::mem::size_of::<IntrusionKey>() == 16);
const _: () = assert!(core::mem::size_of::<IntruderKey>() == 16);
const _: () = assert!(core::mem::size_of::<Intruder>() == 32);

/// Value of the `sched_delay` per-CPU map (sum the CPUs'), keyed by container cgroup id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedDelay {
    pub slots: [u64; SCHED_SLOTS],
    pub count: u64,
    pub total_ns: u64,
}

impl Default for SchedDelay {
    fn default() -> Self {
        SchedDelay { slots: [0; SCHED_SLOTS], count: 0, total_ns: 0 }
    }
}

impl core::ops::AddAssign for SchedDelay {
    fn add_assign(&mut self, o: Self) {
        for (a, b) in self.slots.iter_mut().zip(o.slots) {
            *a += b;
        }
        self.count += o.count;
        self.total_ns += o.total_ns;
    }
}

/// Value of the `isolated_cpus` array, indexed by CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IsolatedCpu {
    pub cgroup_id: u64,
    pub last_event_ns: u64,
}

/// Key of the `intrusions` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IntrusionKey {
    pub cgroup_id: u64,
    pub cpu: u32,
    pub kind: u32,
}

/// Key of the `intruders` map: `id` is a thread id, an IRQ number or a softirq vector.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IntruderKey {
    pub cgroup_id: u64,
    pub id: u32,
    pub kind: u32,
}

/// Value of the `intruders` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Intruder {
    pub count: u64,
    pub last_cpu: u32,
    pub reserved: u32,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<NetCounters>() == 64);

impl CgroupInfo {
    /// Ids are cut to leave a NUL at the end (runtime ids are 64 hex digits: they fit).
    pub fn new(pod_id: &str, container_id: &str, kind: u32) -> Self {
        let mut info = CgroupInfo { pod_id: [0; ID_LEN], container_id: [0; ID_LEN], kind, reserved: 0 };
        copy_into(&mut info.pod_id, pod_id.as_bytes());
        copy_into(&mut info.container_id, container_id.as_bytes());
        info
    }
}

fn copy_into(dst: &mut [u8], src: &[u8]) {
    let n = src.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&src[..n]);
}

/// The text of a NUL-padded C string field.
pub fn c_str(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(feature = "user")]
mod sys {
    #![allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    // SAFETY: CgroupInfo is #[repr(C)], made only of integers and byte arrays with no padding
    // (152 bytes, asserted), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::CgroupInfo {}
    // SAFETY: as above: #[repr(C)], integers and byte arrays, 328 bytes without padding.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: #[repr(C)], eight u64 and nothing else: no padding, any bit pattern is valid.
    unsafe impl aya::Pod for super::NetCounters {}
    // SAFETY: #[repr(C)], 38 u64: no padding, any bit pattern is valid.
    unsafe impl aya::Pod for super::SchedDelay {}
    // SAFETY: #[repr(C)], two u64: no padding, any bit pattern is valid.
    unsafe impl aya::Pod for super::IsolatedCpu {}
    // SAFETY: #[repr(C)], a u64 then two u32 (16 bytes, asserted): no padding.
    unsafe impl aya::Pod for super::IntrusionKey {}
    // SAFETY: as IntrusionKey: a u64 then two u32, no padding.
    unsafe impl aya::Pod for super::IntruderKey {}
    // SAFETY: #[repr(C)], a u64, two u32 and a byte array (32 bytes, asserted): no padding.
    unsafe impl aya::Pod for super::Intruder {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_fit_and_strings_end_at_nul() {
        let id = "a".repeat(64);
        let info = CgroupInfo::new("pod", &id, CGROUP_CONTAINER);
        assert_eq!(c_str(&info.pod_id), b"pod");
        assert_eq!(c_str(&info.container_id), id.as_bytes());
        let long = CgroupInfo::new(&"p".repeat(100), "", CGROUP_POD);
        assert_eq!(c_str(&long.pod_id).len(), ID_LEN - 1, "always NUL-terminated");
    }
}
