//! Container root filesystems: an overlay of the image's layers under a writable upper that
//! belongs to the container. The record is in the index (in memory) before any directory is
//! made, so an image in use cannot be removed under the mount, and it is persisted (unflushed:
//! see `persist_unflushed`) before the directories are taken and mounted; a power failure that
//! loses it leaves directories the index does not name, which the store removes when it opens.
//! Image volumes are the same kind of overlay of another image, mounted beside the root
//! filesystem (`<runroot>/overlay/<id>/volumes/<n>`); the container bind-mounts them
//! read-only, so their writable layers stay empty.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::overlay::{self, Lower};
use super::{ContainerRecord, Store, StoreError, diff_dir, io_err, short_link};

/// What a container's root filesystem is mounted from.
enum Root {
    /// The ready set's overlay, made ahead and detached: attached.
    Ready(OwnedFd),
    /// Directories just taken from those made ahead: there, unmounted.
    Fresh,
    /// Directories that may be missing or mounted already (a remount after a reboot).
    Made,
}

impl Store {
    pub(super) fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// The container's writable layer.
    pub fn container_upper(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("upper")
    }

    /// Where the container's root filesystem is mounted.
    pub fn container_mountpoint(&self, id: &str) -> PathBuf {
        self.runroot.join("overlay").join(id).join("merged")
    }

    /// Where image volume `n` of container `id` is mounted.
    pub fn volume_mountpoint(&self, id: &str, n: usize) -> PathBuf {
        self.runroot.join("overlay").join(id).join("volumes").join(n.to_string())
    }

    /// Creates and mounts a root filesystem for container `id` from image `image_id`.
    pub fn create_container(&self, id: &str, image_id: &str) -> Result<PathBuf, StoreError> {
        self.create_container_with_volumes(id, image_id, &[])
    }

    /// Creates and mounts a root filesystem for container `id` from image `image_id`, and one
    /// image volume per id in `volume_images` (at `volume_mountpoint(id, n)`).
    pub fn create_container_with_volumes(&self, id: &str, image_id: &str, volume_images: &[String]) -> Result<PathBuf, StoreError> {
        self.apply(|index| {
            if index.containers.contains_key(id) {
                return Err(StoreError::ContainerExists { id: id.into() });
            }
            for image in std::iter::once(image_id).chain(volume_images.iter().map(String::as_str)) {
                if !index.images.contains_key(image) {
                    return Err(StoreError::ImageNotFound { id: image.into() });
                }
            }
            let record = ContainerRecord { id: id.into(), image_id: image_id.into(), volume_images: volume_images.to_vec() };
            index.containers.insert(id.into(), record);
            Ok(())
        })?;
        // The ready set this create claimed, if its image is the one asked for (a claim
        // checks that).
        let ready = match self.take_ready(id) {
            Some(r) if r.image_id == image_id => r.mount,
            Some(other) => {
                drop(other);
                let _ = self.remove_container_dirs(id);
                None
            }
            None => None,
        };
        // The index is written (to the page cache: one write, shorter than a thread's start)
        // before the directories are taken or mounted.
        let made = self.persist_unflushed().and_then(|()| {
            let root = match ready {
                Some(mount) => Root::Ready(mount),
                None if self.take_dirs_ahead(id) => Root::Fresh,
                None => Root::Made,
            };
            self.mount_parts(id, root)
        });
        if made.is_err() {
            // Undo: nothing of a failed create may remain, on disk or in memory.
            let _ = self.remove_container(id);
            let _ = self.apply(|index| {
                index.containers.remove(id);
                Ok(())
            });
        }
        made
    }

    /// Mounts an existing container's root filesystem and image volumes (again, after a
    /// reboot); idempotent.
    pub fn mount_container(&self, id: &str) -> Result<PathBuf, StoreError> {
        self.mount_parts(id, Root::Made)
    }

