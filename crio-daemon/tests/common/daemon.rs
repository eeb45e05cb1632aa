//! The real `crio` binary on a private root, runroot, socket and configuration.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crio::cri::v1 as cri;
use crio::cri::v1::image_service_client::ImageServiceClient;
use crio::cri::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Default)]
pub struct DaemonConfig {
    /// registries.conf contents.
    pub registries_conf: String,
    /// policy.json contents; None gives an accept-anything policy file.
    pub policy: Option<String>,
    /// auth.json contents.
    pub auth_json: Option<String>,
    /// (host:port, CA certificate) pairs for certs.d.
    pub certs: Vec<(String, PathBuf)>,
    /// Extra TOML for a drop-in.
    pub extra: String,
    /// A CNI network for the daemon's network_dir.
    pub cni_conflist: Option<String>,
    /// The daemon's log filter (`CRIO_LOG`); `None` is `debug`, for tests. Benchmarks use the
    /// default level, as the peer runs at its own.
    pub log_filter: Option<String>,
    /// A runroot as deep as real nodes have (every socket under it is too long for a unix
    /// address), instead of a short one.
    pub long_runroot: bool,
    /// The runc binary (default /usr/sbin/runc) and CNI plugin directory (default
    /// /usr/lib/cni): benchmarks give timing wrappers.
    pub runc: Option<PathBuf>,
    pub cni_plugin_dir: Option<PathBuf>,
    /// The runroot and runc's root each on a tmpfs of their own, as a node's /run is
    /// (benchmarks; tests keep them in the temp dir).
    pub volatile_on_tmpfs: bool,
}

/// A runroot path under `dir` as deep as real nodes have: with a pod's id and `monitor.sock`
/// below it, far past the 107 bytes a unix socket address holds.
pub fn long_runroot(dir: &Path) -> PathBuf {
    dir.join("var/lib/containers/storage/node-a/a-runroot-as-long-as-many-real-nodes-have/runroot")
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub runroot: PathBuf,
    child: Option<Child>,
    log_filter: String,
    /// Extra environment for the next start (e.g. `CRIO_CRASH_AT`).
    pub env: Vec<(String, String)>,
}

impl DaemonConfig {
    /// Trusts `reg`: insecure when it speaks plain HTTP, its CA in certs.d when it speaks TLS.
    pub fn trusting(reg: &super::Registry) -> Self {
        let mut c = DaemonConfig::default();
        c.trust(reg);
        c
    }

    pub fn trust(&mut self, reg: &super::Registry) {
        match &reg.ca_cert {
            Some(ca) => self.certs.push((reg.addr.clone(), ca.clone())),
            None => self.registries_conf.push_str(&format!("\n[[registry]]\nlocation = \"{}\"\ninsecure = true\n", reg.addr)),
        }
    }
}

