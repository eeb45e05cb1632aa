//! Running CNI plugins (spec 1.0 and 0.4): ADD through the chain with each result passed on as
//! `prevResult`, DEL in reverse with the cached ADD result, CHECK where the version has it.
//! The exact configuration used and the ADD result are cached per pod (a two-slot file, the
//! configuration written while ADD runs, the result one slot write after it), so a DEL after
//! a restart or a config change tears down what was really set up.

mod config;
mod exec;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::durable::slots::{self, SlotError, Slots};

pub use config::{ConfigError, NetworkConfig, choose, embedded_default, load_dir};
pub use exec::CniError;

/// How long one plugin may run.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    pub host_ip: String,
}

/// Who the network is for, as CNI_ARGS and runtimeConfig tell the plugins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub port_mappings: Vec<PortMapping>,
}

impl Attachment {
    fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.pod_namespace, self.pod_name, self.container_id, self.pod_uid
        )
    }
}

/// What ADD set up.
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    pub ips: Vec<IpAddr>,
    pub result: Value,
}

/// A cached ADD and the network configuration it was made with: a slot file, or the whole
/// JSON file of earlier versions.
fn parse_cached(bytes: &[u8], path: &Path) -> Result<(Cached, NetworkConfig), CniError> {
    let json = match slots::read(bytes) {
        Ok(v) => v.payload,
        Err(SlotError::Size { .. }) => bytes,
        Err(e) => return Err(CniError::Cache { path: path.into(), source: std::io::Error::other(e) }),
    };
    let cached: Cached = serde_json::from_slice(json).map_err(|e| CniError::Cache { path: path.into(), source: e.into() })?;
    let net = NetworkConfig::parse(cached.config.to_string().as_bytes(), &path.display().to_string())
        .map_err(|e| CniError::Cache { path: path.into(), source: std::io::Error::other(e) })?;
    Ok((cached, net))
}

#[derive(Serialize, Deserialize)]
struct Cached {
    config: Value,
    attachment: Attachment,
    /// Null until ADD has finished: a DEL then goes without a previous result.
    result: Value,
}

/// A pod's cache entry written as its ADD began: see [`Cni::begin_cache`].
#[must_use = "a cache entry begun is completed with the ADD's result"]
pub struct CacheEntry {
    path: PathBuf,
    at: Slots,
    cached: Cached,
}

pub struct Cni {
    plugin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    timeout: Duration,
}

impl Cni {
    pub fn new(plugin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Self {
        Self { plugin_dirs, cache_dir, timeout: PLUGIN_TIMEOUT }
    }

    fn cache_path(&self, container_id: &str) -> PathBuf {
        self.cache_dir.join(format!("{container_id}.cache"))
    }

    /// Where earlier versions cached (whole JSON files).
    fn legacy_cache_path(&self, container_id: &str) -> PathBuf {
        self.cache_dir.join(format!("{container_id}.json"))
    }

    /// ADD through the chain, its result cached for DEL. On failure the chain is rolled back
    /// with DEL before returning, and nothing stays cached.
    pub async fn add(&self, net: &NetworkConfig, att: &Attachment) -> Result<Added, CniError> {
        let (entry, added) = self.attach(net, att).await?;
        self.cache(entry, &added).await?;
        Ok(added)
    }

    /// ADD through the chain with its cache entry begun beside it; the caller completes the
    /// entry with [`Cni::cache`] (a pod does it beside its own record). On failure the chain
    /// is rolled back with DEL first and nothing stays cached.
    pub async fn attach(&self, net: &NetworkConfig, att: &Attachment) -> Result<(CacheEntry, Added), CniError> {
        match tokio::join!(self.begin_cache(net, att), self.run_add(net, att)) {
            (Ok(entry), Ok(added)) => Ok((entry, added)),
            (entry, added) => {
                if entry.is_ok() {
                    let _ = tokio::fs::remove_file(self.cache_path(&att.container_id)).await;
                }
                let added = added?;
                // ADD worked but its cache could not be written: a later DEL would not know it.
                if let Err(undo) = self.del_with(net, att, Some(&added.result)).await {
                    tracing::warn!(error = %crate::error_chain(&undo), pod_sandbox_id = %att.container_id, "rolling back an uncached CNI ADD");
                }
                Err(entry.err().expect("one of the two failed"))
            }
        }
    }

    /// ADD through the chain. On failure the chain is rolled back with DEL first.
    async fn run_add(&self, net: &NetworkConfig, att: &Attachment) -> Result<Added, CniError> {
        let mut prev: Option<Value> = None;
        for i in 0..net.plugins.len() {
            let input = self.input(net, i, att, prev.as_ref());
            match exec::run(&self.plugin_dirs, &net.plugins[i], "ADD", &input, att, self.timeout).await {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    // Undo only what was added: plugins 0..i, last first.
                    if let Err(undo) = self.del_plugins(net, i, att, prev.as_ref()).await {
                        tracing::warn!(error = %crate::error_chain(&undo), pod_sandbox_id = %att.container_id, "rolling back a failed CNI ADD");
                    }
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or(Value::Null);
        Ok(Added { ips: ips_of(&result), result })
    }

    /// Caches the configuration and attachment of an ADD about to run (or running), so a
    /// crash before [`Cni::cache`] still leaves what a DEL needs; written whole (temp file and
    /// rename), off the plugins' critical path when run beside them.
    async fn begin_cache(&self, net: &NetworkConfig, att: &Attachment) -> Result<CacheEntry, CniError> {
        let cached = Cached { config: net.to_json(), attachment: att.clone(), result: Value::Null };
        let path = self.cache_path(&att.container_id);
        let (p, bytes) = (path.clone(), serde_json::to_vec(&cached).map_err(|e| CniError::Cache { path: path.clone(), source: e.into() })?);
        let at = tokio::task::spawn_blocking(move || -> std::io::Result<Slots> {
            std::fs::create_dir_all(p.parent().expect("cache path has a parent"))?;
            slots::create(&p, &bytes, 1, 0)
        })
        .await
        .map_err(|e| CniError::Cache { path: path.clone(), source: std::io::Error::other(e) })?
        .map_err(|source| CniError::Cache { path: path.clone(), source })?;
        Ok(CacheEntry { path, at, cached })
    }

    /// Completes a cache entry with its ADD's result: one slot write, not waited to the disk.
    /// The entry is only read by a later DEL or CHECK; a power failure that loses the result
    /// leaves the begun entry, whose DEL runs without a previous result, as after a crash
    /// during ADD (plugins must accept that).
    pub async fn cache(&self, entry: CacheEntry, added: &Added) -> Result<(), CniError> {
        let began = std::time::Instant::now();
        let CacheEntry { path, mut at, mut cached } = entry;
        cached.result = added.result.clone();
        let (p, bytes) = (path.clone(), serde_json::to_vec(&cached).map_err(|e| CniError::Cache { path: path.clone(), source: e.into() })?);
        // One write to the page cache, shorter than a blocking-pool thread's wake-up.
        crate::blocking(move || slots::update_unflushed(&p, &mut at, &bytes, 0)).map_err(|source| CniError::Cache { path, source })?;
        tracing::debug!(cache_us = began.elapsed().as_micros() as u64, "CNI result cached");
        Ok(())
    }

    /// DEL for a pod, from its cached ADD when there is one (else `fallback`); idempotent:
    /// nothing cached and no fallback means nothing was set up.
    pub async fn del(&self, container_id: &str, fallback: Option<(&NetworkConfig, &Attachment)>) -> Result<(), CniError> {
        let path = self.cached_path(container_id).await;
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let (cached, net) = parse_cached(&bytes, &path)?;
                self.del_with(&net, &cached.attachment, Some(&cached.result).filter(|r| !r.is_null())).await?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match fallback {
                Some((net, att)) => self.del_with(net, att, None).await?,
                None => return Ok(()),
            },
            Err(source) => return Err(CniError::Cache { path, source }),
        }
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CniError::Cache { path, source }),
        }
    }

