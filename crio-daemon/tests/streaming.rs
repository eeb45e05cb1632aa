//! Exec, Attach and PortForward through their streaming server: with crictl 1.26.1 of the
//! conformance kit (SPDY, the kubelet's client code), with a WebSocket client and crioctl, over
//! TLS, and by the thousand with sessions abandoned half-way, after which the daemon's
//! descriptors, threads, memory and processes are back where they were; idle sessions, peers
//! that never read and stream pairs never completed all end.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::pods::{container_config, create, env, pod_config, run_pod, sh};
use common::spdy;
use common::{Daemon, crictl_binary};
use crio::cri::v1 as cri;
use crio::streaming::spdy::frame::Frame;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn crictl_cmd(d: &Daemon, args: &[&str]) -> tokio::process::Command {
    let ep = format!("unix://{}", d.socket.display());
    let mut c = tokio::process::Command::new(crictl_binary());
    c.args(["-r", &ep, "-i", &ep, "--timeout", "30s"]).args(args).kill_on_drop(true);
    c
}

/// crictl with `input` on its stdin: (exit code, stdout, stderr).
async fn crictl_with_input(d: &Daemon, args: &[&str], input: &[u8]) -> (i32, String, String) {
    let mut c = crictl_cmd(d, args);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("running crictl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.expect("crictl finished").unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

async fn running(d: &Daemon, pod: &str, pc: &cri::PodSandboxConfig, c: cri::ContainerConfig) -> String {
    let id = create(d, pod, pc, c).await.expect("create");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn crictl_and_websocket_clients_stream() {
    let e = env(19).await;
    let d = &e.d;
    let pc = pod_config("streams", &d.dir.path().join("logs/streams"));
    let pod = run_pod(d, pc.clone()).await.expect("run pod");
    let shell = running(d, &pod, &pc, container_config("shell", &e.image, "exec sleep 100000")).await;

    // Piped stdin, the end of which closes the command's.
    let (code, out, err) = crictl_with_input(d, &["exec", "-i", &shell, "cat"], b"hi\n").await;
    assert_eq!((code, out.as_str()), (0, "hi\n"), "stderr: {err}");
    // Output written after stdin closed, just before the exit, is all there.
    let (code, out, err) = crictl_with_input(
        d,
        &["exec", "-i", &shell, "sh", "-c", "cat >/dev/null; sleep 0.3; busybox seq 1 20000 | busybox tail -n 1"],
        b"x",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "20000\n"), "stderr: {err}");
    let (code, _, err) = crictl_with_input(d, &["exec", &shell, "sh", "-c", "echo oops >&2; exit 42"], b"").await;
    assert_eq!(code, 1, "crictl reports a failed command");
    assert!(err.contains("oops") && err.contains("exit code 42"), "stderr and the exit code come back: {err}");

    // A terminal: crictl -it needs one of its own, which script(1) gives it.
    let ep = format!("unix://{}", d.socket.display());
    let line = format!("{} -r {ep} -i {ep} exec -it {shell} busybox tty", crictl_binary().display());
    let out = tokio::process::Command::new("script").args(["-qec", &line, "/dev/null"]).stdin(Stdio::null()).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("/dev/pts/"), "exec -it runs on a pty: {text} {}", String::from_utf8_lossy(&out.stderr));

    // Attach to a container reading its stdin once: what we send comes back, and our end of
    // input ends the container.
    let mut cat = container_config("cat", &e.image, "");
    cat.command = vec!["cat".into()];
    cat.stdin = true;
    cat.stdin_once = true;
    let cat = running(d, &pod, &pc, cat).await;
    let (code, out, err) = crictl_with_input(d, &["attach", "-i", &cat], b"hello attach\n").await;
    assert_eq!((code, out.as_str()), (0, "hello attach\n"), "stderr: {err}");
    let st = common::pods::wait_state(d, &cat, cri::ContainerState::ContainerExited).await;
    assert_eq!(st.exit_code, 0, "cat saw the end of its input");

    // Port-forward to a port only the pod's network namespace has.
    let web = "while true; do busybox nc -l -p 8080 -e echo hello-from-pod; done";
    let _web = running(d, &pod, &pc, container_config("web", &e.image, web)).await;
    let local = common::free_port();
    let mut pf = crictl_cmd(d, &["port-forward", &pod, &format!("{local}:8080")]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(pf.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("crictl port-forward is ready").unwrap();
    assert!(first.is_some_and(|l| l.contains("Forwarding from")), "crictl port-forward started");
    let mut got = String::new();
    for _ in 0..50 {
        if let Ok(mut c) = tokio::net::TcpStream::connect(("127.0.0.1", local)).await {
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
            got = String::from_utf8_lossy(&buf).to_string();
            if got.contains("hello-from-pod") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, "hello-from-pod\n");
    let _ = pf.kill().await;

    // crioctl's own streaming verbs (over WebSocket).
    let crioctl = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_crioctl"));
        c.arg("-r").arg(&d.socket).args(args).kill_on_drop(true);
        c
    };
    let mut c = crioctl(&["exec", "-i", &shell, "--", "sh", "-c", "cat; exit 42"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"via crioctl\n").await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!((out.status.code(), out.stdout.as_slice()), (Some(42), &b"via crioctl\n"[..]), "crioctl exec -i");
    let local = common::free_port();
    let mut pf = crioctl(&["port-forward", &pod, &format!("{local}:8080")]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(pf.stdout.take().unwrap()).lines();
    assert!(lines.next_line().await.unwrap().is_some_and(|l| l.contains("Forwarding from")), "crioctl port-forward started");
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf)).await;
    assert_eq!(buf, b"hello-from-pod\n", "crioctl port-forward");
    let _ = pf.kill().await;

    websocket_exec(d, &shell).await;
    bad_requests(d, &shell, &pod).await;
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("remove pod");
}

/// v5 over WebSocket: stdin, its close message, output, and the exit code in the status.
async fn websocket_exec(d: &Daemon, shell: &str) {
    let req = cri::ExecRequest {
        container_id: shell.into(),
        cmd: vec!["sh".into(), "-c".into(), "cat; echo err >&2; exit 42".into()],
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let url = d.runtime().await.exec(req).await.expect("Exec").into_inner().url;
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap());
    let host = url.strip_prefix("http://").unwrap().split('/').next().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(request, tcp).await.expect("websocket upgrade");
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "v5.channel.k8s.io");
    ws.send(Message::Binary(vec![0, b'w', b's', b'\n'].into())).await.unwrap();
    ws.send(Message::Binary(vec![255, 0].into())).await.unwrap();
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(Ok(m)) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("the session ends") {
        let Message::Binary(b) = m else { continue };
        let Some((ch, rest)) = b.split_first() else { continue };
        match ch {
            1 => stdout.extend_from_slice(rest),
            2 => stderr.extend_from_slice(rest),
            3 => status.extend_from_slice(rest),
            _ => {}
        }
    }
    assert_eq!((stdout.as_slice(), stderr.as_slice()), (&b"ws\n"[..], &b"err\n"[..]));
    let status: serde_json::Value = serde_json::from_slice(&status).expect("a JSON status");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "42");
}

/// Bad input is refused, precisely, and changes nothing.
async fn bad_requests(d: &Daemon, shell: &str, pod: &str) {
    let mut rt = d.runtime().await;
    let tty_stderr =
        cri::ExecRequest { container_id: shell.into(), cmd: vec!["true".into()], tty: true, stderr: true, ..Default::default() };
    assert_eq!(rt.exec(tty_stderr).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let no_stream = cri::ExecRequest { container_id: shell.into(), cmd: vec!["true".into()], ..Default::default() };
    assert_eq!(rt.exec(no_stream).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let missing = cri::ExecRequest { container_id: "nope".into(), cmd: vec!["true".into()], stdout: true, ..Default::default() };
    assert_eq!(rt.exec(missing).await.unwrap_err().code(), tonic::Code::NotFound);
    let bad_port = cri::PortForwardRequest { pod_sandbox_id: pod.into(), port: vec![70000] };
    assert_eq!(rt.port_forward(bad_port).await.unwrap_err().code(), tonic::Code::InvalidArgument);

    // A URL is good once; an unknown token is a 404.
    let ok = cri::ExecRequest { container_id: shell.into(), cmd: vec!["true".into()], stdout: true, ..Default::default() };
    let url = rt.exec(ok).await.unwrap().into_inner().url;
    assert!(url.starts_with("http://127.0.0.1:"), "an absolute URL: {url}");
    let (status, _, c) = spdy::connect(&url, &["v9.channel.k8s.io"]).await;
    assert!(status.contains(" 403 ") && c.is_none(), "no protocol in common: {status}");
    let (status, _, _) = spdy::connect(&url, &["v4.channel.k8s.io"]).await;
    assert!(status.contains(" 404 "), "a used token: {status}");
    let pf = rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: pod.into(), port: vec![] }).await.unwrap().into_inner().url;
    let (status, chosen, c) = spdy::connect(&pf, &["v4.channel.k8s.io", "portforward.k8s.io"]).await;
    assert!(status.contains(" 101 ") && chosen.as_deref() == Some("portforward.k8s.io"), "{status}");
    // A malformed frame ends that session only.
    let mut c = c.unwrap();
    c.conn.write_all(&[0x80, 0x07, 0x00, 0x01, 0, 0, 0, 0]).await.unwrap();
    while c.next().await.is_some() {}
    let out = rt.exec_sync(sh(shell, "echo still")).await.expect("the daemon carries on").into_inner();
    assert_eq!(out.stdout, b"still\n");
}

/// The daemon's open descriptors, threads and resident memory (KiB).
fn footprint(pid: u32) -> (usize, usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|r| r.count()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0)
    };
    (fds, field("Threads:") as usize, field("VmRSS:"))
}

