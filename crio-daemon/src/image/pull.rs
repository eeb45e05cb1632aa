//! Pulling: candidates from short-name resolution, each checked against the signature policy,
//! each tried at its mirrors and then its location. The manifest (an index resolved to this
//! host's platform), the config, then the layers the store lacks, downloaded in parallel up to
//! a bound and unpacked as each arrives. Concurrent pulls of one name share one download, and
//! the pull runs in its own task so a caller that gives up (a kubelet deadline) does not waste
//! it: the retry finds it done or joins it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::auth::RequestAuth;
use super::manifest::{self, Descriptor, Document};
use super::reference::{ImageName, Reference};
use super::registries::Endpoint;
use super::registry::Session;
use super::{ImageError, ImageService};
use crate::storage::digest::Digest;
use crate::storage::{ImageRecord, LayerRecord, StoreError, unpack};

pub type SharedPull = Shared<BoxFuture<'static, Result<PullOutcome, Arc<ImageError>>>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PullKey {
    name: String,
    auth: RequestAuth,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PullOutcome {
    pub id: String,
    /// The fully qualified name it was pulled as.
    pub reference: String,
}

#[derive(Deserialize)]
struct ConfigDoc {
    #[serde(default)]
    config: Option<ContainerConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct ContainerConfig {
    #[serde(rename = "User", default)]
    user: String,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<Digest>,
}

impl ImageService {
    pub async fn pull(self: &Arc<Self>, name: &str, auth: RequestAuth) -> Result<PullOutcome, Arc<ImageError>> {
        let parsed = ImageName::parse(name).map_err(|e| Arc::new(e.into()))?;
        let candidates = self.registries.resolve_for_pull(&parsed).map_err(|e| Arc::new(e.into()))?;
        let key = PullKey { name: candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","), auth: auth.clone() };
        let shared = {
            let mut inflight = self.inflight.lock().expect("inflight pulls poisoned");
            match inflight.get(&key) {
                Some(s) => {
                    tracing::debug!(image = name, "joining a pull already in progress");
                    s.clone()
                }
                None => {
                    let svc = self.clone();
                    let task_key = key.clone();
                    let display = name.to_string();
                    let task = tokio::spawn(async move {
                        let result = svc.pull_candidates(&display, candidates, &auth).await;
                        svc.inflight.lock().expect("inflight pulls poisoned").remove(&task_key);
                        result
                    });
                    let shared = async move {
                        match task.await {
                            Ok(r) => r.map_err(Arc::new),
                            Err(e) => Err(Arc::new(ImageError::Task(e))),
                        }
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, shared.clone());
                    shared
                }
            }
        };
        shared.await
    }

    async fn pull_candidates(&self, name: &str, candidates: Vec<Reference>, auth: &RequestAuth) -> Result<PullOutcome, ImageError> {
        let mut tried = Vec::new();
        let mut errors = Vec::new();
        for candidate in candidates {
            self.policy.check(&candidate)?;
            for endpoint in self.registries.endpoints(&candidate)? {
                tried.push(endpoint.reference.to_string());
                match self.pull_from(&candidate, &endpoint, auth).await {
                    Ok(outcome) => return Ok(outcome),
                    Err(e) => {
                        tracing::warn!(image = name, endpoint = %endpoint.reference, error = %crate::error_chain(&e), "pull attempt failed");
                        errors.push(e);
                    }
                }
            }
        }
        // Prefer an error that is not "not found": it says more about what went wrong.
        let pos = errors.iter().rposition(|e| !e.is_not_found()).unwrap_or(errors.len().saturating_sub(1));
        let last = errors.swap_remove(pos);
        if tried.len() == 1 {
            return Err(last);
        }
        Err(ImageError::AllFailed { name: name.into(), tried, last: Box::new(last) })
    }

