//! Which stalled links to reset, and when. Pure bookkeeping: the node reports each link's
//! state after it pumps it, and asks which links are due.
//!
//! Two states of a link's direction towards its local socket (router or client):
//! - *stalled*: bytes wait for the socket and it has taken none since (a reader that stopped);
//! - *holding*: the bytes for the socket fill the relay buffer, so the rest stays unread in
//!   quiche and holds the connection's flow-control credit (a reader that stopped, or one
//!   slower than the peer's sender).
//!
//! Enough holding links would leave the others no credit. Two rules bound that
//! (docs/ARCHITECTURE.md, "Flow control is isolation"):
//! - a link stalled for `relay.stall_timeout` is reset;
//! - the links holding for at least [`STALL_GRACE`] may together hold at most
//!   `relay.stall_budget` bytes of credit (counted as they are: unread in quiche; the relay
//!   buffer's bytes were read, their credit is back); past it the longest-holding are reset
//!   at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A link must have held credit this long to count against the budget: a busy link whose
/// reader is a moment behind is not holding anything for long.
pub const STALL_GRACE: Duration = Duration::from_secs(1);
/// How often stalled and holding links are looked at (when there are any).
pub const CHECK_EVERY: Duration = Duration::from_millis(100);
/// A link that holds again within this long after it stopped keeps its holding age: a slow
/// reader whose socket takes a burst now and then (its relay buffer empties for a moment,
/// quiche's unread bytes do not) has been holding all along, and must not look younger than
/// the links that opened after it.
pub const HOLDING_GAP: Duration = Duration::from_millis(250);

/// Why a link is reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallVerdict {
    /// Stalled for longer than `relay.stall_timeout`.
    Timeout,
    /// Among the longest-holding links while holding links exceed `relay.stall_budget`.
    OverBudget,
}

/// A link's holding: since when, and since when it has not held (within [`HOLDING_GAP`]).
#[derive(Clone, Copy)]
struct Holding {
    since: Instant,
    paused: Option<Instant>,
}

pub struct StallTracker {
    stalled: HashMap<usize, Instant>,
    holding: HashMap<usize, Holding>,
    timeout: Duration,
    budget: u64,
}

impl StallTracker {
    pub fn new(timeout: Duration, budget: u64) -> StallTracker {
        StallTracker {
            stalled: HashMap::new(),
            holding: HashMap::new(),
            timeout,
            budget,
        }
    }

    /// New `relay.stall_timeout` and `relay.stall_budget` (a reload), for the next checks.
    pub fn set_limits(&mut self, timeout: Duration, budget: u64) {
        self.timeout = timeout;
        self.budget = budget;
    }

    /// Records a link's state after a pump at `now`.
    pub fn update(
        &mut self,
        key: usize,
        stalled: Option<Instant>,
        holding: Option<Instant>,
        now: Instant,
    ) {
        set(&mut self.stalled, key, stalled);
        match (holding, self.holding.get_mut(&key)) {
            (Some(since), Some(h)) => {
                // Holding again within the gap: the age goes on from the first start.
                if h.paused
                    .take()
                    .is_some_and(|p| now.saturating_duration_since(p) >= HOLDING_GAP)
                {
                    h.since = since;
                }
            }
            (Some(since), None) => {
                self.holding.insert(
                    key,
                    Holding {
                        since,
                        paused: None,
                    },
                );
            }
            (None, Some(h)) => {
                h.paused.get_or_insert(now);
            }
            (None, None) => {}
        }
    }

    /// Forgets the links that stopped holding longer than [`HOLDING_GAP`] ago.
    pub fn expire(&mut self, now: Instant) {
        self.holding.retain(|_, h| {
            h.paused
                .is_none_or(|p| now.saturating_duration_since(p) < HOLDING_GAP)
        });
    }

    pub fn remove(&mut self, key: usize) {
        self.stalled.remove(&key);
        self.holding.remove(&key);
    }

    /// The links stalled now.
    pub fn stalled_links(&self) -> Vec<usize> {
        self.stalled.keys().copied().collect()
    }

    /// Links stalled now.
    pub fn stalled(&self) -> usize {
        self.stalled.len()
    }

    /// Links holding credit now (or stopped for less than [`HOLDING_GAP`]).
    pub fn holding(&self) -> usize {
        self.holding.len()
    }

    /// Since when `key` has held credit, pauses shorter than [`HOLDING_GAP`] included (the age
    /// the budget ranks it by).
    pub fn holding_since(&self, key: usize) -> Option<Instant> {
        self.holding.get(&key).map(|h| h.since)
    }

