//! The catch-up window: after a start or a rejoin, messages held for us
//! arrive over a few seconds from different relays, in no useful order.
//! While the window is open the node keeps them (stored, in the inbox,
//! which orders them by creation time and id) instead of handing each out
//! as it comes; when it closes they are handed out together, in the order
//! they were written.
//!
//! The window closes once a `Pull` sent while it was open has been
//! answered (or all of them failed) and either the largest count a relay
//! reported has arrived or nothing has arrived for `catchup_quiet`; and in
//! any case `catchup_max` after it opened. A `Pull` to a contact that has
//! gone is not waited for: it would hold the messages for a whole request
//! timeout. Deterministic: it only reads the times it is given.

use std::time::{Duration, Instant};

/// One open window.
#[derive(Clone, Debug)]
struct Window {
    opened: Instant,
    /// `Pull`s sent while open and not yet answered or failed.
    pulls_out: usize,
    /// `Pull`s sent while open.
    pulls_sent: usize,
    /// `Pull`s answered while open.
    answered: usize,
    /// Largest count a `Pulled` answer reported (messages and acks).
    expected: u32,
    /// Messages that arrived while open.
    received: usize,
    /// Unshown messages the last time arrivals were counted.
    seen_unshown: usize,
    /// Last pull answer or message arrival (or the opening).
    last_activity: Instant,
}

impl Window {
    /// Whether the neighbourhood has been heard: a `Pull` answered, or
    /// every one failed.
    fn pulled(&self) -> bool {
        self.pulls_sent > 0 && (self.answered > 0 || self.pulls_out == 0)
    }
}

/// The catch-up window of one node (closed most of the time).
#[derive(Clone, Debug, Default)]
pub(crate) struct CatchUp {
    window: Option<Window>,
}

impl CatchUp {
    /// Open the window at `now` (kept as it is if already open);
    /// `unshown` is how many received messages wait to be shown now.
    pub(crate) fn open(&mut self, now: Instant, unshown: usize) {
        if self.window.is_none() {
            self.window = Some(Window {
                opened: now,
                pulls_out: 0,
                pulls_sent: 0,
                answered: 0,
                expected: 0,
                received: 0,
                seen_unshown: unshown,
                last_activity: now,
            });
        }
    }

    /// Whether messages were waiting when arrivals were last counted
    /// (kept back by the open window: restored ones or arrivals).
    pub(crate) fn kept_back(&self) -> bool {
        self.window.as_ref().is_some_and(|w| w.seen_unshown > 0)
    }

    /// Whether messages are being kept back.
    pub(crate) fn is_open(&self) -> bool {
        self.window.is_some()
    }

    /// A `Pull` went out (counted only while open).
    pub(crate) fn pull_sent(&mut self) {
        if let Some(w) = &mut self.window {
            w.pulls_out += 1;
            w.pulls_sent += 1;
        }
    }

    /// A `Pull` was answered with `count` (`None`: it failed). `counted`
    /// is false for a late answer whose failure was already counted.
    pub(crate) fn pull_done(&mut self, now: Instant, count: Option<u32>, counted: bool) {
        if let Some(w) = &mut self.window {
            if counted {
                w.pulls_out = w.pulls_out.saturating_sub(1);
            }
            if let Some(c) = count {
                w.expected = w.expected.max(c);
                w.answered += 1;
                w.last_activity = now;
            }
        }
    }

    /// The inbox now has `unshown` messages waiting: count new arrivals.
    pub(crate) fn observe(&mut self, now: Instant, unshown: usize) {
        if let Some(w) = &mut self.window {
            if unshown > w.seen_unshown {
                w.received += unshown - w.seen_unshown;
                w.last_activity = now;
            }
            w.seen_unshown = unshown;
        }
    }

    /// Whether the window should close at `now`.
    pub(crate) fn due(&self, now: Instant, quiet: Duration, max: Duration) -> bool {
        let Some(w) = &self.window else {
            return false;
        };
        if now >= w.opened + max {
            return true;
        }
        w.pulled()
            && ((w.expected > 0 && w.received >= w.expected as usize)
                || now >= w.last_activity + quiet)
    }

    /// When to look again (`None` when closed).
    pub(crate) fn deadline(&self, quiet: Duration, max: Duration) -> Option<Instant> {
        let w = self.window.as_ref()?;
        let cap = w.opened + max;
        Some(if w.pulled() {
            cap.min(w.last_activity + quiet)
        } else {
            cap
        })
    }

    /// Close the window.
    pub(crate) fn close(&mut self) {
        self.window = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_millis(1500);
    const M: Duration = Duration::from_secs(15);

    #[test]
    fn closes_when_the_reported_count_arrived_or_after_quiet_or_at_the_cap() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = CatchUp::default();
        assert!(!c.due(t0, Q, M), "closed: nothing to close");
        c.open(t0, 0);
        // No pull yet: only the cap closes it.
        assert!(!c.due(ms(14_000), Q, M));
        assert_eq!(c.deadline(Q, M), Some(t0 + M));
        c.pull_sent();
        c.pull_sent();
        c.pull_done(ms(100), Some(3), true);
        c.observe(ms(200), 2);
        assert!(!c.due(ms(400), Q, M), "2 of 3 arrived, not yet quiet");
        // The other pull is still out (its contact may be gone): not
        // waited for once one answered and it is quiet.
        assert!(c.due(ms(1700), Q, M), "quiet after an answer");
        c.pull_done(ms(300), None, true);
        c.observe(ms(500), 3);
        assert!(c.due(ms(500), Q, M), "all 3 arrived");

        // Every pull failed: quiet closes it.
        let mut c = CatchUp::default();
        c.open(t0, 0);
        c.pull_sent();
        assert!(!c.due(ms(5000), Q, M), "the only pull is still out");
        c.pull_done(ms(6000), None, true);
        assert!(c.due(ms(6000), Q, M), "nothing to wait for");

        let mut c = CatchUp::default();
        c.open(t0, 0);
        c.pull_sent();
        c.pull_done(ms(100), Some(0), true);
        assert!(!c.due(ms(1000), Q, M));
        assert_eq!(c.deadline(Q, M), Some(ms(1600)));
        assert!(c.due(ms(1600), Q, M), "quiet");

        let mut c = CatchUp::default();
        c.open(t0, 0);
        c.pull_sent();
        assert!(c.due(ms(15_000), Q, M), "capped");
        c.close();
        assert!(!c.is_open());
    }
}
