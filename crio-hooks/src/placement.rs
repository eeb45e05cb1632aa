//! NUMA-aware placement, pure planning over a `Layout`:
//! - `mems_for`: a container pinned to CPUs (by the kubelet, or by us) gets memory from the
//!   NUMA nodes of those CPUs, not from any node (what cpuset.mems would otherwise allow);
//! - `choose`: N CPUs for a container the kubelet did not pin, within one NUMA node and,
//!   where they fit, one L3 cache; whole cores before split ones; nodes local to the
//!   container's devices first; among equals the tightest fit, so big holes stay whole.

use serde::{Deserialize, Serialize};

use crate::CpuSet;
use crate::topology::Layout;

/// Where a container runs, and why: shown in its verbose status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub cpus: CpuSet,
    /// NUMA node ids, for cpuset.mems.
    pub mems: Vec<u32>,
    /// The chosen CPUs share one L3 cache.
    pub one_l3: bool,
    /// Chosen by the runtime (the annotation), else the kubelet's cpuset with mems added.
    pub chosen: bool,
    /// The shared pool's CPUs among `cpus` (`cpu-shared.crio.io`); the rest are exclusive.
    #[serde(default)]
    pub shared: CpuSet,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("{wanted} CPUs asked for but only {free} are free on this node")]
    TooFew { wanted: usize, free: usize },
    #[error("0 CPUs asked for")]
    Zero,
}

/// The memory nodes for a container on `cpus`.
pub fn mems_for(layout: &Layout, cpus: &CpuSet) -> Vec<u32> {
    layout.nodes_of(cpus)
}

/// `n` CPUs out of `free`, as local as the machine allows. `prefer` are NUMA nodes the
/// container's devices are attached to.
pub fn choose(layout: &Layout, n: usize, free: &CpuSet, prefer: &[u32]) -> Result<Placement, PlacementError> {
    if n == 0 {
        return Err(PlacementError::Zero);
    }
    let available = free.intersection(&layout.cpus());
    if available.len() < n {
        return Err(PlacementError::TooFew { wanted: n, free: available.len() });
    }
    // Nodes that can hold all n: device-local first, then the tightest fit.
    let mut fitting: Vec<(bool, usize, u32, CpuSet)> = layout
        .nodes
        .iter()
        .map(|node| (node, node.cpus.intersection(&available)))
        .filter(|(_, f)| f.len() >= n)
        .map(|(node, f)| (!prefer.contains(&node.id), f.len(), node.id, f))
        .collect();
    fitting.sort_by_key(|(far, len, id, _)| (*far, *len, *id));
    if let Some((far, _, id, node_free)) = fitting.into_iter().next() {
        // Within the node, the tightest L3 that holds all n.
        let mut caches: Vec<CpuSet> = layout.l3.iter().map(|c| c.intersection(&node_free)).filter(|c| c.len() >= n).collect();
        caches.sort_by_key(|c| (c.len(), c.iter().next()));
        let (pool, one_l3) = match caches.into_iter().next() {
            Some(c) => (c, true),
            None => (node_free, layout.l3.is_empty()),
        };
        let cpus = by_cores(layout, &pool, n);
        let local = if prefer.is_empty() {
            ""
        } else if far {
            ", not the devices' node"
        } else {
            ", the devices' node"
        };
        let cache = if one_l3 { " and one L3 cache" } else { "" };
        return Ok(Placement {
            mems: vec![id],
            cpus,
            one_l3,
            chosen: true,
            shared: CpuSet::new(),
            reason: format!("{n} CPUs within NUMA node {id}{cache}{local}"),
        });
    }
    // No node holds all n: the fewest nodes, fullest first.
    let mut nodes: Vec<(usize, u32, CpuSet)> =
        layout.nodes.iter().map(|node| (node.cpus.intersection(&available), node.id)).map(|(f, id)| (f.len(), id, f)).collect();
    nodes.sort_by_key(|(len, id, _)| (std::cmp::Reverse(*len), *id));
    let (mut cpus, mut mems) = (CpuSet::new(), Vec::new());
    for (_, id, f) in nodes {
        if cpus.len() >= n {
            break;
        }
        let take = by_cores(layout, &f, (n - cpus.len()).min(f.len()));
        cpus = cpus.union(&take);
        mems.push(id);
    }
    mems.sort_unstable();
    let reason = format!("{n} CPUs: no NUMA node has that many free, spread over nodes {mems:?}");
    Ok(Placement { cpus, mems, one_l3: false, chosen: true, shared: CpuSet::new(), reason })
}

