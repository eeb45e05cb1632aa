//! Names under the systemd cgroup manager. The kubelet then passes a slice name as
//! `cgroup_parent` (`kubepods-burstable-pod<uid>.slice`), the OCI runtime is told
//! `<slice>:crio:<id>` and asks systemd for a `crio-<id>.scope` in that slice, and systemd
//! nests slices by their dash-separated prefixes. The daemon reads stats from the resulting
//! path and never makes or removes slices itself.

use std::path::Path;

/// The slice of pods that name none (CRI-O's default under systemd).
pub const DEFAULT_SLICE: &str = "system.slice";

/// Whether systemd runs as init (its own test: sd_booted).
pub fn running(run_systemd_system: &Path) -> bool {
    run_systemd_system.is_dir()
}

/// The cgroup path of `slice`: `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`.
pub fn slice_path(slice: &str) -> Result<String, String> {
    let name = slice.strip_suffix(".slice").ok_or_else(|| format!("{slice:?} is not a systemd slice (no .slice suffix)"))?;
    if slice == "-.slice" {
        return Ok("/".into());
    }
    if name.is_empty() || name.contains('/') || name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err(format!("{slice:?} is not a valid systemd slice name"));
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// The runtime's `cgroupsPath` for a container in `slice`.
pub fn cgroups_path(slice: &str, id: &str) -> String {
    format!("{slice}:crio:{id}")
}

/// Where that container's cgroup is: its scope below the slice's path.
pub fn scope_path(slice: &str, id: &str) -> Result<String, String> {
    let parent = slice_path(slice)?;
    Ok(format!("{}/crio-{id}.scope", parent.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_nest_by_prefix() {
        assert_eq!(slice_path("system.slice").unwrap(), "/system.slice");
        assert_eq!(
            slice_path("kubepods-burstable-pod1234.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"
        );
        assert_eq!(slice_path("-.slice").unwrap(), "/");
        assert_eq!(scope_path("kubepods.slice", "abc").unwrap(), "/kubepods.slice/crio-abc.scope");
        assert_eq!(scope_path("-.slice", "abc").unwrap(), "/crio-abc.scope");
        assert_eq!(cgroups_path("kubepods.slice", "abc"), "kubepods.slice:crio:abc");
        for bad in ["/kubepods/burstable", "kubepods", "a--b.slice", "-a.slice", "a-.slice", "a/b.slice", ".slice"] {
            assert!(slice_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn systemd_is_detected_by_its_run_directory() {
        let t = tempfile::tempdir().unwrap();
        assert!(!running(&t.path().join("system")));
        std::fs::create_dir(t.path().join("system")).unwrap();
        assert!(running(&t.path().join("system")));
    }
}
