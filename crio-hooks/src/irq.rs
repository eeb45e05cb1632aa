//! IRQ steering, planned: which CPUs containers take away from interrupt handling, and what the
//! default affinity, every movable IRQ's affinity and irqbalance's ban list become. Each
//! affinity is computed from its value before any steering (persisted) and the CPUs taken by
//! all containers now, so containers may come and go in any order without undoing each other,
//! and when the last one goes the machine is as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::CpuSet;
use crate::annotations::IrqMode;

/// The IRQ state of the machine, as read from /proc/irq and the irqbalance config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqState {
    pub online: CpuSet,
    pub default_affinity: CpuSet,
    /// Per IRQ number, its affinity; IRQs whose affinity cannot be changed are left out.
    pub irqs: BTreeMap<u32, CpuSet>,
    pub banned: CpuSet,
}

/// What the machine had before any container took CPUs: persisted, so the last container to
/// leave (or the daemon after a crash) puts back exactly this.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Originals {
    pub default_affinity: Option<CpuSet>,
    pub banned: Option<CpuSet>,
    /// The IRQs steering changed, with their affinity from before.
    pub irqs: BTreeMap<u32, CpuSet>,
}

/// What to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    pub default_affinity: Option<CpuSet>,
    pub irqs: BTreeMap<u32, CpuSet>,
    pub banned: Option<CpuSet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IrqError {
    #[error("taking CPUs {taken} from interrupts would leave none to handle them (online: {online})")]
    NoCpuLeft { taken: CpuSet, online: CpuSet },
}

/// The CPUs `mode` takes from a container with `cpus`: all of them, or (housekeeping) all but
/// the first and its SMT siblings (`siblings_of_first`).
pub fn taken(cpus: &CpuSet, mode: IrqMode, siblings_of_first: &CpuSet) -> CpuSet {
    match mode {
        IrqMode::Disable => cpus.clone(),
        IrqMode::Housekeeping => {
            let Some(first) = cpus.iter().next() else { return CpuSet::new() };
            let mut keep = siblings_of_first.intersection(cpus);
            keep.insert(first);
            cpus.difference(&keep)
        }
    }
}

/// Steers interrupts off `taken`, the union of what every container with the annotation
/// takes now (one more or one fewer than before). Every affinity is computed from its value
/// before any steering, so the result does not depend on the order containers came and went,
/// and with nothing taken everything returns to `originals` (which are then forgotten).
pub fn steer(state: &IrqState, originals: &mut Originals, taken: &CpuSet) -> Result<Writes, IrqError> {
    let rest = state.online.difference(taken);
    if rest.is_empty() {
        return Err(IrqError::NoCpuLeft { taken: taken.clone(), online: state.online.clone() });
    }
    if taken.is_empty() {
        let writes = Writes {
            default_affinity: originals.default_affinity.take().filter(|d| *d != state.default_affinity),
            irqs: std::mem::take(&mut originals.irqs).into_iter().filter(|(irq, a)| state.irqs.get(irq) != Some(a)).collect(),
            banned: originals.banned.take().filter(|b| *b != state.banned),
        };
        return Ok(writes);
    }
    // An affinity left empty would be refused by the kernel: it spreads over every CPU left.
    let spread = |original: &CpuSet| {
        let s = original.difference(taken);
        if s.is_empty() { rest.clone() } else { s }
    };
    let default = originals.default_affinity.get_or_insert_with(|| state.default_affinity.clone()).clone();
    let banned = originals.banned.get_or_insert_with(|| state.banned.clone()).clone();
    let mut writes = Writes::default();
    for (irq, now) in &state.irqs {
        if !originals.irqs.contains_key(irq) && now.intersection(taken).is_empty() {
            continue;
        }
        let original = originals.irqs.entry(*irq).or_insert_with(|| now.clone());
        let target = spread(original);
        if target != *now {
            writes.irqs.insert(*irq, target);
        }
    }
    let default = spread(&default);
    writes.default_affinity = (default != state.default_affinity).then_some(default);
    let banned = banned.union(taken);
    writes.banned = (banned != state.banned).then_some(banned);
    Ok(writes)
}

