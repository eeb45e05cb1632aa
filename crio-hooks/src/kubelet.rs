//! The kubelet's CPU manager checkpoint (`/var/lib/kubelet/cpu_manager_state`): which CPUs it
//! gave containers exclusively and which form its shared pool. CPUs the runtime chooses on
//! its own must come from what the kubelet has not handed out.

use std::collections::BTreeMap;

use crate::{CpuSet, CpuSetError};

#[derive(Debug, thiserror::Error)]
pub enum KubeletStateError {
    #[error("not a CPU manager checkpoint")]
    Json(#[source] serde_json::Error),
    #[error("CPU list of {what} is malformed")]
    Cpus {
        what: String,
        #[source]
        source: CpuSetError,
    },
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Checkpoint {
    policy_name: String,
    #[serde(default)]
    default_cpu_set: String,
    /// Pod UID -> container name -> CPU list.
    #[serde(default)]
    entries: BTreeMap<String, BTreeMap<String, String>>,
}

/// What the kubelet's CPU manager holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuManagerState {
    /// `static` or `none`.
    pub policy: String,
    /// The shared pool (`static` only; empty under `none`).
    pub shared: CpuSet,
    /// CPUs assigned to containers exclusively.
    pub exclusive: CpuSet,
}

impl CpuManagerState {
    pub fn parse(bytes: &[u8]) -> Result<Self, KubeletStateError> {
        let c: Checkpoint = serde_json::from_slice(bytes).map_err(KubeletStateError::Json)?;
        let list = |what: String, text: &str| CpuSet::parse_list(text).map_err(|source| KubeletStateError::Cpus { what, source });
        let shared = list("defaultCpuSet".into(), &c.default_cpu_set)?;
        let mut exclusive = CpuSet::new();
        for (pod, containers) in &c.entries {
            for (name, cpus) in containers {
                exclusive = exclusive.union(&list(format!("entries[{pod}][{name}]"), cpus)?);
            }
        }
        Ok(Self { policy: c.policy_name, shared, exclusive })
    }

    /// Of `cpus`, those the kubelet has neither reserved (`reserved`) nor given out.
    pub fn free(&self, cpus: &CpuSet, reserved: &CpuSet) -> CpuSet {
        let mut free = cpus.difference(&self.exclusive).difference(reserved);
        if self.policy == "static" && !self.shared.is_empty() {
            free = free.intersection(&self.shared);
        }
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_none_checkpoints() {
        let text = br#"{"policyName":"static","defaultCpuSet":"0,3-7","entries":{"uid-1":{"app":"1-2"}},"checksum":1}"#;
        let s = CpuManagerState::parse(text).unwrap();
        assert_eq!(s.exclusive.to_list(), "1-2");
        let all = CpuSet::parse_list("0-7").unwrap();
        assert_eq!(s.free(&all, &CpuSet::parse_list("0").unwrap()).to_list(), "3-7");
        let none = CpuManagerState::parse(br#"{"policyName":"none","defaultCpuSet":"","checksum":1}"#).unwrap();
        assert_eq!(none.free(&all, &CpuSet::new()).to_list(), "0-7");
        assert!(CpuManagerState::parse(b"{").is_err());
        assert!(CpuManagerState::parse(br#"{"policyName":"static","defaultCpuSet":"x"}"#).is_err());
    }
}
