//! RunPodSandbox: the pod's directories and cgroup, its IPC (with /dev/shm), UTS and network
//! namespaces, its CNI attachment, its monitor, and the files its containers share. Whatever
//! fails, everything made before it is undone by the one idempotent teardown.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{PodError, PodService, files, io_err};
use crate::model::{PodSandbox, PodSpec, PodState, check_hostname, check_sysctl, full_name, now_nanos, pod_hostname};
use crate::monitor::client;
use crate::namespace;
use crate::network::cni::{Added, CacheEntry};
use crate::state::new_id;

impl PodService {
    /// RunPodSandbox as the kubelet needs it: completes even if the caller goes away, and a
    /// retry with the same name gets the same pod.
    pub async fn run_pod_once(self: &Arc<Self>, spec: PodSpec) -> Result<String, Arc<PodError>> {
        let me = self.clone();
        let name = full_name(&spec);
        self.creations.run_once(&name, async move { me.run_pod(spec).await.map(|p| p.id) }).await
    }

    pub async fn run_pod(&self, spec: PodSpec) -> Result<PodSandbox, PodError> {
        self.validate(&spec)?;
        let id = new_id();
        let full = full_name(&spec);
        self.stores.names.reserve(&full, &id).map_err(|holder| PodError::NameInUse { name: full.clone(), id: holder })?;
        let c = &self.config.crio;
        let mut pod = PodSandbox {
            id: id.clone(),
            full_name: full,
            state: PodState::Ready,
            created_at_nanos: now_nanos(),
            ips: Vec::new(),
            netns: None,
            ipcns: None,
            utsns: None,
            pidns: None,
            pid_holder: 0,
            cgroup: self.node.pod_cgroup(&spec.cgroup_parent, &id),
            cgroup_created: false,
            cgroup_id: 0,
            dir: c.state_dir.join("pods").join(&id),
            run_dir: c.runroot.join("pods").join(&id),
            monitor_pid: 0,
            spec,
        };
        let began = std::time::Instant::now();
        let mut attached = None;
        // The record is staged while the pod is set up (a crash leaves it to be dropped, and
        // the pod's directories to be torn down as those of a pod without a record).
        let initial = pod.clone();
        let (staged, set_up) = tokio::join!(self.stores.pods.stage(&id, &initial), self.set_up_pod(&mut pod, &mut attached));
        let created = match (staged, set_up) {
            (Ok(staged), Ok(())) => {
                let set_up = began.elapsed();
                // The pod's record, its network's DEL cache and its hosts file: written at once,
                // the first two without waiting for the disk (the staged record and the begun
                // cache entry are durable; a power failure that loses the rest ends the pod).
                let cache = async {
                    match attached.take() {
                        Some((entry, added)) => self.node.cni().cache(entry, &added).await.map_err(PodError::from),
                        None => Ok(()),
                    }
                };
                let (record, cached, files) =
                    tokio::join!(self.stores.pods.publish_unflushed(staged, pod.clone()), cache, self.write_hosts(&pod));
                tracing::debug!(record_us = (began.elapsed() - set_up).as_micros() as u64, "pod recorded");
                match (record, cached.and(files)) {
                    (Ok(_), Ok(())) => Ok(()),
                    (Ok(_), Err(e)) => {
                        let _ = self.stores.pods.remove(&id).await;
                        Err(e)
                    }
                    (Err(e), _) => Err(e.into()),
                }
            }
            (staged, set_up) => {
                let failed = match staged {
                    Ok(staged) => {
                        let _ = self.stores.pods.discard(staged).await;
                        None
                    }
                    Err(e) => Some(PodError::from(e)),
                };
                Err(set_up.err().or(failed).expect("one of the two failed"))
            }
        };
        if let Err(e) = created {
            // Undo whatever was set up: nothing of a failed run may remain.
            self.tear_down_pod(&pod, true).await;
            self.stores.names.release(&pod.full_name);
            return Err(e);
        }
        tracing::info!(pod_sandbox_id = %id, pod_name = %pod.spec.name, pod_namespace = %pod.spec.namespace, "pod sandbox ready");
        Ok(pod)
    }

