//! Container stdio through CRI: a tty container gets a pty (its master sent by runc over the
//! monitor's console socket) whose output lands in the CRI log; a stdin container's stdin stays
//! open instead of reading /dev/null.

mod common;

use std::time::Duration;

use common::Daemon;
use common::pods::*;
use crio::cri::v1 as cri;

async fn start(d: &Daemon, id: &str) {
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: id.into() }).await.expect("StartContainer");
}

/// The log's lines as the kubelet reads them: partial (`P`) pieces joined to the line they
/// begin (a read of a pty may end between its `\r` and `\n`), without timestamps, and with
/// the pty's carriage returns dropped. Each line is `<stream> F <content>`.
fn log_lines(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut lines = Vec::new();
    let mut partial = String::new();
    for l in text.lines() {
        let mut f = l.splitn(4, ' ');
        let (_, stream, tag, content) = (f.next(), f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""));
        partial.push_str(content);
        if tag == "F" {
            lines.push(format!("{stream} F {}", partial.trim_end_matches('\r')));
            partial.clear();
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn tty_and_stdin_containers() {
    let e = env(1).await;
    let d = &e.d;
    let logs = d.dir.path().join("logs/stdio");
    let pc = pod_config("stdio", &logs);
    let pod = run_pod(d, pc.clone()).await.expect("RunPodSandbox");

    // A tty: its stdio is a terminal, its output is logged as stdout, its exit code kept.
    let mut tty = container_config("tty", &e.image, "[ -t 0 ] && [ -t 1 ] && echo on a terminal; tty; echo to stderr >&2; exit 3");
    (tty.tty, tty.stdin) = (true, true);
    let tty = create(d, &pod, &pc, tty).await.expect("CreateContainer with a tty");
    start(d, &tty).await;
    let st = wait_state(d, &tty, cri::ContainerState::ContainerExited).await;
    assert_eq!(st.exit_code, 3);
    let lines = log_lines(&logs.join("tty/0.log"));
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "stdout F on a terminal");
    assert!(lines[1].starts_with("stdout F /dev/pts/"), "{lines:?}");
    assert_eq!(lines[2], "stdout F to stderr", "a terminal has one stream");
    assert!(!d.dir.path().join("run").read_dir().unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with("tty-")));

    // stdin held open: `read` waits instead of seeing end of file at once.
    let mut held = container_config("held", &e.image, "read line; echo read ended");
    held.stdin = true;
    let held = create(d, &pod, &pc, held).await.expect("CreateContainer with stdin");
    start(d, &held).await;
    // Without stdin the same script ends at once; give both the same time.
    let closed = create(d, &pod, &pc, container_config("closed", &e.image, "read line; echo read ended")).await.unwrap();
    start(d, &closed).await;
    wait_state(d, &closed, cri::ContainerState::ContainerExited).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(d, &held).await.state, cri::ContainerState::ContainerRunning as i32, "stdin stays open");
    d.runtime().await.stop_container(cri::StopContainerRequest { container_id: held.clone(), timeout: 0 }).await.expect("StopContainer");
    assert_eq!(log_lines(&logs.join("closed/0.log")), ["stdout F read ended"]);
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}
