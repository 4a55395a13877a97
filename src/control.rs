//! The vocabulary between the runtime and any front end: what the user asks
//! of a running node ([`Command`]) and what the node reports ([`Output`]).
//! The runtime produces outputs; the REPL renders them; neither imports the
//! other.

use std::net::SocketAddr;
use std::time::Duration;

use crate::address::Address;
use crate::lookup::LookupResult;
use crate::message::MessageId;
use crate::relay::{CancelReport, HeldRow, TombstoneRow};
use crate::wire::Contact;

/// Who this node is, for `/whoami` and the start banner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Me {
    /// This node's address.
    pub address: Address,
    /// The bound UDP endpoint.
    pub listen: SocketAddr,
    /// Its public key: given to others, it lets them seal messages to this
    /// node before its identity record can be found.
    pub key: ed25519_dalek::VerifyingKey,
}

/// What the user asks of the running node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Iterative lookup of an address.
    Lookup(Address),
    /// Send a text message.
    Send {
        /// Recipient.
        to: Address,
        /// Its public key, if the user gave it (then the message is sealed
        /// without looking the key up).
        key: Option<Box<ed25519_dalek::VerifyingKey>>,
        /// The text.
        text: String,
    },
    /// The user gave `key` (with `/add`): messages waiting for its
    /// address can be sealed now. `notice` is what to tell the user.
    LearnKey {
        /// The key.
        key: Box<ed25519_dalek::VerifyingKey>,
        /// The confirmation to show.
        notice: String,
    },
    /// Show the routing table.
    Peers,
    /// Show counters.
    Stats,
    /// Show the messages this node holds for others.
    Held,
    /// Show the acks kept as tombstones.
    Acks,
    /// Withdraw our undelivered message.
    Cancel(MessageId),
    /// Stop the node.
    Quit,
}

/// One routing-table row for `/peers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRow {
    /// Bucket index (159 = farthest half of the address space).
    pub bucket: usize,
    /// The contact.
    pub contact: Contact,
    /// Time since it was last heard from.
    pub last_seen: Duration,
    /// Smoothed round-trip time, once measured.
    pub rtt: Option<Duration>,
    /// Requests to it that failed in a row.
    pub failures: u32,
}

/// Counters for `/stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsReport {
    /// Contacts in the routing table.
    pub contacts: usize,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams dropped, by reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// Requests that got no answer.
    pub rpc_timeouts: u64,
    /// Requests open and waiting for a slot.
    pub requests: (usize, usize),
    /// Lookups in progress.
    pub lookups: usize,
    /// Messages held for others (and our own undelivered ones).
    pub held_messages: usize,
    /// Acks kept as tombstones.
    pub held_acks: usize,
    /// Acks being routed to their senders.
    pub routed_acks: usize,
    /// Our messages not yet delivered.
    pub outbox: usize,
    /// Received messages remembered.
    pub inbox: usize,
    /// Received messages not yet shown.
    pub unshown: usize,
    /// Messages shown marked as possible repeats (§16.4).
    pub maybe_repeats: u64,
    /// Message transfers (`Store` requests) sent.
    pub stores_sent: u64,
    /// Ack transfers sent.
    pub acks_sent: u64,
    /// Durable write batches.
    pub write_batches: u64,
    /// Requests answered (the latency sample).
    pub rpc_answered: u64,
    /// Latency of answered requests: 50th, 90th and 99th percentiles.
    pub rpc_latency: [Option<Duration>; 3],
}

/// Everything the runtime reports to the user interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The socket is bound.
    Ready(Me),
    /// Started without bootstrap addresses: this is the first node.
    Alone {
        /// The bound UDP endpoint others can join through.
        listen: SocketAddr,
    },
    /// Bootstrap worked.
    Joined {
        /// Contacts in the routing table.
        contacts: usize,
    },
    /// No bootstrap address answered.
    BootstrapFailed {
        /// Addresses tried.
        addrs: Vec<SocketAddr>,
        /// Datagrams sent to each.
        tries: u32,
        /// Next round in.
        retry_in: Duration,
    },
    /// A `/lookup` finished.
    Lookup(LookupResult),
    /// Answer to `/peers`.
    Peers(Vec<PeerRow>),
    /// The node took our message: it has an id and is on its way (the
    /// first thing shown after a send, before any network round trip).
    Accepted {
        /// Message id.
        id: MessageId,
        /// Recipient.
        to: Address,
        /// The text, for the front end's conversation log.
        text: String,
        /// When it was written, ms since the Unix epoch.
        at_ms: u64,
    },
    /// A view the front end built from its own records (contacts, inbox,
    /// history), already rendered for people and as one JSON line.
    Rendered {
        /// Text for people.
        human: String,
        /// One JSON object with an `"event"` field.
        json: String,
    },
    /// Our message waits for its recipient's key.
    Queued {
        /// Message id.
        id: MessageId,
        /// Recipient.
        to: Address,
        /// Until when it is tried, ms since the Unix epoch.
        expires_at_ms: u64,
    },
    /// No identity record was found for a recipient yet.
    KeyNotFound {
        /// Recipient.
        to: Address,
        /// Messages waiting for its key.
        queued: usize,
        /// Next try in.
        retry_in: Duration,
    },
    /// Our message's first copies are placed.
    Sent {
        /// Message id, as the user got it.
        id: MessageId,
        /// Its id on the wire (differs for a message that waited for its
        /// recipient's key).
        wire_id: MessageId,
        /// Recipient.
        to: Address,
        /// Relays holding it.
        relays: usize,
        /// The recipient took it itself.
        direct: bool,
        /// This node had no contact at all: it goes out once joined.
        no_contacts: bool,
        /// Until when relays keep offering it, ms since the Unix epoch.
        expires_at_ms: u64,
    },
    /// Messages held for us while we were away are shown next, `count` of
    /// them, in the order they were written.
    CatchUp {
        /// How many follow.
        count: usize,
    },
    /// Our message was withdrawn (`/cancel`).
    Cancelled(CancelReport),
    /// Answer to `/held`.
    Held(Vec<HeldRow>),
    /// Answer to `/acks`.
    Acks(Vec<TombstoneRow>),
    /// Our own address answered from another endpoint: the same identity
    /// runs twice, and the two split its messages.
    SameIdentity {
        /// The other endpoint, when known.
        endpoint: Option<SocketAddr>,
    },
    /// A message arrived.
    Message {
        /// Message id.
        id: MessageId,
        /// Sender.
        from: Address,
        /// Text (invalid UTF-8 replaced).
        text: String,
        /// Creation time, ms since the Unix epoch.
        created_at_ms: u64,
        /// It may repeat a message shown before (older than the replay
        /// floor, its id forgotten; protocol.md §16.4).
        maybe_repeat: bool,
    },
    /// The recipient's signed ack arrived.
    Delivered {
        /// Message id.
        id: MessageId,
        /// Recipient.
        to: Address,
        /// When the ack arrived, ms since the Unix epoch.
        at_ms: u64,
    },
    /// Our message expired undelivered.
    Expired {
        /// Message id.
        id: MessageId,
    },
    /// Answer to `/stats`.
    Stats(StatsReport),
    /// Answer to `/whoami`.
    WhoAmI(Me),
    /// Answer to `/help`.
    Help,
    /// Information for the user that is neither an error nor an event.
    Notice(String),
    /// Something the user asked for failed.
    Error(String),
    /// The node stopped.
    Stopped,
}
