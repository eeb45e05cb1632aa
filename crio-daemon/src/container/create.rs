//! CreateContainer: the root filesystem, the OCI spec from the request and the image, the
//! placement and hooks, and the runtime's create through the pod's monitor. Every step is
//! undone when a later one fails; a create the kubelet gave up on is kept for its retry.

use std::path::{Component, Path, PathBuf};

use super::spec::{self, ImageConfig, PidNamespace, SpecInput};
use super::{ContainerError, ContainerService, blocking, io_err, user};
use crate::model::{Container, ContainerSpec, ContainerState, EventKind, PidMode, PodSandbox, PodState, now_nanos};
use crate::monitor::protocol::{CreateRequest, Request};
use crate::state::new_id;

/// The container's log file under the pod's log directory; escapes are refused.
fn log_path(dir: &Path, rel: &str) -> Result<PathBuf, ContainerError> {
    if dir.as_os_str().is_empty() || rel.is_empty() {
        return Ok(PathBuf::new());
    }
    let p = Path::new(rel);
    if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(ContainerError::InvalidArgument {
            field: "log_path",
            why: format!("{rel:?} must stay inside the pod's log directory"),
        });
    }
    Ok(dir.join(p))
}

/// What can be refused in a CreateContainer request before its pod is even looked at.
fn check_request(spec: &ContainerSpec) -> Result<(), ContainerError> {
    if spec.name.is_empty() {
        return Err(ContainerError::InvalidArgument { field: "config.metadata.name", why: "must not be empty".into() });
    }
    for m in &spec.mounts {
        if !m.container_path.is_absolute() {
            let why = format!("the container path {} of a mount must be absolute", m.container_path.display());
            return Err(ContainerError::InvalidArgument { field: "config.mounts", why });
        }
        // An image volume's source is mounted at create.
        if !m.image.is_empty() {
            continue;
        }
        if !m.host_path.is_absolute() {
            let why = format!("mount {} -> {} must use absolute paths", m.host_path.display(), m.container_path.display());
            return Err(ContainerError::InvalidArgument { field: "config.mounts", why });
        }
        if !m.host_path.exists() {
            return Err(ContainerError::InvalidArgument {
                field: "config.mounts",
                why: format!("host path {} does not exist", m.host_path.display()),
            });
        }
        if matches!(m.propagation.as_str(), "rshared" | "rslave") {
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            super::propagation::check(&m.host_path, &m.propagation, &info)
                .map_err(|why| ContainerError::InvalidArgument { field: "config.mounts", why })?;
        }
    }
    Ok(())
}

fn signal_number(name: &str) -> i32 {
    super::signal::number(name).unwrap_or(libc::SIGTERM)
}

/// What a CreateContainer retry has in common with its first try.
pub(super) fn creation_key(pod_id: &str, name: &str, attempt: u32) -> String {
    format!("{pod_id}/{name}/{attempt}")
}

/// The directory or file `sub` of an image volume mounted at `root`: it must exist, and no
/// part of it may be a symbolic link (the bind would follow it on the host).
fn volume_source(root: &Path, sub: &str) -> Result<std::path::PathBuf, ContainerError> {
    let invalid = |why: String| ContainerError::InvalidArgument { field: "config.mounts.image_sub_path", why };
    let mut path = root.to_path_buf();
    for c in Path::new(sub).components() {
        match c {
            std::path::Component::Normal(name) => path.push(name),
            std::path::Component::CurDir => continue,
            _ => return Err(invalid(format!("{sub:?} must be a relative path inside the image"))),
        }
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_symlink() => return Err(invalid(format!("{sub:?} passes through a symbolic link in the image"))),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(invalid(format!("{sub:?} does not exist in the image"))),
            Err(source) => return Err(ContainerError::Io { what: "reading image volume", path, source }),
        }
    }
    Ok(path)
}

impl ContainerService {
    /// CreateContainer as the kubelet needs it: completes even if the caller goes away, and a
    /// retry for the same pod and name gets the same container.
    pub async fn create_container_once(
        self: &std::sync::Arc<Self>,
        pod_id: &str,
        spec: ContainerSpec,
    ) -> Result<String, std::sync::Arc<ContainerError>> {
        let me = self.clone();
        let key = creation_key(pod_id, &spec.name, spec.attempt);
        let pod_id = pod_id.to_string();
        self.creations.run_once(&key, async move { me.create_container(&pod_id, spec).await.map(|c| c.id) }).await
    }

