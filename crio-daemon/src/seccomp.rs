//! Seccomp for containers: `RuntimeDefault` is a built-in allow list in the spirit of the
//! profile Docker, containerd and CRI-O ship (everything a normal workload calls; nothing that
//! changes the node: no mount, namespaces, modules, kexec, clock or keyring administration,
//! BPF, perf, ptrace of others...), widened, as moby's profile is, by what each capability the
//! container was granted exists to do (CAP_SYS_ADMIN's sethostname, mount and namespaces,
//! CAP_SYS_PTRACE's ptrace...), so granting a capability is not undone by the filter.
//! `Unconfined` is none, `Localhost` reads an OCI-format profile from the node. A privileged
//! container runs unconfined, as Kubernetes expects.

use std::path::Path;

use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxSeccomp};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Profile {
    #[default]
    RuntimeDefault,
    Unconfined,
    /// An absolute path on the node.
    Localhost(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile {path} must be an absolute path")]
    Relative { path: String },
    #[error("failed to read seccomp profile {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp profile {path} is not a valid OCI seccomp profile: {why}")]
    Invalid { path: String, why: String },
}

/// Syscalls a container may make under RuntimeDefault.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_mempolicy",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_mempolicy",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    "arch_prctl",
    "modify_ldt",
    "personality",
];

/// Syscalls allowed only with a capability, as moby's profile has them: what the capability
/// exists to permit. Without it the kernel would refuse most of them anyway; the filter keeps
/// the attack surface of the rest closed.
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (Capability::SysModule, &["delete_module", "init_module", "finit_module"]),
    (Capability::SysPacct, &["acct"]),
    (Capability::SysPtrace, &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"]),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (Capability::SysTime, &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    (Capability::SysTtyConfig, &["vhangup"]),
    (Capability::SysNice, &["mbind", "set_mempolicy_home_node"]),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// The namespace flags of clone(2) and unshare(2) (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET): without CAP_SYS_ADMIN both are allowed only with none of them set.
const NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// The system-call ABIs beside the native one that RuntimeDefault filters cover. Each one
/// listed costs the container's init a libseccomp compile of every rule again (about 8 ms of
/// CPU per container for x32, measured), so one the kernel cannot run is left out: x32, absent
/// from most distributions' kernels (`CONFIG_X86_X32_ABI` unset or `syscall.x32=N`). There its
/// calls could never run; with it left out the filter kills a caller of one (libseccomp's
/// bad-architecture action, as systemd's `SystemCallArchitectures=native`) instead of
/// answering EPERM or ENOSYS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abis {
    pub x32: bool,
}

impl Abis {
    /// Every ABI of the architecture, as Docker's, containerd's and CRI-O's profiles list them.
    pub const ALL: Abis = Abis { x32: true };

    /// What this kernel runs, probed once. A daemon already under a seccomp filter (its
    /// `<proc>/self/status` says so) does not probe, since a filter without x32 would kill it:
    /// it keeps every ABI.
    pub fn detect(proc: &Path) -> Abis {
        let filtered = std::fs::read_to_string(proc.join("self/status")).map(|s| under_filter(&s)).unwrap_or(true);
        Abis { x32: filtered || kernel_runs_x32() }
    }
}

#[cfg(target_arch = "x86_64")]
fn kernel_runs_x32() -> bool {
    crate::sys::x32_syscalls_run()
}

/// x32 is an x86_64 ABI; elsewhere the field is not read.
#[cfg(not(target_arch = "x86_64"))]
fn kernel_runs_x32() -> bool {
    false
}

/// Whether `/proc/<pid>/status` text shows a seccomp mode other than 0 (none); unreadable or
/// missing counts as filtered, the safe answer.
fn under_filter(status: &str) -> bool {
    status.lines().find_map(|l| l.strip_prefix("Seccomp:")).is_none_or(|v| v.trim() != "0")
}

fn architectures(abis: Abis) -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" if abis.x32 => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => vec![],
    }
}

