//! Linux security modules for containers, as CRI-O applies them: an AppArmor profile where the
//! host has AppArmor (RuntimeDefault is the configured `apparmor_profile`, Localhost a profile
//! the host has loaded, privileged containers unconfined), SELinux process and mount labels
//! where the host has SELinux. A host with neither runs containers unconfined and says so once
//! at start. Detection reads the host's /sys, a parameter, so tests use a temp tree.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a container asks of AppArmor (CRI's SecurityProfile or the older annotation form).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppArmorRequest {
    /// Nothing asked: RuntimeDefault, as CRI-O.
    #[default]
    Unset,
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

/// SELinux options of a container (or its pod, for what the container leaves empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeLinuxOptions {
    pub user: String,
    pub role: String,
    pub typ: String,
    pub level: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LsmError {
    #[error("AppArmor profile {name:?} is not loaded on this host (see {profiles})")]
    NotLoaded { name: String, profiles: PathBuf },
}

/// The host's security modules, detected once at start.
#[derive(Debug, Clone, Default)]
pub struct HostLsm {
    /// `<securityfs>/apparmor/profiles` when AppArmor is enabled.
    apparmor_profiles: Option<PathBuf>,
    selinux: bool,
}

/// What the OCI spec gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub apparmor_profile: Option<String>,
    pub process_label: Option<String>,
    pub mount_label: Option<String>,
}

impl HostLsm {
    pub fn detect(sys: &Path) -> HostLsm {
        let enabled = std::fs::read_to_string(sys.join("module/apparmor/parameters/enabled")).is_ok_and(|s| s.trim() == "Y");
        let profiles = sys.join("kernel/security/apparmor/profiles");
        let host = HostLsm {
            apparmor_profiles: (enabled && profiles.exists()).then_some(profiles),
            selinux: sys.join("fs/selinux/enforce").exists(),
        };
        if host.apparmor_profiles.is_none() && !host.selinux {
            tracing::info!("this host has neither AppArmor nor SELinux enabled: containers run unconfined by them, as with CRI-O");
        }
        host
    }

    pub fn apparmor(&self) -> bool {
        self.apparmor_profiles.is_some()
    }

    pub fn selinux(&self) -> bool {
        self.selinux
    }

    /// The labels for a container; `default_profile` is CRI-O's `apparmor_profile`, `pod_id`
    /// picks the pod's MCS categories when no level is asked for. Blocking (reads securityfs).
    pub fn labels(
        &self,
        apparmor: &AppArmorRequest,
        selinux: &SeLinuxOptions,
        privileged: bool,
        default_profile: &str,
        pod_id: &str,
    ) -> Result<Labels, LsmError> {
        let mut out = Labels::default();
        if let Some(profiles) = &self.apparmor_profiles {
            let name = match apparmor {
                _ if privileged => None,
                AppArmorRequest::Unconfined => None,
                AppArmorRequest::Unset | AppArmorRequest::RuntimeDefault => Some(default_profile.to_string()),
                AppArmorRequest::Localhost(name) => Some(name.clone()),
            };
            if let Some(name) = name {
                if !loaded(profiles, &name) {
                    return Err(LsmError::NotLoaded { name, profiles: profiles.clone() });
                }
                out.apparmor_profile = Some(name);
            }
        }
        if self.selinux && !privileged {
            let or = |v: &str, d: &str| if v.is_empty() { d.to_string() } else { v.to_string() };
            let level = if selinux.level.is_empty() { pod_level(pod_id) } else { selinux.level.clone() };
            out.process_label = Some(format!(
                "{}:{}:{}:{level}",
                or(&selinux.user, "system_u"),
                or(&selinux.role, "system_r"),
                or(&selinux.typ, "container_t")
            ));
            out.mount_label = Some(format!("system_u:object_r:container_file_t:{level}"));
        }
        Ok(out)
    }
}

/// Whether `name` is among the loaded profiles (`name (mode)` per line).
fn loaded(profiles: &Path, name: &str) -> bool {
    std::fs::read_to_string(profiles).is_ok_and(|text| text.lines().any(|l| l.rsplit_once(" (").map_or(l, |(n, _)| n) == name))
}

