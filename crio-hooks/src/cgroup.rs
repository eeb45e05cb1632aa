//! CPU quota and scheduler load balancing, planned as changes to a container's (and its
//! pod's) cgroup files. Directories are parameters: on v1 the `cpu` and `cpuset` controller
//! directories, on v2 the one directory.

use std::path::Path;

use crate::CpuSet;
use crate::files::{self, Change};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel made {path} an invalid partition ({state}): CPUs {cpus} cannot be isolated there")]
    InvalidPartition { path: std::path::PathBuf, state: String, cpus: CpuSet },
}

fn change(path: std::path::PathBuf, value: impl Into<String>) -> Result<Option<Change>, CgroupError> {
    files::change(path.clone(), value).map_err(|source| CgroupError::Read { path, source })
}

/// No CFS quota on each cgroup in `dirs` (v1 `cpu` directories, or v2 directories).
pub fn unlimited_quota(dirs: &[&Path], v2: bool) -> Result<Vec<Change>, CgroupError> {
    let mut out = Vec::new();
    for dir in dirs {
        if v2 {
            let path = dir.join("cpu.max");
            let now = files::read(&path).map_err(|source| CgroupError::Read { path: path.clone(), source })?;
            let period = now.split_whitespace().nth(1).unwrap_or("100000");
            out.extend(change(path, format!("max {period}"))?);
        } else {
            out.extend(change(dir.join("cpu.cfs_quota_us"), "-1")?);
        }
    }
    Ok(out)
}

/// v1: the container's cpuset cgroup (`cpuset_dir`) stops load balancing across its CPUs.
pub fn no_load_balancing_v1(cpuset_dir: &Path) -> Result<Vec<Change>, CgroupError> {
    Ok(change(cpuset_dir.join("cpuset.sched_load_balance"), "0")?.into_iter().collect())
}

/// v2: the container's CPUs made exclusive in every cgroup from `dirs[0]` (below the root)
/// down to the container's (`dirs` in that order), and the container's an isolated partition.
/// Apply the changes, then call `check_partition`.
pub fn isolated_partition_v2(dirs: &[&Path], cpus: &CpuSet) -> Result<Vec<Change>, CgroupError> {
    let mut out = Vec::new();
    for dir in dirs {
        let path = dir.join("cpuset.cpus.exclusive");
        let now = files::read(&path).map_err(|source| CgroupError::Read { path: path.clone(), source })?;
        let have = CpuSet::parse_list(&now).unwrap_or_default();
        out.extend(change(path, have.union(cpus).to_list())?);
    }
    if let Some(leaf) = dirs.last() {
        out.extend(change(leaf.join("cpuset.cpus.partition"), "isolated")?);
    }
    Ok(out)
}

/// Reads back the partition the kernel made: "isolated invalid (...)" is an error, not silence.
pub fn check_partition(leaf: &Path, cpus: &CpuSet) -> Result<(), CgroupError> {
    let path = leaf.join("cpuset.cpus.partition");
    let state = files::read(&path).map_err(|source| CgroupError::Read { path: path.clone(), source })?;
    if state.trim() == "isolated" { Ok(()) } else { Err(CgroupError::InvalidPartition { path, state, cpus: cpus.clone() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn v1_quota_and_load_balancing() {
        let t = tempfile::tempdir().unwrap();
        let (pod, ctr, cpuset) = (t.path().join("cpu/pod"), t.path().join("cpu/pod/ctr"), t.path().join("cpuset/pod/ctr"));
        write(&pod, "cpu.cfs_quota_us", "200000\n");
        write(&ctr, "cpu.cfs_quota_us", "100000\n");
        write(&cpuset, "cpuset.sched_load_balance", "1\n");
        let mut changes = unlimited_quota(&[&pod, &ctr], false).unwrap();
        changes.extend(no_load_balancing_v1(&cpuset).unwrap());
        files::apply(&changes).unwrap();
        assert_eq!(files::read(&ctr.join("cpu.cfs_quota_us")).unwrap(), "-1");
        assert_eq!(files::read(&cpuset.join("cpuset.sched_load_balance")).unwrap(), "0");
        assert!(files::restore(&changes).is_empty());
        assert_eq!(files::read(&pod.join("cpu.cfs_quota_us")).unwrap(), "200000");
        assert_eq!(files::read(&cpuset.join("cpuset.sched_load_balance")).unwrap(), "1");
    }

    #[test]
    fn v2_quota_keeps_the_period_and_partitions_are_read_back() {
        let t = tempfile::tempdir().unwrap();
        let (kube, ctr) = (t.path().join("kubepods"), t.path().join("kubepods/ctr"));
        write(&ctr, "cpu.max", "150000 50000\n");
        let changes = unlimited_quota(&[&ctr], true).unwrap();
        assert_eq!(changes[0].value, "max 50000");
        write(&kube, "cpuset.cpus.exclusive", "2\n");
        write(&ctr, "cpuset.cpus.exclusive", "\n");
        write(&ctr, "cpuset.cpus.partition", "member\n");
        let cpus = CpuSet::parse_list("4-5").unwrap();
        let changes = isolated_partition_v2(&[&kube, &ctr], &cpus).unwrap();
        let values: Vec<&str> = changes.iter().map(|c| c.value.as_str()).collect();
        assert_eq!(values, ["2,4-5", "4-5", "isolated"]);
        files::apply(&changes).unwrap();
        assert!(check_partition(&ctr, &cpus).is_ok());
        // What the kernel answers when it cannot isolate them.
        write(&ctr, "cpuset.cpus.partition", "isolated invalid (Cpu list in cpuset.cpus not exclusive)\n");
        let err = check_partition(&ctr, &cpus).unwrap_err();
        assert!(err.to_string().contains("invalid partition") && err.to_string().contains("4-5"), "{err}");
    }
}
