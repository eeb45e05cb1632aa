//! ContainerStats and the PSI of a container, from its cgroups.

use std::path::PathBuf;

use super::{ContainerError, ContainerService};
use crate::cgroups::Usage;
use crate::cgroups::pressure::Pressure;
use crate::model::Container;

/// One sample of a container's or a pod's cgroup.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// `None` once the cgroup is gone.
    pub usage: Option<Usage>,
    /// CPU rate since the previous sample of the same object; `None` on the first.
    pub nano_cores: Option<u64>,
    /// `None` where the kernel keeps no PSI for the cgroup (no v2 hierarchy, PSI off).
    pub pressure: Option<Pressure>,
    /// OOM kills in the cgroup: the kernel programs' count, else the cgroup's own.
    pub oom_kills: u64,
}

/// What a writable layer holds: bytes in its files and its inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerUse {
    pub bytes: u64,
    pub inodes: u64,
}

/// A container with one sample of its cgroup and its writable layer.
#[derive(Debug, Clone)]
pub struct ContainerSample {
    pub container: Container,
    pub sample: Sample,
    pub layer: LayerUse,
}

impl ContainerService {
    /// A container and one sample of its resource use.
    pub async fn container_stats(&self, id: &str) -> Result<ContainerSample, ContainerError> {
        let ct = self.container(id).await?;
        Ok(self.samples_of(vec![ct]).await?.pop().expect("one sample per container"))
    }

    /// The containers of `ids` that still exist, each with one sample, in the order asked.
    pub async fn containers_stats(&self, ids: &[String]) -> Result<Vec<ContainerSample>, ContainerError> {
        let mut cts = Vec::with_capacity(ids.len());
        for id in ids {
            // A container removed meanwhile is simply left out.
            if let Ok(ct) = self.container(id).await {
                cts.push(ct);
            }
        }
        self.samples_of(cts).await
    }

    /// One sample of each container, every file read in one blocking trip: a list of 100
    /// took two thread hops per container before.
    async fn samples_of(&self, cts: Vec<Container>) -> Result<Vec<ContainerSample>, ContainerError> {
        // The kernel programs' OOM counts, where they keep them, spare the cgroup's file.
        let reads: Vec<(String, PathBuf, Option<u64>)> = cts
            .iter()
            .map(|c| {
                let ooms = self.kernel.counters_of(&c.id).map(|k| k.oom_kills);
                (c.cgroup_path.clone(), self.images.store().container_upper(&c.id), ooms)
            })
            .collect();
        let node = self.node.clone();
        let read = tokio::task::spawn_blocking(move || {
            reads
                .into_iter()
                .map(|(path, upper, ooms)| {
                    let usage = node.cgroups().usage(&path);
                    let pressure = node.pressure(&path);
                    let oom_kills = ooms.unwrap_or_else(|| node.cgroups().oom_kills(&path));
                    let (bytes, inodes) = crate::storage::unpack::tree_usage(&upper);
                    (usage, pressure, oom_kills, LayerUse { bytes, inodes })
                })
                .collect::<Vec<_>>()
        })
        .await?;
        Ok(cts
            .into_iter()
            .zip(read)
            .map(|(container, (usage, pressure, oom_kills, layer))| {
                let nano_cores = usage.and_then(|u| self.cpu_rates.sample(&container.id, u.cpu_nanos));
                ContainerSample { container, sample: Sample { usage, nano_cores, pressure, oom_kills }, layer }
            })
            .collect())
    }

    /// PSI of a container's cgroup, where the kernel has it: its v2 cgroup, on hybrid hosts the
    /// one it has in the unified hierarchy.
    pub fn pressure(&self, ct: &Container) -> Option<Pressure> {
        self.node.pressure(&ct.cgroup_path)
    }
}
