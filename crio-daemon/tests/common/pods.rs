//! Pods over CRI for the lifecycle tests: an environment with its own bridge, subnet and
//! IPAM directory, a registry holding busybox, and request helpers.

use std::path::Path;
use std::time::Duration;

use crio::cri::v1 as cri;

use super::daemon::DaemonConfig;
use super::{Daemon, ImageBuilder, Layer, Registry};

pub struct Env {
    pub d: Daemon,
    pub portmap: bool,
    pub bridge: String,
    pub image: String,
    pub ipam: tempfile::TempDir,
    pub reg: Registry,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.bridge]).output();
        if self.portmap {
            remove_portmap_chains();
        }
    }
}

/// Deletes a test's bridge when dropped, even after a failure.
pub struct BridgeGuard(pub String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// The portmap plugin leaves its shared chains behind once it has run; a test that brought them
/// takes them away again, unless another pod's hostPort still uses them.
pub fn remove_portmap_chains() {
    let ipt = |args: &[&str]| std::process::Command::new("iptables").arg("-t").arg("nat").args(args).output();
    let Ok(dnat) = ipt(&["-S", "CNI-HOSTPORT-DNAT"]) else { return };
    if String::from_utf8_lossy(&dnat.stdout).lines().count() > 1 {
        return;
    }
    let _ = ipt(&["-D", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"]);
    let _ = ipt(&["-D", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"]);
    let _ = ipt(&["-D", "POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"]);
    for chain in ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"] {
        let _ = ipt(&["-F", chain]);
        let _ = ipt(&["-X", chain]);
    }
}

pub async fn env(tag: u8) -> Env {
    env_with(tag, false).await
}

/// `portmap`: chain the portmap plugin for hostPorts (it programs iptables).
pub async fn env_with(tag: u8, portmap: bool) -> Env {
    env_config(tag, portmap, "").await
}

/// `extra`: configuration appended to the test drop-in (after its [crio.image] table).
pub async fn env_config(tag: u8, portmap: bool, extra: &str) -> Env {
    env_full(tag, portmap, extra, false).await
}

/// A daemon whose runroot is as deep as real nodes have.
pub async fn env_long_runroot(tag: u8) -> Env {
    env_full(tag, false, "", true).await
}

async fn env_full(tag: u8, portmap: bool, extra: &str, long_runroot: bool) -> Env {
    let reg = Registry::start();
    reg.push("busybox", "1", &ImageBuilder::new().layer(Layer::busybox())).await;
    let bridge = format!("crl{}{tag}", std::process::id() % 100_000);
    let subnet = format!("10.{}.{}.0/24", 233 + tag, std::process::id() % 200);
    let ipam = tempfile::tempdir().unwrap();
    let mut plugins = vec![serde_json::json!({"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": ipam.path()}})];
    if portmap {
        plugins.push(serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    }
    let mut cfg = DaemonConfig::trusting(&reg);
    cfg.extra = extra.into();
    cfg.long_runroot = long_runroot;
    cfg.cni_conflist = Some(
        serde_json::json!({
            "cniVersion": "1.0.0", "name": format!("test-{bridge}"),
            "plugins": plugins,
        })
        .to_string(),
    );
    let d = Daemon::start(cfg).await;
    let image = format!("{}/busybox:1", reg.addr);
    d.pull(&image).await.expect("pull busybox");
    Env { d, portmap, bridge, image, ipam, reg }
}

pub fn pod_config(name: &str, logs: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "default".into(), attempt: 0 }),
        hostname: format!("{name}-host"),
        log_directory: logs.display().to_string(),
        dns_config: Some(cri::DnsConfig { servers: vec!["10.96.0.10".into()], searches: vec!["default.svc".into()], options: vec![] }),
        labels: [("app".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

pub fn container_config(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: image.into(), ..Default::default() }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: [("c".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

/// ExecSync of a shell script with a 5 s timeout.
pub fn sh(id: &str, script: &str) -> cri::ExecSyncRequest {
    cri::ExecSyncRequest { container_id: id.into(), cmd: vec!["/bin/sh".into(), "-c".into(), script.into()], timeout: 5 }
}

pub async fn run_pod(d: &Daemon, config: cri::PodSandboxConfig) -> Result<String, tonic::Status> {
    let req = cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
    Ok(d.runtime().await.run_pod_sandbox(req).await?.into_inner().pod_sandbox_id)
}

pub async fn create(
    d: &Daemon,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    let req = cri::CreateContainerRequest { pod_sandbox_id: pod.into(), config: Some(config), sandbox_config: Some(pod_config.clone()) };
    Ok(d.runtime().await.create_container(req).await?.into_inner().container_id)
}

pub async fn status(d: &Daemon, id: &str) -> cri::ContainerStatus {
    let req = cri::ContainerStatusRequest { container_id: id.into(), verbose: false };
    d.runtime().await.container_status(req).await.expect("ContainerStatus").into_inner().status.unwrap()
}

pub async fn wait_state(d: &Daemon, id: &str, state: cri::ContainerState) -> cri::ContainerStatus {
    let mut last = None;
    for _ in 0..500 {
        let st = status(d, id).await;
        if st.state == state as i32 {
            return st;
        }
        last = Some(st);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = d.log();
    let tail: Vec<&str> = log.lines().rev().filter(|l| !l.contains(" h2::")).take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!("container {id} never reached {state:?}; last status {last:?}\ndaemon log tail:\n{}", tail.join("\n"));
}

/// A container running `script` under a memory limit of `limit` bytes.
pub fn memory_limited(name: &str, image: &str, script: &str, limit: i64) -> cri::ContainerConfig {
    let mut c = container_config(name, image, script);
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources { memory_limit_in_bytes: limit, ..Default::default() }),
        ..Default::default()
    });
    c
}

/// A pod config in the node's network namespace: no CNI network needed.
pub fn host_network_pod_config(name: &str, logs: &Path) -> cri::PodSandboxConfig {
    let mut pc = pod_config(name, logs);
    pc.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption { network: 2, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    pc
}

/// A daemon without a CNI network (for host-network pods) with busybox pulled, and `extra`
/// appended to its drop-in.
pub async fn host_network_env(extra: &str) -> (Registry, Daemon, String) {
    let reg = Registry::start();
    reg.push("busybox", "1", &ImageBuilder::new().layer(Layer::busybox())).await;
    let mut cfg = DaemonConfig::trusting(&reg);
    cfg.extra = extra.into();
    let d = Daemon::start(cfg).await;
    let image = format!("{}/busybox:1", reg.addr);
    d.pull(&image).await.expect("pull busybox");
    (reg, d, image)
}

/// Creates and starts a container; its id.
pub async fn start(d: &Daemon, pod: &str, pc: &cri::PodSandboxConfig, c: cri::ContainerConfig) -> String {
    let id = create(d, pod, pc, c).await.expect("CreateContainer");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    id
}

/// A Guaranteed container with one whole CPU, pinned to CPU 1 (what the high-performance
/// hooks take), running `script`.
pub fn on_cpu1(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    let mut c = container_config(name, image, script);
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_shares: 1024,
            cpu_quota: 100_000,
            cpu_period: 100_000,
            cpuset_cpus: "1".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

/// A CNI plugin directory holding the real bridge and host-local plugins and one more, `name`,
/// whose Python `body` a test writes (to log its calls, to be slow). The body has `conf` (the
/// plugin's stdin) and `cmd` (`CNI_COMMAND`); on ADD it must print a result.
pub fn plugin_dir_with(name: &str, body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for p in ["bridge", "host-local"] {
        std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(p), dir.path().join(p)).unwrap();
    }
    let script =
        format!("#!/usr/bin/env python3\nimport json, os, sys, time\nconf = json.load(sys.stdin)\ncmd = os.environ['CNI_COMMAND']\n{body}");
    let path = dir.path().join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}
