//! `crio-exec <bundle> <container-id> <init-pid> -- <command>...`: the daemon's ExecSync
//! helper, started once per exec. See `crio::exec`.

fn main() {
    crio::exec::helper::main()
}
