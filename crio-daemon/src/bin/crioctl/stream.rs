//! crioctl's streaming verbs (exec -i/-t, attach, port-forward), spoken over WebSocket with the
//! kubelet's channel protocols: v5.channel.k8s.io for exec and attach (stdin 0, stdout 1,
//! stderr 2, status 3, resize 4; (255, 0) closes stdin), portforward.k8s.io with the port in
//! the query for port-forward (data 0, error 1, each opened by a message holding the port).

use anyhow::{Context, bail};
use crio::cri::v1 as cri;
use crio::cri::v1::runtime_service_client::RuntimeServiceClient;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic::transport::Channel;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(url: &str, protocol: &str) -> anyhow::Result<Ws> {
    let ws_url = url.strip_prefix("http://").map(|r| format!("ws://{r}")).context("only http streaming URLs are supported by crioctl")?;
    let host = ws_url.trim_start_matches("ws://").split('/').next().unwrap_or_default().to_string();
    let mut req = ws_url.as_str().into_client_request()?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse()?);
    let tcp = tokio::net::TcpStream::connect(&host).await.with_context(|| format!("connecting to {host}"))?;
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await.context("websocket upgrade")?;
    Ok(ws)
}

/// The terminal back as it was when dropped.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enter(on: bool) -> Self {
        let stdin = std::io::stdin();
        if !on || !rustix::termios::isatty(&stdin) {
            return RawMode(None);
        }
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else { return RawMode(None) };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, saved);
        }
    }
}

fn size_message() -> Option<Message> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    let json = serde_json::json!({"Width": size.ws_col, "Height": size.ws_row}).to_string();
    let mut m = vec![4u8];
    m.extend(json.into_bytes());
    Some(Message::Binary(m.into()))
}

/// Streams a session at `url` (from Exec or Attach) through this terminal; the command's exit code.
pub async fn session(url: &str, stdin: bool, tty: bool) -> anyhow::Result<i32> {
    let ws = connect(url, "v5.channel.k8s.io").await?;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    let _raw = RawMode::enter(tty);
    if tty {
        if let Some(m) = size_message() {
            let _ = tx.send(m).await;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else { return };
            while winch.recv().await.is_some() {
                if let Some(m) = size_message()
                    && tx.send(m).await.is_err()
                {
                    return;
                }
            }
        });
    }
    if stdin {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = input.read(&mut buf[1..]).await.unwrap_or(0);
                if n == 0 {
                    let _ = tx.send(Message::Binary(vec![255, 0].into())).await;
                    return;
                }
                buf[0] = 0;
                if tx.send(Message::Binary(buf[..n + 1].to_vec().into())).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    let mut status = Vec::new();
    while let Some(Ok(m)) = stream.next().await {
        let Message::Binary(b) = m else { continue };
        let Some((ch, rest)) = b.split_first() else { continue };
        match ch {
            1 => {
                out.write_all(rest).await?;
                out.flush().await?;
            }
            2 => err.write_all(rest).await?,
            3 => status.extend_from_slice(rest),
            _ => {}
        }
    }
    writer.abort();
    if status.is_empty() {
        return Ok(0);
    }
    let s: serde_json::Value = serde_json::from_slice(&status).context("the session's status")?;
    match (s["status"].as_str(), s["reason"].as_str()) {
        (Some("Success"), _) => Ok(0),
        (_, Some("NonZeroExitCode")) => Ok(s["details"]["causes"][0]["message"].as_str().and_then(|c| c.parse().ok()).unwrap_or(1)),
        _ => bail!("{}", s["message"].as_str().unwrap_or("the session failed")),
    }
}

/// Forwards `local` on 127.0.0.1 to `remote` in the pod until interrupted: one PortForward
/// request and session per connection.
pub async fn port_forward(mut rt: RuntimeServiceClient<Channel>, pod: String, local: u16, remote: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", local)).await.with_context(|| format!("binding 127.0.0.1:{local}"))?;
    println!("Forwarding from {} -> {remote}", listener.local_addr()?);
    loop {
        let (conn, _) = listener.accept().await?;
        let req = cri::PortForwardRequest { pod_sandbox_id: pod.clone(), port: vec![i32::from(remote)] };
        let url = rt.port_forward(req).await?.into_inner().url;
        tokio::spawn(async move {
            if let Err(e) = forward_one(conn, &url, remote).await {
                eprintln!("crioctl: forwarding to port {remote}: {e:#}");
            }
        });
    }
}

async fn forward_one(conn: tokio::net::TcpStream, url: &str, port: u16) -> anyhow::Result<()> {
    let ws = connect(&format!("{url}?port={port}"), "portforward.k8s.io").await?;
    let (mut sink, mut stream) = ws.split();
    let (mut read, mut write) = conn.into_split();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = read.read(&mut buf[1..]).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf[0] = 0;
            if sink.send(Message::Binary(buf[..n + 1].to_vec().into())).await.is_err() {
                return;
            }
        }
    });
    // The first message of each channel is the port it carries.
    let mut opened = [false; 2];
    while let Some(Ok(m)) = stream.next().await {
        let Message::Binary(b) = m else { continue };
        let Some((&ch, rest)) = b.split_first() else { continue };
        if ch > 1 {
            continue;
        }
        if !opened[ch as usize] {
            opened[ch as usize] = true;
            continue;
        }
        match ch {
            0 => write.write_all(rest).await?,
            _ => eprintln!("crioctl: {}", String::from_utf8_lossy(rest)),
        }
    }
    up.abort();
    Ok(())
}
