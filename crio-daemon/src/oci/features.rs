//! What a runtime handler can do, probed once at start: `<runtime> features` (the OCI
//! runtime-spec's features document, runc 1.1+) lists the mount options it knows, and the
//! kernel must have `mount_setattr(2)` (5.12+) for recursive read-only mounts. A runtime
//! without the command (crun 1.8) or a probe that fails reads as "cannot".

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a runtime may take to describe itself before it counts as "cannot".
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// Mounts read-only recursively ("rro"), so submounts of a read-only volume are too.
    pub recursive_read_only: bool,
}

impl Features {
    /// Asks the runtime at `path` and reads the kernel's `release`.
    pub fn probe(path: &Path, kernel_release: &str) -> Features {
        let options = mount_options(path).unwrap_or_default();
        Features { recursive_read_only: options.iter().any(|o| o == "rro") && kernel_at_least(kernel_release, (5, 12)) }
    }
}

/// The `mountOptions` of the runtime's features document; `None` when it has none.
fn mount_options(path: &Path) -> Option<Vec<String>> {
    let mut child = Command::new(path).arg("features").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    let started = Instant::now();
    // Bounded: a hung runtime must not stop the daemon from starting.
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok().filter(|o| o.status.success())?;
    parse(&out.stdout)
}

fn parse(document: &[u8]) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "mountOptions", default)]
        mount_options: Vec<String>,
    }
    serde_json::from_slice::<Doc>(document).ok().map(|d| d.mount_options)
}

/// Whether a kernel release like "6.18.0-1-amd64" is at least `min` (major, minor).
fn kernel_at_least(release: &str, min: (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_mount_options_of_a_features_document() {
        let doc = br#"{"ociVersionMin":"1.0.0","mountOptions":["bind","rro","ro"],"hooks":["prestart"]}"#;
        assert_eq!(parse(doc).unwrap(), ["bind", "rro", "ro"]);
        assert_eq!(parse(br#"{"ociVersionMin":"1.0.0"}"#).unwrap(), Vec::<String>::new());
        assert!(parse(b"flag provided but not defined: -features").is_none());
    }

    #[test]
    fn kernel_releases() {
        assert!(kernel_at_least("6.18.0-1-amd64", (5, 12)));
        assert!(kernel_at_least("5.12.0", (5, 12)));
        assert!(!kernel_at_least("5.11.22-generic", (5, 12)));
        assert!(!kernel_at_least("4.19.0", (5, 12)));
        assert!(!kernel_at_least("", (5, 12)));
    }

    #[test]
    fn a_runtime_without_the_command_cannot() {
        assert_eq!(Features::probe(Path::new("/bin/false"), "6.18.0"), Features::default());
        assert_eq!(Features::probe(Path::new("/nonexistent/runc"), "6.18.0"), Features::default());
    }
}
