//! The peer: Debian's containerd with its CRI plugin on a private socket, root, state and
//! config, the same runc, CNI plugins (timed by the same watch of the kernel's process events) and network shape, and images from the same registry.
//! Stopped by PID, with its shims and mounts, when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::daemon::{delete_runc_containers, unmount_under};

pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd with `conflist` as its only CNI network, pulling from `registry`
    /// (plain HTTP) and using `sandbox_image` for its pause containers.
    pub fn start(registry: &str, sandbox_image: &str, conflist: &str, calls: &crate::timing::Calls) -> Containerd {
        let dir = tempfile::tempdir().expect("containerd dir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("cni")).unwrap();
        std::fs::write(d.join("cni/10-bench.conflist"), conflist).unwrap();
        // Its state and runc's root on a tmpfs each, as /run/containerd is on a node.
        for volatile in ["state", "runc"] {
            crate::common::daemon::mount_tmpfs(&d.join(volatile));
        }
        let socket = d.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            socket = socket.display(),
            d = d.display(),
            runc = calls.runc.display(),
            cni_bin = calls.cni_dir.display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd (Debian package containerd)");
        for _ in 0..500 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Containerd { dir, socket, child: Some(child) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("containerd did not listen on {}", socket.display());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Its shims (which daemonize away from it), found by the socket they serve.
    pub fn shims(&self) -> Vec<u32> {
        crate::procs::matching(|cmd| {
            cmd.first().is_some_and(|c| c.ends_with("containerd-shim-runc-v2"))
                && cmd.iter().any(|a| a.starts_with(self.dir.path().to_str().unwrap()))
        })
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
        // Whatever it left running (a benchmark that failed half way): its runc root has one
        // directory per containerd namespace.
        for ns in std::fs::read_dir(self.dir.path().join("runc")).into_iter().flatten().flatten() {
            delete_runc_containers(&ns.path());
        }
        for shim in self.shims() {
            let _ = Command::new("kill").args(["-9", &shim.to_string()]).status();
        }
        unmount_under(self.dir.path());
    }
}
