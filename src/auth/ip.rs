//! IP allowlists for vendors that cannot sign (Nexio simplified webhooks).
//!
//! Behind a load balancer the TCP peer is the proxy, not the vendor. The
//! `X-Forwarded-For` header is read only when the peer is one of
//! `server.trusted_proxies`, because anyone can write that header. The
//! client is the right-most address that is not itself a trusted proxy.

use std::net::IpAddr;

use hyper::HeaderMap;
use ipnet::IpNet;

/// Networks a source accepts requests from.
#[derive(Debug, Clone)]
pub struct IpAllowList {
    nets: Vec<IpNet>,
}

impl IpAllowList {
    /// An allowlist of these networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Whether `ip` falls in any listed network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The address of the party that sent the request.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !trusted(&client) {
                    return client;
                }
            }
            // A garbled hop ends the chain we can vouch for.
            Err(_) => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_header_is_ignored_from_untrusted_peers() {
        let ip = client_ip("198.51.100.7".parse().unwrap(), &xff("10.9.9.9"), &[]);
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn right_most_untrusted_hop_is_the_client() {
        let proxies = vec!["10.0.0.0/8".parse().unwrap()];
        let headers = xff("203.0.113.9, 198.51.100.7, 10.0.0.2");
        let ip = client_ip("10.0.0.1".parse().unwrap(), &headers, &proxies);
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mapped_ipv6_matches_ipv4_rules() {
        let list = IpAllowList::new(vec!["192.0.2.0/24".parse().unwrap()]);
        assert!(list.contains("::ffff:192.0.2.10".parse().unwrap()));
        assert!(!list.contains("192.0.3.1".parse().unwrap()));
    }
}
