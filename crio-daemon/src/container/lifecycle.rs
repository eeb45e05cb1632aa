//! Container operations on the node's lifecycle: create, start, stop, remove, stats, updates
//! (statuses and exits: exits.rs).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::exits::wait_exit;
use super::spec::{self, ImageConfig, PidNamespace, SpecInput};
use super::{Container, ContainerSpec, ContainerState, PidMode, user};
use crate::monitor::client::MonitorClient;
use crate::monitor::protocol::{CreateRequest, Request};
use crate::sandbox::lifecycle::io_err;
use crate::sandbox::{Lifecycle, LifecycleError, PodState, now_nanos};
use crate::state::new_id;

/// Runs blocking host I/O (IRQ steering reads and writes every /proc/irq entry) without
/// stalling the other tasks of a runtime thread.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Output kept per stream of an ExecSync, as CRI-O caps it.
pub(super) const EXEC_OUTPUT_CAP: usize = 16 * 1024 * 1024;

/// After SIGKILL, how long to wait for the exit record before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Capability names by kernel number.
pub(crate) const CAPABILITY_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities this process holds: what a privileged container may get (a sandbox
/// without CAP_SYS_RESOURCE must not hand out a set the kernel refuses).
pub fn held_capabilities() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|h| u64::from_str_radix(h.trim(), 16).ok()).unwrap_or(0);
    CAPABILITY_NAMES.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| format!("CAP_{n}")).collect()
}

/// The container's log file under the pod's log directory; escapes are refused.
fn log_path(dir: &Path, rel: &str) -> Result<PathBuf, LifecycleError> {
    if dir.as_os_str().is_empty() || rel.is_empty() {
        return Ok(PathBuf::new());
    }
    let p = Path::new(rel);
    if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(LifecycleError::InvalidArgument {
            field: "log_path",
            why: format!("{rel:?} must stay inside the pod's log directory"),
        });
    }
    Ok(dir.join(p))
}

fn signal_number(name: &str) -> i32 {
    let n = name.trim_start_matches("SIG");
    match n {
        "" => libc::SIGTERM,
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "WINCH" => libc::SIGWINCH,
        other => other.parse().unwrap_or(libc::SIGTERM),
    }
}

impl Lifecycle {
    /// CreateContainer as the kubelet needs it: completes even if the caller goes away, and a
    /// retry for the same pod and name gets the same container.
    pub async fn create_container_once(
        self: &std::sync::Arc<Self>,
        pod_id: &str,
        spec: ContainerSpec,
    ) -> Result<String, std::sync::Arc<LifecycleError>> {
        let me = self.clone();
        let key = format!("{pod_id}/{}/{}", spec.name, spec.attempt);
        let pod_id = pod_id.to_string();
        self.creations.run_once(&key, async move { me.create_container(&pod_id, spec).await.map(|c| c.id) }).await
    }

