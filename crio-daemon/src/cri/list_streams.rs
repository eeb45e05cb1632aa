//! The list streaming RPCs of the 1.36 CRI (`StreamPodSandboxes`, `StreamContainers`,
//! `StreamContainerStats`, `StreamPodSandboxStats`, `StreamPodSandboxMetrics`,
//! `StreamImages`): the same items as the matching List RPC, each exactly once, in responses
//! of at most `CHUNK` items, then EOF.
//!
//! Memory stays bounded: the stream holds only what selects the items (ids, or the shared
//! record snapshots) and builds one response at a time as tonic asks for the next, so stats
//! and metrics of thousands of containers are never all in memory. An item whose object went
//! away between the selection and its turn is left out, never sent twice.

use std::future::Future;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::Status;

use super::v1 as cri;
use super::{Services, containers, images, pod_metrics, pods, stats};

/// Items per response: small enough that no response nears the message size limit.
pub const CHUNK: usize = 100;

pub type ItemStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// One response per `CHUNK` keys, each built by `build` only when the previous one was taken;
/// a chunk whose items all went away sends nothing.
fn lazy<K, T, R, F, Fut>(keys: Vec<K>, build: F, wrap: fn(Vec<T>) -> R) -> ItemStream<R>
where
    K: Send + 'static,
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<T>> + Send + 'static,
{
    let chunks = futures::stream::iter(ChunksOf { keys: keys.into_iter() });
    Box::pin(chunks.then(build).filter(|items| std::future::ready(!items.is_empty())).map(move |items| Ok(wrap(items))))
}

/// An iterator of owned `CHUNK`-sized pieces of a vector.
struct ChunksOf<K> {
    keys: std::vec::IntoIter<K>,
}

impl<K> Iterator for ChunksOf<K> {
    type Item = Vec<K>;
    fn next(&mut self) -> Option<Vec<K>> {
        let chunk: Vec<K> = self.keys.by_ref().take(CHUNK).collect();
        (!chunk.is_empty()).then_some(chunk)
    }
}

pub async fn stream_pod_sandboxes(
    s: &Services,
    req: cri::StreamPodSandboxesRequest,
) -> Result<ItemStream<cri::StreamPodSandboxesResponse>, Status> {
    let listed = pods::listed_pods(s, req.filter);
    Ok(lazy(
        listed,
        |chunk| async move { chunk.iter().map(pods::listed).collect() },
        |pod_sandboxes| cri::StreamPodSandboxesResponse { pod_sandboxes },
    ))
}

pub async fn stream_containers(
    s: &Services,
    req: cri::StreamContainersRequest,
) -> Result<ItemStream<cri::StreamContainersResponse>, Status> {
    let listed = containers::listed_containers(s, req.filter).await;
    Ok(lazy(
        listed,
        |chunk| async move { chunk.iter().map(|c| containers::listed(c)).collect() },
        |containers| cri::StreamContainersResponse { containers },
    ))
}

/// A chunk builder over ids: `one` per id, on the services; an id whose object went away
/// (`None`) is left out.
fn by_id<T, Fut>(
    s: &Services,
    one: fn(Services, String) -> Fut,
) -> impl Fn(Vec<String>) -> Pin<Box<dyn Future<Output = Vec<T>> + Send>> + Send + Sync + 'static
where
    T: Send + 'static,
    Fut: Future<Output = Option<T>> + Send + 'static,
{
    let s = s.clone();
    move |chunk| {
        let s = s.clone();
        Box::pin(async move {
            // Side by side, one per CPU, in the order of the chunk.
            let each = futures::stream::iter(chunk).map(|id| one(s.clone(), id)).buffered(stats::width());
            each.filter_map(std::future::ready).collect().await
        })
    }
}

pub async fn stream_container_stats(
    s: &Services,
    req: cri::StreamContainerStatsRequest,
) -> Result<ItemStream<cri::StreamContainerStatsResponse>, Status> {
    let ids = stats::listed_containers(s, req.filter).await;
    let s = s.clone();
    let build = move |chunk: Vec<String>| {
        let s = s.clone();
        async move {
            stats::containers_stats_of(&s, &chunk).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e.message(), containers = chunk.len(), "sampling a chunk of containers failed; left out");
                Vec::new()
            })
        }
    };
    Ok(lazy(ids, build, |container_stats| cri::StreamContainerStatsResponse { container_stats }))
}

pub async fn stream_pod_sandbox_stats(
    s: &Services,
    req: cri::StreamPodSandboxStatsRequest,
) -> Result<ItemStream<cri::StreamPodSandboxStatsResponse>, Status> {
    let ids = stats::listed_pods(s, req.filter);
    let build = by_id(s, |s, id| async move { stats::pod_stats_of(&s, &id).await.ok() });
    Ok(lazy(ids, build, |pod_sandbox_stats| cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }))
}

pub async fn stream_pod_sandbox_metrics(
    s: &Services,
    _req: cri::StreamPodSandboxMetricsRequest,
) -> Result<ItemStream<cri::StreamPodSandboxMetricsResponse>, Status> {
    let ids = pod_metrics::listed_pods(s);
    let build = by_id(s, |s, id| async move { pod_metrics::one_pod(&s, &id).await });
    Ok(lazy(ids, build, |pod_sandbox_metrics| cri::StreamPodSandboxMetricsResponse { pod_sandbox_metrics }))
}

/// Images are few next to containers and their records are small: listed, then chunked.
pub async fn stream_images(s: &Services, req: cri::StreamImagesRequest) -> Result<ItemStream<cri::StreamImagesResponse>, Status> {
    let list = images::list_images(s, cri::ListImagesRequest { filter: req.filter }).await?;
    Ok(lazy(list.images, |chunk| async move { chunk }, |images| cri::StreamImagesResponse { images }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_item_once_in_chunks() {
        for n in [0usize, 1, 99, 100, 101, 2000] {
            let items: Vec<usize> = (0..n).collect();
            let responses: Vec<Vec<usize>> = lazy(items, |c| async move { c }, |v| v).map(|r| r.unwrap()).collect().await;
            assert!(responses.iter().all(|r| !r.is_empty() && r.len() <= CHUNK), "{n}");
            let flat: Vec<usize> = responses.into_iter().flatten().collect();
            assert_eq!(flat, (0..n).collect::<Vec<_>>(), "{n}: each once, in order");
        }
    }

    #[tokio::test]
    async fn items_gone_meanwhile_are_left_out_and_empty_chunks_send_nothing() {
        // Odd items "went away"; the second chunk (100..200) lost everything.
        let keys: Vec<usize> = (0..250).collect();
        let build = |c: Vec<usize>| async move { c.into_iter().filter(|k| k % 2 == 0 && !(100..200).contains(k)).collect::<Vec<_>>() };
        let responses: Vec<Vec<usize>> = lazy(keys, build, |v| v).map(|r| r.unwrap()).collect().await;
        assert_eq!(responses.len(), 2);
        let flat: Vec<usize> = responses.into_iter().flatten().collect();
        assert_eq!(flat, (0..250).filter(|k| k % 2 == 0 && !(100..200).contains(k)).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn chunks_are_built_only_when_asked_for() {
        let built = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = built.clone();
        let build = move |c: Vec<usize>| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { c }
        };
        let mut stream = lazy((0..1000).collect(), build, |v| v);
        stream.next().await.unwrap().unwrap();
        assert_eq!(built.load(std::sync::atomic::Ordering::SeqCst), 1, "one response built for one taken");
    }
}
