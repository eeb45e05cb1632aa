//! CheckpointContainer: the runtime dumps the running container with CRIU (`checkpoint
//! --leave-running`), and the dump goes to the requested archive beside the container's
//! OCI spec (`spec.dump`) and its record (`config.dump`), as in CRI-O's archives. CRIU must
//! be installed and must work on this kernel: `criu check` says so before anything is
//! touched, and its first complaint is the answer when it cannot (CRIU 3.17, Debian 12's,
//! cannot read the vDSO of Linux 6.18, for one).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ContainerError, ContainerService, io_err};
use crate::model::ContainerState;

/// `criu check` is quick; a hang there must not hold the RPC.
const CRIU_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where CRIU is: the daemon's PATH, then the sbin directories packages install it to.
fn find_criu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("criu"))
        .find(|p| p.is_file())
}

/// Why CRIU cannot checkpoint here, or `None` when `criu check` passes.
async fn criu_problem() -> Option<String> {
    let Some(criu) = find_criu() else { return Some("CRIU is not installed (Debian: the criu package)".into()) };
    let run = tokio::process::Command::new(&criu).arg("check").kill_on_drop(true).output();
    match tokio::time::timeout(CRIU_CHECK_TIMEOUT, run).await {
        Ok(Ok(out)) if out.status.success() => None,
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            let first = text.lines().find(|l| l.contains("Error")).or(text.lines().next()).unwrap_or("no reason given").trim().to_string();
            Some(format!("`{} check` fails on this kernel: {first}", criu.display()))
        }
        Ok(Err(e)) => Some(format!("running {} failed: {e}", criu.display())),
        Err(_) => Some(format!("`{} check` did not finish in {CRIU_CHECK_TIMEOUT:?}", criu.display())),
    }
}

impl ContainerService {
    /// Checkpoints a running container into the archive at `location`, leaving it running.
    pub async fn checkpoint(&self, id: &str, location: &str) -> Result<(), ContainerError> {
        let location = Path::new(location);
        if !location.is_absolute() {
            return Err(ContainerError::InvalidArgument {
                field: "location",
                why: format!("{location:?}: the checkpoint archive needs an absolute path"),
            });
        }
        let ct = self.container(id).await?;
        if ct.state != ContainerState::Running {
            return Err(ContainerError::WrongState { what: "container", id: ct.id, state: format!("{:?}", ct.state), op: "checkpoint" });
        }
        if let Some(why) = criu_problem().await {
            return Err(ContainerError::Unsupported { field: "CheckpointContainer", why });
        }
        let entry = self.stores.containers.resolve(&ct.id).ok_or_else(|| ContainerError::ContainerNotFound { id: id.into() })?;
        let _op = entry.op.lock().await;
        let pod =
            self.stores.pods.resolve(&ct.pod_id).map(|e| e.get()).ok_or_else(|| ContainerError::PodNotFound { id: ct.pod_id.clone() })?;
        let handler = ct.runtime_handler.clone().unwrap_or_else(|| pod.spec.runtime_handler.clone());
        let runtime = self.node.runtime(&handler)?;
        let dir = ct.bundle.join("checkpoint");
        let (images, work) = (dir.join("checkpoint"), dir.join("work"));
        let result = async {
            for d in [&images, &work] {
                tokio::fs::create_dir_all(d).await.map_err(io_err("creating checkpoint directory", d))?;
            }
            runtime.checkpoint(&ct.id, &images, &work).await?;
            let record = serde_json::to_vec_pretty(&ct).map_err(|e| ContainerError::Io {
                what: "serializing container record",
                path: dir.join("config.dump"),
                source: std::io::Error::other(e),
            })?;
            let (bundle, dir, location) = (ct.bundle.clone(), dir.clone(), location.to_path_buf());
            tokio::task::spawn_blocking(move || write_archive(&bundle, &dir, &record, &location)).await?
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result?;
        tracing::info!(container_id = %ct.id, location = %location.display(), "container checkpointed");
        Ok(())
    }
}

/// `location` as a tar of CRIU's images (`checkpoint/`), the OCI spec and the record; written
/// beside it and renamed, so a failed checkpoint leaves no partial archive.
fn write_archive(bundle: &Path, dir: &Path, record: &[u8], location: &Path) -> Result<(), ContainerError> {
    let partial = location.with_extension("partial");
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(&partial)?;
        let mut tar = tar::Builder::new(file);
        tar.append_dir_all("checkpoint", dir.join("checkpoint"))?;
        tar.append_path_with_name(bundle.join("config.json"), "spec.dump")?;
        let mut header = tar::Header::new_gnu();
        header.set_size(record.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, "config.dump", record)?;
        tar.into_inner()?.sync_all()?;
        std::fs::rename(&partial, location)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&partial);
        ContainerError::Io { what: "writing checkpoint archive", path: location.into(), source }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_holds_the_dump_the_spec_and_the_record() {
        let t = tempfile::tempdir().unwrap();
        let (bundle, dir) = (t.path().join("bundle"), t.path().join("bundle/checkpoint"));
        std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
        std::fs::write(dir.join("checkpoint/pages-1.img"), b"pages").unwrap();
        std::fs::write(bundle.join("config.json"), b"{\"ociVersion\":\"1.0.2\"}").unwrap();
        let location = t.path().join("out.tar");
        write_archive(&bundle, &dir, b"{\"id\":\"c\"}", &location).unwrap();
        let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(&location).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["checkpoint/", "checkpoint/pages-1.img", "config.dump", "spec.dump"]);
        assert!(!location.with_extension("partial").exists());
        // A failure leaves nothing behind.
        let err = write_archive(&t.path().join("missing"), &dir, b"{}", &t.path().join("bad.tar")).unwrap_err();
        assert!(matches!(err, ContainerError::Io { .. }));
        assert!(!t.path().join("bad.tar").exists() && !t.path().join("bad.partial").exists());
    }
}