    pub async fn create_container(&self, pod_id: &str, spec: ContainerSpec) -> Result<Container, ContainerError> {
        let began = std::time::Instant::now();
        check_request(&spec)?;
        let pod_entry = self.stores.pods.resolve(pod_id).ok_or_else(|| ContainerError::PodNotFound { id: pod_id.into() })?;
        // Held through creation: a pod cannot be stopped or removed under a container being
        // made in it.
        let _pod_op = pod_entry.op.lock().await;
        let pod = pod_entry.get();
        if pod.state != PodState::Ready {
            return Err(ContainerError::WrongState {
                what: "pod sandbox",
                id: pod.id,
                state: "NotReady".into(),
                op: "create containers in it",
            });
        }
        let (mut ct, run) = self.new_record(&pod, spec).await?;
        let hook_requests = self.tuning.hook_requests(&pod, &ct.spec);
        match self.tuning.place(&pod, &ct.id, &ct.spec, hook_requests.as_ref()) {
            Ok(p) => ct.placement = p,
            Err(e) => {
                self.stores.names.release(&ct.full_name);
                self.images.store().unclaim_ready(&ct.id);
                return Err(e.into());
            }
        }
        let prepared = began.elapsed();
        if let Err(e) = self.make(&mut ct, &pod, &run, hook_requests.as_ref()).await {
            // Undone newest first: nothing of a failed create may remain.
            let _ = crio_hooks::files::restore(&ct.hooks);
            self.tuning.forget_hooks(&ct.id);
            blocking(|| self.tuning.release_irqs(&ct.id));
            self.tuning.release_placement(&ct.id);
            self.tear_down_container(&ct, &pod.spec.runtime_handler).await;
            self.stores.names.release(&ct.full_name);
            return Err(e);
        }
        self.emit(&ct, EventKind::Created);
        tracing::debug!(prepared_us = prepared.as_micros() as u64, total_us = began.elapsed().as_micros() as u64, "container made");
        tracing::info!(container_id = %ct.id, pod_sandbox_id = %pod.id, "container created");
        Ok(ct)
    }

    /// The container's record, its name reserved; nothing is made yet.
    async fn new_record(
        &self,
        pod: &PodSandbox,
        spec: ContainerSpec,
    ) -> Result<(Container, std::sync::Arc<spec::ImageRunConfig>), ContainerError> {
        let log = log_path(&pod.spec.log_directory, &spec.log_path)?;
        let image = self.images.status(&spec.image)?.ok_or_else(|| ContainerError::ImageNotFound { image: spec.image.clone() })?;
        let run = match self.run_configs.get(&image.record.id) {
            Some(run) => run,
            None => {
                let config: ImageConfig = serde_json::from_slice(&self.images.config(&image.record.id).await?).unwrap_or_default();
                let run = std::sync::Arc::new(config.config.unwrap_or_default());
                self.run_configs.insert(&image.record.id, run.clone());
                run
            }
        };
        // The root filesystem made ready for this image names the container.
        let store = self.images.store();
        let id = store.claim_ready(&image.record.id).unwrap_or_else(new_id);
        let full = format!("k8s_{}_{}_{}_{}_{}", spec.name, pod.spec.name, pod.spec.namespace, pod.spec.uid, spec.attempt);
        if let Err(holder) = self.stores.names.reserve(&full, &id) {
            store.unclaim_ready(&id);
            return Err(ContainerError::NameInUse { name: full, id: holder });
        }
        let ct = Container {
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
            // The request's, then the image's, then SIGTERM.
            stop_signal: if spec.stop_signal > 0 { spec.stop_signal } else { signal_number(&run.stop_signal) },
            cgroup_path: self.node.container_cgroup(pod, &id).0,
            cgroup_id: 0,
            hooks: Vec::new(),
            placement: None,
            isolated_cpus: String::new(),
            runtime_handler: Some(pod.spec.runtime_handler.clone()),
            user: None,
            spec,
        };
        Ok((ct, run))
    }

