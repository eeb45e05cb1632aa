//! The machine's CPU layout as placement needs it: NUMA nodes, L3 caches and cores, each as a
//! CPU set. It comes through the `Topology` trait; hwloc is behind it on a real node
//! (`Hwloc::from_system`), and tests load hwloc synthetic descriptions (`pack:2 numa:2 l3:1
//! core:8 pu:2`) or XML exports of other machines, so multi-NUMA planning is tested on a
//! one-node VM. The layout is read once into plain data: planning never calls hwloc.

use hwlocality::object::types::ObjectType;
use serde::{Deserialize, Serialize};

use crate::CpuSet;

/// One NUMA node: its OS number (what `cpuset.mems` takes) and its CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: u32,
    pub cpus: CpuSet,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub nodes: Vec<Node>,
    /// L3 caches (last-level on most machines); empty where none is reported.
    pub l3: Vec<CpuSet>,
    /// Cores, as the set of their hardware threads (SMT siblings).
    pub cores: Vec<CpuSet>,
}

impl Layout {
    pub fn cpus(&self) -> CpuSet {
        self.cores.iter().chain(self.nodes.iter().map(|n| &n.cpus)).fold(CpuSet::new(), |a, b| a.union(b))
    }

    /// The NUMA nodes holding any of `cpus`: what `cpuset.mems` should be for them.
    pub fn nodes_of(&self, cpus: &CpuSet) -> Vec<u32> {
        self.nodes.iter().filter(|n| !n.cpus.intersection(cpus).is_empty()).map(|n| n.id).collect()
    }
}

/// Where a layout comes from.
pub trait Topology: Send + Sync {
    fn layout(&self) -> &Layout;
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("hwloc could not read the {what} topology: {why}")]
    Load { what: &'static str, why: String },
}

/// A layout read by hwloc.
#[derive(Debug, Clone)]
pub struct Hwloc {
    layout: Layout,
}

impl Topology for Hwloc {
    fn layout(&self) -> &Layout {
        &self.layout
    }
}

fn to_cpuset(set: Option<impl std::ops::Deref<Target = hwlocality::cpu::cpuset::CpuSet>>) -> CpuSet {
    let mut out = CpuSet::new();
    if let Some(s) = set {
        for i in s.iter_set() {
            out.insert(usize::from(i) as u32);
        }
    }
    out
}

impl Hwloc {
    /// This machine (blocking: hwloc reads sysfs).
    pub fn from_system() -> Result<Hwloc, TopologyError> {
        let t = hwlocality::Topology::new().map_err(|e| TopologyError::Load { what: "system", why: e.to_string() })?;
        Ok(Hwloc { layout: layout_of(&t) })
    }

    /// An hwloc synthetic description, e.g. `pack:2 numa:2 l3:1 core:8 pu:2`.
    pub fn from_synthetic(description: &str) -> Result<Hwloc, TopologyError> {
        let err = |why: String| TopologyError::Load { what: "synthetic", why };
        let t = hwlocality::Topology::builder()
            .from_synthetic(description)
            .map_err(|e| err(e.to_string()))?
            .build()
            .map_err(|e| err(e.to_string()))?;
        Ok(Hwloc { layout: layout_of(&t) })
    }

    /// An `lstopo --of xml` export of some machine.
    pub fn from_xml(xml: &str) -> Result<Hwloc, TopologyError> {
        let err = |why: String| TopologyError::Load { what: "XML", why };
        let t = hwlocality::Topology::builder().from_xml(xml).map_err(|e| err(e.to_string()))?.build().map_err(|e| err(e.to_string()))?;
        Ok(Hwloc { layout: layout_of(&t) })
    }
}

fn layout_of(t: &hwlocality::Topology) -> Layout {
    let sets = |ty: ObjectType| t.objects_with_type(ty).map(|o| to_cpuset(o.cpuset())).filter(|c| !c.is_empty()).collect::<Vec<_>>();
    let mut nodes: Vec<Node> = t
        .objects_with_type(ObjectType::NUMANode)
        .map(|o| Node { id: o.os_index().unwrap_or(0) as u32, cpus: to_cpuset(o.cpuset()) })
        .collect();
    nodes.sort_by_key(|n| n.id);
    let mut cores = sets(ObjectType::Core);
    if cores.is_empty() {
        // No core level reported: every PU is its own core.
        cores = t.objects_with_type(ObjectType::PU).map(|o| to_cpuset(o.cpuset())).collect();
    }
    Layout { nodes, l3: sets(ObjectType::L3Cache), cores }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_two_package_four_node_machine() {
        let t = Hwloc::from_synthetic("pack:2 numa:2 l3:1 core:8 pu:2").unwrap();
        let l = t.layout();
        assert_eq!(l.nodes.len(), 4);
        assert_eq!(l.l3.len(), 4);
        assert_eq!(l.cores.len(), 32);
        assert_eq!(l.cpus().len(), 64);
        assert!(l.cores.iter().all(|c| c.len() == 2), "SMT pairs");
        for (i, n) in l.nodes.iter().enumerate() {
            assert_eq!(n.id, i as u32);
            assert_eq!(n.cpus.len(), 16);
        }
        let first = &l.nodes[0].cpus;
        assert_eq!(l.nodes_of(first), [0]);
        assert_eq!(l.nodes_of(&CpuSet::parse_list("0,63").unwrap()), [0, 3]);
    }

    #[test]
    fn this_machine_loads() {
        let t = Hwloc::from_system().unwrap();
        assert!(!t.layout().nodes.is_empty(), "{:?}", t.layout());
        assert!(!t.layout().cpus().is_empty());
    }
}
