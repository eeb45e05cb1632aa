//! Compiled seccomp programs for the exec helper, shared by containers with the same profile
//! (compiling one costs milliseconds). A program is kept while a container uses it, and the
//! few most recently unused ones are kept too: pods come and go with the same profiles, and
//! a node that replaces its containers one by one would otherwise compile each time.
//! Containers that arrive together with a profile not yet compiled (a node starting its pods
//! after a reboot) wait for one compile instead of each running their own.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

type Program = Arc<Vec<u8>>;

/// Programs no container uses that are kept for the next container with their profile.
const KEPT_UNUSED: usize = 16;

struct Entry {
    /// Empty while its first container compiles it (or after that compile failed).
    program: Arc<OnceCell<Program>>,
    users: HashSet<String>,
    /// When the last user went (a release counter), for dropping the oldest unused first.
    unused_since: Option<u64>,
}

#[derive(Default)]
struct Programs {
    by_profile: HashMap<String, Entry>,
    releases: u64,
}

#[derive(Default)]
pub struct SeccompPrograms {
    /// Profile (as JSON) -> its program and the containers using it.
    inner: Mutex<Programs>,
}

impl SeccompPrograms {
    fn lock(&self) -> std::sync::MutexGuard<'_, Programs> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The program for `profile`, now also used by `container`: the one compiled before, the
    /// one another container is compiling, or compiled here by `compile`.
    pub async fn get_or_compile<E, F, Fut>(&self, profile: String, container: &str, compile: F) -> Result<Program, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        let cell = {
            let mut m = self.lock();
            let e = m.by_profile.entry(profile.clone()).or_insert_with(|| Entry {
                program: Arc::new(OnceCell::new()),
                users: HashSet::new(),
                unused_since: None,
            });
            e.users.insert(container.to_string());
            e.unused_since = None;
            e.program.clone()
        };
        match cell.get_or_try_init(|| async { compile().await.map(Arc::new) }).await {
            Ok(p) => Ok(p.clone()),
            Err(e) => {
                // Not a user of a program it has not got; a profile nobody holds goes.
                let mut m = self.lock();
                if let Some(entry) = m.by_profile.get_mut(&profile) {
                    entry.users.remove(container);
                    if entry.users.is_empty() && entry.program.get().is_none() {
                        m.by_profile.remove(&profile);
                    }
                }
                Err(e)
            }
        }
    }

    /// `container` is gone: programs no living container uses are kept, the oldest of them
    /// dropped past [`KEPT_UNUSED`].
    pub fn release(&self, container: &str) {
        let mut m = self.lock();
        m.releases += 1;
        let now = m.releases;
        for e in m.by_profile.values_mut() {
            if e.users.remove(container) && e.users.is_empty() {
                e.unused_since = Some(now);
            }
        }
        let mut unused: Vec<(u64, String)> = m.by_profile.iter().filter_map(|(k, e)| e.unused_since.map(|t| (t, k.clone()))).collect();
        if unused.len() > KEPT_UNUSED {
            unused.sort_unstable();
            for (_, k) in &unused[..unused.len() - KEPT_UNUSED] {
                m.by_profile.remove(k);
            }
        }
    }

    /// Programs some container uses (the kept unused ones are a bounded cache, not a table
    /// that must follow live containers).
    pub(super) fn in_use(&self) -> usize {
        self.lock().by_profile.values().filter(|e| !e.users.is_empty()).count()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_profile.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().expect("a test runtime").block_on(f)
    }

    fn program(p: &SeccompPrograms, profile: &str, container: &str, bytes: u8) -> Program {
        let compiled = || async move { Ok::<_, ()>(vec![bytes]) };
        block_on(p.get_or_compile(profile.into(), container, compiled)).unwrap()
    }

    #[test]
    fn programs_outlive_their_last_container_a_little() {
        let p = SeccompPrograms::default();
        assert_eq!(*program(&p, "default", "a", 1), vec![1]);
        // Compiled once: the next container gets the first program, not its own.
        assert_eq!(*program(&p, "default", "b", 9), vec![1]);
        program(&p, "custom", "c", 2);
        p.release("a");
        p.release("b");
        p.release("c");
        // Nobody uses either, but the next container with the default profile finds it.
        assert_eq!(*program(&p, "default", "d", 9), vec![1]);
        // Many profiles, each used once: only the newest unused ones stay, and the one in use.
        for i in 0..1000 {
            program(&p, &format!("profile-{i}"), &format!("ct-{i}"), 0);
            p.release(&format!("ct-{i}"));
        }
        assert_eq!(p.len(), KEPT_UNUSED + 1);
        assert_eq!(p.in_use(), 1);
        assert_eq!(*program(&p, "default", "e", 9), vec![1], "in use by d: never dropped");
        assert_eq!(*program(&p, "profile-999", "f", 9), vec![0]);
        assert_eq!(*program(&p, "profile-0", "g", 9), vec![9], "dropped: compiled again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn containers_arriving_together_share_one_compile() {
        let p = Arc::new(SeccompPrograms::default());
        let compiles = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (go, wait) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (p, compiles, mut wait) = (p.clone(), compiles.clone(), wait.clone());
                tokio::spawn(async move {
                    p.get_or_compile("default".into(), &format!("ct-{i}"), || async move {
                        compiles.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Held until every container has asked.
                        let _ = wait.wait_for(|go| *go).await;
                        Ok::<_, ()>(vec![7])
                    })
                    .await
                })
            })
            .collect();
        while p.lock().by_profile.get("default").map_or(0, |e| e.users.len()) < 20 {
            tokio::task::yield_now().await;
        }
        go.send(true).unwrap();
        for t in tasks {
            assert_eq!(*t.await.unwrap().unwrap(), vec![7]);
        }
        assert_eq!(compiles.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(p.in_use(), 1);
    }

    #[test]
    fn a_failed_compile_leaves_nothing_and_the_next_container_tries_again() {
        let p = SeccompPrograms::default();
        let failed = block_on(p.get_or_compile("bad".into(), "a", || async { Err::<Vec<u8>, _>("no") }));
        assert_eq!(failed, Err("no"));
        assert_eq!((p.len(), p.in_use()), (0, 0));
        assert_eq!(*program(&p, "bad", "b", 3), vec![3]);
    }
}
