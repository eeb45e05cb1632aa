//! One forwarded connection, whichever protocol carries it: dial the port in the pod, then
//! copy both ways. The client finishing first half-closes the pod's side, whose answer is
//! still copied to the end; the pod finishing first leaves the client a second to finish
//! too (a WebSocket client cannot half-close). A failure is reported on the pair's error
//! stream in the words the kubelet uses, and the data stream is closed.

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channel::{Output, Session};
use crate::services::Services;

/// After the pod's side closed, how long the client's may still send.
const POD_CLOSED_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn forward(
    services: &Services,
    pod_id: &str,
    port: u16,
    mut data_in: mpsc::Receiver<Bytes>,
    data_out: Output,
    error: Option<Output>,
    session: &Session,
) {
    let conn = match services.pods.dial(pod_id, port).await {
        Ok(c) => c,
        Err(e) => {
            let why = format!("error forwarding port {port} to pod {pod_id}: {}", crate::error_chain(&e));
            tracing::debug!(pod_sandbox_id = pod_id, port, error = %why, "port forward failed");
            if let Some(err) = &error {
                err.send(Bytes::from(why)).await;
                err.close().await;
            }
            data_out.close().await;
            return;
        }
    };
    let (mut read, mut write) = conn.into_split();
    let inbound = async move {
        while let Some(d) = data_in.recv().await {
            if write.write_all(&d).await.is_err() {
                return;
            }
        }
        // The client is done sending: the pod's side sees the end of its input.
        let _ = write.shutdown().await;
    };
    let out = data_out.clone();
    let outbound = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !out.send(Bytes::copy_from_slice(&buf[..n])).await {
                        return;
                    }
                }
            }
        }
        out.close().await;
    };
    tokio::pin!(inbound, outbound);
    let both = async {
        tokio::select! {
            () = &mut outbound => {
                let _ = tokio::time::timeout(POD_CLOSED_GRACE, &mut inbound).await;
            }
            () = &mut inbound => outbound.await,
        }
    };
    tokio::select! {
        () = both => {}
        () = session.wait_closed() => return,
    }
    if let Some(err) = &error {
        err.close().await;
    }
}