    /// Makes the placed container: bundle and runtime create, kernel tracking, hooks, record.
    /// The record is staged while the bundle is made and the runtime creates (a crash leaves
    /// it to be dropped, and the bundle to be torn down as one without a record), and
    /// published, one slot write, once the container is whole.
    async fn make(
        &self,
        ct: &mut Container,
        pod: &PodSandbox,
        run: &spec::ImageRunConfig,
        hook_requests: Option<&crio_hooks::annotations::Requests>,
    ) -> Result<(), ContainerError> {
        let (staged, set_up) = tokio::join!(self.stores.containers.stage(&ct.id, ct), self.set_up_container(ct, pod, run));
        let staged = staged.map_err(ContainerError::from);
        let finished = match set_up {
            Ok(made) => {
                (ct.pid, ct.user) = made;
                match &staged {
                    Ok(_) => self.finish(ct, pod, hook_requests),
                    Err(_) => Ok(()),
                }
            }
            Err(e) => Err(e),
        };
        let staged = match (staged, finished) {
            (Ok(staged), Ok(())) => staged,
            (staged, finished) => {
                let failed = match staged {
                    Ok(staged) => {
                        let _ = self.stores.containers.discard(staged).await;
                        None
                    }
                    Err(e) => Some(e),
                };
                return Err(finished.err().or(failed).expect("one of the two failed"));
            }
        };
        let began = std::time::Instant::now();
        // Its flush is done behind the answer: a power failure that loses this version leaves
        // the staged one, dropped at load with what it describes, which the failure ended too.
        self.stores.containers.publish_flushed_behind(staged, ct.clone()).await?;
        tracing::debug!(container_id = %ct.id, record_us = began.elapsed().as_micros() as u64, "container recorded");
        self.tuning.crash_point("hooks:recorded");
        Ok(())
    }

    /// What a created container gets before its record is published: its CPUs counted as
    /// isolated, its cgroup tracked by the kernel programs, its hooks applied.
    fn finish(
        &self,
        ct: &mut Container,
        pod: &PodSandbox,
        hook_requests: Option<&crio_hooks::annotations::Requests>,
    ) -> Result<(), ContainerError> {
        // CPUs without load balancing or IRQs are meant to be the container's alone: what
        // else runs there is counted from now (the kernel programs' intrusions).
        if hook_requests.is_some_and(|r| r.no_load_balancing || r.irq.is_some()) {
            ct.isolated_cpus = ct.spec.resources.cpuset_cpus.clone();
        }
        ct.cgroup_id = self.track_container(ct, pod);
        // Its cgroups exist now and it has not started: the moment for the hooks.
        if let Some(req) = hook_requests {
            let pod_cgroup = self.node.pod_cgroup_path(pod);
            ct.hooks = blocking(|| self.tuning.apply_hooks(ct, &pod_cgroup, req))?;
        }
        Ok(())
    }

    /// The OCI spec from the request, the image config and the placement, in the bundle
    /// (made here). `rootfs` is where the root filesystem is (or is being) mounted; the user
    /// is resolved in the image's `accounts`.
    fn write_spec(
        &self,
        ct: &Container,
        pod: &PodSandbox,
        run: &spec::ImageRunConfig,
        rootfs: &Path,
        accounts: &user::Accounts,
    ) -> Result<oci_spec::runtime::Spec, ContainerError> {
        let sec = &ct.spec.security;
        let resolved =
            user::resolve(accounts, &run.user, sec.run_as_user, sec.run_as_group, &sec.run_as_username, &sec.supplemental_groups)
                .map_err(|e| ContainerError::InvalidArgument { field: "config.linux.security_context", why: e.to_string() })?;
        let held = &self.held_capabilities;
        if ct.spec.resources.oom_score_adj < 0 && !held.iter().any(|c| c == "CAP_SYS_RESOURCE") {
            tracing::info!(container_id = %ct.id, requested = ct.spec.resources.oom_score_adj, "negative oom_score_adj needs CAP_SYS_RESOURCE, which this daemon lacks; clamped to 0");
        }
        let pid_namespace = self.pid_namespace(&ct.spec.pid_mode, pod)?;
        let effective = ct.placement.as_ref().map(|p| crate::tuning::effective_spec(&ct.spec, p));
        let labels = self
            .lsm
            .labels(&sec.apparmor, &sec.selinux, sec.privileged, &self.config.crio.runtime.apparmor_profile, &pod.id)
            .map_err(|e| ContainerError::Unsupported { field: "config.linux.security_context.apparmor", why: e.to_string() })?;
        let input = SpecInput {
            spec: effective.as_ref().unwrap_or(&ct.spec),
            image: run,
            pod,
            rootfs,
            user: &resolved,
            held_capabilities: held,
            host_dev: &self.host_dev,
            labels: &labels,
            pid_namespace: &pid_namespace,
            cgroups_path: &self.node.container_cgroup(pod, &ct.id).1,
            cgroup_v2: self.node.cgroups().layout() == crate::cgroups::Layout::V2,
            abis: self.abis,
        };
        let mut oci = spec::build(&input).map_err(|e| ContainerError::InvalidArgument { field: "config", why: e.to_string() })?;
        if !ct.spec.cdi_devices.is_empty() {
            let dirs = &self.config.crio.runtime.cdi_spec_dirs;
            let applied = crate::cdi::Registry::load(dirs)
                .and_then(|r| r.resolve(&ct.spec.cdi_devices))
                .and_then(|edits| crate::cdi::inject(&mut oci, &edits));
            applied.map_err(|e| match e {
                crate::cdi::CdiError::BadName { .. } => ContainerError::InvalidArgument { field: "config.CDI_devices", why: e.to_string() },
                // The node lacks the device or its spec cannot be applied.
                _ => ContainerError::Unsupported { field: "config.CDI_devices", why: e.to_string() },
            })?;
        }
        crate::secret_files::create_private_dir(&ct.bundle).map_err(io_err("creating bundle", &ct.bundle))?;
        let config_path = ct.bundle.join("config.json");
        // The environment holds Secret-backed variables: readable by root alone.
        let bytes = serde_json::to_vec(&oci).map_err(|e| ContainerError::Io {
            what: "serializing OCI spec",
            path: config_path.clone(),
            source: std::io::Error::other(e),
        })?;
        crate::secret_files::write_private(&config_path, &bytes).map_err(io_err("writing OCI spec", &config_path))?;
        Ok(oci)
    }

