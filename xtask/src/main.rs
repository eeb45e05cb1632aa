//! Workflows: `cargo xtask run|test|lint|bench`. Never needed for a plain build.

use std::process::Command;

use anyhow::{Context, bail};

fn exec(program: &str, args: &[&str]) -> anyhow::Result<()> {
    exec_with(program, args, &[])
}

/// `exec` with extra environment for the child.
fn exec_with(program: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<()> {
    let status = Command::new(program).args(args).envs(env.iter().copied()).status().with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match args.first().map(String::as_str) {
        // The whole package: the daemon starts crio-monitor from its own directory.
        Some("run") => {
            exec("cargo", &["build", "--release", "-p", "crio-daemon"])?;
            exec("target/release/crio", &rest)
        }
        Some("test") => {
            exec("bash", &[".ci/deps"])?;
            exec("cargo", &[&["test", "--workspace"], rest.as_slice()].concat())
        }
        Some("lint") => {
            exec("cargo", &["fmt", "--all", "--check"])?;
            exec("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])
        }
        // `bench` runs all three; `bench micro`, `bench images` or `bench cri` one.
        Some("bench") => {
            exec("bash", &[".ci/deps"])?;
            let which: Vec<&str> = match rest.first() {
                Some(&b @ ("micro" | "images" | "cri")) => vec![b],
                _ => vec!["micro", "images", "cri"],
            };
            if which.contains(&"cri") {
                // The peer runtime, only for this benchmark (on systemd hosts the package would
                // also start a system containerd, which the benchmark does not use).
                exec(
                    "bash",
                    &[
                        "-c",
                        "command -v containerd >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends containerd; }",
                    ],
                )?;
            }
            // The whole-daemon benches run the release daemon (the benches are another package,
            // so Cargo does not hand them its binaries).
            exec("cargo", &["build", "--release", "-p", "crio-daemon", "--bins"])?;
            let bin = std::env::current_dir()?.join("target/release/crio");
            for b in which {
                exec_with("cargo", &["bench", "-p", "crio-benches", "--bench", b], &[("CRIO_BIN", bin.as_os_str())])?;
            }
            Ok(())
        }
        _ => bail!("usage: cargo xtask <run|test|lint|bench [micro|images|cri]> [args...]"),
    }
}
