//! One plugin invocation: the CNI environment, the configuration on stdin, the result or the
//! CNI error object on stdout, a deadline that kills the plugin.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::Attachment;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin:?} not found in {dirs:?}")]
    NotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("failed to run CNI plugin {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}{details}")]
    Plugin { plugin: String, command: &'static str, code: i64, msg: String, details: String },
    #[error("CNI plugin {plugin} {command} did not finish within {timeout:?}; killed")]
    Timeout { plugin: String, command: &'static str, timeout: Duration },
    #[error("CNI plugin {plugin} {command} printed an unreadable result")]
    BadResult {
        plugin: String,
        command: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("CNI result cache {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn find(dirs: &[PathBuf], plugin: &str) -> Option<PathBuf> {
    if plugin.contains('/') {
        return None;
    }
    dirs.iter().map(|d| d.join(plugin)).find(|p| p.is_file())
}

pub(super) async fn run(
    dirs: &[PathBuf],
    plugin_conf: &Map<String, Value>,
    command: &'static str,
    input: &Map<String, Value>,
    att: &Attachment,
    timeout: Duration,
) -> Result<Value, CniError> {
    let plugin = plugin_conf.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    let path = find(dirs, &plugin).ok_or_else(|| CniError::NotFound { plugin: plugin.clone(), dirs: dirs.to_vec() })?;
    let cni_path = std::env::join_paths(dirs).unwrap_or_default();
    let mut child = Command::new(&path)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &att.container_id)
        .env("CNI_NETNS", &att.netns)
        .env("CNI_IFNAME", if att.ifname.is_empty() { "eth0" } else { &att.ifname })
        .env("CNI_ARGS", att.cni_args())
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CniError::Spawn { path: path.clone(), source })?;
    let stdin_bytes = serde_json::to_vec(input).expect("JSON maps serialize");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let feed = async move {
        let r = stdin.write_all(&stdin_bytes).await;
        drop(stdin);
        r
    };
    let (fed, out) = tokio::time::timeout(timeout, async { tokio::join!(feed, child.wait_with_output()) })
        .await
        .map_err(|_| CniError::Timeout { plugin: plugin.clone(), command, timeout })?;
    let out = out.map_err(|source| CniError::Spawn { path: path.clone(), source })?;
    if out.status.success() {
        fed.map_err(|source| CniError::Spawn { path: path.clone(), source })?;
        if command != "ADD" || out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(&out.stdout).map_err(|source| CniError::BadResult { plugin, command, source });
    }
    // The spec's error object on stdout; stderr as a fallback for plugins that ignore it.
    let err: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let msg = err["msg"].as_str().map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
    let details = err["details"].as_str().filter(|d| !d.is_empty()).map(|d| format!(" ({d})")).unwrap_or_default();
    Err(CniError::Plugin { plugin, command, code: err["code"].as_i64().unwrap_or(-1), msg, details })
}
