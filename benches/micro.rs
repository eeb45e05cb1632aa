//! Criterion micro benches of the daemon's hot pure code: CRI -> OCI spec generation (every
//! CreateContainer), CRI log framing (every chunk a container prints), record lookups by id
//! prefix (every RPC naming a container), and the exec path's per-container and per-exec work
//! (seccomp compile, cgroup resolution).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use crio::container::spec::{self, ImageRunConfig, PidNamespace, SpecInput};
use crio::container::user::ResolvedUser;
use crio::model::{ContainerSpec, MountSpec, PodSandbox, PodSpec, PodState, Resources};
use crio::monitor::log_format::{DEFAULT_MAX_LINE, Stream, frame};
use crio::seccomp::{Profile, section};
use crio::state::Records;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn pod() -> PodSandbox {
    PodSandbox {
        id: "a".repeat(64),
        full_name: "k8s_web_default_uid_0".into(),
        spec: PodSpec {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid".into(),
            hostname: "web-0".into(),
            ..Default::default()
        },
        state: PodState::Ready,
        created_at_nanos: 0,
        ips: vec!["10.0.0.2".into()],
        netns: Some("/run/netns/x".into()),
        ipcns: Some("/run/ipcns/x".into()),
        utsns: Some("/run/utsns/x".into()),
        pidns: None,
        pid_holder: 0,
        cgroup: "/crio/pod-a".into(),
        cgroup_created: true,
        cgroup_id: 0,
        dir: "/var/lib/crio/pods/a".into(),
        run_dir: "/run/crio/pods/a".into(),
        monitor_pid: 1,
    }
}

/// A typical application container: a dozen env vars, a few volume mounts, limits.
fn container() -> ContainerSpec {
    let mut s = ContainerSpec {
        name: "app".into(),
        image: "registry.local/app:1".into(),
        command: vec!["/app/server".into()],
        args: vec!["--port=8080".into(), "--verbose".into()],
        working_dir: "/app".into(),
        envs: (0..12).map(|i| (format!("VAR_{i}"), format!("value-{i}"))).collect(),
        mounts: (0..4)
            .map(|i| MountSpec {
                container_path: format!("/data/{i}").into(),
                host_path: format!("/var/lib/kubelet/pods/uid/volumes/v{i}").into(),
                readonly: i % 2 == 0,
                propagation: "private".into(),
                selinux_relabel: false,
                ..Default::default()
            })
            .collect(),
        labels: BTreeMap::from([("io.kubernetes.container.name".into(), "app".into())]),
        resources: Resources { cpu_shares: 1024, cpu_quota: 100_000, cpu_period: 100_000, memory_limit: 256 << 20, ..Default::default() },
        ..Default::default()
    };
    s.security.add_capabilities = vec!["NET_RAW".into()];
    s
}

fn spec_generation(c: &mut Criterion) {
    let (p, ct) = (pod(), container());
    let image = ImageRunConfig { env: Some(vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()]), ..Default::default() };
    let user = ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![1000] };
    let held: Vec<String> = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SYS_ADMIN"].map(String::from).to_vec();
    let input = SpecInput {
        spec: &ct,
        image: &image,
        pod: &p,
        rootfs: Path::new("/var/lib/crio/overlay/x/merged"),
        user: &user,
        held_capabilities: &held,
        pid_namespace: &PidNamespace::New,
        host_dev: Path::new("/dev"),
        labels: &Default::default(),
        cgroups_path: "/crio/pod-a/ctr",
        cgroup_v2: false,
        abis: crio::seccomp::Abis::ALL,
    };
    c.bench_function("spec: CRI -> OCI spec (RuntimeDefault seccomp)", |b| b.iter(|| spec::build(std::hint::black_box(&input)).unwrap()));
    let oci = spec::build(&input).unwrap();
    c.bench_function("spec: OCI spec -> config.json bytes", |b| b.iter(|| serde_json::to_vec(std::hint::black_box(&oci)).unwrap()));
}

fn log_framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("log framing");
    let ts = SystemTime::now();
    let lines: Vec<u8> = (0..64).flat_map(|i| format!("{i:04} GET /api/v1/items?page={i} 200 1.2ms\n").into_bytes()).collect();
    let long = vec![b'x'; 64 * 1024];
    for (name, chunk) in [("64 short lines", &lines), ("one 64 KiB line", &long)] {
        g.throughput(Throughput::Bytes(chunk.len() as u64));
        let mut out = Vec::with_capacity(chunk.len() * 2);
        g.bench_with_input(BenchmarkId::from_parameter(name), chunk, |b, chunk| {
            b.iter(|| {
                out.clear();
                frame(ts, Stream::Stdout, chunk, DEFAULT_MAX_LINE, &mut out);
            })
        });
    }
    g.finish();
}

fn record_lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..1000u128)
        .map(|i| {
            let x = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            format!("{x:032x}{:032x}", x.rotate_left(64))
        })
        .collect();
    for id in &ids {
        std::fs::write(dir.path().join(format!("{id}.json")), serde_json::to_vec(&pod()).unwrap()).unwrap();
    }
    let (records, _) = Records::<PodSandbox>::load(dir.path()).unwrap();
    let id = &ids[500];
    c.bench_function("records: resolve by full id (1000 records)", |b| b.iter(|| records.resolve(std::hint::black_box(id)).unwrap()));
    c.bench_function("records: resolve by 12-char prefix (1000 records)", |b| {
        b.iter(|| records.resolve(std::hint::black_box(&id[..12])).unwrap())
    });
    let e = records.resolve(id).unwrap();
    c.bench_function("records: copy of one record (get)", |b| b.iter(|| e.get()));
    c.bench_function("records: shared snapshot of one record", |b| b.iter(|| e.snapshot()));
}

fn exec_path(c: &mut Criterion) {
    let seccomp = section(&Profile::RuntimeDefault, false, &Default::default(), crio::seccomp::Abis::ALL).unwrap().unwrap();
    c.bench_function("exec: compile RuntimeDefault seccomp (once per profile)", |b| {
        b.iter(|| crio::exec::filter::compile(&seccomp).unwrap())
    });
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cgroups = "12:memory:/crio/pod-1/abc\n4:cpu,cpuacct:/crio/pod-1/abc\n1:name=systemd:/crio/pod-1/abc\n0::/crio/abc\n";
    c.bench_function("exec: cgroup dirs from /proc/<pid>/cgroup (per exec)", |b| {
        b.iter(|| crio::exec::helper::cgroup_dirs(std::hint::black_box(cgroups), &mountinfo))
    });
}

criterion_group!(benches, spec_generation, log_framing, record_lookups, exec_path);
criterion_main!(benches);
