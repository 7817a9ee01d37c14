//! Which stalled links to reset, and when. Pure bookkeeping: the node reports each link's
//! stall state after it pumps it, and asks which links are due.
//!
//! A link is stalled while bytes wait for its local socket and the socket takes none (a router
//! or client that does not read). Its stream then keeps up to one stream window of the QUIC
//! connection's flow-control credit unread; enough such links would leave the others no
//! credit. Two rules bound that (docs/ARCHITECTURE.md, "Flow control is isolation"):
//! - a link stalled for `relay.stall_timeout` is reset;
//! - the links stalled for at least [`STALL_GRACE`] may together hold at most
//!   `relay.stall_budget` (each counted at a full stream window); past it the longest-stalled
//!   are reset at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A link must have been stalled this long to count against the budget: a busy link whose
/// router is a moment behind is not stalled.
pub const STALL_GRACE: Duration = Duration::from_secs(1);
/// How often stalled links are looked at (when there are any).
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Why a stalled link is reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallVerdict {
    /// Stalled for longer than `relay.stall_timeout`.
    Timeout,
    /// One of the longest-stalled links while stalled links exceed `relay.stall_budget`.
    OverBudget,
}

pub struct StallTracker {
    since: HashMap<usize, Instant>,
    timeout: Duration,
    /// How many links may be stalled past the grace at once.
    budget_links: usize,
}

impl StallTracker {
    /// `window`: the most one stalled link can hold (`quic.max_stream_window`).
    pub fn new(timeout: Duration, budget: u64, window: u64) -> StallTracker {
        StallTracker {
            since: HashMap::new(),
            timeout,
            budget_links: usize::try_from(budget / window.max(1))
                .unwrap_or(usize::MAX)
                .max(1),
        }
    }

    /// Records a link's state after a pump: stalled since `since`, or not stalled.
    pub fn update(&mut self, key: usize, since: Option<Instant>) {
        match since {
            Some(t) => {
                self.since.insert(key, t);
            }
            None => {
                self.since.remove(&key);
            }
        }
    }

    pub fn remove(&mut self, key: usize) {
        self.since.remove(&key);
    }

    pub fn len(&self) -> usize {
        self.since.len()
    }

    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }

    /// The links to reset at `now`, longest-stalled first.
    pub fn due(&self, now: Instant) -> Vec<(usize, StallVerdict)> {
        let mut graced: Vec<(Instant, usize)> = self
            .since
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= STALL_GRACE)
            .map(|(k, t)| (*t, *k))
            .collect();
        graced.sort_unstable();
        let over = graced.len().saturating_sub(self.budget_links);
        graced
            .iter()
            .enumerate()
            .filter_map(|(i, (t, k))| {
                if now.saturating_duration_since(*t) >= self.timeout {
                    Some((*k, StallVerdict::Timeout))
                } else if i < over {
                    Some((*k, StallVerdict::OverBudget))
                } else {
                    None
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_link_stalled_past_the_timeout_is_due_and_one_that_drains_is_not() {
        let t0 = Instant::now();
        let mut s = StallTracker::new(Duration::from_secs(5), 64 * MIB, MIB);
        s.update(1, Some(t0));
        s.update(2, Some(t0));
        assert!(s.due(t0 + Duration::from_secs(4)).is_empty());
        s.update(2, None);
        assert_eq!(
            s.due(t0 + Duration::from_secs(5)),
            vec![(1, StallVerdict::Timeout)]
        );
        s.remove(1);
        assert!(s.is_empty());
    }

    #[test]
    fn past_the_budget_the_longest_stalled_go_first_and_only_after_the_grace() {
        let t0 = Instant::now();
        // Room for 3 stalled links.
        let mut s = StallTracker::new(Duration::from_secs(60), 3 * MIB, MIB);
        for k in 0..5 {
            s.update(k, Some(t0 + Duration::from_millis(10 * k as u64)));
        }
        // Within the grace nobody counts.
        assert!(s.due(t0 + Duration::from_millis(500)).is_empty());
        let due = s.due(t0 + Duration::from_secs(2));
        assert_eq!(
            due,
            vec![(0, StallVerdict::OverBudget), (1, StallVerdict::OverBudget)]
        );
    }

    #[test]
    fn a_budget_below_one_window_still_allows_one_link() {
        let t0 = Instant::now();
        let mut s = StallTracker::new(Duration::from_secs(60), 10, MIB);
        s.update(7, Some(t0));
        assert!(s.due(t0 + Duration::from_secs(2)).is_empty());
    }
}
