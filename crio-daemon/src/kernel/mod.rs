//! What the kernel sees of our containers, through `crio_ebpf`: the daemon tells it which
//! cgroups are whose (at creation, before the first instruction), and turns its events into
//! container events: exec/fork/exit with the owning pod and container, the exact exit time of
//! a container's init, and OOM kills with the victim and the level whose limit fired.
//! Without eBPF (no BTF, no privilege, a build without programs) everything here is a no-op
//! and the cgroup-file fallbacks elsewhere apply; `off` says why, for Status.

mod sched;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crio_ebpf::{CGROUP_CONTAINER, CGROUP_POD, EventKind, KernelEvent, NetCounters, Tracer};
use tokio::sync::broadcast;

pub use sched::{DelayHistogram, IntruderSummary, IntrusionCount, SchedReport, quantile};

/// Events buffered per subscriber before it is told it fell behind.
const SUBSCRIBER_BUFFER: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OomLevel {
    /// The container's own memory limit.
    Container,
    /// The pod's limit.
    Pod,
    /// A cgroup limit above the pod (the QoS class's, say).
    Above,
    /// No cgroup limit: the node ran out of memory.
    Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKill {
    pub victim_pid: u32,
    pub victim_comm: String,
    pub victim_is_init: bool,
    pub level: OomLevel,
}

/// A kernel event of one of our containers (or pods).
#[derive(Debug, Clone)]
pub struct ContainerKernelEvent {
    pub pod_id: String,
    /// Empty for an event in the pod's own cgroup.
    pub container_id: String,
    pub event: KernelEvent,
    pub oom: Option<OomKill>,
}

/// Per-container counts, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub execs: u64,
    pub forks: u64,
    pub exits: u64,
    pub oom_kills: u64,
}

/// How a container's init ended, as the kernel saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitFate {
    pub exited_at: Option<SystemTime>,
    pub oom: Option<OomKill>,
}

#[derive(Debug, Clone)]
struct Owner {
    pod_id: String,
    container_id: String,
    init_pid: u32,
}

#[derive(Default)]
struct Index {
    /// Default-hierarchy cgroup id -> whose.
    cgroups: HashMap<u64, Owner>,
    /// Memory cgroup id -> the container or pod id it limits.
    memcgs: HashMap<u64, String>,
    fates: HashMap<String, InitFate>,
    counters: HashMap<String, Counters>,
    /// Per pod, the network counts of its removed containers: pod totals never go back.
    retired_net: HashMap<String, NetCounters>,
    /// OOM kills in our containers since start, by whose limit fired.
    oom_by_level: HashMap<OomLevel, u64>,
    /// Per container, where its scheduling is counted.
    sched: HashMap<String, sched::SchedIds>,
}

/// The cgroups of a container the kernel programs watch.
pub struct ContainerCgroups<'a> {
    /// Its default-hierarchy (v2 or unified) directory: what the programs filter on.
    pub dir: &'a Path,
    /// Its memory cgroup and its pod's, for OOM levels.
    pub memcg: &'a Path,
    pub pod_memcg: &'a Path,
    /// Its CPU controller's directory, for CFS throttling.
    pub cpu: &'a Path,
    /// The CPUs isolated for it while it lives (a CPU list; empty: none).
    pub isolated_cpus: &'a str,
}

pub struct Kernel {
    tracer: Option<Arc<Tracer>>,
    /// The features that are off, and why (empty when all work).
    pub off: Vec<String>,
    /// Of those, the scheduling ones.
    sched_off: Vec<String>,
    index: Mutex<Index>,
    events: broadcast::Sender<Arc<ContainerKernelEvent>>,
    /// Events subscribers missed because they fell behind.
    pub dropped: AtomicU64,
}

