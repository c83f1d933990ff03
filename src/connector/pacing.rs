//! Keeps each courier account within its connector's declared rate limit:
//! a burst of up to `requests`, then one request every `per / requests`
//! (the generic cell rate algorithm). A request reserves its slot before it
//! waits, so callers waiting together get slots one after another.
//!
//! ```yaml
//! rate_limit: { per_account: { requests: 10, per: 1s } }
//! ```

use super::RateLimit;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When each account's next request is due at the steady rate.
#[derive(Debug, Clone, Default)]
pub struct Pacing {
    due: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Pacing {
    /// Reserves a request for `account` under `limit` at `now`; returns how
    /// long the caller must wait before sending it.
    pub fn reserve(&self, account: &str, limit: RateLimit, now: Instant) -> Duration {
        let interval = limit.per / limit.requests.max(1);
        // A burst may run this far ahead of the steady rate.
        let burst = limit.per.saturating_sub(interval);
        // A poisoned lock only means another caller panicked mid-update;
        // the times in it are still usable.
        let mut due = self
            .due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = due.get(account).map_or(now, |&at| at.max(now));
        due.insert(account.to_string(), next + interval);
        next.saturating_duration_since(now + burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, per_ms: u64) -> RateLimit {
        RateLimit {
            requests,
            per: Duration::from_millis(per_ms),
        }
    }

    #[test]
    fn a_burst_goes_at_once_and_the_rest_is_spaced() {
        let pacing = Pacing::default();
        let now = Instant::now();
        let waits: Vec<u128> = (0..7)
            .map(|_| {
                pacing
                    .reserve("courier-main", limit(4, 1000), now)
                    .as_millis()
            })
            .collect();
        assert_eq!(waits, vec![0, 0, 0, 0, 250, 500, 750]);
    }

    #[test]
    fn accounts_are_paced_apart_and_idle_time_refills() {
        let pacing = Pacing::default();
        let now = Instant::now();
        let one = limit(1, 1000);
        assert_eq!(pacing.reserve("a", one, now), Duration::ZERO);
        assert_eq!(pacing.reserve("b", one, now), Duration::ZERO);
        assert_eq!(pacing.reserve("a", one, now), Duration::from_secs(1));
        // Long after, the account may send at once again.
        let later = now + Duration::from_secs(10);
        assert_eq!(pacing.reserve("a", one, later), Duration::ZERO);
        assert_eq!(
            pacing.reserve("a", one, later + Duration::from_millis(400)),
            Duration::from_millis(600)
        );
    }
}