    /// CHECK against the cached ADD (CNI 0.4.0 and later).
    pub async fn check(&self, container_id: &str) -> Result<(), CniError> {
        let path = self.cached_path(container_id).await;
        let bytes = tokio::fs::read(&path).await.map_err(|source| CniError::Cache { path: path.clone(), source })?;
        let (cached, net) = parse_cached(&bytes, &path)?;
        if net.cni_version.starts_with("0.1") || net.cni_version.starts_with("0.2") || net.cni_version.starts_with("0.3") {
            return Ok(());
        }
        for i in 0..net.plugins.len() {
            let input = self.input(&net, i, &cached.attachment, Some(&cached.result));
            exec::run(&self.plugin_dirs, &net.plugins[i], "CHECK", &input, &cached.attachment, self.timeout).await?;
        }
        Ok(())
    }

    /// The pod's cache file: this version's, else an earlier version's if that one exists.
    async fn cached_path(&self, container_id: &str) -> PathBuf {
        let legacy = self.legacy_cache_path(container_id);
        match tokio::fs::try_exists(&legacy).await {
            Ok(true) => legacy,
            _ => self.cache_path(container_id),
        }
    }

    async fn del_with(&self, net: &NetworkConfig, att: &Attachment, result: Option<&Value>) -> Result<(), CniError> {
        self.del_plugins(net, net.plugins.len(), att, result).await
    }

    /// DEL for the first `count` plugins of the chain, in reverse.
    async fn del_plugins(&self, net: &NetworkConfig, count: usize, att: &Attachment, result: Option<&Value>) -> Result<(), CniError> {
        for i in (0..count).rev() {
            let input = self.input(net, i, att, result);
            exec::run(&self.plugin_dirs, &net.plugins[i], "DEL", &input, att, self.timeout).await?;
        }
        Ok(())
    }

    fn input(&self, net: &NetworkConfig, i: usize, att: &Attachment, prev: Option<&Value>) -> Map<String, Value> {
        let mut input = net.plugin_input(i);
        if let Some(p) = prev {
            input.insert("prevResult".into(), p.clone());
        }
        let wants_ports = net.plugins[i].get("capabilities").and_then(|c| c.get("portMappings")).and_then(Value::as_bool) == Some(true);
        if wants_ports && !att.port_mappings.is_empty() {
            let mappings: Vec<Value> = att
                .port_mappings
                .iter()
                .map(|m| json!({"hostPort": m.host_port, "containerPort": m.container_port, "protocol": m.protocol, "hostIP": m.host_ip}))
                .collect();
            input.insert("runtimeConfig".into(), json!({"portMappings": mappings}));
        }
        input
    }
}

fn ips_of(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter().filter_map(|ip| ip["address"].as_str()).filter_map(|a| a.split('/').next()).filter_map(|a| a.parse().ok()).collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_results_of_both_versions() {
        let v1 = json!({"cniVersion":"1.0.0","ips":[{"address":"10.85.0.5/16","gateway":"10.85.0.1","interface":1}]});
        let v04 = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"},{"version":"6","address":"fd00::2/64"}]});
        assert_eq!(ips_of(&v1), ["10.85.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(ips_of(&v04).len(), 2);
        assert!(ips_of(&Value::Null).is_empty());
    }
}
