use super::*;
use crate::storage::digest::Digest;

fn record(id_seed: &[u8], layers: Vec<Digest>, tags: &[&str]) -> ImageRecord {
    let config_digest = Digest::of(id_seed);
    ImageRecord {
        id: config_digest.hex().to_string(),
        config_digest,
        manifest_digest: Digest::of(b"manifest"),
        repo_tags: tags.iter().map(|t| t.to_string()).collect(),
        repo_digests: vec![],
        layers,
        size: 1,
        user: String::new(),
        pulled_at_unix: 0,
    }
}

fn add_layer(store: &Store, content: &[u8]) -> Digest {
    let d = Digest::of(content);
    let staging = store.temp_dir().unwrap().keep();
    fs::create_dir(staging.join("diff")).unwrap();
    fs::write(staging.join("diff/file"), content).unwrap();
    let stats = LayerStats { tar_size: 10, disk_bytes: content.len() as u64, inodes: 1, skipped_devices: 0 };
    store.commit_layer(&staging, LayerRecord { diff_id: d.clone(), compressed_digest: d.clone(), stats }).unwrap();
    d
}

#[test]
fn tags_move_and_layers_are_shared_and_collected() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("root"), &t.path().join("run")).unwrap();
    let base = add_layer(&store, b"base");
    let top = add_layer(&store, b"top");
    let a = store.commit_image(record(b"a", vec![base.clone()], &["r/x:1"]), b"{}", b"{}").unwrap();
    let b = store.commit_image(record(b"b", vec![base.clone(), top.clone()], &["r/x:1", "r/x:2"]), b"{}", b"{}").unwrap();
    let snap = store.snapshot();
    assert!(snap.images[&a.id].repo_tags.is_empty(), "tag moved to the newer image");
    assert_eq!(snap.images[&b.id].repo_tags, ["r/x:1", "r/x:2"]);
    store.remove_image(&b.id).unwrap();
    assert!(store.has_layer(&base), "still used by a");
    assert!(!store.has_layer(&top));
    assert!(!diff_dir(store.root(), &top).exists());
    assert_eq!(store.layers_usage(), (4, 1));
}

#[test]
fn reopen_recovers_index_and_clears_debris() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let id;
    {
        let store = Store::open(&root, &t.path().join("run")).unwrap();
        let l = add_layer(&store, b"l");
        id = store.commit_image(record(b"a", vec![l], &["r/x:1"]), b"{}", b"{\"x\":1}").unwrap().id;
        // A layer committed by a pull that died before its image was recorded.
        add_layer(&store, b"orphan");
        fs::create_dir_all(root.join("tmp/partial")).unwrap();
        fs::create_dir_all(root.join("layers/deadbeef")).unwrap();
    }
    let store = Store::open(&root, &t.path().join("run")).unwrap();
    assert_eq!(store.snapshot().images[&id].repo_tags, ["r/x:1"]);
    assert_eq!(store.image_config(&id).unwrap(), b"{\"x\":1}");
    assert!(!store.has_layer(&Digest::of(b"orphan")));
    assert!(!root.join("tmp/partial").exists());
    assert!(!root.join("layers/deadbeef").exists());
}

#[test]
fn leased_layers_survive_collection() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&t.path().join("root"), &t.path().join("run")).unwrap());
    let l = add_layer(&store, b"pulling");
    let lease = store.lease_layers(std::slice::from_ref(&l));
    let other = store.commit_image(record(b"o", vec![], &[]), b"{}", b"{}").unwrap();
    store.remove_image(&other.id).unwrap();
    assert!(store.has_layer(&l));
    drop(lease);
    let another = store.commit_image(record(b"p", vec![], &[]), b"{}", b"{}").unwrap();
    store.remove_image(&another.id).unwrap();
    assert!(!store.has_layer(&l));
}

