//! The container's seccomp profile compiled to the classic BPF program the kernel loads, once
//! per container (and once per distinct profile: the daemon caches by the profile's text).
//! libseccomp does the compiling, as it does inside runc, so an exec'd process gets the same
//! rules as the container's init: same actions, argument checks and architectures.

use std::io::{Read, Seek};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompArg, LinuxSeccompOperator};

use super::ExecError;

fn invalid(why: impl Into<String>) -> ExecError {
    ExecError::Filter { why: why.into() }
}

/// The spec's name of an enum value (`SCMP_ACT_ERRNO`, `SCMP_ARCH_X86_64`...).
fn name_of(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn action(name: &str, errno: Option<u32>, default_errno: Option<u32>) -> Result<ScmpAction, ExecError> {
    let errno = errno.or(default_errno).unwrap_or(libc::EPERM as u32) as i32;
    let value = match name {
        "SCMP_ACT_ERRNO" => Some(errno),
        "SCMP_ACT_TRACE" => Some(errno),
        _ => None,
    };
    match name {
        "SCMP_ACT_NOTIFY" => Err(invalid("SCMP_ACT_NOTIFY needs a seccomp agent, which this runtime does not run")),
        _ => ScmpAction::from_str(name, value).map_err(|e| invalid(format!("action {name}: {e}"))),
    }
}

fn compare(arg: &LinuxSeccompArg) -> Result<ScmpArgCompare, ExecError> {
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // The spec's `value` is the mask and `valueTwo` the datum.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return Ok(ScmpArgCompare::new(arg.index() as u32, ScmpCompareOp::MaskedEqual(arg.value()), arg.value_two().unwrap_or(0)));
        }
    };
    if arg.index() > 5 {
        return Err(invalid(format!("argument index {} (syscalls have 6)", arg.index())));
    }
    Ok(ScmpArgCompare::new(arg.index() as u32, op, arg.value()))
}

/// Compiles `seccomp` to a `struct sock_filter` array, as bytes.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<u8>, ExecError> {
    let default_errno = seccomp.default_errno_ret();
    let default = action(&name_of(&seccomp.default_action()), None, default_errno)?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| invalid(e.to_string()))?;
    for arch in seccomp.architectures().iter().flatten() {
        let name = name_of(arch);
        let arch: ScmpArch = name.parse().map_err(|e| invalid(format!("architecture {name}: {e}")))?;
        ctx.add_arch(arch).map_err(|e| invalid(format!("architecture {name}: {e}")))?;
    }
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(&name_of(&rule.action()), rule.errno_ret(), default_errno)?;
        // libseccomp refuses a rule that does what the default does; it changes nothing.
        if act == default {
            continue;
        }
        let args = rule.args().clone().unwrap_or_default();
        let compares = args.iter().map(compare).collect::<Result<Vec<_>, _>>()?;
        // Checks on distinct arguments are ANDed in one rule; several checks on the same
        // argument cannot be, so each becomes a rule of its own (ORed), as runc does.
        let mut indices: Vec<usize> = args.iter().map(|a| a.index()).collect();
        indices.sort_unstable();
        let repeated = indices.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            // Names this libseccomp does not know are skipped, as runc skips them: a profile
            // written for a newer kernel still loads.
            let Ok(sys) = ScmpSyscall::from_name(name) else { continue };
            let added = if compares.is_empty() {
                ctx.add_rule(act, sys)
            } else if repeated {
                compares.iter().try_for_each(|c| ctx.add_rule_conditional(act, sys, std::slice::from_ref(c)).map(drop)).map(|()| &mut ctx)
            } else {
                ctx.add_rule_conditional(act, sys, &compares)
            };
            added.map_err(|e| invalid(format!("rule for {name}: {e}")))?;
        }
    }
    let mut out =
        std::fs::File::from(rustix::fs::memfd_create("crio-seccomp", rustix::fs::MemfdFlags::CLOEXEC).map_err(|e| invalid(e.to_string()))?);
    ctx.export_bpf(&out).map_err(|e| invalid(format!("export: {e}")))?;
    let mut bytes = Vec::new();
    out.rewind().and_then(|_| out.read_to_end(&mut bytes)).map_err(|e| invalid(format!("export: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{Profile, section};

    /// A classic BPF instruction is 8 bytes: code (u16), jt, jf (u8), k (u32).
    fn instructions(bytes: &[u8]) -> Vec<(u16, u8, u8, u32)> {
        bytes
            .chunks_exact(8)
            .map(|c| (u16::from_ne_bytes([c[0], c[1]]), c[2], c[3], u32::from_ne_bytes([c[4], c[5], c[6], c[7]])))
            .collect()
    }

    #[test]
    fn runtime_default_compiles_to_a_program_that_returns_eperm_by_default() {
        let s = section(&Profile::RuntimeDefault, false, &Default::default(), crate::seccomp::Abis::ALL).unwrap().unwrap();
        let prog = compile(&s).unwrap();
        assert!(prog.len().is_multiple_of(8));
        let ins = instructions(&prog);
        assert!(ins.len() > 20, "a program of {} instructions", ins.len());
        const RET: u16 = 0x06;
        const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
        const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
        let rets: Vec<u32> = ins.iter().filter(|i| i.0 == RET).map(|i| i.3).collect();
        assert!(rets.contains(&(SECCOMP_RET_ERRNO | libc::EPERM as u32)), "the default action");
        assert!(rets.contains(&(SECCOMP_RET_ERRNO | libc::ENOSYS as u32)), "clone3's ENOSYS");
        assert!(rets.contains(&SECCOMP_RET_ALLOW));
    }

    #[test]
    fn argument_checks_and_unknown_names() {
        let s: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_NE"}, {"index": 0, "value": 0, "op": "SCMP_CMP_NE"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["no_such_syscall_anywhere", "getpid"], "action": "SCMP_ACT_ALLOW"}
            ]
        }))
        .unwrap();
        assert!(!compile(&s).unwrap().is_empty());
        let notify: LinuxSeccomp = serde_json::from_value(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY", "syscalls": []})).unwrap();
        assert!(matches!(compile(&notify), Err(ExecError::Filter { .. })));
    }
}
