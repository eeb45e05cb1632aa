//! Container root filesystems: an overlay of the image's layers under a writable upper that
//! belongs to the container. The record is written before any directory, so a crash leaves a
//! record that `remove_container` can clean, never an orphaned directory the index forgot.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::overlay::{self, Lower};
use super::{ContainerRecord, Store, StoreError, diff_dir, io_err, short_link};

impl Store {
    fn container_dir(&self, id: &str) -> PathBuf {
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

    /// Creates and mounts a root filesystem for container `id` from image `image_id`.
    pub fn create_container(&self, id: &str, image_id: &str) -> Result<PathBuf, StoreError> {
        self.update(|index| {
            if index.containers.contains_key(id) {
                return Err(StoreError::ContainerExists { id: id.into() });
            }
            if !index.images.contains_key(image_id) {
                return Err(StoreError::ImageNotFound { id: image_id.into() });
            }
            index.containers.insert(id.into(), ContainerRecord { id: id.into(), image_id: image_id.into() });
            Ok(())
        })?;
        match self.mount_container(id) {
            Ok(p) => Ok(p),
            Err(e) => {
                // Undo: nothing of a failed create may remain.
                let _ = self.remove_container(id);
                Err(e)
            }
        }
    }

    /// Mounts an existing container's root filesystem (again, after a reboot); idempotent.
    pub fn mount_container(&self, id: &str) -> Result<PathBuf, StoreError> {
        let index = self.snapshot();
        let c = index.containers.get(id).ok_or_else(|| StoreError::ContainerNotFound { id: id.into() })?;
        let image = index.images.get(&c.image_id).ok_or_else(|| StoreError::ImageNotFound { id: c.image_id.clone() })?;
        let target = self.container_mountpoint(id);
        if overlay::is_mounted(&target) {
            return Ok(target);
        }
        let dir = self.container_dir(id);
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        for d in [&upper, &work, &target] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let paths: Vec<(PathBuf, PathBuf)> =
            image.layers.iter().rev().map(|d| (diff_dir(&self.root, d), short_link(&self.root, d))).collect();
        let lowers: Vec<Lower<'_>> = paths.iter().map(|(diff, short)| Lower { diff, short }).collect();
        overlay::mount(&lowers, &upper, &work, &target)?;
        Ok(target)
    }

    pub fn unmount_container(&self, id: &str) -> Result<(), StoreError> {
        Ok(overlay::unmount(&self.container_mountpoint(id))?)
    }

    /// Unmounts and deletes a container's root filesystem; a missing one is success.
    pub fn remove_container(&self, id: &str) -> Result<(), StoreError> {
        self.unmount_container(id)?;
        for dir in [self.container_mountpoint(id).parent().map(PathBuf::from), Some(self.container_dir(id))].into_iter().flatten() {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Io { path: dir, source }),
            }
        }
        self.update(|index| {
            index.containers.remove(id);
            Ok(())
        })
    }
}
