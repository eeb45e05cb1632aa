//! Exec sessions (the streaming Exec RPC): a process in a running container whose stdio the
//! caller streams. Like ExecSync it goes through the exec helper when the bundle has an exec
//! profile, else through the OCI runtime; with a tty the process gets a pty slave as its
//! controlling terminal and the caller keeps the master.

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{ContainerError, ContainerService, io_err};
use crate::exec::SessionStdio;
use crate::model::ContainerState;
use crate::pty;

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// What a session's process reads and writes, as asked for.
pub struct ExecSession {
    /// The command (handed over by the helper) or `<runtime> exec`: its exit is the session's.
    pub process: crate::exec::Process,
    pub stdin: Option<Writer>,
    pub stdout: Option<Reader>,
    pub stderr: Option<Reader>,
    /// The pty's master, to resize it.
    pub pty: Option<pty::Master>,
}

/// Which of the process's streams the client wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl ContainerService {
    /// Starts `cmd` in running container `id` with its stdio wired as `wants` says.
    pub async fn exec_session(&self, id: &str, cmd: &[String], wants: Wants) -> Result<ExecSession, ContainerError> {
        if cmd.is_empty() {
            return Err(ContainerError::InvalidArgument { field: "cmd", why: "must not be empty".into() });
        }
        let ct = self.container(id).await?;
        if ct.state != ContainerState::Running {
            return Err(ContainerError::WrongState { what: "container", id: ct.id, state: format!("{:?}", ct.state), op: "exec in it" });
        }
        let exec_err = |source| ContainerError::Exec { id: ct.id.clone(), source };
        if let Some(helper) = self.exec_helper_for(&ct) {
            let stdio = match wants.tty {
                true => SessionStdio::Tty,
                false => SessionStdio::Pipes { stdin: wants.stdin, stdout: wants.stdout, stderr: wants.stderr },
            };
            let s = crate::exec::spawn_session(&helper, &ct.bundle, &ct.id, ct.pid, cmd, stdio).await.map_err(exec_err)?;
            return Ok(match s.master {
                Some(m) => tty_session(s.process, pty::Master::new(m).map_err(io_err("taking the exec pty of", &ct.bundle))?, wants),
                None => ExecSession {
                    process: s.process,
                    stdin: s.stdin.map(|w| Box::new(w) as Writer),
                    stdout: s.stdout.map(|r| Box::new(r) as Reader),
                    stderr: s.stderr.map(|r| Box::new(r) as Reader),
                    pty: None,
                },
            });
        }
        let rt = self.node.runtime(&self.handler_of(&ct))?.clone();
        if !wants.tty {
            let mut c = rt.exec_session(&ct.id, cmd, None);
            let pipe = |on: bool| if on { std::process::Stdio::piped() } else { std::process::Stdio::null() };
            c.stdin(pipe(wants.stdin)).stdout(pipe(wants.stdout)).stderr(pipe(wants.stderr));
            let child = c.spawn().map_err(|source| crate::oci::OciError::Spawn { runtime: rt.name.clone(), command: "exec", source })?;
            return Ok(piped_session(child));
        }
        self.runtime_tty_session(&rt, &ct.id, cmd, wants).await
    }

    /// `<runtime> exec --tty`: the runtime makes the pty inside the container and sends us its
    /// master over a console socket.
    async fn runtime_tty_session(
        &self,
        rt: &crate::oci::OciRuntime,
        id: &str,
        cmd: &[String],
        wants: Wants,
    ) -> Result<ExecSession, ContainerError> {
        // Unix socket paths are short (108 bytes): under the runroot, by a random name.
        let path: PathBuf = self.config.crio.runroot.join(format!("exec-{}.sock", &crate::state::new_id()[..16]));
        let socket = crate::monitor::console::ConsoleSocket::bind(&path).map_err(io_err("binding a console socket at", &path))?;
        let mut c = rt.exec_session(id, cmd, Some(&socket.address_for_runtime()));
        c.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().map_err(|source| crate::oci::OciError::Spawn { runtime: rt.name.clone(), command: "exec", source })?;
        let socket = std::sync::Arc::new(socket);
        let receiver = {
            let socket = socket.clone();
            tokio::task::spawn_blocking(move || socket.receive())
        };
        tokio::pin!(receiver);
        let master = tokio::select! {
            r = &mut receiver => r?,
            status = child.wait() => {
                // It failed before sending the pty: wake the receiver and report its words.
                crate::monitor::console::ConsoleSocket::wake(&path);
                let _ = receiver.await;
                let mut why = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = tokio::io::AsyncReadExt::read_to_string(&mut err, &mut why).await;
                }
                let status = status.map_err(|source| crate::oci::OciError::Spawn { runtime: rt.name.clone(), command: "exec", source })?;
                return Err(ContainerError::Oci(crate::oci::OciError::Failed {
                    runtime: rt.name.clone(),
                    command: "exec",
                    id: id.to_string(),
                    status,
                    message: why.trim().to_string(),
                }));
            }
        };
        let master = master.and_then(pty::Master::new).map_err(io_err("receiving the exec pty on", &path))?;
        Ok(tty_session(crate::exec::Process::Child(child), master, wants))
    }
}

fn tty_session(process: crate::exec::Process, master: pty::Master, wants: Wants) -> ExecSession {
    ExecSession {
        process,
        stdin: wants.stdin.then(|| Box::new(master.clone()) as Writer),
        stdout: Some(Box::new(master.clone())),
        stderr: None,
        pty: Some(master),
    }
}

fn piped_session(mut child: tokio::process::Child) -> ExecSession {
    ExecSession {
        stdin: child.stdin.take().map(|s| Box::new(s) as Writer),
        stdout: child.stdout.take().map(|s| Box::new(s) as Reader),
        stderr: child.stderr.take().map(|s| Box::new(s) as Reader),
        process: crate::exec::Process::Child(child),
        pty: None,
    }
}
