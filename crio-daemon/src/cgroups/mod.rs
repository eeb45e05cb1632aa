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
