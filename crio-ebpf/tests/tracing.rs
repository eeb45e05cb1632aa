//! The programs on this machine's kernel: a process run in a tracked cgroup is reported (fork,
//! exec with its file, exit with its code), one elsewhere is not, the pinned map is readable
//! by bpftool with its types, and nothing is lost.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crio_ebpf::{CGROUP_CONTAINER, EventKind, Features, KernelEvent, Tracer};

/// A cgroup of the default (v2) hierarchy, removed when dropped.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Self {
        let unified = Path::new("/sys/fs/cgroup/unified");
        let root = if unified.join("cgroup.procs").exists() { unified } else { Path::new("/sys/fs/cgroup") };
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("creating a test cgroup");
        Cgroup(dir)
    }

    fn id(&self) -> u64 {
        std::fs::metadata(&self.0).unwrap().ino()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_in_tracked_cgroups_are_reported() {
    let pins = Pins(PathBuf::from(format!("/sys/fs/bpf/crio-ebpf-test-{}", std::process::id())));
    let tracer = std::sync::Arc::new(Tracer::load(Path::new("/sys/fs/bpf"), &pins.0, Features::default()).expect("loading the programs"));
    // All but the fexit program, which kernels without BPF trampolines refuse (this CI's).
    let off: Vec<_> = tracer.unavailable.iter().filter(|u| u.program != crio_ebpf::THROTTLE_PROGRAM.0).collect();
    assert!(off.is_empty(), "every tracepoint program attaches here: {off:?}");
    let tracked = Cgroup::new(&format!("crio-ebpf-test-{}", std::process::id()));
    tracer.track(tracked.id(), "pod-1", "ctr-1", CGROUP_CONTAINER).unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<KernelEvent>();
    let reader = tracer.clone();
    tokio::spawn(async move { reader.read_events(move |e| drop(tx.send(e))).await });

    // Outside: not reported. Inside: the shell moves itself in, forks a child that exits 3.
    Command::new("/bin/sh").args(["-c", "exit 0"]).status().unwrap();
    let script = format!("echo $$ > {}/cgroup.procs && /bin/sh -c 'exit 3'; exit 0", tracked.0.display());
    let status = Command::new("/bin/sh").args(["-c", &script]).status().unwrap();
    assert!(status.success());

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.iter().any(|e: &KernelEvent| matches!(e.kind, EventKind::Exit { code: 0, .. })) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => seen.push(e),
            _ => panic!("events so far: {seen:#?}"),
        }
    }
    assert!(seen.iter().all(|e| e.cgroup_id == tracked.id()), "only the tracked cgroup: {seen:#?}");
    let fork = seen.iter().find(|e| e.kind == EventKind::Fork).expect("the fork of the child");
    let exec = seen.iter().find(|e| matches!(&e.kind, EventKind::Exec { filename } if filename == "/bin/sh")).expect("the child's exec");
    assert_eq!((exec.pid, exec.ppid), (fork.pid, fork.ppid));
    let exit = seen.iter().find(|e| e.pid == fork.pid && matches!(e.kind, EventKind::Exit { .. })).expect("the child's exit");
    assert_eq!(exit.kind, EventKind::Exit { code: 3, signal: None });
    let age = std::time::SystemTime::now().duration_since(exit.time).expect("a time in the past");
    assert!(age < Duration::from_secs(60), "wall-clock times: {age:?}");
    assert_eq!(tracer.lost(), 0);

    // The pinned map reads back with its types, from bpftool as from us.
    let dump = Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(pins.0.join("containers")).output().expect("bpftool");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("\"container_id\":\"ctr-1\"") && text.contains("\"pod_id\":\"pod-1\""), "{text}");
    assert_eq!(tracer.tracked().len(), 1);
    tracer.untrack(tracked.id()).unwrap();
    tracer.untrack(tracked.id()).unwrap();
    assert!(tracer.tracked().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn pins_left_by_another_layout_are_replaced() {
    let pins = Pins(PathBuf::from(format!("/sys/fs/bpf/crio-ebpf-layout-{}", std::process::id())));
    std::fs::create_dir_all(&pins.0).unwrap();
    let stale = pins.0.join("containers");
    let made = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&stale)
        .args(["type", "hash", "key", "8", "value", "136", "entries", "16", "name", "containers"])
        .status()
        .expect("bpftool");
    assert!(made.success());
    let tracer = Tracer::load(Path::new("/sys/fs/bpf"), &pins.0, Features::default()).expect("loading over a stale pin");
    tracer.track(7, "pod", "ctr", CGROUP_CONTAINER).expect("the new map takes the new layout");
    assert_eq!(tracer.tracked().len(), 1);
}

/// The filter the programs read before the `containers` map is not pinned: a second load
/// counts it again from the pinned entries, so a restarted daemon's containers stay followed.
#[tokio::test(flavor = "multi_thread")]
async fn cgroups_tracked_before_a_reload_are_still_reported() {
    let pins = Pins(PathBuf::from(format!("/sys/fs/bpf/crio-ebpf-reload-{}", std::process::id())));
    let tracked = Cgroup::new(&format!("crio-ebpf-reload-{}", std::process::id()));
    {
        let first = Tracer::load(Path::new("/sys/fs/bpf"), &pins.0, Features::default()).expect("loading the programs");
        first.track(tracked.id(), "pod-r", "ctr-r", CGROUP_CONTAINER).unwrap();
    }
    let tracer = std::sync::Arc::new(Tracer::load(Path::new("/sys/fs/bpf"), &pins.0, Features::default()).expect("loading again"));
    assert_eq!(tracer.tracked().len(), 1, "the pinned entry is kept");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<KernelEvent>();
    let reader = tracer.clone();
    tokio::spawn(async move { reader.read_events(move |e| drop(tx.send(e))).await });

    let script = format!("echo $$ > {}/cgroup.procs && /bin/sh -c 'exit 4'; exit 0", tracked.0.display());
    assert!(Command::new("/bin/sh").args(["-c", &script]).status().unwrap().success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if e.kind == (EventKind::Exit { code: 4, signal: None }) => break,
            Ok(Some(_)) => {}
            _ => panic!("no exit event from a cgroup tracked before the reload"),
        }
    }
    tracer.untrack(tracked.id()).unwrap();
}
