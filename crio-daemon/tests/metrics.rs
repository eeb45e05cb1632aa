//! The Prometheus endpoint: CRI operation counts and latency histograms, image pulls, OOM kills
//! (by container name and by level), and the kernel programs' per-container and per-pod series,
//! which leave with their objects.

mod common;

use std::io::{Read, Write};

use common::pods::*;
use crio::cri::v1 as cri;

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics listening");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the series `name{labels}` (labels as printed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

const P: &str = "container_runtime_crio_";

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_operations_and_the_kernel() {
    // Port 0: the kernel picks a free one (a probed port may be taken before the daemon binds
    // it), and the daemon's log says which.
    let extra = "[crio.metrics]\nenable_metrics = true\nmetrics_host = \"127.0.0.1\"\nmetrics_port = 0\n";
    let e = env_config(1, false, extra).await;
    let d = &e.d;
    let port = d.metrics_port();
    assert!(d.pull("127.0.0.1:1/nothing:here").await.is_err());
    let pc = pod_config("metered", &d.dir.path().join("logs/metered"));
    let pod = run_pod(d, pc.clone()).await.unwrap();
    let hog = memory_limited("hog", &e.image, "exec tail /dev/zero", 32 << 20);
    let hog = create(d, &pod, &pc, hog).await.unwrap();
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: hog.clone() }).await.unwrap();
    wait_state(d, &hog, cri::ContainerState::ContainerExited).await;

    let text = scrape(port);
    assert!(value(&text, &format!("{P}operations_total{{operation=\"RunPodSandbox\"}}")) == Some(1.0), "{text}");
    assert_eq!(value(&text, &format!("{P}operations_latency_seconds_total_count{{operation=\"CreateContainer\"}}")), Some(1.0));
    assert!(text.contains(&format!("{P}operations_latency_seconds_total_bucket{{operation=\"StartContainer\",le=\"+Inf\"}} 1")));
    assert_eq!(value(&text, &format!("{P}image_pulls_success_total")), Some(1.0));
    assert_eq!(value(&text, &format!("{P}image_pulls_failure_total")), Some(1.0));
    assert!(value(&text, &format!("{P}image_pulls_bytes_total")).is_some_and(|b| b > 100_000.0), "busybox's layer was downloaded");
    assert_eq!(value(&text, &format!("{P}operations_errors_total{{operation=\"PullImage\"}}")), Some(1.0));
    let name = "k8s_hog_metered_default_uid-metered_0";
    assert_eq!(value(&text, &format!("{P}containers_oom_count_total{{name=\"{name}\"}}")), Some(1.0), "{text}");
    assert_eq!(value(&text, &format!("{P}containers_oom_total")), Some(1.0));
    assert_eq!(value(&text, &format!("{P}oom_kills_total{{level=\"container\"}}")), Some(1.0));
    let execs = format!("{P}container_execs_total{{pod_sandbox_id=\"{pod}\",container_id=\"{hog}\",name=\"{name}\"}}");
    assert!(value(&text, &execs).is_some_and(|v| v >= 1.0), "{text}");
    assert!(text.contains(&format!("{P}pod_network_receive_bytes_total{{pod_sandbox_id=\"{pod}\"")), "{text}");
    assert!(value(&text, &format!("{P}ebpf_program_runs_total{{program=\"crio_exec\"}}")).is_some_and(|v| v >= 1.0), "{text}");
    assert_eq!(value(&text, &format!("{P}kernel_events_lost_total")), Some(0.0));

    // Gone with the container.
    d.runtime().await.remove_container(cri::RemoveContainerRequest { container_id: hog.clone() }).await.unwrap();
    let text = scrape(port);
    assert!(!text.contains(&hog), "series of a removed container are dropped");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}