#[test]
fn missing_layer_refuses_commit() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("root"), &t.path().join("run")).unwrap();
    let err = store.commit_image(record(b"a", vec![Digest::of(b"nope")], &[]), b"{}", b"{}").unwrap_err();
    assert!(matches!(err, StoreError::LayerMissing { .. }));
    assert!(store.snapshot().images.is_empty());
}

#[test]
fn image_in_use_cannot_be_removed() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("root"), &t.path().join("run")).unwrap();
    let img = store.commit_image(record(b"a", vec![], &[]), b"{}", b"{}").unwrap();
    // Record only: mounting needs root and is covered by the integration tests.
    store
        .update(|i| {
            i.containers.insert("c1".into(), ContainerRecord { id: "c1".into(), image_id: img.id.clone(), volume_images: vec![] });
            Ok(())
        })
        .unwrap();
    assert!(matches!(store.remove_image(&img.id), Err(StoreError::ImageInUse { .. })));
    // An image mounted as a volume is in use as well.
    let volume = store.commit_image(record(b"v", vec![], &[]), b"{}", b"{}").unwrap();
    store
        .update(|i| {
            i.containers
                .insert("c2".into(), ContainerRecord { id: "c2".into(), image_id: img.id.clone(), volume_images: vec![volume.id.clone()] });
            Ok(())
        })
        .unwrap();
    assert!(matches!(store.remove_image(&volume.id), Err(StoreError::ImageInUse { .. })));
}

#[test]
fn recommitting_the_same_image_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("root"), &t.path().join("run")).unwrap();
    let l = add_layer(&store, b"l");
    store.commit_image(record(b"a", vec![l.clone()], &["r/x:1"]), b"{}", b"{}").unwrap();
    let index = t.path().join("root/index.record");
    let before = fs::metadata(&index).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    store.commit_image(record(b"a", vec![l.clone()], &["r/x:1"]), b"{}", b"{}").unwrap();
    assert_eq!(fs::metadata(&index).unwrap().modified().unwrap(), before);
    // A new tag is a change.
    store.commit_image(record(b"a", vec![l], &["r/x:2"]), b"{}", b"{}").unwrap();
    assert_eq!(store.snapshot().images[&Digest::of(b"a").hex().to_string()].repo_tags, ["r/x:1", "r/x:2"]);
}

#[test]
fn an_index_of_the_earlier_json_format_is_read_and_replaced() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let store = Store::open(&root, &t.path().join("run")).unwrap();
    let l = add_layer(&store, b"l");
    store.commit_image(record(b"a", vec![l.clone()], &["r/x:1"]), b"{}", b"{}").unwrap();
    // The same index as an earlier version wrote it.
    let index = serde_json::to_vec(&*store.snapshot()).unwrap();
    drop(store);
    fs::remove_file(root.join("index.record")).unwrap();
    fs::write(root.join("index.json"), index).unwrap();
    let store = Store::open(&root, &t.path().join("run")).unwrap();
    assert_eq!(store.snapshot().images.len(), 1, "read from index.json");
    store.commit_image(record(b"a", vec![l], &["r/x:2"]), b"{}", b"{}").unwrap();
    assert!(!root.join("index.json").exists() && root.join("index.record").exists(), "replaced at the first update");
    let again = Store::open(&root, &t.path().join("run")).unwrap();
    assert_eq!(again.snapshot().images[&Digest::of(b"a").hex().to_string()].repo_tags, ["r/x:1", "r/x:2"]);
}

#[test]
fn directories_of_a_create_cut_short_are_removed_at_open() {
    let t = tempfile::tempdir().unwrap();
    let (root, run) = (t.path().join("root"), t.path().join("run"));
    let store = Store::open(&root, &run).unwrap();
    let l = add_layer(&store, b"l");
    store.commit_image(record(b"a", vec![l], &["r/x:1"]), b"{}", b"{}").unwrap();
    let id = Digest::of(b"a").hex().to_string();
    store.create_container("kept", &id).unwrap();
    drop(store);
    // A crash after the directories were made, before the index named them.
    for d in [root.join("containers/ghost/upper"), run.join("overlay/ghost/merged")] {
        fs::create_dir_all(d).unwrap();
    }
    let store = Store::open(&root, &run).unwrap();
    assert!(!root.join("containers/ghost").exists() && !run.join("overlay/ghost").exists(), "collected");
    assert!(root.join("containers/kept/upper").exists(), "a named container's layer stays");
    store.remove_container("kept").unwrap();
}

