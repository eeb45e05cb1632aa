//! Container root filesystems on overlayfs over pulled layers: whiteouts and opaque
//! directories from Docker-style layers take effect, long layer chains mount, and removal
//! leaves no mount or directory behind. Uses the store directly (privileged: mounts).

mod common;

use std::fs;

use common::daemon::{DaemonConfig, unmount_under};
use common::{Daemon, ImageBuilder, Layer, Registry};
use crio::storage::{Store, StoreError};

/// Pulls through the daemon, stops it, and opens its store here.
async fn pulled(reg: &Registry, name: &str) -> (Daemon, Store, String) {
    let mut d = Daemon::start(DaemonConfig::trusting(reg)).await;
    let id = d.pull(&format!("{}/{name}", reg.addr)).await.expect("pull");
    d.stop();
    let store = Store::open(&d.root(), &d.dir.path().join("run")).expect("opening the daemon's store");
    (d, store, id)
}

struct Unmount<'a>(&'a Daemon);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        unmount_under(self.0.dir.path());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn whiteouts_and_opaque_dirs_hide_lower_content() {
    let reg = Registry::start();
    let base = Layer::builder()
        .dir("etc")
        .file("etc/keep", b"keep")
        .file("etc/gone", b"gone")
        .dir("data")
        .file("data/old1", b"1")
        .file("data/old2", b"2")
        .build();
    let top = Layer::builder().whiteout("etc/gone").dir("data").opaque("data").file("data/new", b"new").build();
    reg.push("wh", "1", &ImageBuilder::new().layer(base).layer(top)).await;
    let (d, store, id) = pulled(&reg, "wh:1").await;
    let _guard = Unmount(&d);

    let root = store.create_container("c1", &id).expect("mounting the container rootfs");
    assert_eq!(fs::read(root.join("etc/keep")).unwrap(), b"keep");
    assert!(!root.join("etc/gone").exists(), "whiteout hides the lower file");
    let mut data: Vec<String> = fs::read_dir(root.join("data")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    data.sort();
    assert_eq!(data, ["new"], "opaque dir hides lower entries");
    // Writes land in the container's upper layer, never in the shared image layers.
    fs::write(root.join("etc/keep"), b"changed").unwrap();
    let base_keep =
        fs::read_dir(d.root().join("layers")).unwrap().map(|e| e.unwrap().path().join("diff/etc/keep")).find(|p| p.exists()).unwrap();
    assert_eq!(fs::read(base_keep).unwrap(), b"keep");

    assert!(matches!(store.remove_image(&id), Err(StoreError::ImageInUse { .. })), "image in use cannot be removed");
    store.remove_container("c1").expect("remove rootfs");
    assert!(!root.exists());
    assert!(!fs::read_to_string("/proc/self/mountinfo").unwrap().contains(root.to_str().unwrap()));
    store.remove_container("c1").expect("removing again succeeds");
    store.remove_image(&id).expect("no longer in use");
}

#[tokio::test(flavor = "multi_thread")]
async fn long_layer_chains_mount() {
    let reg = Registry::start();
    let mut img = ImageBuilder::new();
    for i in 0..120 {
        img = img
            .layer(Layer::builder().file(&format!("layer{i}"), format!("{i}").as_bytes()).file("top", format!("{i}").as_bytes()).build());
    }
    reg.push("chain", "1", &img).await;
    let (d, store, id) = pulled(&reg, "chain:1").await;
    let _guard = Unmount(&d);
    // 120 layer paths under a temp root are far past mount(2)'s one-page option limit.
    let root = store.create_container("long", &id).expect("mounting 120 layers");
    assert_eq!(fs::read(root.join("layer0")).unwrap(), b"0");
    assert_eq!(fs::read(root.join("layer119")).unwrap(), b"119");
    assert_eq!(fs::read(root.join("top")).unwrap(), b"119", "the last layer is on top");
    store.remove_container("long").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_survives_store_reopen() {
    let reg = Registry::start();
    reg.push("re", "1", &ImageBuilder::new().layer(Layer::builder().file("f", b"x").build())).await;
    let (d, store, id) = pulled(&reg, "re:1").await;
    let _guard = Unmount(&d);
    let root = store.create_container("c", &id).unwrap();
    drop(store);
    unmount_under(&d.dir.path().join("run"));
    // As after a reboot: the record is there, the mount is not; mounting again restores it.
    let store = Store::open(&d.root(), &d.dir.path().join("run")).unwrap();
    assert!(!root.join("f").exists());
    assert_eq!(store.mount_container("c").unwrap(), root);
    assert_eq!(fs::read(root.join("f")).unwrap(), b"x");
    store.remove_container("c").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_mount_path_with_short_links() {
    use crio::storage::overlay::{self, Lower, OverlayError};
    use crio::storage::{diff_dir, short_link};
    let reg = Registry::start();
    let mut img = ImageBuilder::new();
    for i in 0..3 {
        img = img.layer(Layer::builder().file(&format!("l{i}"), b"x").file("top", format!("{i}").as_bytes()).build());
    }
    reg.push("legacy", "1", &img).await;
    let (d, store, id) = pulled(&reg, "legacy:1").await;
    let _guard = Unmount(&d);
    let layers = store.snapshot().images[&id].layers.clone();
    let paths: Vec<_> = layers.iter().rev().map(|l| (diff_dir(store.root(), l), short_link(store.root(), l))).collect();
    let lowers: Vec<Lower<'_>> = paths.iter().map(|(diff, short)| Lower { diff, short }).collect();
    let t = d.dir.path().join("legacy");
    let (upper, work, target) = (t.join("upper"), t.join("work"), t.join("merged"));
    for p in [&upper, &work, &target] {
        fs::create_dir_all(p).unwrap();
    }
    overlay::mount_legacy(&lowers, &upper, &work, &target).expect("legacy mount");
    assert_eq!(fs::read(target.join("top")).unwrap(), b"2");
    assert!(target.join("l0").exists());
    overlay::unmount(&target).unwrap();
    // Far too many layers for one page: a clear error, not a truncated mount.
    let many: Vec<Lower<'_>> = (0..200).map(|_| Lower { diff: &paths[0].0, short: &paths[0].1 }).collect();
    assert!(matches!(overlay::mount_legacy(&many, &upper, &work, &target), Err(OverlayError::TooManyLayers { .. })));
}
