//! Scheduling as the kernel programs see it (see bpf/crio.bpf.c): per container, how long its
//! tasks waited for a CPU (a log2 histogram per CPU, summed here), what else ran on the CPUs
//! its hooks isolated, and how often CFS throttled it. The daemon says which CPUs are whose
//! (`isolate`) and which CPU-controller cgroups to count throttling for (`count_throttling`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use aya::maps::{Array, HashMap, MapData, PerCpuHashMap};
use crio_ebpf_common::{
    INTRUSION_IRQ, INTRUSION_KTHREAD, INTRUSION_SOFTIRQ, INTRUSION_TASK, Intruder, IntruderKey, IntrusionKey, IsolatedCpu, SchedDelay,
    c_str,
};

use crate::{EbpfError, Tracer, removed};

/// The scheduling programs: each, where it attaches, and what it gives.
pub const SCHED_PROGRAMS: &[(&str, &str, &str)] = &[
    ("crio_sched_switch", "sched_switch", "scheduling delay and task intrusions"),
    ("crio_irq_entry", "irq_handler_entry", "IRQ intrusions"),
    ("crio_softirq_entry", "softirq_entry", "softirq intrusions"),
];

/// CFS throttling has no tracepoint: an fexit program on the kernel function that throttles.
pub const THROTTLE_PROGRAM: (&str, &str) = ("crio_cfs_throttle", "throttle_cfs_rq");

/// What ran on an isolated CPU that was not the container's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Intrusion {
    Task,
    Kthread,
    Irq,
    Softirq,
}

impl Intrusion {
    pub const ALL: [Intrusion; 4] = [Intrusion::Task, Intrusion::Kthread, Intrusion::Irq, Intrusion::Softirq];

    pub(crate) fn from_raw(kind: u32) -> Option<Intrusion> {
        match kind {
            INTRUSION_TASK => Some(Intrusion::Task),
            INTRUSION_KTHREAD => Some(Intrusion::Kthread),
            INTRUSION_IRQ => Some(Intrusion::Irq),
            INTRUSION_SOFTIRQ => Some(Intrusion::Softirq),
            _ => None,
        }
    }

    /// The label value of the metrics (`kind="task|kthread|irq|softirq"`).
    pub fn name(self) -> &'static str {
        match self {
            Intrusion::Task => "task",
            Intrusion::Kthread => "kthread",
            Intrusion::Irq => "irq",
            Intrusion::Softirq => "softirq",
        }
    }
}

/// The kernel's names of the softirq vectors (include/linux/interrupt.h), as /proc/softirqs.
pub fn softirq_name(vector: u32) -> &'static str {
    const NAMES: [&str; 10] = ["HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU"];
    NAMES.get(vector as usize).copied().unwrap_or("SOFTIRQ")
}

/// One intruder on a container's CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenIntruder {
    pub kind: Intrusion,
    /// Thread id (tasks, kernel threads), IRQ number or softirq vector.
    pub id: u32,
    pub name: String,
    pub count: u64,
    pub last_cpu: u32,
}

/// The `isolated_cpus` array and, beside it, which CPU is whose: read here instead of asking
/// the kernel for each of its 1024 slots at every status, scrape and container exit.
struct Isolation {
    map: Array<MapData, IsolatedCpu>,
    owners: BTreeMap<u32, u64>,
    /// The cgroups whose intrusions the hash maps may hold: every one isolated since load and
    /// whatever the pinned maps held then. Others are never looked up there: walking a hash
    /// map visits all its buckets, even empty (about 0.2 ms for `intrusions`), and most
    /// containers are never isolated.
    counted: HashSet<u64>,
}

impl Isolation {
    /// The array as pinned (a restart finds the previous daemon's entries): one scan, at load.
    /// `counted` are the cgroups the pinned intrusion maps hold.
    fn load(map: Array<MapData, IsolatedCpu>, counted: HashSet<u64>) -> Isolation {
        let owners: BTreeMap<u32, u64> =
            (0..map.len()).filter_map(|cpu| Some((cpu, map.get(&cpu, 0).ok()?.cgroup_id))).filter(|(_, id)| *id != 0).collect();
        let counted = counted.into_iter().chain(owners.values().copied()).collect();
        Isolation { map, owners, counted }
    }

    fn set(&mut self, cpu: u32, cgroup_id: u64) -> Result<(), EbpfError> {
        self.map
            .set(cpu, IsolatedCpu { cgroup_id, last_event_ns: 0 }, 0)
            .map_err(|source| EbpfError::Map { name: "isolated_cpus", source })?;
        match cgroup_id {
            0 => self.owners.remove(&cpu),
            id => {
                self.counted.insert(id);
                self.owners.insert(cpu, id)
            }
        };
        Ok(())
    }

    fn cpus_of(&self, cgroup_id: u64) -> Vec<u32> {
        self.owners.iter().filter(|(_, id)| **id == cgroup_id).map(|(cpu, _)| *cpu).collect()
    }
}

