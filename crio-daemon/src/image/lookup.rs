//! Finding a stored image from what a client typed: a full or unique-prefix id
//! (`sha256:` optional), a tag, or a digest reference; short names through registries.conf.

use super::ImageError;
use super::reference::ImageName;
use super::registries::Registries;
use crate::storage::{ImageRecord, Index};

pub struct Found<'a> {
    pub record: &'a ImageRecord,
}

/// Ids shorter than this are names, never prefixes.
const MIN_ID_PREFIX: usize = 3;

pub fn find<'a>(index: &'a Index, registries: &Registries, name: &str) -> Result<Option<Found<'a>>, ImageError> {
    let id_like = name.strip_prefix("sha256:").unwrap_or(name);
    if let Some(record) = index.images.get(id_like) {
        return Ok(Some(Found { record }));
    }
    let parsed = ImageName::parse(name);
    if let Ok(parsed) = &parsed {
        // A short name with no search registries simply matches nothing here.
        for candidate in registries.candidates(parsed).unwrap_or_default() {
            if let Some(digest) = &candidate.digest {
                let want = format!("{}@{digest}", candidate.name());
                if let Some(record) = index.images.values().find(|i| i.repo_digests.contains(&want)) {
                    return Ok(Some(Found { record }));
                }
            } else if let Some(tag) = candidate.tagged()
                && let Some(record) = index.images.values().find(|i| i.repo_tags.contains(&tag))
            {
                return Ok(Some(Found { record }));
            }
        }
    }
    if id_like.len() >= MIN_ID_PREFIX && id_like.bytes().all(|c| c.is_ascii_hexdigit()) {
        let mut matches = index.images.range(id_like.to_string()..).take_while(|(id, _)| id.starts_with(id_like));
        if let (Some((_, record)), None) = (matches.next(), matches.next()) {
            return Ok(Some(Found { record }));
        }
    }
    match parsed {
        Ok(_) => Ok(None),
        // Neither an id nor a valid reference: say why the name is wrong.
        Err(e) => Err(e.into()),
    }
}
