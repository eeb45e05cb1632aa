//! The monitor's one reaper: it is the subreaper of every container init, so it alone waits
//! for any child. Callers register interest in a pid and block until its status is published.
//! An exit nobody has claimed yet (a container init that died before its pid file was read) is
//! kept a short while for a late `wait`; others (processes orphaned inside a container) are
//! dropped. A child the monitor spawned itself (the runtime) may instead be waited for through
//! its pidfd by the thread that needs its status, which reaps it if it gets there first: the
//! kernel wakes that thread at the exit, not the reaper and then the thread (two wake-ups in a
//! row, ~0.25 ms each on a VM with idle vCPUs, on a create's path).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, WaitIdOptions, WaitOptions};

/// How long an unclaimed exit is kept for a late `wait` of the same pid.
const UNCLAIMED_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub signal: Option<i32>,
}

#[derive(Default)]
struct State {
    watched: HashMap<i32, Option<Exit>>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
    /// Bumped whenever a child may have been added, so an idle reaper knows to look again.
    generation: u64,
}

/// A child spawned through the reaper; `pidfd` names it for certain (see [`Reaper::spawn`]).
pub struct Spawned {
    pub pid: i32,
    pidfd: Option<OwnedFd>,
}

#[derive(Clone, Default)]
pub struct Reaper {
    inner: Arc<(Mutex<State>, Condvar)>,
}

impl Reaper {
    /// Starts the reaper thread.
    pub fn start() -> Reaper {
        let r = Reaper::default();
        let worker = r.clone();
        std::thread::Builder::new().name("reaper".into()).spawn(move || worker.run()).expect("spawning the reaper thread");
        r
    }

    /// Spawns a child and watches it, atomically with respect to the reaper, so its exit can
    /// never be published before anyone listens.
    pub fn spawn(&self, cmd: &mut std::process::Command) -> io::Result<Spawned> {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().expect("reaper poisoned");
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // Dropping std's Child neither waits nor kills: the reaper owns the status.
        drop(child);
        s.watched.insert(pid, None);
        s.generation += 1;
        cv.notify_all();
        drop(s);
        Ok(Spawned { pid, pidfd: own_child_pidfd(pid) })
    }

    /// Watches a pid that is already our child (a container init reparented to us).
    pub fn watch(&self, pid: i32) {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().expect("reaper poisoned");
        let early = s.unclaimed.remove(&pid).map(|(e, _)| e);
        s.watched.insert(pid, early);
        s.generation += 1;
        cv.notify_all();
    }

    /// Blocks until watched `pid` has exited.
    pub fn wait(&self, pid: i32) -> Exit {
        self.wait_until(pid, None).expect("no deadline: only an exit ends the wait")
    }

    /// Blocks until spawned `child` has exited or `limit` has passed (`None`, still watched):
    /// woken by its pidfd, reaping it unless the reaper got there first.
    pub fn wait_spawned(&self, child: &Spawned, limit: Option<Duration>) -> Option<Exit> {
        let deadline = limit.map(|l| Instant::now() + l);
        if let Some(fd) = &child.pidfd {
            if !exited_by(fd, deadline) {
                return None;
            }
            let reaped = rustix::process::waitid(rustix::process::WaitId::PidFd(fd.as_fd()), WaitIdOptions::EXITED | WaitIdOptions::NOHANG);
            if let Ok(Some(status)) = reaped {
                let exit = match (status.exit_status(), status.terminating_signal()) {
                    (_, Some(sig)) => Exit { code: 128 + sig, signal: Some(sig) },
                    (code, None) => Exit { code: code.unwrap_or(0), signal: None },
                };
                self.inner.0.lock().expect("reaper poisoned").watched.remove(&child.pid);
                return Some(exit);
            }
            // ECHILD: the reaper reaped it and publishes the status.
        }
        self.wait_until(child.pid, deadline)
    }

