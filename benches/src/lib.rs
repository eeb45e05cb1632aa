//! What the benches share: percentiles and span unions computed one way everywhere. The harness that runs a
//! real daemon, registry and images is the integration tests' (`crio-daemon/tests/common`),
//! included by path so the benches and the tests clean up the same way.
#![deny(unsafe_code)]

use std::time::Duration;

/// The `p` quantile (0..=1) of `samples`, nearest rank; zero for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut s = samples.to_vec();
    s.sort();
    s[((s.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize]
}

/// Total length of the union of `spans` (start, end): overlapping spans counted once.
pub fn union_length(mut spans: Vec<(u64, u64)>) -> u64 {
    spans.sort_unstable();
    let (mut total, mut cur): (u64, Option<(u64, u64)>) = (0, None);
    for (a, b) in spans {
        cur = match cur {
            Some((s, e)) if a <= e => Some((s, e.max(b))),
            Some((s, e)) => {
                total += e - s;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    total + cur.map_or(0, |(s, e)| e - s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let samples: Vec<Duration> = (1..=101).rev().map(ms).collect();
        assert_eq!(percentile(&samples, 0.5), ms(51));
        assert_eq!(percentile(&samples, 0.99), ms(100));
        assert_eq!(percentile(&samples, 1.0), ms(101));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn union_counts_overlaps_once() {
        assert_eq!(union_length(vec![(0, 10), (5, 15), (20, 30)]), 25);
        assert_eq!(union_length(vec![(20, 30), (0, 10)]), 20);
        assert_eq!(union_length(vec![(0, 10), (2, 3)]), 10);
        assert_eq!(union_length(vec![]), 0);
    }
}
