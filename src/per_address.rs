//! How many connections each client address holds open at once.
//!
//! `server.max_connections` bounds the listener as a whole; without a bound
//! per address, one client can hold every slot with idle keep-alive
//! connections that each send a request now and then, and legitimate vendors
//! wait in the kernel backlog. Each accepted connection counts against its
//! client key (the address, or an IPv6 client's /64, as the per-address rate
//! limit keys it) until it closes; one over `server.max_connections_per_address`
//! is closed at once. Peers in `server.trusted_proxies` are not counted: a
//! load balancer carries every client's connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::ratelimit::client_key;

/// Open connections per client key.
#[derive(Debug)]
pub struct ConnectionsPerAddress {
    limit: usize,
    ipv6_prefix_len: u8,
    exempt: Vec<IpNet>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Counted {
    key: Option<IpAddr>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionsPerAddress {
    /// At most `limit` connections per client key; `exempt` peers are not counted.
    pub fn new(limit: usize, ipv6_prefix_len: u8, exempt: Vec<IpNet>) -> Self {
        Self {
            limit,
            ipv6_prefix_len,
            exempt,
            open: Arc::default(),
        }
    }

    /// Counts a new connection from `peer`, or `None` when its client
    /// already holds `limit`.
    pub fn open(&self, peer: IpAddr) -> Option<Counted> {
        if self.exempt.iter().any(|net| net.contains(&peer)) {
            return Some(Counted {
                key: None,
                open: self.open.clone(),
            });
        }
        let key = client_key(peer, self.ipv6_prefix_len);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Counted {
            key: Some(key),
            open: self.open.clone(),
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_holds_at_most_the_limit_and_gets_places_back() {
        let caps = ConnectionsPerAddress::new(2, 64, vec!["10.0.0.0/8".parse().unwrap()]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = caps.open(a).unwrap();
        let _second = caps.open(a).unwrap();
        assert!(caps.open(a).is_none(), "a third connection is refused");
        assert!(caps.open("192.0.2.2".parse().unwrap()).is_some());
        drop(first);
        assert!(
            caps.open(a).is_some(),
            "a closed connection gives its place back"
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let _x = caps.open(v6).unwrap();
        let _y = caps.open("2001:db8::2".parse().unwrap()).unwrap();
        assert!(
            caps.open("2001:db8::3".parse().unwrap()).is_none(),
            "one /64, one client"
        );
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| caps.open(proxy).unwrap()).collect();
        assert_eq!(held.len(), 10, "a trusted proxy is not counted");
    }
}
