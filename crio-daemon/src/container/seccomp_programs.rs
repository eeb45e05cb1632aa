//! Compiled seccomp programs for the exec helper, shared by containers with the same profile
//! (compiling one costs milliseconds) and kept only while a container that uses it lives.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

type Program = Arc<Vec<u8>>;

#[derive(Default)]
pub struct SeccompPrograms {
    /// Profile (as JSON) -> its program and the containers using it.
    by_profile: Mutex<HashMap<String, (Program, HashSet<String>)>>,
}

impl SeccompPrograms {
    /// The program compiled for `profile`, if any, now also used by `container`.
    pub fn get(&self, profile: &str, container: &str) -> Option<Program> {
        let mut m = self.by_profile.lock().unwrap_or_else(|e| e.into_inner());
        let (program, users) = m.get_mut(profile)?;
        users.insert(container.to_string());
        Some(program.clone())
    }

    pub fn insert(&self, profile: String, container: &str, program: Program) {
        let mut m = self.by_profile.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(profile).or_insert_with(|| (program, HashSet::new())).1.insert(container.to_string());
    }

    /// `container` is gone: programs no living container uses go with it.
    pub fn release(&self, container: &str) {
        let mut m = self.by_profile.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, users)| {
            users.remove(container);
            !users.is_empty()
        });
    }

    pub(super) fn len(&self) -> usize {
        self.by_profile.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_live_as_long_as_a_container_uses_them() {
        let p = SeccompPrograms::default();
        p.insert("default".into(), "a", Arc::new(vec![1]));
        assert_eq!(p.get("default", "b").as_deref(), Some(&vec![1]));
        p.insert("custom".into(), "c", Arc::new(vec![2]));
        p.release("a");
        assert_eq!(p.len(), 2, "b still uses the default profile");
        p.release("b");
        p.release("c");
        assert_eq!(p.len(), 0);
        // Many containers, each removed: nothing stays.
        for i in 0..1000 {
            p.insert(format!("profile-{i}"), &format!("ct-{i}"), Arc::new(vec![]));
            p.release(&format!("ct-{i}"));
        }
        assert_eq!(p.len(), 0);
    }
}
