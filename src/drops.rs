//! Why an input was dropped or refused: one typed list, counted by the node
//! and named in `/stats` and protocol.md §13.

use std::fmt;

/// Every reason a node drops a datagram, refuses a relay request or declines
/// to do something it was asked. The names (`as_str`) are stable: they are
/// the counter names of protocol.md §13 and of `/stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Zero-length datagram.
    Empty,
    /// Longer than `MAX_DATAGRAM` (checked before decoding).
    Oversize,
    /// Not a valid protobuf `Packet`.
    Undecodable,
    /// A protocol version this node does not speak.
    BadVersion,
    /// An address or id field that is not 20 bytes.
    BadIdLength,
    /// A challenge that is not 16 bytes.
    BadChallenge,
    /// A challenge on a response or a proof on a request.
    MisplacedField,
    /// A public key that is not a valid Ed25519 point.
    BadKey,
    /// A signature that is not 64 bytes.
    BadSignatureLength,
    /// A `Nodes` reply with more than k contacts.
    TooManyContacts,
    /// An `Offer` or `Offered` with no id, more than `MAX_OFFER_IDS`, or
    /// one id twice.
    BadOffer,
    /// An endpoint with a bad address length or port.
    BadEndpoint,
    /// No body, or a body type this version does not know.
    UnknownType,
    /// A message body over `MAX_BODY`.
    BodyTooLarge,
    /// A hop count over its limit.
    BadHops,
    /// A zero TTL.
    BadTtl,
    /// A `Stored` status that is unknown or lacks its ack.
    BadStatus,
    /// A required nested message is missing.
    MissingField,
    /// A write token that is not 16 bytes.
    BadToken,
    /// A `PutRecord` whose token is not the one we gave that endpoint.
    WrongToken,
    /// An identity record that fails its checks.
    BadRecord,
    /// A packet claiming to come from our own address.
    OwnAddress,
    /// A response with no matching open request.
    Unsolicited,
    /// A response body that does not fit its request.
    WrongResponseType,
    /// A proof that fails verification.
    BadSignature,
    /// A response to a challenged request without a proof.
    MissingProof,
    /// Local: a request not sent because the request queue is full.
    RpcLimit,
    /// Local: an outgoing datagram dropped because the transmit queue is full.
    TxQueueFull,
    /// Local: a status event dropped because the event queue is full.
    EventQueueFull,
    /// A `Store` whose TTL is longer than `max_ttl`.
    TtlTooLong,
    /// A `Store` created too far in the future.
    FutureDated,
    /// A `Store` that has already expired.
    Expired,
    /// A `Store` whose sender signature fails.
    BadMessageSignature,
    /// A `Store` refused for now: this sender already has its share held.
    SenderQuota,
    /// A `Store` refused for now: no room.
    RelayFull,
    /// A `Store` refused for now: its source network's share is held.
    SourceQuota,
    /// A `Store` refused for now: its source network stored too many bytes
    /// per second.
    SourceRate,
    /// A request dropped: its source network sent too many per second.
    RateLimited,
    /// A held copy dropped to make room for a nearer recipient's.
    EvictedHeld,
    /// An ack that fails its check.
    ForgedAck,
    /// A message for us refused for now: too many are waiting to be shown.
    InboxFull,
    /// A `Store` for someone else refused because this node does not relay.
    NotRelaying,
    /// A routed ack dropped to stay within `max_routed_acks`.
    EvictedAck,
    /// An answer not sent: the requester has not proven its address and
    /// the answer would exceed 3 times what it sent (anti-amplification).
    Amplification,
    /// A message for us whose body is not sealed to us for its envelope.
    Undecryptable,
    /// One of our drafts could not be sealed to its recipient's key.
    CannotSeal,
    /// Local: the driver could not make a write batch durable.
    StoreError,
    /// Local: a stored record could not be read back.
    StoreCorrupt,
}

impl DropReason {
    /// The stable snake_case counter name.
    pub fn as_str(self) -> &'static str {
        use DropReason::*;
        match self {
            Empty => "empty",
            Oversize => "oversize",
            Undecodable => "undecodable",
            BadVersion => "bad_version",
            BadIdLength => "bad_id_length",
            BadChallenge => "bad_challenge",
            MisplacedField => "misplaced_field",
            BadKey => "bad_key",
            BadSignatureLength => "bad_signature_length",
            TooManyContacts => "too_many_contacts",
            BadOffer => "bad_offer",
            BadEndpoint => "bad_endpoint",
            UnknownType => "unknown_type",
            BodyTooLarge => "body_too_large",
            BadHops => "bad_hops",
            BadTtl => "bad_ttl",
            BadStatus => "bad_status",
            MissingField => "missing_field",
            BadToken => "bad_token",
            WrongToken => "wrong_token",
            BadRecord => "bad_record",
            OwnAddress => "own_address",
            Unsolicited => "unsolicited",
            WrongResponseType => "wrong_response_type",
            BadSignature => "bad_signature",
            MissingProof => "missing_proof",
            RpcLimit => "rpc_limit",
            TxQueueFull => "tx_queue_full",
            EventQueueFull => "event_queue_full",
            TtlTooLong => "ttl_too_long",
            FutureDated => "future_dated",
            Expired => "expired",
            BadMessageSignature => "bad_message_signature",
            SenderQuota => "sender_quota",
            RelayFull => "relay_full",
            SourceQuota => "source_quota",
            SourceRate => "source_rate",
            RateLimited => "rate_limited",
            EvictedHeld => "evicted_held",
            ForgedAck => "forged_ack",
            InboxFull => "inbox_full",
            NotRelaying => "not_relaying",
            EvictedAck => "evicted_ack",
            Undecryptable => "undecryptable",
            CannotSeal => "cannot_seal",
            Amplification => "amplification",
            StoreError => "store_error",
            StoreCorrupt => "store_corrupt",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
