//! What the benches share: percentiles computed one way everywhere. The harness that runs a
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
}
