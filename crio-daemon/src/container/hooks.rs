//! The high-performance hooks on the container lifecycle (`crio_hooks` plans them): who gets
//! them (CRI-O's rules: a handler named `*high-performance*`, or annotations the handler
//! allows; a container with whole CPUs and a cpuset), applying them once the runtime has made
//! the container's cgroups and before it starts, and putting everything back when it ends,
//! whichever way it ends (the changes live in its record, so a restart still undoes them).

use std::path::{Path, PathBuf};

use crio_hooks::CpuSet;
use crio_hooks::annotations::{self, Requests};
use crio_hooks::files::{self, Change};

use super::{Container, ContainerSpec};
use crate::cgroups::Layout;
use crate::sandbox::{Lifecycle, LifecycleError, PodSandbox};

fn hook_err(e: impl std::fmt::Display) -> LifecycleError {
    LifecycleError::Hooks { why: e.to_string() }
}

impl Lifecycle {
    /// What the pod's annotations ask for this container and may have; `None` for nothing
    /// (an ignored request is logged with the reason).
    pub(crate) fn hook_requests(&self, pod: &PodSandbox, spec: &ContainerSpec) -> Option<Requests> {
        let (mut req, errors) = annotations::parse(&pod.spec.annotations, &spec.name);
        for e in errors {
            tracing::warn!(pod_sandbox_id = %pod.id, error = %e, "annotation ignored");
        }
        if !req.any() {
            return None;
        }
        let rt = &self.config.crio.runtime;
        let handler = self.handler_name(pod);
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

    /// Applies `req` to the created (not started) container; returns what changed.
    pub(crate) fn apply_hooks(&self, ct: &Container, pod: &PodSandbox, req: &Requests) -> Result<Vec<Change>, LifecycleError> {
        let cpus = CpuSet::parse_list(&ct.spec.resources.cpuset_cpus).map_err(hook_err)?;
        let v2 = self.cgroups.layout() == Layout::V2;
        let dir = |controller: &str, path: &str| -> PathBuf {
            if v2 { self.cgroups.v2_dir(path).unwrap_or_default() } else { self.cgroups.controller_dir(controller, path) }
        };
        let pod_cgroup = self.pod_cgroup_path(pod);
        let mut changes = Vec::new();
        if req.no_cpu_quota {
            let (p, c) = (dir("cpu", &pod_cgroup), dir("cpu", &ct.cgroup_path));
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
        files::apply(&changes).map_err(|e| hook_err(crate::error_chain(&e)))?;
        if req.no_load_balancing && v2 {
            let leaf = dir("cpuset", &ct.cgroup_path);
            if let Err(e) = crio_hooks::cgroup::check_partition(&leaf, &cpus) {
                let _ = files::restore(&changes);
                return Err(hook_err(e));
            }
        }
        if let Some(mode) = req.irq
            && let Err(e) = self.take_irqs(ct, mode)
        {
            let _ = files::restore(&changes);
            return Err(e);
        }
        if !changes.is_empty() {
            tracing::info!(container_id = %ct.id, changes = changes.len(), "high-performance hooks applied");
        }
        Ok(changes)
    }

    /// What an ended container held goes back: its IRQ CPUs, its placement, its hooks'
    /// settings. Safe to call more than once and from both the exit watch and StopContainer.
    pub(crate) async fn give_back(&self, id: &str) {
        // Most containers steer no IRQs: no hand-off of the runtime thread for them.
        if self.irq_node.lock().expect("irq node poisoned").taken.contains_key(id) {
            super::lifecycle::blocking(|| self.release_irqs(id));
        }
        self.release_placement(id);
        self.restore_hooks(id).await;
    }

    /// Puts back what the hooks changed for a container that has ended, once: a second caller
    /// waits for the first's restore to be done and recorded.
    pub(crate) async fn restore_hooks(&self, id: &str) {
        // The record's list is cleared only after its restore is done: empty means nothing to
        // wait for (most containers never had hooks).
        if self.containers.resolve(id).is_none_or(|e| e.snapshot().hooks.is_empty()) {
            return;
        }
        let _one = self.hooks_restore.lock().await;
        let Some(entry) = self.containers.resolve(id) else { return };
        let changes = entry.get().hooks;
        if changes.is_empty() {
            return;
        }
        for e in files::restore(&changes) {
            tracing::warn!(container_id = %id, error = %crate::error_chain(&e), "could not restore a setting");
        }
        let _ = self.containers.update(id, &entry, |c| c.hooks.clear()).await;
        tracing::info!(container_id = %id, "high-performance hooks restored");
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

/// Node-wide IRQ steering: what the machine had before, and the CPUs each container takes.
/// Persisted, so a restart can give back what a crashed daemon took.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct IrqNode {
    pub originals: crio_hooks::irq::Originals,
    pub taken: std::collections::BTreeMap<String, CpuSet>,
}

impl IrqNode {
    pub fn load(path: &Path) -> IrqNode {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }
}

/// irqbalance reads its ban list when it starts: under systemd it is restarted if it runs
/// (as CRI-O does); elsewhere a running irqbalance is named in the log, since only its
/// supervisor can restart it.
fn tell_irqbalance(proc_root: &Path) {
    if Path::new("/run/systemd/system").exists() {
        match std::process::Command::new("systemctl").args(["try-restart", "irqbalance.service"]).output() {
            Ok(o) if o.status.success() => tracing::info!("irqbalance restarted to read its new ban list"),
            Ok(o) => tracing::warn!(stderr = %String::from_utf8_lossy(&o.stderr).trim(), "irqbalance not restarted"),
            Err(e) => tracing::warn!(error = %e, "systemctl not run: irqbalance not restarted"),
        }
        return;
    }
    let running = std::fs::read_dir(proc_root).into_iter().flatten().flatten().find(|e| {
        e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit())
            && std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "irqbalance")
    });
    if let Some(p) = running {
        tracing::warn!(pid = %p.file_name().to_string_lossy(), "irqbalance runs without systemd: restart it to apply the new ban list");
    }
}

impl Lifecycle {
    fn irq_file(&self) -> PathBuf {
        self.config.crio.state_dir.join("irq-steering.json")
    }

