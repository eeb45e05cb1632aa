//! Bad input and failures: each gets a precise status, a message naming the object and cause,
//! and leaves the store as it was.

mod common;

use common::daemon::DaemonConfig;
use common::{Daemon, ImageBuilder, Layer, Registry};
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn unknown_repository_and_tag_are_not_found() {
    let reg = Registry::start();
    reg.push("known", "1", &ImageBuilder::new().layer(Layer::builder().file("a", b"a").build())).await;
    let d = Daemon::start(DaemonConfig::trusting(&reg)).await;
    for name in [format!("{}/known:2", reg.addr), format!("{}/unknown:1", reg.addr)] {
        let err = d.pull(&name).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{name}: {err:?}");
        assert!(err.message().contains(&reg.addr), "names the registry: {}", err.message());
    }
    assert!(d.list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_down_is_unavailable_naming_it() {
    // Bound but never listening: the port stays ours and every connect is refused.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    let cfg = DaemonConfig { registries_conf: format!("[[registry]]\nlocation = \"{addr}\"\ninsecure = true\n"), ..Default::default() };
    let d = Daemon::start(cfg).await;
    let err = d.pull(&format!("{addr}/x:1")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&addr), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_blob_is_refused_and_nothing_is_stored() {
    let reg = Registry::start();
    let pushed = reg.push("corrupt", "1", &ImageBuilder::new().layer(Layer::busybox())).await;
    reg.corrupt_blob(pushed.layer_digests[0].trim_start_matches("sha256:"));
    let d = Daemon::start(DaemonConfig::trusting(&reg)).await;
    let err = d.pull(&format!("{}/corrupt:1", reg.addr)).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains(&pushed.layer_digests[0]), "names the blob: {}", err.message());
    assert!(d.list().await.is_empty());
    assert_eq!(std::fs::read_dir(d.root().join("layers")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(d.root().join("tmp")).unwrap().count(), 0, "download removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn blocked_registry_names_the_rule() {
    let reg = Registry::start();
    reg.push("app", "1", &ImageBuilder::new().layer(Layer::builder().file("a", b"a").build())).await;
    let registries_conf = format!("[[registry]]\nprefix = \"{}/app\"\nlocation = \"{}/app\"\nblocked = true\n", reg.addr, reg.addr);
    let d = Daemon::start(DaemonConfig { registries_conf, ..Default::default() }).await;
    let err = d.pull(&format!("{}/app:1", reg.addr)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("blocked") && err.message().contains(&format!("{}/app", reg.addr)), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_reject_and_unsupported_signatures() {
    let reg = Registry::start();
    let img = ImageBuilder::new().layer(Layer::builder().file("a", b"a").build());
    reg.push("denied", "1", &img).await;
    reg.push("signed", "1", &img).await;
    reg.push("open", "1", &img).await;
    let mut cfg = DaemonConfig::trusting(&reg);
    cfg.policy = Some(format!(
        r#"{{"default": [{{"type": "insecureAcceptAnything"}}],
            "transports": {{"docker": {{
                "{a}/denied": [{{"type": "reject"}}],
                "{a}/signed": [{{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/pki/key.gpg"}}]
            }}}}}}"#,
        a = reg.addr
    ));
    let d = Daemon::start(cfg).await;
    let err = d.pull(&format!("{}/denied:1", reg.addr)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("reject") && err.message().contains("policy.json"), "{}", err.message());
    let err = d.pull(&format!("{}/signed:1", reg.addr)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(err.message().contains("signedBy"), "{}", err.message());
    d.pull(&format!("{}/open:1", reg.addr)).await.expect("default scope accepts");
    assert_eq!(d.list().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_registry_is_cancelled_by_progress_timeout() {
    // A peer that accepts connections and never answers: the pull must give up, not hang.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(4) {
            held.push(s);
        }
        std::thread::sleep(std::time::Duration::from_secs(8));
    });
    let cfg = DaemonConfig {
        registries_conf: format!("[[registry]]\nlocation = \"{addr}\"\ninsecure = true\n"),
        extra: "pull_progress_timeout = \"1s\"\n".into(),
        ..Default::default()
    };
    let d = Daemon::start(cfg).await;
    let err = d.pull(&format!("{addr}/x:1")).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains(&addr), "{}", err.message());
    drop(d);
    drop(hold);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_layers_are_refused_or_contained() {
    let reg = Registry::start();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"untouched").unwrap();
    let escape = format!("../../../../../../../..{}", outside.path().join("escaped").display());
    let hostile: [(&str, Layer); 3] = [
        ("dotdot", Layer::builder().raw(tar::EntryType::Regular, &escape, None, b"x").build()),
        ("hardlink", Layer::builder().raw(tar::EntryType::Link, "passwd", Some("../../../../../../../../etc/passwd"), b"").build()),
        ("depthbomb", Layer::builder().file(&format!("{}f", "d/".repeat(300)), b"").build()),
    ];
    let deep = Layer::builder().file(&format!("{}f", "d/".repeat(60)), b"").build();
    // A symlink to the host's directory and a file written "through" it: contained in the layer.
    let through = Layer::builder()
        .symlink("evil", outside.path().to_str().unwrap())
        .raw(tar::EntryType::Regular, "evil/victim", None, b"overwritten")
        .build();
    let cfg = DaemonConfig::trusting(&reg);
    for (name, layer) in &hostile {
        reg.push(name, "1", &ImageBuilder::new().layer(layer.clone())).await;
    }
    reg.push("through", "1", &ImageBuilder::new().layer(through)).await;
    reg.push("deep", "1", &ImageBuilder::new().layer(deep)).await;
    let d = Daemon::start(cfg).await;
    for (name, _) in &hostile {
        let err = d.pull(&format!("{}/{name}:1", reg.addr)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains("layer entry"), "{name}: {}", err.message());
    }
    // 60 levels is deep but legal; the store takes it.
    d.pull(&format!("{}/deep:1", reg.addr)).await.expect("deep but legal path");
    d.pull(&format!("{}/through:1", reg.addr)).await.expect("symlinked parent is resolved inside the layer");
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    assert!(!outside.path().join("escaped").exists());
    assert_eq!(d.list().await.len(), 2, "refused images are not stored");
}

/// A TCP proxy to `upstream` that stops passing responses on after `budget` bytes per
/// connection: a registry that stalls in the middle of a blob.
fn stalling_proxy(upstream: String, budget: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
            let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c_read, &mut s_write));
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let mut passed = 0;
                let mut buf = [0u8; 8192];
                while let Ok(n) = s_read.read(&mut buf) {
                    if n == 0 || passed + n > budget {
                        break;
                    }
                    if c_write.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    passed += n;
                }
                // Hold the connection open, sending nothing more.
                std::thread::sleep(std::time::Duration::from_secs(30));
                drop(c_write);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_stalling_mid_blob_is_cancelled() {
    let reg = Registry::start();
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let pushed = reg.push("slow", "1", &ImageBuilder::new().layer(Layer::builder().file("big", &big).build())).await;
    let proxy = stalling_proxy(reg.addr.clone(), 256 * 1024);
    let cfg = DaemonConfig {
        registries_conf: format!("[[registry]]\nlocation = \"{proxy}\"\ninsecure = true\n"),
        extra: "pull_progress_timeout = \"1s\"\n".into(),
        ..Default::default()
    };
    let d = Daemon::start(cfg).await;
    let err = d.pull(&format!("{proxy}/slow:1")).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains(&pushed.layer_digests[0]) && err.message().contains("no progress"), "{}", err.message());
    assert!(d.list().await.is_empty());
    assert_eq!(std::fs::read_dir(d.root().join("tmp")).unwrap().count(), 0, "partial download removed");
}
