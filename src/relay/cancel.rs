//! Withdrawing one of our own messages before it is delivered.
//!
//! A node can only stop what it does itself: it forgets the message (its
//! outbox entry, its draft or its own held copy), stops relaying it, and
//! writes the removal like any other change, so a restart does not bring
//! it back. Copies already placed at relays stay there and are relayed
//! until their TTL or budget runs out: the recipient may still get it.

use super::{Relay, RouteKey, Table};
use crate::address::Address;
use crate::message::MessageId;
use crate::relay::OutboxState;

/// What [`Relay::cancel`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelReport {
    /// The message, as the user knows it.
    pub id: MessageId,
    /// Its recipient.
    pub to: Address,
    /// It was still waiting for the recipient's key: no copy ever left
    /// this node.
    pub was_queued: bool,
    /// Relays known to hold a copy (they answered our `Store`): they keep
    /// relaying it until its TTL or budget runs out, and the recipient may
    /// still receive it.
    pub relays_holding: usize,
    /// Peers sent a copy that had not confirmed holding it.
    pub sent_unconfirmed: usize,
}

/// Why a message could not be cancelled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelError {
    /// No message with this id is known here.
    #[error("no message {0} is known to this node; check the id")]
    Unknown(MessageId),
    /// Its recipient already acknowledged it: there is nothing to withdraw.
    #[error("message {0} was already delivered")]
    AlreadyDelivered(MessageId),
    /// It expired undelivered: nothing is being tried any more.
    #[error("message {0} has already expired")]
    Expired(MessageId),
    /// Someone else's message (held for relaying, or received): only its
    /// sender can withdraw it.
    #[error("message {0} was not sent by this node; only its sender can cancel it")]
    NotOurs(MessageId),
}

impl Relay {
    /// Withdraw our own message `id` (the id [`Relay::send`] returned) not
    /// yet delivered: drop the draft, or the outbox entry and our own held
    /// copy, and stop relaying it; the removal is written with the next
    /// batch. No `MessageSent`, `Delivered` or `MessageExpired` is emitted
    /// for it afterwards: an ack that still arrives is checked and kept as
    /// a tombstone like any other, without an event.
    pub fn cancel(&mut self, id: MessageId) -> Result<CancelReport, CancelError> {
        if let Some(d) = self.drafts.remove(&id) {
            self.touch(Table::Drafts, id);
            return Ok(CancelReport {
                id,
                to: d.to,
                was_queued: true,
                relays_holding: 0,
                sent_unconfirmed: 0,
            });
        }
        let key = if self.outbox.contains(&id) {
            Some(id)
        } else {
            self.outbox
                .iter()
                .find(|(_, o)| o.user_id == id)
                .map(|(k, _)| *k)
        };
        let Some(key) = key else {
            return Err(if self.held.contains(&id) || self.inbox.contains(&id) {
                CancelError::NotOurs(id)
            } else {
                CancelError::Unknown(id)
            });
        };
        let Some(o) = self.outbox.get(&key) else {
            return Err(CancelError::Unknown(id));
        };
        match o.state {
            OutboxState::Delivered => return Err(CancelError::AlreadyDelivered(id)),
            OutboxState::Expired => return Err(CancelError::Expired(id)),
            _ => {}
        }
        let to = o.envelope.recipient();
        let (relays_holding, sent_unconfirmed) = match self.unhold(&key) {
            Some(h) => (
                h.route.holders().filter(|(p, _)| **p != to).count(),
                h.route.tried_count(),
            ),
            None => (0, 0),
        };
        self.outbox.remove(&key);
        self.touch(Table::Outbox, key);
        let rk = RouteKey {
            id: key,
            ack: false,
        };
        for waiting in self.awaiting.values_mut() {
            waiting.remove(&rk);
        }
        self.awaiting.retain(|_, w| !w.is_empty());
        Ok(CancelReport {
            id,
            to,
            was_queued: false,
            relays_holding,
            sent_unconfirmed,
        })
    }
}
