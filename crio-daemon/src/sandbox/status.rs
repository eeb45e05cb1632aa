//! PodSandboxStatus, ListPodSandbox and PodSandboxStats: the pods as recorded, and their
//! resource use from their cgroups, interfaces and the kernel's per-pod byte counts.

use super::{PodError, PodService};
use crate::container::Sample;
use crate::model::{Container, ContainerState, PodSandbox, PodState};
use crate::network::stats::InterfaceCounters;

impl PodService {
    pub fn pod(&self, id: &str) -> Result<PodSandbox, PodError> {
        self.stores.pods.resolve(id).map(|e| e.get()).ok_or_else(|| PodError::PodNotFound { id: id.into() })
    }

    /// The pod's containers, as recorded.
    pub fn containers_of(&self, pod_id: &str) -> Vec<Container> {
        self.stores.containers_of(pod_id)
    }

    /// Every pod, as recorded.
    pub fn list_pods(&self) -> Vec<PodSandbox> {
        self.stores.pods.all().into_iter().map(|e| e.get()).collect()
    }

    /// A pod's resource use: its cgroup parent's when the kubelet gave one (it holds every
    /// container), else the sum of its running containers (no PSI then: stalls do not add
    /// up); and its interfaces' counters.
    pub async fn pod_stats(&self, id: &str) -> Result<(PodSandbox, Sample, Vec<InterfaceCounters>), PodError> {
        let pod = self.pod(id)?;
        let pod_cgroup = self.node.pod_cgroup_path(&pod);
        let running: Vec<String> = if pod_cgroup.is_empty() {
            self.stores.containers_of(&pod.id).into_iter().filter(|c| c.state == ContainerState::Running).map(|c| c.cgroup_path).collect()
        } else {
            Vec::new()
        };
        let node = self.node.clone();
        let netns = pod.netns.clone().filter(|_| pod.state == PodState::Ready);
        // The cgroup files and the interfaces' counters in one blocking trip.
        let (usage, pressure, oom_kills, interfaces) = tokio::task::spawn_blocking(move || {
            let interfaces = netns.and_then(|ns| crate::network::stats::read(&ns).ok()).unwrap_or_default();
            if pod_cgroup.is_empty() {
                let samples: Vec<_> = running.iter().filter_map(|p| node.cgroups().usage(p)).collect();
                let ooms = running.iter().map(|p| node.cgroups().oom_kills(p)).sum();
                (crate::cgroups::Usage::sum(&samples), None, ooms, interfaces)
            } else {
                let cg = node.cgroups();
                (cg.usage(&pod_cgroup), node.pressure(&pod_cgroup), cg.oom_kills(&pod_cgroup), interfaces)
            }
        })
        .await?;
        let nano_cores = usage.and_then(|u| self.cpu_rates.sample(&pod.id, u.cpu_nanos));
        let sample = Sample { usage, nano_cores, pressure, oom_kills };
        let mut interfaces = interfaces;
        // With the kernel's accounting, the pod's own sockets' traffic is the measure (host
        // network pods too), on the pod's primary interface; its error counts stay.
        if let Some(net) = self.kernel.pod_network(&pod.id) {
            let name = if pod.spec.host_network { crate::network::stats::default_route_interface() } else { "eth0".to_string() };
            let errors = interfaces.iter().find(|i| i.name == name).map(|i| (i.rx_errors, i.tx_errors)).unwrap_or_default();
            interfaces.retain(|i| i.name != name);
            let counted =
                InterfaceCounters { name, rx_bytes: net.rx_bytes, rx_errors: errors.0, tx_bytes: net.tx_bytes, tx_errors: errors.1 };
            interfaces.insert(0, counted);
        }
        Ok((pod, sample, interfaces))
    }
}