    /// Mounts the container's image volumes and root filesystem.
    fn mount_parts(&self, id: &str, root: Root) -> Result<PathBuf, StoreError> {
        let index = self.snapshot();
        let c = index.containers.get(id).ok_or_else(|| StoreError::ContainerNotFound { id: id.into() })?;
        let dir = self.container_dir(id);
        for (n, image_id) in c.volume_images.iter().enumerate() {
            let layers = dir.join("volumes").join(n.to_string());
            self.mount_image(&index, image_id, &layers, &self.volume_mountpoint(id, n), false)?;
        }
        let target = self.container_mountpoint(id);
        match root {
            Root::Ready(mount) => overlay::attach(&mount, &target)?,
            Root::Fresh => self.mount_image(&index, &c.image_id, &dir, &target, true)?,
            Root::Made => self.mount_image(&index, &c.image_id, &dir, &target, false)?,
        }
        Ok(target)
    }

    /// An overlay of `image_id`'s layers at `target`, its writable layer under `dir`; unless
    /// `fresh`, a mounted target is left as it is and missing directories are made.
    fn mount_image(&self, index: &super::Index, image_id: &str, dir: &Path, target: &Path, fresh: bool) -> Result<(), StoreError> {
        let image = index.images.get(image_id).ok_or_else(|| StoreError::ImageNotFound { id: image_id.into() })?;
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        if !fresh {
            if overlay::is_mounted(target) {
                return Ok(());
            }
            for d in [&upper, &work, &target.to_path_buf()] {
                fs::create_dir_all(d).map_err(io_err(d))?;
            }
        }
        let paths = self.layer_paths(image);
        let lowers: Vec<Lower<'_>> = paths.iter().map(|(diff, short)| Lower { diff, short }).collect();
        overlay::mount(&lowers, &upper, &work, target)?;
        Ok(())
    }

    /// Each layer of `image`'s diff directory and short link, topmost first.
    pub(super) fn layer_paths(&self, image: &super::ImageRecord) -> Vec<(PathBuf, PathBuf)> {
        image.layers.iter().rev().map(|d| (diff_dir(&self.root, d), short_link(&self.root, d))).collect()
    }

    /// Unmounts the root filesystem and every image volume (found on disk, so a volume whose
    /// record was lost still goes).
    pub fn unmount_container(&self, id: &str) -> Result<(), StoreError> {
        overlay::unmount(&self.container_mountpoint(id))?;
        let volumes = self.runroot.join("overlay").join(id).join("volumes");
        if let Ok(entries) = fs::read_dir(&volumes) {
            for e in entries.flatten() {
                overlay::unmount(&e.path())?;
            }
        }
        Ok(())
    }

    /// Bytes and inodes of every container's writable layer (a walk of each: call off the
    /// async workers).
    pub fn writable_layers_usage(&self) -> (u64, u64) {
        let ids: Vec<String> = self.snapshot().containers.keys().cloned().collect();
        ids.iter().map(|id| super::unpack::tree_usage(&self.container_upper(id))).fold((0, 0), |(b, i), (b2, i2)| (b + b2, i + i2))
    }

    /// Unmounts and deletes a container's root filesystem; a missing one is success.
    pub fn remove_container(&self, id: &str) -> Result<(), StoreError> {
        self.remove_container_dirs(id)?;
        self.update(|index| {
            index.containers.remove(id);
            Ok(())
        })
    }

    /// Unmounts a container's root filesystem and image volumes and deletes their directories.
    pub(super) fn remove_container_dirs(&self, id: &str) -> Result<(), StoreError> {
        // A create that claimed the ready set and failed before attaching it.
        drop(self.take_ready(id));
        self.unmount_container(id)?;
        for dir in [self.container_mountpoint(id).parent().map(PathBuf::from), Some(self.container_dir(id))].into_iter().flatten() {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Io { path: dir, source }),
            }
        }
        Ok(())
    }
}