impl Daemon {
    pub async fn start(cfg: DaemonConfig) -> Daemon {
        let dir = tempfile::tempdir().expect("daemon temp dir");
        let d = dir.path();
        let conf_d = d.join("crio.conf.d");
        fs::create_dir_all(&conf_d).unwrap();
        fs::write(d.join("registries.conf"), &cfg.registries_conf).unwrap();
        fs::write(d.join("policy.json"), cfg.policy.as_deref().unwrap_or(r#"{"default":[{"type":"insecureAcceptAnything"}]}"#)).unwrap();
        let auth = d.join("auth.json");
        if let Some(a) = &cfg.auth_json {
            fs::write(&auth, a).unwrap();
        }
        let certs = d.join("certs.d");
        for (host, ca) in &cfg.certs {
            fs::create_dir_all(certs.join(host)).unwrap();
            fs::copy(ca, certs.join(host).join("ca.crt")).unwrap();
        }
        let conf = format!(
            "[crio]\nstate_dir = \"{state}\"\nlog_dir = \"{logs}\"\n[crio.runtime.runtimes.runc]\nruntime_root = \"{runc}\"\nruntime_path = \"{runc_bin}\"\n[crio.network]\nnetwork_dir = \"{cni}\"\nplugin_dirs = [\"{plugins}\"]\n[crio.image]\nregistries_conf = \"{}\"\nregistries_conf_dir = \"{}\"\nsignature_policy = \"{}\"\nglobal_auth_file = \"{}\"\nregistries_certs_dir = \"{}\"\n{}",
            d.join("registries.conf").display(),
            d.join("registries.conf.d").display(),
            d.join("policy.json").display(),
            auth.display(),
            certs.display(),
            cfg.extra,
            state = d.join("state").display(),
            logs = d.join("logs").display(),
            runc = d.join("runc").display(),
            runc_bin = cfg.runc.as_deref().unwrap_or(Path::new("/usr/sbin/runc")).display(),
            plugins = cfg.cni_plugin_dir.as_deref().unwrap_or(Path::new("/usr/lib/cni")).display(),
            cni = d.join("cni").display(),
        );
        fs::create_dir_all(d.join("cni")).unwrap();
        if let Some(net) = &cfg.cni_conflist {
            fs::write(d.join("cni/10-test.conflist"), net).unwrap();
        }
        fs::write(conf_d.join("10-test.conf"), conf).unwrap();
        // In the main file, so a test's drop-in can still add to [crio.ebpf].
        fs::write(d.join("crio.conf"), format!("[crio.ebpf]\npin_dir = \"{}\"\n", pin_dir(d).display())).unwrap();
        let socket = d.join("crio.sock");
        let log_filter = cfg.log_filter.clone().unwrap_or_else(|| "debug".into());
        let runroot = if cfg.long_runroot { long_runroot(d) } else { d.join("run") };
        if cfg.volatile_on_tmpfs {
            for dir in [&runroot, &d.join("runc")] {
                mount_tmpfs(dir);
            }
        }
        let mut daemon = Daemon { socket, runroot, child: None, dir, log_filter, env: Vec::new() };
        daemon.spawn().await;
        daemon
    }

    fn config_args(&self) -> Vec<String> {
        let d = self.dir.path();
        let p = |s: &str| d.join(s).display().to_string();
        vec![
            "--config".into(),
            p("crio.conf"),
            "--config-dir".into(),
            p("crio.conf.d"),
            "--root".into(),
            p("root"),
            "--runroot".into(),
            self.runroot.display().to_string(),
            "--listen".into(),
            p("crio.sock"),
        ]
    }

    async fn spawn(&mut self) {
        let d = self.dir.path();
        if !d.join("crio.conf").exists() {
            fs::write(d.join("crio.conf"), "").unwrap();
        }
        let log = fs::OpenOptions::new().create(true).append(true).open(d.join("crio.log")).unwrap();
        let child = Command::new(crio_binary())
            .args(self.config_args())
            .env("CRIO_LOG", &self.log_filter)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting crio");
        self.child = Some(child);
        for _ in 0..400 {
            // The socket is bound before recovery runs: ready is when it answers.
            if tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
                let mut rt = RuntimeServiceClient::new(unix_channel(&self.socket).await);
                let version = tokio::time::timeout(Duration::from_secs(10), rt.version(cri::VersionRequest::default())).await;
                if matches!(version, Ok(Ok(_))) {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("crio exited with {status} during start:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("crio did not listen within 10s:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("crio.log")).unwrap_or_default()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The metrics port the daemon chose (configured with `metrics_port = 0`), from its log.
    pub fn metrics_port(&self) -> u16 {
        self.log()
            .lines()
            .find_map(|l| {
                l.contains("serving metrics").then(|| l.rsplit_once("address=127.0.0.1:")?.1.split_whitespace().next()?.parse().ok())?
            })
            .expect("the log names the metrics address")
    }

    /// Waits (up to 60 s) for the daemon to exit by itself; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("running");
        for _ in 0..2400 {
            if let Ok(Some(s)) = c.try_wait() {
                self.child = None;
                return s;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("crio did not exit:\n{}", self.log());
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = rustix::process::Pid::from_child(&c);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        for _ in 0..400 {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    pub async fn channel(&self) -> Channel {
        unix_channel(&self.socket).await
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    pub async fn pull(&self, image: &str) -> Result<String, tonic::Status> {
        self.pull_with(image, None).await
    }

    pub async fn pull_with(&self, image: &str, auth: Option<cri::AuthConfig>) -> Result<String, tonic::Status> {
        let req = cri::PullImageRequest { image: Some(spec(image)), auth, sandbox_config: None };
        Ok(self.images().await.pull_image(req).await?.into_inner().image_ref)
    }

    pub async fn status(&self, image: &str) -> Option<cri::Image> {
        let req = cri::ImageStatusRequest { image: Some(spec(image)), verbose: false };
        self.images().await.image_status(req).await.expect("ImageStatus").into_inner().image
    }

    pub async fn list(&self) -> Vec<cri::Image> {
        self.images().await.list_images(cri::ListImagesRequest { filter: None }).await.expect("ListImages").into_inner().images
    }

    pub async fn remove(&self, image: &str) -> Result<(), tonic::Status> {
        self.images().await.remove_image(cri::RemoveImageRequest { image: Some(spec(image)) }).await.map(|_| ())
    }
}

pub fn spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec { image: image.into(), ..Default::default() }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        reap_leftovers(self.dir.path());
        unmount_under(self.dir.path());
        let _ = fs::remove_dir_all(pin_dir(self.dir.path()));
    }
}

/// A gRPC channel over the unix socket at `path`.
pub async fn unix_channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    Endpoint::try_from("http://[::1]:0")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .expect("connecting to the CRI socket")
}

/// The daemon under test: this package's own build for its tests; for the benches (another
/// package) the binary `CRIO_BIN` names, which `cargo xtask bench` builds in release.
pub fn crio_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_crio") {
        Some(path) => path.into(),
        None => std::env::var_os("CRIO_BIN").map(PathBuf::from).expect("CRIO_BIN must name the crio binary (cargo xtask bench sets it)"),
    }
}

/// Where a test daemon pins its BPF maps: its own directory of the BPF filesystem.
pub fn pin_dir(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().trim_start_matches('.').to_string()).unwrap_or_default();
    PathBuf::from(format!("/sys/fs/bpf/crio-test-{name}"))
}

/// What a failed test may leave: containers in the runtime root under `dir` and monitor
/// processes serving sockets under `dir` (ours: killed by PID, never by pattern).
pub fn reap_leftovers(dir: &Path) {
    delete_runc_containers(&dir.join("runc"));
    remove_pod_cgroups(&dir.join("state/pods"));
    let needle = dir.as_os_str().as_encoded_bytes();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let is_monitor = cmdline.split(|b| *b == 0).next().is_some_and(|a| a.ends_with(b"crio-monitor"));
        if is_monitor && cmdline.windows(needle.len()).any(|w| w == needle) {
            let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), rustix::process::Signal::KILL);
        }
    }
}