    fn wait_until(&self, pid: i32, deadline: Option<Instant>) -> Option<Exit> {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().expect("reaper poisoned");
        loop {
            if let Some(Some(exit)) = s.watched.get(&pid) {
                let exit = *exit;
                s.watched.remove(&pid);
                return Some(exit);
            }
            s = match deadline {
                None => cv.wait(s).expect("reaper poisoned"),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
                    cv.wait_timeout(s, left).expect("reaper poisoned").0
                }
            };
        }
    }

    fn run(&self) {
        let (lock, cv) = &*self.inner;
        loop {
            let generation = lock.lock().expect("reaper poisoned").generation;
            match crate::sys::wait_any_exited() {
                Ok(Some(pid)) => {
                    let Some(exit) = reap(pid) else { continue };
                    let mut s = lock.lock().expect("reaper poisoned");
                    match s.watched.get_mut(&pid) {
                        Some(slot) => *slot = Some(exit),
                        None => {
                            s.unclaimed.retain(|_, (_, at)| at.elapsed() < UNCLAIMED_TTL);
                            s.unclaimed.insert(pid, (exit, Instant::now()));
                        }
                    }
                    cv.notify_all();
                }
                // No children: sleep until one may have been added.
                Ok(None) => {
                    let mut s = lock.lock().expect("reaper poisoned");
                    while s.generation == generation {
                        s = cv.wait(s).expect("reaper poisoned");
                    }
                }
                Err(e) => {
                    eprintln!("crio-monitor: waitid failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// A pidfd for `pid`, a child just spawned, if it is certain to name that child: a pid the
/// reaper reaped before the open could name another process by then, and waitid on a pidfd
/// answers only for our own children.
fn own_child_pidfd(pid: i32) -> Option<OwnedFd> {
    let fd = rustix::process::pidfd_open(Pid::from_raw(pid)?, PidfdFlags::empty()).ok()?;
    let ours = rustix::process::waitid(
        rustix::process::WaitId::PidFd(fd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
    );
    ours.is_ok().then_some(fd)
}

/// Waits on a pidfd until its process has exited (true) or `deadline` passed (false).
fn exited_by(fd: &OwnedFd, deadline: Option<Instant>) -> bool {
    loop {
        let left = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(Timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 }),
                _ => return false,
            },
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, left.as_ref()) {
            Ok(n) if n > 0 => return true,
            // Timed out: the loop finds the deadline passed.
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            // Cannot poll: the reaper's publication decides.
            Err(_) => return true,
        }
    }
}

fn reap(pid: i32) -> Option<Exit> {
    let (_, status) = rustix::process::waitpid(Some(Pid::from_raw(pid)?), WaitOptions::empty()).ok().flatten()?;
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => Some(Exit { code, signal: None }),
        (None, Some(sig)) => Some(Exit { code: 128 + sig, signal: Some(sig) }),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // No reaper thread: it would wait for every child of the test binary, other tests' too.
    // The waiting thread reaps its spawned child through the pidfd alone.

    fn spawned(r: &Reaper, script: &str) -> Spawned {
        let child = r.spawn(std::process::Command::new("sh").args(["-c", script])).expect("spawning sh");
        assert!(child.pidfd.is_some(), "a child just spawned gets a pidfd");
        child
    }

    #[test]
    fn a_spawned_child_is_reaped_by_its_waiter_with_its_status() {
        let r = Reaper::default();
        let child = spawned(&r, "exit 3");
        assert_eq!(r.wait_spawned(&child, None), Some(Exit { code: 3, signal: None }));
        assert!(r.inner.0.lock().unwrap().watched.is_empty(), "the waiter's reap ends the watch");
        let killed = spawned(&r, "kill -9 $$");
        assert_eq!(r.wait_spawned(&killed, Some(Duration::from_secs(30))), Some(Exit { code: 137, signal: Some(9) }));
    }

    #[test]
    fn a_deadline_ends_the_wait_and_leaves_the_child_watched() {
        let r = Reaper::default();
        let child = spawned(&r, "sleep 30");
        assert_eq!(r.wait_spawned(&child, Some(Duration::from_millis(20))), None);
        assert!(r.inner.0.lock().unwrap().watched.contains_key(&child.pid));
        rustix::process::kill_process(Pid::from_raw(child.pid).unwrap(), rustix::process::Signal::KILL).unwrap();
        assert_eq!(r.wait_spawned(&child, None), Some(Exit { code: 137, signal: Some(9) }));
    }
}