    /// Re-steers every IRQ for the CPUs now taken, after `change` to the node's record.
    fn steer_irqs(&self, change: impl FnOnce(&mut IrqNode)) -> Result<(), LifecycleError> {
        let mut node = self.irq_node.lock().expect("irq node poisoned");
        let before = (node.originals.clone(), node.taken.clone());
        change(&mut node);
        let taken = node.taken.values().fold(CpuSet::new(), |a, b| a.union(b));
        let ban_file = &self.config.crio.runtime.irqbalance_config_file;
        let ban_text = (!ban_file.as_os_str().is_empty()).then(|| std::fs::read_to_string(ban_file).ok()).flatten();
        let banned = ban_text.as_deref().map(crio_hooks::irq::irqbalance_banned).unwrap_or_default();
        let state = crio_hooks::irq::read_state(&self.host.proc, &self.host.sys, &banned).map_err(hook_err)?;
        let writes = match crio_hooks::irq::steer(&state, &mut node.originals, &taken) {
            Ok(w) => w,
            Err(e) => {
                (node.originals, node.taken) = before;
                return Err(hook_err(e));
            }
        };
        let ncpus = state.online.iter().last().map_or(1, |c| c + 1);
        for (path, e) in crio_hooks::irq::write(&self.host.proc, ncpus, &writes) {
            tracing::debug!(path = %path.display(), error = %e, "IRQ not moved (the kernel keeps it where it is)");
        }
        if let (Some(text), Some(banned)) = (&ban_text, &writes.banned) {
            let updated = crio_hooks::irq::irqbalance_config(text, banned, ncpus);
            match crate::storage::write_atomic(ban_file, updated.as_bytes()) {
                Ok(()) => tell_irqbalance(&self.host.proc),
                Err(e) => tracing::warn!(path = %ban_file.display(), error = %e, "irqbalance's ban list not updated"),
            }
        }
        crate::storage::write_json(&self.irq_file(), &*node).map_err(|e| hook_err(crate::error_chain(&e)))?;
        Ok(())
    }

    /// Takes the container's CPUs (all, or all but the first and its siblings) off IRQs.
    pub(crate) fn take_irqs(&self, ct: &Container, mode: annotations::IrqMode) -> Result<(), LifecycleError> {
        let cpus = CpuSet::parse_list(&ct.spec.resources.cpuset_cpus).map_err(hook_err)?;
        let first = cpus.iter().next().unwrap_or(0);
        let siblings = files::read(&self.host.sys.join(format!("devices/system/cpu/cpu{first}/topology/thread_siblings_list")))
            .ok()
            .and_then(|l| CpuSet::parse_list(&l).ok())
            .unwrap_or_default();
        let taken = crio_hooks::irq::taken(&cpus, mode, &siblings);
        let id = ct.id.clone();
        self.steer_irqs(move |n| {
            n.taken.insert(id, taken);
        })?;
        tracing::info!(container_id = %ct.id, "IRQs steered off the container's CPUs");
        Ok(())
    }

    /// Gives the container's CPUs back to IRQs; nothing if it took none.
    pub(crate) fn release_irqs(&self, id: &str) {
        if !self.irq_node.lock().expect("irq node poisoned").taken.contains_key(id) {
            return;
        }
        match self.steer_irqs(|n| {
            n.taken.remove(id);
        }) {
            Ok(()) => tracing::info!(container_id = %id, "IRQs given back the container's CPUs"),
            Err(e) => tracing::warn!(container_id = %id, error = %crate::error_chain(&e), "could not give IRQs back"),
        }
    }

    /// At start: containers that ended while the daemon was away give their CPUs back.
    pub(crate) fn reconcile_irqs(&self, running: &std::collections::HashSet<String>) {
        let gone: Vec<String> =
            self.irq_node.lock().expect("irq node poisoned").taken.keys().filter(|id| !running.contains(*id)).cloned().collect();
        for id in gone {
            self.release_irqs(&id);
        }
    }
}