    /// The bundle and `runtime create`; the init's pid and the user it runs as.
    async fn set_up_container(
        &self,
        ct: &Container,
        pod: &PodSandbox,
        run: &spec::ImageRunConfig,
    ) -> Result<(i32, Option<crate::model::RunUser>), ContainerError> {
        let began = std::time::Instant::now();
        let runtime = self.node.runtime(&pod.spec.runtime_handler)?;
        if ct.spec.mounts.iter().any(|m| m.recursive_readonly) && !runtime.features.recursive_read_only {
            return Err(ContainerError::Unsupported {
                field: "config.mounts.recursive_read_only",
                why: format!(
                    "runtime handler {:?} cannot mount read-only recursively (its runtime lacks \"rro\" or the kernel is older than 5.12)",
                    runtime.name
                ),
            });
        }
        // Image volumes: the images the kubelet pulled, each mounted beside the root filesystem.
        let mut volume_images = Vec::new();
        for m in ct.spec.mounts.iter().filter(|m| !m.image.is_empty()) {
            let found = self.images.status(&m.image)?.ok_or_else(|| ContainerError::ImageNotFound { image: m.image.clone() })?;
            volume_images.push(found.record.id);
        }
        let store = self.images.store();
        let vols_asked = !volume_images.is_empty();
        // The root filesystem (its overlay made ready ahead, or mounted now), with the image's
        // VOLUME directories made in it, then the spec: on this thread (`blocking`), one after
        // the other, as a trip to the blocking pool and back or a thread's start took longer
        // than either.
        let mount_root = || -> Result<PathBuf, ContainerError> {
            let rootfs = store.create_container_with_volumes(&ct.id, &ct.image_id, &volume_images);
            // The next container's root filesystem and directories, made while this one's
            // runtime creates.
            let (ahead, image_id) = (store.clone(), ct.image_id.clone());
            drop(tokio::task::spawn_blocking(move || {
                if let Err(e) = ahead.make_ready(&image_id, &new_id()) {
                    tracing::debug!(error = %crate::error_chain(&e), "root filesystem made ready");
                }
                if let Err(e) = ahead.make_dirs_ahead() {
                    tracing::debug!(error = %crate::error_chain(&e), "directories made ahead");
                }
            }));
            let rootfs = rootfs?;
            for vol in spec::make_image_volumes(&rootfs, run) {
                tracing::warn!(container_id = %ct.id, volume = %vol, "image volume not created: its path leaves the root filesystem");
            }
            Ok(rootfs)
        };
        let rootfs = blocking(mount_root)?;
        let rootfs_took = began.elapsed();
        // The spec binds each image volume from where it is mounted (its sub path inside); a
        // container without one is used as it is, not copied.
        let with_sources;
        let ct = if vols_asked {
            let mut copy = ct.clone();
            for (n, m) in copy.spec.mounts.iter_mut().filter(|m| !m.image.is_empty()).enumerate() {
                m.host_path = blocking(|| volume_source(&store.volume_mountpoint(&ct.id, n), &m.image_sub_path))?;
            }
            with_sources = copy;
            &with_sources
        } else {
            ct
        };
        // Reads the image's account files (the first container of it) and writes the bundle.
        let oci = blocking(|| {
            let accounts = self.accounts.get(&ct.image_id).unwrap_or_else(|| {
                let read = std::sync::Arc::new(user::Accounts::read(&rootfs));
                self.accounts.insert(&ct.image_id, read.clone());
                read
            });
            self.write_spec(ct, pod, run, &rootfs, &accounts)
        })?;
        let spec_took = began.elapsed() - rootfs_took;
        let user = oci.process().as_ref().map(|p| crate::model::RunUser {
            uid: p.user().uid(),
            gid: p.user().gid(),
            supplemental_groups: p.user().additional_gids().clone().unwrap_or_default(),
        });
        // Unix socket paths are short (108 bytes): under the runroot, by a prefix of the id.
        let console_socket = ct.spec.tty.then(|| self.config.crio.runroot.join(format!("tty-{}.sock", &ct.id[..16])));
        let req = Request::Create(CreateRequest {
            console_socket,
            stdin: ct.spec.stdin,
            stdin_once: ct.spec.stdin_once,
            systemd_cgroup: runtime.systemd_cgroup,
            id: ct.id.clone(),
            bundle: ct.bundle.clone(),
            runtime: runtime.path.clone(),
            runtime_root: runtime.root.clone(),
            log_path: if ct.log_path.as_os_str().is_empty() { ct.bundle.join("output.log") } else { ct.log_path.clone() },
            log_max_size: self.config.crio.runtime.log_size_max.max(0) as u64,
            exit_file: ct.exit_file(),
            pid_file: Some(pod.run_dir.join(format!("{}.pid", ct.id))),
            timeout_ms: runtime.timeout.as_millis() as u64,
        });
        let ready = began.elapsed();
        // What execs need is made while the runtime creates.
        let prepare_exec = async {
            let began = std::time::Instant::now();
            self.prepare_exec(ct, &oci, self.tuning.exec_affinity(pod, ct)).await;
            tracing::debug!(prepare_exec_us = began.elapsed().as_micros() as u64, "exec prepared");
        };
        let monitor = self.node.monitor(pod);
        let (resp, ()) = tokio::join!(monitor.request(&req), prepare_exec);
        let resp = resp?;
        let created = began.elapsed();
        let pid = resp.pid.unwrap_or(0);
        // Before start: everything the init will run inherits the cgroup. Where the runtime
        // placed it the monitor has read already; only an init elsewhere is moved.
        if let Some(unified) = self.node.unified().cloned()
            && !resp.init_cgroup.as_deref().is_some_and(|seen| crate::cgroups::Unified::is(&ct.cgroup_path, seen))
        {
            let path = ct.cgroup_path.clone();
            tokio::task::spawn_blocking(move || unified.join(&path, pid)).await??;
        }
        // Where CreateContainer's time goes, for whoever profiles it.
        tracing::debug!(
            container_id = %ct.id,
            rootfs_us = rootfs_took.as_micros() as u64,
            spec_us = spec_took.as_micros() as u64,
            runtime_create_us = (created - ready).as_micros() as u64,
            in_runtime_us = resp.runtime_us.unwrap_or(0),
            in_monitor_us = resp.handled_us.unwrap_or(0),
            unified_us = (began.elapsed() - created).as_micros() as u64,
            "container set up"
        );
        Ok((pid, user))
    }

