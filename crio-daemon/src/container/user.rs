//! Resolving the user a container runs as: numeric ids, or names looked up in the image's own
//! /etc/passwd and /etc/group (never the host's). Both are read inside the image's root with a
//! size cap (`crate::rootfs`); a file that cannot be read that way holds no users. Reading
//! them ([`Accounts::read`]) blocks: callers run it off the async workers; `resolve` only
//! looks in what was read.

use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UserError {
    #[error("user {0:?} not found in the image's /etc/passwd")]
    NoSuchUser(String),
    #[error("group {0:?} not found in the image's /etc/group")]
    NoSuchGroup(String),
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// Real images' files are a few KiB; a larger one is hostile or broken.
const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// The image's `path` as text, or empty (with a warning naming why) when it cannot be read
/// inside the root, is not a regular file or is too large.
fn account_file(rootfs: &Path, path: &str) -> String {
    match crate::rootfs::read_in_root(rootfs, path, MAX_ACCOUNT_FILE) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(crate::rootfs::RootfsReadError::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "image account file ignored");
            String::new()
        }
    }
}

fn passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    account_file(rootfs, "/etc/passwd")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry { name: f.first()?.to_string(), uid: f.get(2)?.parse().ok()?, gid: f.get(3)?.parse().ok()? })
        })
        .collect()
}

/// (name, gid, members) from the image's /etc/group.
fn groups(rootfs: &Path) -> Vec<(String, u32, Vec<String>)> {
    account_file(rootfs, "/etc/group")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()).unwrap_or_default();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

/// An image's /etc/passwd and /etc/group, parsed: all that resolving a user reads.
pub struct Accounts {
    passwd: Vec<PasswdEntry>,
    groups: Vec<(String, u32, Vec<String>)>,
}

impl Accounts {
    /// Reads them inside `rootfs` (blocking).
    pub fn read(rootfs: &Path) -> Accounts {
        Accounts { passwd: passwd(rootfs), groups: groups(rootfs) }
    }
}

/// Accounts with more entries than this are not kept (real images have tens).
const CACHED_ENTRIES: usize = 4096;

/// Accounts by image id. A new container's root is its image's layers under an empty upper
/// layer, so its account files are the image's, the same for every container of it; known,
/// they let a container's spec be written while its root filesystem mounts.
#[derive(Default)]
pub struct AccountsCache {
    by_image: super::by_image::ByImage<Accounts>,
}

impl AccountsCache {
    pub fn get(&self, image_id: &str) -> Option<Arc<Accounts>> {
        self.by_image.get(image_id)
    }

    pub fn insert(&self, image_id: &str, accounts: Arc<Accounts>) {
        if accounts.passwd.len() + accounts.groups.len() <= CACHED_ENTRIES {
            self.by_image.insert(image_id, accounts);
        }
    }
}

