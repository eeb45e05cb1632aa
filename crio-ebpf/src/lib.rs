//! The runtime's eBPF side: loads `bpf/crio.bpf.c` (built by build.rs), pins its maps under a
//! directory of the BPF filesystem, attaches each program on its own (one that cannot load is
//! reported and the others still run), and hands out the kernel's events.
//!
//! The daemon fills the `containers` map (cgroup id -> pod and container ids) before a
//! container's first instruction; the programs report only what happens in those cgroups.
//! Maps are pinned by name, so they survive a daemon restart and other tools can read them
//! (`bpftool map dump pinned <dir>/containers`).
#![deny(unsafe_code)]

pub mod bpffs;
mod events;
mod known;
mod pin_lock;
mod sched;
mod sys;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::{BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, FExit};
use aya::{Btf, Ebpf, EbpfLoader};
use crio_ebpf_common::{COUNTER_LOST, CgroupInfo};

pub use crio_ebpf_common::{CGROUP_CONTAINER, CGROUP_POD, CgroupInfo as Tracked, NetCounters, c_str};
pub use crio_ebpf_common::{SCHED_SLOTS, SchedDelay};
pub use events::{EventKind, KernelEvent};
pub use sched::{Intrusion, SCHED_PROGRAMS, SeenIntruder, THROTTLE_PROGRAM, softirq_name};

/// What to load beyond the always-on programs.
#[derive(Debug, Clone, Copy)]
pub struct Features {
    /// The scheduling programs: delay histograms, isolation intrusions, CFS throttling.
    /// `sched_switch` runs on every context switch of the node, hence its own switch.
    pub scheduling: bool,
    /// The kernel's run-time statistics for the programs (run time and count, what
    /// `program_stats` reports): two clock reads per program run while on.
    pub run_time_stats: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features { scheduling: true, run_time_stats: true }
    }
}

/// The object build.rs made; empty when the build had no BPF toolchain.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/crio.bpf.o"));

/// Each program, the tracepoint it attaches to, and what it gives.
pub const PROGRAMS: &[(&str, &str, &str)] = &[
    ("crio_exec", "sched_process_exec", "exec events"),
    ("crio_fork", "sched_process_fork", "fork events"),
    ("crio_exit", "sched_process_exit", "exit events"),
    ("crio_oom_victim", "mark_victim", "OOM attribution"),
];