/// Two MCS categories per pod, from its id, so pods' containers are apart from other pods'.
fn pod_level(pod_id: &str) -> String {
    let h = pod_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let (a, b) = ((h % 1024) as u32, ((h >> 20) % 1023) as u32);
    let b = if b >= a { b + 1 } else { b };
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    format!("s0:c{lo},c{hi}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(apparmor: bool, selinux: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        std::fs::create_dir_all(p.join("module/apparmor/parameters")).unwrap();
        std::fs::write(p.join("module/apparmor/parameters/enabled"), if apparmor { "Y\n" } else { "N\n" }).unwrap();
        std::fs::create_dir_all(p.join("kernel/security/apparmor")).unwrap();
        std::fs::write(p.join("kernel/security/apparmor/profiles"), "crio-default (enforce)\nmy-app (complain)\n").unwrap();
        if selinux {
            std::fs::create_dir_all(p.join("fs/selinux")).unwrap();
            std::fs::write(p.join("fs/selinux/enforce"), "1").unwrap();
        }
        t
    }

    #[test]
    fn apparmor_profiles_as_crio_sets_them() {
        let t = host(true, false);
        let h = HostLsm::detect(t.path());
        let none = SeLinuxOptions::default();
        let label = |r: AppArmorRequest, privileged| h.labels(&r, &none, privileged, "crio-default", "pod").map(|l| l.apparmor_profile);
        assert_eq!(label(AppArmorRequest::Unset, false), Ok(Some("crio-default".into())));
        assert_eq!(label(AppArmorRequest::RuntimeDefault, false), Ok(Some("crio-default".into())));
        assert_eq!(label(AppArmorRequest::Localhost("my-app".into()), false), Ok(Some("my-app".into())));
        assert_eq!(label(AppArmorRequest::Unconfined, false), Ok(None));
        assert_eq!(label(AppArmorRequest::RuntimeDefault, true), Ok(None), "privileged: unconfined");
        assert!(matches!(label(AppArmorRequest::Localhost("nope".into()), false), Err(LsmError::NotLoaded { .. })));
        // Loaded but disabled, or absent: nothing set.
        let off = HostLsm::detect(host(false, false).path());
        assert_eq!(off.labels(&AppArmorRequest::Localhost("nope".into()), &none, false, "crio-default", "p"), Ok(Labels::default()));
    }

    #[test]
    fn selinux_labels_with_pod_categories() {
        let h = HostLsm::detect(host(false, true).path());
        let l = h.labels(&AppArmorRequest::Unset, &SeLinuxOptions::default(), false, "crio-default", "pod-a").unwrap();
        let process = l.process_label.unwrap();
        assert!(process.starts_with("system_u:system_r:container_t:s0:c"), "{process}");
        let level = process.splitn(4, ':').nth(3).unwrap().to_string();
        assert_eq!(l.mount_label.unwrap(), format!("system_u:object_r:container_file_t:{level}"));
        let again = h.labels(&AppArmorRequest::Unset, &SeLinuxOptions::default(), false, "crio-default", "pod-a").unwrap();
        assert_eq!(again.process_label.unwrap(), process, "the same pod, the same categories");
        let asked = SeLinuxOptions { typ: "spc_t".into(), level: "s0:c1,c2".into(), ..Default::default() };
        let l = h.labels(&AppArmorRequest::Unset, &asked, false, "crio-default", "pod-a").unwrap();
        assert_eq!(l.process_label.unwrap(), "system_u:system_r:spc_t:s0:c1,c2");
        assert_eq!(h.labels(&AppArmorRequest::Unset, &asked, true, "x", "p").unwrap(), Labels::default(), "privileged: unlabelled");
        for id in ["a", "b", "c", "0123456789abcdef"] {
            let lv = pod_level(id);
            let (lo, hi) = lv.trim_start_matches("s0:c").split_once(",c").unwrap();
            assert!(lo.parse::<u32>().unwrap() < hi.parse::<u32>().unwrap() && hi.parse::<u32>().unwrap() < 1024, "{lv}");
        }
    }
}
