//! Network namespaces made ahead: the pool fills to its size without mounting anything,
//! hands each out once, pinned where asked, loopback up, and makes one on the spot when empty.

use std::path::Path;
use std::process::Command;

use crio::namespace;
use crio::network::netns::{NetNs, NetNsPool};

/// Unpins what the test pinned, even when it fails.
struct Pins(Vec<std::path::PathBuf>);

impl Drop for Pins {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = NetNs::remove(p);
        }
    }
}

fn loopback_up(ns: &Path) -> bool {
    let out =
        Command::new("nsenter").arg(format!("--net={}", ns.display())).args(["ip", "-o", "link", "show", "lo"]).output().expect("nsenter");
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("LOWER_UP") || text.contains(",UP")
}

#[test]
fn namespaces_made_ahead_are_handed_out_once_each_pinned_with_loopback_up() {
    let dir = tempfile::tempdir().unwrap();
    let pins = Pins((0..3).map(|i| dir.path().join(format!("net{i}"))).collect());
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();

    let pool = NetNsPool::new(2);
    pool.fill();
    assert_eq!(pool.ready(), 2);
    let after_fill = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
    assert_eq!(after_fill, mounts_before, "namespaces made ahead are held by fds, not mounted");

    for (i, p) in pins.0.iter().enumerate() {
        pool.take(p).expect("taking a namespace");
        assert!(NetNs::is_pinned(p), "{} pinned", p.display());
        assert!(loopback_up(p), "loopback up in {}", p.display());
        assert_eq!(pool.ready(), 1usize.saturating_sub(i), "one taken per pod");
    }
    // The third was made on the spot; all three are distinct namespaces.
    let [a, b, c] = [&pins.0[0], &pins.0[1], &pins.0[2]];
    assert!(!namespace::same(a, b) && !namespace::same(b, c) && !namespace::same(a, c));
    assert!(!namespace::same(a, Path::new("/proc/self/ns/net")), "not the node's namespace");
}
