//! WebSocket, for direct clients and crictl's websocket transport: the kubelet's channel
//! protocols. Every message starts with its channel (0 stdin, 1 stdout, 2 stderr, 3 error,
//! 4 resize; as an ASCII digit with the payload in base64 for the `base64` variants); v5 adds
//! a close message (255, channel) for stdin. Port-forward takes its ports from the query and
//! gives each port a data channel (2i) and an error channel (2i + 1), each opened by a message
//! holding the port (u16, little-endian).

use std::time::Duration;

use axum::body::Body;
use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};

use super::channel::{Out, Output, Session};
use super::remotecommand::{self, Streams, Version};
use super::server::offered;
use super::tokens::Pending;
use crate::services::Services;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: a message (CLOSE, channel) closes that channel.
const CLOSE: u8 = 255;
/// Largest message accepted from a client.
const MAX_MESSAGE: usize = 1 << 20;

/// The subprotocols of exec and attach, most preferred first, and their semantics.
const EXEC_PROTOCOLS: [(&str, Version, bool); 5] = [
    ("v5.channel.k8s.io", Version::V5, false),
    ("v4.channel.k8s.io", Version::V4, false),
    ("v4.base64.channel.k8s.io", Version::V4, true),
    ("channel.k8s.io", Version::V1, false),
    ("base64.channel.k8s.io", Version::V1, true),
];
const PORT_FORWARD_PROTOCOLS: [(&str, bool); 3] =
    [(super::PORT_FORWARD_PROTOCOL, false), ("v4.channel.k8s.io", false), ("v4.base64.channel.k8s.io", true)];

pub fn is_upgrade(h: &HeaderMap) -> bool {
    offered(h, header::UPGRADE.as_str()).iter().any(|u| u.eq_ignore_ascii_case("websocket"))
}

fn reply(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r
}

/// Answers a WebSocket upgrade and starts the session on the upgraded connection.
pub fn upgrade(req: &mut Request<Incoming>, pending: Pending, services: Services, idle: Duration) -> Response<Body> {
    let h = req.headers();
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return reply(StatusCode::BAD_REQUEST, "websocket upgrade without Sec-WebSocket-Key\n".into());
    };
    if h.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return reply(StatusCode::BAD_REQUEST, "websocket version 13 is required\n".into());
    }
    let asked = offered(h, header::SEC_WEBSOCKET_PROTOCOL.as_str());
    // (name, version, base64); no protocol asked for is the binary, oldest one.
    let chosen: Option<(&'static str, Version, bool)> = match &pending {
        Pending::PortForward { .. } => {
            PORT_FORWARD_PROTOCOLS.iter().find(|(n, _)| asked.iter().any(|a| a == n)).map(|(n, b)| (*n, Version::V4, *b))
        }
        _ => EXEC_PROTOCOLS.iter().find(|(n, ..)| asked.iter().any(|a| a == n)).copied(),
    };
    if chosen.is_none() && !asked.is_empty() {
        return reply(StatusCode::FORBIDDEN, format!("unable to upgrade: unable to negotiate protocol: client supports {asked:?}\n"));
    }
    let ports = match &pending {
        Pending::PortForward { .. } => match query_ports(req.uri().query().unwrap_or("")) {
            Ok(p) => p,
            Err(why) => return reply(StatusCode::BAD_REQUEST, format!("{why}\n")),
        },
        _ => Vec::new(),
    };
    let (version, base64) = chosen.map_or((Version::V1, false), |(_, v, b)| (v, b));
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        let (out_tx, out_rx) = mpsc::channel::<Out>(64);
        let session = Session::new(out_tx.clone());
        let inputs: Vec<u8> = match &pending {
            Pending::PortForward { .. } => (0..ports.len()).map(|i| (2 * i) as u8).collect(),
            _ => vec![STDIN, RESIZE],
        };
        let channels = run(ws, out_rx, session.clone(), base64, version == Version::V5, idle, &inputs);
        match pending {
            Pending::PortForward { pod_id } => port_forward(services, pod_id, ports, channels, out_tx, session).await,
            other => remote_command(services, other, version, channels, out_tx, session).await,
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("base64 is a header value"));
    if let Some((name, ..)) = chosen {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(name));
    }
    r
}

/// Ports from a query string such as `port=80&port=8080`.
pub fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let ports: Vec<u16> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "port")
        .map(|(_, v)| v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("invalid port {v:?}: must be within 1..65535")))
        .collect::<Result<_, _>>()?;
    if ports.is_empty() {
        return Err("at least one port is required (?port=N)".into());
    }
    // Two channels per port, numbered by one byte.
    if ports.len() > 127 {
        return Err(format!("{} ports asked for; at most 127 per session", ports.len()));
    }
    Ok(ports)
}

/// The receivers of the channels a session reads.
type Inputs = std::collections::HashMap<u8, mpsc::Receiver<Bytes>>;

