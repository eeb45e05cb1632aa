//! Test harness: a real registry (Debian's docker-registry) on 127.0.0.1, images built from
//! busybox-static and pushed through the distribution API, and the real `crio` binary on a
//! private socket and root. Every piece cleans up in Drop, so a failing test leaves nothing.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

pub mod daemon;
pub mod host;
pub mod image;
pub mod pods;
pub mod registry;
pub mod spdy;
pub mod token;

pub use daemon::Daemon;
#[allow(unused_imports, reason = "not every test binary builds images")]
pub use image::{ImageBuilder, Layer};
pub use registry::Registry;

/// crictl of the conformance kit, beside the repository (as CI lays it out).
pub fn crictl_binary() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/bin/crictl");
    assert!(p.exists(), "these tests need crictl of the conformance kit at {}", p.display());
    p
}

/// A 127.0.0.1 port free when probed; the caller must cope with losing it before it binds.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("binding a probe port").local_addr().unwrap().port()
}

/// A registry holding busybox and a stopped daemon whose store has pulled it (for tests that
/// use the store and the runtime directly); returns the image id too.
pub async fn pulled_busybox() -> (Registry, Daemon, String) {
    let reg = Registry::start();
    reg.push("busybox", "1", &ImageBuilder::new().layer(Layer::busybox())).await;
    let mut d = Daemon::start(daemon::DaemonConfig::trusting(&reg)).await;
    let image = d.pull(&format!("{}/busybox:1", reg.addr)).await.expect("pull busybox");
    d.stop();
    (reg, d, image)
}

/// The daemon's Prometheus page at 127.0.0.1:`port` (an HTTP 200 asserted).
pub fn scrape_metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics listening");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("metrics request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("metrics response");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}
