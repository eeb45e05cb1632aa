//! IRQ steering for containers that ask for it (`irq-load-balancing.crio.io`): every IRQ is
//! moved off the CPUs the containers took, irqbalance's ban list follows, and what the machine
//! had before is kept on disk so a restart can give back what a crashed daemon took.

use std::path::{Path, PathBuf};

use crio_hooks::CpuSet;
use crio_hooks::annotations;
use crio_hooks::files;

use super::{Tuning, TuningError, hook_err};
use crate::model::Container;

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

impl Tuning {
    fn irq_file(&self) -> PathBuf {
        self.config.crio.state_dir.join("irq-steering.json")
    }

    /// Re-steers every IRQ for the CPUs now taken, after `change` to the node's record.
    fn steer_irqs(&self, change: impl FnOnce(&mut IrqNode)) -> Result<(), TuningError> {
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
        // Write-ahead: the originals and who took what are durable before any IRQ moves, so a
        // restart gives back what a crash in between took.
        crate::durable::write_json(&self.irq_file(), &*node).map_err(|e| hook_err(crate::error_chain(&e)))?;
        self.crash.reached("irq:recorded");
        let ncpus = state.online.iter().last().map_or(1, |c| c + 1);
        for (path, e) in crio_hooks::irq::write(&self.host.proc, ncpus, &writes) {
            tracing::debug!(path = %path.display(), error = %e, "IRQ not moved (the kernel keeps it where it is)");
        }
        if let (Some(text), Some(banned)) = (&ban_text, &writes.banned) {
            let updated = crio_hooks::irq::irqbalance_config(text, banned, ncpus);
            match crate::durable::write_atomic(ban_file, updated.as_bytes()) {
                Ok(()) => tell_irqbalance(&self.host.proc),
                Err(e) => tracing::warn!(path = %ban_file.display(), error = %e, "irqbalance's ban list not updated"),
            }
        }
        self.crash.reached("irq:steered");
        Ok(())
    }

    /// Takes the container's CPUs (all, or all but the first and its siblings) off IRQs.
    pub fn take_irqs(&self, ct: &Container, mode: annotations::IrqMode) -> Result<(), TuningError> {
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
    pub fn release_irqs(&self, id: &str) {
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
    pub fn reconcile_irqs(&self, running: &std::collections::HashSet<String>) {
        let gone: Vec<String> =
            self.irq_node.lock().expect("irq node poisoned").taken.keys().filter(|id| !running.contains(*id)).cloned().collect();
        for id in gone {
            self.release_irqs(&id);
        }
    }
}
