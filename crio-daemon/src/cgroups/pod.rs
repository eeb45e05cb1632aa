//! Pod cgroups: the parent of a pod's container cgroups. The kubelet normally makes it (its
//! `cgroup_parent`) and owns its limits; when it does not exist the daemon makes it in every
//! hierarchy, applies the pod-level resources, and removes it with the pod. The OCI runtime
//! still makes and fills each container's cgroup below it.

use std::io;
use std::path::{Path, PathBuf};

use super::{Cgroups, Layout};
use crate::model::Resources;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to create cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to remove cgroup {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Controllers a pod cgroup is given on v2 (those its parent offers).
const V2_CONTROLLERS: [&str; 6] = ["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];

impl Cgroups {
    /// The v1 hierarchies under the root (`cpu`, `memory`, `name=systemd` ...), skipping the
    /// unified mount of hybrid hosts and the `cpu,cpuacct`-style aliases.
    fn hierarchies(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return Vec::new() };
        let mut dirs: Vec<PathBuf> =
            entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != "unified").map(|e| e.path()).collect();
        dirs.sort();
        dirs
    }

    /// Makes the pod cgroup at `path` unless it exists, then applies `resources` to it.
    /// Returns whether it was made here (and so is ours to remove).
    pub fn create_pod(&self, path: &str, resources: Option<&Resources>) -> Result<bool, CgroupError> {
        let rel = path.trim_start_matches('/');
        let created = match self.layout {
            Layout::V1 => {
                let mut created = false;
                for h in self.hierarchies() {
                    created |= mkdirs(&h, rel, |parent, dir| {
                        // A new cpuset cgroup starts with no CPUs or memory nodes; nothing could run in it.
                        if h.file_name().is_some_and(|n| n == "cpuset") {
                            for f in ["cpuset.cpus", "cpuset.mems"] {
                                copy_file(&parent.join(f), &dir.join(f))?;
                            }
                        }
                        Ok(())
                    })?;
                }
                created
            }
            Layout::V2 => mkdirs(&self.root, rel, |parent, _| enable_controllers(parent))?,
        };
        if created && let Some(r) = resources {
            self.apply(rel, r)?;
        }
        Ok(created)
    }

    /// Applies new pod-level limits to an existing pod cgroup (in-place pod resize).
    pub fn update_pod(&self, path: &str, resources: &Resources) -> Result<(), CgroupError> {
        self.apply(path.trim_start_matches('/'), resources)
    }

    /// Writes pod-level limits into the cgroup's files.
    fn apply(&self, rel: &str, r: &Resources) -> Result<(), CgroupError> {
        let mut writes: Vec<(PathBuf, String)> = Vec::new();
        let mut set = |controller: &str, file: &str, value: String| writes.push((self.dir(controller, rel).join(file), value));
        match self.layout {
            Layout::V1 => {
                if r.cpu_shares > 0 {
                    set("cpu", "cpu.shares", r.cpu_shares.to_string());
                }
                if r.cpu_period > 0 {
                    set("cpu", "cpu.cfs_period_us", r.cpu_period.to_string());
                }
                if r.cpu_quota != 0 {
                    set("cpu", "cpu.cfs_quota_us", r.cpu_quota.to_string());
                }
                if r.memory_limit > 0 {
                    set("memory", "memory.limit_in_bytes", r.memory_limit.to_string());
                }
                if r.memory_swap_limit > 0 {
                    set("memory", "memory.memsw.limit_in_bytes", r.memory_swap_limit.to_string());
                }
                for (size, limit) in &r.hugepages {
                    set("hugetlb", &format!("hugetlb.{size}.limit_in_bytes"), limit.to_string());
                }
            }
            Layout::V2 => {
                if r.cpu_shares > 0 {
                    set("cpu", "cpu.weight", cpu_weight(r.cpu_shares).to_string());
                }
                if r.cpu_quota != 0 || r.cpu_period > 0 {
                    let quota = if r.cpu_quota > 0 { r.cpu_quota.to_string() } else { "max".into() };
                    let period = if r.cpu_period > 0 { r.cpu_period } else { 100_000 };
                    set("cpu", "cpu.max", format!("{quota} {period}"));
                }
                if r.memory_limit > 0 {
                    set("memory", "memory.max", r.memory_limit.to_string());
                    if r.memory_swap_limit > 0 {
                        // v2 counts swap apart from memory; CRI's limit is their sum.
                        set("memory", "memory.swap.max", (r.memory_swap_limit - r.memory_limit).max(0).to_string());
                    }
                }
                for (size, limit) in &r.hugepages {
                    set("hugetlb", &format!("hugetlb.{size}.max"), limit.to_string());
                }
                for (file, value) in &r.unified {
                    set("", file, value.clone());
                }
            }
        }
        if !r.cpuset_cpus.is_empty() {
            set("cpuset", "cpuset.cpus", r.cpuset_cpus.clone());
        }
        if !r.cpuset_mems.is_empty() {
            set("cpuset", "cpuset.mems", r.cpuset_mems.clone());
        }
        for (path, value) in writes {
            std::fs::write(&path, &value).map_err(|source| CgroupError::Write { path, value, source })?;
        }
        Ok(())
    }

    /// Removes the cgroup at `path` from every hierarchy; one already gone is removed.
    pub fn remove(&self, path: &str) -> Result<(), CgroupError> {
        let rel = path.trim_start_matches('/');
        let dirs = match self.layout {
            Layout::V1 => self.hierarchies().into_iter().map(|h| h.join(rel)).collect(),
            Layout::V2 => vec![self.root.join(rel)],
        };
        for dir in dirs {
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(CgroupError::Remove { path: dir, source: e }),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Creates each missing level of `rel` under `root`, calling `init(parent, dir)` after each
/// mkdir (a level whose init fails is removed again). Returns whether the last level was
/// created.
fn mkdirs(root: &Path, rel: &str, init: impl Fn(&Path, &Path) -> io::Result<()>) -> Result<bool, CgroupError> {
    let mut dir = root.to_path_buf();
    let mut created = false;
    for part in Path::new(rel).components() {
        let parent = dir.clone();
        dir.push(part);
        created = !dir.exists();
        if created {
            let err = |source| CgroupError::Create { path: dir.clone(), source };
            std::fs::create_dir(&dir).map_err(err)?;
            if let Err(e) = init(&parent, &dir) {
                let _ = std::fs::remove_dir(&dir);
                return Err(err(e));
            }
        }
    }
    Ok(created)
}

/// Delegates the pod's controllers from `parent` to its children (v2).
fn enable_controllers(parent: &Path) -> io::Result<()> {
    let available = std::fs::read_to_string(parent.join("cgroup.controllers"))?;
    let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<String> = V2_CONTROLLERS
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c) && !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() { Ok(()) } else { std::fs::write(parent.join("cgroup.subtree_control"), missing.join(" ")) }
}

fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    let current = std::fs::read_to_string(to).unwrap_or_default();
    if current.trim().is_empty() { std::fs::write(to, std::fs::read_to_string(from)?.trim()) } else { Ok(()) }
}

/// CPU shares (2..262144) to a v2 weight (1..10000), the conversion runc and crun use.
pub fn cpu_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::write_test_file as write;

    fn read(root: &Path, rel: &str) -> String {
        std::fs::read_to_string(root.join(rel)).unwrap()
    }

    #[test]
    fn v1_pod_cgroup_in_every_hierarchy_with_cpuset_initialised() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for h in ["cpu", "cpuacct", "memory", "pids", "hugetlb", "systemd"] {
            std::fs::create_dir_all(r.join(h)).unwrap();
        }
        write(r, "cpuset/cpuset.cpus", "0-3\n");
        write(r, "cpuset/cpuset.mems", "0\n");
        write(r, "unified/cgroup.procs", "");
        let c = Cgroups::detect(r);
        let res = Resources {
            cpu_shares: 512,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            memory_limit: 64 << 20,
            hugepages: vec![("2MB".into(), 4 << 20)],
            ..Default::default()
        };
        assert!(c.create_pod("/kube/pod1", Some(&res)).unwrap());
        assert_eq!(read(r, "cpuset/kube/cpuset.cpus"), "0-3", "each new level is initialised");
        assert_eq!(read(r, "cpuset/kube/pod1/cpuset.mems"), "0");
        assert_eq!(read(r, "cpu/kube/pod1/cpu.shares"), "512");
        assert_eq!(read(r, "cpu/kube/pod1/cpu.cfs_quota_us"), "50000");
        assert_eq!(read(r, "memory/kube/pod1/memory.limit_in_bytes"), (64 << 20).to_string());
        assert_eq!(read(r, "hugetlb/kube/pod1/hugetlb.2MB.limit_in_bytes"), (4 << 20).to_string());
        assert!(r.join("systemd/kube/pod1").is_dir() && !r.join("unified/kube").exists());
        // The kubelet's own (existing) pod cgroup is left as it is.
        std::fs::remove_file(r.join("cpu/kube/pod1/cpu.shares")).unwrap();
        assert!(!c.create_pod("/kube/pod1", Some(&res)).unwrap());
        assert!(!r.join("cpu/kube/pod1/cpu.shares").exists());
        for f in ["cpu.cfs_quota_us", "cpu.cfs_period_us"] {
            std::fs::remove_file(r.join("cpu/kube/pod1").join(f)).unwrap();
        }
        for dir in ["memory/kube/pod1", "cpuset/kube/pod1", "hugetlb/kube/pod1"] {
            for e in std::fs::read_dir(r.join(dir)).unwrap() {
                std::fs::remove_file(e.unwrap().path()).unwrap();
            }
        }
        c.remove("/kube/pod1").unwrap();
        assert!(!r.join("memory/kube/pod1").exists() && r.join("memory/kube").exists());
        c.remove("/kube/pod1").unwrap();
    }

    #[test]
    fn v2_pod_cgroup_delegates_controllers_and_converts_limits() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "cgroup.controllers", "cpuset cpu io memory pids\n");
        write(r, "cgroup.subtree_control", "cpu\n");
        write(r, "kubepods/a/cgroup.controllers", "cpu memory pids\n");
        let c = Cgroups::detect(r);
        let res = Resources {
            cpu_shares: 1024,
            cpu_quota: 20_000,
            memory_limit: 1 << 30,
            memory_swap_limit: 3 << 29,
            unified: [("memory.high".to_string(), "900000000".to_string())].into(),
            ..Default::default()
        };
        assert!(c.create_pod("kubepods/a/pod", Some(&res)).unwrap());
        assert_eq!(read(r, "kubepods/a/cgroup.subtree_control"), "+cpu +memory +pids");
        assert_eq!(read(r, "cgroup.subtree_control"), "cpu\n", "levels that exist are the kubelet's");
        // A level made here delegates from its parent, taking only what the parent offers.
        assert!(c.create_pod("crio", None).unwrap());
        assert_eq!(read(r, "cgroup.subtree_control"), "+cpuset +io +memory +pids");
        assert_eq!(read(r, "kubepods/a/pod/cpu.weight"), "39");
        assert_eq!(read(r, "kubepods/a/pod/cpu.max"), "20000 100000");
        assert_eq!(read(r, "kubepods/a/pod/memory.swap.max"), (1u64 << 29).to_string());
        assert_eq!(read(r, "kubepods/a/pod/memory.high"), "900000000");
    }

    #[test]
    fn weights_match_the_runtimes() {
        assert_eq!((cpu_weight(2), cpu_weight(1024), cpu_weight(262_144), cpu_weight(0)), (1, 39, 10_000, 1));
    }
}
