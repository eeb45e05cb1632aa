//! Exec sessions through the runtime's streaming server, as the kubelet opens them for
//! `kubectl exec`: the Exec RPC, the SPDY upgrade of its URL, the streams, and the command's
//! first output byte. Then what an idle open session costs the runtime in memory.

use std::time::{Duration, Instant};

use crio::cri::v1 as cri;

use super::common::spdy;
use super::scenarios::{Results, Target, remove_pod, start_pod};

/// An exec session of `cmd` with stdout only: the client, and the stdout stream's id.
async fn open(t: &Target, container: &str, cmd: &[&str]) -> (spdy::Client, u32) {
    let req = cri::ExecRequest {
        container_id: container.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        stdout: true,
        ..Default::default()
    };
    let url = t.rt.clone().exec(req).await.expect("Exec").into_inner().url;
    let (status, _, client) = spdy::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut c = client.unwrap_or_else(|| panic!("no upgrade of {url}: {status}"));
    c.open(&[("streamType", "error")]).await;
    let out = c.open(&[("streamType", "stdout")]).await;
    (c, out)
}

/// The runtime's processes outside containers: the daemon, what it added (monitors or
/// shims) and the daemon's other children outside containers (exec helpers, if any are
/// left running; the exec'd commands it adopts live in the container's PID namespace and are
/// the container's, not the runtime's); PSS in bytes.
fn runtime_pss(t: &Target) -> u64 {
    let mut pids = vec![t.daemon];
    pids.extend((t.added)());
    let children = std::fs::read_dir(format!("/proc/{}/task", t.daemon))
        .map(|r| r.flatten().filter_map(|e| std::fs::read_to_string(e.path().join("children")).ok()).collect::<Vec<_>>())
        .unwrap_or_default();
    let pid_ns = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let ours = pid_ns(t.daemon);
    pids.extend(children.iter().flat_map(|c| c.split_whitespace().filter_map(|p| p.parse::<u32>().ok())).filter(|p| pid_ns(*p) == ours));
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter().map(|p| super::procs::memory(p).1).sum()
}

pub async fn streaming(t: &Target, r: &mut Results, round: usize, n: usize, idle: usize) {
    let (pod, ct, _) = start_pod(t, &format!("stream-{round}")).await;
    for _ in 0..n {
        let at = Instant::now();
        let (mut c, out) = open(t, &ct, &["echo", "x"]).await;
        while let Some(f) = c.next().await {
            if matches!(f, crio::streaming::spdy::frame::Frame::Data { stream, ref data, .. } if stream == out && !data.is_empty()) {
                break;
            }
        }
        r.sample("exec session: URL request to first output byte", at.elapsed());
        c.collect().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = runtime_pss(t);
    let mut sessions = Vec::new();
    for _ in 0..idle {
        sessions.push(open(t, &ct, &["sleep", "1000"]).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = runtime_pss(t);
    r.value(
        &format!("exec session: runtime KiB per idle open session ({idle} open)"),
        (after.saturating_sub(before)) as f64 / 1024.0 / idle as f64,
    );
    drop(sessions);
    remove_pod(t, &pod).await;
}
