//! Rate limits: one quota per source, and a cheap per-client-IP guard.
//!
//! Two limiters, checked at different points on purpose:
//!
//! - the **per-IP** limiter runs before the body is read and before any
//!   authentication, so a flood of forged requests from one address costs a
//!   hash-map lookup, not an HMAC each. Its default is generous because a
//!   vendor sends all of a merchant's traffic from few addresses;
//! - the **per-source** limiter runs *after* authentication, so an attacker
//!   who does not hold the source's credentials cannot spend the vendor's
//!   quota.
//!
//! Both are GCRA limiters from `governor`, generic over its clock so tests
//! drive time with `FakeRelativeClock` instead of sleeping. A refusal carries
//! the limiter's own answer of when the next request would conform, which
//! becomes the `Retry-After` header (whole seconds, at least 1).
//!
//! On a config reload a source whose quota did not change keeps its limiter
//! (and so its current budget); a changed quota starts a fresh limiter.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// A rate: a sustained number of requests per second and a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed at once after a quiet period.
    pub burst: NonZeroU32,
}

impl Rate {
    /// A rate from plain numbers; `None` if either is zero.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        Some(Self {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst)?,
        })
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s (burst {})", self.per_second, self.burst)
    }
}

/// How long the client should wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, rounded up, at least 1.
    pub fn header_seconds(&self) -> u64 {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// The quota of one source.
pub struct SourceLimiter<C: Clock = DefaultClock> {
    rate: Rate,
    limiter: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for SourceLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLimiter")
            .field("rate", &self.rate)
            .finish()
    }
}

impl SourceLimiter {
    /// A limiter on the real clock.
    pub fn new(rate: Rate) -> Self {
        Self::with_clock(rate, DefaultClock::default())
    }
}

impl<C: Clock + Clone> SourceLimiter<C> {
    /// A limiter on a given clock (tests pass a fake one).
    pub fn with_clock(rate: Rate, clock: C) -> Self {
        Self {
            rate,
            limiter: RateLimiter::direct_with_clock(rate.quota(), clock.clone()),
            clock,
        }
    }

    /// The configured rate, to decide whether a reload may keep this limiter.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one request from the budget, or says when one will be available.
    pub fn check(&self) -> Result<(), RetryAfter> {
        self.limiter
            .check()
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }
}

/// Per-client-address budgets, checked before any authentication work.
///
/// An IPv6 client usually holds a whole /64 (and can pick any address in
/// it), so IPv6 addresses share the budget of their network prefix
/// (`server.ipv6_prefix_len`, /64 by default); IPv4-mapped IPv6 addresses
/// count as the IPv4 address they carry.
pub struct IpLimiter<C: Clock = DefaultClock> {
    rate: Rate,
    ipv6_prefix_len: u8,
    limiter: RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for IpLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpLimiter")
            .field("rate", &self.rate)
            .finish()
    }
}

/// The address that stands for one client in per-address limits: an IPv4
/// address (IPv4-mapped IPv6 included) as it is, an IPv6 address as its
/// `ipv6_prefix_len`-bit network.
pub fn client_key(ip: IpAddr, ipv6_prefix_len: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, ipv6_prefix_len.clamp(1, 128))
            .map_or(IpAddr::V6(v6), |net| IpAddr::V6(net.trunc().addr())),
        v4 => v4,
    }
}

/// The default IPv6 prefix that shares one budget.
pub const DEFAULT_IPV6_PREFIX_LEN: u8 = 64;

impl IpLimiter {
    /// A limiter on the real clock, IPv6 clients keyed by their
    /// `ipv6_prefix_len`-bit network.
    pub fn new(rate: Rate, ipv6_prefix_len: u8) -> Self {
        Self::with_clock(rate, DefaultClock::default()).keyed_by(ipv6_prefix_len)
    }
}

