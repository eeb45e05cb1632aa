//! Changes to kernel files (sysfs, procfs, cgroupfs) as data: the path, the value before and
//! the value to write. Applying stops at the first failure and puts back what it had written;
//! restoring writes the originals in reverse order. The list is what gets persisted so a
//! restart can undo what a crashed daemon left.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub path: PathBuf,
    pub original: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to write {value:?} to {path}")]
pub struct WriteError {
    pub path: PathBuf,
    pub value: String,
    #[source]
    pub source: io::Error,
}

/// The value of a one-line kernel file, without its newline.
pub fn read(path: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim_end().to_string())
}

fn write(path: &Path, value: &str) -> Result<(), WriteError> {
    std::fs::write(path, value).map_err(|source| WriteError { path: path.into(), value: value.into(), source })
}

/// A change of `path` to `value`, remembering what it holds now; `None` when it already does.
pub fn change(path: PathBuf, value: impl Into<String>) -> io::Result<Option<Change>> {
    let original = read(&path)?;
    let value = value.into();
    Ok((original != value).then_some(Change { path, original, value }))
}

/// Writes every change in order; on a failure, puts back those already written.
pub fn apply(changes: &[Change]) -> Result<(), WriteError> {
    for (i, c) in changes.iter().enumerate() {
        if let Err(e) = write(&c.path, &c.value) {
            let _ = restore(&changes[..i]);
            return Err(e);
        }
    }
    Ok(())
}

/// Writes the originals back, last change first; keeps going past failures and returns them.
pub fn restore(changes: &[Change]) -> Vec<WriteError> {
    changes.iter().rev().filter_map(|c| write(&c.path, &c.original).err()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_apply_leaves_nothing_changed() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::write(&a, "1\n").unwrap();
        std::fs::write(&b, "x\n").unwrap();
        let ca = change(a.clone(), "0").unwrap().unwrap();
        assert!(change(b.clone(), "x").unwrap().is_none(), "already so: nothing to change");
        let missing = Change { path: t.path().join("no/such"), original: String::new(), value: "1".into() };
        let err = apply(&[ca.clone(), missing]).unwrap_err();
        assert!(err.to_string().contains("no/such"));
        assert_eq!(read(&a).unwrap(), "1", "the first write was undone");
        apply(std::slice::from_ref(&ca)).unwrap();
        assert_eq!(read(&a).unwrap(), "0");
        assert!(restore(&[ca]).is_empty());
        assert_eq!(read(&a).unwrap(), "1");
    }
}
