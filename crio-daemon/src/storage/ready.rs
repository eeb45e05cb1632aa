//! The next container's root filesystem, made ready: after each create, an overlay of the same
//! image is made under a fresh container id (its writable layer's directories, its mount
//! point, and the overlay itself, built with the new mount API and left detached). A create of
//! that image claims the id for its container and only attaches the mount (`move_mount`),
//! instead of making directories and an overlay superblock (0.5-1 ms on a small VM) while the
//! kubelet waits; the paths the mount shows are the container's own.
//! A detached mount lives as long as its descriptor: a crash leaves nothing mounted, and the
//! directories, named by no record, go at the store's next open (quietly: they carry a
//! `ready` mark). A create of another image, or one that finds the set claimed, makes its root
//! filesystem as before. One set at a time, for the newest create's image.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::overlay::{self, Lower};
use super::{Store, StoreError, io_err};

/// The file that marks a container directory as a ready set's, not a create cut short.
pub(super) const READY_MARK: &str = "ready";

/// The ready set, or one being made (`mount` still `None`).
pub(super) struct Ready {
    pub(super) id: String,
    pub(super) image_id: String,
    pub(super) mount: Option<OwnedFd>,
    /// A create has taken the id and will attach the mount.
    claimed: bool,
}

impl Store {
    /// Claims the ready root filesystem for a create of `image_id`: its id is to be the
    /// container's. A create that fails before [`Store::create_container_with_volumes`] gives it
    /// back with [`Store::unclaim_ready`]; later, removing the container's root drops it.
    pub fn claim_ready(&self, image_id: &str) -> Option<String> {
        let mut slot = self.ready.lock().expect("ready lock poisoned");
        let r = slot.as_mut().filter(|r| !r.claimed && r.mount.is_some() && r.image_id == image_id)?;
        r.claimed = true;
        Some(r.id.clone())
    }

    /// Gives back a claim whose create ended before anything was made under its id.
    pub fn unclaim_ready(&self, id: &str) {
        if let Some(r) = self.ready.lock().expect("ready lock poisoned").as_mut().filter(|r| r.id == id) {
            r.claimed = false;
        }
    }

    /// The ready set named `id`, taken out of the slot: a create adopting it, or a removal.
    pub(super) fn take_ready(&self, id: &str) -> Option<Ready> {
        let mut slot = self.ready.lock().expect("ready lock poisoned");
        if slot.as_ref().is_some_and(|r| r.id == id) { slot.take() } else { None }
    }

    /// Whether `id` names the ready set (or one being made): its directories are no orphans.
    pub(super) fn is_ready_id(&self, id: &str) -> bool {
        self.ready.lock().expect("ready lock poisoned").as_ref().is_some_and(|r| r.id == id)
    }

    /// Makes a root filesystem of `image_id` ready under `id` (a fresh container id), unless
    /// one of that image is ready or claimed; one of another image is dropped first. Blocks:
    /// call on the blocking pool. Kernels without `lowerdir+` get an error and no set.
    pub fn make_ready(&self, image_id: &str, id: &str) -> Result<(), StoreError> {
        if self.ready_unsupported.load(Ordering::Relaxed) {
            return Ok(());
        }
        let replaced = {
            let mut slot = self.ready.lock().expect("ready lock poisoned");
            match slot.as_ref() {
                Some(r) if r.claimed || r.image_id == image_id => return Ok(()),
                _ => {}
            }
            // Named in the slot before its directories exist, so a collection running now
            // leaves them alone.
            slot.replace(Ready { id: id.into(), image_id: image_id.into(), mount: None, claimed: false })
        };
        if let Some(old) = replaced {
            self.drop_ready(old);
        }
        let mut mount = match self.mount_ready(image_id, id) {
            Ok(mount) => Some(mount),
            Err(e) => {
                self.discard_ready(id, image_id, None);
                return Err(e);
            }
        };
        {
            // Published only while its image is in the index: RemoveImage drops the set after
            // it removes the image, so a set mounted from a snapshot taken before the removal
            // is either published in time to be dropped or found orphaned here. A set of a
            // removed image would hold its deleted layers for a create of the image pulled
            // again.
            let mut slot = self.ready.lock().expect("ready lock poisoned");
            if let Some(r) = slot.as_mut().filter(|r| r.id == id && self.snapshot().images.contains_key(image_id)) {
                r.mount = mount.take();
            }
        }
        if mount.is_some() {
            // Dropped while it was being made (its image removed, or another image's set made).
            self.discard_ready(id, image_id, mount);
        }
        Ok(())
    }

    /// Drops the set named `id` whether or not the slot still names it: nothing of a set that
    /// failed or was dropped while being made may stay behind.
    fn discard_ready(&self, id: &str, image_id: &str, mount: Option<OwnedFd>) {
        let r = self.take_ready(id).unwrap_or_else(|| Ready { id: id.into(), image_id: image_id.into(), mount: None, claimed: false });
        drop(mount);
        self.drop_ready(r);
    }

    fn mount_ready(&self, image_id: &str, id: &str) -> Result<OwnedFd, StoreError> {
        let index = self.snapshot();
        let image = index.images.get(image_id).ok_or_else(|| StoreError::ImageNotFound { id: image_id.into() })?;
        let dir = self.container_dir(id);
        // The mark first: a collection that finds these directories while they are being made
        // (the set dropped meanwhile) removes them quietly, not as a create cut short.
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mark = dir.join(READY_MARK);
        fs::write(&mark, b"").map_err(io_err(&mark))?;
        let (upper, work, target) = (dir.join("upper"), dir.join("work"), self.container_mountpoint(id));
        for d in [&upper, &work, &target] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let paths: Vec<(PathBuf, PathBuf)> = self.layer_paths(image);
        let lowers: Vec<Lower<'_>> = paths.iter().map(|(diff, short)| Lower { diff, short }).collect();
        overlay::detached(&lowers, &upper, &work, &target).map_err(|e| {
            // Most likely a kernel without the new mount API or `lowerdir+`: not tried again.
            if !self.ready_unsupported.swap(true, Ordering::Relaxed) {
                tracing::info!(error = %crate::error_chain(&e), "container root filesystems are not made ready ahead; each create mounts its own");
            }
            e.into()
        })
    }

    /// Drops the unclaimed ready set of `image_id` (the image is being removed).
    pub(super) fn drop_ready_of(&self, image_id: &str) {
        let taken = {
            let mut slot = self.ready.lock().expect("ready lock poisoned");
            if slot.as_ref().is_some_and(|r| !r.claimed && r.image_id == image_id) { slot.take() } else { None }
        };
        if let Some(r) = taken {
            self.drop_ready(r);
        }
    }

    /// Detaches a set's mount (its descriptor closed) and deletes its directories.
    fn drop_ready(&self, r: Ready) {
        drop(r.mount);
        if let Err(e) = self.remove_container_dirs(&r.id) {
            tracing::debug!(container_id = %r.id, error = %crate::error_chain(&e), "removing a ready root filesystem");
        }
    }
}
