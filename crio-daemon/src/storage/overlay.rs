//! Overlay mounts of container root filesystems. Long layer chains overflow mount(2)'s one-page
//! option string, so layers are added one by one with the new mount API's `lowerdir+`
//! (Linux 6.8+). Older kernels get mount(2) with each layer named by a short link under the
//! store root (`l/<id>`), which fits about a hundred layers in a page.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags};

/// mount(2) copies at most one page of options.
const LEGACY_OPTIONS_MAX: usize = 4095;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("failed to mount overlay at {target} ({step})")]
    Mount {
        target: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "overlay at {target} needs {len} bytes of mount options for {layers} layers; this kernel lacks lowerdir+ and mount(2) takes {LEGACY_OPTIONS_MAX}"
    )]
    TooManyLayers { target: PathBuf, layers: usize, len: usize },
    #[error("failed to unmount {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One layer: its diff directory and the short link that names it for the legacy path.
pub struct Lower<'a> {
    pub diff: &'a Path,
    pub short: &'a Path,
}

/// Mounts `lowers` (topmost first) under `upper`/`work` at `target`.
pub fn mount(lowers: &[Lower<'_>], upper: &Path, work: &Path, target: &Path) -> Result<(), OverlayError> {
    match mount_new_api(lowers, upper, work, target) {
        Ok(()) => Ok(()),
        // ENOSYS: no fsopen; EINVAL: overlay without lowerdir+.
        Err((_, Errno::NOSYS | Errno::INVAL)) => mount_legacy(lowers, upper, work, target),
        Err((step, e)) => Err(OverlayError::Mount { target: target.into(), step, source: e.into() }),
    }
}

fn mount_new_api(lowers: &[Lower<'_>], upper: &Path, work: &Path, target: &Path) -> Result<(), (&'static str, Errno)> {
    let mnt = detached_new_api(lowers, upper, work)?;
    attach_fd(&mnt, target)
}

/// The overlay as a mount of its own, attached nowhere yet: it lives as long as its
/// descriptor.
fn detached_new_api(lowers: &[Lower<'_>], upper: &Path, work: &Path) -> Result<OwnedFd, (&'static str, Errno)> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| ("fsopen", e))?;
    for l in lowers {
        rustix::mount::fsconfig_set_string(fs.as_fd(), "lowerdir+", l.diff).map_err(|e| ("lowerdir+", e))?;
    }
    rustix::mount::fsconfig_set_string(fs.as_fd(), "upperdir", upper).map_err(|e| ("upperdir", e))?;
    rustix::mount::fsconfig_set_string(fs.as_fd(), "workdir", work).map_err(|e| ("workdir", e))?;
    rustix::mount::fsconfig_create(fs.as_fd()).map_err(|e| ("fsconfig create", e))?;
    rustix::mount::fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty()).map_err(|e| ("fsmount", e))
}

fn attach_fd(mnt: &OwnedFd, target: &Path) -> Result<(), (&'static str, Errno)> {
    rustix::mount::move_mount(mnt.as_fd(), "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| ("move_mount", e))
}

/// An overlay of `lowers` (topmost first) under `upper`/`work`, made but not attached (see
/// [`attach`]); needs the new mount API and `lowerdir+` (Linux 6.8).
pub fn detached(lowers: &[Lower<'_>], upper: &Path, work: &Path, target: &Path) -> Result<OwnedFd, OverlayError> {
    detached_new_api(lowers, upper, work).map_err(|(step, e)| OverlayError::Mount { target: target.into(), step, source: e.into() })
}

/// Attaches a mount made by [`detached`] at `target`.
pub fn attach(mnt: &OwnedFd, target: &Path) -> Result<(), OverlayError> {
    attach_fd(mnt, target).map_err(|(step, e)| OverlayError::Mount { target: target.into(), step, source: e.into() })
}

/// mount(2) with short links; used where `lowerdir+` is missing (public so tests can exercise it on new kernels).
pub fn mount_legacy(lowers: &[Lower<'_>], upper: &Path, work: &Path, target: &Path) -> Result<(), OverlayError> {
    let lower: Vec<String> = lowers.iter().map(|l| l.short.display().to_string()).collect();
    let options = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    if options.len() > LEGACY_OPTIONS_MAX {
        return Err(OverlayError::TooManyLayers { target: target.into(), layers: lowers.len(), len: options.len() });
    }
    let data =
        CString::new(options).map_err(|e| OverlayError::Mount { target: target.into(), step: "options", source: io::Error::other(e) })?;
    rustix::mount::mount("overlay", target, "overlay", MountFlags::empty(), data.as_c_str()).map_err(|e| OverlayError::Mount {
        target: target.into(),
        step: "mount",
        source: e.into(),
    })
}

/// Detaches the mount at `target`; nothing mounted there is success (removal is idempotent).
pub fn unmount(target: &Path) -> Result<(), OverlayError> {
    match rustix::mount::unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
        Ok(()) | Err(Errno::INVAL | Errno::NOENT) => Ok(()),
        Err(e) => Err(OverlayError::Unmount { target: target.into(), source: e.into() }),
    }
}

/// A mount point sits on another device than its parent directory.
pub fn is_mounted(target: &Path) -> bool {
    let (Ok(m), Some(parent)) = (std::fs::symlink_metadata(target), target.parent()) else { return false };
    std::fs::symlink_metadata(parent).is_ok_and(|p| p.dev() != m.dev())
}
