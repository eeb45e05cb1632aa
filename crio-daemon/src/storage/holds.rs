//! Counted holds on names the store's collection must leave alone while work that needs them is
//! in flight: layers a pull will commit, image directories written ahead of their record.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Mutex;

/// How many holders each name has; a name with none is absent.
pub(super) struct Holds<K>(Mutex<HashMap<K, usize>>);

impl<K: Eq + Hash + Clone> Holds<K> {
    pub(super) fn new() -> Self {
        Holds(Mutex::new(HashMap::new()))
    }

    pub(super) fn take<'a>(&self, keys: impl IntoIterator<Item = &'a K>)
    where
        K: 'a,
    {
        let mut held = self.0.lock().expect("holds lock poisoned");
        for k in keys {
            *held.entry(k.clone()).or_default() += 1;
        }
    }

    pub(super) fn release<'a>(&self, keys: impl IntoIterator<Item = &'a K>)
    where
        K: 'a,
    {
        let mut held = self.0.lock().expect("holds lock poisoned");
        for k in keys {
            if let Some(n) = held.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    held.remove(k);
                }
            }
        }
    }

    /// The names held now.
    pub(super) fn held(&self) -> HashSet<K> {
        self.0.lock().expect("holds lock poisoned").keys().cloned().collect()
    }
}
