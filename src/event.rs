//! What a node tells its user: the events drained with `Node::poll_event`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::address::Address;
use crate::lookup::{LookupId, LookupResult};
use crate::message::MessageId;

/// Something the user (or a test) should hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A bootstrap node answered and the lookup of our own address finished.
    Joined {
        /// Contacts in the routing table now.
        contacts: usize,
    },
    /// No bootstrap address answered this round; another round follows.
    BootstrapFailed {
        /// The addresses tried.
        addrs: Vec<SocketAddr>,
        /// Datagrams sent to each address this round.
        tries: u32,
        /// When the next round starts, from now.
        retry_in: Duration,
    },
    /// A lookup started with `Node::lookup` finished.
    LookupDone {
        /// Its id.
        id: LookupId,
        /// What it found.
        result: LookupResult,
    },
    /// Our message waits for its recipient's key (its identity record is
    /// being looked for); it is sealed and sent as soon as the key is known.
    MessageQueued {
        /// The message (as the user knows it).
        id: MessageId,
        /// Its recipient.
        to: Address,
        /// Until when it will be tried, ms since the Unix epoch.
        expires_at_ms: u64,
    },
    /// No identity record was found for `to`: its messages stay queued
    /// and the lookup is tried again in `retry_in`.
    KeyNotFound {
        /// The recipient whose key is missing.
        to: Address,
        /// Messages waiting for it.
        queued: usize,
        /// When the next lookup starts.
        retry_in: Duration,
    },
    /// Our message's first copies are placed: every first-round `Store`
    /// was answered, failed, or has gone unanswered past the soft timeout.
    MessageSent {
        /// The message (as the user knows it).
        id: MessageId,
        /// Its id on the wire (§14.2), the one acks and relays carry. The
        /// same as `id` unless the message waited for its recipient's key:
        /// then `id` is the draft's, which the user got when it was queued.
        wire_id: MessageId,
        /// Its recipient.
        to: Address,
        /// Relays that confirmed holding a copy so far.
        relays: usize,
        /// The recipient itself took it (no relay needed).
        direct: bool,
        /// Why nobody has it yet when `relays` is 0 and not `direct`:
        /// true when the node had no contact to send it to (it is sent
        /// once the node has joined), false when copies were offered and
        /// no relay confirmed one yet (it is retried with backoff).
        no_contacts: bool,
        /// Until when it will be tried, ms since the Unix epoch.
        expires_at_ms: u64,
    },
    /// A message for us, handed to the user once per run (it was stored
    /// before it was acknowledged; the front end records it shown).
    MessageReceived {
        /// The message.
        id: MessageId,
        /// Its sender (verified signature).
        from: Address,
        /// The text.
        body: Bytes,
        /// When the sender created it, ms since the Unix epoch.
        created_at_ms: u64,
        /// It was created at or before the replay floor and its id is no
        /// longer remembered (§16.4): it may repeat a message shown before.
        maybe_repeat: bool,
    },
    /// The recipient's signed ack for our message arrived.
    Delivered {
        /// The message.
        id: MessageId,
        /// Its recipient.
        to: Address,
    },
    /// The catch-up window after a start or a rejoin closed: the
    /// `count` messages that arrived during it follow at once, as
    /// `MessageReceived` events in the order they were written (created
    /// time, then id). Sent only when `count` is at least 1.
    CatchUp {
        /// Messages released in this batch.
        count: usize,
    },
    /// Our message expired without an ack.
    MessageExpired {
        /// The message.
        id: MessageId,
    },
    /// This node's identity seems to run twice: a record signed by our
    /// key that this run did not sign, or a datagram from our own address
    /// at another endpoint (then `endpoint` names it). The two instances
    /// split the identity's messages; the user should stop one.
    SameIdentityElsewhere {
        /// Where the other instance was seen, when known.
        endpoint: Option<SocketAddr>,
    },
}