/// The cgroup id of a cgroup directory: its inode number.
pub fn cgroup_id(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

impl Kernel {
    /// No kernel tracing, for `why`.
    pub fn disabled(why: impl Into<String>) -> Kernel {
        let (events, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let off = vec![why.into()];
        Kernel { tracer: None, sched_off: off.clone(), off, index: Mutex::default(), events, dropped: AtomicU64::new(0) }
    }

    /// Loads the programs (blocking: parses the kernel's BTF). What cannot load is warned
    /// about once, here.
    pub fn load(config: &crate::config::Ebpf) -> Kernel {
        if !config.enable {
            return Kernel::disabled("eBPF is disabled in the configuration ([crio.ebpf] enable = false)");
        }
        match Tracer::load(
            &config.bpffs,
            &config.pin_dir,
            crio_ebpf::Features { scheduling: config.sched_tracing, run_time_stats: config.program_stats },
        ) {
            Ok(tracer) => {
                let mut off: Vec<String> = tracer.unavailable.iter().map(|u| format!("{}: {}", u.feature, u.reason)).collect();
                let scheduling = |p: &str| p == crio_ebpf::THROTTLE_PROGRAM.0 || crio_ebpf::SCHED_PROGRAMS.iter().any(|s| s.0 == p);
                let mut sched_off: Vec<String> =
                    tracer.unavailable.iter().filter(|u| scheduling(u.program)).map(|u| format!("{}: {}", u.feature, u.reason)).collect();
                if !config.sched_tracing {
                    let why = "scheduling tracing is disabled in the configuration ([crio.ebpf] sched_tracing = false)".to_string();
                    off.push(why.clone());
                    sched_off.push(why);
                }
                if !off.is_empty() {
                    tracing::warn!(off = ?off, "some eBPF programs could not load; their features use fallbacks");
                }
                tracing::info!(pin_dir = %config.pin_dir.display(), "eBPF container tracing loaded");
                let (events, _) = broadcast::channel(SUBSCRIBER_BUFFER);
                Kernel { tracer: Some(Arc::new(tracer)), off, sched_off, index: Mutex::default(), events, dropped: AtomicU64::new(0) }
            }
            Err(e) => {
                let why = crate::error_chain(&e);
                tracing::warn!(error = %why, "eBPF container tracing is off; OOM kills come from cgroup files");
                Kernel::disabled(why)
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// The scheduling features that are off, and why.
    pub fn sched_off(&self) -> Vec<String> {
        self.sched_off.clone()
    }

    /// Every container the programs track, with its pod, by container id.
    pub fn tracked_containers(&self) -> Vec<(String, String)> {
        let index = self.index.lock().expect("kernel index poisoned");
        let mut out: Vec<(String, String)> =
            index.cgroups.values().filter(|o| !o.container_id.is_empty()).map(|o| (o.container_id.clone(), o.pod_id.clone())).collect();
        out.sort();
        out
    }

    /// Whether OOM kills are attributed in the kernel (else the cgroup files decide).
    pub fn oom_attribution(&self) -> bool {
        self.tracer.as_ref().is_some_and(|t| t.unavailable.iter().all(|u| u.program != "crio_oom_victim"))
    }

    /// Events the kernel dropped (ring buffer full).
    pub fn lost(&self) -> u64 {
        self.tracer.as_ref().map(|t| t.lost()).unwrap_or(0)
    }

    /// Tracks a container's cgroups and remembers its memory cgroups (own and pod's) for OOM
    /// levels; counts intrusions on its isolated CPUs. Returns the cgroup id.
    pub fn track_container(&self, ids: (&str, &str), init_pid: u32, cgroups: &ContainerCgroups) -> Option<u64> {
        let tracer = self.tracer.as_ref()?;
        let (pod_id, container_id) = ids;
        let id = cgroup_id(cgroups.dir)?;
        if let Err(e) = tracer.track(id, pod_id, container_id, CGROUP_CONTAINER) {
            tracing::warn!(container_id, error = %crate::error_chain(&e), "could not track the container's cgroup");
            return None;
        }
        let sched_ids = sched::SchedIds { cgroup_id: id, cpu_cgroup_id: cgroup_id(cgroups.cpu).unwrap_or(0) };
        if sched_ids.cpu_cgroup_id != 0
            && let Err(e) = tracer.count_throttling(sched_ids.cpu_cgroup_id)
        {
            tracing::warn!(container_id, error = %crate::error_chain(&e), "CFS throttling of the container is not counted");
        }
        {
            let mut index = self.index.lock().expect("kernel index poisoned");
            index.cgroups.insert(id, Owner { pod_id: pod_id.into(), container_id: container_id.into(), init_pid });
            for (dir, owner) in [(cgroups.memcg, container_id), (cgroups.pod_memcg, pod_id)] {
                if let Some(m) = cgroup_id(dir) {
                    index.memcgs.insert(m, owner.into());
                }
            }
            index.sched.insert(container_id.into(), sched_ids);
        }
        if !cgroups.isolated_cpus.is_empty() {
            self.isolate(container_id, sched_ids, cgroups.isolated_cpus);
        }
        Some(id)
    }

    /// Tracks a pod's own cgroup and accounts its network traffic. Returns its id.
    pub fn track_pod(&self, pod_id: &str, cgroup_dir: &Path) -> Option<u64> {
        let tracer = self.tracer.as_ref()?;
        let id = cgroup_id(cgroup_dir)?;
        tracer.track(id, pod_id, "", CGROUP_POD).ok()?;
        if let Err(e) = tracer.account_network(id, cgroup_dir) {
            tracing::warn!(pod_sandbox_id = pod_id, error = %crate::error_chain(&e), "pod network accounting is off");
        }
        let owner = Owner { pod_id: pod_id.into(), container_id: String::new(), init_pid: 0 };
        self.index.lock().expect("kernel index poisoned").cgroups.insert(id, owner);
        Some(id)
    }

    /// Forgets a cgroup (and, for a container, what was learnt of it).
    pub fn untrack(&self, cgroup_id: u64, container_id: Option<&str>) {
        let Some(tracer) = &self.tracer else { return };
        if cgroup_id != 0
            && let Err(e) = tracer.untrack(cgroup_id)
        {
            tracing::warn!(cgroup_id, error = %crate::error_chain(&e), "could not untrack a cgroup");
        }
        let mut index = self.index.lock().expect("kernel index poisoned");
        let owner = index.cgroups.remove(&cgroup_id);
        match (container_id, owner) {
            (Some(id), owner) => {
                index.memcgs.retain(|_, o| o != id);
                index.fates.remove(id);
                index.counters.remove(id);
                if let Some(ids) = index.sched.remove(id) {
                    self.forget_sched(ids);
                }
                if let (Some(owner), Some(net)) = (owner, tracer.net_counters(cgroup_id)) {
                    *index.retired_net.entry(owner.pod_id).or_default() += net;
                }
            }
            (None, Some(owner)) => {
                tracer.stop_accounting(cgroup_id);
                index.retired_net.remove(&owner.pod_id);
            }
            (None, None) => tracer.stop_accounting(cgroup_id),
        }
        tracer.forget_net(cgroup_id);
    }

    /// What the pod's sockets sent and received (its containers', past and present, and its
    /// own), when network accounting runs.
    pub fn pod_network(&self, pod_id: &str) -> Option<NetCounters> {
        let tracer = self.tracer.as_ref()?;
        let index = self.index.lock().expect("kernel index poisoned");
        let mut total = index.retired_net.get(pod_id).copied().unwrap_or_default();
        let mut accounted = false;
        for (id, owner) in &index.cgroups {
            if owner.pod_id == pod_id {
                accounted |= owner.container_id.is_empty() && tracer.accounts_network(*id);
                if let Some(c) = tracer.net_counters(*id) {
                    total += c;
                }
            }
        }
        accounted.then_some(total)
    }

    /// After a restart: drops pinned entries of cgroups no record owns.
    pub fn reconcile(&self, owned: &HashSet<u64>) {
        let Some(tracer) = &self.tracer else { return };
        for (id, _) in tracer.tracked() {
            if !owned.contains(&id) {
                let _ = tracer.untrack(id);
            }
        }
        self.reconcile_sched(owned);
    }

    /// Whether the kernel saw the container's init chosen as an OOM victim.
    pub fn init_oom_killed(&self, container_id: &str) -> bool {
        self.tracer.is_some() && self.index.lock().expect("kernel index poisoned").fates.get(container_id).is_some_and(|f| f.oom.is_some())
    }

    pub fn fate(&self, container_id: &str) -> Option<InitFate> {
        self.index.lock().expect("kernel index poisoned").fates.get(container_id).cloned()
    }

    pub fn counters(&self) -> HashMap<String, Counters> {
        self.index.lock().expect("kernel index poisoned").counters.clone()
    }

    /// The kernel's counters of one container; `None` when the programs do not track it.
    pub fn counters_of(&self, container_id: &str) -> Option<Counters> {
        self.index.lock().expect("kernel index poisoned").counters.get(container_id).cloned()
    }

    pub fn oom_by_level(&self) -> HashMap<OomLevel, u64> {
        self.index.lock().expect("kernel index poisoned").oom_by_level.clone()
    }

    /// Each program's run time and count (kernel statistics).
    pub fn program_stats(&self) -> Vec<(String, std::time::Duration, u64)> {
        self.tracer.as_ref().map(|t| t.program_stats()).unwrap_or_default()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ContainerKernelEvent>> {
        self.events.subscribe()
    }

    /// Starts reading the kernel's events (on the current tokio runtime).
    pub fn start(self: &Arc<Self>) {
        let Some(tracer) = self.tracer.clone() else { return };
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = tracer.read_events(|e| me.handle(e)).await {
                tracing::error!(error = %crate::error_chain(&e), "reading kernel events stopped");
            }
        });
    }

    fn handle(&self, event: KernelEvent) {
        let resolved = {
            let mut index = self.index.lock().expect("kernel index poisoned");
            let Some(owner) = index.cgroups.get(&event.cgroup_id).cloned() else { return };
            // An intrusion's pid is the intruder's (or an IRQ number): never the init.
            let intrusion = matches!(event.kind, EventKind::Intrusion { .. });
            let is_init = owner.init_pid != 0 && event.pid == owner.init_pid && !intrusion;
            let oom = match &event.kind {
                EventKind::Oom { memcg_id } => {
                    let level = match memcg_id.and_then(|m| index.memcgs.get(&m)) {
                        Some(o) if *o == owner.container_id => OomLevel::Container,
                        Some(o) if *o == owner.pod_id => OomLevel::Pod,
                        _ if memcg_id.is_some() => OomLevel::Above,
                        _ => OomLevel::Node,
                    };
                    *index.oom_by_level.entry(level).or_default() += 1;
                    Some(OomKill { victim_pid: event.pid, victim_comm: event.comm.clone(), victim_is_init: is_init, level })
                }
                _ => None,
            };
            if !owner.container_id.is_empty() {
                let c = index.counters.entry(owner.container_id.clone()).or_default();
                match event.kind {
                    EventKind::Exec { .. } => c.execs += 1,
                    EventKind::Fork => c.forks += 1,
                    EventKind::Exit { .. } => c.exits += 1,
                    EventKind::Oom { .. } => c.oom_kills += 1,
                    // Counted in the kernel's own map, per CPU and kind.
                    EventKind::Intrusion { .. } => {}
                }
                if is_init {
                    let fate = index.fates.entry(owner.container_id.clone()).or_default();
                    match &event.kind {
                        EventKind::Exit { .. } => fate.exited_at = Some(event.time),
                        EventKind::Oom { .. } => fate.oom = oom.clone(),
                        _ => {}
                    }
                }
            }
            ContainerKernelEvent { pod_id: owner.pod_id, container_id: owner.container_id, event, oom }
        };
        // No subscriber is fine: nothing to deliver.
        let _ = self.events.send(Arc::new(resolved));
    }
}
