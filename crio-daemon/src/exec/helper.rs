//! `crio-exec [--tty] <bundle> <container-id> <init-pid> -- <command>...`: runs a command in a
//! running container as the runtime would, then exits with its status (128 + n for signal n).
//! With `--tty` the helper's stdin is a unix socket: the helper makes a pty inside the
//! container (its devpts, so the command's `ttyname` resolves there, as with runc), sends the
//! master back over the socket, and gives the command the slave as its stdio and controlling
//! terminal (the command leads a new session, as a login shell would).
//!
//! Order matters, as in runc: cgroups are joined from the host's mount namespace, before
//! setns; the fork that follows makes the child a member of the container's PID namespace;
//! rlimits are set while still root; the seccomp filter is loaded before capabilities drop
//! when no_new_privs is off (loading then needs CAP_SYS_ADMIN), last otherwise.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;

use rustix::process::{Pid, Resource, Rlimit};
use rustix::thread::{CapabilitySet, CapabilitySets, ThreadNameSpaceType};

use super::ExecProfile;
use crate::sys::exec as sys;

/// Exit status for a failure of the helper itself, as runc uses.
const FAILED: i32 = 255;

type Failure = String;

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Failure + '_ {
    move |e| format!("{what}: {e}")
}

/// The helper's entry: never returns.
pub fn main() -> ! {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = Options::default();
    loop {
        match args.first().map(String::as_str) {
            Some("--tty") => opts.tty = true,
            Some("--detach") if args.len() > 1 => opts.detach = Some(args.remove(1).into()),
            _ => break,
        }
        args.remove(0);
    }
    let code = match args.iter().position(|a| a == "--") {
        Some(3) if args.len() > 4 => run(Path::new(&args[0]), &args[1], &args[2], &args[4..], &opts),
        _ => Err("usage: crio-exec [--tty] [--detach <pid-file>] <bundle> <container-id> <init-pid> -- <command>...".to_string()),
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("crio-exec: {e}");
            std::process::exit(FAILED)
        }
    }
}

#[derive(Default)]
struct Options {
    /// Make a pty in the container for the command (see the module doc).
    tty: bool,
    /// Write the command's pid here and exit at once, instead of waiting for it: the caller
    /// (a child subreaper) adopts it. No process is left waiting per exec session.
    detach: Option<std::path::PathBuf>,
}