/// `n` CPUs of `pool`: whole free cores first (both threads of one core serve one workload
/// rather than two), then the threads of the emptiest split cores; lowest numbers first.
fn by_cores(layout: &Layout, pool: &CpuSet, n: usize) -> CpuSet {
    let mut cores: Vec<(bool, CpuSet)> = layout
        .cores
        .iter()
        .map(|c| (c.intersection(pool).len() == c.len(), c.intersection(pool)))
        .filter(|(_, free)| !free.is_empty())
        .collect();
    // Whole cores first, then the fullest partial ones; stable by first CPU.
    cores.sort_by_key(|(whole, free)| (!*whole, std::cmp::Reverse(free.len()), free.iter().next()));
    let mut out = CpuSet::new();
    for (_, free) in cores {
        for cpu in free.iter() {
            if out.len() == n {
                return out;
            }
            out.insert(cpu);
        }
    }
    // CPUs no core lists (a layout without cores).
    for cpu in pool.iter() {
        if out.len() == n {
            break;
        }
        out.insert(cpu);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Hwloc, Node, Topology};

    fn cpus(s: &str) -> CpuSet {
        CpuSet::parse_list(s).unwrap()
    }

    /// 2 packages × 2 NUMA nodes × 8 cores × 2 threads; one L3 per node. hwloc numbers PUs
    /// of a core next to each other: node 0 is 0-15, core 0 is 0-1.
    fn big() -> Layout {
        Hwloc::from_synthetic("pack:2 numa:2 l3:1 core:8 pu:2").unwrap().layout().clone()
    }

    #[test]
    fn mems_follow_the_cpus() {
        let l = big();
        assert_eq!(mems_for(&l, &cpus("2-5")), [0]);
        assert_eq!(mems_for(&l, &cpus("14-17")), [0, 1]);
        assert_eq!(mems_for(&l, &cpus("48-63")), [3]);
        assert!(mems_for(&l, &cpus("200")).is_empty());
    }

    #[test]
    fn whole_cores_in_one_node_and_one_l3() {
        let l = big();
        let p = choose(&l, 4, &l.cpus(), &[]).unwrap();
        assert_eq!(p.cpus, cpus("0-3"));
        assert_eq!(p.mems, [0]);
        assert!(p.one_l3 && p.chosen, "{p:?}");
        assert!(p.reason.contains("NUMA node 0"), "{}", p.reason);
    }

    #[test]
    fn the_tightest_node_that_fits_keeps_big_holes_whole() {
        let l = big();
        // Node 0 has 4 free, node 1 has 16: a request for 4 takes node 0's.
        let free = cpus("12-15").union(&l.nodes[1].cpus).union(&l.nodes[2].cpus);
        let p = choose(&l, 4, &free, &[]).unwrap();
        assert_eq!(p.cpus, cpus("12-15"));
        // A request for 6 cannot fit node 0 and goes to the next tightest.
        let p = choose(&l, 6, &free, &[]).unwrap();
        assert_eq!(p.mems, [1]);
        assert_eq!(p.cpus, cpus("16-21"));
    }

    #[test]
    fn whole_cores_before_split_ones() {
        let l = big();
        // Core 0 has one thread free (1), cores 1 and 2 are whole.
        let free = cpus("1,2-5");
        assert_eq!(choose(&l, 4, &free, &[]).unwrap().cpus, cpus("2-5"));
        assert_eq!(choose(&l, 5, &free, &[]).unwrap().cpus, cpus("1-5"));
    }

    #[test]
    fn devices_pull_the_choice_to_their_node() {
        let l = big();
        let p = choose(&l, 2, &l.cpus(), &[2]).unwrap();
        assert_eq!(p.mems, [2]);
        assert_eq!(p.cpus, cpus("32-33"));
        assert!(p.reason.contains("the devices' node"), "{}", p.reason);
        // A full device node: the next best, said so.
        let free = l.cpus().difference(&l.nodes[2].cpus);
        let p = choose(&l, 2, &free, &[2]).unwrap();
        assert_ne!(p.mems, [2]);
        assert!(p.reason.contains("not the devices' node"), "{}", p.reason);
    }

    #[test]
    fn too_big_for_any_node_spreads_over_the_fewest() {
        let l = big();
        let p = choose(&l, 20, &l.cpus(), &[]).unwrap();
        assert_eq!(p.cpus.len(), 20);
        assert_eq!(p.mems, [0, 1]);
        assert!(!p.one_l3);
        assert_eq!(choose(&l, 65, &l.cpus(), &[]), Err(PlacementError::TooFew { wanted: 65, free: 64 }));
        assert_eq!(choose(&l, 0, &l.cpus(), &[]), Err(PlacementError::Zero));
    }

    #[test]
    fn several_l3_caches_in_one_node() {
        // 1 node, 2 L3 caches of 4 cores each, no SMT.
        let l = Hwloc::from_synthetic("numa:1 l3:2 core:4 pu:1").unwrap().layout().clone();
        let free = cpus("1-7");
        let p = choose(&l, 3, &free, &[]).unwrap();
        assert_eq!(p.cpus, cpus("1-3"), "the tighter cache (3 free) over the one with 4");
        assert!(p.one_l3);
        let p = choose(&l, 5, &free, &[]).unwrap();
        assert!(!p.one_l3 && p.mems == [0], "{p:?}");
    }

    #[test]
    fn more_than_64_cpus() {
        let l = Hwloc::from_synthetic("pack:2 numa:2 core:24 pu:2").unwrap().layout().clone();
        assert_eq!(l.cpus().len(), 192);
        let free = l.cpus().difference(&cpus("0-150"));
        let p = choose(&l, 8, &free, &[]).unwrap();
        assert_eq!(p.mems, [3]);
        assert!(p.cpus.iter().all(|c| c > 150));
        assert_eq!(mems_for(&l, &cpus("95-96")), [1, 2]);
    }

    #[test]
    fn hand_made_layouts_without_caches_or_cores() {
        let l = Layout { nodes: vec![Node { id: 0, cpus: cpus("0-3") }, Node { id: 1, cpus: cpus("4-7") }], l3: vec![], cores: vec![] };
        let p = choose(&l, 2, &cpus("3-7"), &[]).unwrap();
        assert_eq!((p.cpus, p.mems), (cpus("4-5"), vec![1]));
    }

    proptest::proptest! {
        #[test]
        fn choices_are_exact_free_and_single_node_when_one_fits(mask in proptest::prelude::any::<u64>(), n in 1usize..40) {
            let l = big();
            let free = (0..64u32).filter(|c| mask & (1 << c) != 0).fold(CpuSet::new(), |mut s, c| { s.insert(c); s });
            match choose(&l, n, &free, &[]) {
                Ok(p) => {
                    proptest::prop_assert_eq!(p.cpus.len(), n);
                    proptest::prop_assert!(p.cpus.difference(&free).is_empty());
                    proptest::prop_assert_eq!(p.mems.clone(), mems_for(&l, &p.cpus));
                    let fits = l.nodes.iter().any(|node| node.cpus.intersection(&free).len() >= n);
                    proptest::prop_assert_eq!(fits, p.mems.len() == 1);
                }
                Err(e) => proptest::prop_assert_eq!(e, PlacementError::TooFew { wanted: n, free: free.len() }),
            }
        }
    }
}
