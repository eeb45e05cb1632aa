//! Container and pod cgroups on cgroup v1 (and hybrid, where the v1 controllers hold the
//! numbers) and on pure v2: reading them for stats and OOM kills, and making pod cgroups
//! (`pod`). The OCI runtime creates and fills each container's cgroup. The root is a
//! parameter, so tests use a temp tree.

mod pod;
pub mod pressure;
pub mod systemd;
mod usage;

use std::path::{Path, PathBuf};

pub use pod::{CgroupError, cpu_weight};
pub use usage::{CpuRates, Usage};

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

    pub(crate) fn read(&self, controller: &str, path: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(controller, path).join(file)).ok()
    }

    pub(crate) fn number(&self, controller: &str, path: &str, file: &str) -> Option<u64> {
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
}

/// The unified (v2) hierarchy of a hybrid host, where v1 controllers do the accounting and an
/// empty v2 tree is mounted beside them (usually at `<root>/unified`). Each container needs a
/// v2 cgroup of its own there: its inode is the cgroup id that BPF programs see. runc places
/// the container there itself; a runtime that only knows the v1 controllers does not, and then
/// the daemon moves the container's init.
#[derive(Debug, Clone)]
pub struct Unified {
    root: PathBuf,
    proc: PathBuf,
}

impl Unified {
    /// `Some` on hybrid hosts: v1 layout and a v2 hierarchy at `<root>/unified`; `proc` is
    /// where the processes' cgroups are read.
    pub fn detect(cgroups: &Cgroups, proc: &Path) -> Option<Unified> {
        let root = cgroups.root.join("unified");
        (cgroups.layout == Layout::V1 && root.join("cgroup.procs").exists()).then(|| Unified { root, proc: proc.to_path_buf() })
    }

    pub fn path(&self, cgroup_path: &str) -> PathBuf {
        self.root.join(cgroup_path.trim_start_matches('/'))
    }

    /// Makes sure `pid` (the not yet started init) is in the container's v2 cgroup; true when
    /// it had to be moved. A move is checked for first because it is not free: the first
    /// migration after a quiet spell waits for an RCU grace period (4.5-20 ms on an idle node).
    pub fn join(&self, cgroup_path: &str, pid: i32) -> Result<bool, CgroupError> {
        let own = self.proc.join(pid.to_string()).join("cgroup");
        let own = std::fs::read_to_string(&own).map_err(|source| CgroupError::Read { path: own, source })?;
        if unified_path_in(&own).is_some_and(|seen| Unified::is(cgroup_path, seen)) {
            return Ok(false);
        }
        let dir = self.path(cgroup_path);
        std::fs::create_dir_all(&dir).map_err(|source| CgroupError::Create { path: dir.clone(), source })?;
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|source| CgroupError::Write { path: procs, value: pid.to_string(), source })?;
        Ok(true)
    }

    /// Whether `seen`, a unified path as /proc/<pid>/cgroup shows it, is the cgroup at
    /// `cgroup_path`.
    pub fn is(cgroup_path: &str, seen: &str) -> bool {
        seen.strip_prefix('/').is_some_and(|s| s == cgroup_path.trim_start_matches('/'))
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

/// The unified (v2) hierarchy's path in a /proc/<pid>/cgroup text (its `0::` line; none on a
/// v1-only host).
pub fn unified_path_in(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The value of `key` in a "key value" per line file.
pub(crate) fn keyed(text: &str, key: &str) -> u64 {
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
mod unified_tests {
    use super::*;

    fn hybrid(root: &Path) -> Unified {
        write_test_file(root, "cgroup/memory/memory.limit_in_bytes", "");
        write_test_file(root, "cgroup/unified/cgroup.procs", "");
        Unified::detect(&Cgroups::detect(&root.join("cgroup")), &root.join("proc")).expect("a hybrid tree")
    }

    #[test]
    fn an_init_the_runtime_placed_is_not_moved_again() {
        let t = tempfile::tempdir().unwrap();
        let u = hybrid(t.path());
        write_test_file(t.path(), "proc/42/cgroup", "1:memory:/crio/pod-a/crio-b\n0::/crio/pod-a/crio-b\n");
        assert!(!u.join("/crio/pod-a/crio-b", 42).unwrap());
        assert!(!u.path("/crio/pod-a/crio-b").join("cgroup.procs").exists(), "nothing written");
    }

    #[test]
    fn an_init_only_in_the_v1_controllers_is_moved() {
        let t = tempfile::tempdir().unwrap();
        let u = hybrid(t.path());
        write_test_file(t.path(), "proc/42/cgroup", "1:memory:/crio/pod-a/crio-b\n0::/\n");
        assert!(u.join("crio/pod-a/crio-b", 42).unwrap());
        assert_eq!(std::fs::read_to_string(u.path("/crio/pod-a/crio-b").join("cgroup.procs")).unwrap(), "42");
        // A process that is gone: an error, nothing made.
        assert!(u.join("/crio/pod-a/crio-c", 43).is_err());
        assert!(!u.path("/crio/pod-a/crio-c").exists());
    }

    #[test]
    fn the_unified_line_is_found_among_v1_controllers_and_absent_on_v1_only() {
        assert_eq!(unified_path_in("12:memory:/crio/p/c\n1:name=systemd:/\n0::/crio/p/c\n"), Some("/crio/p/c"));
        assert_eq!(unified_path_in("0::/\n"), Some("/"));
        assert_eq!(unified_path_in("12:memory:/crio/p/c\n"), None);
    }

    #[test]
    fn a_seen_path_is_the_cgroup_with_or_without_a_leading_slash_only_when_whole() {
        assert!(Unified::is("/crio/pod-a/crio-b", "/crio/pod-a/crio-b"));
        assert!(Unified::is("crio/pod-a/crio-b", "/crio/pod-a/crio-b"));
        assert!(!Unified::is("/crio/pod-a/crio-b", "/crio/pod-a/crio-bc"));
        assert!(!Unified::is("/crio/pod-a/crio-b", "/"));
        assert!(!Unified::is("/crio/pod-a/crio-b", "crio/pod-a/crio-b"), "/proc always shows it absolute");
    }
}