    pub async fn create_container(&self, pod_id: &str, spec: ContainerSpec) -> Result<Container, LifecycleError> {
        if spec.name.is_empty() {
            return Err(LifecycleError::InvalidArgument { field: "config.metadata.name", why: "must not be empty".into() });
        }
        for m in &spec.mounts {
            if !m.host_path.is_absolute() || !m.container_path.is_absolute() {
                let why = format!("mount {} -> {} must use absolute paths", m.host_path.display(), m.container_path.display());
                return Err(LifecycleError::InvalidArgument { field: "config.mounts", why });
            }
            if !m.host_path.exists() {
                return Err(LifecycleError::InvalidArgument {
                    field: "config.mounts",
                    why: format!("host path {} does not exist", m.host_path.display()),
                });
            }
            if matches!(m.propagation.as_str(), "rshared" | "rslave") {
                let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                super::propagation::check(&m.host_path, &m.propagation, &info)
                    .map_err(|why| LifecycleError::InvalidArgument { field: "config.mounts", why })?;
            }
        }
        let pod_entry = self.pods.resolve(pod_id).ok_or_else(|| LifecycleError::PodNotFound { id: pod_id.into() })?;
        // Held through creation: a pod cannot be stopped or removed under a container being
        // made in it.
        let _pod_op = pod_entry.op.lock().await;
        let pod = pod_entry.get();
        if pod.state != PodState::Ready {
            return Err(LifecycleError::WrongState {
                what: "pod sandbox",
                id: pod.id,
                state: "NotReady".into(),
                op: "create containers in it",
            });
        }
        let log = log_path(&pod.spec.log_directory, &spec.log_path)?;
        let image = self.images.status(&spec.image)?.ok_or_else(|| LifecycleError::ImageNotFound { image: spec.image.clone() })?;
        let config: ImageConfig = serde_json::from_slice(&self.images.config(&image.record.id).await?).unwrap_or_default();
        let run = config.config.unwrap_or_default();
        let id = new_id();
        let full = format!("k8s_{}_{}_{}_{}_{}", spec.name, pod.spec.name, pod.spec.namespace, pod.spec.uid, spec.attempt);
        self.names.reserve(&full, &id).map_err(|holder| LifecycleError::NameInUse { name: full.clone(), id: holder })?;
        let mut ct = Container {
            id: id.clone(),
            full_name: full,
            pod_id: pod.id.clone(),
            image_id: image.record.id.clone(),
            image_ref: image.record.repo_digests.first().cloned().unwrap_or_else(|| image.record.id.clone()),
            state: ContainerState::Created,
            created_at_nanos: now_nanos(),
            started_at_nanos: 0,
            finished_at_nanos: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path: log,
            bundle: self.config.crio.state_dir.join("containers").join(&id),
            pid: 0,
            stop_signal: signal_number(&run.stop_signal),
            cgroup_path: self.container_cgroup(&pod, &id).0,
            cgroup_id: 0,
            hooks: Vec::new(),
            placement: None,
            spec,
        };
        let hook_requests = self.hook_requests(&pod, &ct.spec);
        match self.place(&pod, &id, &ct.spec, hook_requests.as_ref()) {
            Ok(p) => ct.placement = p,
            Err(e) => {
                self.names.release(&ct.full_name);
                return Err(e);
            }
        }
        match self.set_up_container(&ct, &pod, &run).await {
            Ok(pid) => {
                let mut ct = Container { pid, ..ct };
                ct.cgroup_id = self.track_container(&ct, &pod);
                // Its cgroups exist now and it has not started: the moment for the hooks.
                if let Some(req) = &hook_requests {
                    match blocking(|| self.apply_hooks(&ct, &pod, req)) {
                        Ok(changes) => ct.hooks = changes,
                        Err(e) => {
                            self.tear_down_container(&ct, &pod.spec.runtime_handler).await;
                            self.release_placement(&ct.id);
                            self.names.release(&ct.full_name);
                            return Err(e);
                        }
                    }
                }
                if let Err(e) = self.containers.insert(&id, ct.clone()).await {
                    let _ = crio_hooks::files::restore(&ct.hooks);
                    blocking(|| self.release_irqs(&ct.id));
                    self.release_placement(&ct.id);
                    self.tear_down_container(&ct, &pod.spec.runtime_handler).await;
                    self.names.release(&ct.full_name);
                    return Err(e.into());
                }
                self.emit(&ct, super::EventKind::Created);
                tracing::info!(container_id = %id, pod_sandbox_id = %pod.id, "container created");
                Ok(ct)
            }
            Err(e) => {
                self.tear_down_container(&ct, &pod.spec.runtime_handler).await;
                self.release_placement(&ct.id);
                self.names.release(&ct.full_name);
                Err(e)
            }
        }
    }

