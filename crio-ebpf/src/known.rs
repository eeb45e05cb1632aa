//! The tracked cgroups: the pinned `containers` map (cgroup id -> pod and container ids) and,
//! beside it, the `known_slots` filter the programs read first (how many tracked ids have
//! each value of their low bits), so that most of the node's tasks are found not to be a
//! container's with one array load instead of a hash lookup. The filter is not pinned: it
//! is counted again from `containers` at every load, so a crash between the two updates
//! cannot leave it wrong. A slot counted too high costs only a hash lookup; one counted too
//! low would hide a container, hence the order: count before inserting, uncount after removing.

use aya::maps::{Array, HashMap, MapData, MapError};
use crio_ebpf_common::{CgroupInfo, KNOWN_SLOTS};

use crate::EbpfError;

pub(crate) struct Known {
    containers: HashMap<MapData, u64, CgroupInfo>,
    slots: Array<MapData, u32>,
}

fn slot(cgroup_id: u64) -> u32 {
    (cgroup_id & u64::from(KNOWN_SLOTS - 1)) as u32
}

fn containers_err(source: MapError) -> EbpfError {
    EbpfError::Map { name: "containers", source }
}

fn slots_err(source: MapError) -> EbpfError {
    EbpfError::Map { name: "known_slots", source }
}

impl Known {
    /// Takes both maps and counts what `containers` already holds (after a restart, the
    /// pinned entries of the containers still running).
    pub(crate) fn load(containers: HashMap<MapData, u64, CgroupInfo>, slots: Array<MapData, u32>) -> Result<Known, EbpfError> {
        let mut counts = std::collections::HashMap::<u32, u32>::new();
        for id in containers.keys().filter_map(Result::ok) {
            *counts.entry(slot(id)).or_default() += 1;
        }
        let mut known = Known { containers, slots };
        for (index, count) in counts {
            known.slots.set(index, count, 0).map_err(slots_err)?;
        }
        Ok(known)
    }

    fn add(&mut self, index: u32, delta: i64) -> Result<(), EbpfError> {
        let now = self.slots.get(&index, 0).map_err(slots_err)?;
        let next = u32::try_from((i64::from(now) + delta).max(0)).unwrap_or(u32::MAX);
        self.slots.set(index, next, 0).map_err(slots_err)
    }

    pub(crate) fn insert(&mut self, cgroup_id: u64, info: CgroupInfo) -> Result<(), EbpfError> {
        let counted = match self.containers.get(&cgroup_id, 0) {
            Ok(_) => true,
            Err(MapError::KeyNotFound) => false,
            Err(source) => return Err(containers_err(source)),
        };
        if !counted {
            self.add(slot(cgroup_id), 1)?;
        }
        if let Err(source) = self.containers.insert(cgroup_id, info, 0) {
            if !counted {
                // Not inserted: the count goes back (too high would only cost lookups).
                let _ = self.add(slot(cgroup_id), -1);
            }
            return Err(containers_err(source));
        }
        Ok(())
    }

    /// Removes `cgroup_id`; one not tracked is untracked.
    pub(crate) fn remove(&mut self, cgroup_id: u64) -> Result<(), EbpfError> {
        match crate::removal(self.containers.remove(&cgroup_id), "containers")? {
            true => self.add(slot(cgroup_id), -1),
            false => Ok(()),
        }
    }

    pub(crate) fn iter(&self) -> Vec<(u64, CgroupInfo)> {
        self.containers.iter().filter_map(Result::ok).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_the_low_bits_of_the_id() {
        assert_eq!(slot(5), 5);
        assert_eq!(slot(u64::from(KNOWN_SLOTS) + 7), 7);
        assert_eq!(slot((1 << 32) | 0x1_2345), 0x2345);
    }
}