    /// Everything about the request that can be refused before anything is made.
    fn validate(&self, spec: &PodSpec) -> Result<(), PodError> {
        for (field, value) in [("metadata.name", &spec.name), ("metadata.namespace", &spec.namespace), ("metadata.uid", &spec.uid)] {
            if value.is_empty() {
                return Err(PodError::InvalidArgument { field, why: "must not be empty".into() });
            }
        }
        if !spec.hostname.is_empty() {
            check_hostname(&spec.hostname).map_err(|why| PodError::InvalidArgument { field: "config.hostname", why })?;
        }
        self.node.runtime(&spec.runtime_handler)?;
        let bad_parent = |why| PodError::InvalidArgument { field: "config.linux.cgroup_parent", why };
        if self.node.systemd() {
            if !spec.cgroup_parent.is_empty() {
                crate::cgroups::systemd::slice_path(&spec.cgroup_parent).map_err(bad_parent)?;
            }
        } else if Path::new(&spec.cgroup_parent).components().any(|c| c == std::path::Component::ParentDir) {
            return Err(bad_parent(format!("{:?} leaves the cgroup hierarchy", spec.cgroup_parent)));
        }
        for key in spec.sysctls.keys() {
            check_sysctl(key, spec.host_network, spec.host_ipc)
                .map_err(|why| PodError::InvalidArgument { field: "config.linux.sysctls", why })?;
        }
        if !spec.host_network && self.node.network().is_none() {
            return Err(PodError::NoNetwork { dir: self.config.crio.network.network_dir.clone() });
        }
        Ok(())
    }

    /// Everything the pod has on the node; its CNI result and begun cache entry into `attached`.
    async fn set_up_pod(&self, pod: &mut PodSandbox, attached: &mut Option<(CacheEntry, Added)>) -> Result<(), PodError> {
        let began = std::time::Instant::now();
        let hostname = pod_hostname(&pod.spec);
        // The directories and the network namespace on this thread, before the work below
        // competes for the CPUs: a namespace made ahead is handed over in ~50 us, and a trip
        // to a blocking-pool thread and back took longer than the work.
        let netns = (!pod.spec.host_network).then(|| pod.run_dir.join("net"));
        crate::blocking(|| -> Result<(), PodError> {
            for d in [&pod.dir, &pod.run_dir] {
                std::fs::create_dir_all(d).map_err(io_err("creating pod directory", d))?;
            }
            if let Some(path) = &netns {
                self.netns_pool.take(path)?;
            }
            Ok(())
        })?;
        pod.netns = netns;
        let netns_done = began.elapsed();
        if pod.netns.is_some() {
            // The next pod's, made while this one's CNI plugins run.
            let pool = self.netns_pool.clone();
            drop(tokio::task::spawn_blocking(move || pool.fill()));
        }
        // Namespaces and cgroups, the network and the monitor need nothing of each other:
        // made at once. The network first: the CNI plugins are most of the time, and on a
        // small node the others would take the CPUs from under its namespace's hand-over.
        let socket = pod.monitor_socket();
        let log = pod.run_dir.join("monitor.log");
        let share_pid = pod.spec.share_pid && !pod.spec.host_pid;
        // The pod's IPC and UTS namespaces are the monitor's own (a host-network pod keeps
        // the node's UTS namespace, as its hostname is the node's).
        let holds = crate::monitor::server::Holds {
            pid_namespace: share_pid,
            ipc: !pod.spec.host_ipc,
            uts: (!pod.spec.host_network).then(|| hostname.clone()),
        };
        let (mut local, mut net) = (Local::default(), Net::default());
        // The monitor's first connection is opened as soon as it listens: the first
        // CreateContainer finds it open.
        let monitor = async {
            let pid = client::spawn(self.node.monitor_binary(), &socket, &log, &holds).await?;
            self.node.monitors().open_ahead(&socket).await;
            Ok::<_, client::MonitorError>(pid)
        };
        let (network, local_done, monitor) =
            tokio::join!(self.set_up_network(pod, &mut net), self.set_up_local(pod, &hostname, &mut local), monitor);
        // Recorded before any error is returned, so teardown finds what was made.
        (pod.cgroup_created, pod.cgroup_id) = (local.cgroup_created, local.cgroup_id);
        pod.ips = net.ips;
        *attached = net.attached;
        if let Ok(pid) = &monitor {
            pod.monitor_pid = *pid;
            // Joined by the runtime the monitor starts, so while the monitor (its parent, which
            // waits for it) lives: the pid cannot name another process then.
            let held = |kind: &str| PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
            (pod.ipcns, pod.utsns) = (holds.ipc.then(|| held("ipc")), holds.uts.is_some().then(|| held("uts")));
        }
        local_done?;
        network?;
        monitor?;
        tracing::debug!(
            pod_sandbox_id = %pod.id,
            dirs_netns_us = netns_done.as_micros() as u64,
            set_up_us = began.elapsed().as_micros() as u64,
            "pod set up"
        );
        if share_pid {
            let state = self.node.monitor(pod).request(&crate::monitor::protocol::Request::State).await?;
            let holder = state.pid_holder.unwrap_or(0);
            let source = PathBuf::from(format!("/proc/{holder}/ns/pid"));
            let path = pod.run_dir.join("pid");
            // Pinned by path, so a container never joins whatever later reuses the pid.
            namespace::pin_existing(&source, &path).map_err(io_err("pinning the pod's PID namespace", &path))?;
            (pod.pidns, pod.pid_holder) = (Some(path), holder);
        }
        Ok(())
    }

