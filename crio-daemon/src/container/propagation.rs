//! Mount propagation checks for bind mounts: `rshared` only propagates if the host path sits on
//! a shared mount, `rslave` if on a shared or slave one. Asking for either on a private mount
//! would silently propagate nothing, so it is refused with the mount named (as CRI-O does).

use std::path::Path;

/// Checks `host_path` (absolute, existing) against `/proc/self/mountinfo` text.
pub fn check(host_path: &Path, propagation: &str, mountinfo: &str) -> Result<(), String> {
    let needs_shared = match propagation {
        "rshared" => true,
        "rslave" => false,
        _ => return Ok(()),
    };
    let path = host_path.canonicalize().unwrap_or_else(|_| host_path.to_path_buf());
    // The mount that holds the path: the last listed among the longest matching mount points
    // (later mounts stack over earlier ones).
    let mut best: Option<Vec<&str>> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else { continue };
        if path.starts_with(point) && best.as_ref().is_none_or(|b| point.len() >= b[4].len()) {
            best = Some(fields);
        }
    }
    let fields = best.ok_or_else(|| format!("no mount holds {}", host_path.display()))?;
    let point = fields[4];
    // Optional fields sit between the mount options (6th) and the "-" separator.
    let optional = || fields.iter().skip(6).take_while(|f| **f != "-");
    let shared = optional().any(|f| f.starts_with("shared:"));
    let slave = optional().any(|f| f.starts_with("master:"));
    match (needs_shared, shared, slave) {
        (true, true, _) | (false, true, _) | (false, _, true) => Ok(()),
        (true, ..) => Err(format!("{} is on mount {point}, which is not shared; rshared needs a shared mount", host_path.display())),
        (false, ..) => {
            Err(format!("{} is on mount {point}, which is neither shared nor slave; rslave needs one of them", host_path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:40 / /mnt/shared rw shared:7 - tmpfs tmpfs rw
41 27 0:41 / /mnt/slave rw master:7 - tmpfs tmpfs rw
42 40 0:42 / /mnt/shared/private rw - tmpfs tmpfs rw
";

    #[test]
    fn the_innermost_mount_decides() {
        let p = |s: &str| Path::new(s).to_path_buf();
        assert!(check(&p("/mnt/shared/data"), "rshared", INFO).is_ok());
        assert!(check(&p("/mnt/shared/data"), "rslave", INFO).is_ok());
        assert!(check(&p("/mnt/slave/x"), "rslave", INFO).is_ok());
        let err = check(&p("/mnt/slave/x"), "rshared", INFO).unwrap_err();
        assert!(err.contains("/mnt/slave") && err.contains("not shared"), "{err}");
        assert!(check(&p("/mnt/shared/private/x"), "rslave", INFO).unwrap_err().contains("neither shared nor slave"));
        assert!(check(&p("/var/lib/x"), "rshared", INFO).is_err());
        assert!(check(&p("/var/lib/x"), "private", INFO).is_ok());
        assert!(check(&p("/mnt/sharedish"), "rshared", INFO).is_err(), "a path prefix is not a mount");
    }
}