/// Starts the reader and writer of a WebSocket session. Data on the `inputs` channels goes to
/// their receivers (others are dropped); a channel's sender goes when the client closes it
/// (v5) or the connection ends.
fn run<IO>(
    ws: WebSocketStream<IO>,
    mut out: mpsc::Receiver<Out>,
    session: Session,
    base64: bool,
    v5: bool,
    idle: Duration,
    inputs: &[u8],
) -> Inputs
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let mut senders = std::collections::HashMap::new();
    let mut receivers = Inputs::new();
    for ch in inputs {
        let (tx, rx) = mpsc::channel(8);
        senders.insert(*ch, tx);
        receivers.insert(*ch, rx);
    }
    let mut reader_inputs = senders;
    let reader_session = session.clone();
    tokio::spawn(async move {
        loop {
            let msg = match tokio::time::timeout(idle, stream.next()).await {
                Ok(Some(Ok(m))) => m,
                _ => break,
            };
            let data: Vec<u8> = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&first, rest)) = data.split_first() else { continue };
            let ch = if base64 { first.wrapping_sub(b'0') } else { first };
            if v5 && first == CLOSE {
                if let Some(&closed) = rest.first() {
                    reader_inputs.remove(&closed);
                }
                continue;
            }
            let payload = if base64 {
                match base64::engine::general_purpose::STANDARD.decode(rest) {
                    Ok(p) => p,
                    Err(_) => break,
                }
            } else {
                rest.to_vec()
            };
            if let Some(tx) = reader_inputs.get(&ch)
                && !payload.is_empty()
                && tx.send(Bytes::from(payload)).await.is_err()
            {
                reader_inputs.remove(&ch);
            }
        }
        reader_session.close();
    });
    let writer_session = session.clone();
    tokio::spawn(async move {
        let mut closed = writer_session.closed();
        loop {
            let o = tokio::select! {
                o = out.recv() => o,
                _ = closed.changed() => None,
            };
            let msg = match o {
                Some(Out::Data { stream, data }) => message(stream as u8, &data, base64),
                // Channels end with the connection; an empty message on a channel is how a
                // stream says it is ready, so nothing is sent for a single stream's end.
                Some(Out::Fin { .. }) | Some(Out::Reset { .. }) => continue,
                Some(Out::GoAway { .. }) | None => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(None))).await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
                    writer_session.close();
                    return;
                }
            };
            if tokio::time::timeout(idle, sink.send(msg)).await.map_or(true, |r| r.is_err()) {
                writer_session.close();
                return;
            }
        }
    });
    receivers
}

fn take(inputs: &mut Inputs, ch: u8) -> mpsc::Receiver<Bytes> {
    inputs.remove(&ch).unwrap_or_else(|| mpsc::channel(1).1)
}

fn message(ch: u8, data: &[u8], base64: bool) -> Message {
    if base64 {
        let mut text = String::from((b'0' + ch) as char);
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
        Message::Text(text.into())
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(ch);
        v.extend_from_slice(data);
        Message::Binary(v.into())
    }
}

async fn remote_command(services: Services, pending: Pending, version: Version, mut ch: Inputs, out: mpsc::Sender<Out>, session: Session) {
    let Some(wants) = remotecommand::wants(&pending) else { return };
    let output = |c: u8| Output::new(u32::from(c), out.clone());
    // The lowest writable channel gets an empty message: the client's sign that we are ready.
    let ready = if wants.stdout {
        STDOUT
    } else if wants.stderr {
        STDERR
    } else {
        ERROR
    };
    // Straight to the writer: `Output::send` skips empty data.
    let _ = out.send(Out::Data { stream: u32::from(ready), data: Bytes::new() }).await;
    let streams = Streams {
        error: output(ERROR),
        stdin: wants.stdin.then(|| take(&mut ch, STDIN)),
        stdout: wants.stdout.then(|| output(STDOUT)),
        stderr: wants.stderr.then(|| output(STDERR)),
        resize: wants.tty.then(|| take(&mut ch, RESIZE)),
    };
    remotecommand::run(&services, pending, wants, streams, version, session).await;
}

async fn port_forward(services: Services, pod_id: String, ports: Vec<u16>, mut ch: Inputs, out: mpsc::Sender<Out>, session: Session) {
    let mut forwards = Vec::new();
    for (i, port) in ports.into_iter().enumerate() {
        let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
        for c in [data, error] {
            let _ = out.send(Out::Data { stream: u32::from(c), data: Bytes::copy_from_slice(&port.to_le_bytes()) }).await;
        }
        let (services, pod_id, session, out) = (services.clone(), pod_id.clone(), session.clone(), out.clone());
        let data_in = take(&mut ch, data);
        forwards.push(async move {
            let (d, e) = (Output::new(u32::from(data), out.clone()), Output::new(u32::from(error), out));
            super::portforward::forward(&services, &pod_id, port, data_in, d, Some(e), &session).await;
        });
    }
    futures::future::join_all(forwards).await;
    session.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(query_ports("port=80&port=8080"), Ok(vec![80, 8080]));
        assert!(query_ports("port=0").is_err());
        assert!(query_ports("port=70000").is_err());
        assert!(query_ports("").is_err());
    }

    #[test]
    fn messages_carry_their_channel() {
        assert_eq!(message(1, b"hi", false), Message::Binary(vec![1, b'h', b'i'].into()));
        assert_eq!(message(2, b"hi", true), Message::Text("2aGk=".into()));
    }
}
