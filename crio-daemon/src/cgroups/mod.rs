//! Container and pod cgroups on cgroup v1 (and hybrid, where the v1 controllers hold the
//! numbers) and on pure v2: reading them for stats and OOM kills, and making pod cgroups
//! (`pod`). The OCI runtime creates and fills each container's cgroup. The root is a
//! parameter, so tests use a temp tree.

mod pod;
pub mod pressure;
pub mod systemd;

use std::path::{Path, PathBuf};

pub use pod::{CgroupError, cpu_weight};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Controllers at `<root>/<controller>` (v1, and hybrid hosts).
    V1,
    /// One hierarchy at `<root>`.
    V2,
}

#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
    layout: Layout,
}

/// One sample of a container's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_nanos: u64,
    pub memory_usage: u64,
    pub memory_working_set: u64,
    pub memory_rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub memory_limit: Option<u64>,
    pub pids: u64,
}

impl Usage {
    /// The use of several cgroups together (a pod's containers); no limit, `None` for none.
    pub fn sum(samples: &[Usage]) -> Option<Usage> {
        (!samples.is_empty()).then(|| {
            samples.iter().fold(Usage::default(), |a, u| Usage {
                cpu_nanos: a.cpu_nanos + u.cpu_nanos,
                memory_usage: a.memory_usage + u.memory_usage,
                memory_working_set: a.memory_working_set + u.memory_working_set,
                memory_rss: a.memory_rss + u.memory_rss,
                page_faults: a.page_faults + u.page_faults,
                major_page_faults: a.major_page_faults + u.major_page_faults,
                memory_limit: None,
                pids: a.pids + u.pids,
            })
        })
    }
}

impl Cgroups {
    /// Detects the layout under `root` (normally /sys/fs/cgroup).
    pub fn detect(root: &Path) -> Cgroups {
        let layout = if root.join("cgroup.controllers").exists() { Layout::V2 } else { Layout::V1 };
        Cgroups { root: root.into(), layout }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// A controller's directory of the cgroup at `path` (on v2, the one directory).
    pub fn controller_dir(&self, controller: &str, path: &str) -> PathBuf {
        self.dir(controller, path)
    }

    /// The memory controller's directory of the cgroup at `path`.
    pub fn memory_dir(&self, path: &str) -> PathBuf {
        self.dir("memory", path)
    }

    /// The v2 directory of the cgroup at `path` on a pure v2 host.
    pub fn v2_dir(&self, path: &str) -> Option<PathBuf> {
        (self.layout == Layout::V2).then(|| self.root.join(path.trim_start_matches('/')))
    }

    fn dir(&self, controller: &str, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        match self.layout {
            Layout::V1 => self.root.join(controller).join(rel),
            Layout::V2 => self.root.join(rel),
        }
    }

    fn read(&self, controller: &str, path: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(controller, path).join(file)).ok()
    }

    fn number(&self, controller: &str, path: &str, file: &str) -> Option<u64> {
        self.read(controller, path, file)?.trim().parse().ok()
    }

    /// How many OOM kills happened in the cgroup (`oom_kill` of memory.oom_control / memory.events).
    pub fn oom_kills(&self, path: &str) -> u64 {
        let (file, key) = match self.layout {
            Layout::V1 => ("memory.oom_control", "oom_kill"),
            Layout::V2 => ("memory.events", "oom_kill"),
        };
        self.read("memory", path, file).map(|t| keyed(&t, key)).unwrap_or(0)
    }

    /// A sample for the cgroup at `path` (the OCI spec's cgroupsPath); `None` if it is gone.
    pub fn usage(&self, path: &str) -> Option<Usage> {
        match self.layout {
            Layout::V1 => {
                let stat = self.read("memory", path, "memory.stat")?;
                let usage = self.number("memory", path, "memory.usage_in_bytes").unwrap_or(0);
                let inactive = keyed(&stat, "total_inactive_file");
                let limit = self.number("memory", path, "memory.limit_in_bytes").filter(|l| *l < (1 << 62));
                Some(Usage {
                    cpu_nanos: self.number("cpuacct", path, "cpuacct.usage").unwrap_or(0),
                    memory_usage: usage,
                    memory_working_set: usage.saturating_sub(inactive),
                    memory_rss: keyed(&stat, "total_rss"),
                    page_faults: keyed(&stat, "total_pgfault"),
                    major_page_faults: keyed(&stat, "total_pgmajfault"),
                    memory_limit: limit,
                    pids: self.number("pids", path, "pids.current").unwrap_or(0),
                })
            }
            Layout::V2 => {
                let stat = self.read("memory", path, "memory.stat")?;
                let usage = self.number("memory", path, "memory.current").unwrap_or(0);
                let cpu = self.read("cpu", path, "cpu.stat").map(|t| keyed(&t, "usage_usec") * 1000).unwrap_or(0);
                Some(Usage {
                    cpu_nanos: cpu,
                    memory_usage: usage,
                    memory_working_set: usage.saturating_sub(keyed(&stat, "inactive_file")),
                    memory_rss: keyed(&stat, "anon"),
                    page_faults: keyed(&stat, "pgfault"),
                    major_page_faults: keyed(&stat, "pgmajfault"),
                    memory_limit: self.number("memory", path, "memory.max"),
                    pids: self.number("pids", path, "pids.current").unwrap_or(0),
                })
            }
        }
    }
}

