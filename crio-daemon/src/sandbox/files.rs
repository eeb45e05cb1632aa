//! The files a pod's containers share: resolv.conf (from the pod's DNS config, else the
//! host's), hosts and hostname.

use crate::model::Dns;

/// resolv.conf for `dns`; `None` when the pod gave no DNS config (use the host's).
pub fn resolv_conf(dns: &Dns) -> Option<String> {
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return None;
    }
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Some(out)
}

/// /etc/hosts for a pod: localhost entries and the pod's own name on its first IP.
pub fn hosts(hostname: &str, ip: Option<&str>) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_from_dns_config() {
        let dns = Dns {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(resolv_conf(&dns).unwrap(), "search ns.svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n");
        assert_eq!(resolv_conf(&Dns::default()), None);
    }

    #[test]
    fn hosts_names_the_pod() {
        let h = hosts("web-0", Some("10.85.0.4"));
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.85.0.4\tweb-0\n"));
        assert!(!hosts("pod-x", None).contains("pod-x"));
    }
}
