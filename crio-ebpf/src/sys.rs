//! The crate's one unsafe call: registering the ring buffer's descriptor with tokio.
#![allow(unsafe_code, reason = "this module is where the crate's unsafe lives")]

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

/// The ring buffer, readable through the tokio reactor (readable = records to consume).
pub fn register_ring(ring: RingBuf<MapData>) -> std::io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the AsyncFd takes ownership of the RingBuf, which owns the map's descriptor
    // (MapData closes it only when dropped) and always reports that same descriptor from
    // as_raw_fd, so the fd stays open and unchanged for the AsyncFd's whole life.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }.map_err(std::io::Error::from)
}
