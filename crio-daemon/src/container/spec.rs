//! The OCI runtime spec for a container: the CRI request over the image config over
//! defaults, joined to its pod's namespaces.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCpuBuilder, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};
use serde::Deserialize;

use super::user::ResolvedUser;
use crate::model::ContainerSpec;
use crate::model::PodSandbox;

/// CRI-O's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
];

/// The parts of an image config a container needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub config: Option<ImageRunConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageRunConfig {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub stop_signal: String,
    #[serde(default)]
    pub volumes: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// CRI-O's `image_volumes = "mkdir"`: each volume the image declares becomes a directory in the
/// container's root filesystem. Paths that climb out, or pass through a symlink, are skipped.
pub fn make_image_volumes(rootfs: &Path, image: &ImageRunConfig) -> Vec<String> {
    let mut skipped = Vec::new();
    for vol in image.volumes.iter().flat_map(|v| v.keys()) {
        let mut dir = rootfs.to_path_buf();
        let mut ok = true;
        for comp in Path::new(vol).components() {
            match comp {
                std::path::Component::Normal(c) => {
                    dir.push(c);
                    match std::fs::symlink_metadata(&dir) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => ok = false,
                        Err(_) => ok = std::fs::create_dir(&dir).is_ok(),
                    }
                }
                std::path::Component::RootDir | std::path::Component::CurDir => {}
                _ => ok = false,
            }
            if !ok {
                break;
            }
        }
        if !ok {
            skipped.push(vol.clone());
        }
    }
    skipped
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container has no command: neither the request nor the image gives one")]
    NoCommand,
    #[error("building the OCI spec: {0}")]
    Build(String),
    #[error("unknown capability {name:?}")]
    UnknownCapability { name: String },
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("device {path}: {why}")]
    Device { path: std::path::PathBuf, why: String },
}

fn build_err(e: impl std::fmt::Display) -> SpecError {
    SpecError::Build(e.to_string())
}

/// Kubernetes' rule: `command` replaces the image's Entrypoint and then `args` replace its Cmd;
/// with no `command`, the Entrypoint stays and `args` (if any) replace Cmd.
pub fn process_args(spec: &ContainerSpec, image: &ImageRunConfig) -> Result<Vec<String>, SpecError> {
    let (entry, cmd) = if !spec.command.is_empty() {
        (spec.command.clone(), spec.args.clone())
    } else {
        let cmd = if spec.args.is_empty() { image.cmd.clone().unwrap_or_default() } else { spec.args.clone() };
        (image.entrypoint.clone().unwrap_or_default(), cmd)
    };
    let all: Vec<String> = entry.into_iter().chain(cmd).collect();
    if all.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(all)
}

/// Image env, then request env overriding by name; PATH defaulted if nothing set it.
pub fn environment(spec: &ContainerSpec, image: &ImageRunConfig, hostname: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.into(),
        None => env.push((k.into(), v.into())),
    };
    set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    set("HOSTNAME", hostname);
    for kv in image.env.iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for (k, v) in &spec.envs {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace, SpecError> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p);
    }
    b.build().map_err(build_err)
}

fn bind(dest: &str, source: &Path, readonly: bool, propagation: &str) -> Result<Mount, SpecError> {
    let mut options = vec!["rbind".to_string(), if readonly { "ro" } else { "rw" }.to_string()];
    if !propagation.is_empty() {
        options.push(propagation.into());
    }
    MountBuilder::default().destination(dest).typ("bind").source(source).options(options).build().map_err(build_err)
}

