//! The scheduling programs on this machine's kernel: a tracked task sharing its CPU with a
//! busy neighbour waits for it (the histogram grows by the neighbour's share), one alone
//! barely waits; on a CPU isolated for a cgroup, another task is counted as an intrusion with
//! its CPU, kind and name, and softirqs raised there too; CFS throttling of a cgroup with a
//! quota is counted. Needs 2 CPUs (CPU 1 is the shared one).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crio_ebpf::{CGROUP_CONTAINER, Features, Intrusion, Tracer};

struct Cgroup(PathBuf);

impl Cgroup {
    fn new(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("creating a test cgroup");
        Cgroup(dir)
    }

    fn id(&self) -> u64 {
        std::fs::metadata(&self.0).expect("test cgroup").ino()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Unified hierarchy: its own on v2, /sys/fs/cgroup/unified on hybrid hosts.
fn unified() -> &'static Path {
    let hybrid = Path::new("/sys/fs/cgroup/unified");
    if hybrid.join("cgroup.procs").exists() { hybrid } else { Path::new("/sys/fs/cgroup") }
}

struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A busy loop on `cpu`, moved into `cgroup` first when given; killed by PID when dropped.
struct Spinner(Child);

impl Spinner {
    fn start(cpu: u32, cgroup: Option<&Path>) -> Spinner {
        let join = cgroup.map(|c| format!("echo $$ > {}/cgroup.procs && ", c.display())).unwrap_or_default();
        let script = format!("{join}exec taskset -c {cpu} /bin/sh -c 'while :; do :; done'");
        Spinner(Command::new("/bin/sh").args(["-c", &script]).spawn().expect("starting a busy loop"))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn load(name: &str) -> (Pins, Tracer) {
    let pins = Pins(PathBuf::from(format!("/sys/fs/bpf/crio-sched-{name}-{}", std::process::id())));
    let tracer = Tracer::load(Path::new("/sys/fs/bpf"), &pins.0, Features::default()).expect("loading the programs");
    // All but the fexit program, which kernels without BPF trampolines refuse (this CI's).
    let off: Vec<_> = tracer.unavailable.iter().filter(|u| u.program != crio_ebpf::THROTTLE_PROGRAM.0).collect();
    assert!(off.is_empty(), "every tracepoint program attaches here: {off:?}");
    assert!(tracer.scheduling());
    (pins, tracer)
}

/// Total wait of the cgroup over `d` (ns), and the number of waits.
fn waited_over(tracer: &Tracer, id: u64, d: Duration) -> (u64, u64) {
    let before = tracer.sched_delay(id).expect("scheduling is traced");
    std::thread::sleep(d);
    let after = tracer.sched_delay(id).expect("scheduling is traced");
    (after.total_ns - before.total_ns, after.count - before.count)
}

#[test]
fn a_busy_neighbour_makes_a_task_wait_and_is_counted_as_an_intruder() {
    let (_pins, tracer) = load("delay");
    let cg = Cgroup::new(unified(), &format!("crio-sched-test-{}", std::process::id()));
    tracer.track(cg.id(), "pod", "ctr", CGROUP_CONTAINER).unwrap();
    let inside = Spinner::start(1, Some(&cg.0));
    std::thread::sleep(Duration::from_millis(300));

    // Alone on its CPU, the spinner barely waits (kernel threads and the odd task aside).
    let (alone, _) = waited_over(&tracer, cg.id(), Duration::from_secs(1));
    // With a neighbour, the fair scheduler gives each about half: it waits ~0.5 s a second.
    tracer.isolate(cg.id(), &[1]).unwrap();
    let neighbour = Spinner::start(1, None);
    let (shared, waits) = waited_over(&tracer, cg.id(), Duration::from_secs(1));
    drop(neighbour);
    assert!(shared > 200_000_000, "waited {shared} ns in {waits} waits beside a busy neighbour");
    assert!(alone < shared / 4, "alone it waited {alone} ns, beside a neighbour {shared} ns");
    let h = tracer.sched_delay(cg.id()).unwrap();
    assert_eq!(h.slots.iter().sum::<u64>(), h.count, "every wait is in one slot");

    let intrusions = tracer.intrusions(cg.id());
    let tasks: u64 = intrusions.iter().filter(|(cpu, kind, _)| *cpu == 1 && *kind == Intrusion::Task).map(|(_, _, n)| n).sum();
    assert!(tasks > 0, "the neighbour intruded on CPU 1: {intrusions:?}");
    assert!(intrusions.iter().all(|(cpu, _, _)| *cpu == 1), "only CPU 1 is isolated: {intrusions:?}");
    let who = tracer.intruders(cg.id(), 20);
    assert!(who.iter().any(|i| i.kind == Intrusion::Task && i.name == "sh" && i.last_cpu == 1), "{who:?}");
    assert!(!who.iter().any(|i| i.kind == Intrusion::Task && i.id == inside.0.id()), "the cgroup's own task is no intruder: {who:?}");
    assert_eq!(tracer.isolated_cpus(cg.id()), [1]);

    // The pinned maps read back with their types.
    let dump = Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(_pins.0.join("intrusions")).output().expect("bpftool");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("\"cpu\":1") && text.contains("\"kind\":1"), "{text}");

    // A restarted daemon finds the counts in the pinned maps and reports them.
    tracer.end_isolation(cg.id()).unwrap();
    drop(tracer);
    let tracer = Tracer::load(Path::new("/sys/fs/bpf"), &_pins.0, Features::default()).expect("loading the programs again");
    assert!(!tracer.intrusions(cg.id()).is_empty(), "the pinned intrusions are read after a restart");
    assert!(!tracer.intruders(cg.id(), 20).is_empty(), "the pinned intruders are read after a restart");

    tracer.forget_sched(cg.id(), 0).unwrap();
    assert!(tracer.intrusions(cg.id()).is_empty() && tracer.intruders(cg.id(), 20).is_empty());
    assert!(tracer.isolated_cpus(cg.id()).is_empty());
    for map in ["intrusions", "intruders"] {
        let dump = Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(_pins.0.join(map)).output().expect("bpftool");
        let text = String::from_utf8_lossy(&dump.stdout);
        assert!(!text.contains(&format!("\"cgroup_id\":{}", cg.id())), "{map} keeps nothing of the forgotten cgroup: {text}");
    }
    drop(inside);
    tracer.untrack(cg.id()).unwrap();
}
