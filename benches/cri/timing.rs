//! Where a pod start's time goes, measured rather than estimated and without wrapping anything:
//! both runtimes call the real runc and CNI plugins, and the bench watches the kernel's process
//! events (the netlink proc connector: fork, exec and exit of every task, stamped by the
//! kernel's monotonic clock). A call lasts from the fork of its process to the exit of its last
//! thread, as a caller's spawn and wait see it: a Go program's main thread may exit while its
//! other threads and its address space are still being torn down, and until they are, its
//! parent cannot reap it. A pod start's share of runc create and of CNI ADD is read
//! from the calls that ended during it; the rest is the runtime's own work (and, for
//! containerd, its shim).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rustix::net::{AddressFamily, SendFlags, SocketType, netlink};

/// Plugins the bench's network uses: loopback and the conflist's two, with host-local (called
/// by bridge, so its time is inside bridge's).
const PLUGINS: [&str; 4] = ["loopback", "bridge", "portmap", "host-local"];
const RUNC: &str = "/usr/sbin/runc";
const CNI_DIR: &str = "/usr/lib/cni";

// The proc connector's ABI (linux/connector.h, linux/cn_proc.h).
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const NLMSG_DONE: u16 = 3;
const PROC_EVENT_FORK: u32 = 0x1;
const PROC_EVENT_EXEC: u32 = 0x2;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_HDR: usize = 16;
const CN_MSG: usize = 20;

/// One finished call.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    cni_command: String,
    start: u64,
    end: u64,
    args: Vec<String>,
}

#[derive(Default)]
struct Seen {
    calls: Vec<Call>,
    /// Timestamp of the newest event handled: `since` waits for the kernel's queue to drain
    /// up to its own call.
    newest: u64,
}

/// The watched binaries and the calls seen so far.
pub struct Calls {
    pub runc: PathBuf,
    pub cni_dir: PathBuf,
    seen: Arc<(Mutex<Seen>, Condvar)>,
    /// Events the kernel dropped (socket buffer full) or calls whose process was gone before
    /// it could be named: reported, so a short count is never silent.
    lost: Arc<AtomicU64>,
    /// Whether exec'd processes are named (read from /proc) and so timed. Off outside the
    /// scenarios that read calls: the reads cost CPU of their own, and a /proc entry looked up
    /// has to be walked and dropped when its process is reaped, which the reaping runtime
    /// pays (1.4% of the node in a profiled burst of ours).
    naming: Arc<AtomicBool>,
}

/// Names and times calls while it lives (see [`Calls::timing`]).
pub struct Timing(Arc<AtomicBool>);

impl Drop for Timing {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Starts watching (needs CAP_NET_ADMIN: the bench runs as root).
pub fn watch() -> Calls {
    let fd = rustix::net::socket(AddressFamily::NETLINK, SocketType::DGRAM, Some(netlink::CONNECTOR)).expect("a proc connector socket");
    // Every task of the node is reported; a burst must not overflow the queue.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, 8 << 20);
    rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, CN_IDX_PROC)).expect("binding to the proc connector");
    let mut msg = Vec::with_capacity(NLMSG_HDR + CN_MSG + 4);
    msg.extend_from_slice(&((NLMSG_HDR + CN_MSG + 4) as u32).to_ne_bytes());
    msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&std::process::id().to_ne_bytes());
    msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
    msg.extend_from_slice(&4u16.to_ne_bytes()); // len
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    rustix::net::send(&fd, &msg, SendFlags::empty()).expect("subscribing to process events");
    let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
    let lost = Arc::new(AtomicU64::new(0));
    let naming = Arc::new(AtomicBool::new(false));
    let (s, l, on) = (seen.clone(), lost.clone(), naming.clone());
    std::thread::Builder::new().name("proc-events".into()).spawn(move || read_events(fd, &s, &l, &on)).expect("spawning the event reader");
    Calls { runc: RUNC.into(), cni_dir: CNI_DIR.into(), seen, lost, naming }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// What a watched process is, read while it runs.
struct Started {
    name: String,
    cni_command: String,
    start: u64,
    args: Vec<String>,
    /// Threads started since the exec and not yet exited.
    threads: u32,
    /// Whether the main thread has exited (the process ends with its last thread).
    leader_gone: bool,
}