impl<C: Clock + Clone> IpLimiter<C> {
    /// A limiter on a given clock (tests pass a fake one).
    pub fn with_clock(rate: Rate, clock: C) -> Self {
        Self {
            rate,
            ipv6_prefix_len: DEFAULT_IPV6_PREFIX_LEN,
            limiter: RateLimiter::dashmap_with_clock(rate.quota(), clock.clone()),
            clock,
        }
    }

    /// The same limiter with IPv6 clients keyed by a `prefix_len`-bit network
    /// (clamped to 1..=128).
    pub fn keyed_by(mut self, prefix_len: u8) -> Self {
        self.ipv6_prefix_len = prefix_len.clamp(1, 128);
        self
    }

    /// The IPv6 prefix length that shares one budget.
    pub fn ipv6_prefix_len(&self) -> u8 {
        self.ipv6_prefix_len
    }

    /// The key whose budget `ip` spends.
    fn budget_key(&self, ip: IpAddr) -> IpAddr {
        client_key(ip, self.ipv6_prefix_len)
    }

    /// The configured rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one request from `ip`'s budget, or says when one will be available.
    pub fn check(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.limiter
            .check_key(&self.budget_key(ip))
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }

    /// Forgets addresses whose budget is full again, so the table does not
    /// grow with every address ever seen; called periodically.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv6_clients_share_their_64_and_mapped_v4_is_v4() {
        let limiter = IpLimiter::new(Rate::new(1, 2).unwrap(), 64);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(b).is_ok());
        assert!(limiter.check(a).is_err(), "one budget for the whole /64");
        assert!(limiter.check(other).is_ok(), "the next /64 has its own");
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(limiter.check(v4).is_ok());
        assert!(limiter.check(mapped).is_ok());
        assert!(
            limiter.check(v4).is_err(),
            "a mapped address is its IPv4 address"
        );
    }

    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn a_source_gets_its_burst_then_waits_for_the_refill() {
        let clock = FakeRelativeClock::default();
        let limiter = SourceLimiter::with_clock(Rate::new(2, 3).unwrap(), clock.clone());
        for _ in 0..3 {
            assert_eq!(limiter.check(), Ok(()));
        }
        let wait = limiter.check().unwrap_err();
        // 2 per second: the next cell frees up after 500 ms.
        assert_eq!(wait.0, Duration::from_millis(500));
        assert_eq!(wait.header_seconds(), 1);
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.check(), Ok(()));
        assert!(limiter.check().is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let clock = FakeRelativeClock::default();
        // One request every 5 s (per_second must be >= 1, so use a slow quota via burst 1 at 1/s and advance).
        let limiter = SourceLimiter::with_clock(Rate::new(1, 1).unwrap(), clock.clone());
        assert_eq!(limiter.check(), Ok(()));
        clock.advance(Duration::from_millis(250));
        let wait = limiter.check().unwrap_err();
        assert_eq!(wait.0, Duration::from_millis(750));
        assert_eq!(wait.header_seconds(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1_001)).header_seconds(), 2);
        assert_eq!(RetryAfter(Duration::ZERO).header_seconds(), 1);
    }

    #[test]
    fn one_address_running_dry_does_not_touch_another() {
        let clock = FakeRelativeClock::default();
        let limiter = IpLimiter::with_clock(Rate::new(1, 2).unwrap(), clock.clone());
        let flood: IpAddr = "198.51.100.7".parse().unwrap();
        let vendor: IpAddr = "203.0.113.10".parse().unwrap();
        assert!(limiter.check(flood).is_ok());
        assert!(limiter.check(flood).is_ok());
        assert!(limiter.check(flood).is_err());
        assert!(limiter.check(vendor).is_ok());
        assert_eq!(limiter.tracked(), 2);
        clock.advance(Duration::from_secs(10));
        limiter.forget_idle();
        assert_eq!(limiter.tracked(), 0, "idle addresses are forgotten");
        assert!(limiter.check(flood).is_ok());
    }
}
