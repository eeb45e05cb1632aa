//! Pinned network namespaces and the real CNI plugins (Debian's containernetworking-plugins):
//! two pods on one bridge reach each other over TCP, DEL releases addresses and interfaces,
//! and a namespace outlives the thread that made it. Each test has its own bridge, subnet and
//! IPAM directory, and removes them even when it fails.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use crio::network::cni::{Attachment, Cni, NetworkConfig};
use crio::network::netns::NetNs;

const PLUGIN_DIR: &str = "/usr/lib/cni";

struct Fixture {
    dir: tempfile::TempDir,
    bridge: String,
    netns: Vec<PathBuf>,
}

impl Fixture {
    fn new(tag: u8) -> Fixture {
        assert!(Path::new(PLUGIN_DIR).join("bridge").exists(), "containernetworking-plugins not installed");
        let bridge = format!("crt{}{tag}", std::process::id() % 100_000);
        Fixture { dir: tempfile::tempdir().unwrap(), bridge, netns: Vec::new() }
    }

    fn network(&self, subnet: &str) -> NetworkConfig {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": format!("net-{}", self.bridge),
            "plugins": [{
                "type": "bridge", "bridge": self.bridge, "isGateway": true, "ipMasq": false,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": self.dir.path().join("ipam")},
            }],
        });
        NetworkConfig::parse(conf.to_string().as_bytes(), "test").unwrap()
    }

    fn netns(&mut self, name: &str) -> NetNs {
        let ns = NetNs::create(&self.dir.path().join(name)).expect("creating netns");
        self.netns.push(ns.path.clone());
        ns
    }

    fn cni(&self) -> Cni {
        Cni::new(vec![PLUGIN_DIR.into()], self.dir.path().join("cache"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = NetNs::remove(ns);
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

fn attachment(id: &str, ns: &NetNs) -> Attachment {
    Attachment {
        container_id: id.into(),
        netns: ns.path.clone(),
        ifname: "eth0".into(),
        pod_namespace: "default".into(),
        pod_name: id.into(),
        pod_uid: format!("uid-{id}"),
        port_mappings: vec![],
    }
}

/// Interface names inside a namespace, read from its own /sys/class/net view.
fn links(ns: &NetNs) -> Vec<String> {
    ns.run(|| {
        let out = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .collect()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pods_on_a_bridge_talk_over_tcp() {
    let mut fx = Fixture::new(1);
    let net = fx.network(&format!("10.231.{}.0/24", std::process::id() % 200));
    let (a, b) = (fx.netns("a"), fx.netns("b"));
    let cni = fx.cni();
    let added_a = cni.add(&net, &attachment("pod-a", &a)).await.expect("ADD a");
    let added_b = cni.add(&net, &attachment("pod-b", &b)).await.expect("ADD b");
    assert_eq!((added_a.ips.len(), added_b.ips.len()), (1, 1));
    assert_ne!(added_a.ips[0], added_b.ips[0]);
    assert!(links(&a).contains(&"eth0".to_string()));
    cni.check("pod-a").await.expect("CHECK");

    // A server in pod b, a client in pod a.
    let b_ip: IpAddr = added_b.ips[0];
    let listener = b.run(move || TcpListener::bind((b_ip, 8080)).unwrap()).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        s.write_all(b"hello from b").unwrap();
        peer.ip()
    });
    let got = a
        .run(move || {
            let mut s = TcpStream::connect((b_ip, 8080)).unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).unwrap();
            buf
        })
        .unwrap();
    assert_eq!(got, "hello from b");
    assert_eq!(server.join().unwrap(), added_a.ips[0], "b saw a's pod IP");

    cni.del("pod-a", None).await.expect("DEL a");
    assert!(!links(&a).contains(&"eth0".to_string()), "DEL removed eth0");
    cni.del("pod-a", None).await.expect("DEL again is a no-op");
    cni.del("pod-b", None).await.expect("DEL b");
    let ipam = fx.dir.path().join("ipam").join(&net.name);
    let leases: Vec<_> = std::fs::read_dir(&ipam).map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(leases.iter().all(|l| l.to_string_lossy().starts_with("last_reserved") || l == "lock"), "addresses released: {leases:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_add_is_rolled_back_and_errors_name_the_plugin() {
    let mut fx = Fixture::new(2);
    let ns = fx.netns("x");
    let cni = fx.cni();
    // The second plugin does not exist: the bridge ADD must be undone.
    let mut net = fx.network(&format!("10.232.{}.0/24", std::process::id() % 200));
    net.plugins.push(serde_json::json!({"type": "no-such-plugin"}).as_object().unwrap().clone());
    let err = cni.add(&net, &attachment("pod-x", &ns)).await.unwrap_err();
    assert!(err.to_string().contains("no-such-plugin"), "{err}");
    assert!(!links(&ns).contains(&"eth0".to_string()), "rolled back");

    // A plugin's own error object comes through.
    let bad = serde_json::json!({
        "cniVersion": "1.0.0", "name": "bad", "type": "bridge", "bridge": fx.bridge,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "not-a-subnet"}]]},
    });
    let bad = NetworkConfig::parse(bad.to_string().as_bytes(), "bad").unwrap();
    let err = cni.add(&bad, &attachment("pod-y", &ns)).await.unwrap_err().to_string();
    assert!(err.contains("bridge") && err.contains("ADD"), "{err}");
}

#[test]
fn namespace_is_pinned_until_removed() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("ns");
    let ns = NetNs::create(&path).unwrap();
    assert!(NetNs::is_pinned(&path));
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let inside = ns.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap()).unwrap();
    assert_ne!(host, inside, "a new namespace, not the host's");
    // Its loopback is up with 127.0.0.1 (binding fails on a down loopback).
    let bound = ns.run(|| std::net::UdpSocket::bind("127.0.0.1:0").map(|_| ())).unwrap();
    bound.expect("127.0.0.1 in the new namespace: its loopback is up");
    assert_eq!(std::fs::read_link("/proc/self/ns/net").unwrap(), host, "this thread never moved");
    NetNs::remove(&path).unwrap();
    assert!(!path.exists());
    NetNs::remove(&path).expect("removing again succeeds");
}