fn run(bundle: &Path, id: &str, pid: &str, cmd: &[String], opts: &Options) -> Result<i32, Failure> {
    let tty = opts.tty;
    // Opened here: once in the container's mount namespace the path is not ours to reach.
    let mut pid_out = match &opts.detach {
        Some(path) => Some(fs::File::create(path).map_err(fail(&format!("creating {}", path.display())))?),
        None => None,
    };
    // From the start: the daemon's SIGTERM (ExecSync's timeout) must end the command and
    // reap it, never leave it running or a zombie in the container.
    sys::block_helper_signals(true).map_err(fail("blocking signals"))?;
    let (profile, filter) = ExecProfile::load(bundle).map_err(fail("reading the exec profile and its seccomp filter"))?;
    let one_thread = sys::single_threaded().map_err(fail("fork"))?;
    // Nothing in the container may read this process's memory or open its descriptors.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable).map_err(fail("PR_SET_DUMPABLE"))?;
    let raw: i32 = pid.parse().map_err(fail("init pid"))?;
    let init = Pid::from_raw(raw).ok_or("init pid must be positive")?;
    // The pidfd pins the process: if the pid was reused before it was opened, the cgroup
    // check below fails; if the process dies after, setns through the pidfd fails.
    let pidfd = rustix::process::pidfd_open(init, rustix::process::PidfdFlags::empty()).map_err(fail("container init"))?;
    let cgroups = fs::read_to_string(format!("/proc/{raw}/cgroup")).map_err(fail("container init's cgroups"))?;
    if !cgroups.contains(id) {
        return Err(format!("process {raw} is not the init of container {id}"));
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(fail("mountinfo"))?;
    for dir in cgroup_dirs(&cgroups, &mountinfo) {
        let procs = format!("{dir}/cgroup.procs");
        fs::write(&procs, b"0").map_err(fail(&format!("joining {procs}")))?;
    }
    let namespaces = differing_namespaces(raw);
    rustix::thread::move_into_thread_name_spaces(rustix::fd::AsFd::as_fd(&pidfd), namespaces)
        .map_err(fail("joining the container's namespaces"))?;
    drop(pidfd);
    let slave = if tty { Some(container_pty()?) } else { None };
    match sys::fork(one_thread).map_err(fail("fork"))? {
        Some(child) => {
            drop(slave);
            match pid_out.as_mut() {
                Some(out) => {
                    std::io::Write::write_all(out, child.to_string().as_bytes()).map_err(fail("writing the command's pid"))?;
                    Ok(0)
                }
                None => wait(child),
            }
        }
        None => {
            // Its own process group (inside the container's PID namespace): what it starts can
            // be killed with it, and the helper is not in that group. With a tty, its own
            // session too (which makes the group), with the pty as its terminal.
            let terminal = match &slave {
                Some(slave) => rustix::process::setsid()
                    .map_err(fail("setsid"))
                    .and_then(|_| rustix::process::ioctl_tiocsctty(slave).map_err(fail("TIOCSCTTY"))),
                None => {
                    let _ = rustix::process::setpgid(None, None);
                    Ok(())
                }
            };
            let e = match terminal.and_then(|()| sys::block_helper_signals(false).map_err(fail("unblocking signals"))) {
                Ok(()) => become_container_process(&profile, filter.as_deref(), cmd, slave.as_ref(), opts.detach.is_none()),
                Err(e) => (e, FAILED),
            };
            eprintln!("crio-exec: {}", e.0);
            std::process::exit(e.1)
        }
    }
}

/// A pty made inside the container (the mount namespace joined, so `/dev/ptmx` is the
/// container's): the master goes to the daemon over our stdin, the slave is returned.
fn container_pty() -> Result<OwnedFd, Failure> {
    use rustix::pty::OpenptFlags;
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).map_err(fail("opening /dev/ptmx"))?;
    rustix::pty::unlockpt(&master).map_err(fail("unlockpt"))?;
    let name = rustix::pty::ptsname(&master, Vec::new()).map_err(fail("ptsname"))?;
    let flags = rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC;
    let slave = rustix::fs::open(name.as_c_str(), flags, rustix::fs::Mode::empty()).map_err(fail("opening the pty slave"))?;
    let fds = [rustix::fd::AsFd::as_fd(&master)];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(std::io::stdin(), &[std::io::IoSlice::new(b"pty")], &mut control, rustix::net::SendFlags::empty())
        .map_err(fail("sending the pty master"))?;
    Ok(slave)
}

/// The cgroup directories of every hierarchy listed in a `/proc/<pid>/cgroup`, found through
/// the mounts in `mountinfo` (v1 controllers, named v1 hierarchies and the v2 one).
pub fn cgroup_dirs(cgroups: &str, mountinfo: &str) -> Vec<String> {
    let mounts: Vec<(&str, &str, &str, Vec<&str>)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let (root, point, fstype) = (*f.get(3)?, *f.get(4)?, *r.first()?);
            let opts = r.get(2).map(|o| o.split(',').collect()).unwrap_or_default();
            matches!(fstype, "cgroup" | "cgroup2").then_some((fstype, root, point, opts))
        })
        .collect();
    let mut dirs = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let found = mounts.iter().find(|(fstype, root, _, opts)| {
            let kind =
                if ctrls.is_empty() { *fstype == "cgroup2" } else { *fstype == "cgroup" && ctrls.split(',').all(|c| opts.contains(&c)) };
            kind && (*root == "/" || path.starts_with(root))
        });
        if let Some((_, root, point, _)) = found {
            let rel = if *root == "/" { path } else { path.strip_prefix(root).unwrap_or(path) };
            dirs.push(format!("{point}{}", rel.trim_end_matches('/')));
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The namespaces of `pid` that are not ours (joining one's own is an error for some kinds).
fn differing_namespaces(pid: i32) -> ThreadNameSpaceType {
    use std::os::unix::fs::MetadataExt;
    let kinds = [
        ("mnt", ThreadNameSpaceType::MOUNT),
        ("pid", ThreadNameSpaceType::PROCESS_ID),
        ("net", ThreadNameSpaceType::NETWORK),
        ("ipc", ThreadNameSpaceType::INTER_PROCESS_COMMUNICATION),
        ("uts", ThreadNameSpaceType::HOST_NAME_AND_NIS_DOMAIN_NAME),
        ("cgroup", ThreadNameSpaceType::CONTROL_GROUP),
    ];
    let mut flags = ThreadNameSpaceType::empty();
    for (name, flag) in kinds {
        let theirs = fs::metadata(format!("/proc/{pid}/ns/{name}")).map(|m| m.ino());
        let ours = fs::metadata(format!("/proc/self/ns/{name}")).map(|m| m.ino());
        if let (Ok(t), Ok(o)) = (theirs, ours)
            && t != o
        {
            flags |= flag;
        }
    }
    flags
}

/// Waits for the command; on SIGTERM kills it and its process group, then reaps it, so
/// when the helper exits the command is gone.
fn wait(child: i32) -> Result<i32, Failure> {
    use rustix::process::{Signal, WaitOptions, waitpid};
    let pid = Pid::from_raw(child).expect("fork returns positive pids");
    let mut killed = false;
    loop {
        match waitpid(Some(pid), if killed { WaitOptions::empty() } else { WaitOptions::NOHANG }) {
            Ok(Some((_, status))) => {
                if let Some(code) = status.exit_status() {
                    return Ok(code);
                }
                if let Some(sig) = status.terminating_signal() {
                    return Ok(128 + sig);
                }
                continue;
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("waiting for the command: {e}")),
        }
        if sys::wait_signal().map_err(fail("waiting for signals"))? == libc::SIGTERM {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            killed = true;
        }
    }
}

fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_CPU" => Resource::Cpu,
        "RLIMIT_FSIZE" => Resource::Fsize,
        "RLIMIT_DATA" => Resource::Data,
        "RLIMIT_STACK" => Resource::Stack,
        "RLIMIT_CORE" => Resource::Core,
        "RLIMIT_RSS" => Resource::Rss,
        "RLIMIT_NPROC" => Resource::Nproc,
        "RLIMIT_NOFILE" => Resource::Nofile,
        "RLIMIT_MEMLOCK" => Resource::Memlock,
        "RLIMIT_AS" => Resource::As,
        "RLIMIT_LOCKS" => Resource::Locks,
        "RLIMIT_SIGPENDING" => Resource::Sigpending,
        "RLIMIT_MSGQUEUE" => Resource::Msgqueue,
        "RLIMIT_NICE" => Resource::Nice,
        "RLIMIT_RTPRIO" => Resource::Rtprio,
        "RLIMIT_RTTIME" => Resource::Rttime,
        _ => return None,
    })
}

