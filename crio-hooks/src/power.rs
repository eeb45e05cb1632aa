//! C-states and the frequency governor of a container's CPUs, planned as file changes under a
//! sysfs root (`<sys>/devices/system/cpu/cpuN/...`): the PM QoS resume latency
//! (`power/pm_qos_resume_latency_us`: "0" allows every C-state, "n/a" none but the
//! shallowest, a number those waking within it) and cpufreq's `scaling_governor`, checked
//! against `scaling_available_governors`.

use std::path::{Path, PathBuf};

use crate::CpuSet;
use crate::annotations::CStates;
use crate::files::{self, Change};

#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("CPU {cpu} has no {what} at {path}")]
    Missing {
        cpu: u32,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CPU {cpu} has no governor {governor:?} (available: {available})")]
    NoGovernor { cpu: u32, governor: String, available: String },
}

fn cpu_dir(sys: &Path, cpu: u32) -> PathBuf {
    sys.join(format!("devices/system/cpu/cpu{cpu}"))
}

pub fn latency_value(c: CStates) -> String {
    match c {
        CStates::Enable => "0".into(),
        CStates::Disable => "n/a".into(),
        CStates::MaxLatency(us) => us.to_string(),
    }
}

/// The changes that set the C-state policy `c` on `cpus`.
pub fn c_states(sys: &Path, cpus: &CpuSet, c: CStates) -> Result<Vec<Change>, PowerError> {
    let value = latency_value(c);
    let mut out = Vec::new();
    for cpu in cpus.iter() {
        let path = cpu_dir(sys, cpu).join("power/pm_qos_resume_latency_us");
        let changed = files::change(path.clone(), value.clone()).map_err(|source| PowerError::Missing {
            cpu,
            what: "PM QoS resume latency",
            path,
            source,
        })?;
        out.extend(changed);
    }
    Ok(out)
}

/// The changes that set `governor` on `cpus`, refused (nothing changed) if any CPU lacks it.
pub fn governor(sys: &Path, cpus: &CpuSet, governor: &str) -> Result<Vec<Change>, PowerError> {
    let mut out = Vec::new();
    for cpu in cpus.iter() {
        let dir = cpu_dir(sys, cpu).join("cpufreq");
        let available_path = dir.join("scaling_available_governors");
        let available = files::read(&available_path).map_err(|source| PowerError::Missing {
            cpu,
            what: "cpufreq governors",
            path: available_path,
            source,
        })?;
        if !available.split_whitespace().any(|g| g == governor) {
            return Err(PowerError::NoGovernor { cpu, governor: governor.into(), available });
        }
        let path = dir.join("scaling_governor");
        let changed =
            files::change(path.clone(), governor).map_err(|source| PowerError::Missing { cpu, what: "cpufreq governor", path, source })?;
        out.extend(changed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs tree of `n` CPUs with C-states allowed and the powersave governor.
    fn sysfs(n: u32) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for cpu in 0..n {
            let d = cpu_dir(t.path(), cpu);
            std::fs::create_dir_all(d.join("power")).unwrap();
            std::fs::create_dir_all(d.join("cpufreq")).unwrap();
            std::fs::write(d.join("power/pm_qos_resume_latency_us"), "0\n").unwrap();
            std::fs::write(d.join("cpufreq/scaling_governor"), "powersave\n").unwrap();
            std::fs::write(d.join("cpufreq/scaling_available_governors"), "performance powersave\n").unwrap();
        }
        t
    }

    #[test]
    fn c_states_change_only_the_containers_cpus_and_restore() {
        let t = sysfs(4);
        let cpus = CpuSet::parse_list("1-2").unwrap();
        let changes = c_states(t.path(), &cpus, CStates::Disable).unwrap();
        assert_eq!(changes.len(), 2);
        files::apply(&changes).unwrap();
        let latency = |cpu| files::read(&cpu_dir(t.path(), cpu).join("power/pm_qos_resume_latency_us")).unwrap();
        assert_eq!((latency(0), latency(1), latency(2)), ("0".into(), "n/a".into(), "n/a".into()));
        assert!(files::restore(&changes).is_empty());
        assert_eq!(latency(1), "0");
        assert_eq!(latency_value(CStates::MaxLatency(10)), "10");
        assert!(c_states(t.path(), &cpus, CStates::Enable).unwrap().is_empty(), "already allowed: nothing to do");
    }

    #[test]
    fn governors_are_checked_before_anything_changes() {
        let t = sysfs(2);
        let cpus = CpuSet::parse_list("0-1").unwrap();
        let err = governor(t.path(), &cpus, "ondemand").unwrap_err();
        assert!(err.to_string().contains("performance powersave"), "{err}");
        let changes = governor(t.path(), &cpus, "performance").unwrap();
        files::apply(&changes).unwrap();
        assert_eq!(files::read(&cpu_dir(t.path(), 1).join("cpufreq/scaling_governor")).unwrap(), "performance");
        let missing = governor(t.path(), &CpuSet::parse_list("5").unwrap(), "performance").unwrap_err();
        assert!(matches!(missing, PowerError::Missing { cpu: 5, .. }));
    }
}