    /// The PID namespace a container asks for, as a place to join or make.
    pub(super) fn pid_namespace(&self, mode: &PidMode, pod: &PodSandbox) -> Result<PidNamespace, ContainerError> {
        Ok(match mode {
            PidMode::Node => PidNamespace::Host,
            PidMode::Pod if pod.spec.host_pid => PidNamespace::Host,
            PidMode::Pod => pod.pidns.clone().map_or(PidNamespace::New, PidNamespace::Join),
            PidMode::Container => PidNamespace::New,
            PidMode::Target(target) => {
                let ct = self.stores.containers.resolve(target).map(|e| e.get()).filter(|c| c.pod_id == pod.id).ok_or_else(|| {
                    ContainerError::InvalidArgument {
                        field: "config.linux.security_context.namespace_options.target_id",
                        why: format!("container {target} is not in pod sandbox {}", pod.id),
                    }
                })?;
                if ct.state != ContainerState::Running || ct.pid <= 0 {
                    return Err(ContainerError::WrongState {
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
        assert_eq!(signal_number("SIGRTMIN+3"), 37);
        assert_eq!(signal_number("nonsense"), libc::SIGTERM);
        use super::super::signal::{cri_name, number};
        for n in 1..=64 {
            if let Some(name) = cri_name(n) {
                assert_eq!(number(&name), Some(n), "{name}");
            }
        }
        assert_eq!(cri_name(libc::SIGTERM).as_deref(), Some("SIGTERM"));
        assert_eq!(number("SIGRTMAXMINUS1"), Some(63));
    }
}