/// Removes every key of `map` that `stale` picks; one gone meanwhile is removed.
fn remove_where<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    stale: impl Fn(&K) -> bool,
) -> Result<(), EbpfError> {
    let keys: Vec<K> = map.keys().filter_map(Result::ok).filter(|k| stale(k)).collect();
    for k in keys {
        removed(map.remove(&k), name)?;
    }
    Ok(())
}

/// The maps of the scheduling programs.
pub(crate) struct SchedMaps {
    delay: Mutex<PerCpuHashMap<MapData, u64, SchedDelay>>,
    isolated: Mutex<Isolation>,
    intrusions: Mutex<HashMap<MapData, IntrusionKey, u64>>,
    intruders: Mutex<HashMap<MapData, IntruderKey, Intruder>>,
    throttles: Mutex<HashMap<MapData, u64, u64>>,
    /// Whether the throttle program runs (the kernel may refuse fexit programs).
    throttle_events: bool,
}

impl SchedMaps {
    /// Whether the intrusion maps may hold entries of `cgroup_id`.
    fn counted(&self, cgroup_id: u64) -> bool {
        self.isolated.lock().expect("isolated cpus poisoned").counted.contains(&cgroup_id)
    }

    pub(crate) fn take(ebpf: &mut aya::Ebpf, throttle_events: bool) -> Result<SchedMaps, EbpfError> {
        fn map(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<aya::maps::Map, EbpfError> {
            ebpf.take_map(name).ok_or(EbpfError::MissingMap { name })
        }
        let err = |name: &'static str| move |source| EbpfError::Map { name, source };
        let intrusions: HashMap<MapData, IntrusionKey, u64> = HashMap::try_from(map(ebpf, "intrusions")?).map_err(err("intrusions"))?;
        let intruders: HashMap<MapData, IntruderKey, Intruder> = HashMap::try_from(map(ebpf, "intruders")?).map_err(err("intruders"))?;
        let counted = intrusions
            .keys()
            .filter_map(Result::ok)
            .map(|k| k.cgroup_id)
            .chain(intruders.keys().filter_map(Result::ok).map(|k| k.cgroup_id))
            .collect();
        let isolated = Isolation::load(Array::try_from(map(ebpf, "isolated_cpus")?).map_err(err("isolated_cpus"))?, counted);
        Ok(SchedMaps {
            delay: Mutex::new(PerCpuHashMap::try_from(map(ebpf, "sched_delay")?).map_err(err("sched_delay"))?),
            isolated: Mutex::new(isolated),
            intrusions: Mutex::new(intrusions),
            intruders: Mutex::new(intruders),
            throttles: Mutex::new(HashMap::try_from(map(ebpf, "throttles")?).map_err(err("throttles"))?),
            throttle_events,
        })
    }
}

impl Tracer {
    /// Whether the scheduling programs run (configured on and attached).
    pub fn scheduling(&self) -> bool {
        self.sched.is_some()
    }

    /// How long the tasks of the cgroup `cgroup_id` waited for a CPU, summed over CPUs;
    /// `None` when scheduling is not traced, zero when they never waited.
    pub fn sched_delay(&self, cgroup_id: u64) -> Option<SchedDelay> {
        let sched = self.sched.as_ref()?;
        let mut sum = SchedDelay::default();
        if let Ok(per_cpu) = sched.delay.lock().expect("sched delay poisoned").get(&cgroup_id, 0) {
            for d in per_cpu.iter() {
                sum += *d;
            }
        }
        Some(sum)
    }

    /// Counts, from now, what runs on `cpus` that is not the cgroup `cgroup_id`'s. A CPU
    /// another container had is taken over (the hooks never give one CPU to two).
    pub fn isolate(&self, cgroup_id: u64, cpus: &[u32]) -> Result<(), EbpfError> {
        let Some(sched) = &self.sched else { return Ok(()) };
        let mut isolation = sched.isolated.lock().expect("isolated cpus poisoned");
        for &cpu in cpus {
            isolation.set(cpu, cgroup_id)?;
        }
        Ok(())
    }

    /// Stops counting intrusions on the CPUs that are `cgroup_id`'s (others' are left).
    pub fn end_isolation(&self, cgroup_id: u64) -> Result<(), EbpfError> {
        let Some(sched) = &self.sched else { return Ok(()) };
        let mut isolation = sched.isolated.lock().expect("isolated cpus poisoned");
        for cpu in isolation.cpus_of(cgroup_id) {
            isolation.set(cpu, 0)?;
        }
        Ok(())
    }

    /// The CPUs now isolated for `cgroup_id`.
    pub fn isolated_cpus(&self, cgroup_id: u64) -> Vec<u32> {
        let Some(sched) = &self.sched else { return Vec::new() };
        sched.isolated.lock().expect("isolated cpus poisoned").cpus_of(cgroup_id)
    }

