//! Pressure stall information (PSI) of a cgroup: `cpu.pressure`, `memory.pressure` and
//! `io.pressure` of its v2 directory (on hybrid hosts, the container's cgroup in the unified
//! hierarchy). The CRI types this daemon speaks have no PSI fields, so it is reported in
//! ContainerStatus' verbose info and the HTTP API.

use std::path::Path;

use serde::Serialize;

/// One line of a pressure file: the share of time some (or all) tasks stalled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stall {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Microseconds stalled in total.
    pub total: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Resource {
    pub some: Stall,
    /// Absent for CPU on kernels that do not track it.
    pub full: Option<Stall>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pressure {
    pub cpu: Option<Resource>,
    pub memory: Option<Resource>,
    pub io: Option<Resource>,
}

/// PSI of the v2 cgroup at `dir`; `None` when the kernel exposes none there.
pub fn read(dir: &Path) -> Option<Pressure> {
    let one = |file: &str| std::fs::read_to_string(dir.join(file)).ok().and_then(|t| parse(&t));
    let p = Pressure { cpu: one("cpu.pressure"), memory: one("memory.pressure"), io: one("io.pressure") };
    (p != Pressure::default()).then_some(p)
}

fn parse(text: &str) -> Option<Resource> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next()?;
        let mut stall = Stall::default();
        for kv in words {
            let (k, v) = kv.split_once('=')?;
            match k {
                "avg10" => stall.avg10 = v.parse().ok()?,
                "avg60" => stall.avg60 = v.parse().ok()?,
                "avg300" => stall.avg300 = v.parse().ok()?,
                "total" => stall.total = v.parse().ok()?,
                _ => {}
            }
        }
        match kind {
            "some" => some = Some(stall),
            "full" => full = Some(stall),
            _ => {}
        }
    }
    Some(Resource { some: some?, full })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_files() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("cpu.pressure"),
            "some avg10=1.50 avg60=0.20 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        std::fs::write(t.path().join("memory.pressure"), "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n").unwrap();
        let p = read(t.path()).unwrap();
        let cpu = p.cpu.unwrap();
        assert_eq!((cpu.some.avg10, cpu.some.total, cpu.full.unwrap().total), (1.5, 12345, 0));
        assert_eq!(p.memory.unwrap().full, None);
        assert_eq!(p.io, None);
        assert_eq!(read(&t.path().join("missing")), None);
        assert_eq!(parse("some avg10=x"), None);
    }
}
