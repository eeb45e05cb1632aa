//! Tuning the node for the containers that ask for it: the high-performance hooks (CPU load
//! balancing, CFS quota, C-states, governors), IRQ steering, and NUMA-aware CPU placement.
//! `crio_hooks` plans each of them; this service decides who gets what under CRI-O's rules,
//! applies it, and keeps what is node-wide (IRQs taken, CPUs chosen) consistent between
//! containers.

mod hooks;
mod irq;
mod journal;
mod placement;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crio_hooks::CpuSet;

pub use irq::IrqNode;
pub use journal::{CRASH_AT_ENV, CrashPoint};
pub use placement::effective_spec;

use crate::cgroups::Cgroups;
use crate::config::Config;
use crate::node::HostPaths;

#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    #[error("high-performance hooks: {why}")]
    Hooks { why: String },
    #[error("invalid numa-cpus.crio.io: {why}")]
    Placement { why: String },
    #[error("numa-cpus.crio.io needs the kubelet's CPU manager state {path}: {why}")]
    KubeletState { path: std::path::PathBuf, why: String },
}

fn hook_err(e: impl std::fmt::Display) -> TuningError {
    TuningError::Hooks { why: e.to_string() }
}

pub struct Tuning {
    config: Arc<Config>,
    cgroups: Cgroups,
    host: HostPaths,
    /// The machine's CPU layout (hwloc), for NUMA placement; `None` if it could not be read.
    topology: Option<Arc<dyn crio_hooks::topology::Topology>>,
    /// IRQ steering for the containers that asked for it.
    irq_node: Mutex<IrqNode>,
    /// CPUs the runtime chose for live containers (`numa-cpus.crio.io`), by container id:
    /// choices are made under this lock, so two never overlap.
    placed: Mutex<BTreeMap<String, CpuSet>>,
    /// Where to die on purpose, for crash-consistency tests (nowhere on real nodes).
    crash: CrashPoint,
}

impl Tuning {
    pub fn new(config: Arc<Config>, cgroups: Cgroups, host: HostPaths, topology: Option<Arc<dyn crio_hooks::topology::Topology>>) -> Self {
        let irq_node = Mutex::new(IrqNode::load(&config.crio.state_dir.join("irq-steering.json")));
        Self { config, cgroups, host, topology, irq_node, placed: Mutex::default(), crash: CrashPoint::from_env() }
    }

    /// Whether the container took CPUs off IRQs (most never do).
    pub fn steers_irqs(&self, id: &str) -> bool {
        self.irq_node.lock().expect("irq node poisoned").taken.contains_key(id)
    }
}