    /// Intrusions on the CPUs of `cgroup_id`, by CPU and kind.
    pub fn intrusions(&self, cgroup_id: u64) -> Vec<(u32, Intrusion, u64)> {
        let Some(sched) = self.sched.as_ref().filter(|s| s.counted(cgroup_id)) else { return Vec::new() };
        let map = sched.intrusions.lock().expect("intrusions poisoned");
        let mut out: Vec<_> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.cgroup_id == cgroup_id)
            .filter_map(|(k, n)| Some((k.cpu, Intrusion::from_raw(k.kind)?, n)))
            .collect();
        out.sort();
        out
    }

    /// Who intruded on the CPUs of `cgroup_id`, most often first, at most `limit`.
    pub fn intruders(&self, cgroup_id: u64, limit: usize) -> Vec<SeenIntruder> {
        let Some(sched) = self.sched.as_ref().filter(|s| s.counted(cgroup_id)) else { return Vec::new() };
        let map = sched.intruders.lock().expect("intruders poisoned");
        let mut out: Vec<SeenIntruder> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.cgroup_id == cgroup_id)
            .filter_map(|(k, v)| {
                let kind = Intrusion::from_raw(k.kind)?;
                let name = match kind {
                    Intrusion::Softirq => softirq_name(k.id).to_string(),
                    _ => String::from_utf8_lossy(c_str(&v.comm)).into_owned(),
                };
                Some(SeenIntruder { kind, id: k.id, name, count: v.count, last_cpu: v.last_cpu })
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.kind.cmp(&b.kind)).then(a.id.cmp(&b.id)));
        out.truncate(limit);
        out
    }

    /// Starts counting CFS throttling of the CPU-controller cgroup `cpu_cgroup_id` (on v2 the
    /// container's own cgroup id; on v1 and hybrid hosts its cpu hierarchy's).
    pub fn count_throttling(&self, cpu_cgroup_id: u64) -> Result<(), EbpfError> {
        let Some(sched) = self.sched.as_ref().filter(|s| s.throttle_events) else { return Ok(()) };
        let mut map = sched.throttles.lock().expect("throttles poisoned");
        if map.get(&cpu_cgroup_id, 0).is_ok() {
            return Ok(());
        }
        map.insert(cpu_cgroup_id, 0, 0).map_err(|source| EbpfError::Map { name: "throttles", source })
    }

    /// Times CFS throttled a run queue of `cpu_cgroup_id` (one per CPU it ran out on).
    /// `None` when the throttle program does not run.
    pub fn throttled(&self, cpu_cgroup_id: u64) -> Option<u64> {
        let sched = self.sched.as_ref().filter(|s| s.throttle_events)?;
        sched.throttles.lock().expect("throttles poisoned").get(&cpu_cgroup_id, 0).ok()
    }

    /// Forgets what was counted for a container's cgroups (it is gone).
    pub fn forget_sched(&self, cgroup_id: u64, cpu_cgroup_id: u64) -> Result<(), EbpfError> {
        let Some(sched) = &self.sched else { return Ok(()) };
        self.end_isolation(cgroup_id)?;
        removed(sched.delay.lock().expect("sched delay poisoned").remove(&cgroup_id), "sched_delay")?;
        if cpu_cgroup_id != 0 {
            removed(sched.throttles.lock().expect("throttles poisoned").remove(&cpu_cgroup_id), "throttles")?;
        }
        if !sched.counted(cgroup_id) {
            return Ok(());
        }
        remove_where(&mut sched.intrusions.lock().expect("intrusions poisoned"), "intrusions", |k| k.cgroup_id == cgroup_id)?;
        remove_where(&mut sched.intruders.lock().expect("intruders poisoned"), "intruders", |k| k.cgroup_id == cgroup_id)?;
        sched.isolated.lock().expect("isolated cpus poisoned").counted.remove(&cgroup_id);
        Ok(())
    }

    /// After a restart: drops what the pinned maps hold for cgroups not in `owned` (and
    /// throttle counts of CPU cgroups not in `cpu_owned`).
    pub fn reconcile_sched(&self, owned: &HashSet<u64>, cpu_owned: &HashSet<u64>) -> Result<(), EbpfError> {
        let Some(sched) = &self.sched else { return Ok(()) };
        let mut stale: HashSet<u64> = HashSet::new();
        stale.extend(sched.delay.lock().expect("sched delay poisoned").keys().filter_map(Result::ok));
        stale.extend(sched.intrusions.lock().expect("intrusions poisoned").keys().filter_map(Result::ok).map(|k| k.cgroup_id));
        stale.extend(sched.intruders.lock().expect("intruders poisoned").keys().filter_map(Result::ok).map(|k| k.cgroup_id));
        stale.extend(sched.isolated.lock().expect("isolated cpus poisoned").owners.values().copied());
        for id in stale.into_iter().filter(|id| !owned.contains(id)) {
            self.forget_sched(id, 0)?;
        }
        remove_where(&mut sched.throttles.lock().expect("throttles poisoned"), "throttles", |id| !cpu_owned.contains(id))
    }
}
