//! The BPF filesystem, where maps are pinned: mounted at start if the host has not.

use std::io;
use std::path::Path;

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: rustix::fs::FsWord = 0xcafe_4a11;

pub fn is_bpffs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type == BPF_FS_MAGIC)
}

/// Mounts a BPF filesystem at `path` unless one is there.
pub fn ensure_mounted(path: &Path) -> io::Result<()> {
    if is_bpffs(path) {
        return Ok(());
    }
    std::fs::create_dir_all(path)?;
    let flags = rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV | rustix::mount::MountFlags::NOEXEC;
    rustix::mount::mount("bpf", path, "bpf", flags, c"mode=0700").map_err(io::Error::from)
}
