//! Listing stats of many containers, the 1.36 way and the old one: ListContainerStats (one
//! response holding every item) against StreamContainerStats (the same items, a response at a
//! time), by the time to the last item and the daemon's peak RSS while it answers; and the
//! kubelet's CRI metrics RPCs. A runtime without an RPC (containerd 1.6 has neither streams
//! nor metrics) gives no sample, so its column stays empty.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crio::cri::v1 as cri;
use futures::StreamExt;

use super::scenarios::{Results, Target, container_config, pod_config, remove_all};

/// Containers per pod: 1000 containers in 20 pods.
const PER_POD: usize = 50;
/// Calls per RPC and round.
const CALLS: usize = 10;

/// The daemon's largest RSS while `call` runs, sampled every millisecond, above what it held
/// before; and how long the call took.
async fn peak_rss<F: std::future::Future<Output = bool>>(daemon: u32, call: F) -> Option<(Duration, u64)> {
    let base = super::procs::memory(daemon).0;
    let (done, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(base)));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(super::procs::memory(daemon).0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let at = Instant::now();
    let answered = call.await;
    let took = at.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    answered.then(|| (took, peak.load(Ordering::Relaxed).saturating_sub(base)))
}

pub async fn list_streams(t: &Target, r: &mut Results, round: usize, n: usize) {
    let mut rt = t.rt.clone();
    let mut pods = Vec::new();
    for p in 0..n.div_ceil(PER_POD) {
        let pc = pod_config(t, &format!("many-{round}-{p}"));
        let req = cri::RunPodSandboxRequest { config: Some(pc.clone()), runtime_handler: String::new() };
        let pod = rt.run_pod_sandbox(req).await.expect("RunPodSandbox").into_inner().pod_sandbox_id;
        for c in 0..PER_POD.min(n - p * PER_POD) {
            let req = cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(t, &format!("c{c}"))),
                sandbox_config: Some(pc.clone()),
            };
            let id = rt.create_container(req).await.expect("CreateContainer").into_inner().container_id;
            rt.start_container(cri::StartContainerRequest { container_id: id }).await.expect("StartContainer");
        }
        pods.push(pod);
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for _ in 0..CALLS {
        let mut list = rt.clone();
        let listed = peak_rss(t.daemon, async move {
            let items = list.list_container_stats(cri::ListContainerStatsRequest { filter: None }).await.expect("ListContainerStats");
            assert_eq!(items.into_inner().stats.len(), n, "every container listed");
            true
        });
        if let Some((took, rss)) = listed.await {
            r.sample(&format!("list streams: ListContainerStats ({n} running)"), took);
            r.value(&format!("list streams: daemon RSS MiB added during ListContainerStats ({n})"), mib(rss));
        }
        let mut stream = rt.clone();
        let streamed = peak_rss(t.daemon, async move {
            let Ok(s) = stream.stream_container_stats(cri::StreamContainerStatsRequest { filter: None }).await else { return false };
            let mut s = s.into_inner();
            let mut items = 0;
            while let Some(resp) = s.next().await {
                items += resp.expect("a response").container_stats.len();
            }
            assert_eq!(items, n, "every container streamed once");
            true
        });
        if let Some((took, rss)) = streamed.await {
            r.sample(&format!("list streams: StreamContainerStats, time to last item ({n} running)"), took);
            r.value(&format!("list streams: daemon RSS MiB added during StreamContainerStats ({n})"), mib(rss));
        }
        let at = Instant::now();
        if rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {}).await.is_ok() {
            r.sample("metrics: ListMetricDescriptors", at.elapsed());
        }
        // As the kubelet reads it: its CRI client takes messages up to 16 MiB.
        let mut kubelet = rt.clone().max_decoding_message_size(16 << 20);
        let at = Instant::now();
        match kubelet.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}).await {
            Ok(resp) => {
                r.sample(&format!("metrics: ListPodSandboxMetrics ({n} containers)"), at.elapsed());
                let bytes = prost::Message::encoded_len(resp.get_ref());
                r.value(&format!("metrics: ListPodSandboxMetrics response MiB ({n} containers)"), mib(bytes as u64));
            }
            // A runtime without the RPC (containerd 1.6) leaves the row to the other.
            Err(e) if e.code() == tonic::Code::Unimplemented => {}
            Err(e) => panic!("ListPodSandboxMetrics: {e}"),
        }
        let at = Instant::now();
        if let Ok(s) = kubelet.stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {}).await {
            let mut s = s.into_inner();
            let mut pods = 0;
            while let Some(resp) = s.next().await {
                pods += resp.expect("a metrics response").pod_sandbox_metrics.len();
            }
            assert_eq!(pods, n.div_ceil(PER_POD), "every pod streamed once");
            r.sample(&format!("metrics: StreamPodSandboxMetrics, time to last item ({n} containers)"), at.elapsed());
        }
    }
    remove_all(t, pods).await;
}
