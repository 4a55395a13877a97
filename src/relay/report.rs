//! Read-only views of the relay's state for the user: every message held
//! (with its route) and every ack tombstone, one row each, for the
//! front end's inspection commands.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Relay;
use crate::address::Address;
use crate::message::MessageId;

/// One message this node holds: for someone else, or one of our own not
/// yet delivered (`own`). Rows are what the relay already tracks; nothing
/// is kept for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRow {
    /// The message id (for our own messages, the id the user knows it by).
    pub id: MessageId,
    /// Whom it is for.
    pub recipient: Address,
    /// Who wrote it (its signature is checked before a copy is held, so
    /// it is always known; `None` is kept for records that lack it).
    pub sender: Option<Address>,
    /// One of our own messages, not yet delivered.
    pub own: bool,
    /// Since this node took it (since the start for copies restored from
    /// the store: the time it was first taken is not stored).
    pub age: Duration,
    /// When it expires, ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// `Store` requests this node may still send for it.
    pub budget_left: u32,
    /// Hops the copies it passes on may still travel.
    pub hops_left: u32,
    /// When it is next offered to peers, from now (zero if due);
    /// `None` once the budget is spent (it is then held passively, for
    /// its recipient to collect).
    pub next_attempt: Option<Duration>,
    /// Endpoints of the peers known to hold a copy (at most
    /// `max_tracked_peers`).
    pub holders: Vec<SocketAddr>,
    /// Size of the (sealed) body in bytes.
    pub bytes: usize,
}

/// One acknowledgement kept as a tombstone: late copies of its message
/// are answered with it and never held again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TombstoneRow {
    /// The acknowledged message.
    pub id: MessageId,
    /// When the tombstone is forgotten, ms since the Unix epoch.
    pub keep_until_ms: u64,
    /// Whether this node has started routing the ack towards the sender.
    pub routed: bool,
    /// The message's sender (carried by the signed ack).
    pub sender: Address,
    /// The message's recipient, who signed the ack.
    pub recipient: Address,
}

impl Relay {
    /// Every message held, soonest to expire first (ties by id). Copies
    /// already expired at `wall_ms` but not yet swept are left out.
    pub fn held_report(&self, now: Instant, wall_ms: u64) -> Vec<HeldRow> {
        let mut rows: Vec<HeldRow> = self
            .held
            .iter()
            .filter(|(_, h)| h.envelope.expires_at_ms() > wall_ms)
            .map(|(id, h)| {
                let e = &h.envelope;
                let user_id = if h.own {
                    self.outbox.get(id).map_or(*id, |o| o.user_id)
                } else {
                    *id
                };
                HeldRow {
                    id: user_id,
                    recipient: e.recipient(),
                    sender: Some(e.sender()),
                    own: h.own,
                    age: now.saturating_duration_since(h.taken_at),
                    expires_at_ms: e.expires_at_ms(),
                    budget_left: h.route.budget,
                    hops_left: h.route.hops_left,
                    next_attempt: (h.route.budget > 0)
                        .then_some(h.route.next_attempt)
                        .flatten()
                        .map(|at| at.saturating_duration_since(now)),
                    holders: h.route.holders().map(|(_, a)| *a).collect(),
                    bytes: e.body().len(),
                }
            })
            .collect();
        rows.sort_by_key(|r| (r.expires_at_ms, r.id));
        rows
    }

    /// Every ack tombstone still kept at `wall_ms`, soonest forgotten
    /// first (ties by id).
    pub fn tombstones_report(&self, wall_ms: u64) -> Vec<TombstoneRow> {
        let mut rows: Vec<TombstoneRow> = self
            .tombstones
            .iter()
            .filter(|t| t.keep_until_ms > wall_ms)
            .map(|t| TombstoneRow {
                id: t.ack.id,
                keep_until_ms: t.keep_until_ms,
                routed: t.routed,
                sender: t.ack.sender,
                recipient: t.ack.recipient(),
            })
            .collect();
        rows.sort_by_key(|r| (r.keep_until_ms, r.id));
        rows
    }
}