    async fn pull_from(&self, canonical: &Reference, endpoint: &Endpoint, auth: &RequestAuth) -> Result<PullOutcome, ImageError> {
        let source = &endpoint.reference;
        let creds = auth.credentials()?.or_else(|| self.auth.lookup(&source.registry, &source.repository));
        let session =
            Session::open(&self.clients, &source.registry, &source.repository, endpoint.insecure, creds, self.stall_timeout).await?;
        let (bytes, content_type, top_digest) = session.manifest(&source.manifest_ref()).await?;
        let (manifest_bytes, manifest_digest) = match manifest::parse(&bytes, &content_type, &top_digest)? {
            Document::Index(entries) => {
                let chosen = manifest::select_platform(&entries, &top_digest)?;
                let (b, _, d) = session.manifest(&chosen.digest.to_string()).await?;
                (b, d)
            }
            Document::Image(_) => (bytes, top_digest.clone()),
        };
        let Document::Image(m) = manifest::parse(&manifest_bytes, "", &manifest_digest)? else {
            let e = manifest::ManifestError::Unsupported { digest: manifest_digest, media_type: "an index inside an index".into() };
            return Err(e.into());
        };
        // A re-pull of a stored image has its config already (checked against the digest).
        let store = self.store.clone();
        let (hex, digest) = (m.config.digest.hex().to_string(), m.config.digest.clone());
        let stored = tokio::task::spawn_blocking(move || store.image_config(&hex).ok().filter(|b| Digest::of(b) == digest))
            .await
            .map_err(ImageError::Task)?;
        let config_bytes = match stored {
            Some(bytes) => bytes,
            None => session.blob_bytes(&m.config.digest, m.config.size).await?,
        };
        let config: ConfigDoc =
            serde_json::from_slice(&config_bytes).map_err(|source| ImageError::Config { digest: m.config.digest.to_string(), source })?;
        let diff_ids = config.rootfs.diff_ids;
        if diff_ids.len() != m.layers.len() {
            return Err(ImageError::LayerCount { reference: canonical.to_string(), layers: m.layers.len(), diff_ids: diff_ids.len() });
        }
        let _lease = self.store.lease_layers(&diff_ids);
        // Layers already here count toward the image's caps as they were unpacked.
        let used = unpack::Used::default();
        for l in diff_ids.iter().filter_map(|d| self.store.layer(d)) {
            used.bytes.fetch_add(l.stats.tar_size, std::sync::atomic::Ordering::Relaxed);
            used.entries.fetch_add(l.stats.inodes, std::sync::atomic::Ordering::Relaxed);
        }
        let limits = unpack::Limits {
            layer_bytes: self.caps.max_layer_bytes,
            layer_entries: self.caps.max_layer_entries,
            image_bytes: self.caps.max_image_bytes,
            image_entries: self.caps.max_image_entries,
            image_used: Arc::new(used),
        };
        self.fetch_layers(canonical, &session, &m.layers, &diff_ids, &limits).await?;

        let layers_size: u64 = diff_ids.iter().filter_map(|d| self.store.layer(d)).map(|l| l.stats.tar_size).sum();
        let mut repo_digests = vec![format!("{}@{top_digest}", canonical.name())];
        if manifest_digest != top_digest {
            repo_digests.push(format!("{}@{manifest_digest}", canonical.name()));
        }
        let record = ImageRecord {
            id: m.config.digest.hex().to_string(),
            config_digest: m.config.digest.clone(),
            manifest_digest,
            repo_tags: canonical.tag.as_ref().map(|t| format!("{}:{t}", canonical.name())).into_iter().collect(),
            repo_digests,
            layers: diff_ids,
            size: layers_size + manifest_bytes.len() as u64 + config_bytes.len() as u64,
            user: config.config.map(|c| c.user).unwrap_or_default(),
            pulled_at_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        };
        let store = self.store.clone();
        let record = tokio::task::spawn_blocking(move || store.commit_image(record, &manifest_bytes, &config_bytes))
            .await
            .map_err(ImageError::Task)??;
        tracing::info!(image = %canonical, id = %record.id, source = %source, "image pulled");
        Ok(PullOutcome { id: record.id, reference: canonical.to_string() })
    }