    async fn set_up_container(
        &self,
        ct: &Container,
        pod: &crate::sandbox::PodSandbox,
        run: &spec::ImageRunConfig,
    ) -> Result<i32, LifecycleError> {
        let began = std::time::Instant::now();
        let store = self.images.store().clone();
        let (cid, iid) = (ct.id.clone(), ct.image_id.clone());
        let rootfs = tokio::task::spawn_blocking(move || store.create_container(&cid, &iid)).await.map_err(LifecycleError::Task)??;
        let rootfs_done = began.elapsed();
        tokio::fs::create_dir_all(&ct.bundle).await.map_err(io_err("creating bundle", &ct.bundle))?;
        for vol in spec::make_image_volumes(&rootfs, run) {
            tracing::warn!(container_id = %ct.id, volume = %vol, "image volume not created: its path leaves the root filesystem");
        }
        let sec = &ct.spec.security;
        let resolved = user::resolve(&rootfs, &run.user, sec.run_as_user, sec.run_as_group, &sec.run_as_username, &sec.supplemental_groups)
            .map_err(|e| LifecycleError::InvalidArgument { field: "config.linux.security_context", why: e.to_string() })?;
        if ct.spec.resources.oom_score_adj < 0 {
            tracing::info!(container_id = %ct.id, requested = ct.spec.resources.oom_score_adj, "negative oom_score_adj needs CAP_SYS_RESOURCE; clamped to 0");
        }
        let held = held_capabilities();
        let pid_namespace = self.pid_namespace(&ct.spec.pid_mode, pod)?;
        let effective = ct.placement.as_ref().map(|p| super::placement::effective_spec(&ct.spec, p));
        let input = SpecInput {
            spec: effective.as_ref().unwrap_or(&ct.spec),
            image: run,
            pod,
            rootfs: &rootfs,
            user: &resolved,
            held_capabilities: &held,
            pid_namespace: &pid_namespace,
            cgroups_path: &self.container_cgroup(pod, &ct.id).1,
        };
        let oci = spec::build(&input).map_err(|e| LifecycleError::InvalidArgument { field: "config", why: e.to_string() })?;
        let config_path = ct.bundle.join("config.json");
        oci.save(&config_path).map_err(|e| LifecycleError::Io {
            what: "writing OCI spec",
            path: config_path.clone(),
            source: std::io::Error::other(e),
        })?;
        self.prepare_exec(ct, &oci, self.exec_affinity(pod, ct)).await;
        let runtime = self.runtime(&pod.spec.runtime_handler)?;
        // Unix socket paths are short (108 bytes): under the runroot, by a prefix of the id.
        let console_socket = ct.spec.tty.then(|| self.config.crio.runroot.join(format!("tty-{}.sock", &ct.id[..16])));
        let req = Request::Create(CreateRequest {
            console_socket,
            stdin: ct.spec.stdin,
            systemd_cgroup: runtime.systemd_cgroup,
            id: ct.id.clone(),
            bundle: ct.bundle.clone(),
            runtime: runtime.path.clone(),
            runtime_root: runtime.root.clone(),
            log_path: if ct.log_path.as_os_str().is_empty() { ct.bundle.join("output.log") } else { ct.log_path.clone() },
            log_max_size: self.config.crio.runtime.log_size_max.max(0) as u64,
            exit_file: ct.exit_file(),
        });
        let spec_done = began.elapsed();
        let resp = MonitorClient::new(&pod.monitor_socket()).request(&req).await?;
        // Where CreateContainer's time goes, for whoever profiles it.
        tracing::debug!(
            container_id = %ct.id,
            rootfs_us = rootfs_done.as_micros() as u64,
            spec_us = (spec_done - rootfs_done).as_micros() as u64,
            runtime_create_us = (began.elapsed() - spec_done).as_micros() as u64,
            "container set up"
        );
        let pid = resp.pid.unwrap_or(0);
        if let Some(unified) = &self.unified {
            // Before start: everything the init will run inherits the cgroup.
            unified.join(&ct.cgroup_path, pid).map_err(io_err("joining the unified cgroup", &unified.path(&ct.cgroup_path)))?;
        }
        Ok(pid)
    }