/// The network accounting programs, attached to each pod's cgroup.
const NET_PROGRAMS: [(&str, CgroupSkbAttachType); 2] =
    [("crio_ingress", CgroupSkbAttachType::Ingress), ("crio_egress", CgroupSkbAttachType::Egress)];

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("this build has no eBPF programs (clang, bpftool or kernel BTF were missing when it was built)")]
    NotBuilt,
    #[error("failed to mount the BPF filesystem at {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create the pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pin directory {path} is in use by another daemon ({holder}); give each daemon its own [crio.ebpf] pin_dir")]
    PinDirInUse { path: PathBuf, holder: String },
    #[error("failed to lock the pin directory {path}")]
    PinLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to load the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("failed to read the kernel's BTF")]
    Btf(#[source] aya::BtfError),
    #[error("map {name} is missing from the eBPF object")]
    MissingMap { name: &'static str },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("reading the event ring buffer")]
    Ring(#[source] std::io::Error),
    #[error("network accounting is not loaded")]
    NoNetAccounting,
    #[error("failed to open cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("attaching {program} to cgroup {path}")]
    Attach {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: aya::programs::ProgramError,
    },
}

/// A program that could not be attached, and why.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub program: &'static str,
    pub feature: &'static str,
    pub reason: String,
}

/// The network programs' links on one pod cgroup.
type NetLinks = Vec<(&'static str, aya::programs::cgroup_skb::CgroupSkbLinkId)>;

pub struct Tracer {
    /// Owns the programs and their links: dropping it detaches them.
    ebpf: Mutex<Ebpf>,
    net: Option<Mutex<PerCpuHashMap<MapData, u64, crio_ebpf_common::NetCounters>>>,
    /// Per pod cgroup id, its network links.
    net_links: Mutex<std::collections::HashMap<u64, NetLinks>>,
    containers: Mutex<known::Known>,
    counters: PerCpuArray<MapData, u64>,
    ring: Mutex<Option<RingBuf<MapData>>>,
    /// The scheduling programs' maps, when they run.
    sched: Option<sched::SchedMaps>,
    pin_dir: PathBuf,
    /// Keeps the kernel counting our programs' run time while it is open.
    _stats: Option<std::os::fd::OwnedFd>,
    /// Nanoseconds to add to CLOCK_BOOTTIME to get the wall clock.
    boot_to_wall: i128,
    pub unavailable: Vec<Unavailable>,
    /// Last, so it is released after the programs are detached.
    _pin_lock: pin_lock::PinLock,
}

impl Tracer {
    /// Loads the programs with their maps pinned in `pin_dir` (inside a BPF filesystem, which
    /// is mounted at `bpffs` first if it is not there yet).
    pub fn load(bpffs: &Path, pin_dir: &Path, features: Features) -> Result<Tracer, EbpfError> {
        if OBJECT.is_empty() {
            return Err(EbpfError::NotBuilt);
        }
        bpffs::ensure_mounted(bpffs).map_err(|source| EbpfError::Mount { path: bpffs.into(), source })?;
        std::fs::create_dir_all(pin_dir).map_err(|source| EbpfError::PinDir { path: pin_dir.into(), source })?;
        let pin_lock = match pin_lock::acquire(pin_dir, Path::new("/proc/locks"), pin_lock::WAIT)
            .map_err(|source| EbpfError::PinLock { path: pin_dir.into(), source })?
        {
            pin_lock::Acquire::Locked(lock) => lock,
            pin_lock::Acquire::Busy { holder } => {
                let holder = holder.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"));
                return Err(EbpfError::PinDirInUse { path: pin_dir.into(), holder });
            }
        };
        drop_incompatible_pins(pin_dir);
        let mut ebpf = EbpfLoader::new().map_pin_path(pin_dir).load(OBJECT).map_err(EbpfError::Load)?;
        let btf = Btf::from_sys_fs().map_err(EbpfError::Btf)?;
        let mut unavailable = Vec::new();
        for &(program, tracepoint, feature) in PROGRAMS {
            if let Err(reason) = attach(&mut ebpf, &btf, program, tracepoint) {
                unavailable.push(Unavailable { program, feature, reason });
            }
        }
        let (mut sched_ok, mut throttle_events) = (false, false);
        if features.scheduling {
            for &(program, tracepoint, feature) in SCHED_PROGRAMS {
                match attach(&mut ebpf, &btf, program, tracepoint) {
                    Ok(()) => sched_ok = true,
                    Err(reason) => unavailable.push(Unavailable { program, feature, reason }),
                }
            }
            let (program, function) = THROTTLE_PROGRAM;
            match attach_fexit(&mut ebpf, &btf, program, function) {
                Ok(()) => throttle_events = true,
                Err(reason) => unavailable.push(Unavailable { program, feature: "CFS throttle events", reason }),
            }
        }
        let mut net_ok = true;
        for (program, _) in NET_PROGRAMS {
            let loaded = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("{program} is missing from the object"))
                .and_then(|p| <&mut CgroupSkb>::try_from(p).map_err(|e| e.to_string()))
                .and_then(|p| p.load().map_err(|e| format!("loading {program}: {e}")));
            if let Err(reason) = loaded {
                unavailable.push(Unavailable { program, feature: "network accounting", reason });
                net_ok = false;
            }
        }
        let map = |ebpf: &mut Ebpf, name: &'static str| ebpf.take_map(name).ok_or(EbpfError::MissingMap { name });
        let net = match net_ok {
            true => {
                Some(Mutex::new(PerCpuHashMap::try_from(map(&mut ebpf, "net")?).map_err(|source| EbpfError::Map { name: "net", source })?))
            }
            false => None,
        };
        let containers = known::Known::load(
            HashMap::try_from(map(&mut ebpf, "containers")?).map_err(|source| EbpfError::Map { name: "containers", source })?,
            Array::try_from(map(&mut ebpf, "known_slots")?).map_err(|source| EbpfError::Map { name: "known_slots", source })?,
        )?;
        let counters = PerCpuArray::try_from(map(&mut ebpf, "counters")?).map_err(|source| EbpfError::Map { name: "counters", source })?;
        let ring = RingBuf::try_from(map(&mut ebpf, "events")?).map_err(|source| EbpfError::Map { name: "events", source })?;
        let sched = match sched_ok {
            true => Some(sched::SchedMaps::take(&mut ebpf, throttle_events)?),
            false => None,
        };
        // Run-time statistics cost two clock reads per run; they are what the metrics report.
        let stats = if features.run_time_stats { aya::sys::enable_stats(aya::sys::Stats::RunTime).ok() } else { None };
        Ok(Tracer {
            _stats: stats,
            ebpf: Mutex::new(ebpf),
            net,
            net_links: Mutex::default(),
            containers: Mutex::new(containers),
            counters,
            ring: Mutex::new(Some(ring)),
            sched,
            pin_dir: pin_dir.into(),
            boot_to_wall: events::boot_to_wall(),
            unavailable,
            _pin_lock: pin_lock,
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Starts reporting what happens in the cgroup `cgroup_id`.
    pub fn track(&self, cgroup_id: u64, pod_id: &str, container_id: &str, kind: u32) -> Result<(), EbpfError> {
        let info = CgroupInfo::new(pod_id, container_id, kind);
        self.containers.lock().expect("containers map poisoned").insert(cgroup_id, info)
    }

    /// Stops reporting on `cgroup_id`; one not tracked is untracked.
    pub fn untrack(&self, cgroup_id: u64) -> Result<(), EbpfError> {
        self.containers.lock().expect("containers map poisoned").remove(cgroup_id)
    }

    /// Every tracked cgroup (after a restart, what the pinned map still holds).
    pub fn tracked(&self) -> Vec<(u64, CgroupInfo)> {
        self.containers.lock().expect("containers map poisoned").iter()
    }

    /// Attaches the network accounting programs to the pod cgroup at `dir` (id `cgroup_id`);
    /// already attached is attached.
    pub fn account_network(&self, cgroup_id: u64, dir: &Path) -> Result<(), EbpfError> {
        if self.net.is_none() {
            return Err(EbpfError::NoNetAccounting);
        }
        let mut links = self.net_links.lock().expect("net links poisoned");
        if links.contains_key(&cgroup_id) {
            return Ok(());
        }
        let cgroup = std::fs::File::open(dir).map_err(|source| EbpfError::Cgroup { path: dir.into(), source })?;
        let mut ebpf = self.ebpf.lock().expect("ebpf poisoned");
        let mut attached: NetLinks = Vec::new();
        for (program, kind) in NET_PROGRAMS {
            let prog: &mut CgroupSkb = ebpf.program_mut(program).and_then(|p| p.try_into().ok()).ok_or(EbpfError::NoNetAccounting)?;
            // Attached as a bpf_link (the kernel wants no flags then): links on one cgroup
            // coexist, so other tools' programs there keep running beside ours.
            match prog.attach(&cgroup, kind, CgroupAttachMode::Single) {
                Ok(link) => attached.push((program, link)),
                Err(source) => {
                    detach(&mut ebpf, attached);
                    return Err(EbpfError::Attach { program, path: dir.into(), source });
                }
            }
        }
        links.insert(cgroup_id, attached);
        Ok(())
    }

    /// Whether the network programs run on the pod cgroup `cgroup_id`.
    pub fn accounts_network(&self, cgroup_id: u64) -> bool {
        self.net_links.lock().expect("net links poisoned").contains_key(&cgroup_id)
    }

    /// Detaches the network programs from a pod cgroup (nothing if they were not attached).
    pub fn stop_accounting(&self, cgroup_id: u64) {
        if let Some(attached) = self.net_links.lock().expect("net links poisoned").remove(&cgroup_id) {
            detach(&mut self.ebpf.lock().expect("ebpf poisoned"), attached);
        }
    }

    /// What crossed the network for sockets of the cgroup `cgroup_id`, summed over CPUs.
    pub fn net_counters(&self, cgroup_id: u64) -> Option<crio_ebpf_common::NetCounters> {
        let per_cpu = self.net.as_ref()?.lock().expect("net map poisoned").get(&cgroup_id, 0).ok()?;
        let mut sum = crio_ebpf_common::NetCounters::default();
        for c in per_cpu.iter() {
            sum += *c;
        }
        Some(sum)
    }

    /// Forgets a cgroup's network counters (its owner is gone).
    pub fn forget_net(&self, cgroup_id: u64) {
        if let Some(net) = &self.net {
            let _ = net.lock().expect("net map poisoned").remove(&cgroup_id);
        }
    }

    /// Each loaded program's total run time and run count, as the kernel measures them.
    pub fn program_stats(&self) -> Vec<(String, std::time::Duration, u64)> {
        let ebpf = self.ebpf.lock().expect("ebpf poisoned");
        ebpf.programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((name.to_string(), info.run_time(), info.run_count()))
            })
            .collect()
    }

    /// Events the kernel dropped because the ring buffer was full, on all CPUs.
    pub fn lost(&self) -> u64 {
        self.counters.get(&COUNTER_LOST, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0)
    }

    /// Reads events until the runtime shuts down, calling `sink` for each. Only one reader
    /// may run; a second call returns at once.
    pub async fn read_events(&self, mut sink: impl FnMut(KernelEvent)) -> Result<(), EbpfError> {
        let Some(ring) = self.ring.lock().expect("ring poisoned").take() else { return Ok(()) };
        let mut fd = sys::register_ring(ring).map_err(EbpfError::Ring)?;
        loop {
            let mut ready = fd.readable_mut().await.map_err(EbpfError::Ring)?;
            let ring = ready.get_inner_mut();
            while let Some(item) = ring.next() {
                if let Some(e) = events::decode(&item, self.boot_to_wall) {
                    sink(e);
                }
            }
            ready.clear_ready();
        }
    }
}

/// A key already gone is no error when removing it.
fn removed(r: Result<(), aya::maps::MapError>, name: &'static str) -> Result<(), EbpfError> {
    removal(r, name).map(drop)
}

/// Whether a removal took a key away (`false`: it was already gone, no error).
fn removal(r: Result<(), aya::maps::MapError>, name: &'static str) -> Result<bool, EbpfError> {
    use aya::maps::MapError;
    match r {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(EbpfError::Map { name, source }),
    }
}

/// The pinned maps and the key and value sizes this build gives them.
const PINNED: [(&str, usize, usize); 8] = [
    ("containers", 8, std::mem::size_of::<CgroupInfo>()),
    ("counters", 4, 8),
    ("net", 8, std::mem::size_of::<crio_ebpf_common::NetCounters>()),
    ("sched_delay", 8, std::mem::size_of::<SchedDelay>()),
    ("isolated_cpus", 4, std::mem::size_of::<crio_ebpf_common::IsolatedCpu>()),
    ("intrusions", std::mem::size_of::<crio_ebpf_common::IntrusionKey>(), 8),
    ("intruders", std::mem::size_of::<crio_ebpf_common::IntruderKey>(), std::mem::size_of::<crio_ebpf_common::Intruder>()),
    ("throttles", 8, 8),
];

/// Removes pinned maps a build with another layout left (they would be reused as they are):
/// the daemon fills the new ones again from its records.
fn drop_incompatible_pins(pin_dir: &Path) {
    for (name, key, value) in PINNED {
        let path = pin_dir.join(name);
        let Ok(info) = aya::maps::MapInfo::from_pin(&path) else { continue };
        if (info.key_size() as usize, info.value_size() as usize) != (key, value) {
            tracing::warn!(map = %path.display(), "pinned map has another layout (an older build's); replacing it");
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn detach(ebpf: &mut Ebpf, links: NetLinks) {
    for (program, link) in links {
        if let Some(p) = ebpf.program_mut(program).and_then(|p| <&mut CgroupSkb>::try_from(p).ok()) {
            let _ = p.detach(link);
        }
    }
}

/// A load error with the kernel's errno (aya's message leaves it out when the verifier said
/// nothing, as when the kernel refuses the program type outright).
fn load_error(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } if verifier_log.to_string().trim().is_empty() => {
            format!("the kernel refused it: {io_error}")
        }
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => format!("{io_error}; verifier: {verifier_log}"),
        other => other.to_string(),
    }
}

fn attach_fexit(ebpf: &mut Ebpf, btf: &Btf, program: &str, function: &str) -> Result<(), String> {
    let prog = ebpf.program_mut(program).ok_or_else(|| format!("{program} is missing from the object"))?;
    let prog: &mut FExit = prog.try_into().map_err(|e| format!("{program}: {e}"))?;
    prog.load(function, btf).map_err(|e| format!("loading {program} for {function}: {}", load_error(&e)))?;
    prog.attach().map_err(|e| format!("attaching {program} to {function}: {e}"))?;
    Ok(())
}

fn attach(ebpf: &mut Ebpf, btf: &Btf, program: &str, tracepoint: &str) -> Result<(), String> {
    let prog = ebpf.program_mut(program).ok_or_else(|| format!("{program} is missing from the object"))?;
    let prog: &mut BtfTracePoint = prog.try_into().map_err(|e| format!("{program}: {e}"))?;
    prog.load(tracepoint, btf).map_err(|e| format!("loading {program} for {tracepoint}: {}", load_error(&e)))?;
    prog.attach().map_err(|e| format!("attaching {program} to {tracepoint}: {e}"))?;
    Ok(())
}
