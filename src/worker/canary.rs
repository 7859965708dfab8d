//! A canary beside a plugin's stable revision: which requests it answers, and when a worker
//! stops routing to it on its own.
//!
//! A request carrying `Mofa-Route-Key` is placed by a hash of the plugin name and that key, so
//! one customer (say) sees one variant on every worker and for as long as the canary runs; any
//! other request goes to the canary with the configured probability. Each worker tallies the
//! canary's answers; when a revision sets `max_error_rate`, the first worker to see the rate
//! exceeded over at least `min_requests` of its own requests drops the canary (every worker
//! judges from its own tally: none may write the bucket) and announces it as a `rolled_back`
//! reload event.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::distribution::Canary;

/// Requests are placed in this many slots; the canary takes `percent` of them.
const SLOTS: u64 = 10_000;

/// How one canary is routed and how it is doing on this worker.
#[derive(Debug)]
pub(crate) struct CanaryRoute {
    /// Slots (of [`SLOTS`]) the canary takes.
    slots: u64,
    /// The share as published, for listings.
    pub(crate) percent: f64,
    max_error_rate: Option<f64>,
    min_requests: u64,
    requests: AtomicU64,
    errors: AtomicU64,
    tripped: AtomicBool,
}

impl CanaryRoute {
    pub(crate) fn new(canary: &Canary) -> Self {
        Self {
            slots: ((canary.percent / 100.0) * SLOTS as f64).round() as u64,
            percent: canary.percent,
            max_error_rate: canary.max_error_rate,
            min_requests: canary.min_requests,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
        }
    }

    /// Whether a request of `plugin` with this route key (if any) goes to the canary.
    pub(crate) fn takes(&self, plugin: &str, route_key: Option<&str>) -> bool {
        let slot = match route_key {
            Some(key) => route_slot(plugin, key),
            None => fastrand::u64(0..SLOTS),
        };
        slot < self.slots
    }

    /// Counts one answer of the canary; returns the reason to drop it when this answer is the
    /// one that takes its error rate over `max_error_rate` (once per canary).
    pub(crate) fn tally(&self, failed: bool) -> Option<String> {
        let requests = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let errors = if failed {
            self.errors.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.errors.load(Ordering::Relaxed)
        };
        let limit = self.max_error_rate?;
        let rate = errors as f64 / requests as f64;
        if requests < self.min_requests.max(1) || rate <= limit {
            return None;
        }
        if self.tripped.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(format!(
            "canary error rate {:.1}% over {requests} requests on this worker exceeds its max_error_rate of {:.1}% (min_requests {}); the stable revision serves every request again",
            rate * 100.0,
            limit * 100.0,
            self.min_requests
        ))
    }
}

/// The slot a route key falls in for `plugin`: the first 8 bytes of SHA-256 over both, so
/// every worker (whatever its build) places a key alike.
fn route_slot(plugin: &str, key: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(plugin.as_bytes())
        .chain_update([0u8])
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(percent: f64, max_error_rate: Option<f64>, min_requests: u64) -> CanaryRoute {
        CanaryRoute::new(&Canary {
            percent,
            stable: 1,
            max_error_rate,
            min_requests,
        })
    }

    #[test]
    fn a_route_key_always_lands_on_the_same_side() {
        let route = canary(30.0, None, 0);
        for key in ["alice", "bob", "carol", "customer-17"] {
            let first = route.takes("discount", Some(key));
            assert!((0..100).all(|_| route.takes("discount", Some(key)) == first));
        }
        let canaried = (0..10_000)
            .filter(|i| route.takes("discount", Some(&format!("customer-{i}"))))
            .count();
        assert!(
            (2_700..3_300).contains(&canaried),
            "{canaried} of 10,000 keys"
        );
    }

    #[test]
    fn a_hundred_percent_takes_everything_and_a_tiny_share_almost_nothing() {
        let all = canary(100.0, None, 0);
        assert!((0..1000).all(|_| all.takes("p", None)));
        let tiny = canary(0.01, None, 0);
        assert!((0..1000).filter(|_| tiny.takes("p", None)).count() < 20);
    }

    #[test]
    fn the_error_rate_trips_once_and_only_past_min_requests() {
        let route = canary(50.0, Some(0.2), 10);
        for _ in 0..9 {
            assert_eq!(route.tally(true), None, "under min_requests");
        }
        let reason = route.tally(true).expect("trips at the 10th");
        assert!(
            reason.contains("100.0%") && reason.contains("20.0%"),
            "{reason}"
        );
        assert_eq!(route.tally(true), None, "trips once");
        let healthy = canary(50.0, Some(0.5), 10);
        assert!((0..100).all(|i| healthy.tally(i % 4 == 0).is_none()));
        let unwatched = canary(50.0, None, 0);
        assert!((0..100).all(|_| unwatched.tally(true).is_none()));
    }
}