/// The daemon's live child processes other than pod monitors (exec helpers, runtimes).
fn children(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|r| r.flatten().collect::<Vec<_>>()).unwrap_or_default();
    tasks
        .iter()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|c| std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|comm| comm.trim() != "crio-monitor"))
        .count()
}

async fn exec_session(d: &Daemon, id: &str, script: &str, abandon: bool) {
    let req = cri::ExecRequest {
        container_id: id.into(),
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let url = d.runtime().await.exec(req).await.expect("Exec").into_inner().url;
    let (_, _, c) = spdy::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut c = c.expect("upgraded");
    c.open(&[("streamType", "error")]).await;
    let out = c.open(&[("streamType", "stdout")]).await;
    c.open(&[("streamType", "stderr")]).await;
    if abandon {
        // Wait for the command to be running, then vanish.
        while let Some(f) = c.next().await {
            if matches!(f, Frame::Data { stream, .. } if stream == out) {
                break;
            }
        }
        return;
    }
    let data = c.collect().await;
    assert_eq!(data.get(&out).map(Vec::as_slice), Some(&b"x\n"[..]));
}

async fn attach_session(d: &Daemon, id: &str, abandon: bool) {
    let req = cri::AttachRequest { container_id: id.into(), stdin: true, stdout: true, stderr: true, tty: false };
    let url = d.runtime().await.attach(req).await.expect("Attach").into_inner().url;
    let (_, _, c) = spdy::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut c = c.expect("upgraded");
    c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let out = c.open(&[("streamType", "stdout")]).await;
    c.open(&[("streamType", "stderr")]).await;
    c.send(stdin, b"ping\n", false).await;
    // The container (cat) echoes it: the session is live.
    while let Some(f) = c.next().await {
        if matches!(f, Frame::Data { stream, .. } if stream == out) {
            break;
        }
    }
    if !abandon {
        c.write(Frame::GoAway { last_good: 0, status: 0 }).await;
    }
}

async fn port_forward_to_closed_port(d: &Daemon, pod: &str, connections: u32) {
    let url = d.runtime().await.port_forward(cri::PortForwardRequest { pod_sandbox_id: pod.into(), port: vec![] }).await.unwrap();
    let (_, _, c) = spdy::connect(&url.into_inner().url, &["portforward.k8s.io"]).await;
    let mut c = c.expect("upgraded");
    for i in 0..connections {
        let rid = i.to_string();
        let err = c.open(&[("streamType", "error"), ("port", "9"), ("requestID", &rid)]).await;
        c.send(err, b"", true).await;
        let data = c.open(&[("streamType", "data"), ("port", "9"), ("requestID", &rid)]).await;
        // The refusal arrives on the error stream; then the client resets both, as kubectl does.
        loop {
            match c.next().await.expect("the session lives on") {
                Frame::Data { stream, data: msg, .. } if stream == err && !msg.is_empty() => {
                    assert!(String::from_utf8_lossy(&msg).contains("port 9"), "{msg:?}");
                    break;
                }
                _ => {}
            }
        }
        for s in [err, data] {
            c.write(Frame::RstStream { stream: s, status: 5 }).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_sessions_leave_nothing_behind() {
    let e = env(22).await;
    let d = &e.d;
    let pc = pod_config("leaks", &d.dir.path().join("logs/leaks"));
    let pod = run_pod(d, pc.clone()).await.expect("run pod");
    let shell = running(d, &pod, &pc, container_config("shell", &e.image, "exec sleep 100000")).await;
    let mut cat = container_config("cat", &e.image, "");
    cat.command = vec!["cat".into()];
    cat.stdin = true;
    let cat = running(d, &pod, &pc, cat).await;
    // Warm up whatever is made once (pools, caches), then take the baseline.
    exec_session(d, &shell, "echo x", false).await;
    attach_session(d, &cat, false).await;
    port_forward_to_closed_port(d, &pod, 10).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = d.pid();
    let before = footprint(pid);

    for round in 0..50 {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (d, shell, cat) = (d, shell.clone(), cat.clone());
            let abandon = (round * 20 + i) % 2 == 1;
            tasks.push(async move {
                let script = if abandon { "echo x; exec sleep 1000" } else { "echo x" };
                exec_session(d, &shell, script, abandon).await;
                attach_session(d, &cat, abandon).await;
            });
        }
        futures::future::join_all(tasks).await;
    }
    let forwards: Vec<_> = (0..10).map(|_| port_forward_to_closed_port(d, &pod, 1000)).collect();
    futures::future::join_all(forwards).await;

    // Abandoned sessions end when the daemon sees the client gone: give it a moment.
    let mut after = footprint(pid);
    for _ in 0..100 {
        after = footprint(pid);
        if after.0 <= before.0 + 2 && after.1 <= before.1 + 2 && children(pid) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("daemon (fds, threads, RSS KiB): before {before:?}, after 1000 exec + 1000 attach + 10000 port-forwards {after:?}");
    assert!(after.0 <= before.0 + 2, "descriptors back to baseline: {before:?} -> {after:?}");
    assert!(after.1 <= before.1 + 2, "threads back to baseline: {before:?} -> {after:?}");
    // The allocator keeps some of what the storm freed (measured: +2.3 MiB, the same after
    // three storms as after one): a bound, not zero.
    assert!(after.2 <= before.2 + 8 * 1024, "resident memory within 8 MiB of baseline: {before:?} -> {after:?}");
    assert_eq!(children(pid), 0, "no exec helper is left running");
    let ps = d.runtime().await.exec_sync(sh(&shell, "busybox ps -o args | busybox grep -c 'sleep 1000$' || true")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&ps.into_inner().stdout).trim(), "0", "no abandoned command is left in the container");

    // Containers killed mid-session end their sessions, with a status.
    let req =
        cri::ExecRequest { container_id: shell.clone(), cmd: vec!["sleep".into(), "1000".into()], stdout: true, ..Default::default() };
    let url = d.runtime().await.exec(req).await.expect("Exec").into_inner().url;
    let (_, _, c) = spdy::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut exec = c.expect("upgraded");
    let err = exec.open(&[("streamType", "error")]).await;
    exec.open(&[("streamType", "stdout")]).await;
    let url = d.runtime().await.attach(cri::AttachRequest { container_id: cat.clone(), stdout: true, ..Default::default() }).await;
    let (_, _, c) = spdy::connect(&url.expect("Attach").into_inner().url, &["v4.channel.k8s.io"]).await;
    let mut attach = c.expect("upgraded");
    attach.open(&[("streamType", "error")]).await;
    attach.open(&[("streamType", "stdout")]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in [&shell, &cat] {
        d.runtime().await.stop_container(cri::StopContainerRequest { container_id: id.to_string(), timeout: 0 }).await.expect("stop");
    }
    let status = tokio::time::timeout(Duration::from_secs(30), exec.collect()).await.expect("the exec session ends");
    let status: serde_json::Value = serde_json::from_slice(status.get(&err).expect("a status")).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode", "killed with the container: {status}");
    tokio::time::timeout(Duration::from_secs(30), attach.collect()).await.expect("the attach session ends");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("remove pod");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_streaming_urls_are_https_and_upgrade_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=crio-stream"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (installed by .ci/deps)");
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    let extra =
        format!("[crio.api]\nstream_enable_tls = true\nstream_tls_cert = \"{}\"\nstream_tls_key = \"{}\"\n", cert.display(), key.display());
    let cfg = common::daemon::DaemonConfig { extra, ..Default::default() };
    let d = Daemon::start(cfg).await;
    let mut pc = pod_config("tls", &d.dir.path().join("logs/tls"));
    pc.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption { network: 2, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run_pod(&d, pc).await.expect("a host-network pod needs no CNI network");
    let url = d.runtime().await.port_forward(cri::PortForwardRequest { pod_sandbox_id: pod.clone(), port: vec![] }).await;
    let url = url.expect("PortForward").into_inner().url;
    let rest = url.strip_prefix("https://").unwrap_or_else(|| panic!("an https URL: {url}"));
    let (host, path) = rest.split_once('/').unwrap();

    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    roots.add(rustls_pki_types::CertificateDer::from_pem_file(&cert).unwrap()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.expect("TLS handshake");
    let req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101", "switched protocols over TLS");
    drop(tls);
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("remove pod");
}

/// A host-network pod (no CNI network needed) with a sleeping container, on a daemon whose
/// streaming sessions idle out after 2 s.
async fn idle_timeout_daemon() -> (common::Registry, Daemon, String, String) {
    let reg = common::Registry::start();
    reg.push("busybox", "1", &common::ImageBuilder::new().layer(common::Layer::busybox())).await;
    let mut cfg = common::daemon::DaemonConfig::trusting(&reg);
    cfg.extra = "[crio.api]\nstream_idle_timeout = \"2s\"\n".into();
    let d = Daemon::start(cfg).await;
    let image = format!("{}/busybox:1", reg.addr);
    d.pull(&image).await.expect("pull busybox");
    let mut pc = pod_config("idle", &d.dir.path().join("logs/idle"));
    pc.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption { network: 2, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run_pod(&d, pc.clone()).await.expect("run pod");
    let ct = running(&d, &pod, &pc, container_config("idle", &image, "exec sleep 100000")).await;
    (reg, d, pod, ct)
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_peers_that_never_read_and_half_open_pairs_end() {
    let (_reg, d, pod, ct) = idle_timeout_daemon().await;
    // A session with no traffic either way is closed after the idle timeout.
    let url = d.runtime().await.port_forward(cri::PortForwardRequest { pod_sandbox_id: pod.clone(), port: vec![] }).await;
    let (_, _, c) = spdy::connect(&url.unwrap().into_inner().url, &["portforward.k8s.io"]).await;
    let mut idle = c.expect("upgraded");
    let closed = tokio::time::timeout(Duration::from_secs(20), async { while idle.next().await.is_some() {} }).await;
    assert!(closed.is_ok(), "an idle session is closed");

    // A client that never reads what a command writes: the session is reset once its writes
    // stall past the timeout, and the command goes with it.
    let req = cri::ExecRequest { container_id: ct.clone(), cmd: vec!["yes".into()], stdout: true, ..Default::default() };
    let url = d.runtime().await.exec(req).await.expect("Exec").into_inner().url;
    let (_, _, c) = spdy::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut deaf = c.expect("upgraded");
    deaf.open(&[("streamType", "error")]).await;
    deaf.open(&[("streamType", "stdout")]).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let drained = tokio::time::timeout(Duration::from_secs(20), async { while deaf.next().await.is_some() {} }).await;
    assert!(drained.is_ok(), "the stalled session was closed by the server");
    let mut left = String::new();
    for _ in 0..50 {
        let ps = d.runtime().await.exec_sync(sh(&ct, "busybox ps -o args | busybox grep -c '^yes$' || true")).await.unwrap();
        left = String::from_utf8_lossy(&ps.into_inner().stdout).trim().to_string();
        if left == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, "0", "the command of a reset session is killed");

    // A port-forward pair whose data stream never comes: the error stream is reset after
    // 30 s while the session, kept alive by pings, goes on.
    let url = d.runtime().await.port_forward(cri::PortForwardRequest { pod_sandbox_id: pod.clone(), port: vec![] }).await;
    let (_, _, c) = spdy::connect(&url.unwrap().into_inner().url, &["portforward.k8s.io"]).await;
    let mut half = c.expect("upgraded");
    let err = half.open(&[("streamType", "error"), ("port", "80"), ("requestID", "7")]).await;
    let began = std::time::Instant::now();
    let mut ping = 1;
    let reset = loop {
        assert!(began.elapsed() < Duration::from_secs(60), "the half-open pair was never given up");
        half.write(Frame::Ping { id: ping }).await;
        ping += 2;
        match tokio::time::timeout(Duration::from_secs(1), half.next()).await {
            Ok(Some(Frame::RstStream { stream, .. })) if stream == err => break began.elapsed(),
            Ok(None) => panic!("the session ended instead of the pair"),
            _ => {}
        }
    };
    assert!(reset >= Duration::from_secs(29), "given up after the stream creation timeout, not before: {reset:?}");
    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("remove pod");
}