/// In the forked child, inside the container's namespaces: become the process the runtime
/// would have made, and exec. Returns only on failure: the message and the exit status.
fn become_container_process(
    p: &ExecProfile,
    filter: Option<&[u8]>,
    cmd: &[String],
    tty: Option<&OwnedFd>,
    dies_with_helper: bool,
) -> (String, i32) {
    match prepare(p, filter, dies_with_helper) {
        Ok(()) => {}
        Err(e) => return (e, FAILED),
    }
    let mut c = std::process::Command::new(&cmd[0]);
    c.args(&cmd[1..]).env_clear().current_dir(&p.cwd);
    if let Some(slave) = tty {
        let dup = || slave.try_clone().map(std::process::Stdio::from);
        match (dup(), dup(), dup()) {
            (Ok(i), Ok(o), Ok(e)) => {
                c.stdin(i).stdout(o).stderr(e);
            }
            _ => return ("dup of the pty slave failed".into(), FAILED),
        }
    }
    for kv in &p.env {
        if let Some((k, v)) = kv.split_once('=') {
            c.env(k, v);
        }
    }
    // As runc: HOME from the container's /etc/passwd when the spec does not set it.
    if !p.env.iter().any(|kv| kv.starts_with("HOME=")) {
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        c.env("HOME", home_of(&passwd, p.uid).unwrap_or("/"));
    }
    let e = c.exec();
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => 127,
        std::io::ErrorKind::PermissionDenied => 126,
        _ => FAILED,
    };
    (format!("exec {:?}: {e}", cmd[0]), code)
}

/// The home directory of `uid` in an /etc/passwd.
fn home_of(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() >= 6 && f[2].parse() == Ok(uid)).map(|f| f[5])
}