    pub fn is_empty(&self) -> bool {
        self.stalled.is_empty() && self.holding.is_empty()
    }

    /// The links to reset at `now`, each once; `held` tells how many bytes a link holds.
    pub fn due(&self, now: Instant, held: impl Fn(usize) -> u64) -> Vec<(usize, StallVerdict)> {
        let mut out: Vec<(usize, StallVerdict)> = self
            .stalled
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= self.timeout)
            .map(|(k, _)| (*k, StallVerdict::Timeout))
            .collect();
        let mut graced: Vec<(Instant, usize, u64)> = self
            .holding
            .iter()
            .filter(|(k, h)| {
                now.saturating_duration_since(h.since) >= STALL_GRACE
                    && !out.iter().any(|(o, _)| o == *k)
            })
            .map(|(k, h)| (h.since, *k, held(*k)))
            .collect();
        graced.sort_unstable();
        let mut total: u64 = graced.iter().map(|(_, _, b)| *b).sum();
        for (_, k, bytes) in graced {
            if total <= self.budget {
                break;
            }
            total -= bytes;
            out.push((k, StallVerdict::OverBudget));
        }
        out
    }
}

fn set(map: &mut HashMap<usize, Instant>, key: usize, since: Option<Instant>) {
    match since {
        Some(t) => {
            map.insert(key, t);
        }
        None => {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_link_stalled_past_the_timeout_is_due_and_one_that_drains_is_not() {
        let t0 = Instant::now();
        let mut s = StallTracker::new(Duration::from_millis(500), 64 * MIB);
        s.update(1, Some(t0), None, t0);
        s.update(2, Some(t0), None, t0);
        assert!(s.due(t0 + Duration::from_millis(400), |_| 0).is_empty());
        s.update(2, None, None, t0);
        // The timeout applies even when it is shorter than the budget's grace.
        assert_eq!(
            s.due(t0 + Duration::from_millis(500), |_| 0),
            vec![(1, StallVerdict::Timeout)]
        );
        s.remove(1);
        assert!(s.is_empty());
    }

    #[test]
    fn past_the_budget_the_longest_holding_go_first_and_only_after_the_grace() {
        let t0 = Instant::now();
        let mut s = StallTracker::new(Duration::from_secs(60), 3 * MIB);
        for k in 0..5 {
            s.update(k, None, Some(t0 + Duration::from_millis(10 * k as u64)), t0);
        }
        // Within the grace nobody counts.
        assert!(s.due(t0 + Duration::from_millis(500), |_| MIB).is_empty());
        assert_eq!(
            s.due(t0 + Duration::from_secs(2), |_| MIB),
            vec![(0, StallVerdict::OverBudget), (1, StallVerdict::OverBudget)]
        );
        // Counted as they are: links holding little do not fill the budget.
        assert!(s.due(t0 + Duration::from_secs(2), |_| 100).is_empty());
    }

    #[test]
    fn a_link_due_for_its_timeout_is_not_counted_twice() {
        let t0 = Instant::now();
        let mut s = StallTracker::new(Duration::from_secs(1), MIB);
        s.update(1, Some(t0), Some(t0), t0);
        s.update(2, None, Some(t0 + Duration::from_millis(1)), t0);
        let due = s.due(t0 + Duration::from_secs(5), |_| MIB);
        assert_eq!(due, vec![(1, StallVerdict::Timeout)]);
    }

    #[test]
    fn a_moments_gap_keeps_a_links_holding_age_and_a_long_one_ends_it() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = StallTracker::new(Duration::from_secs(60), MIB);
        s.update(1, None, Some(t0), t0);
        s.update(2, None, Some(ms(10)), ms(10));
        // Link 1's buffer empties for a moment, then fills again: it is still the older.
        s.update(1, None, None, ms(20));
        s.update(1, None, Some(ms(30)), ms(30));
        assert_eq!(
            s.due(ms(2000), |_| MIB),
            vec![(1, StallVerdict::OverBudget)]
        );
        // Link 1 stops holding for longer than the gap: forgotten, and a new start is young.
        s.update(1, None, None, ms(2000));
        s.expire(ms(2100));
        assert_eq!(s.holding(), 2);
        s.expire(ms(2000) + HOLDING_GAP);
        assert_eq!(s.holding(), 1);
        s.update(1, None, Some(ms(2400)), ms(2400));
        assert_eq!(
            s.due(ms(3500), |_| MIB),
            vec![(2, StallVerdict::OverBudget)]
        );
    }
}
