//! Builds bpf/crio.bpf.c into `$OUT_DIR/crio.bpf.o` with clang, against a vmlinux.h that
//! bpftool dumps from the build host's kernel BTF (CO-RE relocates it to the running kernel
//! at load). Without clang, bpftool or BTF, or with CRIO_EBPF_SKIP set, it writes an empty
//! object instead: the crate still builds (cargo check, clippy) and the loader reports that
//! this build has no programs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bpf");
    for f in ["crio.bpf.c", "crio_events.h"] {
        println!("cargo:rerun-if-changed={}", src.join(f).display());
    }
    for var in ["CRIO_EBPF_SKIP", "CLANG", "BPFTOOL"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let object = out.join("crio.bpf.o");
    match build(&src, &out, &object) {
        Ok(()) => {}
        Err(Failure::Skipped(why)) => {
            println!("cargo:warning=eBPF programs not built ({why}); the daemon will run without them");
            std::fs::write(&object, b"").expect("writing the empty object");
        }
        // A toolchain that is there but fails on our sources is a bug to see, not to skip.
        Err(Failure::Broken(why)) => panic!("building bpf/crio.bpf.c: {why}"),
    }
}

enum Failure {
    /// Something the build needs is absent.
    Skipped(String),
    /// The tools ran and failed.
    Broken(String),
}

fn build(src: &Path, out: &Path, object: &Path) -> Result<(), Failure> {
    use Failure::{Broken, Skipped};
    if std::env::var_os("CRIO_EBPF_SKIP").is_some() {
        return Err(Skipped("CRIO_EBPF_SKIP is set".into()));
    }
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    if !btf.exists() {
        return Err(Skipped(format!("{} is missing", btf.display())));
    }
    let bpftool = std::env::var("BPFTOOL").unwrap_or_else(|_| "bpftool".into());
    let dump = Command::new(&bpftool)
        .args(["btf", "dump", "file"])
        .arg(btf)
        .args(["format", "c"])
        .output()
        .map_err(|e| Skipped(format!("running {bpftool}: {e}")))?;
    if !dump.status.success() {
        return Err(Broken(format!("{bpftool} btf dump failed: {}", String::from_utf8_lossy(&dump.stderr).trim())));
    }
    std::fs::write(out.join("vmlinux.h"), &dump.stdout).map_err(|e| Broken(format!("writing vmlinux.h: {e}")))?;
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => return Err(Skipped(format!("no BPF target arch for {other}"))),
        Err(_) => return Err(Broken("CARGO_CFG_TARGET_ARCH unset".into())),
    };
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let built = Command::new(&clang)
        .args(["-g", "-O2", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .arg("-I")
        .arg(out)
        .arg("-I")
        .arg(src)
        .arg("-c")
        .arg(src.join("crio.bpf.c"))
        .arg("-o")
        .arg(object)
        .output()
        .map_err(|e| Skipped(format!("running {clang}: {e}")))?;
    if !built.status.success() {
        return Err(Broken(format!("{clang} failed: {}", String::from_utf8_lossy(&built.stderr).trim())));
    }
    Ok(())
}
