//! What is the same for every container of an image, kept by image id: the id is the digest
//! of the image's config, so nothing kept goes stale (a removed image's entry is only
//! unused). Bounded by images, not containers: beyond `CACHED_IMAGES` one entry is dropped
//! for each added.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Images whose facts are kept.
pub const CACHED_IMAGES: usize = 64;

pub struct ByImage<V> {
    map: Mutex<HashMap<String, Arc<V>>>,
}

impl<V> Default for ByImage<V> {
    fn default() -> Self {
        ByImage { map: Mutex::new(HashMap::new()) }
    }
}

impl<V> ByImage<V> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<V>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, image_id: &str) -> Option<Arc<V>> {
        self.lock().get(image_id).cloned()
    }

    pub fn insert(&self, image_id: &str, value: Arc<V>) {
        let mut m = self.lock();
        if m.len() >= CACHED_IMAGES
            && !m.contains_key(image_id)
            && let Some(k) = m.keys().next().cloned()
        {
            m.remove(&k);
        }
        m.insert(image_id.to_string(), value);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_per_image_within_bounds() {
        let cache = ByImage::default();
        assert!(cache.get("sha256:a").is_none());
        cache.insert("sha256:a", Arc::new(1));
        assert_eq!(cache.get("sha256:a").as_deref(), Some(&1));
        cache.insert("sha256:a", Arc::new(2));
        assert_eq!((cache.get("sha256:a").as_deref(), cache.len()), (Some(&2), 1), "replaced, not added");
        for n in 0..2 * CACHED_IMAGES {
            cache.insert(&format!("sha256:{n}"), Arc::new(n));
        }
        assert_eq!(cache.len(), CACHED_IMAGES);
        assert_eq!(
            cache.get(&format!("sha256:{}", 2 * CACHED_IMAGES - 1)).as_deref(),
            Some(&(2 * CACHED_IMAGES - 1)),
            "the newest is kept"
        );
    }
}
