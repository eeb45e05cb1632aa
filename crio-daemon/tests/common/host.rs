//! Guards for tests that change node-wide settings (CPU 1's C-state policy, IRQ affinities) or
//! run containers under a runc root of their own: everything is put back in Drop, even when
//! the test fails.

use std::path::PathBuf;

pub const CPU1_LATENCY: &str = "/sys/devices/system/cpu/cpu1/power/pm_qos_resume_latency_us";

pub fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}")).trim().to_string()
}

/// Every IRQ affinity file and its value, the default affinity first.
pub fn irq_affinities() -> Vec<(String, String)> {
    let mut out = vec![("/proc/irq/default_smp_affinity".to_string(), read("/proc/irq/default_smp_affinity"))];
    for e in std::fs::read_dir("/proc/irq").unwrap().flatten() {
        let path = e.path().join("smp_affinity_list");
        if let Ok(v) = std::fs::read_to_string(&path) {
            out.push((path.display().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Deletes what runc still runs under a root, and the root.
pub struct RuncRoot(pub PathBuf);

impl Drop for RuncRoot {
    fn drop(&mut self) {
        let runc = |args: &[&str]| std::process::Command::new("/usr/sbin/runc").arg("--root").arg(&self.0).args(args).output();
        if let Ok(out) = runc(&["list", "-q"]) {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = runc(&["delete", "--force", id]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CPU 1's C-state policy and every IRQ affinity as they were, put back on drop; and the
/// runc root of the test's high-performance handler.
pub struct HostGuard {
    pub latency: String,
    pub irqs: Vec<(String, String)>,
    pub root: RuncRoot,
}

impl HostGuard {
    pub fn new(root: PathBuf) -> HostGuard {
        HostGuard { latency: read(CPU1_LATENCY), irqs: irq_affinities(), root: RuncRoot(root) }
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(CPU1_LATENCY, &self.latency);
        for (path, value) in &self.irqs {
            let _ = std::fs::write(path, value);
        }
    }
}