    async fn fetch_layers(
        &self,
        canonical: &Reference,
        session: &Arc<Session>,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        limits: &unpack::Limits,
    ) -> Result<(), ImageError> {
        let missing: u64 = layers.iter().zip(diff_ids).filter(|(_, d)| !self.store.has_layer(d)).map(|(l, _)| l.size).sum();
        let progress = Arc::new(AtomicU64::new(0));
        let _reporter =
            (missing > 0).then(|| ProgressReporter::start(canonical.to_string(), missing, progress.clone(), self.stall_timeout));
        let permits = Arc::new(Semaphore::new(self.max_parallel));
        let jobs = layers
            .iter()
            .zip(diff_ids)
            .map(|(desc, diff_id)| self.fetch_layer(canonical, session, (desc, diff_id), &permits, &progress, limits));
        // Every layer's job ends before the pull answers, failed or not: nothing of this pull
        // is still being written (or left in a temp directory) once the caller hears of it.
        futures::future::join_all(jobs).await.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(())
    }

    async fn fetch_layer(
        &self,
        canonical: &Reference,
        session: &Session,
        (desc, diff_id): (&Descriptor, &Digest),
        permits: &Semaphore,
        progress: &AtomicU64,
        limits: &unpack::Limits,
    ) -> Result<(), ImageError> {
        // One pull at a time per layer: the second finds it committed.
        let lock = self.store.layer_lock(diff_id);
        let _layer = lock.lock().await;
        if self.store.has_layer(diff_id) {
            return Ok(());
        }
        let tmp = self.store.temp_dir()?;
        let blob = tmp.path().join("blob");
        {
            let _permit = permits.acquire().await.expect("semaphore never closed");
            session.blob_to_file(&desc.digest, desc.size, &blob, progress).await?;
        }
        self.pulled_bytes.fetch_add(desc.size, std::sync::atomic::Ordering::Relaxed);
        let store = self.store.clone();
        let record = LayerRecord { diff_id: diff_id.clone(), compressed_digest: desc.digest.clone(), stats: Default::default() };
        let unpack_err = |source| ImageError::Unpack { reference: canonical.to_string(), digest: desc.digest.to_string(), source };
        let limits = limits.clone();
        // A failure drops `tmp`: the blob and whatever was unpacked go with it.
        tokio::task::spawn_blocking(move || {
            let staging = tmp.path().join("layer");
            let diff = staging.join("diff");
            std::fs::create_dir_all(&diff).map_err(|source| StoreError::Io { path: diff.clone(), source })?;
            let stats = unpack::unpack_layer(&blob, &diff, &record.diff_id, &limits)?;
            if stats.skipped_devices > 0 {
                tracing::warn!(layer = %record.diff_id, count = stats.skipped_devices, "device nodes in layer were not created");
            }
            store.commit_layer(&staging, LayerRecord { stats, ..record })
        })
        .await
        .map_err(ImageError::Task)?
        .map_err(unpack_err)
    }
}

/// Logs a pull's progress at a steady pace; stops when dropped.
struct ProgressReporter(tokio::task::JoinHandle<()>);

impl ProgressReporter {
    fn start(image: String, total: u64, done: Arc<AtomicU64>, stall: Option<Duration>) -> Self {
        // CRI-O reports every tenth of the progress timeout; without one, every 10 s.
        let every = stall.map_or(Duration::from_secs(10), |t| (t / 10).max(Duration::from_secs(1)));
        Self(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!(image = %image, bytes = done.load(Ordering::Relaxed), total, "pull progress");
            }
        }))
    }
}

impl Drop for ProgressReporter {
    fn drop(&mut self) {
        self.0.abort();
    }
}