    /// Tells the kernel programs the container's cgroup (before it starts: its first
    /// instruction is seen). Returns the cgroup id, 0 when not tracked.
    pub(crate) fn track_container(&self, ct: &Container, pod: &crate::sandbox::PodSandbox) -> u64 {
        let Some(dir) = self.v2_dir(&ct.cgroup_path) else { return 0 };
        let memcgs = (self.cgroups.memory_dir(&ct.cgroup_path), self.cgroups.memory_dir(&self.pod_cgroup_path(pod)));
        self.kernel.track_container((&pod.id, &ct.id), ct.pid.max(0) as u32, &dir, (&memcgs.0, &memcgs.1)).unwrap_or(0)
    }

    /// The PID namespace a container asks for, as a place to join or make.
    fn pid_namespace(&self, mode: &PidMode, pod: &crate::sandbox::PodSandbox) -> Result<PidNamespace, LifecycleError> {
        Ok(match mode {
            PidMode::Node => PidNamespace::Host,
            PidMode::Pod if pod.spec.host_pid => PidNamespace::Host,
            PidMode::Pod => pod.pidns.clone().map_or(PidNamespace::New, PidNamespace::Join),
            PidMode::Container => PidNamespace::New,
            PidMode::Target(target) => {
                let ct = self.containers.resolve(target).map(|e| e.get()).filter(|c| c.pod_id == pod.id).ok_or_else(|| {
                    LifecycleError::InvalidArgument {
                        field: "config.linux.security_context.namespace_options.target_id",
                        why: format!("container {target} is not in pod sandbox {}", pod.id),
                    }
                })?;
                if ct.state != ContainerState::Running || ct.pid <= 0 {
                    return Err(LifecycleError::WrongState {
                        what: "target container",
                        id: ct.id,
                        state: format!("{:?}", ct.state),
                        op: "share its PID namespace",
                    });
                }
                PidNamespace::Join(format!("/proc/{}/ns/pid", ct.pid).into())
            }
        })
    }

    /// Deletes the runtime's container, the root filesystem and the bundle; idempotent.
    async fn tear_down_container(&self, ct: &Container, handler: &str) {
        if let Ok(rt) = self.runtime(handler)
            && let Err(e) = rt.delete(&ct.id, true).await
        {
            tracing::warn!(container_id = %ct.id, error = %crate::error_chain(&e), "runtime delete failed");
        }
        let store = self.images.store().clone();
        let id = ct.id.clone();
        match tokio::task::spawn_blocking(move || store.remove_container(&id)).await {
            Ok(Err(e)) => tracing::warn!(container_id = %ct.id, error = %crate::error_chain(&e), "removing root filesystem failed"),
            Err(e) => tracing::warn!(container_id = %ct.id, error = %e, "removing root filesystem failed"),
            Ok(Ok(())) => {}
        }
        let _ = tokio::fs::remove_dir_all(&ct.bundle).await;
        let _ = tokio::fs::remove_file(ct.exit_file()).await;
        self.kernel.untrack(ct.cgroup_id, Some(&ct.id));
        if let Some(unified) = &self.unified
            && let Err(e) = unified.remove(&ct.cgroup_path)
        {
            tracing::warn!(container_id = %ct.id, error = %e, "removing the unified cgroup");
        }
    }

    pub(super) fn handler_of(&self, ct: &Container) -> String {
        self.pods.get(&ct.pod_id).map(|p| p.get().spec.runtime_handler).unwrap_or_default()
    }

