use super::*;
use proptest::prelude::*;

/// A tar built entry by entry with raw names, so hostile names reach the unpacker untouched.
struct TarBuilder {
    buf: Vec<u8>,
}

impl TarBuilder {
    fn new() -> Self {
        Self { buf: Vec::new() }
    }

    fn entry(mut self, name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) -> Self {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            let n = name.as_bytes();
            gnu.name[..n.len()].copy_from_slice(n);
            if let Some(l) = link {
                gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_uid(rustix::process::getuid().as_raw() as u64);
        h.set_gid(rustix::process::getgid().as_raw() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, tar::EntryType::Regular, data, None)
    }

    fn dir(self, name: &str) -> Self {
        self.entry(name, tar::EntryType::Directory, b"", None)
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, tar::EntryType::Symlink, b"", Some(target))
    }

    fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name, tar::EntryType::Link, b"", Some(target))
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0; 1024]);
        self.buf
    }
}

/// A temp dir holding `root/` (the layer) and `outside/` (what must never be touched).
fn sandbox() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    (t, root, outside)
}

#[test]
fn unpacks_files_dirs_and_links() {
    let (_t, root, _) = sandbox();
    let tar = TarBuilder::new()
        .dir("etc/")
        .file("etc/hostname", b"box\n")
        .symlink("etc/mtab", "/proc/mounts")
        .hardlink("etc/hostname2", "etc/hostname")
        .file("./bin/sh", b"#!")
        .finish();
    let stats = unpack_tar(&tar[..], &root, &Limits::none()).unwrap();
    assert_eq!(fs::read(root.join("etc/hostname")).unwrap(), b"box\n");
    assert_eq!(fs::read_link(root.join("etc/mtab")).unwrap(), PathBuf::from("/proc/mounts"));
    assert_eq!(fs::metadata(root.join("etc/hostname2")).unwrap().ino(), fs::metadata(root.join("etc/hostname")).unwrap().ino());
    assert_eq!(fs::metadata(root.join("etc")).unwrap().mtime(), 1_700_000_000);
    assert_eq!(stats.disk_bytes, 6);
}

#[test]
fn absolute_paths_are_contained() {
    let (_t, root, _) = sandbox();
    let tar = TarBuilder::new().file("/etc/passwd", b"x").finish();
    unpack_tar(&tar[..], &root, &Limits::none()).unwrap();
    assert!(root.join("etc/passwd").exists());
}

#[test]
fn dotdot_escape_is_rejected() {
    let (_t, root, outside) = sandbox();
    let tar = TarBuilder::new().file("../outside/pwned", b"x").finish();
    let err = unpack_tar(&tar[..], &root, &Limits::none()).unwrap_err();
    assert!(matches!(err, UnpackError::Hostile { .. }), "{err}");
    assert!(!outside.join("pwned").exists());
}

#[test]
fn writes_through_symlinked_dirs_stay_inside() {
    let (_t, root, outside) = sandbox();
    // A symlink to the host's dir, then a file "through" it: must land in root/<target>.
    let tar = TarBuilder::new()
        .symlink("escape", outside.to_str().unwrap())
        .file("escape/pwned", b"x")
        .symlink("up", "../../../../..")
        .file("up/pwned2", b"y")
        .finish();
    unpack_tar(&tar[..], &root, &Limits::none()).unwrap();
    assert!(!outside.join("pwned").exists());
    assert!(root.join(outside.strip_prefix("/").unwrap()).join("pwned").exists());
    assert!(root.join("pwned2").exists(), "relative climb is clamped at the layer root");
}

#[test]
fn hardlink_outside_is_rejected() {
    let (_t, root, outside) = sandbox();
    fs::write(outside.join("secret"), b"s").unwrap();
    let tar = TarBuilder::new().hardlink("link", "../outside/secret").finish();
    assert!(matches!(unpack_tar(&tar[..], &root, &Limits::none()), Err(UnpackError::Hostile { .. })));
    // An absolute target is taken inside the layer, where it does not exist.
    let abs = outside.join("secret");
    let tar = TarBuilder::new().hardlink("link", abs.to_str().unwrap()).finish();
    assert!(matches!(unpack_tar(&tar[..], &root, &Limits::none()), Err(UnpackError::Hostile { .. })));
    assert_eq!(fs::metadata(outside.join("secret")).unwrap().nlink(), 1);
}

#[test]
fn hardlink_through_symlink_stays_inside() {
    let (_t, root, outside) = sandbox();
    fs::write(outside.join("secret"), b"s").unwrap();
    let tar = TarBuilder::new().symlink("o", outside.to_str().unwrap()).hardlink("link", "o/secret").finish();
    assert!(matches!(unpack_tar(&tar[..], &root, &Limits::none()), Err(UnpackError::Hostile { .. })));
    assert_eq!(fs::metadata(outside.join("secret")).unwrap().nlink(), 1);
}

#[test]
fn file_replacing_symlink_does_not_follow_it() {
    let (_t, root, outside) = sandbox();
    fs::write(outside.join("victim"), b"original").unwrap();
    let tar = TarBuilder::new().symlink("f", outside.join("victim").to_str().unwrap()).file("f", b"new").finish();
    unpack_tar(&tar[..], &root, &Limits::none()).unwrap();
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"original");
    assert_eq!(fs::read(root.join("f")).unwrap(), b"new");
}

