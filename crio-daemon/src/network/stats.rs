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

/// The interface of the host's default route (`/proc/net/route`), where host-network pods'
/// traffic goes; "eth0" when there is none.
pub fn default_route_interface() -> String {
    std::fs::read_to_string("/proc/net/route").ok().and_then(|t| default_route(&t)).unwrap_or_else(|| "eth0".into())
}

fn default_route(text: &str) -> Option<String> {
    text.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let (name, destination) = (f.next()?, f.next()?);
        (destination == "00000000").then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_default_route() {
        let text = "Iface\tDestination\tGateway\tFlags\nens3\t0000A8C0\t00000000\t0001\nens4\t00000000\t0102A8C0\t0003\n";
        assert_eq!(default_route(text).as_deref(), Some("ens4"));
        assert_eq!(default_route("Iface\tDestination\n"), None);
    }

    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    5000      40    2    0    0     0          0         0     7000      50    3    0    0     0       0          0\n";
        assert_eq!(
            parse_net_dev(text),
            [InterfaceCounters { name: "eth0".into(), rx_bytes: 5000, rx_errors: 2, tx_bytes: 7000, tx_errors: 3 }]
        );
    }
}
