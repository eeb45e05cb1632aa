//! ContainerStats and the PSI of a container, from its cgroups.

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

impl ContainerService {
    /// A container and one sample of its resource use. The cgroup files are read on a
    /// blocking thread.
    pub async fn container_stats(&self, id: &str) -> Result<(Container, Sample), ContainerError> {
        let ct = self.container(id).await?;
        let node = self.node.clone();
        let path = ct.cgroup_path.clone();
        let (usage, pressure, cgroup_ooms) =
            tokio::task::spawn_blocking(move || (node.cgroups().usage(&path), node.pressure(&path), node.cgroups().oom_kills(&path)))
                .await?;
        let nano_cores = usage.and_then(|u| self.cpu_rates.sample(&ct.id, u.cpu_nanos));
        let oom_kills = self.kernel.counters_of(&ct.id).map_or(cgroup_ooms, |c| c.oom_kills);
        Ok((ct, Sample { usage, nano_cores, pressure, oom_kills }))
    }

    /// PSI of a container's cgroup, where the kernel has it: its v2 cgroup, on hybrid hosts the
    /// one it has in the unified hierarchy.
    pub fn pressure(&self, ct: &Container) -> Option<Pressure> {
        self.node.pressure(&ct.cgroup_path)
    }
}