/// Host devices as OCI devices plus the cgroup rules that allow them.
fn devices(list: &[crate::model::DeviceSpec]) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut devices = Vec::new();
    let mut rules = Vec::new();
    for d in list {
        let st = rustix::fs::stat(&d.host_path).map_err(|e| SpecError::Device { path: d.host_path.clone(), why: e.to_string() })?;
        let typ = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::CharacterDevice => LinuxDeviceType::C,
            rustix::fs::FileType::BlockDevice => LinuxDeviceType::B,
            _ => return Err(SpecError::Device { path: d.host_path.clone(), why: "not a character or block device".into() }),
        };
        let (major, minor) = (rustix::fs::major(st.st_rdev) as i64, rustix::fs::minor(st.st_rdev) as i64);
        let perms = if d.permissions.is_empty() { "rwm".to_string() } else { d.permissions.clone() };
        if perms.chars().any(|c| !"rwm".contains(c)) {
            return Err(SpecError::Device { path: d.host_path.clone(), why: format!("permissions {perms:?} are not some of \"rwm\"") });
        }
        let mode = st.st_mode & 0o7777;
        devices.push(
            LinuxDeviceBuilder::default()
                .path(&d.container_path)
                .typ(typ)
                .major(major)
                .minor(minor)
                .file_mode(mode)
                .uid(st.st_uid)
                .gid(st.st_gid)
                .build()
                .map_err(build_err)?,
        );
        rules.push(
            LinuxDeviceCgroupBuilder::default().allow(true).typ(typ).major(major).minor(minor).access(perms).build().map_err(build_err)?,
        );
    }
    Ok((devices, rules))
}

/// Where a container's PID namespace comes from, resolved against its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidNamespace {
    Host,
    New,
    Join(PathBuf),
}

pub struct SpecInput<'a> {
    pub spec: &'a ContainerSpec,
    pub image: &'a ImageRunConfig,
    pub pod: &'a PodSandbox,
    pub rootfs: &'a Path,
    pub user: &'a ResolvedUser,
    /// Capabilities this daemon holds: a privileged container gets these, never more.
    pub held_capabilities: &'a [String],
    pub pid_namespace: &'a PidNamespace,
    /// The host's /dev: a privileged container gets every device in it.
    pub host_dev: &'a Path,
    /// AppArmor profile and SELinux labels, where the host has them.
    pub labels: &'a super::lsm::Labels,
    /// The runtime's cgroupsPath (a path, or `<slice>:crio:<id>` under systemd).
    pub cgroups_path: &'a str,
    /// A pure cgroup v2 host: unprivileged containers get a cgroup namespace of their own
    /// (as CRI-O), so their /sys/fs/cgroup is their own cgroup.
    pub cgroup_v2: bool,
    /// The system-call ABIs this kernel runs, which RuntimeDefault's filter covers.
    pub abis: crate::seccomp::Abis,
}

/// A capability by its kernel name, with or without `CAP_`, in any case.
pub fn capability(name: &str) -> Result<Capability, SpecError> {
    let upper = name.to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).parse().map_err(|_| SpecError::UnknownCapability { name: name.into() })
}

/// The runtime handler a bundle was made for: recovery deletes with that runtime alone.
pub const RUNTIME_HANDLER_ANNOTATION: &str = "io.kubernetes.cri-o.RuntimeHandler";

pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let SpecInput { spec, image, pod, rootfs, user, held_capabilities, pid_namespace, host_dev, labels, cgroups_path, cgroup_v2, abis } =
        input;
    let hostname = std::fs::read_to_string(pod.dir.join("hostname")).unwrap_or_default().trim().to_string();
    let sec = &spec.security;
    let caps = capability_set(sec, held_capabilities)?;
    let mut capabilities = oci_spec::runtime::LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone())).set_effective(Some(caps.clone())).set_permitted(Some(caps.clone()));
    capabilities.set_inheritable(None).set_ambient(None);
    let cwd = [&spec.working_dir, &image.working_dir].into_iter().find(|d| !d.is_empty()).cloned().unwrap_or_else(|| "/".into());
    let mut process = ProcessBuilder::default();
    if let Some(p) = &labels.apparmor_profile {
        process = process.apparmor_profile(p.clone());
    }
    if let Some(l) = &labels.process_label {
        process = process.selinux_label(l.clone());
    }
    let process = process
        .terminal(spec.tty)
        .args(process_args(spec, image)?)
        .env(environment(spec, image, &hostname))
        .cwd(cwd)
        .user(UserBuilder::default().uid(user.uid).gid(user.gid).additional_gids(user.additional_gids.clone()).build().map_err(build_err)?)
        .capabilities(capabilities)
        .no_new_privileges(sec.no_new_privs)
        .oom_score_adj(oom_score_adj(spec.resources.oom_score_adj, held_capabilities))
        .build()
        .map_err(build_err)?;
    let (mut devices, mut device_rules) = devices(&spec.devices)?;
    if sec.privileged {
        // As CRI-O: every host device, and the device cgroup allows them all.
        let requested: std::collections::HashSet<PathBuf> = devices.iter().map(|d| d.path().clone()).collect();
        devices.extend(host_devices(host_dev).into_iter().filter(|d| !requested.contains(d.path())));
        device_rules = vec![LinuxDeviceCgroupBuilder::default().allow(true).access("rwm").build().map_err(build_err)?];
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(pod, pid_namespace, *cgroup_v2 && !sec.privileged)?)
        .resources(resources(&spec.resources, device_rules)?)
        .cgroups_path(cgroups_path.to_string());
    if !devices.is_empty() {
        linux = linux.devices(devices);
    }
    if let Some(l) = &labels.mount_label {
        linux = linux.mount_label(l.clone());
    }
    if let Some(filter) = crate::seccomp::section(&sec.seccomp, sec.privileged, &caps, *abis)? {
        linux = linux.seccomp(filter);
    }
    if !pod.spec.sysctls.is_empty() {
        linux = linux.sysctl(pod.spec.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::HashMap<_, _>>());
    }
    if !sec.privileged {
        let or_default = |given: &Vec<String>, default: fn() -> Vec<String>| if given.is_empty() { default() } else { given.clone() };
        linux = linux
            .masked_paths(or_default(&sec.masked_paths, oci_spec::runtime::get_default_maskedpaths))
            .readonly_paths(or_default(&sec.readonly_paths, oci_spec::runtime::get_default_readonly_paths));
    }
    // A shared or slave bind needs the container's root mount to propagate the same way.
    if spec.mounts.iter().any(|m| m.propagation == "rshared") {
        linux = linux.rootfs_propagation("rshared");
    } else if spec.mounts.iter().any(|m| m.propagation == "rslave") {
        linux = linux.rootfs_propagation("rslave");
    }
    let mut out = Spec::default();
    // A hostname needs a UTS namespace of the pod's own; host-network pods share the node's.
    out.set_hostname(pod.utsns.is_some().then_some(hostname))
        .set_root(Some(RootBuilder::default().path(*rootfs).readonly(sec.readonly_rootfs).build().map_err(build_err)?))
        .set_process(Some(process))
        .set_mounts(Some(mounts(spec, pod)?))
        .set_linux(Some(linux.build().map_err(build_err)?));
    let mut annotations: std::collections::HashMap<String, String> = spec.annotations.clone().into_iter().collect();
    annotations.insert("io.kubernetes.cri-o.SandboxID".into(), pod.id.clone());
    annotations.insert(RUNTIME_HANDLER_ANNOTATION.into(), pod.spec.runtime_handler.clone());
    out.set_annotations(Some(annotations));
    Ok(out)
}

/// The kubelet's oom_score_adj (-997 for Guaranteed pods, up to 1000 for BestEffort). Lowering
/// it below 0 takes CAP_SYS_RESOURCE; a daemon without it (a sandbox) hands out 0 instead of a
/// value the runtime would fail to set.
pub(super) fn oom_score_adj(requested: i64, held: &[String]) -> i32 {
    let floor = if held.iter().any(|c| c == "CAP_SYS_RESOURCE") { -1000 } else { 0 };
    requested.clamp(floor, 1000) as i32
}

