//! `crio-monitor <socket>`: the per-pod container monitor. Started by the daemon; see
//! `crio::monitor::server`.

fn main() {
    let Some(socket) = std::env::args_os().nth(1) else {
        eprintln!("usage: crio-monitor <socket>");
        std::process::exit(2);
    };
    if let Err(e) = crio::monitor::server::run(std::path::Path::new(&socket)) {
        eprintln!("crio-monitor: {e}");
        std::process::exit(1);
    }
}
