//! `crio-monitor <socket> [--pid-namespace]`: the per-pod container monitor. Started by the
//! daemon; see `crio::monitor::server`.

fn main() {
    let Some(socket) = std::env::args_os().nth(1) else {
        eprintln!("usage: crio-monitor <socket> [--pid-namespace]");
        std::process::exit(2);
    };
    let pid_namespace = std::env::args_os().nth(2).is_some_and(|a| a == "--pid-namespace");
    if let Err(e) = crio::monitor::server::run(std::path::Path::new(&socket), pid_namespace) {
        eprintln!("crio-monitor: {e}");
        std::process::exit(1);
    }
}