/// Character and block devices under the host's `dev`, as runc's host device list has them:
/// not the per-container trees (pts, shm, mqueue, fd) nor the console, which the runtime makes.
fn host_devices(dev: &Path) -> Vec<LinuxDevice> {
    let mut out = Vec::new();
    let mut dirs = vec![dev.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if !matches!(name.as_ref(), "pts" | "shm" | "fd" | "mqueue") && !name.starts_with('.') {
                    dirs.push(e.path());
                }
                continue;
            }
            if name == "console" {
                continue;
            }
            let Ok(st) = rustix::fs::lstat(e.path()) else { continue };
            let typ = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
                rustix::fs::FileType::CharacterDevice => LinuxDeviceType::C,
                rustix::fs::FileType::BlockDevice => LinuxDeviceType::B,
                _ => continue,
            };
            let Ok(rel) = e.path().strip_prefix(dev).map(Path::to_path_buf) else { continue };
            let built = LinuxDeviceBuilder::default()
                .path(Path::new("/dev").join(rel))
                .typ(typ)
                .major(rustix::fs::major(st.st_rdev) as i64)
                .minor(rustix::fs::minor(st.st_rdev) as i64)
                .file_mode(st.st_mode & 0o7777)
                .uid(st.st_uid)
                .gid(st.st_gid)
                .build();
            if let Ok(d) = built {
                out.push(d);
            }
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// The container's capabilities: the runtime's default set with the request's drops and adds,
/// or (privileged, or "ALL") what this daemon holds, never more.
fn capability_set(sec: &crate::model::Security, held: &[String]) -> Result<std::collections::HashSet<Capability>, SpecError> {
    let caps: Vec<String> = if sec.privileged {
        held.to_vec()
    } else {
        let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        let norm = |c: &String| if c.starts_with("CAP_") { c.to_uppercase() } else { format!("CAP_{}", c.to_uppercase()) };
        if sec.drop_capabilities.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
            caps.clear();
        }
        caps.retain(|c| !sec.drop_capabilities.iter().map(norm).any(|d| &d == c));
        for add in &sec.add_capabilities {
            if add.eq_ignore_ascii_case("ALL") {
                caps = held.to_vec();
            } else if !caps.contains(&norm(add)) {
                caps.push(norm(add));
            }
        }
        caps
    };
    caps.iter().map(|c| capability(c)).collect()
}

/// The runtime's default mounts, the pod's shared /dev/shm and files, and the request's binds.
fn mounts(spec: &ContainerSpec, pod: &PodSandbox) -> Result<Vec<oci_spec::runtime::Mount>, SpecError> {
    let mut mounts = oci_spec::runtime::get_default_mounts();
    // As CRI-O and containerd: every container sees its cgroups read-only at /sys/fs/cgroup
    // (runtimes and JVMs size themselves from the limits there), unless the request mounts
    // /sys or the cgroup tree itself.
    let requested = |dest: &str| spec.mounts.iter().any(|m| m.container_path == Path::new(dest));
    if requested("/sys") || requested("/sys/fs/cgroup") {
        mounts.retain(|m| m.destination() != Path::new("/sys/fs/cgroup"));
    }
    if spec.security.privileged {
        // As CRI-O: /sys (and the cgroup tree in it) writable; CSI and device plugins write there.
        for m in &mut mounts {
            if m.destination() == Path::new("/sys") || m.destination() == Path::new("/sys/fs/cgroup") {
                let options = m.options().clone().unwrap_or_default().into_iter().filter(|o| o != "ro").collect();
                m.set_options(Some(options));
            }
        }
    }
    // Containers of a pod share one /dev/shm, as they share the IPC namespace.
    if let Some(shm) = pod.shm() {
        mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
        mounts.push(bind("/dev/shm", &shm, false, "")?);
    }
    for (dest, file) in [("/etc/hosts", "hosts"), ("/etc/resolv.conf", "resolv.conf"), ("/etc/hostname", "hostname")] {
        if !spec.mounts.iter().any(|m| m.container_path == Path::new(dest)) {
            mounts.push(bind(dest, &pod.dir.join(file), false, "")?);
        }
    }
    for m in &spec.mounts {
        let propagation = match m.propagation.as_str() {
            "" | "private" => "rprivate",
            "rslave" => "rslave",
            "rshared" => "rshared",
            other => other,
        };
        let mut mount = bind(&m.container_path.display().to_string(), &m.host_path, m.readonly, propagation)?;
        if m.recursive_readonly {
            // Submounts read-only too (mount_setattr AT_RECURSIVE); the handler was checked for it.
            let mut options = mount.options().clone().unwrap_or_default();
            options.push("rro".into());
            mount.set_options(Some(options));
        }
        mounts.push(mount);
    }
    Ok(mounts)
}