/// The unified (v2) hierarchy of a hybrid host, where v1 controllers do the accounting and an
/// empty v2 tree is mounted beside them (usually at `<root>/unified`). The OCI runtime only
/// places containers in the v1 controllers there, so the daemon adds each container to a v2
/// cgroup of its own: its inode is the cgroup id that BPF programs see.
#[derive(Debug, Clone)]
pub struct Unified {
    root: PathBuf,
}

impl Unified {
    /// `Some` on hybrid hosts: v1 layout and a v2 hierarchy at `<root>/unified`.
    pub fn detect(cgroups: &Cgroups) -> Option<Unified> {
        let root = cgroups.root.join("unified");
        (cgroups.layout == Layout::V1 && root.join("cgroup.procs").exists()).then_some(Unified { root })
    }

    pub fn path(&self, cgroup_path: &str) -> PathBuf {
        self.root.join(cgroup_path.trim_start_matches('/'))
    }

    /// Creates the container's v2 cgroup and moves `pid` (the not yet started init) into it.
    pub fn join(&self, cgroup_path: &str, pid: i32) -> std::io::Result<()> {
        let dir = self.path(cgroup_path);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
    }

    /// Removes the container's v2 cgroup (empty once its processes are gone); a missing one is
    /// removed.
    pub fn remove(&self, cgroup_path: &str) -> std::io::Result<()> {
        match std::fs::remove_dir(self.path(cgroup_path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The value of `key` in a "key value" per line file.
fn keyed(text: &str, key: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

/// Writes `text` at `root/rel`, making the directories: a cgroup tree in a temp dir.
#[cfg(test)]
pub(crate) fn write_test_file(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[cfg(test)]
mod tests {
    use super::write_test_file as write;
    use super::*;

    #[test]
    fn v1_layout() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(
            r,
            "memory/kube/crio-1/memory.stat",
            "cache 10\ntotal_inactive_file 100\ntotal_rss 300\ntotal_pgfault 7\ntotal_pgmajfault 1\n",
        );
        write(r, "memory/kube/crio-1/memory.usage_in_bytes", "1000\n");
        write(r, "memory/kube/crio-1/memory.limit_in_bytes", "9223372036854771712\n");
        write(r, "memory/kube/crio-1/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        write(r, "cpuacct/kube/crio-1/cpuacct.usage", "123456\n");
        write(r, "pids/kube/crio-1/pids.current", "3\n");
        let c = Cgroups::detect(r);
        assert_eq!(c.layout(), Layout::V1);
        let u = c.usage("/kube/crio-1").unwrap();
        assert_eq!(
            u,
            Usage {
                cpu_nanos: 123456,
                memory_usage: 1000,
                memory_working_set: 900,
                memory_rss: 300,
                page_faults: 7,
                major_page_faults: 1,
                memory_limit: None,
                pids: 3
            }
        );
        assert_eq!(c.oom_kills("/kube/crio-1"), 2);
        assert!(c.usage("/kube/gone").is_none());
    }

    #[test]
    fn v2_layout() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "cgroup.controllers", "cpu memory pids\n");
        write(r, "kube/crio-2/memory.stat", "anon 400\ninactive_file 50\npgfault 9\npgmajfault 2\n");
        write(r, "kube/crio-2/memory.current", "500\n");
        write(r, "kube/crio-2/memory.max", "1048576\n");
        write(r, "kube/crio-2/memory.events", "low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n");
        write(r, "kube/crio-2/cpu.stat", "usage_usec 42\nuser_usec 40\n");
        let c = Cgroups::detect(r);
        let u = c.usage("kube/crio-2").unwrap();
        assert_eq!((u.cpu_nanos, u.memory_working_set, u.memory_rss, u.memory_limit), (42_000, 450, 400, Some(1_048_576)));
        assert_eq!(c.oom_kills("kube/crio-2"), 1);
    }
}
