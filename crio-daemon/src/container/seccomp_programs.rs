//! Compiled seccomp programs for the exec helper, shared by containers with the same profile
//! (compiling one costs milliseconds). A program is kept while a container uses it, and the
//! few most recently unused ones are kept too: pods come and go with the same profiles, and
//! a node that replaces its containers one by one would otherwise compile each time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

type Program = Arc<Vec<u8>>;

/// Programs no container uses that are kept for the next container with their profile.
const KEPT_UNUSED: usize = 16;

struct Entry {
    program: Program,
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

    /// The program compiled for `profile`, if any, now also used by `container`.
    pub fn get(&self, profile: &str, container: &str) -> Option<Program> {
        let mut m = self.lock();
        let e = m.by_profile.get_mut(profile)?;
        e.users.insert(container.to_string());
        e.unused_since = None;
        Some(e.program.clone())
    }

    pub fn insert(&self, profile: String, container: &str, program: Program) {
        let mut m = self.lock();
        let e = m.by_profile.entry(profile).or_insert_with(|| Entry { program, users: HashSet::new(), unused_since: None });
        e.users.insert(container.to_string());
        e.unused_since = None;
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

    #[test]
    fn programs_outlive_their_last_container_a_little() {
        let p = SeccompPrograms::default();
        p.insert("default".into(), "a", Arc::new(vec![1]));
        assert_eq!(p.get("default", "b").as_deref(), Some(&vec![1]));
        p.insert("custom".into(), "c", Arc::new(vec![2]));
        p.release("a");
        p.release("b");
        p.release("c");
        // Nobody uses either, but the next container with the default profile finds it.
        assert_eq!(p.get("default", "d").as_deref(), Some(&vec![1]));
        // Many profiles, each used once: only the newest unused ones stay, and the one in use.
        for i in 0..1000 {
            p.insert(format!("profile-{i}"), &format!("ct-{i}"), Arc::new(vec![]));
            p.release(&format!("ct-{i}"));
        }
        assert_eq!(p.len(), KEPT_UNUSED + 1);
        assert_eq!(p.in_use(), 1);
        assert!(p.get("default", "e").is_some(), "in use by d: never dropped");
        assert!(p.get("profile-999", "f").is_some() && p.get("profile-0", "g").is_none());
    }
}