/// Its own mount (and maybe PID and cgroup) namespaces; the pod's network, IPC and UTS ones.
fn namespaces(
    pod: &PodSandbox,
    pid_namespace: &PidNamespace,
    own_cgroup: bool,
) -> Result<Vec<oci_spec::runtime::LinuxNamespace>, SpecError> {
    let mut namespaces = vec![namespace(LinuxNamespaceType::Mount, None)?];
    if own_cgroup {
        namespaces.push(namespace(LinuxNamespaceType::Cgroup, None)?);
    }
    match pid_namespace {
        PidNamespace::Host => {}
        PidNamespace::New => namespaces.push(namespace(LinuxNamespaceType::Pid, None)?),
        PidNamespace::Join(path) => namespaces.push(namespace(LinuxNamespaceType::Pid, Some(path))?),
    }
    for (kind, path) in
        [(LinuxNamespaceType::Network, &pod.netns), (LinuxNamespaceType::Ipc, &pod.ipcns), (LinuxNamespaceType::Uts, &pod.utsns)]
    {
        if let Some(p) = path {
            namespaces.push(namespace(kind, Some(p))?);
        }
    }
    Ok(namespaces)
}

/// The cgroup limits the runtime applies: CPU, memory, hugepages, v2 files, device rules.
fn resources(r: &crate::model::Resources, device_rules: Vec<LinuxDeviceCgroup>) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let mut resources = LinuxResourcesBuilder::default();
    let mut cpu = LinuxCpuBuilder::default();
    if r.cpu_shares > 0 {
        cpu = cpu.shares(r.cpu_shares);
    }
    if r.cpu_quota > 0 {
        cpu = cpu.quota(r.cpu_quota);
    }
    if r.cpu_period > 0 {
        cpu = cpu.period(r.cpu_period);
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
    }
    resources = resources.cpu(cpu.build().map_err(build_err)?);
    if r.memory_limit > 0 || r.memory_swap_limit > 0 {
        let mut memory = LinuxMemoryBuilder::default();
        if r.memory_limit > 0 {
            memory = memory.limit(r.memory_limit);
        }
        if r.memory_swap_limit > 0 {
            memory = memory.swap(r.memory_swap_limit);
        }
        resources = resources.memory(memory.build().map_err(build_err)?);
    }
    if !r.hugepages.is_empty() {
        let limits = r
            .hugepages
            .iter()
            .map(|(size, limit)| {
                LinuxHugepageLimitBuilder::default().page_size(size.clone()).limit(*limit as i64).build().map_err(build_err)
            })
            .collect::<Result<Vec<_>, _>>()?;
        resources = resources.hugepage_limits(limits);
    }
    if !r.unified.is_empty() {
        resources = resources.unified(r.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::HashMap<_, _>>());
    }
    if !device_rules.is_empty() {
        resources = resources.devices(device_rules);
    }
    resources.build().map_err(build_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(entry: &[&str], cmd: &[&str]) -> ImageRunConfig {
        let v = |s: &[&str]| (!s.is_empty()).then(|| s.iter().map(|x| x.to_string()).collect());
        ImageRunConfig { entrypoint: v(entry), cmd: v(cmd), ..Default::default() }
    }

    fn req(command: &[&str], args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn test_pod(dir: &Path) -> PodSandbox {
        PodSandbox {
            id: "a".repeat(64),
            full_name: "k8s_web".into(),
            spec: crate::model::PodSpec::default(),
            state: crate::model::PodState::Ready,
            created_at_nanos: 0,
            ips: vec![],
            netns: None,
            ipcns: None,
            utsns: None,
            pidns: None,
            pid_holder: 0,
            cgroup: "/crio/pod-a".into(),
            cgroup_created: true,
            cgroup_id: 0,
            dir: dir.into(),
            run_dir: dir.into(),
            monitor_pid: 1,
        }
    }

    static NO_IMAGE_CONFIG: ImageRunConfig = ImageRunConfig {
        user: String::new(),
        env: None,
        entrypoint: None,
        cmd: None,
        working_dir: String::new(),
        stop_signal: String::new(),
        volumes: None,
    };
    static UNCONFINED: super::super::lsm::Labels =
        super::super::lsm::Labels { apparmor_profile: None, process_label: None, mount_label: None };

    fn input<'a>(spec: &'a ContainerSpec, pod: &'a PodSandbox, user: &'a ResolvedUser) -> SpecInput<'a> {
        SpecInput {
            spec,
            image: &NO_IMAGE_CONFIG,
            pod,
            rootfs: &pod.dir,
            user,
            held_capabilities: &[],
            pid_namespace: &PidNamespace::New,
            host_dev: &pod.dir,
            labels: &UNCONFINED,
            cgroups_path: "/crio/pod-a/ctr",
            cgroup_v2: false,
            abis: crate::seccomp::Abis::ALL,
        }
    }

    #[test]
    fn every_container_sees_its_cgroups_read_only_and_its_own_cgroup_namespace_on_v2() {
        let t = tempfile::tempdir().unwrap();
        let pod = test_pod(t.path());
        let user = ResolvedUser { uid: 0, gid: 0, additional_gids: vec![] };
        let cgroup_mount = |spec: &Spec| {
            let m = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/sys/fs/cgroup")).cloned();
            m.map(|m| (m.typ().clone().unwrap_or_default(), m.options().clone().unwrap_or_default()))
        };
        let has_cgroup_ns = |spec: &Spec| {
            let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap_or_default();
            ns.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup)
        };
        let plain = req(&["/bin/true"], &[]);
        let built = build(&input(&plain, &pod, &user)).unwrap();
        let (typ, options) = cgroup_mount(&built).expect("an unprivileged container gets /sys/fs/cgroup");
        assert_eq!(typ, "cgroup");
        assert!(options.iter().any(|o| o == "ro"), "{options:?}");
        assert!(!has_cgroup_ns(&built), "no cgroup namespace on v1 and hybrid hosts");
        assert!(has_cgroup_ns(&build(&SpecInput { cgroup_v2: true, ..input(&plain, &pod, &user) }).unwrap()));

        let mut privileged = plain.clone();
        privileged.security.privileged = true;
        let built = build(&SpecInput { cgroup_v2: true, ..input(&privileged, &pod, &user) }).unwrap();
        let (_, options) = cgroup_mount(&built).expect("a privileged container gets /sys/fs/cgroup");
        assert!(!options.iter().any(|o| o == "ro"), "writable when privileged: {options:?}");
        assert!(!has_cgroup_ns(&built), "a privileged container stays in the node's cgroup namespace");

        for dest in ["/sys", "/sys/fs/cgroup"] {
            let mut own = plain.clone();
            own.mounts.push(crate::model::MountSpec { container_path: dest.into(), host_path: t.path().into(), ..Default::default() });
            let built = build(&input(&own, &pod, &user)).unwrap();
            let at: Vec<_> = built.mounts().as_ref().unwrap().iter().filter(|m| m.destination() == Path::new("/sys/fs/cgroup")).collect();
            assert!(at.iter().all(|m| m.typ().as_deref() == Some("bind")), "the request's {dest} replaces the cgroup mount: {at:?}");
        }
    }

    #[test]
    fn lsm_labels_reach_the_spec() {
        let t = tempfile::tempdir().unwrap();
        let pod = test_pod(t.path());
        let labels = super::super::lsm::Labels {
            apparmor_profile: Some("crio-default".into()),
            process_label: Some("system_u:system_r:container_t:s0:c1,c2".into()),
            mount_label: Some("system_u:object_r:container_file_t:s0:c1,c2".into()),
        };
        let spec = req(&["/bin/true"], &[]);
        let user = ResolvedUser { uid: 0, gid: 0, additional_gids: vec![] };
        let input = SpecInput {
            spec: &spec,
            image: &ImageRunConfig::default(),
            pod: &pod,
            rootfs: t.path(),
            user: &user,
            held_capabilities: &[],
            pid_namespace: &PidNamespace::New,
            host_dev: t.path(),
            labels: &labels,
            cgroups_path: "/crio/pod-a/ctr",
            cgroup_v2: false,
            abis: crate::seccomp::Abis::ALL,
        };
        let v = serde_json::to_value(build(&input).unwrap()).unwrap();
        assert_eq!(v["process"]["apparmorProfile"], "crio-default");
        assert_eq!(v["process"]["selinuxLabel"], "system_u:system_r:container_t:s0:c1,c2");
        assert_eq!(v["linux"]["mountLabel"], "system_u:object_r:container_file_t:s0:c1,c2");
        let bare = SpecInput { labels: &Default::default(), ..input };
        let v = serde_json::to_value(build(&bare).unwrap()).unwrap();
        assert!(v["process"].get("apparmorProfile").is_none() && v["linux"].get("mountLabel").is_none(), "unconfined: {v}");
    }

    #[test]
    fn negative_oom_score_adj_only_with_cap_sys_resource() {
        let with = ["CAP_KILL".to_string(), "CAP_SYS_RESOURCE".to_string()];
        assert_eq!(oom_score_adj(-997, &with), -997);
        assert_eq!(oom_score_adj(-5000, &with), -1000);
        assert_eq!(oom_score_adj(-997, &with[..1]), 0);
        assert_eq!(oom_score_adj(1000, &with[..1]), 1000);
    }

    #[test]
    fn kubernetes_command_rules() {
        let image = img(&["/entry"], &["default"]);
        assert_eq!(process_args(&req(&[], &[]), &image).unwrap(), ["/entry", "default"]);
        assert_eq!(process_args(&req(&[], &["x"]), &image).unwrap(), ["/entry", "x"]);
        assert_eq!(process_args(&req(&["/bin/sh"], &[]), &image).unwrap(), ["/bin/sh"]);
        assert_eq!(process_args(&req(&["/bin/sh"], &["-c", "true"]), &image).unwrap(), ["/bin/sh", "-c", "true"]);
        assert!(matches!(process_args(&req(&[], &[]), &img(&[], &[])), Err(SpecError::NoCommand)));
    }

    #[test]
    fn image_volumes_are_made_inside_the_rootfs_only() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(t.path(), root.join("escape")).unwrap();
        let mut vols = std::collections::BTreeMap::new();
        for v in ["/data/db", "/escape/x", "/../up"] {
            vols.insert(v.to_string(), serde_json::Value::Null);
        }
        let image = ImageRunConfig { volumes: Some(vols), ..Default::default() };
        let mut skipped = make_image_volumes(&root, &image);
        skipped.sort();
        assert_eq!(skipped, ["/../up", "/escape/x"]);
        assert!(root.join("data/db").is_dir());
        assert!(!t.path().join("x").exists());
    }

    #[test]
    fn request_env_overrides_image_env() {
        let image = ImageRunConfig { env: Some(vec!["PATH=/bin".into(), "A=image".into()]), ..Default::default() };
        let spec = ContainerSpec { envs: vec![("A".into(), "request".into()), ("B".into(), "b".into())], ..Default::default() };
        assert_eq!(environment(&spec, &image, "h"), ["PATH=/bin", "HOSTNAME=h", "A=request", "B=b"]);
    }
}