    /// What the pod has on this node alone: cgroups and /dev/shm (into `made` as they are
    /// made); its IPC and UTS namespaces are its monitor's.
    async fn set_up_local(&self, pod: &PodSandbox, hostname: &str, made: &mut Local) -> Result<(), PodError> {
        // Slices are systemd's (the kubelet asks it for them); cgroupfs pod cgroups may be ours.
        if !self.node.systemd() {
            let (cgroups, path, resources) = (self.node.cgroups().clone(), pod.cgroup.clone(), pod.spec.resources.clone());
            made.cgroup_created = tokio::task::spawn_blocking(move || cgroups.create_pod(&path, resources.as_ref())).await??;
        }
        // The kernel learns the pod's cgroup before anything runs in it; on hybrid hosts that is
        // the pod's directory in the unified hierarchy, made here.
        if let Some(dir) = self.node.v2_dir(&self.node.pod_cgroup_path(pod)) {
            if self.node.unified().is_some() {
                tokio::fs::create_dir_all(&dir).await.map_err(io_err("creating the pod's unified cgroup", &dir))?;
            }
            made.cgroup_id = self.kernel.track_pod(&pod.id, &dir).unwrap_or(0);
        }
        if !pod.spec.host_ipc {
            mount_shm(&pod.run_dir.join("shm")).await?;
        }
        self.write_early_files(pod, hostname).await
    }

    /// The pod's CNI attachment in its network namespace (nothing for host-network pods),
    /// into `made` once made.
    async fn set_up_network(&self, pod: &PodSandbox, made: &mut Net) -> Result<(), PodError> {
        let Some(netns) = &pod.netns else { return Ok(()) };
        let began = std::time::Instant::now();
        let net = self.node.network().expect("checked before set-up");
        let mut attachment = self.node.attachment(pod);
        attachment.netns = netns.clone();
        let (entry, added) = self.node.cni().attach(net, &attachment).await?;
        tracing::debug!(cni_us = began.elapsed().as_micros() as u64, "pod network set up");
        made.ips = added.ips.iter().map(|ip| ip.to_string()).collect();
        made.attached = Some((entry, added));
        Ok(())
    }

