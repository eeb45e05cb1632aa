//! NUMA-aware placement on the container lifecycle (`crio_hooks::placement` plans it), decided
//! before the container's spec is built:
//! - `cpu-shared.crio.io/<name>`: the kubelet's exclusive CPUs plus the configured shared pool,
//!   with CRI-O's environment variables naming both;
//! - a high-performance container the kubelet pinned, without memory nodes: memory from the
//!   NUMA nodes of its CPUs;
//! - `numa-cpus.crio.io/<name>: N` on a container the kubelet did not pin: N CPUs the runtime
//!   chooses within one NUMA node (one L3 where they fit), near its devices, never overlapping
//!   another such container's.
//!
//! The placement is in the container's record (verbose status, `GET /containers/:id`); CPUs
//! the runtime chose are given back when the container exits or is removed.

use std::path::Path;

use crio_hooks::CpuSet;
use crio_hooks::annotations::{self, Requests};
use crio_hooks::placement::{self, Placement};

use super::{Tuning, TuningError};
use crate::model::{Container, ContainerSpec, PodSandbox};

/// CRI-O's names for the two halves of a container with shared CPUs.
const ISOLATED_ENV: &str = "OPENSHIFT_ISOLATED_CPUS";
const SHARED_ENV: &str = "OPENSHIFT_SHARED_CPUS";

/// The NUMA node a device is attached to, from sysfs (`None`: no locality reported).
fn device_node(sys: &Path, host_path: &Path) -> Option<u32> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(host_path).ok()?;
    let kind = if meta.file_type().is_char_device() {
        "char"
    } else if meta.file_type().is_block_device() {
        "block"
    } else {
        return None;
    };
    let rdev = meta.rdev();
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let text = std::fs::read_to_string(sys.join(format!("dev/{kind}/{major}:{minor}/device/numa_node"))).ok()?;
    text.trim().parse::<i64>().ok().filter(|n| *n >= 0).map(|n| n as u32)
}

impl Tuning {
    /// The pod's runtime handler: its own, else the default.
    fn handler_name<'a>(&'a self, pod: &'a PodSandbox) -> &'a str {
        self.config.crio.runtime.handler_name(&pod.spec.runtime_handler)
    }

    /// Whether the pod's runtime handler lets it use the annotation `key` (a prefix such as
    /// `numa-cpus.crio.io/`): high-performance handlers allow all, others what they list.
    fn handler_allows(&self, pod: &PodSandbox, key: &str) -> bool {
        let rt = &self.config.crio.runtime;
        let handler = self.handler_name(pod);
        if handler.contains("high-performance") {
            return true;
        }
        let bare = key.trim_end_matches('/');
        rt.runtimes.get(handler).is_some_and(|h| h.allowed_annotations.iter().any(|a| a.trim_end_matches('/') == bare))
    }

    fn high_performance(&self, pod: &PodSandbox) -> bool {
        self.handler_name(pod).contains("high-performance")
    }

