//! `crio-monitor <socket> [--pid-namespace] [--ipc] [--uts <hostname>]`: the per-pod container
//! monitor. Started by the daemon; see `crio::monitor::server`.

use crio::monitor::server::Holds;

const USAGE: &str = "usage: crio-monitor <socket> [--pid-namespace] [--ipc] [--uts <hostname>]";

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(socket) = args.next() else { usage() };
    let mut holds = Holds::default();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--pid-namespace") => holds.pid_namespace = true,
            Some("--ipc") => holds.ipc = true,
            Some("--uts") => holds.uts = Some(args.next().and_then(|h| h.into_string().ok()).unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    if let Err(e) = crio::monitor::server::run(std::path::Path::new(&socket), &holds) {
        eprintln!("crio-monitor: {e}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2);
}
