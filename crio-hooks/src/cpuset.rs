//! Sets of CPUs in the kernel's two text forms: lists (`0-3,8,10-11`: cpuset.cpus,
//! smp_affinity_list, the kubelet's cpuset) and masks (`ff,00000001`: smp_affinity,
//! default_smp_affinity, IRQBALANCE_BANNED_CPUS), where comma-separated groups of 32 bits run
//! from the highest CPUs down. Sizes are unbounded: machines with hundreds of CPUs are usual.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuSetError {
    #[error("invalid CPU list {text:?}: {part:?} is not a CPU or a range of CPUs")]
    List { text: String, part: String },
    #[error("invalid CPU mask {text:?}: {part:?} is not a group of at most 8 hex digits")]
    Mask { text: String, part: String },
}

/// Highest CPU number accepted from text (far above any machine; bounds allocation).
const MAX_CPU: u32 = 1 << 16;

#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuSet {
    /// Bit `n % 64` of word `n / 64` is CPU `n`; no trailing zero words.
    words: Vec<u64>,
}

impl CpuSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, cpu: u32) {
        let (w, b) = ((cpu / 64) as usize, cpu % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << b;
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.words.get((cpu / 64) as usize).is_some_and(|w| w & (1 << (cpu % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// CPUs in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, w)| (0..64).filter(move |b| w & (1 << b) != 0).map(move |b| i as u32 * 64 + b))
    }

    fn trim(mut self) -> Self {
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
        self
    }

    fn zip(&self, other: &CpuSet, f: impl Fn(u64, u64) -> u64) -> CpuSet {
        let n = self.words.len().max(other.words.len());
        let word = |s: &CpuSet, i: usize| s.words.get(i).copied().unwrap_or(0);
        CpuSet { words: (0..n).map(|i| f(word(self, i), word(other, i))).collect() }.trim()
    }

    pub fn union(&self, other: &CpuSet) -> CpuSet {
        self.zip(other, |a, b| a | b)
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        self.zip(other, |a, b| a & b)
    }

    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        self.zip(other, |a, b| a & !b)
    }

    /// Parses a CPU list; the empty string (or only whitespace) is the empty set.
    pub fn parse_list(text: &str) -> Result<CpuSet, CpuSetError> {
        let mut set = CpuSet::new();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(set);
        }
        for part in trimmed.split(',') {
            let bad = || CpuSetError::List { text: text.into(), part: part.into() };
            let cpu = |s: &str| s.trim().parse::<u32>().ok().filter(|c| *c <= MAX_CPU).ok_or_else(bad);
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (cpu(a)?, cpu(b)?),
                None => (cpu(part)?, cpu(part)?),
            };
            if lo > hi {
                return Err(bad());
            }
            for c in lo..=hi {
                set.insert(c);
            }
        }
        Ok(set)
    }

    /// The canonical list form: ascending, runs of three or more as ranges (`0-3,5,7-8`
    /// keeps pairs as ranges too, as the kernel prints them).
    pub fn to_list(&self) -> String {
        let mut out = String::new();
        let mut cpus = self.iter().peekable();
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end = cpus.next().expect("peeked");
            }
            if !out.is_empty() {
                out.push(',');
            }
            if start == end {
                out.push_str(&start.to_string());
            } else {
                out.push_str(&format!("{start}-{end}"));
            }
        }
        out
    }

    /// Parses a mask: comma-separated groups of up to 8 hex digits, the highest CPUs first.
    pub fn parse_mask(text: &str) -> Result<CpuSet, CpuSetError> {
        let groups: Vec<&str> = text.trim().split(',').collect();
        if groups.len() as u32 * 32 > MAX_CPU + 32 {
            return Err(CpuSetError::Mask { text: text.into(), part: "(too many groups)".into() });
        }
        let mut set = CpuSet::new();
        for (i, group) in groups.iter().rev().enumerate() {
            let bad = || CpuSetError::Mask { text: text.into(), part: (*group).into() };
            if group.is_empty() || group.len() > 8 {
                return Err(bad());
            }
            let bits = u32::from_str_radix(group, 16).map_err(|_| bad())?;
            for b in 0..32 {
                if bits & (1 << b) != 0 {
                    set.insert(i as u32 * 32 + b);
                }
            }
        }
        Ok(set.trim())
    }

    /// The mask form for a machine of `ncpus` CPUs, as the kernel prints it: every 32-bit group
    /// for those CPUs, 8 hex digits each except the first, which is as wide as its CPUs need.
    pub fn to_mask(&self, ncpus: u32) -> String {
        let ncpus = ncpus.max(self.iter().last().map_or(1, |c| c + 1));
        let groups = ncpus.div_ceil(32);
        let group = |g: u32| -> u32 { (0..32).filter(|b| self.contains(g * 32 + b)).fold(0, |m, b| m | (1 << b)) };
        let mut out = String::new();
        for g in (0..groups).rev() {
            if g == groups - 1 {
                let width = (ncpus - g * 32).div_ceil(4) as usize;
                out.push_str(&format!("{:0width$x}", group(g)));
            } else {
                out.push_str(&format!(",{:08x}", group(g)));
            }
        }
        out
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({})", self.to_list())
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list())
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut s = CpuSet::new();
        for c in iter {
            s.insert(c);
        }
        s
    }
}