/// Force-deletes every container in the runc root `root` (a failed test's or bench's).
pub fn delete_runc_containers(root: &Path) {
    let Ok(out) = Command::new("/usr/sbin/runc").arg("--root").arg(root).args(["list", "-q"]).output() else { return };
    for id in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = Command::new("/usr/sbin/runc").arg("--root").arg(root).args(["delete", "--force", id]).output();
    }
}

/// Removes the cgroups the daemon made for the pods recorded in `records`, deepest first, in
/// every hierarchy (the runtime already removed its containers' v1 cgroups).
fn remove_pod_cgroups(records: &Path) {
    let mut cgroups = Vec::new();
    for entry in fs::read_dir(records).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            // A pod caught half-made has a directory and no record: its cgroup is the default one.
            cgroups.push(format!("crio/pod-{}", entry.file_name().to_string_lossy()));
            continue;
        }
        let Ok(bytes) = fs::read(entry.path()) else { continue };
        let json = crio::durable::slots::read(&bytes).map(|v| v.payload.to_vec()).unwrap_or(bytes);
        let Ok(pod) = serde_json::from_slice::<serde_json::Value>(&json) else { continue };
        if let (Some(cgroup), Some(true)) = (pod["cgroup"].as_str(), pod["cgroup_created"].as_bool()) {
            cgroups.push(cgroup.trim_start_matches('/').to_string());
        }
    }
    for cgroup in cgroups {
        for h in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let top = h.path().join(&cgroup);
            let mut dirs = vec![top.clone()];
            dirs.extend(fs::read_dir(&top).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            for d in dirs.iter().rev() {
                let _ = fs::remove_dir(d);
            }
        }
    }
}

/// A fresh tmpfs at `dir` (made if missing); `unmount_under` of a parent detaches it.
pub fn mount_tmpfs(dir: &Path) {
    use rustix::mount::{MountFlags, mount};
    fs::create_dir_all(dir).expect("tmpfs mount point");
    mount("tmpfs", dir, "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, c"mode=0755").expect("mounting a tmpfs");
}

/// Detaches every mount below `dir`, deepest first, so the temp dir can be removed.
pub fn unmount_under(dir: &Path) {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut targets: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| Path::new(m).starts_with(dir)).collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let _ = rustix::mount::unmount(t, rustix::mount::UnmountFlags::DETACH);
    }
}