/// The RuntimeDefault rules for a container holding `caps`, for the ABIs in `abis`.
fn runtime_default(caps: &HashSet<Capability>, abis: Abis) -> serde_json::Value {
    let mut granted: Vec<&str> =
        BY_CAPABILITY.iter().filter(|(c, _)| caps.contains(c)).flat_map(|(_, names)| names.iter().copied()).collect();
    granted.sort_unstable();
    granted.dedup();
    let mut syscalls = vec![json!({"names": ALLOWED, "action": "SCMP_ACT_ALLOW"})];
    if !granted.is_empty() {
        syscalls.push(json!({"names": granted, "action": "SCMP_ACT_ALLOW"}));
    }
    if caps.contains(&Capability::SysAdmin) {
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ALLOW"}));
    } else {
        // Threads and processes, but no new namespaces. The flags are clone's first
        // argument on x86_64 and arm64 alike (s390x, which swaps them, is not built for).
        let no_namespaces = [json!({"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"})];
        syscalls.push(json!({"names": ["clone", "unshare"], "action": "SCMP_ACT_ALLOW", "args": no_namespaces}));
        // glibc falls back to clone when clone3 says ENOSYS; clone3's flags live in memory
        // seccomp cannot inspect.
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": architectures(abis),
        "syscalls": syscalls,
    })
}

/// The OCI seccomp section for `profile` and a container holding `caps`; `None` means
/// unconfined. `abis` shapes RuntimeDefault only: a Localhost profile lists its own.
pub fn section(profile: &Profile, privileged: bool, caps: &HashSet<Capability>, abis: Abis) -> Result<Option<LinuxSeccomp>, SeccompError> {
    if privileged {
        return Ok(None);
    }
    let value = match profile {
        Profile::Unconfined => return Ok(None),
        Profile::RuntimeDefault => runtime_default(caps, abis),
        Profile::Localhost(path) => {
            if !Path::new(path).is_absolute() {
                return Err(SeccompError::Relative { path: path.clone() });
            }
            let bytes = read_profile(Path::new(path)).map_err(|source| SeccompError::Read { path: path.clone(), source })?;
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| SeccompError::Invalid { path: path.clone(), why: e.to_string() })?;
            // Docker-style conditional rules would be applied unconditionally; refuse them.
            let conditional =
                v["syscalls"].as_array().is_some_and(|s| s.iter().any(|r| r.get("includes").is_some() || r.get("excludes").is_some()));
            if conditional {
                let why = "rules with includes/excludes are not supported".to_string();
                return Err(SeccompError::Invalid { path: path.clone(), why });
            }
            v
        }
    };
    let origin = match profile {
        Profile::Localhost(p) => p.clone(),
        _ => "runtime/default".into(),
    };
    serde_json::from_value(value).map(Some).map_err(|e| SeccompError::Invalid { path: origin, why: e.to_string() })
}

/// Real profiles are tens of KiB; a request naming a huge file or a device gets an error, not
/// an unbounded read.
const MAX_PROFILE: u64 = 1 << 20;