#[test]
fn a_containers_directories_are_made_ahead_and_taken_by_rename() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let (root, run) = (t.path().join("root"), t.path().join("run"));
    let store = Store::open(&root, &run).unwrap();
    let ahead = [root.join("containers/.ahead"), run.join("overlay/.ahead")];
    for d in ["containers/.ahead/upper", "containers/.ahead/work"] {
        assert!(root.join(d).is_dir(), "{d} made at open");
    }
    assert!(run.join("overlay/.ahead/merged").is_dir());
    let inodes: Vec<u64> = ahead.iter().map(|d| fs::metadata(d).unwrap().ino()).collect();
    assert!(store.take_dirs_ahead("c1"), "both sets taken");
    assert_eq!(fs::metadata(root.join("containers/c1")).unwrap().ino(), inodes[0], "renamed, not made");
    assert_eq!(fs::metadata(run.join("overlay/c1")).unwrap().ino(), inodes[1]);
    assert!(ahead.iter().all(|d| !d.exists()), "taken");
    // Nothing ahead: a create takes nothing and makes its own.
    assert!(!store.take_dirs_ahead("c2"));
    assert!(!root.join("containers/c2").exists());
    // Made again by several threads at once: one set is kept, no half-made one is left.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| store.make_dirs_ahead().unwrap());
        }
    });
    for parent in [root.join("containers"), run.join("overlay")] {
        let names: Vec<String> = fs::read_dir(&parent).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.iter().filter(|n| n.starts_with(".ahead")).count(), 1, "{names:?}");
    }
    // A set cut short by a crash is collected at open, and a whole one made again.
    drop(store);
    fs::create_dir_all(root.join("containers/.ahead-x1/upper")).unwrap();
    let _store = Store::open(&root, &run).unwrap();
    assert!(!root.join("containers/.ahead-x1").exists());
    assert!(root.join("containers/.ahead/work").is_dir());
}

#[test]
fn a_root_filesystem_made_ready_is_claimed_by_a_create_of_its_image_and_attached() {
    let t = tempfile::tempdir().unwrap();
    let (root, run) = (t.path().join("root"), t.path().join("run"));
    let store = Store::open(&root, &run).unwrap();
    let l = add_layer(&store, b"l");
    let a = store.commit_image(record(b"a", vec![l.clone()], &["r/a:1"]), b"{}", b"{}").unwrap().id;
    let b = store.commit_image(record(b"b", vec![l], &["r/b:1"]), b"{}", b"{}").unwrap().id;
    store.make_ready(&a, "r1").unwrap();
    assert!(root.join("containers/r1/ready").exists(), "marked as made ahead");
    assert!(!overlay::is_mounted(&store.container_mountpoint("r1")), "detached until a create attaches it");
    assert_eq!(store.claim_ready(&b), None, "a create of another image makes its own");
    assert_eq!(store.claim_ready(&a).as_deref(), Some("r1"));
    assert_eq!(store.claim_ready(&a), None, "claimed once");
    store.unclaim_ready("r1");
    assert_eq!(store.claim_ready(&a).as_deref(), Some("r1"), "given back by a create that failed first");
    // A collection (RemoveImage runs one) while the set is claimed leaves it alone.
    store.collect_garbage().unwrap();
    let rootfs = store.create_container("r1", &a).unwrap();
    assert!(overlay::is_mounted(&rootfs));
    assert_eq!(fs::read(rootfs.join("file")).unwrap(), b"l");
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(info.contains(&format!("upperdir={}", root.join("containers/r1/upper").display())), "the container's own paths");
    // A set of another image replaces an unclaimed one, whose directories go.
    store.make_ready(&a, "r2").unwrap();
    store.make_ready(&a, "r3").unwrap();
    assert!(!root.join("containers/r3").exists(), "one set per image");
    store.make_ready(&b, "r4").unwrap();
    assert!(!root.join("containers/r2").exists() && !run.join("overlay/r2").exists());
    // Removing its image drops it.
    store.remove_image(&b).unwrap();
    assert!(!root.join("containers/r4").exists() && !run.join("overlay/r4").exists());
    // A create that claimed a set and failed: its removal drops the set.
    store.make_ready(&a, "r5").unwrap();
    assert_eq!(store.claim_ready(&a).as_deref(), Some("r5"));
    store.remove_container("r5").unwrap();
    assert!(!root.join("containers/r5").exists() && store.claim_ready(&a).is_none());
    // A set left by a daemon that died (its mount went with it) is removed at the next open.
    store.make_ready(&a, "r6").unwrap();
    drop(store);
    let store = Store::open(&root, &run).unwrap();
    assert!(!root.join("containers/r6").exists() && !run.join("overlay/r6").exists());
    assert!(root.join("containers/r1/upper").exists(), "the container's layer stays");
    store.remove_container("r1").unwrap();
}

