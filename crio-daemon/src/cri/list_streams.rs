//! The list streaming RPCs of the 1.36 CRI (`StreamPodSandboxes`, `StreamContainers`,
//! `StreamContainerStats`, `StreamPodSandboxStats`, `StreamImages`): the same items as the
//! matching List RPC, each exactly once, in responses of at most `CHUNK` items, then EOF.
//! The items are gathered by the List handler first (memory as for the List RPC).

use std::pin::Pin;

use futures::Stream;
use tonic::Status;

use super::v1 as cri;
use super::{Services, containers, images, pods, stats};

/// Items per response: small enough that no response nears the message size limit.
pub const CHUNK: usize = 100;

pub type ItemStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `items` in order, `CHUNK` per response.
fn chunked<T: Send + 'static, R: Send + 'static>(mut items: Vec<T>, wrap: fn(Vec<T>) -> R) -> ItemStream<R> {
    let mut out = Vec::with_capacity(items.len().div_ceil(CHUNK));
    while !items.is_empty() {
        let rest = items.split_off(CHUNK.min(items.len()));
        out.push(Ok(wrap(std::mem::replace(&mut items, rest))));
    }
    Box::pin(futures::stream::iter(out))
}

pub async fn stream_pod_sandboxes(
    s: &Services,
    req: cri::StreamPodSandboxesRequest,
) -> Result<ItemStream<cri::StreamPodSandboxesResponse>, Status> {
    let list = pods::list_pod_sandbox(s, cri::ListPodSandboxRequest { filter: req.filter }).await?;
    Ok(chunked(list.items, |pod_sandboxes| cri::StreamPodSandboxesResponse { pod_sandboxes }))
}

pub async fn stream_containers(
    s: &Services,
    req: cri::StreamContainersRequest,
) -> Result<ItemStream<cri::StreamContainersResponse>, Status> {
    let list = containers::list_containers(s, cri::ListContainersRequest { filter: req.filter }).await?;
    Ok(chunked(list.containers, |containers| cri::StreamContainersResponse { containers }))
}

pub async fn stream_container_stats(
    s: &Services,
    req: cri::StreamContainerStatsRequest,
) -> Result<ItemStream<cri::StreamContainerStatsResponse>, Status> {
    let list = stats::list_container_stats(s, cri::ListContainerStatsRequest { filter: req.filter }).await?;
    Ok(chunked(list.stats, |container_stats| cri::StreamContainerStatsResponse { container_stats }))
}

pub async fn stream_pod_sandbox_stats(
    s: &Services,
    req: cri::StreamPodSandboxStatsRequest,
) -> Result<ItemStream<cri::StreamPodSandboxStatsResponse>, Status> {
    let list = stats::list_pod_sandbox_stats(s, cri::ListPodSandboxStatsRequest { filter: req.filter }).await?;
    Ok(chunked(list.stats, |pod_sandbox_stats| cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }))
}

pub async fn stream_images(s: &Services, req: cri::StreamImagesRequest) -> Result<ItemStream<cri::StreamImagesResponse>, Status> {
    let list = images::list_images(s, cri::ListImagesRequest { filter: req.filter }).await?;
    Ok(chunked(list.images, |images| cri::StreamImagesResponse { images }))
}

/// Metrics are not served yet, streamed or not: the same answer as ListPodSandboxMetrics.
pub async fn stream_pod_sandbox_metrics(
    s: &Services,
    _req: cri::StreamPodSandboxMetricsRequest,
) -> Result<ItemStream<cri::StreamPodSandboxMetricsResponse>, Status> {
    stats::list_pod_sandbox_metrics(s, cri::ListPodSandboxMetricsRequest {}).await?;
    Ok(Box::pin(futures::stream::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn every_item_once_in_chunks() {
        for n in [0usize, 1, 99, 100, 101, 2000] {
            let items: Vec<usize> = (0..n).collect();
            let responses: Vec<Vec<usize>> = chunked(items, |v| v).map(|r| r.unwrap()).collect().await;
            assert!(responses.iter().all(|r| !r.is_empty() && r.len() <= CHUNK), "{n}");
            let flat: Vec<usize> = responses.into_iter().flatten().collect();
            assert_eq!(flat, (0..n).collect::<Vec<_>>(), "{n}: each once, in order");
        }
    }
}
