//! UpdateContainerResources and ReopenContainerLog on a running container.

use super::{ContainerError, ContainerService, blocking, io_err};
use crate::model::{ContainerState, Resources};
use crate::monitor::client::MonitorClient;
use crate::monitor::protocol::Request;

impl ContainerService {
    /// Applies new resources to a running container, all of them or none that can be refused
    /// up front: CPU, memory and swap and v2 files through `<runtime> update`, hugepage limits
    /// to the hugetlb controller, oom_score_adj to every process of the container. Under the
    /// container's lock; the record holds what was applied.
    pub async fn update_resources(&self, id: &str, requested: &Resources) -> Result<(), ContainerError> {
        let entry = self.stores.containers.resolve(id).ok_or_else(|| ContainerError::ContainerNotFound { id: id.into() })?;
        let _op = entry.op.lock().await;
        let ct = self.container(id).await?;
        if !matches!(ct.state, ContainerState::Running | ContainerState::Created) {
            return Err(ContainerError::WrongState {
                what: "container",
                id: ct.id,
                state: format!("{:?}", ct.state),
                op: "update its resources",
            });
        }
        let hugepages = blocking(|| self.hugepage_files(&ct.cgroup_path, requested))?;
        blocking(|| self.check_update(&ct.cgroup_path, requested))?;
        // The kubelet's CPU manager re-sends its cpuset: the runtime's own choice, or the shared
        // pool beside the kubelet's CPUs, stays.
        let placed = ct.placement.as_ref().map(|p| self.tuning.updated_placement(p, &requested.cpuset_cpus));
        let mut resources = requested.clone();
        if let Some(p) = &placed {
            resources.cpuset_cpus = p.cpus.to_list();
            if resources.cpuset_mems.is_empty() {
                resources.cpuset_mems = p.mems.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            }
        }
        let body = runtime_update(&resources);
        self.node.runtime(&self.handler_of(&ct))?.update(&ct.id, &body).await?;
        blocking(|| -> Result<(), ContainerError> {
            for (path, limit) in &hugepages {
                std::fs::write(path, limit.to_string()).map_err(io_err("setting a hugepage limit", path))?;
            }
            if requested.oom_score_adj != ct.spec.resources.oom_score_adj {
                self.set_oom_score_adj(&ct.cgroup_path, requested.oom_score_adj)?;
            }
            Ok(())
        })?;
        let new = requested.clone();
        self.stores
            .containers
            .update(&ct.id, &entry, move |c| {
                c.spec.resources = new;
                if placed.is_some() {
                    c.placement = placed;
                }
            })
            .await?;
        Ok(())
    }

    /// What the host cannot apply is refused before anything changes, naming the field.
    fn check_update(&self, cgroup: &str, r: &Resources) -> Result<(), ContainerError> {
        let cgroups = self.node.cgroups();
        let refuse = |field: &'static str, why: String| Err(ContainerError::Unsupported { field, why });
        if !r.unified.is_empty() && cgroups.layout() != crate::cgroups::Layout::V2 {
            return refuse("linux.unified", "the host's cgroups are not v2 (unified files cannot be applied)".into());
        }
        if r.memory_swap_limit > 0 {
            let file = match cgroups.layout() {
                crate::cgroups::Layout::V2 => "memory.swap.max",
                crate::cgroups::Layout::V1 => "memory.memsw.limit_in_bytes",
            };
            let path = cgroups.memory_dir(cgroup).join(file);
            if !path.exists() {
                return refuse(
                    "linux.memory_swap_limit_in_bytes",
                    format!("the host has no swap accounting ({} is missing)", path.display()),
                );
            }
        }
        Ok(())
    }

    /// The hugetlb files to write for `r`'s limits; refused where the host has no such page
    /// size or no hugetlb controller (unless the limit is 0, which the host already holds).
    fn hugepage_files(&self, cgroup: &str, r: &Resources) -> Result<Vec<(std::path::PathBuf, u64)>, ContainerError> {
        let cgroups = self.node.cgroups();
        let mut out = Vec::new();
        for (size, limit) in &r.hugepages {
            let file = match cgroups.layout() {
                crate::cgroups::Layout::V2 => format!("hugetlb.{size}.max"),
                crate::cgroups::Layout::V1 => format!("hugetlb.{size}.limit_in_bytes"),
            };
            let path = cgroups.controller_dir("hugetlb", cgroup).join(file);
            if path.exists() {
                out.push((path, *limit));
            } else if *limit != 0 {
                return Err(ContainerError::Unsupported {
                    field: "linux.hugepage_limits",
                    why: format!("the host has no hugetlb limit for {size} pages ({} is missing)", path.display()),
                });
            }
        }
        Ok(out)
    }

    /// Every process of the container gets the new oom_score_adj (new ones inherit it).
    fn set_oom_score_adj(&self, cgroup: &str, requested: i64) -> Result<(), ContainerError> {
        let value = crate::container::spec::oom_score_adj(requested, &self.held_capabilities);
        let procs = self.node.cgroups().memory_dir(cgroup).join("cgroup.procs");
        let pids = std::fs::read_to_string(&procs).map_err(io_err("listing the container's processes", &procs))?;
        for pid in pids.lines().filter(|l| !l.is_empty()) {
            let path = std::path::PathBuf::from(format!("/proc/{pid}/oom_score_adj"));
            match std::fs::write(&path, value.to_string()) {
                // It exited meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) || e.kind() == std::io::ErrorKind::NotFound => {}
                r => r.map_err(io_err("setting oom_score_adj", &path))?,
            }
        }
        Ok(())
    }

    /// Asks the monitor to reopen the container's log (after the kubelet rotated it).
    pub async fn reopen_log(&self, id: &str) -> Result<(), ContainerError> {
        let ct = self.container(id).await?;
        if ct.state != ContainerState::Running {
            return Err(ContainerError::WrongState {
                what: "container",
                id: ct.id,
                state: format!("{:?}", ct.state),
                op: "reopen its log",
            });
        }
        let pod = self.stores.pods.get(&ct.pod_id).ok_or_else(|| ContainerError::PodNotFound { id: ct.pod_id.clone() })?.get();
        MonitorClient::new(&pod.monitor_socket()).request(&Request::ReopenLog { id: ct.id }).await?;
        Ok(())
    }
}

/// The body of `<runtime> update --resources -`.
fn runtime_update(resources: &Resources) -> serde_json::Value {
    let mut cpu = serde_json::Map::new();
    if resources.cpu_shares > 0 {
        cpu.insert("shares".into(), resources.cpu_shares.into());
    }
    if resources.cpu_quota != 0 {
        cpu.insert("quota".into(), resources.cpu_quota.into());
    }
    if resources.cpu_period > 0 {
        cpu.insert("period".into(), resources.cpu_period.into());
    }
    if !resources.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), resources.cpuset_cpus.clone().into());
    }
    if !resources.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), resources.cpuset_mems.clone().into());
    }
    let mut body = serde_json::json!({ "cpu": cpu });
    let mut memory = serde_json::Map::new();
    if resources.memory_limit > 0 {
        memory.insert("limit".into(), resources.memory_limit.into());
    }
    if resources.memory_swap_limit != 0 {
        memory.insert("swap".into(), resources.memory_swap_limit.into());
    }
    if !memory.is_empty() {
        body["memory"] = memory.into();
    }
    if !resources.unified.is_empty() {
        body["unified"] = resources
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    body
}