/// A set made ready while its image is removed (a create's follow-up racing RemoveImage) is
/// never left holding the removed image's layers, and leaves no directories behind.
#[test]
fn a_root_filesystem_made_ready_while_its_image_is_removed_is_not_kept() {
    let t = tempfile::tempdir().unwrap();
    let (root, run) = (t.path().join("root"), t.path().join("run"));
    let store = Store::open(&root, &run).unwrap();
    for n in 0..40 {
        let l = add_layer(&store, b"l");
        let a = store.commit_image(record(b"a", vec![l], &["r/a:1"]), b"{}", b"{}").unwrap().id;
        let id = format!("r{n}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = store.make_ready(&a, &id);
            });
            s.spawn(|| store.remove_image(&a).unwrap());
        });
        assert!(!store.is_ready_id(&id) && store.claim_ready(&a).is_none(), "round {n}: a set of a removed image is kept");
        for parent in [root.join("containers"), run.join("overlay")] {
            let left: Vec<String> = fs::read_dir(&parent)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with(".ahead"))
                .collect();
            assert!(left.is_empty(), "round {n}: {} holds {left:?}", parent.display());
        }
    }
}

/// A pull's commit racing RemoveImage of another image (critest's image benchmark does both at
/// once): the collection RemoveImage runs leaves the directory being committed alone.
#[test]
fn an_image_being_committed_survives_a_collection() {
    let t = tempfile::tempdir().unwrap();
    let (root, run) = (t.path().join("root"), t.path().join("run"));
    let store = Arc::new(Store::open(&root, &run).unwrap());
    let l = add_layer(&store, b"l");
    // As a pull holds the layers it commits.
    let _lease = store.lease_layers(std::slice::from_ref(&l));
    let config = vec![b'x'; 64 << 10];
    for n in 0..40 {
        let other = store.commit_image(record(b"other", vec![l.clone()], &["r/o:1"]), b"{}", b"{}").unwrap().id;
        let committed = std::thread::scope(|s| {
            s.spawn(|| store.remove_image(&other).unwrap());
            s.spawn(|| store.commit_image(record(b"a", vec![l.clone()], &["r/a:1"]), b"{}", &config)).join().unwrap()
        });
        let id = committed.unwrap_or_else(|e| panic!("round {n}: {e}")).id;
        assert_eq!(fs::read(root.join("images").join(&id).join("config.json")).unwrap().len(), config.len(), "round {n}");
        store.remove_image(&id).unwrap();
    }
}
