//! One k-bucket: contacts in least-recently-seen order, a replacement cache
//! and at most one candidate waiting while the oldest contact is pinged.

use std::time::{Duration, Instant};

use super::prefix::{prefix, LoopbackPrefixes};
use crate::address::Address;
use crate::wire::Contact;

/// A contact in a bucket and what we know of its liveness.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Who and where.
    pub contact: Contact,
    /// When it last answered us or sent us a request.
    pub last_seen: Instant,
    /// Requests to it that failed in a row.
    pub failures: u32,
    /// Smoothed round trip of its answers (RFC 6298 SRTT, gain 1/8, from
    /// requests answered without a retransmission); `None` until one.
    pub rtt: Option<Duration>,
}

impl Entry {
    /// Fold one measured round trip into the smoothed one.
    pub fn sample_rtt(&mut self, r: Duration) {
        self.rtt = Some(match self.rtt {
            None => r,
            Some(s) => s * 7 / 8 + r / 8,
        });
    }
}

/// A verified contact waiting for the oldest entry's liveness check.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The newcomer that would take the slot.
    pub candidate: Contact,
    /// The oldest entry, being pinged.
    pub oldest: Address,
}

/// A k-bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// Least recently seen first.
    pub(crate) entries: Vec<Entry>,
    /// Verified contacts that did not fit; most recently seen last (a few:
    /// `replacement_cache`).
    pub(crate) replacements: Vec<Contact>,
    /// Newcomer waiting on a ping of the oldest entry (boxed: a table has
    /// 160 buckets and few of them ever have one).
    pub(crate) pending: Option<Box<Pending>>,
    /// Last time a lookup touched this bucket's range or a contact was added.
    pub(crate) last_activity: Instant,
}

impl Bucket {
    pub(crate) fn new(now: Instant) -> Bucket {
        Bucket {
            entries: Vec::new(),
            replacements: Vec::new(),
            pending: None,
            last_activity: now,
        }
    }

    /// Contacts, least recently seen first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Contacts waiting for a free slot.
    pub fn replacements(&self) -> impl Iterator<Item = &Contact> {
        self.replacements.iter()
    }

    /// The entry a newcomer may be checked against: the least recently
    /// seen one that failed a request, else the oldest if it has not been
    /// heard from within `fresh`. `None`: every entry is in good standing.
    pub(crate) fn doubtful(&self, now: Instant, fresh: std::time::Duration) -> Option<Contact> {
        self.entries
            .iter()
            .find(|e| e.failures > 0)
            .or_else(|| {
                self.entries
                    .first()
                    .filter(|e| now.saturating_duration_since(e.last_seen) >= fresh)
            })
            .map(|e| e.contact)
    }

    pub(crate) fn position(&self, id: &Address) -> Option<usize> {
        self.entries.iter().position(|e| e.contact.id == *id)
    }

    /// Move entry `i` to the most-recently-seen end.
    pub(crate) fn touch_at(&mut self, i: usize, now: Instant) {
        let mut e = self.entries.remove(i);
        e.last_seen = now;
        e.failures = 0;
        self.entries.push(e);
    }

    pub(crate) fn cache(&mut self, contact: Contact, cap: usize) {
        self.replacements.retain(|c| c.id != contact.id);
        if cap == 0 {
            return;
        }
        while self.replacements.len() >= cap {
            self.replacements.remove(0);
        }
        self.replacements.push(contact);
    }

    /// Remove entry `i` and fill the slot from the pending candidate or the
    /// newest replacement that still respects the prefix limit. Returns
    /// whether the slot was filled.
    pub(crate) fn evict_at(
        &mut self,
        i: usize,
        now: Instant,
        max_per_prefix: usize,
        loopback: LoopbackPrefixes,
    ) -> bool {
        self.entries.remove(i);
        let fits = |entries: &[Entry], c: &Contact| match prefix(&c.addr, loopback) {
            None => true,
            Some(p) => {
                entries
                    .iter()
                    .filter(|e| prefix(&e.contact.addr, loopback) == Some(p))
                    .count()
                    < max_per_prefix
            }
        };
        let mut next = self.pending.take().map(|p| p.candidate);
        if next.is_some_and(|c| !fits(&self.entries, &c)) {
            next = None;
        }
        if next.is_none() {
            if let Some(j) = self
                .replacements
                .iter()
                .rposition(|c| fits(&self.entries, c))
            {
                next = Some(self.replacements.remove(j));
            }
        }
        match next {
            Some(c) => {
                self.entries.push(Entry {
                    contact: c,
                    last_seen: now,
                    failures: 0,
                    rtt: None,
                });
                true
            }
            None => false,
        }
    }
}