fn read_events(fd: rustix::fd::OwnedFd, seen: &(Mutex<Seen>, Condvar), lost: &AtomicU64, naming: &AtomicBool) {
    let mut buf = vec![0u8; 64 << 10];
    let mut forked: HashMap<u32, u64> = HashMap::new();
    let mut running: HashMap<u32, Started> = HashMap::new();
    loop {
        let n = match rustix::net::recv(&fd, &mut buf, rustix::net::RecvFlags::empty()) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::NOBUFS) => {
                lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("reading process events: {e}"),
        };
        let mut at = 0;
        while at + NLMSG_HDR + CN_MSG + 16 <= n {
            let len = u32_at(&buf, at) as usize;
            let ev = &buf[at + NLMSG_HDR + CN_MSG..(at + len).min(n)];
            at += len.max(NLMSG_HDR).next_multiple_of(4);
            if ev.len() < 24 {
                continue;
            }
            let (what, ts) = (u32_at(ev, 0), u64::from_ne_bytes(ev[8..16].try_into().expect("8 bytes")));
            let (pid, tgid) = (u32_at(ev, 16), u32_at(ev, 20));
            match what {
                PROC_EVENT_FORK if ev.len() >= 32 => {
                    let (child, child_tgid) = (u32_at(ev, 24), u32_at(ev, 28));
                    if child == child_tgid {
                        forked.insert(child, ts);
                    } else if let Some(s) = running.get_mut(&child_tgid) {
                        s.threads += 1;
                    }
                }
                PROC_EVENT_EXEC if pid == tgid && naming.load(Ordering::Relaxed) => {
                    if let Some((name, cni_command, args)) = named(pid) {
                        let start = forked.get(&pid).copied().unwrap_or(ts);
                        running.insert(pid, Started { name, cni_command, start, args, threads: 0, leader_gone: false });
                    }
                }
                PROC_EVENT_EXIT => {
                    if pid == tgid {
                        forked.remove(&pid);
                    }
                    if let Some(s) = running.get_mut(&tgid) {
                        if pid == tgid {
                            s.leader_gone = true;
                        } else {
                            s.threads = s.threads.saturating_sub(1);
                        }
                        if s.leader_gone && s.threads == 0 {
                            let s = running.remove(&tgid).expect("just seen");
                            let call = Call { name: s.name, cni_command: s.cni_command, start: s.start, end: ts, args: s.args };
                            seen.0.lock().unwrap().calls.push(call);
                        }
                    }
                }
                _ => {}
            }
            let mut s = seen.0.lock().unwrap();
            s.newest = s.newest.max(ts);
            seen.1.notify_all();
        }
    }
}

/// A watched binary's name, CNI command and arguments; `None` for anything else, and for a
/// process gone before it was read (a plugin runs for milliseconds, this reads within
/// microseconds of its exec): such a call would be missing, never wrong.
fn named(pid: u32) -> Option<(String, String, Vec<String>)> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = if exe == Path::new(RUNC) {
        "runc".to_string()
    } else {
        let plugin = exe.strip_prefix(CNI_DIR).ok()?.to_str()?;
        PLUGINS.contains(&plugin).then(|| plugin.to_string())?
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args = cmdline.split(|b| *b == 0).skip(1).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let cni_command = environ
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"CNI_COMMAND="))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_else(|| "-".into());
    Some((name, cni_command, args))
}

impl Calls {
    /// Calls are named and timed until the guard drops.
    pub fn timing(&self) -> Timing {
        self.naming.store(true, Ordering::Relaxed);
        Timing(self.naming.clone())
    }

    /// Calls seen so far: what a pod start adds is read from there on.
    pub fn mark(&self) -> usize {
        self.sync();
        self.seen.0.lock().unwrap().calls.len()
    }

    /// Waits until every event up to now has been handled: a thread of ours starts and ends,
    /// and the kernel reports that after everything before it.
    fn sync(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let now = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
        std::thread::spawn(|| {}).join().expect("an empty thread");
        let (lock, cv) = &*self.seen;
        let s = lock.lock().unwrap();
        let (s, timeout) = cv.wait_timeout_while(s, Duration::from_secs(2), |s| s.newest < now).unwrap();
        drop(s);
        if timeout.timed_out() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events lost so far (kernel queue overflows, late reads).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Time in `runc create`, in CNI ADD and in CNI DEL (top-level plugins) since the mark
    /// `from`, and in runc create or CNI ADD (their union, for "the rest").
    pub fn since(&self, from: usize) -> Spent {
        self.sync();
        let calls: Vec<Call> = self.seen.0.lock().unwrap().calls[from..].to_vec();
        let runc: Vec<(u64, u64)> =
            calls.iter().filter(|c| c.name == "runc" && c.args.iter().any(|a| a == "create")).map(|c| (c.start, c.end)).collect();
        // host-local runs inside bridge: only the plugins a runtime calls itself.
        let cni: Vec<(u64, u64)> =
            calls.iter().filter(|c| c.cni_command == "ADD" && c.name != "host-local").map(|c| (c.start, c.end)).collect();
        let del: Vec<(u64, u64)> =
            calls.iter().filter(|c| c.cni_command == "DEL" && c.name != "host-local").map(|c| (c.start, c.end)).collect();
        let (ns, union) = (Duration::from_nanos, crio_benches::union_length);
        Spent {
            runc_create: ns(union(runc.clone())),
            cni_add: ns(union(cni.clone())),
            cni_del: ns(union(del)),
            either: ns(union([runc, cni].concat())),
        }
    }
}

/// Where a pod start's calls spent their time.
pub struct Spent {
    pub runc_create: Duration,
    pub cni_add: Duration,
    pub cni_del: Duration,
    pub either: Duration,
}
