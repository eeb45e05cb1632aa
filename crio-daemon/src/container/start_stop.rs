//! StartContainer and StopContainer: the start through the runtime's create fd, the stop
//! signal through a pidfd, the grace period, SIGKILL, and the exit as the monitor records it.

use std::time::Duration;

use super::spec::PidNamespace;
use super::{ContainerError, ContainerService};
use crate::model::{Container, ContainerState, EventKind, now_nanos};

/// After SIGKILL, how long to wait for the exit record before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl ContainerService {
    pub async fn start_container(&self, id: &str) -> Result<(), ContainerError> {
        let entry = self.stores.containers.resolve(id).ok_or_else(|| ContainerError::ContainerNotFound { id: id.into() })?;
        let _op = entry.op.lock().await;
        let ct = entry.get();
        if ct.state != ContainerState::Created {
            return Err(ContainerError::WrongState { what: "container", id: ct.id, state: format!("{:?}", ct.state), op: "start it" });
        }
        // Taken before the start: a container that exits at once must not look like it
        // finished before it started.
        let started = now_nanos();
        let began = std::time::Instant::now();
        self.node.runtime(&self.handler_of(&ct))?.start(&ct.id, ct.pid).await?;
        let in_runtime = began.elapsed();
        // Not flushed: a daemon crash keeps the write (the page cache does), and what could
        // lose it, the node going down, ends the container too, which recovery then finds
        // gone whether its record says created or running. Its exit's write flushes it.
        self.stores
            .containers
            .update_unflushed(&ct.id, &entry, |c| {
                // An init that exited at once may already be recorded as Exited by the exit watch.
                if c.state == ContainerState::Created {
                    c.state = ContainerState::Running;
                }
                c.started_at_nanos = started;
            })
            .await?;
        tracing::debug!(
            start_us = in_runtime.as_micros() as u64,
            record_us = (began.elapsed() - in_runtime).as_micros() as u64,
            "container start"
        );
        self.emit(&ct, EventKind::Started);
        tracing::info!(container_id = %ct.id, "container started");
        Ok(())
    }

    /// Stop signal, up to `timeout_secs` for the exit, then SIGKILL; stopping a stopped or
    /// missing container succeeds (CRI: StopContainer is idempotent).
    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), ContainerError> {
        let Some(entry) = self.stores.containers.resolve(id) else { return Ok(()) };
        let _op = entry.op.lock().await;
        self.end(id, &entry, timeout_secs).await?;
        // The exit watch may have recorded the exit first and still be giving back what the
        // container held: all of it is back before StopContainer returns.
        self.give_back(id).await;
        Ok(())
    }

    /// Ends the container (under its operation lock) and records its exit.
    async fn end(&self, id: &str, entry: &crate::state::Entry<Container>, timeout_secs: i64) -> Result<(), ContainerError> {
        let ct = self.container(id).await?;
        if ct.state != ContainerState::Running && ct.state != ContainerState::Created {
            return Ok(());
        }
        let rt = self.node.runtime(&self.handler_of(&ct))?.clone();
        if ct.state == ContainerState::Running && timeout_secs > 0 {
            self.kill(&ct, &rt, ct.stop_signal, false).await;
            if self.wait_exit(&ct.exit_file(), Duration::from_secs(timeout_secs as u64)).await.is_some() {
                self.refresh(id, true).await?;
                return Ok(());
            }
        }
        self.kill(&ct, &rt, libc::SIGKILL, true).await;
        if ct.state == ContainerState::Created {
            // Never started: the runtime's delete ends its init; record it as exited.
            rt.delete(&ct.id, true).await?;
            let mut was = ContainerState::Exited;
            let updated = self
                .stores
                .containers
                .update(&ct.id, entry, |c| {
                    // The exit watch may have recorded the init's end first.
                    was = c.state;
                    if c.state == ContainerState::Created {
                        c.state = ContainerState::Exited;
                        c.exit_code = 137;
                        c.reason = "Error".into();
                        c.finished_at_nanos = now_nanos();
                    }
                })
                .await?;
            if was == ContainerState::Created {
                self.emit(&updated, EventKind::Stopped);
            }
            return Ok(());
        }
        if self.wait_exit(&ct.exit_file(), KILL_WAIT).await.is_none() {
            tracing::warn!(container_id = %ct.id, "no exit recorded {KILL_WAIT:?} after SIGKILL");
        }
        self.refresh(id, true).await?;
        tracing::info!(container_id = %ct.id, "container stopped");
        Ok(())
    }

    /// Sends `signal` to a running container's init through a pidfd, with `all` only when it
    /// is PID 1 of the container's own namespace (the kernel then ends every process in it);
    /// otherwise, or if that fails, through the runtime, which also walks the cgroup.
    async fn kill(&self, ct: &Container, rt: &crate::oci::OciRuntime, signal: i32, all: bool) {
        // The namespace the container was given at creation: a new one is its own.
        let own_namespace = self
            .stores
            .pods
            .get(&ct.pod_id)
            .and_then(|p| self.pid_namespace(&ct.spec.pid_mode, &p.snapshot()).ok())
            .is_some_and(|ns| matches!(ns, PidNamespace::New));
        if ct.state == ContainerState::Running && (own_namespace || !all) {
            match super::signal::signal_init(&self.node.host().proc, ct.pid, &ct.id, signal) {
                Ok(_) => return,
                Err(e) => tracing::debug!(container_id = %ct.id, signal, error = %e, "signal through a pidfd failed; asking the runtime"),
            }
        }
        if let Err(e) = rt.kill(&ct.id, signal, all).await {
            tracing::debug!(container_id = %ct.id, signal, error = %crate::error_chain(&e), "signal not delivered");
        }
    }
}
