//! Mount propagation through CRI: an rshared bind carries a container's mounts back to the host,
//! an rslave bind carries the host's into the container, and either on a private host mount is
//! refused instead of silently propagating nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::unmount_under;
use common::pods::*;
use crio::cri::v1 as cri;
use rustix::mount::{MountFlags, MountPropagationFlags};

/// A tmpfs with the given propagation, unmounted (with all below it) when dropped.
struct HostMount(PathBuf);

impl HostMount {
    fn new(path: PathBuf, propagation: MountPropagationFlags) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        rustix::mount::mount("tmpfs", &path, "tmpfs", MountFlags::empty(), c"size=1m").expect("mounting a tmpfs");
        let m = HostMount(path);
        rustix::mount::mount_change(&m.0, propagation).expect("setting propagation");
        m
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        unmount_under(&self.0);
    }
}

fn bind(host: &Path, container: &str, propagation: i32) -> cri::Mount {
    cri::Mount { host_path: host.display().to_string(), container_path: container.into(), propagation, ..Default::default() }
}

const PRIVATE: i32 = 0;
const RSLAVE: i32 = 1;
const RSHARED: i32 = 2;

#[tokio::test(flavor = "multi_thread")]
async fn shared_and_slave_binds_propagate_and_private_ones_are_refused() {
    let e = env(1).await;
    let d = &e.d;
    let base = d.dir.path().join("mounts");
    let shared = HostMount::new(base.join("shared"), MountPropagationFlags::SHARED);
    let private = HostMount::new(base.join("private"), MountPropagationFlags::PRIVATE);
    let pc = pod_config("mounts", &d.dir.path().join("logs/mounts"));
    let pod = run_pod(d, pc.clone()).await.expect("RunPodSandbox");

    // The container mounts below its rshared bind; the host sees it.
    let mut cc = container_config("c", &e.image, "exec sleep 1000");
    cc.mounts = vec![bind(&shared.0, "/shared", RSHARED), bind(&shared.0, "/slave", RSLAVE)];
    cc.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext { privileged: true, ..Default::default() }),
        ..Default::default()
    });
    let ct = create(d, &pod, &pc, cc).await.expect("CreateContainer");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: ct.clone() }).await.expect("StartContainer");
    wait_state(d, &ct, cri::ContainerState::ContainerRunning).await;
    let out = d
        .runtime()
        .await
        .exec_sync(sh(&ct, "mkdir -p /shared/from-ctr && mount -t tmpfs -o size=1m t /shared/from-ctr && echo hi > /shared/from-ctr/f"))
        .await
        .expect("ExecSync")
        .into_inner();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(shared.0.join("from-ctr/f")).expect("the container's mount reached the host"), "hi\n");

    // The host mounts below the same path; the rslave bind shows it in the container.
    let from_host = shared.0.join("from-host");
    std::fs::create_dir_all(&from_host).unwrap();
    rustix::mount::mount("tmpfs", &from_host, "tmpfs", MountFlags::empty(), c"size=1m").unwrap();
    std::fs::write(from_host.join("g"), "there\n").unwrap();
    let mut seen = String::new();
    for _ in 0..50 {
        let out = d.runtime().await.exec_sync(sh(&ct, "cat /slave/from-host/g 2>/dev/null")).await.unwrap().into_inner();
        seen = String::from_utf8_lossy(&out.stdout).into_owned();
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, "there\n", "the host's mount reached the container");

    let mut cc = container_config("p", &e.image, "true");
    cc.mounts = vec![bind(&private.0, "/p", RSHARED)];
    let err = create(d, &pod, &pc, cc).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("not shared"), "{}", err.message());
    let mut cc = container_config("p", &e.image, "true");
    cc.mounts = vec![bind(&private.0, "/p", PRIVATE)];
    create(d, &pod, &pc, cc).await.expect("a private bind of a private mount is fine");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}