    /// Where `spec` runs, if anything beyond the kubelet's request decides it. `hooks` are
    /// the container's performance requests (for the shared pool).
    pub fn place(
        &self,
        pod: &PodSandbox,
        id: &str,
        spec: &ContainerSpec,
        hooks: Option<&Requests>,
    ) -> Result<Option<Placement>, TuningError> {
        let layout = self.topology.as_ref().map(|t| t.layout());
        let mems_of = |cpus: &CpuSet| layout.map(|l| placement::mems_for(l, cpus)).unwrap_or_default();
        let pinned = CpuSet::parse_list(&spec.resources.cpuset_cpus).unwrap_or_default();
        let shared = CpuSet::parse_list(&self.config.crio.runtime.shared_cpuset).unwrap_or_default();
        if hooks.is_some_and(|r| r.shared_cpus) && !shared.is_empty() {
            let cpus = pinned.union(&shared);
            let reason = format!("exclusive CPUs {} and the shared pool {}", pinned.to_list(), shared.to_list());
            return Ok(Some(Placement { mems: mems_of(&cpus), cpus, one_l3: false, chosen: false, shared, reason }));
        }
        let asked = match annotations::numa_cpus(&pod.spec.annotations, &spec.name) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(pod_sandbox_id = %pod.id, error = %e, "annotation ignored");
                None
            }
        };
        let asked = asked.filter(|_| {
            let ok = self.handler_allows(pod, annotations::NUMA_CPUS_PREFIX);
            if !ok {
                tracing::info!(pod_sandbox_id = %pod.id, container = %spec.name, "numa-cpus ignored: the runtime handler does not allow it");
            }
            ok
        });
        if let Some(n) = asked {
            if !pinned.is_empty() {
                tracing::info!(pod_sandbox_id = %pod.id, container = %spec.name, "numa-cpus ignored: the kubelet pinned the container's CPUs");
            } else if let Some(layout) = layout {
                let prefer: Vec<u32> = spec.devices.iter().filter_map(|d| device_node(&self.host.sys, &d.host_path)).collect();
                let kubelet_free = self.kubelet_free(&layout.cpus())?;
                let mut placed = self.placed.lock().expect("placements poisoned");
                let taken = placed.values().fold(CpuSet::new(), |a, b| a.union(b));
                let free = kubelet_free.difference(&taken);
                let p = placement::choose(layout, n, &free, &prefer).map_err(|e| TuningError::Placement { why: e.to_string() })?;
                placed.insert(id.to_string(), p.cpus.clone());
                return Ok(Some(p));
            } else {
                tracing::warn!(pod_sandbox_id = %pod.id, container = %spec.name, "numa-cpus ignored: the CPU topology is unknown");
            }
        }
        if !pinned.is_empty() && spec.resources.cpuset_mems.is_empty() && self.high_performance(pod) && layout.is_some() {
            let mems = mems_of(&pinned);
            let reason = format!("the kubelet's CPUs {}, memory from their NUMA node(s)", pinned.to_list());
            return Ok(Some(Placement { cpus: pinned, mems, one_l3: false, chosen: false, shared: CpuSet::new(), reason }));
        }
        Ok(None)
    }

    /// Of `cpus`, those the kubelet's CPU manager neither reserved nor gave out; an error when
    /// its checkpoint cannot be read (choosing blind could take a Guaranteed pod's CPU).
    fn kubelet_free(&self, cpus: &CpuSet) -> Result<CpuSet, TuningError> {
        let rt = &self.config.crio.runtime;
        let path = &rt.kubelet_cpu_manager_state;
        let err = |why: String| TuningError::KubeletState { path: path.clone(), why };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let state = crio_hooks::kubelet::CpuManagerState::parse(&bytes).map_err(|e| err(crate::error_chain(&e)))?;
        let reserved = CpuSet::parse_list(&rt.kubelet_reserved_cpus).map_err(|e| err(format!("kubelet_reserved_cpus: {e}")))?;
        Ok(state.free(cpus, &reserved))
    }

    /// Gives back the CPUs the runtime chose for a container; nothing if it chose none.
    pub fn release_placement(&self, id: &str) {
        self.placed.lock().expect("placements poisoned").remove(id);
    }

    /// At start: the choices of containers still alive are taken again.
    pub fn reconcile_placements<'a>(&self, live: impl IntoIterator<Item = (&'a str, &'a Placement)>) {
        let mut placed = self.placed.lock().expect("placements poisoned");
        for (id, p) in live.into_iter().filter(|(_, p)| p.chosen) {
            placed.insert(id.to_string(), p.cpus.clone());
        }
    }

    /// The placement a running container keeps when its resources are updated: the runtime's
    /// own choice, or the shared pool beside the kubelet's new CPUs.
    pub fn updated_placement(&self, p: &Placement, cpuset_cpus: &str) -> Placement {
        let cpus = if p.chosen || cpuset_cpus.is_empty() {
            p.cpus.clone()
        } else {
            CpuSet::parse_list(cpuset_cpus).unwrap_or_default().union(&p.shared)
        };
        let mems = self.topology.as_ref().map(|t| placement::mems_for(t.layout(), &cpus)).unwrap_or_else(|| p.mems.clone());
        Placement { cpus, mems, ..p.clone() }
    }

    /// The one CPU exec'd processes run on, when the handler asks (`exec_cpu_affinity =
    /// "first"`): the first shared CPU, else the first of the container's own.
    pub fn exec_affinity(&self, pod: &PodSandbox, ct: &Container) -> Vec<usize> {
        let rt = &self.config.crio.runtime;
        let handler = self.handler_name(pod);
        if rt.runtimes.get(handler).is_none_or(|h| h.exec_cpu_affinity != "first") {
            return Vec::new();
        }
        let own = match &ct.placement {
            Some(p) if !p.shared.is_empty() => p.shared.clone(),
            Some(p) => p.cpus.clone(),
            None => CpuSet::parse_list(&ct.spec.resources.cpuset_cpus).unwrap_or_default(),
        };
        own.iter().next().map(|c| vec![c as usize]).unwrap_or_default()
    }
}

/// The spec the runtime gets: the request with the placement's CPUs, memory nodes and (for
/// shared CPUs) CRI-O's environment variables.
pub fn effective_spec(spec: &ContainerSpec, p: &Placement) -> ContainerSpec {
    let mut eff = spec.clone();
    eff.resources.cpuset_cpus = p.cpus.to_list();
    if eff.resources.cpuset_mems.is_empty() && !p.mems.is_empty() {
        eff.resources.cpuset_mems = p.mems.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    }
    if !p.shared.is_empty() {
        eff.envs.push((ISOLATED_ENV.into(), p.cpus.difference(&p.shared).to_list()));
        eff.envs.push((SHARED_ENV.into(), p.shared.to_list()));
    }
    eff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_gets_the_placement() {
        let spec = ContainerSpec { envs: vec![("A".into(), "b".into())], ..Default::default() };
        let p = Placement {
            cpus: CpuSet::parse_list("2-3,6").unwrap(),
            mems: vec![0, 1],
            one_l3: false,
            chosen: false,
            shared: CpuSet::parse_list("6").unwrap(),
            reason: String::new(),
        };
        let eff = effective_spec(&spec, &p);
        assert_eq!((eff.resources.cpuset_cpus.as_str(), eff.resources.cpuset_mems.as_str()), ("2-3,6", "0,1"));
        assert!(eff.envs.contains(&("OPENSHIFT_ISOLATED_CPUS".into(), "2-3".into())));
        assert!(eff.envs.contains(&("OPENSHIFT_SHARED_CPUS".into(), "6".into())));
    }

    #[test]
    fn devices_without_numa_locality() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(device_node(t.path(), Path::new("/dev/null")), None, "no sysfs entry under a temp root");
        assert_eq!(device_node(Path::new("/sys"), Path::new("/etc/hostname")), None, "not a device");
    }
}