#[test]
fn device_nodes_are_skipped() {
    let (_t, root, _) = sandbox();
    let tar = TarBuilder::new().entry("dev/sda", tar::EntryType::Block, b"", None).finish();
    let stats = unpack_tar(&tar[..], &root, &Limits::none()).unwrap();
    assert_eq!(stats.skipped_devices, 1);
    assert!(!root.join("dev/sda").exists());
}

#[test]
fn path_bombs_are_rejected() {
    assert!(sanitize(&vec![b'a'; 5000]).is_err());
    assert!(sanitize(&vec![b'a'; 300]).is_err());
    assert!(sanitize("a/".repeat(300).as_bytes()).is_err());
    assert_eq!(sanitize(b"/a/./b/../c").unwrap(), vec![OsString::from("a"), OsString::from("c")]);
}

#[test]
fn diff_id_is_checked() {
    let (t, root, _) = sandbox();
    let tar = TarBuilder::new().file("a", b"1").finish();
    let blob = t.path().join("blob");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &tar).unwrap();
    fs::write(&blob, gz.finish().unwrap()).unwrap();
    let stats = unpack_layer(&blob, &root, &Digest::of(&tar), &Limits::none()).unwrap();
    assert_eq!(stats.tar_size, tar.len() as u64);
    let root2 = t.path().join("root2");
    fs::create_dir(&root2).unwrap();
    assert!(matches!(unpack_layer(&blob, &root2, &Digest::of(b"other"), &Limits::none()), Err(UnpackError::DiffId { .. })));
}

#[test]
fn decompression_bombs_stop_at_the_caps() {
    let (t, root, _) = sandbox();
    // 32 MiB of zeros: a few KiB compressed.
    let tar = TarBuilder::new().file("zeros", &vec![0u8; 32 << 20]).finish();
    let blob = t.path().join("bomb.zst");
    fs::write(&blob, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    assert!(fs::metadata(&blob).unwrap().len() < 64 << 10);
    let caps = |layer_bytes, image_bytes| Limits { layer_bytes, image_bytes, ..Limits::none() };
    let err = unpack_layer(&blob, &root, &Digest::of(&tar), &caps(4 << 20, u64::MAX)).unwrap_err();
    assert!(matches!(err, UnpackError::Cap { key: "max_layer_bytes", .. }), "{err:?}");
    let written = fs::metadata(root.join("zeros")).map(|m| m.len()).unwrap_or(0);
    assert!(written <= 5 << 20, "stopped near the cap, not after: {written} bytes written");
    // Two layers of one image share its budget.
    let image = caps(u64::MAX, 48 << 20);
    let r1 = t.path().join("l1");
    let r2 = t.path().join("l2");
    fs::create_dir(&r1).unwrap();
    fs::create_dir(&r2).unwrap();
    unpack_layer(&blob, &r1, &Digest::of(&tar), &image).unwrap();
    let err = unpack_layer(&blob, &r2, &Digest::of(&tar), &image).unwrap_err();
    assert!(matches!(err, UnpackError::Cap { key: "max_image_bytes", .. }), "{err:?}");
    // Entries, per layer and per image.
    let many = (0..100).fold(TarBuilder::new(), |b, i| b.file(&format!("f{i}"), b"")).finish();
    let r3 = t.path().join("l3");
    fs::create_dir(&r3).unwrap();
    let few = Limits { layer_entries: 10, ..Limits::none() };
    assert!(matches!(unpack_tar(&many[..], &r3, &few), Err(UnpackError::Cap { key: "max_layer_entries", .. })));
    assert!(fs::read_dir(&r3).unwrap().count() <= 10);
}

#[test]
fn zstd_and_plain_layers() {
    let (t, root, _) = sandbox();
    let tar = TarBuilder::new().file("z", b"zz").finish();
    let blob = t.path().join("blob.zst");
    fs::write(&blob, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    unpack_layer(&blob, &root, &Digest::of(&tar), &Limits::none()).unwrap();
    assert_eq!(fs::read(root.join("z")).unwrap(), b"zz");
    let plain = t.path().join("blob.tar");
    fs::write(&plain, &tar).unwrap();
    let root2 = t.path().join("r2");
    fs::create_dir(&root2).unwrap();
    unpack_layer(&plain, &root2, &Digest::of(&tar), &Limits::none()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the names, nothing is ever written outside the root.
    #[test]
    fn nothing_escapes(names in proptest::collection::vec("[a-c./]{1,12}", 1..6), links in proptest::collection::vec(proptest::sample::select(vec!["../outside", "..", "../../outside", "/", "a/..", "b", "l0"]), 1..4)) {
        let (_t, root, outside) = sandbox();
        let mut b = TarBuilder::new();
        for (i, l) in links.iter().enumerate() {
            b = b.symlink(&format!("l{i}"), l);
        }
        for n in &names {
            b = b.file(n, b"x");
            b = b.file(&format!("l0/{n}"), b"y");
        }
        let _ = unpack_tar(&b.finish()[..], &root, &Limits::none());
        prop_assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }
}
