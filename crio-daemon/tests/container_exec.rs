//! ExecSync through the daemon's own exec helper: the exec'd process is the one the runtime
//! would make (same user, groups, capabilities, no_new_privs, seccomp filter, namespaces and
//! cgroups as the container's init, read from the kernel), exit codes and signals come back,
//! a timeout leaves nothing running, and a container without an exec profile still execs
//! through the runtime. (Containers here are in their pod's PID namespace, CRI's default, so
//! the init is found by name.)

mod common;

use common::pods::*;
use crio::cri::v1 as cri;

/// The lines of a /proc/<pid>/status that say who a process is and what it may do.
const IDENTITY: &[&str] =
    &["Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:", "Seccomp:", "Seccomp_filters:"];

fn identity(status: &str) -> Vec<&str> {
    status.lines().filter(|l| IDENTITY.iter().any(|f| l.starts_with(f))).collect()
}

fn restricted() -> Option<cri::LinuxContainerConfig> {
    Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            run_as_group: Some(cri::Int64Value { value: 1000 }),
            supplemental_groups: vec![5, 6],
            no_new_privs: true,
            capabilities: Some(cri::Capability {
                add_capabilities: vec!["NET_RAW".into()],
                drop_capabilities: vec!["KILL".into()],
                ..Default::default()
            }),
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

async fn exec(d: &common::Daemon, id: &str, cmd: &[&str], timeout: i64) -> Result<cri::ExecSyncResponse, tonic::Status> {
    let req = cri::ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout };
    d.runtime().await.exec_sync(req).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exec_is_the_process_the_runtime_would_make() {
    let e = env(17).await;
    let d = &e.d;
    let pc = pod_config("execs", &d.dir.path().join("logs/execs"));
    let pod = run_pod(d, pc.clone()).await.expect("RunPodSandbox");
    let mut cc = container_config("restricted", &e.image, "exec sleep 1000");
    cc.linux = restricted();
    let id = create(d, &pod, &pc, cc).await.expect("CreateContainer");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    wait_state(d, &id, cri::ContainerState::ContainerRunning).await;
    let bundle = d.dir.path().join("state/containers").join(&id);
    let (_, program) = crio::exec::ExecProfile::load(&bundle).expect("the exec profile is prepared at create");
    let program = program.expect("the container's seccomp program");
    assert!(!program.is_empty() && program.len() % 8 == 0, "a whole number of BPF instructions: {} bytes", program.len());
    assert!(!bundle.join("seccomp.bpf").exists(), "the program is in the profile's file");

    let out =
        exec(d, &id, &["/bin/sh", "-c", "cat /proc/self/status; echo ===; cat /proc/$(pidof sleep)/status"], 5).await.expect("ExecSync");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (mine, init) = text.split_once("===\n").expect("both statuses");
    assert_eq!(identity(mine), identity(init), "the exec'd process and the init differ");
    let me = identity(mine).join("\n");
    assert!(me.contains("Uid:\t1000\t1000\t1000\t1000") && me.contains("Groups:\t5 6"), "{me}");
    assert!(me.contains("NoNewPrivs:\t1") && me.contains("Seccomp:\t2"), "{me}");

    let script = "i=$(pidof sleep); for n in mnt pid net ipc uts cgroup; do echo $(readlink /proc/self/ns/$n) $(readlink /proc/$i/ns/$n); done; \
                  cat /proc/self/cgroup; echo ===; cat /proc/$i/cgroup";
    let out = exec(d, &id, &["/bin/sh", "-c", script], 5).await.expect("ExecSync");
    let text = String::from_utf8(out.stdout).unwrap();
    let (ns, cgroups) = text.split_once("===\n").map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
    let (ns_lines, own_cgroups) = ns.lines().partition::<Vec<&str>, _>(|l| l.contains("]"));
    for l in ns_lines {
        let (a, b) = l.split_once(' ').unwrap();
        assert_eq!(a, b, "namespaces of the exec and of the init");
    }
    assert_eq!(own_cgroups.join("\n").trim(), cgroups.trim(), "cgroups of the exec and of the init");
    assert!(!cgroups.trim().is_empty());
    // The filter is the container's: mount is not in RuntimeDefault (and the user may not).
    let out = exec(d, &id, &["/bin/sh", "-c", "mkdir -p /tmp/m && mount -t tmpfs t /tmp/m"], 5).await.expect("ExecSync");
    assert_ne!(out.exit_code, 0);

    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_signals_timeouts_and_the_runtime_fallback() {
    let e = env(18).await;
    let d = &e.d;
    let pc = pod_config("execcodes", &d.dir.path().join("logs/execcodes"));
    let pod = run_pod(d, pc.clone()).await.expect("RunPodSandbox");
    let id = create(d, &pod, &pc, container_config("c", &e.image, "exec sleep 1000")).await.expect("CreateContainer");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    wait_state(d, &id, cri::ContainerState::ContainerRunning).await;

    let out = exec(d, &id, &["/bin/sh", "-c", "echo out; echo err >&2; exit 7"], 5).await.expect("ExecSync");
    assert_eq!((out.exit_code, out.stdout.as_slice(), out.stderr.as_slice()), (7, &b"out\n"[..], &b"err\n"[..]));
    let out = exec(d, &id, &["/bin/sh", "-c", "kill -9 $$"], 5).await.expect("ExecSync");
    assert_eq!(out.exit_code, 128 + 9);
    let out = exec(d, &id, &["/no/such/command"], 5).await.expect("ExecSync");
    assert_eq!(out.exit_code, 127, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/command"));
    let out = exec(d, &id, &["/bin/sh", "-c", "env"], 5).await.expect("ExecSync");
    let env = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        env.contains("PATH=") && env.contains("HOSTNAME=execcodes-host") && env.contains("HOME=/root"),
        "the container's environment: {env}"
    );

    // As critest checks it: the command itself (the init, `sleep`, reaps nothing), and what
    // a command started. Every `sleep` process with its state: a zombie left behind counts.
    let sleeps = || async {
        let out = exec(d, &id, &["/bin/sh", "-c", "cat /proc/[0-9]*/stat"], 5).await.expect("ExecSync");
        let stat = String::from_utf8_lossy(&out.stdout).to_string();
        stat.lines().filter(|l| l.contains(" (sleep) ")).map(str::to_string).collect::<Vec<String>>()
    };
    let before = sleeps().await;
    for cmd in [&["sleep", "77"][..], &["/bin/sh", "-c", "sleep 78 & sleep 79"]] {
        let err = exec(d, &id, cmd, 1).await.expect_err("the exec times out");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
        let pid = |l: &String| l.split(' ').next().unwrap_or_default().to_string();
        let left: Vec<String> = sleeps().await.into_iter().filter(|l| !before.iter().any(|b| pid(b) == pid(l))).collect();
        let alive: Vec<&String> = left.iter().filter(|l| !l.contains(") Z ")).collect();
        assert!(alive.is_empty(), "a timed-out exec and what it started are killed: {left:?}");
        if cmd[0] == "sleep" {
            assert!(left.is_empty(), "the timed-out command itself is reaped, not left a zombie: {left:?}");
        }
    }

    // Without a profile (a container from before the helper), execs go through runc.
    std::fs::remove_file(d.dir.path().join("state/containers").join(&id).join("exec.json")).unwrap();
    let out = exec(d, &id, &["/bin/sh", "-c", "exit 3"], 5).await.expect("ExecSync through the runtime");
    assert_eq!(out.exit_code, 3);

    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}
