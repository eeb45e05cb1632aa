//! ExecSync on the container lifecycle: through the exec helper when the container's bundle
//! has an exec profile (written at CreateContainer by `prepare_exec`), else through the OCI
//! runtime.

use std::path::PathBuf;
use std::time::Duration;

use super::{ContainerError, ContainerService, EXEC_OUTPUT_CAP};
use crate::model::{Container, ContainerState};

impl ContainerService {
    /// Runs a command in a running container and returns its output (probes use this).
    pub async fn exec_sync(&self, id: &str, cmd: &[String], timeout: Option<Duration>) -> Result<crate::oci::ExecOutput, ContainerError> {
        if cmd.is_empty() {
            return Err(ContainerError::InvalidArgument { field: "cmd", why: "must not be empty".into() });
        }
        let ct = self.container(id).await?;
        if ct.state != ContainerState::Running {
            return Err(ContainerError::WrongState { what: "container", id: ct.id, state: format!("{:?}", ct.state), op: "exec in it" });
        }
        if let Some(helper) = self.exec_helper_for(&ct) {
            return crate::exec::exec_sync(&helper, &ct.bundle, &ct.id, ct.pid, cmd, timeout, EXEC_OUTPUT_CAP)
                .await
                .map_err(|e| ContainerError::Exec { id: ct.id.clone(), source: e });
        }
        let rt = self.node.runtime(&self.handler_of(&ct))?;
        Ok(rt.exec_sync(&ct.id, cmd, timeout, EXEC_OUTPUT_CAP, &ct.bundle).await?)
    }

    /// The exec helper (it ships beside the monitor), when it can stand in for the runtime
    /// in this container: the container runs and its bundle has an exec profile.
    pub(super) fn exec_helper_for(&self, ct: &Container) -> Option<PathBuf> {
        let helper = self.node.monitor_binary().with_file_name("crio-exec");
        (ct.pid > 0 && ct.bundle.join(crate::exec::PROFILE_FILE).exists() && helper.exists()).then_some(helper)
    }

    /// Leaves in the bundle what the exec helper needs to stand in for the runtime; without
    /// it (a spec the helper cannot honour, a profile that does not compile) execs go
    /// through the runtime.
    pub(super) async fn prepare_exec(&self, ct: &Container, oci: &oci_spec::runtime::Spec, cpu_affinity: Vec<usize>) {
        let profile = match crate::exec::ExecProfile::from_spec(oci) {
            Ok(p) => crate::exec::ExecProfile { cpu_affinity, ..p },
            Err(why) => {
                tracing::debug!(container_id = %ct.id, why, "execs go through the OCI runtime");
                return;
            }
        };
        let seccomp = oci.linux().as_ref().and_then(|l| l.seccomp().clone());
        let program = match seccomp {
            None => None,
            Some(s) => {
                let key = serde_json::to_string(&s).unwrap_or_default();
                // Milliseconds of CPU for a profile of a few hundred rules: off the runtime's
                // threads, and once per distinct profile.
                let compile = || async move {
                    tokio::task::spawn_blocking(move || crate::exec::filter::compile(&s))
                        .await
                        .map_err(|e| crate::exec::ExecError::Filter { why: format!("compile task: {e}") })?
                };
                match self.seccomp_programs.get_or_compile(key, &ct.id, compile).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(container_id = %ct.id, error = %crate::error_chain(&e), "execs go through the OCI runtime");
                        return;
                    }
                }
            }
        };
        // Durable writes (fsync): off the runtime's threads.
        let bundle = ct.bundle.clone();
        let saved =
            tokio::task::spawn_blocking(move || crate::exec::profile::save(&bundle, &profile, program.as_deref().map(|p| p.as_slice())));
        match saved.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(container_id = %ct.id, error = %crate::error_chain(&e), "execs go through the OCI runtime"),
            Err(e) => tracing::warn!(container_id = %ct.id, error = %e, "execs go through the OCI runtime"),
        }
    }
}
