//! Where a pod start's time goes, measured rather than estimated: both runtimes call runc and
//! the CNI plugins through small static wrappers that time each call (monotonic clock, around
//! spawn and wait of the real binary) and append one line per call to a log. A pod start's
//! share of runc create and of CNI ADD is read from the lines it added; the rest is the
//! runtime's own work (and, for containerd, its shim).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The wrapped binaries and the log they write.
pub struct Wrappers {
    pub runc: PathBuf,
    /// A CNI plugin directory holding a wrapper for each plugin the runtimes call.
    pub cni_dir: PathBuf,
    pub log: PathBuf,
}

/// Plugins the bench's network uses: loopback and the conflist's two, with host-local (called
/// by bridge, so its time is inside bridge's).
const PLUGINS: [&str; 4] = ["loopback", "bridge", "portmap", "host-local"];

const WRAPPER_C: &str = r#"#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
static long long now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
int main(int argc, char **argv) {
  (void)argc;
  long long a = now();
  pid_t pid;
  argv[0] = REAL;
  if (posix_spawn(&pid, REAL, NULL, NULL, argv, environ) != 0) return 127;
  int st = 0;
  while (waitpid(pid, &st, 0) < 0) {}
  long long b = now();
  char line[1024];
  const char *cmd = getenv("CNI_COMMAND");
  int n = snprintf(line, 900, "%s\t%s\t%lld\t%lld\t", NAME, cmd ? cmd : "-", a, b);
  for (int i = 1; argv[i] && n < 1000; i++) n += snprintf(line + n, sizeof line - n - 1, "%s ", argv[i]);
  if (n > 1022) n = 1022;
  line[n++] = '\n';
  int fd = open(LOG, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) { (void)!write(fd, line, n); close(fd); }
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  return 128 + WTERMSIG(st);
}
"#;

fn build_one(src: &Path, out: &Path, name: &str, real: &str, log: &Path) {
    let ok = std::process::Command::new("gcc")
        .args(["-static", "-O2"])
        .arg(format!("-DNAME=\"{name}\""))
        .arg(format!("-DREAL=\"{real}\""))
        .arg(format!("-DLOG=\"{}\"", log.display()))
        .arg("-o")
        .arg(out)
        .arg(src)
        .status()
        .expect("gcc");
    assert!(ok.success(), "building the timing wrapper for {real}");
}

/// Builds the wrappers under `dir` (runc and the CNI plugins found in /usr/lib/cni).
pub fn build(dir: &Path) -> Wrappers {
    let src = dir.join("timed.c");
    std::fs::write(&src, WRAPPER_C).unwrap();
    let log = dir.join("calls.log");
    let runc = dir.join("runc-timed");
    build_one(&src, &runc, "runc", "/usr/sbin/runc", &log);
    let cni_dir = dir.join("cni-timed");
    std::fs::create_dir_all(&cni_dir).unwrap();
    for p in PLUGINS {
        build_one(&src, &cni_dir.join(p), p, &format!("/usr/lib/cni/{p}"), &log);
    }
    Wrappers { runc, cni_dir, log }
}

/// One timed call.
struct Call {
    name: String,
    cni_command: String,
    start: u64,
    end: u64,
    args: Vec<String>,
}

fn parse(line: &str) -> Option<Call> {
    let mut f = line.splitn(5, '\t');
    Some(Call {
        name: f.next()?.into(),
        cni_command: f.next()?.into(),
        start: f.next()?.parse().ok()?,
        end: f.next()?.parse().ok()?,
        args: f.next().unwrap_or_default().split_whitespace().map(String::from).collect(),
    })
}

/// The log's length now: what a pod start adds is read from there on.
pub fn mark(w: &Wrappers) -> u64 {
    std::fs::metadata(&w.log).map(|m| m.len()).unwrap_or(0)
}

/// Time in `runc create` and in CNI ADD (top-level plugins) since `from`, and in both at once
/// (their union, for "the rest").
pub struct Spent {
    pub runc_create: Duration,
    pub cni_add: Duration,
    pub either: Duration,
}

pub fn since(w: &Wrappers, from: u64) -> Spent {
    use std::io::{Read, Seek};
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(&w.log) {
        let _ = f.seek(std::io::SeekFrom::Start(from));
        let _ = f.read_to_string(&mut text);
    }
    let calls: Vec<Call> = text.lines().filter_map(parse).collect();
    let runc: Vec<(u64, u64)> =
        calls.iter().filter(|c| c.name == "runc" && c.args.iter().any(|a| a == "create")).map(|c| (c.start, c.end)).collect();
    // host-local runs inside bridge: only the plugins a runtime calls itself.
    let cni: Vec<(u64, u64)> =
        calls.iter().filter(|c| c.cni_command == "ADD" && c.name != "host-local").map(|c| (c.start, c.end)).collect();
    let (ns, union) = (Duration::from_nanos, crio_benches::union_length);
    Spent { runc_create: ns(union(runc.clone())), cni_add: ns(union(cni.clone())), either: ns(union([runc, cni].concat())) }
}
