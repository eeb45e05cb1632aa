//! Interface counters of a pod's network namespace, read from `/proc/thread-self/net/dev` on a
//! thread inside it (sysfs would show the namespace that mounted it, not the pod's).

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// Parses /proc/net/dev, leaving out loopback.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            (f.len() >= 16 && name.trim() != "lo").then(|| InterfaceCounters {
                name: name.trim().into(),
                rx_bytes: f[0],
                rx_errors: f[2],
                tx_bytes: f[8],
                tx_errors: f[10],
            })
        })
        .collect()
}

/// Counters of every interface in the namespace pinned at `netns`.
pub fn read(netns: &Path) -> std::io::Result<Vec<InterfaceCounters>> {
    crate::namespace::run_in_net(netns, || std::fs::read_to_string("/proc/thread-self/net/dev").map(|t| parse_net_dev(&t)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    5000      40    2    0    0     0          0         0     7000      50    3    0    0     0       0          0\n";
        assert_eq!(
            parse_net_dev(text),
            [InterfaceCounters { name: "eth0".into(), rx_bytes: 5000, rx_errors: 2, tx_bytes: 7000, tx_errors: 3 }]
        );
    }
}
