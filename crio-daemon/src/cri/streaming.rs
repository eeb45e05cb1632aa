//! ExecSync, and the streaming RPCs Exec, Attach and PortForward: these validate the request
//! and answer with the streaming server's URL for it (see `crate::streaming`).

use crate::cri::v1 as cri;
use tonic::Status;
use tracing::instrument;

use super::{Services, container_status, pod_status};
use crate::model::{ContainerState, PodState};
use crate::streaming::{Pending, TokenError};

#[instrument(skip_all, fields(container_id = %req.container_id))]
pub async fn exec_sync(s: &Services, req: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse, Status> {
    let secs = super::container_config::timeout_secs(req.timeout);
    let timeout = (secs > 0).then(|| std::time::Duration::from_secs(secs as u64));
    let out = s.containers.exec_sync(&req.container_id, &req.cmd, timeout).await.map_err(|e| container_status(&e))?;
    if out.timed_out {
        return Err(Status::deadline_exceeded(format!(
            "command {:?} in container {} timed out after {}s",
            req.cmd, req.container_id, req.timeout
        )));
    }
    Ok(cri::ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code })
}

#[instrument(skip_all, fields(container_id = %req.container_id))]
pub async fn exec(s: &Services, req: cri::ExecRequest) -> Result<cri::ExecResponse, Status> {
    if req.cmd.is_empty() {
        return Err(Status::invalid_argument(format!("exec in container {}: cmd must not be empty", req.container_id)));
    }
    check_stdio("exec in", &req.container_id, req.tty, req.stdin, req.stdout, req.stderr)?;
    running(s, &req.container_id, "exec in").await?;
    let pending = Pending::Exec {
        container_id: req.container_id,
        cmd: req.cmd,
        tty: req.tty,
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
    };
    Ok(cri::ExecResponse { url: url_for(s, pending)? })
}

#[instrument(skip_all, fields(container_id = %req.container_id))]
pub async fn attach(s: &Services, req: cri::AttachRequest) -> Result<cri::AttachResponse, Status> {
    check_stdio("attach to", &req.container_id, req.tty, req.stdin, req.stdout, req.stderr)?;
    let ct = running(s, &req.container_id, "attach to").await?;
    if req.stdin && !ct.spec.stdin {
        return Err(Status::failed_precondition(format!(
            "attach to container {}: stdin was asked for, but the container was created without one",
            ct.id
        )));
    }
    let pending = Pending::Attach { container_id: ct.id, tty: req.tty, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr };
    Ok(cri::AttachResponse { url: url_for(s, pending)? })
}

#[instrument(skip_all, fields(pod_sandbox_id = %req.pod_sandbox_id))]
pub async fn port_forward(s: &Services, req: cri::PortForwardRequest) -> Result<cri::PortForwardResponse, Status> {
    if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(Status::invalid_argument(format!("port forward to pod {}: port {p} is outside 1..65535", req.pod_sandbox_id)));
    }
    let pod = s.pods.pod(&req.pod_sandbox_id).map_err(|e| pod_status(&e))?;
    if pod.state != PodState::Ready {
        return Err(Status::failed_precondition(format!("port forward to pod {}: the pod is not ready", pod.id)));
    }
    Ok(cri::PortForwardResponse { url: url_for(s, Pending::PortForward { pod_id: pod.id })? })
}

fn check_stdio(op: &str, id: &str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), Status> {
    if tty && stderr {
        return Err(Status::invalid_argument(format!("{op} container {id}: tty and stderr cannot both be true (a tty has one output)")));
    }
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(format!("{op} container {id}: at least one of stdin, stdout and stderr must be true")));
    }
    Ok(())
}

async fn running(s: &Services, id: &str, op: &str) -> Result<crate::model::Container, Status> {
    let ct = s.containers.container(id).await.map_err(|e| container_status(&e))?;
    if ct.state != ContainerState::Running {
        return Err(Status::failed_precondition(format!("{op} container {}: it is {:?}, not running", ct.id, ct.state)));
    }
    Ok(ct)
}

fn url_for(s: &Services, pending: Pending) -> Result<String, Status> {
    s.streams.insert(pending).map_err(|e| match e {
        TokenError::TooMany => Status::resource_exhausted(e.to_string()),
        TokenError::NotServing => Status::unavailable(e.to_string()),
    })
}
