//! Write-ahead records of what the hooks change on the host: before the first host file is
//! written, the planned changes (with the values they replace) are on disk, durably, under
//! `<state_dir>/hooks/<container id>.json`. A crash at any point after that leaves a record
//! from which the next start puts the host back; the record goes only once its changes have
//! been undone. `CRIO_CRASH_AT` names a step at which the daemon dies on purpose (tests of
//! exactly this; unset on real nodes).

use std::path::{Path, PathBuf};

use crio_hooks::files::{self, Change};

use super::{Tuning, TuningError, hook_err};

/// The environment variable naming a step to die at, for crash-consistency tests.
pub const CRASH_AT_ENV: &str = "CRIO_CRASH_AT";

/// Where the daemon dies on purpose, if anywhere (read once at start).
#[derive(Debug, Default, Clone)]
pub struct CrashPoint(Option<String>);

impl CrashPoint {
    pub fn from_env() -> Self {
        Self(std::env::var(CRASH_AT_ENV).ok().filter(|s| !s.is_empty()))
    }

    /// Dies (as a SIGKILL would: no destructor, no flush) if `step` is the named one.
    pub fn reached(&self, step: &str) {
        if self.0.as_deref() == Some(step) {
            eprintln!("{CRASH_AT_ENV}={step}: dying here on purpose");
            std::process::abort();
        }
    }
}

impl Tuning {
    fn journal_dir(&self) -> PathBuf {
        self.config.crio.state_dir.join("hooks")
    }

    fn journal_path(&self, id: &str) -> PathBuf {
        self.journal_dir().join(format!("{id}.json"))
    }

    /// Makes `changes` durable for container `id` before any of them is applied.
    pub(super) fn journal(&self, id: &str, changes: &[Change]) -> Result<(), TuningError> {
        let dir = self.journal_dir();
        std::fs::create_dir_all(&dir).map_err(|e| hook_err(format!("creating {}: {e}", dir.display())))?;
        let path = self.journal_path(id);
        crate::durable::write_json(&path, &changes).map_err(|e| hook_err(format!("writing {}: {e}", path.display())))?;
        self.crash.reached("hooks:journaled");
        Ok(())
    }

    /// Applies journaled `changes`, dying at `hooks:wrote:<n>` after the n-th write when asked.
    pub(super) fn apply_journaled(&self, changes: &[Change]) -> Result<(), TuningError> {
        for (i, c) in changes.iter().enumerate() {
            if let Err(e) = files::apply(std::slice::from_ref(c)) {
                let _ = files::restore(&changes[..i]);
                return Err(hook_err(crate::error_chain(&e)));
            }
            self.crash.reached(&format!("hooks:wrote:{i}"));
        }
        Ok(())
    }

    /// The container's changes are undone: its write-ahead record goes.
    pub fn forget_hooks(&self, id: &str) {
        let path = self.journal_path(id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a hooks record");
            }
            _ => {}
        }
    }

    /// Dies at `step` when asked (see `CrashPoint`).
    pub fn crash_point(&self, step: &str) {
        self.crash.reached(step);
    }

    /// At start: changes journaled for containers that are not alive (a crash before their
    /// record was written, or they ended while the daemon was away) are put back.
    /// `keep` names containers whose changes stay (alive, or not accounted for).
    pub fn reconcile_hooks(&self, keep: impl Fn(&str) -> bool) {
        for (id, path) in journal_entries(&self.journal_dir()) {
            if keep(&id) {
                continue;
            }
            let changes: Vec<Change> =
                match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "unreadable hooks record left for the operator");
                        continue;
                    }
                };
            let failed = files::restore(&changes);
            for e in &failed {
                tracing::warn!(container_id = %id, error = %crate::error_chain(e), "could not restore a setting");
            }
            if failed.is_empty() {
                tracing::info!(container_id = %id, changes = changes.len(), "host settings of a container gone while the daemon was away restored");
                self.forget_hooks(&id);
            }
        }
    }
}

/// (container id, record path) of every write-ahead record in `dir`.
fn journal_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let id = name.strip_suffix(".json").filter(|id| !id.starts_with('.'))?;
            Some((id.to_string(), e.path()))
        })
        .collect()
}