/// `user` is the image config's form (`uid`, `uid:gid`, `name`, `name:group`, or empty);
/// `uid`/`gid`/`username` from the request win over it.
pub fn resolve(
    accounts: &Accounts,
    image_user: &str,
    uid: Option<i64>,
    gid: Option<i64>,
    username: &str,
    supplemental: &[i64],
) -> Result<ResolvedUser, UserError> {
    let entries = &accounts.passwd;
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let (r_uid, mut r_gid, name) = if let Some(u) = uid {
        let e = entries.iter().find(|e| i64::from(e.uid) == u);
        (u as u32, e.map_or(0, |e| e.gid), e.map(|e| e.name.clone()))
    } else {
        let wanted = if username.is_empty() { user_part } else { username };
        match wanted.parse::<u32>() {
            Ok(n) => {
                let e = entries.iter().find(|e| e.uid == n);
                (n, e.map_or(0, |e| e.gid), e.map(|e| e.name.clone()))
            }
            Err(_) if wanted.is_empty() => (0, 0, Some("root".to_string())),
            Err(_) => {
                let e = entries.iter().find(|e| e.name == wanted).ok_or_else(|| UserError::NoSuchUser(wanted.into()))?;
                (e.uid, e.gid, Some(e.name.clone()))
            }
        }
    };
    let group_list = &accounts.groups;
    if uid.is_none()
        && username.is_empty()
        && let Some(g) = group_part.filter(|g| !g.is_empty())
    {
        r_gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_list.iter().find(|(n, _, _)| n == g).map(|(_, id, _)| *id).ok_or_else(|| UserError::NoSuchGroup(g.into()))?,
        };
    }
    if let Some(g) = gid {
        r_gid = g as u32;
    }
    let mut additional: Vec<u32> = match &name {
        Some(n) => group_list.iter().filter(|(_, _, m)| m.contains(n)).map(|(_, id, _)| *id).collect(),
        None => Vec::new(),
    };
    additional.extend(supplemental.iter().map(|g| *g as u32));
    additional.sort_unstable();
    additional.dedup();
    Ok(ResolvedUser { uid: r_uid, gid: r_gid, additional_gids: additional })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nweb:x:1000:1000::/home/web:/bin/sh\n").unwrap();
        std::fs::write(t.path().join("etc/group"), "root:x:0:\nweb:x:1000:\naudio:x:29:web\nvideo:x:44:other\n").unwrap();
        t
    }

    #[test]
    fn names_numbers_and_overrides() {
        let r = rootfs();
        let a = Accounts::read(r.path());
        assert_eq!(resolve(&a, "", None, None, "", &[]).unwrap(), ResolvedUser { uid: 0, gid: 0, additional_gids: vec![] });
        assert_eq!(resolve(&a, "web", None, None, "", &[]).unwrap(), ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![29] });
        assert_eq!(resolve(&a, "1000:44", None, None, "", &[]).unwrap().gid, 44);
        assert_eq!(resolve(&a, "web:video", None, None, "", &[]).unwrap().gid, 44);
        assert_eq!(resolve(&a, "web", Some(2000), None, "", &[7]).unwrap(), ResolvedUser { uid: 2000, gid: 0, additional_gids: vec![7] });
        assert_eq!(resolve(&a, "", None, Some(5), "web", &[]).unwrap(), ResolvedUser { uid: 1000, gid: 5, additional_gids: vec![29] });
        assert_eq!(resolve(&a, "nobody", None, None, "", &[]), Err(UserError::NoSuchUser("nobody".into())));
        assert_eq!(resolve(&a, "web:nogroup", None, None, "", &[]), Err(UserError::NoSuchGroup("nogroup".into())));
    }

    #[test]
    fn accounts_are_kept_per_image_within_bounds() {
        let r = rootfs();
        let cache = AccountsCache::default();
        assert!(cache.get("sha256:a").is_none());
        cache.insert("sha256:a", Arc::new(Accounts::read(r.path())));
        let kept = cache.get("sha256:a").expect("kept");
        assert_eq!(resolve(&kept, "web", None, None, "", &[]).unwrap().uid, 1000);
        for n in 0..2 * super::super::by_image::CACHED_IMAGES {
            cache.insert(&format!("sha256:{n}"), Arc::new(Accounts::read(r.path())));
        }
        assert_eq!(cache.by_image.len(), super::super::by_image::CACHED_IMAGES);
        // An image with an absurd number of accounts is read each time, not kept.
        let big = tempfile::tempdir().unwrap();
        std::fs::create_dir(big.path().join("etc")).unwrap();
        std::fs::write(
            big.path().join("etc/passwd"),
            (0..=CACHED_ENTRIES).map(|i| format!("u{i}:x:{i}:{i}::/:/bin/sh\n")).collect::<String>(),
        )
        .unwrap();
        cache.insert("sha256:big", Arc::new(Accounts::read(big.path())));
        assert!(cache.get("sha256:big").is_none());
    }

    #[test]
    fn hostile_account_files_hold_no_users() {
        use std::os::unix::fs::symlink;
        // /etc/passwd -> the host's /etc/passwd (which has root and usually daemon users):
        // resolved inside the image, where it does not exist.
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        symlink("/etc/passwd", t.path().join("etc/group")).unwrap();
        symlink("../../../../../../etc/passwd", t.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve(&Accounts::read(t.path()), "daemon", None, None, "", &[]), Err(UserError::NoSuchUser("daemon".into())));
        // /etc -> / : the image's own root, which has no etc/passwd of its own.
        let t = tempfile::tempdir().unwrap();
        symlink("/", t.path().join("etc")).unwrap();
        assert_eq!(resolve(&Accounts::read(t.path()), "daemon", None, None, "", &[]), Err(UserError::NoSuchUser("daemon".into())));
        // /etc/passwd -> /dev/zero, a FIFO, or a huge file: no hang, no unbounded read.
        for make in [
            (|p: &Path| symlink("/dev/zero", p).unwrap()) as fn(&Path),
            |p: &Path| rustix::fs::mkfifoat(rustix::fs::CWD, p, rustix::fs::Mode::from_raw_mode(0o644)).unwrap(),
            |p: &Path| std::fs::write(p, "web:x:1000:1000::/:/bin/sh\n".repeat(100_000)).unwrap(),
        ] {
            let t = tempfile::tempdir().unwrap();
            std::fs::create_dir(t.path().join("etc")).unwrap();
            make(&t.path().join("etc/passwd"));
            assert_eq!(resolve(&Accounts::read(t.path()), "web", None, None, "", &[]), Err(UserError::NoSuchUser("web".into())));
            assert_eq!(resolve(&Accounts::read(t.path()), "1000", None, None, "", &[]).unwrap().gid, 0);
        }
    }
}