fn prepare(p: &ExecProfile, filter: Option<&[u8]>, dies_with_helper: bool) -> Result<(), Failure> {
    use rustix::thread as t;
    for l in &p.rlimits {
        let r = resource(&l.resource).ok_or_else(|| format!("unknown rlimit {}", l.resource))?;
        let limit = Rlimit { current: Some(l.soft).filter(|v| *v != u64::MAX), maximum: Some(l.hard).filter(|v| *v != u64::MAX) };
        rustix::process::setrlimit(r, limit).map_err(fail(&l.resource))?;
    }
    if let Some(adj) = p.oom_score_adj {
        fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(fail("oom_score_adj"))?;
    }
    if !p.cpu_affinity.is_empty() {
        let mut set = rustix::thread::CpuSet::new();
        p.cpu_affinity.iter().for_each(|c| set.set(*c));
        rustix::thread::sched_setaffinity(None, &set).map_err(fail("CPU affinity"))?;
    }
    for bit in 0..64u32 {
        if p.caps.bounding & (1 << bit) == 0 && t::capability_is_in_bounding_set(CapabilitySet::from_bits_retain(1 << bit)).unwrap_or(false)
        {
            t::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(1 << bit))
                .map_err(fail("dropping from the bounding set"))?;
        }
    }
    let flags = p.seccomp_flags.unwrap_or(0);
    if let Some(prog) = filter.filter(|_| !p.no_new_privileges) {
        sys::load_seccomp_filter(prog, flags).map_err(fail("loading the seccomp filter"))?;
    }
    t::set_keep_capabilities(true).map_err(fail("PR_SET_KEEPCAPS"))?;
    let groups: Vec<rustix::process::Gid> = p.additional_gids.iter().map(|g| rustix::process::Gid::from_raw(*g)).collect();
    t::set_thread_groups(&groups).map_err(fail("setgroups"))?;
    let gid = rustix::process::Gid::from_raw(p.gid);
    t::set_thread_res_gid(gid, gid, gid).map_err(fail("setresgid"))?;
    let uid = rustix::process::Uid::from_raw(p.uid);
    t::set_thread_res_uid(uid, uid, uid).map_err(fail("setresuid"))?;
    t::set_keep_capabilities(false).map_err(fail("PR_SET_KEEPCAPS"))?;
    let sets = CapabilitySets {
        effective: CapabilitySet::from_bits_retain(p.caps.effective),
        permitted: CapabilitySet::from_bits_retain(p.caps.permitted),
        inheritable: CapabilitySet::from_bits_retain(p.caps.inheritable),
    };
    t::set_capabilities(None, sets).map_err(fail("capset"))?;
    for bit in 0..64u32 {
        if p.caps.ambient & (1 << bit) != 0 {
            t::configure_capability_in_ambient_set(CapabilitySet::from_bits_retain(1 << bit), true)
                .map_err(fail("raising an ambient capability"))?;
        }
    }
    // Cleared by the credential change above, so armed after it: if the helper is killed
    // (ExecSync's timeout), the command goes with it. Not when the helper hands it over.
    if dies_with_helper {
        let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    }
    if p.no_new_privileges {
        t::set_no_new_privs(true).map_err(fail("PR_SET_NO_NEW_PRIVS"))?;
        if let Some(prog) = filter {
            sys::load_seccomp_filter(prog, flags).map_err(fail("loading the seccomp filter"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
37 30 0:33 /kubepods /mnt/kube-cpuset rw - cgroup cgroup rw,cpuset";

    #[test]
    fn cgroup_dirs_of_a_hybrid_host() {
        let cg = "12:memory:/crio/pod-1/abc\n4:cpu,cpuacct:/crio/pod-1/abc\n1:name=systemd:/crio/pod-1/abc\n0::/crio/abc\n7:cpuset:/kubepods/pod/abc\n9:rdma:/\n";
        assert_eq!(
            cgroup_dirs(cg, HYBRID_MOUNTS),
            [
                "/mnt/kube-cpuset/pod/abc",
                "/sys/fs/cgroup/cpu,cpuacct/crio/pod-1/abc",
                "/sys/fs/cgroup/memory/crio/pod-1/abc",
                "/sys/fs/cgroup/systemd/crio/pod-1/abc",
                "/sys/fs/cgroup/unified/crio/abc",
            ]
        );
    }

    #[test]
    fn cgroup_dirs_of_a_pure_v2_host() {
        let mounts = "25 20 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw";
        assert_eq!(cgroup_dirs("0::/kubepods.slice/crio-abc.scope\n", mounts), ["/sys/fs/cgroup/kubepods.slice/crio-abc.scope"]);
    }

    #[test]
    fn home_directories() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nbroken\napp:x:1000:1000::/home/app:/bin/sh\n";
        assert_eq!(home_of(passwd, 0), Some("/root"));
        assert_eq!(home_of(passwd, 1000), Some("/home/app"));
        assert_eq!(home_of(passwd, 7), None);
    }

    #[test]
    fn every_spec_rlimit_has_a_resource() {
        for name in ["RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE", "RLIMIT_RTTIME"] {
            assert!(resource(name).is_some(), "{name}");
        }
        assert!(resource("RLIMIT_BOGUS").is_none());
    }
}