/// The IRQ state under a procfs and a sysfs root; `banned` is irqbalance's current ban list.
pub fn read_state(proc_root: &Path, sys_root: &Path, banned: &CpuSet) -> std::io::Result<IrqState> {
    let bad = |e: crate::CpuSetError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let online = CpuSet::parse_list(&crate::files::read(&sys_root.join("devices/system/cpu/online"))?).map_err(bad)?;
    let default_affinity = CpuSet::parse_mask(&crate::files::read(&proc_root.join("irq/default_smp_affinity"))?).map_err(bad)?;
    let mut irqs = BTreeMap::new();
    for entry in std::fs::read_dir(proc_root.join("irq"))?.flatten() {
        let Ok(irq) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(list) = crate::files::read(&entry.path().join("smp_affinity_list"))
            && let Ok(set) = CpuSet::parse_list(&list)
        {
            irqs.insert(irq, set);
        }
    }
    Ok(IrqState { online, default_affinity, irqs, banned: banned.clone() })
}

/// Writes the affinities under `proc_root`; an IRQ the kernel will not move is skipped and
/// returned with its error (the rest still apply).
pub fn write(proc_root: &Path, ncpus: u32, writes: &Writes) -> Vec<(PathBuf, std::io::Error)> {
    let mut failed = Vec::new();
    if let Some(d) = &writes.default_affinity {
        let path = proc_root.join("irq/default_smp_affinity");
        if let Err(e) = std::fs::write(&path, d.to_mask(ncpus)) {
            failed.push((path, e));
        }
    }
    for (irq, set) in &writes.irqs {
        let path = proc_root.join(format!("irq/{irq}/smp_affinity_list"));
        if let Err(e) = std::fs::write(&path, set.to_list()) {
            failed.push((path, e));
        }
    }
    failed
}

/// The ban list an irqbalance environment file sets (the list form wins over the mask).
pub fn irqbalance_banned(text: &str) -> CpuSet {
    let value = |key: &str| text.lines().rev().find_map(|l| l.trim().strip_prefix(key)).map(|v| v.trim().trim_matches('"').to_string());
    if let Some(list) = value("IRQBALANCE_BANNED_CPULIST=")
        && let Ok(set) = CpuSet::parse_list(&list)
    {
        return set;
    }
    value("IRQBALANCE_BANNED_CPUS=").and_then(|m| CpuSet::parse_mask(&m).ok()).unwrap_or_default()
}

