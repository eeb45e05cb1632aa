//! The monitor's one reaper: it is the subreaper of every container init, so it alone calls
//! wait. Callers register interest in a pid and block until its status is published. An exit
//! nobody has claimed yet (a container init that died before its pid file was read) is kept a
//! short while for a late `wait`; others (processes orphaned inside a container) are dropped.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitOptions};

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
    pub fn spawn(&self, cmd: &mut std::process::Command) -> io::Result<i32> {
        let (lock, cv) = &*self.inner;
        let mut s = lock.lock().expect("reaper poisoned");
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // Dropping std's Child neither waits nor kills: the reaper owns the status.
        drop(child);
        s.watched.insert(pid, None);
        s.generation += 1;
        cv.notify_all();
        Ok(pid)
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

    /// Blocks until watched `pid` has exited or `limit` has passed (`None`, still watched).
    pub fn wait_timeout(&self, pid: i32, limit: Duration) -> Option<Exit> {
        self.wait_until(pid, Some(Instant::now() + limit))
    }

    /// Blocks until watched `pid` has exited.
    pub fn wait(&self, pid: i32) -> Exit {
        self.wait_until(pid, None).expect("no deadline: only an exit ends the wait")
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

fn reap(pid: i32) -> Option<Exit> {
    let (_, status) = rustix::process::waitpid(Some(Pid::from_raw(pid)?), WaitOptions::empty()).ok().flatten()?;
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => Some(Exit { code, signal: None }),
        (None, Some(sig)) => Some(Exit { code: 128 + sig, signal: Some(sig) }),
        (None, None) => None,
    }
}
