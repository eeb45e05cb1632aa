//! ContainerStats and the PSI of a container, from its cgroups.

use super::{ContainerError, ContainerService};
use crate::model::Container;

impl ContainerService {
    /// A container and one sample of its resource use (`None` once its cgroup is gone), with
    /// the CPU rate since the previous sample.
    pub async fn container_stats(&self, id: &str) -> Result<(Container, Option<crate::cgroups::Usage>, Option<u64>), ContainerError> {
        let ct = self.container(id).await?;
        let usage = self.node.cgroups().usage(&ct.cgroup_path);
        let nano_cores = usage.and_then(|u| {
            let now = std::time::Instant::now();
            let mut last = self.cpu_samples.lock().expect("cpu samples poisoned");
            let prev = last.insert(ct.id.clone(), (now, u.cpu_nanos));
            let (t, cpu) = prev?;
            let elapsed = now.duration_since(t).as_nanos() as u64;
            (elapsed > 0).then(|| u.cpu_nanos.saturating_sub(cpu) * 1_000_000_000 / elapsed)
        });
        Ok((ct, usage, nano_cores))
    }

    /// PSI of a container's cgroup, where the kernel has it: its v2 cgroup, on hybrid hosts the
    /// one it has in the unified hierarchy.
    pub fn pressure(&self, ct: &Container) -> Option<crate::cgroups::pressure::Pressure> {
        let dir = self.node.v2_dir(&ct.cgroup_path)?;
        crate::cgroups::pressure::read(&dir)
    }
}