    /// resolv.conf, hostname and hosts, which every container of the pod mounts: nothing of
    /// them waits for the pod's network (a pod network's hosts is rewritten with its IP by
    /// `write_hosts`), so they are written while its plugins run. One trip to a blocking thread.
    async fn write_early_files(&self, pod: &PodSandbox, hostname: &str) -> Result<(), PodError> {
        let (dir, resolv, host_network, hostname) =
            (pod.dir.clone(), files::resolv_conf(&pod.spec.dns), pod.spec.host_network, hostname.to_string());
        tokio::task::spawn_blocking(move || {
            let resolv = resolv.unwrap_or_else(|| std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
            let mut list = vec![("resolv.conf", resolv), ("hostname", format!("{hostname}\n"))];
            if host_network {
                list.push(("hosts", std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| files::hosts(&hostname, None))));
            } else {
                // Without the pod's IP yet: the file is made now (a new inode costs more than
                // rewriting one) and rewritten once the IP is known, before any container
                // can mount it.
                list.push(("hosts", files::hosts(&hostname, None)));
            }
            write_pod_files(&dir, list)
        })
        .await?
    }

    /// hosts, which names the pod's IP, once its network is up (host-network pods have theirs).
    async fn write_hosts(&self, pod: &PodSandbox) -> Result<(), PodError> {
        if pod.spec.host_network {
            return Ok(());
        }
        let (path, hosts) = (pod.dir.join("hosts"), files::hosts(&pod_hostname(&pod.spec), pod.ips.first().map(String::as_str)));
        tokio::task::spawn_blocking(move || rewrite_in_place(&path, hosts.as_bytes()).map_err(io_err("writing pod file", &path))).await?
    }
}

/// Overwrites the file at `path` with `text` from its start. It is cut only if it was longer:
/// the rewrite of hosts extends the text written before, and cutting a file frees its blocks,
/// which on a disk-backed state directory costs ~0.3 ms on a small VM (the write alone, ~20 us).
fn rewrite_in_place(path: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.write_all_at(text, 0)?;
    if file.metadata()?.len() > text.len() as u64 {
        file.set_len(text.len() as u64)?;
    }
    Ok(())
}

fn write_pod_files(dir: &Path, list: Vec<(&str, String)>) -> Result<(), PodError> {
    for (name, text) in list {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(io_err("writing pod file", &path))?;
    }
    Ok(())
}

/// The pod's shared /dev/shm: a tmpfs of CRI-O's default size.
async fn mount_shm(shm: &Path) -> Result<(), PodError> {
    tokio::fs::create_dir_all(shm).await.map_err(io_err("creating shm mountpoint", shm))?;
    let data = format!("mode=1777,size={}", crate::model::SHM_SIZE);
    let flags = rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV | rustix::mount::MountFlags::NOEXEC;
    let cdata = std::ffi::CString::new(data).expect("no NUL in mount options");
    rustix::mount::mount("shm", shm, "tmpfs", flags, cdata.as_c_str()).map_err(|e| PodError::Io {
        what: "mounting the pod's /dev/shm",
        path: shm.into(),
        source: e.into(),
    })
}

/// A pod's node-local pieces, as far as they were made.
#[derive(Default)]
struct Local {
    cgroup_created: bool,
    cgroup_id: u64,
}

/// A pod's network, as far as it was made.
#[derive(Default)]
struct Net {
    ips: Vec<String>,
    attached: Option<(CacheEntry, Added)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_in_place_keeps_the_inode_and_cuts_only_a_longer_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, files::hosts("pod", None)).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        let with_ip = files::hosts("pod", Some("10.0.0.7"));
        rewrite_in_place(&path, with_ip.as_bytes()).expect("extending");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), with_ip);
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "a bind mount of it must see the new text");
        rewrite_in_place(&path, b"short\n").expect("shortening");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short\n");
        assert!(rewrite_in_place(&dir.path().join("missing"), b"x").is_err(), "never made here: hosts is made before");
    }
}