/// irqbalance's environment file with the ban list set in both forms it reads
/// (`IRQBALANCE_BANNED_CPUS` mask, `IRQBALANCE_BANNED_CPULIST` list), other lines kept.
pub fn irqbalance_config(text: &str, banned: &CpuSet, ncpus: u32) -> String {
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("IRQBALANCE_BANNED_CPUS=") && !l.trim_start().starts_with("IRQBALANCE_BANNED_CPULIST="))
        .map(str::to_string)
        .collect();
    out.push(format!("IRQBALANCE_BANNED_CPUS={}", banned.to_mask(ncpus)));
    out.push(format!("IRQBALANCE_BANNED_CPULIST={}", banned.to_list()));
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(list: &str) -> CpuSet {
        CpuSet::parse_list(list).unwrap()
    }

    fn state() -> IrqState {
        IrqState {
            online: cpus("0-7"),
            default_affinity: cpus("0-7"),
            irqs: [(10, cpus("0-7")), (11, cpus("4")), (12, cpus("0-1"))].into(),
            banned: CpuSet::new(),
        }
    }

    fn applied(s: &IrqState, w: &Writes) -> IrqState {
        let mut irqs = s.irqs.clone();
        irqs.extend(w.irqs.iter().map(|(k, v)| (*k, v.clone())));
        IrqState {
            default_affinity: w.default_affinity.clone().unwrap_or_else(|| s.default_affinity.clone()),
            irqs,
            banned: w.banned.clone().unwrap_or_else(|| s.banned.clone()),
            ..s.clone()
        }
    }

    #[test]
    fn taking_cpus_moves_every_irq_off_them() {
        let mut o = Originals::default();
        let w = steer(&state(), &mut o, &cpus("4-5")).unwrap();
        assert_eq!(w.default_affinity, Some(cpus("0-3,6-7")));
        assert_eq!(w.irqs[&10], cpus("0-3,6-7"));
        assert_eq!(w.irqs[&11], cpus("0-3,6-7"), "an IRQ only on taken CPUs spreads over all the others");
        assert!(!w.irqs.contains_key(&12), "untouched IRQs are not rewritten");
        assert_eq!(w.banned, Some(cpus("4-5")));
        assert!(steer(&state(), &mut Originals::default(), &cpus("0-7")).is_err());
    }

    #[test]
    fn housekeeping_keeps_the_first_cpu_and_its_siblings() {
        assert_eq!(taken(&cpus("4-7"), IrqMode::Housekeeping, &cpus("4,6")), cpus("5,7"));
        assert_eq!(taken(&cpus("4-7"), IrqMode::Disable, &cpus("4,6")), cpus("4-7"));
    }

    #[test]
    fn leaving_in_any_order_puts_everything_back() {
        let s0 = state();
        let mut o = Originals::default();
        let s1 = applied(&s0, &steer(&s0, &mut o, &cpus("4-5")).unwrap());
        let s2 = applied(&s1, &steer(&s1, &mut o, &cpus("2,4-5")).unwrap());
        // The first container leaves: the second's CPU stays taken, IRQ 11 goes back to CPU 4.
        let s3 = applied(&s2, &steer(&s2, &mut o, &cpus("2")).unwrap());
        assert_eq!((s3.irqs[&11].clone(), s3.irqs[&10].clone(), s3.banned.clone()), (cpus("4"), cpus("0-1,3-7"), cpus("2")));
        let s4 = applied(&s3, &steer(&s3, &mut o, &CpuSet::new()).unwrap());
        assert_eq!(s4, s0);
        assert_eq!(o, Originals::default(), "nothing left to remember");
    }

    #[test]
    fn irqbalance_gets_both_forms_and_keeps_other_lines() {
        let text = "# irqbalance\nIRQBALANCE_ONESHOT=no\nIRQBALANCE_BANNED_CPUS=00000001\n";
        let out = irqbalance_config(text, &cpus("4-5,40"), 48);
        assert_eq!(out, "# irqbalance\nIRQBALANCE_ONESHOT=no\nIRQBALANCE_BANNED_CPUS=0100,00000030\nIRQBALANCE_BANNED_CPULIST=4-5,40\n");
    }

    /// A procfs and sysfs laid out in a temp dir: a 96-CPU machine with three IRQs, one of
    /// which the "kernel" refuses to move (its file is a directory, so writes fail).
    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        std::fs::create_dir_all(p.join("sys/devices/system/cpu")).unwrap();
        std::fs::write(p.join("sys/devices/system/cpu/online"), "0-95\n").unwrap();
        std::fs::create_dir_all(p.join("proc/irq")).unwrap();
        std::fs::write(p.join("proc/irq/default_smp_affinity"), "ffffffff,ffffffff,ffffffff\n").unwrap();
        for (irq, list) in [(24, "0-95"), (25, "70-71")] {
            std::fs::create_dir_all(p.join(format!("proc/irq/{irq}"))).unwrap();
            std::fs::write(p.join(format!("proc/irq/{irq}/smp_affinity_list")), format!("{list}\n")).unwrap();
        }
        std::fs::create_dir_all(p.join("proc/irq/26/smp_affinity_list")).unwrap();
        t
    }

    #[test]
    fn steering_on_a_temp_tree_and_back() {
        let t = tree();
        let (proc_root, sys_root) = (t.path().join("proc"), t.path().join("sys"));
        let s0 = read_state(&proc_root, &sys_root, &CpuSet::new()).unwrap();
        assert_eq!(s0.online.len(), 96);
        assert_eq!(s0.irqs.len(), 2, "unreadable IRQs are left out");
        let mut o = Originals::default();
        let w = steer(&s0, &mut o, &cpus("64-71")).unwrap();
        assert!(write(&proc_root, 96, &w).is_empty());
        let s1 = read_state(&proc_root, &sys_root, &CpuSet::new()).unwrap();
        assert_eq!(s1.default_affinity, cpus("0-63,72-95"));
        assert_eq!(
            crate::files::read(&proc_root.join("irq/default_smp_affinity")).unwrap(),
            "ffffff00,ffffffff,ffffffff",
            "CPUs 64-71 are the low byte of the top word"
        );
        assert_eq!(s1.irqs[&24], cpus("0-63,72-95"));
        assert_eq!(s1.irqs[&25], cpus("0-63,72-95"), "an IRQ only on taken CPUs spreads over the rest");
        let back = steer(&s1, &mut o, &CpuSet::new()).unwrap();
        assert!(write(&proc_root, 96, &back).is_empty());
        let s2 = read_state(&proc_root, &sys_root, &CpuSet::new()).unwrap();
        assert_eq!((s2.default_affinity, s2.irqs), (s0.default_affinity, s0.irqs));
        // A refused IRQ is reported, the others still written.
        let refuse = Writes { irqs: [(26, cpus("0")), (24, cpus("1"))].into(), ..Default::default() };
        let failed = write(&proc_root, 96, &refuse);
        assert_eq!(failed.len(), 1);
        assert_eq!(read_state(&proc_root, &sys_root, &CpuSet::new()).unwrap().irqs[&24], cpus("1"));
    }

    #[test]
    fn the_current_ban_list_is_read_from_either_form() {
        assert_eq!(irqbalance_banned("IRQBALANCE_BANNED_CPUS=00000030\n"), cpus("4-5"));
        assert_eq!(irqbalance_banned("IRQBALANCE_BANNED_CPUS=00000030\nIRQBALANCE_BANNED_CPULIST=\"1,3\"\n"), cpus("1,3"));
        assert_eq!(irqbalance_banned("#IRQBALANCE_ONESHOT=\n"), CpuSet::new());
        let written = irqbalance_config("", &cpus("2,66"), 72);
        assert_eq!(irqbalance_banned(&written), cpus("2,66"));
    }

    proptest::proptest! {
        /// Two containers on disjoint CPUs, in either order of leaving: the machine ends as it began.
        #[test]
        fn any_order_of_restores_gets_back_the_start(
            irqs in proptest::collection::btree_map(0u32..64, proptest::collection::btree_set(0u32..16, 1..6), 0..12),
            default in proptest::collection::btree_set(0u32..16, 1..16),
            a in proptest::collection::btree_set(0u32..8, 1..4),
            b in proptest::collection::btree_set(8u32..15, 1..4),
            a_first in proptest::bool::ANY,
        ) {
            let set = |s: &std::collections::BTreeSet<u32>| s.iter().copied().collect::<CpuSet>();
            let s0 = IrqState {
                online: (0..16).collect(),
                default_affinity: set(&default),
                irqs: irqs.iter().map(|(k, v)| (*k, set(v))).collect(),
                banned: CpuSet::new(),
            };
            let (a, b) = (set(&a), set(&b));
            let mut o = Originals::default();
            let s1 = applied(&s0, &steer(&s0, &mut o, &a).unwrap());
            let s2 = applied(&s1, &steer(&s1, &mut o, &a.union(&b)).unwrap());
            let left = if a_first { b } else { a };
            let s3 = applied(&s2, &steer(&s2, &mut o, &left).unwrap());
            let end = applied(&s3, &steer(&s3, &mut o, &CpuSet::new()).unwrap());
            proptest::prop_assert_eq!(&end.banned, &s0.banned);
            proptest::prop_assert_eq!(&end.default_affinity, &s0.default_affinity);
            proptest::prop_assert_eq!(&end.irqs, &s0.irqs);
        }
    }
}
