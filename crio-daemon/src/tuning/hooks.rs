//! The high-performance hooks on the container lifecycle (`crio_hooks` plans them): who gets
//! them (CRI-O's rules: a handler named `*high-performance*`, or annotations the handler
//! allows; a container with whole CPUs and a cpuset), applying them once the runtime has made
//! the container's cgroups and before it starts, and putting everything back when it ends,
//! whichever way it ends (the changes live in its record, so a restart still undoes them:
//! the container service puts them back).

use std::path::{Path, PathBuf};

use crio_hooks::CpuSet;
use crio_hooks::annotations::{self, Requests};
use crio_hooks::files::{self, Change};

use super::{Tuning, TuningError, hook_err};
use crate::cgroups::Layout;
use crate::model::{Container, ContainerSpec, PodSandbox};

impl Tuning {
    /// What the pod's annotations ask for this container and may have; `None` for nothing
    /// (an ignored request is logged with the reason).
    pub fn hook_requests(&self, pod: &PodSandbox, spec: &ContainerSpec) -> Option<Requests> {
        let (mut req, errors) = annotations::parse(&pod.spec.annotations, &spec.name);
        for e in errors {
            tracing::warn!(pod_sandbox_id = %pod.id, error = %e, "annotation ignored");
        }
        if !req.any() {
            return None;
        }
        let rt = &self.config.crio.runtime;
        let handler = rt.handler_name(&pod.spec.runtime_handler);
        if !handler.contains("high-performance") {
            let allowed = rt.runtimes.get(handler).map(|h| h.allowed_annotations.clone()).unwrap_or_default();
            let ok = |key: &str| allowed.iter().any(|a| a == key);
            req.no_load_balancing &= ok(annotations::CPU_LOAD_BALANCING);
            req.no_cpu_quota &= ok(annotations::CPU_QUOTA);
            req.irq = req.irq.filter(|_| ok(annotations::IRQ_LOAD_BALANCING));
            req.c_states = req.c_states.filter(|_| ok(annotations::CPU_C_STATES));
            req.governor = req.governor.filter(|_| ok(annotations::CPU_FREQ_GOVERNOR));
            req.shared_cpus = false;
            if !req.any() {
                tracing::info!(pod_sandbox_id = %pod.id, handler = %handler, "performance annotations ignored: the runtime handler is not high-performance and allows none of them");
                return None;
            }
        }
        let cpus = CpuSet::parse_list(&spec.resources.cpuset_cpus).unwrap_or_default();
        if let Err(why) = annotations::eligibility(spec.resources.cpu_shares, &cpus) {
            tracing::info!(pod_sandbox_id = %pod.id, container = %spec.name, why, "performance annotations ignored");
            return None;
        }
        if req.shared_cpus && self.config.crio.runtime.shared_cpuset.is_empty() {
            tracing::info!(pod_sandbox_id = %pod.id, container = %spec.name, "cpu-shared ignored: no shared_cpuset is configured");
        }
        Some(req)
    }

    /// Applies `req` to the created (not started) container of the pod whose cgroup directory
    /// is `pod_cgroup`; returns what changed.
    pub fn apply_hooks(&self, ct: &Container, pod_cgroup: &str, req: &Requests) -> Result<Vec<Change>, TuningError> {
        let cpus = CpuSet::parse_list(&ct.spec.resources.cpuset_cpus).map_err(hook_err)?;
        let v2 = self.cgroups.layout() == Layout::V2;
        let dir = |controller: &str, path: &str| -> PathBuf {
            if v2 { self.cgroups.v2_dir(path).unwrap_or_default() } else { self.cgroups.controller_dir(controller, path) }
        };
        let mut changes = Vec::new();
        if req.no_cpu_quota {
            let (p, c) = (dir("cpu", pod_cgroup), dir("cpu", &ct.cgroup_path));
            changes.extend(crio_hooks::cgroup::unlimited_quota(&[p.as_path(), c.as_path()], v2).map_err(hook_err)?);
        }
        if req.no_load_balancing {
            if v2 {
                let chain = ancestry(&ct.cgroup_path).into_iter().map(|p| dir("cpuset", &p)).collect::<Vec<_>>();
                let refs: Vec<&Path> = chain.iter().map(PathBuf::as_path).collect();
                changes.extend(crio_hooks::cgroup::isolated_partition_v2(&refs, &cpus).map_err(hook_err)?);
            } else {
                changes.extend(crio_hooks::cgroup::no_load_balancing_v1(&dir("cpuset", &ct.cgroup_path)).map_err(hook_err)?);
            }
        }
        // A node without PM QoS or cpufreq (many VMs) cannot honour these: said once and
        // skipped, the rest still applies. A governor the node lacks is an error.
        let unsupported = |e: &crio_hooks::power::PowerError| matches!(e, crio_hooks::power::PowerError::Missing { .. });
        if let Some(c) = req.c_states {
            match crio_hooks::power::c_states(&self.host.sys, &cpus, c) {
                Ok(c) => changes.extend(c),
                Err(e) if unsupported(&e) => {
                    tracing::warn!(container_id = %ct.id, error = %e, "cpu-c-states unsupported on this node; skipped")
                }
                Err(e) => return Err(hook_err(e)),
            }
        }
        if let Some(g) = &req.governor {
            match crio_hooks::power::governor(&self.host.sys, &cpus, g) {
                Ok(c) => changes.extend(c),
                Err(e) if unsupported(&e) => {
                    tracing::warn!(container_id = %ct.id, error = %e, "cpu-freq-governor unsupported on this node; skipped")
                }
                Err(e) => return Err(hook_err(e)),
            }
        }
        // Write-ahead: the originals are durable before the host changes (see `journal`).
        self.journal(&ct.id, &changes)?;
        let undo = |e: TuningError| {
            let _ = files::restore(&changes);
            self.forget_hooks(&ct.id);
            e
        };
        if let Err(e) = self.apply_journaled(&changes) {
            self.forget_hooks(&ct.id);
            return Err(e);
        }
        self.crash.reached("hooks:applied");
        if req.no_load_balancing && v2 {
            let leaf = dir("cpuset", &ct.cgroup_path);
            crio_hooks::cgroup::check_partition(&leaf, &cpus).map_err(|e| undo(hook_err(e)))?;
        }
        if let Some(mode) = req.irq {
            self.take_irqs(ct, mode).map_err(undo)?;
        }
        if !changes.is_empty() {
            tracing::info!(container_id = %ct.id, changes = changes.len(), "high-performance hooks applied");
        }
        Ok(changes)
    }
}

/// Every level of a cgroup path, top first, without the root: `/a/b/c` -> `/a`, `/a/b`, `/a/b/c`.
fn ancestry(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        acc.push('/');
        acc.push_str(part);
        out.push(acc.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ancestry_runs_top_down() {
        assert_eq!(super::ancestry("/kubepods/pod1/crio-x"), ["/kubepods", "/kubepods/pod1", "/kubepods/pod1/crio-x"]);
        assert!(super::ancestry("/").is_empty());
    }
}
