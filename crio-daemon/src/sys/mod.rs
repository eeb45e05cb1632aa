//! The only place with `unsafe`: thin wrappers over syscalls that rustix marks unsafe, each
//! with the argument for why our use is sound.
#![allow(unsafe_code, reason = "this module is where the crate's unsafe lives")]

use std::io;

/// Moves the calling thread (only) into a new network namespace.
pub fn unshare_network() -> io::Result<()> {
    // SAFETY: rustix marks unshare unsafe because CLONE_FILES can leave other threads holding
    // descriptors this thread no longer shares. We pass only CLONE_NEWNET, which changes the
    // network namespace of this thread and leaves its file table, memory and fs state shared.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }.map_err(io::Error::from)
}
