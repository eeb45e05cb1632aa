//! The daemon through the field's own client: crictl 1.26.1 from ../shared/conformance (the
//! kubelet's CRI client code of that release, which sends the socket's path as the HTTP/2
//! `:authority`), under a runroot as deep as real nodes have; a path authority on the wire;
//! pods without a hostname and with invalid ones.

mod common;

use common::pods::{env, env_long_runroot};
use common::{Daemon, crictl_binary};
use crio::cri::v1 as cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs crictl against `d`; its stdout, or its stderr as the error.
async fn crictl(d: &Daemon, args: &[&str]) -> Result<String, String> {
    let ep = format!("unix://{}", d.socket.display());
    let out = tokio::process::Command::new(crictl_binary())
        .args(["-r", &ep, "-i", &ep, "--timeout", "30s"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("running crictl");
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if out.status.success() { Ok(text(&out.stdout)) } else { Err(format!("crictl {args:?}: {}", text(&out.stderr))) }
}

fn node_hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn crictl_runs_pods_and_containers_under_a_long_runroot() {
    let e = env_long_runroot(7).await;
    let d = &e.d;
    let version = crictl(d, &["version"]).await.expect("crictl version");
    assert!(version.contains("RuntimeName:  crio") && version.contains("RuntimeApiVersion:  v1"), "{version}");
    crictl(d, &["pull", &e.image]).await.expect("crictl pull");
    assert!(crictl(d, &["images"]).await.expect("crictl images").contains("busybox"));

    // critest's shape: no hostname, a name far longer than a hostname may be.
    let name = format!("crictl-pod-{}", "0123456789abcdef".repeat(4));
    let logs = d.dir.path().join("logs/crictl");
    let pod_json = d.dir.path().join("pod.json");
    let pod_config = serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": "uid-crictl", "attempt": 0},
        "log_directory": logs, "linux": {},
    });
    std::fs::write(&pod_json, pod_config.to_string()).unwrap();
    let pod = crictl(d, &["runp", pod_json.to_str().unwrap()]).await.expect("crictl runp");
    let monitor = d.runroot.join("pods").join(&pod).join("monitor.sock");
    assert!(
        monitor.as_os_str().len() > 107 && monitor.exists(),
        "the monitor serves a socket too long for an address: {}",
        monitor.display()
    );

    let ctr_json = d.dir.path().join("ctr.json");
    let ctr_config = serde_json::json!({
        "metadata": {"name": "c"}, "image": {"image": e.image},
        "command": ["/bin/sh", "-c", "echo hello from crictl; exec sleep 1000"], "log_path": "c.log", "linux": {},
    });
    std::fs::write(&ctr_json, ctr_config.to_string()).unwrap();
    let ctr = crictl(d, &["create", &pod, ctr_json.to_str().unwrap(), pod_json.to_str().unwrap()]).await.expect("crictl create");
    crictl(d, &["start", &ctr]).await.expect("crictl start");
    assert!(crictl(d, &["ps", "-q"]).await.expect("crictl ps").contains(&ctr));
    let hostname = crictl(d, &["exec", "-s", &ctr, "/bin/sh", "-c", "hostname"]).await.expect("crictl exec -s");
    assert_eq!(hostname, node_hostname(), "a pod without a hostname gets the node's");
    let mut log = String::new();
    for _ in 0..100 {
        log = crictl(d, &["logs", &ctr]).await.expect("crictl logs");
        if log.contains("hello from crictl") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(log, "hello from crictl");
    let stats = crictl(d, &["stats", "-o", "json", &ctr]).await.expect("crictl stats");
    assert!(stats.contains(&ctr) && stats.contains("workingSetBytes"), "{stats}");
    // A tty container: the runtime dials the console socket under the long runroot too.
    let tty_json = d.dir.path().join("tty.json");
    let tty_config = serde_json::json!({
        "metadata": {"name": "t"}, "image": {"image": e.image}, "tty": true,
        "command": ["/bin/sh", "-c", "tty; exec sleep 1000"], "log_path": "t.log", "linux": {},
    });
    std::fs::write(&tty_json, tty_config.to_string()).unwrap();
    let tty = crictl(d, &["create", &pod, tty_json.to_str().unwrap(), pod_json.to_str().unwrap()]).await.expect("crictl create (tty)");
    crictl(d, &["start", &tty]).await.expect("crictl start (tty)");
    let mut log = String::new();
    for _ in 0..100 {
        log = crictl(d, &["logs", &tty]).await.expect("crictl logs (tty)");
        if log.contains("/dev/pts/") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(log.contains("/dev/pts/"), "the container's stdio is a pty: {log}");
    crictl(d, &["rm", "-f", &tty]).await.expect("crictl rm -f (tty)");
    crictl(d, &["stop", &ctr]).await.expect("crictl stop");
    crictl(d, &["rm", &ctr]).await.expect("crictl rm");
    crictl(d, &["stopp", &pod]).await.expect("crictl stopp");
    crictl(d, &["rmp", &pod]).await.expect("crictl rmp");
    assert_eq!(crictl(d, &["pods", "-q"]).await.expect("crictl pods"), "");
    assert!(!monitor.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_hostname_is_refused_and_nothing_is_created() {
    let e = env(10).await;
    let d = &e.d;
    let pod_json = d.dir.path().join("pod.json");
    for bad in ["under_score", &"a".repeat(65), "-leading-dash"] {
        let config = serde_json::json!({
            "metadata": {"name": "bad-host", "namespace": "default", "uid": "uid-bad-host", "attempt": 0},
            "hostname": bad, "log_directory": d.dir.path().join("logs/bad"), "linux": {},
        });
        std::fs::write(&pod_json, config.to_string()).unwrap();
        let err = crictl(d, &["runp", pod_json.to_str().unwrap()]).await.expect_err("an invalid hostname is refused");
        assert!(err.contains("InvalidArgument") && err.contains("config.hostname"), "{err}");
    }
    assert_eq!(crictl(d, &["pods", "-q"]).await.expect("crictl pods"), "", "nothing was created");
    let pods = d.dir.path().join("state/pods");
    assert_eq!(std::fs::read_dir(&pods).map(|r| r.count()).unwrap_or(0), 0, "no pod record or directory in {}", pods.display());
    // The name is free: the same pod with a valid hostname runs.
    let config = serde_json::json!({
        "metadata": {"name": "bad-host", "namespace": "default", "uid": "uid-bad-host", "attempt": 0},
        "hostname": "good-host", "log_directory": d.dir.path().join("logs/bad"), "linux": {},
    });
    std::fs::write(&pod_json, config.to_string()).unwrap();
    let pod = crictl(d, &["runp", pod_json.to_str().unwrap()]).await.expect("a valid hostname");
    crictl(d, &["rmp", "-f", &pod]).await.expect("crictl rmp");
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_authority_on_the_wire_is_served() {
    let d = Daemon::start(common::daemon::DaemonConfig::default()).await;
    let mut conn = tokio::net::UnixStream::connect(&d.socket).await.expect("connecting");
    let mut encoder = loona_hpack::Encoder::new();
    let authority = d.socket.display().to_string();
    let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    wire.extend(frame(0x4, 0, 0, &[]));
    // Two requests, as grpc-go of crictl's generation sends them: the path as authority.
    for stream in [1u32, 3] {
        let headers: [(&[u8], &[u8]); 6] = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b":authority", authority.as_bytes()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        wire.extend(frame(0x1, 0x4, stream, &encoder.encode(headers)));
        // An empty VersionRequest: uncompressed, zero length.
        wire.extend(frame(0x0, 0x1, stream, &[0, 0, 0, 0, 0]));
    }
    conn.write_all(&wire).await.unwrap();
    let mut got = Vec::new();
    let mut answered = Vec::new();
    while answered.len() < 2 {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf)).await.expect("an answer").unwrap();
        assert!(n > 0, "the daemon closed the connection: {got:?}");
        got.extend(&buf[..n]);
        answered.clear();
        let mut rest = got.as_slice();
        while rest.len() >= 9 {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            if rest.len() < 9 + len {
                break;
            }
            let (kind, stream) = (rest[3], u32::from_be_bytes(rest[5..9].try_into().unwrap()));
            assert_ne!(kind, 0x3, "stream {stream} was reset");
            // The answer's DATA carries the runtime's name.
            if kind == 0x0 && rest[9..9 + len].windows(4).any(|w| w == b"crio") {
                answered.push(stream);
            }
            rest = &rest[9 + len..];
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, [1, 3]);
    let mut rt = d.runtime().await;
    let v = rt.version(cri::VersionRequest::default()).await.expect("a well-formed authority still works").into_inner();
    assert_eq!(v.runtime_name, "crio");
}
