//! The CRI container log format the kubelet reads (`kubectl logs`):
//! `<RFC3339Nano UTC timestamp> <stdout|stderr> <P|F> <content>\n`. `F` ends a line; `P` marks
//! a piece of one (output without a newline yet, or a line longer than the cap, split).

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

/// CRI-O's default: a line longer than this is written as several partial entries.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// Appends the CRI entries for one chunk of container output to `out`. Complete lines become
/// `F` entries; trailing bytes without a newline become a `P` entry now (they may be all the
/// container ever prints); lines over `max_line` are split into `P` pieces.
pub fn frame(ts: SystemTime, stream: Stream, chunk: &[u8], max_line: usize, out: &mut Vec<u8>) {
    let stamp = rfc3339_nano(ts);
    let max_line = max_line.max(1);
    let mut rest = chunk;
    while !rest.is_empty() {
        let (line, complete) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        rest = &rest[line.len() + usize::from(complete)..];
        let mut pieces = line.chunks(max_line).peekable();
        if line.is_empty() {
            entry(out, &stamp, stream, complete, b"");
        }
        while let Some(piece) = pieces.next() {
            entry(out, &stamp, stream, complete && pieces.peek().is_none(), piece);
        }
    }
}

fn entry(out: &mut Vec<u8>, stamp: &str, stream: Stream, full: bool, content: &[u8]) {
    out.extend_from_slice(stamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.name());
    out.extend_from_slice(if full { b" F " } else { b" P " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// `2006-01-02T15:04:05.999999999Z` with all nine fraction digits (RFC3339Nano parsers accept it).
pub fn rfc3339_nano(ts: SystemTime) -> String {
    let d = ts.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z", rem / 3600, rem / 60 % 60, rem % 60, d.subsec_nanos())
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn framed(chunk: &[u8], max: usize) -> String {
        let mut out = Vec::new();
        frame(at(1_475_713_029, 669_794_202), Stream::Stdout, chunk, max, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_nano(at(0, 0)), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339_nano(at(1_475_713_029, 669_794_202)), "2016-10-06T00:17:09.669794202Z");
        assert_eq!(rfc3339_nano(at(951_782_400, 1)), "2000-02-29T00:00:00.000000001Z");
    }

    #[test]
    fn full_and_partial_lines() {
        let ts = "2016-10-06T00:17:09.669794202Z";
        assert_eq!(framed(b"a\nb\n", 100), format!("{ts} stdout F a\n{ts} stdout F b\n"));
        assert_eq!(framed(b"a\npart", 100), format!("{ts} stdout F a\n{ts} stdout P part\n"));
        assert_eq!(framed(b"\n", 100), format!("{ts} stdout F \n"));
        assert_eq!(framed(b"abcdefg\n", 3), format!("{ts} stdout P abc\n{ts} stdout P def\n{ts} stdout F g\n"));
    }

    proptest! {
        /// Joining the contents back (P pieces glued, F ends a line) gives the original bytes.
        #[test]
        fn framing_round_trips(chunk in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x'), Just(b' ')], 0..200), max in 1usize..20) {
            let mut out = Vec::new();
            frame(at(1, 0), Stream::Stderr, &chunk, max, &mut out);
            let mut rebuilt = Vec::new();
            for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let mut parts = line.splitn(4, |b| *b == b' ');
                let (_, stream, tag, content) = (parts.next(), parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(b""));
                prop_assert_eq!(stream, b"stderr");
                prop_assert!(content.len() <= max);
                rebuilt.extend_from_slice(content);
                if tag == b"F" {
                    rebuilt.push(b'\n');
                }
            }
            prop_assert_eq!(rebuilt, chunk);
        }
    }
}
