//! The typed OCI runtime client against the real runc, running busybox on an overlay root
//! filesystem from an image pulled out of a real registry.

mod common;

use std::fs;
use std::time::Duration;

use common::daemon::unmount_under;
use crio::oci::{CreateOptions, OciError, OciRuntime, Status};
use crio::storage::Store;
use oci_spec::runtime::{RootBuilder, Spec};

/// Deletes the container and unmounts everything under the test's dir, pass or fail.
struct Cleanup<'a> {
    runtime: &'a OciRuntime,
    id: String,
    dir: std::path::PathBuf,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.runtime.path)
            .arg("--root")
            .arg(&self.runtime.root)
            .args(["delete", "--force", &self.id])
            .output();
        unmount_under(&self.dir);
    }
}

fn bundle(dir: &std::path::Path, rootfs: &std::path::Path, args: &[&str]) -> std::path::PathBuf {
    let bundle = dir.join("bundle");
    fs::create_dir_all(&bundle).unwrap();
    let mut spec = Spec::default();
    spec.set_root(Some(RootBuilder::default().path(rootfs).readonly(false).build().unwrap()));
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    process.set_terminal(Some(false));
    process.set_env(Some(vec!["PATH=/bin".into()]));
    spec.set_process(Some(process));
    spec.set_hostname(Some("oci-test".into()));
    spec.save(bundle.join("config.json")).unwrap();
    bundle
}

async fn wait_for(runtime: &OciRuntime, id: &str, want: Status) {
    for _ in 0..500 {
        if runtime.state(id).await.map(|s| s.status).ok() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("container {id} never reached {want:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn runc_lifecycle_on_an_overlay_rootfs() {
    let (_reg, d, image) = common::pulled_busybox().await;
    let dir = d.dir.path().to_path_buf();
    let runtime = OciRuntime::new("runc", std::path::Path::new("/usr/sbin/runc"), &dir.join("runc"));
    let id = format!("crio-oci-test-{}", std::process::id());
    let _cleanup = Cleanup { runtime: &runtime, id: id.clone(), dir: dir.clone() };
    assert!(runtime.version().await.unwrap().starts_with("runc version"));

    let store = Store::open(&d.root(), &dir.join("run")).unwrap();
    let rootfs = store.create_container(&id, &image).unwrap();
    let bundle = bundle(&dir, &rootfs, &["/bin/sh", "-c", "echo hello from $(cat /proc/sys/kernel/hostname); exec sleep 60"]);
    let out = dir.join("stdout");
    let opts = CreateOptions {
        pid_file: Some(dir.join("pid")),
        log_file: Some(dir.join("runc.log")),
        stdout: Some(fs::File::create(&out).unwrap().into()),
        ..Default::default()
    };
    runtime.create(&id, &bundle, opts).await.expect("runc create");
    let state = runtime.state(&id).await.unwrap();
    assert_eq!(state.status, Status::Created);
    assert_eq!(fs::read_to_string(dir.join("pid")).unwrap().trim(), state.pid.to_string());
    // Through the exec fifo, which must leave runc seeing it running at once.
    runtime.start(&id, state.pid).await.expect("start");
    assert_eq!(runtime.state(&id).await.unwrap().status, Status::Running);
    let again = runtime.start(&id, state.pid).await.unwrap_err();
    assert!(matches!(&again, OciError::Failed { command: "start", .. }), "a second start is runc's to refuse: {again}");
    for _ in 0..200 {
        if fs::read_to_string(&out).unwrap().contains("hello") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fs::read_to_string(&out).unwrap(), "hello from oci-test\n");

    runtime.kill(&id, libc::SIGKILL, false).await.expect("kill");
    wait_for(&runtime, &id, Status::Stopped).await;
    runtime.delete(&id, false).await.expect("delete");
    runtime.delete(&id, false).await.expect("deleting again succeeds");
    assert!(matches!(runtime.state(&id).await, Err(OciError::NotFound { .. })));
    store.remove_container(&id).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_errors_carry_the_runtime_message() {
    let (_reg, d, image) = common::pulled_busybox().await;
    let dir = d.dir.path().to_path_buf();
    let runtime = OciRuntime::new("runc", std::path::Path::new("/usr/sbin/runc"), &dir.join("runc"));
    let id = format!("crio-oci-err-{}", std::process::id());
    let _cleanup = Cleanup { runtime: &runtime, id: id.clone(), dir: dir.clone() };
    let store = Store::open(&d.root(), &dir.join("run")).unwrap();
    let rootfs = store.create_container(&id, &image).unwrap();
    let bundle = bundle(&dir, &rootfs, &["/no/such/binary"]);
    let opts = CreateOptions { log_file: Some(dir.join("runc.log")), ..Default::default() };
    let err = runtime.create(&id, &bundle, opts).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/no/such/binary"), "{text}");
    assert!(matches!(runtime.start("never-created", 0).await, Err(OciError::NotFound { .. })));
    runtime.delete(&id, true).await.unwrap();
    store.remove_container(&id).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_init_killed_before_its_start_is_reported() {
    // The init is orphaned when runc create exits; as subreaper this test reaps it itself.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    let (_reg, d, image) = common::pulled_busybox().await;
    let dir = d.dir.path().to_path_buf();
    let runtime = OciRuntime::new("runc", std::path::Path::new("/usr/sbin/runc"), &dir.join("runc"));
    let id = format!("crio-oci-dead-{}", std::process::id());
    let _cleanup = Cleanup { runtime: &runtime, id: id.clone(), dir: dir.clone() };
    let store = Store::open(&d.root(), &dir.join("run")).unwrap();
    let rootfs = store.create_container(&id, &image).unwrap();
    let bundle = bundle(&dir, &rootfs, &["/bin/sleep", "60"]);
    let opts = CreateOptions { log_file: Some(dir.join("runc.log")), ..Default::default() };
    runtime.create(&id, &bundle, opts).await.expect("runc create");
    let pid = runtime.state(&id).await.unwrap().pid;
    let init = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::kill_process(init, rustix::process::Signal::KILL).unwrap();
    let err = runtime.start(&id, pid).await.unwrap_err();
    assert!(matches!(&err, OciError::InitExited { .. }), "{err}");
    let _ = rustix::process::waitpid(Some(init), rustix::process::WaitOptions::empty());
    runtime.delete(&id, true).await.unwrap();
    store.remove_container(&id).unwrap();
}