    pub async fn start_container(&self, id: &str) -> Result<(), LifecycleError> {
        let entry = self.containers.resolve(id).ok_or_else(|| LifecycleError::ContainerNotFound { id: id.into() })?;
        let _op = entry.op.lock().await;
        let ct = entry.get();
        if ct.state != ContainerState::Created {
            return Err(LifecycleError::WrongState { what: "container", id: ct.id, state: format!("{:?}", ct.state), op: "start it" });
        }
        // Taken before the start: a container that exits at once must not look like it
        // finished before it started.
        let started = now_nanos();
        self.runtime(&self.handler_of(&ct))?.start(&ct.id, ct.pid).await?;
        self.containers
            .update(&ct.id, &entry, |c| {
                // An init that exited at once may already be recorded as Exited by the exit watch.
                if c.state == ContainerState::Created {
                    c.state = ContainerState::Running;
                }
                c.started_at_nanos = started;
            })
            .await?;
        self.emit(&ct, super::EventKind::Started);
        tracing::info!(container_id = %ct.id, "container started");
        Ok(())
    }

    /// Stop signal, up to `timeout_secs` for the exit, then SIGKILL; stopping a stopped or
    /// missing container succeeds (CRI: StopContainer is idempotent).
    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), LifecycleError> {
        let Some(entry) = self.containers.resolve(id) else { return Ok(()) };
        let _op = entry.op.lock().await;
        self.end(id, &entry, timeout_secs).await?;
        // The exit watch may have recorded the exit first and still be giving back what the
        // container held: all of it is back before StopContainer returns.
        self.give_back(id).await;
        Ok(())
    }

    /// Ends the container (under its operation lock) and records its exit.
    async fn end(&self, id: &str, entry: &crate::state::Entry<Container>, timeout_secs: i64) -> Result<(), LifecycleError> {
        let ct = self.container(id).await?;
        if ct.state != ContainerState::Running && ct.state != ContainerState::Created {
            return Ok(());
        }
        let rt = self.runtime(&self.handler_of(&ct))?.clone();
        if ct.state == ContainerState::Running && timeout_secs > 0 {
            self.kill(&ct, &rt, ct.stop_signal, false).await;
            if wait_exit(&ct.exit_file(), Duration::from_secs(timeout_secs as u64)).await.is_some() {
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
                self.emit(&updated, super::EventKind::Stopped);
            }
            return Ok(());
        }
        if wait_exit(&ct.exit_file(), KILL_WAIT).await.is_none() {
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
            .pods
            .get(&ct.pod_id)
            .and_then(|p| self.pid_namespace(&ct.spec.pid_mode, &p.snapshot()).ok())
            .is_some_and(|ns| matches!(ns, PidNamespace::New));
        if ct.state == ContainerState::Running && (own_namespace || !all) {
            match super::signal::signal_init(&self.host.proc, ct.pid, &ct.id, signal) {
                Ok(_) => return,
                Err(e) => tracing::debug!(container_id = %ct.id, signal, error = %e, "signal through a pidfd failed; asking the runtime"),
            }
        }
        if let Err(e) = rt.kill(&ct.id, signal, all).await {
            tracing::debug!(container_id = %ct.id, signal, error = %crate::error_chain(&e), "signal not delivered");
        }
    }

    /// Kills if needed and deletes everything of the container; a missing one is removed.
    pub async fn remove_container(&self, id: &str) -> Result<(), LifecycleError> {
        let Some(entry) = self.containers.resolve(id) else { return Ok(()) };
        self.stop_container(id, 0).await?;
        let _op = entry.op.lock().await;
        self.give_back(id).await;
        let ct = entry.get();
        self.tear_down_container(&ct, &self.handler_of(&ct)).await;
        self.containers.remove(&ct.id).await?;
        self.names.release(&ct.full_name);
        self.emit(&ct, super::EventKind::Deleted);
        tracing::info!(container_id = %ct.id, "container removed");
        Ok(())
    }

    /// A container and one sample of its resource use (`None` once its cgroup is gone), with
    /// the CPU rate since the previous sample.
    pub async fn container_stats(&self, id: &str) -> Result<(Container, Option<crate::cgroups::Usage>, Option<u64>), LifecycleError> {
        let ct = self.container(id).await?;
        let usage = self.cgroups.usage(&ct.cgroup_path);
        let nano_cores = usage.and_then(|u| {
            let now = std::time::Instant::now();
            let mut last = self.cpu_samples.lock().expect("cpu samples poisoned");
            let prev = last.insert(ct.id.clone(), (now, u.cpu_nanos));
            let (t, cpu) = prev?;
            let elapsed = now.duration_since(t).as_nanos() as u64;
            (elapsed > 0).then(|| u.cpu_nanos.saturating_sub(cpu) * 1_000_000_000 / elapsed)
        });
        Ok((ct, usage, nano_cores))
    }

    /// A pod's resource use: its cgroup parent's when the kubelet gave one (it holds every
    /// container), else the sum of its running containers; and its interfaces' counters.
    pub async fn pod_stats(
        &self,
        id: &str,
    ) -> Result<(crate::sandbox::PodSandbox, Option<crate::cgroups::Usage>, Vec<crate::network::stats::InterfaceCounters>), LifecycleError>
    {
        let pod = self.pod(id)?;
        let pod_cgroup = self.pod_cgroup_path(&pod);
        let usage = if pod_cgroup.is_empty() {
            let running: Vec<_> = self.containers_of(&pod.id).into_iter().filter(|c| c.state == ContainerState::Running).collect();
            let samples: Vec<_> = running.iter().filter_map(|c| self.cgroups.usage(&c.cgroup_path)).collect();
            (!samples.is_empty()).then(|| {
                samples.iter().fold(crate::cgroups::Usage::default(), |a, u| crate::cgroups::Usage {
                    cpu_nanos: a.cpu_nanos + u.cpu_nanos,
                    memory_usage: a.memory_usage + u.memory_usage,
                    memory_working_set: a.memory_working_set + u.memory_working_set,
                    memory_rss: a.memory_rss + u.memory_rss,
                    page_faults: a.page_faults + u.page_faults,
                    major_page_faults: a.major_page_faults + u.major_page_faults,
                    memory_limit: None,
                    pids: a.pids + u.pids,
                })
            })
        } else {
            self.cgroups.usage(&pod_cgroup)
        };
        let mut interfaces = match &pod.netns {
            Some(ns) if pod.state == crate::sandbox::PodState::Ready => {
                let ns = ns.clone();
                tokio::task::spawn_blocking(move || crate::network::stats::read(&ns))
                    .await
                    .map_err(LifecycleError::Task)?
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        // With the kernel's accounting, the pod's own sockets' traffic is the measure (host
        // network pods too), on the pod's primary interface; its error counts stay.
        if let Some(net) = self.kernel.pod_network(&pod.id) {
            let name = if pod.spec.host_network { crate::network::stats::default_route_interface() } else { "eth0".to_string() };
            let errors = interfaces.iter().find(|i| i.name == name).map(|i| (i.rx_errors, i.tx_errors)).unwrap_or_default();
            interfaces.retain(|i| i.name != name);
            let counted = crate::network::stats::InterfaceCounters {
                name,
                rx_bytes: net.rx_bytes,
                rx_errors: errors.0,
                tx_bytes: net.tx_bytes,
                tx_errors: errors.1,
            };
            interfaces.insert(0, counted);
        }
        Ok((pod, usage, interfaces))
    }

    /// PSI of a container's cgroup, where the kernel has it: its v2 cgroup, on hybrid hosts the
    /// one it has in the unified hierarchy.
    pub fn pressure(&self, ct: &Container) -> Option<crate::cgroups::pressure::Pressure> {
        let dir = self.cgroups.v2_dir(&ct.cgroup_path).or_else(|| self.unified.as_ref().map(|u| u.path(&ct.cgroup_path)))?;
        crate::cgroups::pressure::read(&dir)
    }

    /// Applies new resources to a running container (`<runtime> update`).
    pub async fn update_resources(&self, id: &str, requested: &super::Resources) -> Result<(), LifecycleError> {
        let resources = requested;
        let ct = self.container(id).await?;
        if !matches!(ct.state, ContainerState::Running | ContainerState::Created) {
            return Err(LifecycleError::WrongState {
                what: "container",
                id: ct.id,
                state: format!("{:?}", ct.state),
                op: "update its resources",
            });
        }
        // The kubelet's CPU manager re-sends its cpuset: the runtime's own choice, or the shared
        // pool beside the kubelet's CPUs, stays.
        let placed = ct.placement.as_ref().map(|p| {
            let cpus = if p.chosen || resources.cpuset_cpus.is_empty() {
                p.cpus.clone()
            } else {
                crio_hooks::CpuSet::parse_list(&resources.cpuset_cpus).unwrap_or_default().union(&p.shared)
            };
            let mems = self.topology.as_ref().map(|t| crio_hooks::placement::mems_for(t.layout(), &cpus)).unwrap_or_else(|| p.mems.clone());
            crio_hooks::placement::Placement { cpus, mems, ..p.clone() }
        });
        let mut resources = resources.clone();
        if let Some(p) = &placed {
            resources.cpuset_cpus = p.cpus.to_list();
            if resources.cpuset_mems.is_empty() {
                resources.cpuset_mems = p.mems.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            }
        }
        let mut cpu = serde_json::Map::new();
        if resources.cpu_shares > 0 {
            cpu.insert("shares".into(), resources.cpu_shares.into());
        }
        if resources.cpu_quota != 0 {
            cpu.insert("quota".into(), resources.cpu_quota.into());
        }
        if resources.cpu_period > 0 {
            cpu.insert("period".into(), resources.cpu_period.into());
        }
        if !resources.cpuset_cpus.is_empty() {
            cpu.insert("cpus".into(), resources.cpuset_cpus.clone().into());
        }
        if !resources.cpuset_mems.is_empty() {
            cpu.insert("mems".into(), resources.cpuset_mems.clone().into());
        }
        let mut body = serde_json::json!({ "cpu": cpu });
        if resources.memory_limit > 0 {
            body["memory"] = serde_json::json!({ "limit": resources.memory_limit });
        }
        self.runtime(&self.handler_of(&ct))?.update(&ct.id, &body).await?;
        let new = requested.clone();
        let entry = self.containers.resolve(id).ok_or_else(|| LifecycleError::ContainerNotFound { id: id.into() })?;
        self.containers
            .update(&ct.id, &entry, move |c| {
                c.spec.resources = new;
                if placed.is_some() {
                    c.placement = placed;
                }
            })
            .await?;
        Ok(())
    }

    /// Asks the monitor to reopen the container's log (after the kubelet rotated it).
    pub async fn reopen_log(&self, id: &str) -> Result<(), LifecycleError> {
        let ct = self.container(id).await?;
        if ct.state != ContainerState::Running {
            return Err(LifecycleError::WrongState {
                what: "container",
                id: ct.id,
                state: format!("{:?}", ct.state),
                op: "reopen its log",
            });
        }
        let pod = self.pod(&ct.pod_id)?;
        MonitorClient::new(&pod.monitor_socket()).request(&Request::ReopenLog { id: ct.id }).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_in_the_pod_dir() {
        let dir = Path::new("/var/log/pods/ns_pod_uid");
        assert_eq!(log_path(dir, "c/0.log").unwrap(), dir.join("c/0.log"));
        assert!(log_path(dir, "../escape.log").is_err());
        assert!(log_path(dir, "/abs.log").is_err());
        assert_eq!(log_path(Path::new(""), "c/0.log").unwrap(), PathBuf::new());
    }

    #[test]
    fn stop_signals() {
        assert_eq!(signal_number(""), libc::SIGTERM);
        assert_eq!(signal_number("SIGQUIT"), libc::SIGQUIT);
        assert_eq!(signal_number("9"), 9);
    }

    #[test]
    fn held_capabilities_are_named() {
        let caps = held_capabilities();
        assert!(caps.iter().all(|c| super::spec::capability(c).is_ok()), "{caps:?}");
        assert!(caps.iter().all(|c| c.starts_with("CAP_")));
    }
}