/// In files and records a set is its list form.
impl serde::Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_list())
    }
}

impl<'de> serde::Deserialize<'de> for CpuSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        CpuSet::parse_list(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lists_parse_and_print_canonically() {
        let s = CpuSet::parse_list("8, 0-3,10-11,9").unwrap();
        assert_eq!(s.to_list(), "0-3,8-11");
        assert_eq!(s.len(), 8);
        assert_eq!(CpuSet::parse_list("").unwrap(), CpuSet::new());
        assert_eq!(CpuSet::parse_list("5").unwrap().to_list(), "5");
        assert_eq!(CpuSet::parse_list("1,3").unwrap().to_list(), "1,3");
        for bad in ["a", "3-1", "1-", "-2", "1,,2", "99999999"] {
            assert!(matches!(CpuSet::parse_list(bad), Err(CpuSetError::List { .. })), "{bad}");
        }
    }

    #[test]
    fn masks_match_the_kernel_format() {
        let four: CpuSet = (0..4).collect();
        assert_eq!(four.to_mask(4), "f");
        assert_eq!(four.to_mask(2), "f", "never narrower than the set");
        assert_eq!(CpuSet::parse_list("0,2").unwrap().to_mask(8), "05");
        // Past 32 CPUs: groups of 8 hex digits, highest first.
        let wide: CpuSet = (0..40).collect();
        assert_eq!(wide.to_mask(40), "ff,ffffffff");
        assert_eq!(CpuSet::parse_list("64").unwrap().to_mask(72), "01,00000000,00000000");
        // Past 64: bits cross the word boundary of the representation.
        let s = CpuSet::parse_list("0,63,64,127,128").unwrap();
        assert_eq!(s.to_mask(130), "1,80000000,00000001,80000000,00000001");
        assert_eq!(CpuSet::parse_mask("1,80000000,00000001,80000000,00000001").unwrap(), s);
        assert_eq!(CpuSet::parse_mask("00000000,0000000f").unwrap().to_list(), "0-3");
        for bad in ["", "g", "123456789", "ff,,1"] {
            assert!(matches!(CpuSet::parse_mask(bad), Err(CpuSetError::Mask { .. })), "{bad:?}");
        }
    }

    #[test]
    fn set_algebra() {
        let a = CpuSet::parse_list("0-7").unwrap();
        let b = CpuSet::parse_list("4-11").unwrap();
        assert_eq!(a.union(&b).to_list(), "0-11");
        assert_eq!(a.intersection(&b).to_list(), "4-7");
        assert_eq!(a.difference(&b).to_list(), "0-3");
        assert!(a.difference(&a).is_empty());
        assert_eq!(CpuSet::parse_list("100").unwrap().difference(&CpuSet::parse_list("100").unwrap()), CpuSet::new());
    }

    proptest! {
        #[test]
        fn list_round_trips(cpus in proptest::collection::btree_set(0u32..300, 0..60)) {
            let s: CpuSet = cpus.iter().copied().collect();
            prop_assert_eq!(CpuSet::parse_list(&s.to_list()).unwrap(), s.clone());
            prop_assert_eq!(s.iter().collect::<Vec<_>>(), cpus.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn mask_round_trips(cpus in proptest::collection::btree_set(0u32..300, 0..60), extra in 0u32..100) {
            let s: CpuSet = cpus.iter().copied().collect();
            let n = s.iter().last().map_or(1, |c| c + 1) + extra;
            prop_assert_eq!(CpuSet::parse_mask(&s.to_mask(n)).unwrap(), s);
        }

        #[test]
        fn parsers_never_panic(text in "[0-9a-f,\\- ]{0,40}") {
            let _ = CpuSet::parse_list(&text);
            let _ = CpuSet::parse_mask(&text);
        }
    }
}
