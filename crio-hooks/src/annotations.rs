//! CRI-O's high-performance annotations, parsed into what a pod asks for, and the rule for
//! who may ask: a Guaranteed pod's container with whole CPUs and a cpuset from the kubelet's
//! CPU manager. Values CRI-O once accepted (`true`) are still understood.

use std::collections::BTreeMap;

use crate::CpuSet;

pub const CPU_LOAD_BALANCING: &str = "cpu-load-balancing.crio.io";
pub const CPU_QUOTA: &str = "cpu-quota.crio.io";
pub const IRQ_LOAD_BALANCING: &str = "irq-load-balancing.crio.io";
pub const CPU_C_STATES: &str = "cpu-c-states.crio.io";
pub const CPU_FREQ_GOVERNOR: &str = "cpu-freq-governor.crio.io";
/// Followed by `/<container name>`.
pub const CPU_SHARED_PREFIX: &str = "cpu-shared.crio.io/";
/// Followed by `/<container name>`; the value is a number of CPUs the runtime chooses within
/// one NUMA node (and one L3 cache where they fit) for a container the kubelet did not pin.
pub const NUMA_CPUS_PREFIX: &str = "numa-cpus.crio.io/";

/// The CPU count `numa-cpus.crio.io/<container>` asks for, if any.
pub fn numa_cpus(annotations: &BTreeMap<String, String>, container: &str) -> Result<Option<usize>, AnnotationError> {
    let Some(v) = annotations.get(&format!("{NUMA_CPUS_PREFIX}{container}")) else { return Ok(None) };
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(AnnotationError {
            annotation: format!("{NUMA_CPUS_PREFIX}{container}"),
            value: v.clone(),
            allowed: "a number of CPUs, 1 or more",
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqMode {
    /// No IRQ on the container's CPUs.
    Disable,
    /// As Disable, but the first CPU and its SMT siblings keep serving IRQs.
    Housekeeping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CStates {
    Enable,
    Disable,
    /// Deepest allowed state by its wake-up latency, in microseconds.
    MaxLatency(u32),
}

/// What a pod's annotations ask for one of its containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    pub no_load_balancing: bool,
    pub no_cpu_quota: bool,
    pub irq: Option<IrqMode>,
    pub c_states: Option<CStates>,
    pub governor: Option<String>,
    /// The container also gets the shared CPU pool (`shared_cpuset`).
    pub shared_cpus: bool,
}

impl Requests {
    pub fn any(&self) -> bool {
        *self != Requests::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {value:?} is not one of {allowed}")]
pub struct AnnotationError {
    pub annotation: String,
    pub value: String,
    pub allowed: &'static str,
}

/// The requests for `container` in `annotations`, and the annotations whose values were not
/// understood (each ignored, for the caller to report).
pub fn parse(annotations: &BTreeMap<String, String>, container: &str) -> (Requests, Vec<AnnotationError>) {
    let mut r = Requests::default();
    let mut errors = Vec::new();
    let mut bad = |annotation: &str, value: &str, allowed: &'static str| {
        errors.push(AnnotationError { annotation: annotation.into(), value: value.into(), allowed });
    };
    for (key, value) in annotations {
        let v = value.trim();
        match key.as_str() {
            CPU_LOAD_BALANCING => match v {
                "disable" | "true" => r.no_load_balancing = true,
                _ => bad(key, v, "disable"),
            },
            CPU_QUOTA => match v {
                "disable" | "true" => r.no_cpu_quota = true,
                _ => bad(key, v, "disable"),
            },
            IRQ_LOAD_BALANCING => match v {
                "disable" | "true" => r.irq = Some(IrqMode::Disable),
                "housekeeping" => r.irq = Some(IrqMode::Housekeeping),
                _ => bad(key, v, "disable, housekeeping"),
            },
            CPU_C_STATES => match v {
                "enable" => r.c_states = Some(CStates::Enable),
                "disable" => r.c_states = Some(CStates::Disable),
                _ => match v.strip_prefix("max_latency:").and_then(|n| n.parse().ok()) {
                    Some(us) => r.c_states = Some(CStates::MaxLatency(us)),
                    None => bad(key, v, "enable, disable, max_latency:<microseconds>"),
                },
            },
            CPU_FREQ_GOVERNOR => {
                if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    r.governor = Some(v.to_string());
                } else {
                    bad(key, v, "a cpufreq governor name");
                }
            }
            _ => {
                if key.strip_prefix(CPU_SHARED_PREFIX) == Some(container) {
                    match v {
                        "enable" => r.shared_cpus = true,
                        _ => bad(key, v, "enable"),
                    }
                }
            }
        }
    }
    (r, errors)
}

/// Why a container may not have the hooks: only whole exclusive CPUs can be tuned without
/// touching other workloads' CPUs.
pub fn eligibility(cpu_shares: u64, cpuset: &CpuSet) -> Result<(), &'static str> {
    if cpuset.is_empty() {
        return Err("it has no cpuset from the kubelet's CPU manager (not a Guaranteed pod with whole CPUs)");
    }
    if cpu_shares == 0 || !cpu_shares.is_multiple_of(1024) {
        return Err("its CPU request is not a whole number of CPUs");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_annotation_and_its_legacy_values() {
        let a = map(&[
            (CPU_LOAD_BALANCING, "disable"),
            (CPU_QUOTA, "true"),
            (IRQ_LOAD_BALANCING, "housekeeping"),
            (CPU_C_STATES, "max_latency:10"),
            (CPU_FREQ_GOVERNOR, "performance"),
            ("cpu-shared.crio.io/app", "enable"),
            ("cpu-shared.crio.io/other", "enable"),
            ("unrelated.example.com", "x"),
        ]);
        let (r, errors) = parse(&a, "app");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            r,
            Requests {
                no_load_balancing: true,
                no_cpu_quota: true,
                irq: Some(IrqMode::Housekeeping),
                c_states: Some(CStates::MaxLatency(10)),
                governor: Some("performance".into()),
                shared_cpus: true,
            }
        );
        assert!(!parse(&a, "sidecar").0.shared_cpus, "shared CPUs are per container");
        assert!(!parse(&BTreeMap::new(), "app").0.any());
    }

    #[test]
    fn bad_values_are_named_and_ignored() {
        let a = map(&[(CPU_C_STATES, "max_latency:soon"), (IRQ_LOAD_BALANCING, "off"), (CPU_FREQ_GOVERNOR, "../x")]);
        let (r, errors) = parse(&a, "app");
        assert!(!r.any());
        assert_eq!(errors.len(), 3);
        assert!(errors.iter().any(|e| e.to_string().contains("irq-load-balancing.crio.io") && e.to_string().contains("housekeeping")));
    }

    #[test]
    fn numa_cpu_counts_are_per_container() {
        let a = map(&[("numa-cpus.crio.io/app", "4"), ("numa-cpus.crio.io/bad", "many"), ("numa-cpus.crio.io/zero", "0")]);
        assert_eq!(numa_cpus(&a, "app"), Ok(Some(4)));
        assert_eq!(numa_cpus(&a, "sidecar"), Ok(None));
        assert!(numa_cpus(&a, "bad").unwrap_err().to_string().contains("many"));
        assert!(numa_cpus(&a, "zero").is_err());
    }

    #[test]
    fn only_whole_exclusive_cpus_qualify() {
        let cpus = CpuSet::parse_list("2-3").unwrap();
        assert!(eligibility(2048, &cpus).is_ok());
        assert!(eligibility(1500, &cpus).unwrap_err().contains("whole number"));
        assert!(eligibility(2048, &CpuSet::new()).unwrap_err().contains("cpuset"));
    }
}