fn read_profile(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut out = Vec::new();
    file.take(MAX_PROFILE + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_PROFILE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {MAX_PROFILE} bytes")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names allowed unconditionally, and names allowed only with argument conditions.
    fn allowed(caps: &[Capability]) -> (Vec<String>, Vec<String>) {
        let s = section(&Profile::RuntimeDefault, false, &caps.iter().copied().collect(), Abis::ALL).unwrap().unwrap();
        let (mut plain, mut conditional) = (Vec::new(), Vec::new());
        for rule in s.syscalls().as_ref().unwrap() {
            if rule.action() != oci_spec::runtime::LinuxSeccompAction::ScmpActAllow {
                continue;
            }
            let into = if rule.args().as_ref().is_some_and(|a| !a.is_empty()) { &mut conditional } else { &mut plain };
            into.extend(rule.names().iter().cloned());
        }
        (plain, conditional)
    }

    #[test]
    fn an_abi_the_kernel_lacks_is_left_out_of_runtime_default_only() {
        let arches = |abis| section(&Profile::RuntimeDefault, false, &HashSet::new(), abis).unwrap().unwrap().architectures().clone();
        let (all, no_x32) = (arches(Abis::ALL).unwrap_or_default(), arches(Abis { x32: false }).unwrap_or_default());
        if cfg!(target_arch = "x86_64") {
            use oci_spec::runtime::Arch;
            assert_eq!(all, [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]);
            assert_eq!(no_x32, [Arch::ScmpArchX86_64, Arch::ScmpArchX86]);
        }
        // A node's own profile keeps what it lists.
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("p.json");
        std::fs::write(&p, r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X32"],"syscalls":[]}"#).unwrap();
        let s = section(&Profile::Localhost(p.display().to_string()), false, &HashSet::new(), Abis { x32: false }).unwrap().unwrap();
        assert_eq!(s.architectures().as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn the_probe_is_skipped_under_a_filter() {
        assert!(!under_filter("Name:\tcrio\nSeccomp:\t0\nSeccomp_filters:\t0\n"));
        assert!(under_filter("Name:\tcrio\nSeccomp:\t2\nSeccomp_filters:\t1\n"));
        assert!(under_filter("Name:\tcrio\n"), "a kernel that does not say");
    }

    #[test]
    fn runtime_default_denies_what_changes_the_node() {
        let (plain, conditional) = allowed(&[Capability::Chown, Capability::NetBindService, Capability::Kill]);
        for forbidden in [
            "mount",
            "umount2",
            "unshare",
            "clone",
            "setns",
            "sethostname",
            "init_module",
            "kexec_load",
            "bpf",
            "ptrace",
            "reboot",
            "swapon",
        ] {
            assert!(!plain.iter().any(|n| n == forbidden), "{forbidden} must not be allowed");
        }
        assert!(plain.iter().any(|n| n == "execve"));
        // Processes and threads yes, new namespaces no.
        assert_eq!(conditional, ["clone", "unshare"]);
    }

    #[test]
    fn a_granted_capability_allows_what_it_exists_for() {
        let (plain, _) = allowed(&[Capability::SysAdmin]);
        for needed in ["sethostname", "setdomainname", "mount", "umount2", "unshare", "clone", "clone3", "setns"] {
            assert!(plain.iter().any(|n| n == needed), "{needed} with CAP_SYS_ADMIN");
        }
        assert!(!plain.iter().any(|n| n == "ptrace"), "CAP_SYS_ADMIN does not grant ptrace");
        let (plain, _) = allowed(&[Capability::SysPtrace, Capability::SysTime]);
        for needed in ["ptrace", "process_vm_readv", "clock_settime", "settimeofday"] {
            assert!(plain.iter().any(|n| n == needed), "{needed}");
        }
        assert!(!plain.iter().any(|n| n == "mount"));
    }

    #[test]
    fn unconfined_and_privileged_have_no_filter() {
        let none = HashSet::new();
        assert!(section(&Profile::Unconfined, false, &none, Abis::ALL).unwrap().is_none());
        assert!(section(&Profile::RuntimeDefault, true, &none, Abis::ALL).unwrap().is_none());
    }

    #[test]
    fn localhost_profiles() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("p.json");
        std::fs::write(&p, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#).unwrap();
        let s = section(&Profile::Localhost(p.display().to_string()), false, &HashSet::new(), Abis::ALL).unwrap().unwrap();
        assert_eq!(s.syscalls().as_ref().unwrap()[0].names(), &["mkdir".to_string()]);
        assert!(matches!(
            section(&Profile::Localhost("rel.json".into()), false, &HashSet::new(), Abis::ALL),
            Err(SeccompError::Relative { .. })
        ));
        // A device or a huge file is refused without reading it all.
        assert!(matches!(
            section(&Profile::Localhost("/dev/zero".into()), false, &HashSet::new(), Abis::ALL),
            Err(SeccompError::Read { .. })
        ));
        let big = tempfile::NamedTempFile::new().unwrap();
        big.as_file().set_len(MAX_PROFILE + 1).unwrap();
        let err = section(&Profile::Localhost(big.path().display().to_string()), false, &HashSet::new(), Abis::ALL).unwrap_err();
        assert!(matches!(err, SeccompError::Read { .. }), "{err:?}");
        std::fs::write(&p, r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["x"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#).unwrap();
        assert!(matches!(
            section(&Profile::Localhost(p.display().to_string()), false, &HashSet::new(), Abis::ALL),
            Err(SeccompError::Invalid { .. })
        ));
    }
}
