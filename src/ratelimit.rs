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
pub struct IpLimiter<C: Clock = DefaultClock> {
    rate: Rate,
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

impl IpLimiter {
    /// A limiter on the real clock.
    pub fn new(rate: Rate) -> Self {
        Self::with_clock(rate, DefaultClock::default())
    }
}

impl<C: Clock + Clone> IpLimiter<C> {
    /// A limiter on a given clock (tests pass a fake one).
    pub fn with_clock(rate: Rate, clock: C) -> Self {
        Self {
            rate,
            limiter: RateLimiter::dashmap_with_clock(rate.quota(), clock.clone()),
            clock,
        }
    }

    /// The configured rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one request from `ip`'s budget, or says when one will be available.
    pub fn check(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.limiter
            .check_key(&ip)
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
