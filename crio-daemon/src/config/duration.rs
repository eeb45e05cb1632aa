//! Go-style durations (`1m30s`, `500ms`, `0s`) as CRI-O writes them in crio.conf.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GoDuration(pub Duration);

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid duration {input:?}: expected a number with a unit (ns, us, ms, s, m, h), e.g. \"1m30s\"")]
pub struct ParseDurationError {
    input: String,
}

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(Duration::ZERO);

    pub fn parse(input: &str) -> Result<Self, ParseDurationError> {
        let err = || ParseDurationError { input: input.to_string() };
        let s = input.trim();
        if s == "0" {
            return Ok(Self::ZERO);
        }
        if s.is_empty() {
            return Err(err());
        }
        let mut total = 0f64;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
            if num_len == 0 {
                return Err(err());
            }
            let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
            rest = &rest[num_len..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let nanos_per_unit = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(err()),
            };
            total += value * nanos_per_unit;
            rest = &rest[unit_len..];
        }
        Ok(Self(Duration::from_nanos(total as u64)))
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() != 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 || secs == 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        GoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_forms() {
        assert_eq!(GoDuration::parse("0s").unwrap().0, Duration::ZERO);
        assert_eq!(GoDuration::parse("0").unwrap().0, Duration::ZERO);
        assert_eq!(GoDuration::parse("1m30s").unwrap().0, Duration::from_secs(90));
        assert_eq!(GoDuration::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(GoDuration::parse("1.5h").unwrap().0, Duration::from_secs(5400));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "10", "s", "1x", "1m30", "--1s"] {
            assert!(GoDuration::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(secs in 0u64..1_000_000) {
            let d = GoDuration(Duration::from_secs(secs));
            prop_assert_eq!(GoDuration::parse(&d.to_string()).unwrap(), d);
        }
    }
}
