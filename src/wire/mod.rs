//! The one door where bytes become values.
//!
//! Every datagram is size-checked before anything is decoded, decoded with
//! prost from the types in `proto/comm.proto`, and converted with `TryFrom`
//! into the validated domain types below. Past this module nothing handles
//! raw ids or optional fields: an `Address` is 20 bytes, a key is a valid
//! Ed25519 point, a reply has at most k contacts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;

use crate::address::Address;
use crate::drops::DropReason;
use crate::message::{Ack, Envelope, IdentityRecord, MessageId};

mod fast;
pub mod records;

/// Protocol version carried in every packet.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest UDP payload comm sends or accepts: the IPv6 minimum MTU (1280)
/// less the IPv6 (40) and UDP (8) headers, so a datagram never needs
/// fragmentation on any path that carries IPv6.
pub const MAX_DATAGRAM: usize = 1232;

/// Largest message body in bytes: a `Store` of this size, with a
/// challenge, still fits [`MAX_DATAGRAM`] (checked by a test below).
pub const MAX_BODY: usize = 1000;

/// Largest hop limit a message may carry, and largest `hops_left` of an
/// `Acknowledge`.
pub const MAX_HOP_LIMIT: u32 = 16;

/// Length of a challenge nonce in bytes.
pub const CHALLENGE_LEN: usize = 16;

/// Length of a record write token.
pub const TOKEN_LEN: usize = 16;

/// Most contacts a `Nodes` reply may carry (k on the wire). A node's own k
/// may be smaller, never larger: receivers reject longer replies.
pub const MAX_CONTACTS: usize = 8;

/// Most message ids one `Offer` may carry, and one `Offered` may list in
/// `want` and `held` together: 32 × 22 bytes keeps either well inside
/// [`MAX_DATAGRAM`].
pub const MAX_OFFER_IDS: usize = 32;

/// Generated prost types for `proto/comm.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/comm.v1.rs"));
}

/// A peer in the overlay: its address and where it receives datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Contact {
    /// Overlay address.
    pub id: Address,
    /// UDP endpoint.
    pub addr: SocketAddr,
}

/// Proof that the sender of a response owns the key behind its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The responder's public key (a valid curve point).
    pub key: VerifyingKey,
    /// Signature over `identity::proof_message(challenge)`.
    pub signature: Signature,
}

/// What a packet asks or answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Liveness probe (request).
    Ping,
    /// Answer to `Ping`, with the requester's endpoint as seen by the responder.
    Pong {
        /// Where the requester's datagram came from, if the responder said.
        observed: Option<SocketAddr>,
    },
    /// Ask for the contacts closest to `target` (request).
    FindNode {
        /// The address looked up.
        target: Address,
    },
    /// Answer to `FindNode`: at most k contacts.
    Nodes {
        /// Closest first.
        contacts: Vec<Contact>,
    },
    /// Hold this message and relay it (request).
    Store {
        /// The signed message.
        envelope: Box<Envelope>,
        /// Hops this copy may still travel after the receiver.
        hops_left: u32,
    },
    /// Answer to `Store`.
    Stored {
        /// The message.
        id: MessageId,
        /// What the receiver did with it.
        status: StoreStatus,
    },
    /// This message was delivered (request).
    Acknowledge {
        /// The recipient's signed ack.
        ack: Box<Ack>,
        /// Hops it may still travel towards the sender; 0 = purge only.
        hops_left: u32,
    },
    /// Answer to `Acknowledge`.
    Acknowledged {
        /// The message.
        id: MessageId,
    },
    /// Send me what you hold for me (request).
    Pull,
    /// Answer to `Pull`.
    Pulled {
        /// Messages that follow as `Store` requests.
        count: u32,
    },
    /// The identity record of `target`, and its closest contacts (request).
    FindRecord {
        /// The address whose record is wanted.
        target: Address,
    },
    /// Answer to `FindRecord`.
    Record {
        /// The record, if the responder keeps one (not yet checked).
        record: Option<Box<IdentityRecord>>,
        /// At most k contacts closest to the target.
        contacts: Vec<Contact>,
        /// Write token for the requester's endpoint.
        token: Option<[u8; TOKEN_LEN]>,
    },
    /// Keep this identity record (request).
    PutRecord {
        /// The record (not yet checked).
        record: Box<IdentityRecord>,
        /// The token the receiver gave this endpoint.
        token: [u8; TOKEN_LEN],
    },
    /// Answer to `PutRecord`.
    RecordStored {
        /// Whether it is kept.
        stored: bool,
    },
    /// Would you take these messages? Ids only, before any body (request).
    Offer {
        /// 1 to [`MAX_OFFER_IDS`] distinct message ids.
        ids: Vec<MessageId>,
    },
    /// Answer to `Offer`.
    Offered {
        /// Ids to send as `Store`.
        want: Vec<MessageId>,
        /// Ids the responder holds already.
        held: Vec<MessageId>,
    },
}

/// What a node did with a `Store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreStatus {
    /// Held now, or already held (code 1).
    Held,
    /// I am the recipient; here is my ack (code 2).
    Delivered(Box<Ack>),
    /// Already acknowledged; here is the ack (code 3).
    Acknowledged(Box<Ack>),
    /// Invalid or unwelcome: do not offer it to me again (code 4).
    Refused,
    /// Acceptable, but no room right now: offer it again later (code 5).
    Busy,
}

impl Body {
    /// Whether this body opens an exchange (and so expects a response).
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Body::Ping
                | Body::FindNode { .. }
                | Body::Store { .. }
                | Body::Acknowledge { .. }
                | Body::Pull
                | Body::FindRecord { .. }
                | Body::PutRecord { .. }
                | Body::Offer { .. }
        )
    }

    /// Short lowercase name, for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Ping => "ping",
            Body::Pong { .. } => "pong",
            Body::FindNode { .. } => "find_node",
            Body::Nodes { .. } => "nodes",
            Body::Store { .. } => "store",
            Body::Stored { .. } => "stored",
            Body::Acknowledge { .. } => "acknowledge",
            Body::Acknowledged { .. } => "acknowledged",
            Body::Pull => "pull",
            Body::Pulled { .. } => "pulled",
            Body::FindRecord { .. } => "find_record",
            Body::Record { .. } => "record",
            Body::PutRecord { .. } => "put_record",
            Body::RecordStored { .. } => "record_stored",
            Body::Offer { .. } => "offer",
            Body::Offered { .. } => "offered",
        }
    }
}

/// A validated packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Sender's overlay address (claimed; proven only by a `Proof`).
    pub sender: Address,
    /// Transaction id linking a response to its request.
    pub txid: u64,
    /// Requests: nonce the responder must sign.
    pub challenge: Option<[u8; CHALLENGE_LEN]>,
    /// Responses: answer to the request's challenge.
    pub proof: Option<Proof>,
    /// The message itself.
    pub body: Body,
}

/// Why a datagram was rejected. Each is counted under [`WireError::kind`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Zero bytes.
    #[error("empty datagram")]
    Empty,
    /// Larger than [`MAX_DATAGRAM`]; rejected before decoding.
    #[error("datagram of {0} bytes exceeds the {MAX_DATAGRAM}-byte limit")]
    Oversize(usize),
    /// Not a valid protobuf encoding of `Packet`.
    #[error("undecodable: {0}")]
    Decode(String),
    /// A protocol version this node does not speak.
    #[error("unsupported protocol version {0}")]
    Version(u32),
    /// An address field that is not exactly 20 bytes.
    #[error("{field} is {len} bytes, expected 20")]
    IdLength {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A challenge that is not exactly 16 bytes.
    #[error("challenge is {0} bytes, expected {CHALLENGE_LEN}")]
    ChallengeLength(usize),
    /// A challenge on a response, or a proof on a request.
    #[error("{0}")]
    Misplaced(&'static str),
    /// A public key that is not 32 bytes or not a valid curve point.
    #[error("invalid public key")]
    BadKey,
    /// A signature that is not 64 bytes.
    #[error("signature is {0} bytes, expected 64")]
    SignatureLength(usize),
    /// A reply with more contacts than k.
    #[error("{got} contacts in one reply, at most {max} allowed")]
    TooManyContacts {
        /// Contacts in the reply.
        got: usize,
        /// The limit (k).
        max: usize,
    },
    /// An endpoint that is not 4 or 16 address bytes and a non-zero port.
    #[error("invalid endpoint")]
    BadEndpoint,
    /// No body, or a body of a type this version does not know.
    #[error("unknown or missing message type")]
    UnknownType,
    /// A message body over [`MAX_BODY`] bytes.
    #[error("message body of {0} bytes exceeds the {MAX_BODY}-byte limit")]
    BodyTooLarge(usize),
    /// A hop count over [`MAX_HOP_LIMIT`], or hops left above the hop limit.
    #[error("bad hop count")]
    BadHops,
    /// A zero TTL.
    #[error("zero TTL")]
    BadTtl,
    /// An unknown `Stored` status, or an ack missing or not matching the id.
    #[error("bad store status")]
    BadStatus,
    /// A required nested message is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A write token that is not 16 bytes.
    #[error("token is {0} bytes, expected {TOKEN_LEN}")]
    TokenLength(usize),
    /// An `Offer` with no id, or an `Offer` or `Offered` with more than
    /// [`MAX_OFFER_IDS`] ids or one id twice.
    #[error("bad offer: {0}")]
    BadOffer(&'static str),
}

impl WireError {
    /// The drop counter this error is counted under.
    pub fn kind(&self) -> DropReason {
        match self {
            WireError::Empty => DropReason::Empty,
            WireError::Oversize(_) => DropReason::Oversize,
            WireError::Decode(_) => DropReason::Undecodable,
            WireError::Version(_) => DropReason::BadVersion,
            WireError::IdLength { .. } => DropReason::BadIdLength,
            WireError::ChallengeLength(_) => DropReason::BadChallenge,
            WireError::Misplaced(_) => DropReason::MisplacedField,
            WireError::BadKey => DropReason::BadKey,
            WireError::SignatureLength(_) => DropReason::BadSignatureLength,
            WireError::TooManyContacts { .. } => DropReason::TooManyContacts,
            WireError::BadEndpoint => DropReason::BadEndpoint,
            WireError::UnknownType => DropReason::UnknownType,
            WireError::BodyTooLarge(_) => DropReason::BodyTooLarge,
            WireError::BadHops => DropReason::BadHops,
            WireError::BadTtl => DropReason::BadTtl,
            WireError::BadStatus => DropReason::BadStatus,
            WireError::Missing(_) => DropReason::MissingField,
            WireError::TokenLength(_) => DropReason::BadToken,
            WireError::BadOffer(_) => DropReason::BadOffer,
        }
    }
}

/// Decode and validate one datagram.
pub fn decode(bytes: &[u8]) -> Result<Packet, WireError> {
    check_size(bytes)?;
    // The commonest bodies in their plain encoding, without prost's
    // structs; everything else (and anything odd) through prost.
    if let Some(p) = fast::decode(bytes) {
        return Ok(p);
    }
    decode_proto(bytes)
}

/// [`decode`] without its fast path: prost alone. The same result for
/// every input (the `decode_datagram` fuzz target checks that); public so
/// that tests and fuzzing can compare the two.
pub fn decode_with_prost(bytes: &[u8]) -> Result<Packet, WireError> {
    check_size(bytes)?;
    decode_proto(bytes)
}

fn check_size(bytes: &[u8]) -> Result<(), WireError> {
    if bytes.is_empty() {
        return Err(WireError::Empty);
    }
    if bytes.len() > MAX_DATAGRAM {
        return Err(WireError::Oversize(bytes.len()));
    }
    Ok(())
}

fn decode_proto(bytes: &[u8]) -> Result<Packet, WireError> {
    // Decoded from one shared copy, so that every bytes field is a view
    // into it rather than an allocation of its own.
    let raw = proto::Packet::decode(Bytes::copy_from_slice(bytes))
        .map_err(|e| WireError::Decode(e.to_string()))?;
    packet_from_proto(raw)
}

/// Decode a standalone identity record (as a contact card or a test vector
/// carries it): sizes checked, signature and expiry not (see
/// `RecordStore::valid`).
pub fn decode_identity_record(bytes: &[u8]) -> Result<IdentityRecord, WireError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(WireError::Oversize(bytes.len()));
    }
    let raw = proto::IdentityRecord::decode(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    IdentityRecord::try_from(raw)
}

/// Encode a standalone identity record.
pub fn encode_identity_record(r: &IdentityRecord) -> Bytes {
    Bytes::from(record_to_proto(r).encode_to_vec())
}

/// Encode a packet. Packets built by this crate always fit [`MAX_DATAGRAM`]
/// when they carry at most [`MAX_CONTACTS`] contacts; tests check that bound.
pub fn encode(packet: &Packet) -> Bytes {
    encode_direct(packet, 0).unwrap_or_else(|| Bytes::from(packet_to_proto(packet).encode_to_vec()))
}

// ---- a direct encoder for `Nodes`, the answer a node sends most ----------
//
// Byte for byte what prost writes for the same packet (fields in tag order,
// proto3 defaults left out), checked against it by a test, but written
// straight into one buffer of the right size instead of building the
// schema types first (a `Bytes` per id and per endpoint). Only the answer
// side is done this way; every datagram is still decoded by prost.

/// Protobuf wire types.
const LEN: u8 = 2;
const VARINT: u8 = 0;
const FIXED64: u8 = 1;

fn tag(field: u8, wire_type: u8) -> u8 {
    // Every field number written here is below 16: one byte.
    (field << 3) | wire_type
}

fn varint_len(v: u64) -> usize {
    prost::encoding::encoded_len_varint(v)
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    prost::encoding::encode_varint(v, out);
}

/// Length of a length-delimited field with a one-byte tag and `len` bytes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_bytes(out: &mut Vec<u8>, field: u8, b: &[u8]) {
    out.push(tag(field, LEN));
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encoded length of an `Endpoint` message's content.
fn endpoint_len(addr: &SocketAddr) -> usize {
    let ip = if addr.is_ipv4() { 4 } else { 16 };
    let port = match addr.port() {
        0 => 0,
        p => 1 + varint_len(u64::from(p)),
    };
    field_len(ip) + port
}

/// Encoded length of a `Contact` message's content.
fn contact_len(c: &Contact) -> usize {
    field_len(c.id.0.len()) + field_len(endpoint_len(&c.addr))
}

/// Encoded length of `contacts` as a repeated `Contact` field 1 (the body of
/// `Nodes` and of the routing-table snapshot record).
pub(crate) fn contacts_len(contacts: &[Contact]) -> usize {
    contacts.iter().map(|c| field_len(contact_len(c))).sum()
}

/// Write `contacts` as a repeated `Contact` field 1, as prost would.
pub(crate) fn put_contacts(out: &mut Vec<u8>, contacts: &[Contact]) {
    for c in contacts {
        out.push(tag(1, LEN));
        put_varint(out, contact_len(c) as u64);
        put_bytes(out, 1, &c.id.0);
        out.push(tag(2, LEN));
        put_varint(out, endpoint_len(&c.addr) as u64);
        put_endpoint(out, &c.addr);
    }
}

/// Write an `Endpoint` message's content, as prost would.
fn put_endpoint(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(v4) => put_bytes(out, 1, &v4.octets()),
        IpAddr::V6(v6) => put_bytes(out, 1, &v6.octets()),
    }
    if addr.port() != 0 {
        out.push(tag(2, VARINT));
        put_varint(out, u64::from(addr.port()));
    }
}

/// The bodies [`encode_direct`] writes itself.
enum DirectBody<'a> {
    Ping,
    Pong(Option<&'a SocketAddr>),
    FindNode(&'a Address),
    Nodes(&'a [Contact]),
}

impl<'a> DirectBody<'a> {
    fn of(body: &'a Body) -> Option<DirectBody<'a>> {
        Some(match body {
            Body::Ping => DirectBody::Ping,
            Body::Pong { observed } => DirectBody::Pong(observed.as_ref()),
            Body::FindNode { target } => DirectBody::FindNode(target),
            Body::Nodes { contacts } => DirectBody::Nodes(contacts),
            _ => return None,
        })
    }

    /// Its field number in `Packet` and the length of its content.
    fn field_and_len(&self) -> (u8, usize) {
        match self {
            DirectBody::Ping => (10, 0),
            DirectBody::Pong(None) => (11, 0),
            DirectBody::Pong(Some(a)) => (11, field_len(endpoint_len(a))),
            DirectBody::FindNode(t) => (12, field_len(t.0.len())),
            DirectBody::Nodes(c) => (13, contacts_len(c)),
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        match self {
            DirectBody::Ping | DirectBody::Pong(None) => {}
            DirectBody::Pong(Some(a)) => {
                out.push(tag(1, LEN));
                put_varint(out, endpoint_len(a) as u64);
                put_endpoint(out, a);
            }
            DirectBody::FindNode(t) => put_bytes(out, 1, &t.0),
            DirectBody::Nodes(c) => put_contacts(out, c),
        }
    }
}

/// The commonest packets (`Ping`, `Pong`, `FindNode`, `Nodes`) written
/// straight into one buffer, byte for byte what prost writes for them
/// (fields in number order, defaults left out), padded as
/// [`encode_padded`] pads; `None` for other bodies. Going through the
/// schema types cost a struct and a `Bytes` per field.
fn encode_direct(p: &Packet, min_len: usize) -> Option<Bytes> {
    let body = DirectBody::of(&p.body)?;
    let (body_field, body_len) = body.field_and_len();
    let proof_len = field_len(32) + field_len(64);
    let mut bare = 1 + varint_len(u64::from(PROTOCOL_VERSION)) + field_len(p.sender.0.len());
    if p.txid != 0 {
        bare += 1 + 8;
    }
    if let Some(c) = &p.challenge {
        bare += field_len(c.len());
    }
    if p.proof.is_some() {
        bare += field_len(proof_len);
    }
    bare += field_len(body_len);
    let padding = padding_for(bare, min_len);
    let total = bare + if padding > 0 { field_len(padding) } else { 0 };
    let mut out = Vec::with_capacity(total);
    out.push(tag(1, VARINT));
    put_varint(&mut out, u64::from(PROTOCOL_VERSION));
    put_bytes(&mut out, 2, &p.sender.0);
    if p.txid != 0 {
        out.push(tag(3, FIXED64));
        out.extend_from_slice(&p.txid.to_le_bytes());
    }
    if let Some(c) = &p.challenge {
        put_bytes(&mut out, 4, c);
    }
    if let Some(proof) = &p.proof {
        out.push(tag(5, LEN));
        put_varint(&mut out, proof_len as u64);
        put_bytes(&mut out, 1, proof.key.as_bytes());
        put_bytes(&mut out, 2, &proof.signature.to_bytes());
    }
    if padding > 0 {
        put_bytes(&mut out, 6, &ZEROS[..padding]);
    }
    out.push(tag(body_field, LEN));
    put_varint(&mut out, body_len as u64);
    body.put(&mut out);
    debug_assert_eq!(out.len(), total);
    Some(Bytes::from(out))
}

/// Encode a request padded to at least `min_len` bytes (never past
/// [`MAX_DATAGRAM`]), so that a responder that has not verified us may
/// answer it in full (protocol.md §13, amplification).
pub fn encode_padded(packet: &Packet, min_len: usize) -> Bytes {
    if let Some(bytes) = encode_direct(packet, min_len) {
        return bytes;
    }
    let mut raw = packet_to_proto(packet);
    let n = padding_for(raw.encoded_len(), min_len);
    if n > 0 {
        raw.padding = Bytes::from_static(&ZEROS[..n]);
    }
    Bytes::from(raw.encode_to_vec())
}

/// Zeros of padding that bring a packet of `bare` bytes to at least
/// `min_len` (capped at [`MAX_DATAGRAM`]); 0 if it is long enough. The
/// padding field costs a 1-byte tag, its length as a varint (1 or 2 bytes
/// below 16384) and its zeros: the fewest zeros that reach the target
/// (exactly, unless the varint's growth skips it).
fn padding_for(bare: usize, min_len: usize) -> usize {
    let target = min_len.min(MAX_DATAGRAM);
    if bare >= target {
        return 0;
    }
    let total = |n: usize| bare + 1 + if n < 128 { 1 } else { 2 } + n;
    let mut n = target.saturating_sub(bare + 3);
    while total(n) < target {
        n += 1;
    }
    n.min(ZEROS.len())
}

/// Zeros to pad with, shared by every padded request.
static ZEROS: [u8; MAX_DATAGRAM] = [0; MAX_DATAGRAM];

/// Size `FindNode` requests are padded to: a `Nodes` answer with proof (522
/// bytes at most) and a challenge back (100) are under 3 times it, so a
/// responder that has not verified the requester can still answer in full
/// and challenge it.
pub const PADDED_REQUEST: usize = 210;

/// Size `FindRecord` requests are padded to: a `Record` answer with a
/// record, k contacts, a token and proof (661 bytes at most) and a
/// challenge back (100) are under 3 times it.
pub const PADDED_FIND_RECORD: usize = 260;

/// Size bootstrap `Ping`s are padded to: the `Pong` with proof (148 bytes)
/// and the challenge the responder sends back (53) are under 3 times it.
pub const PADDED_PING: usize = 100;

fn address(field: &'static str, bytes: &[u8]) -> Result<Address, WireError> {
    Address::try_from(bytes).map_err(|len| WireError::IdLength { field, len })
}

impl TryFrom<proto::Endpoint> for SocketAddr {
    type Error = WireError;

    fn try_from(e: proto::Endpoint) -> Result<Self, WireError> {
        socket_addr(&e.ip, e.port)
    }
}

/// An `Endpoint`'s fields as a socket address: 4 or 16 bytes of IP, a
/// port from 1 to 65535.
fn socket_addr(ip: &[u8], port: u32) -> Result<SocketAddr, WireError> {
    let port = u16::try_from(port).map_err(|_| WireError::BadEndpoint)?;
    if port == 0 {
        return Err(WireError::BadEndpoint);
    }
    let ip = match ip.len() {
        4 => {
            let mut b = [0u8; 4];
            b.copy_from_slice(ip);
            IpAddr::V4(Ipv4Addr::from(b))
        }
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(ip);
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err(WireError::BadEndpoint),
    };
    Ok(SocketAddr::new(ip, port))
}

fn token(bytes: &[u8]) -> Result<[u8; TOKEN_LEN], WireError> {
    bytes
        .try_into()
        .map_err(|_| WireError::TokenLength(bytes.len()))
}

impl TryFrom<proto::IdentityRecord> for IdentityRecord {
    type Error = WireError;

    fn try_from(r: proto::IdentityRecord) -> Result<Self, WireError> {
        Ok(IdentityRecord {
            key: key(&r.key)?,
            seq: r.seq,
            expires_at_ms: r.expires_at_ms,
            signature: signature(&r.signature)?,
        })
    }
}

/// The schema form of an identity record.
pub fn record_to_proto(r: &IdentityRecord) -> proto::IdentityRecord {
    proto::IdentityRecord {
        key: Bytes::copy_from_slice(r.key.as_bytes()),
        seq: r.seq,
        expires_at_ms: r.expires_at_ms,
        signature: Bytes::copy_from_slice(&r.signature.to_bytes()),
    }
}

/// The schema form of a contact.
pub fn contact_to_proto(c: &Contact) -> proto::Contact {
    proto::Contact {
        id: Bytes::copy_from_slice(&c.id.0),
        endpoint: Some(endpoint(&c.addr)),
    }
}

/// The schema form of a list of contacts. Their ids and addresses are
/// copied into one buffer and each field is a slice of it: a `Nodes` reply
/// costs two allocations instead of two per contact, and encoding (which
/// clones every `Bytes` field) only bumps a reference count.
pub fn contacts_to_proto(contacts: &[Contact]) -> Vec<proto::Contact> {
    let mut buf = Vec::with_capacity(contacts.len() * 36);
    for c in contacts {
        buf.extend_from_slice(&c.id.0);
        match c.addr.ip() {
            IpAddr::V4(v4) => buf.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => buf.extend_from_slice(&v6.octets()),
        }
    }
    let all = Bytes::from(buf);
    let mut at = 0;
    contacts
        .iter()
        .map(|c| {
            let ip_len = if c.addr.is_ipv4() { 4 } else { 16 };
            let id = all.slice(at..at + crate::address::ADDRESS_LEN);
            let ip_at = at + crate::address::ADDRESS_LEN;
            let ip = all.slice(ip_at..ip_at + ip_len);
            at = ip_at + ip_len;
            proto::Contact {
                id,
                endpoint: Some(proto::Endpoint {
                    ip,
                    port: u32::from(c.addr.port()),
                }),
            }
        })
        .collect()
}

/// The schema form of an endpoint.
pub fn endpoint(addr: &SocketAddr) -> proto::Endpoint {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => Bytes::copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => Bytes::copy_from_slice(&v6.octets()),
    };
    proto::Endpoint {
        ip,
        port: u32::from(addr.port()),
    }
}

impl TryFrom<proto::Contact> for Contact {
    type Error = WireError;

    fn try_from(c: proto::Contact) -> Result<Self, WireError> {
        let id = address("contact id", &c.id)?;
        let addr = c.endpoint.ok_or(WireError::BadEndpoint)?.try_into()?;
        Ok(Contact { id, addr })
    }
}

impl TryFrom<proto::Proof> for Proof {
    type Error = WireError;

    fn try_from(p: proto::Proof) -> Result<Self, WireError> {
        Ok(Proof {
            key: key(&p.public_key)?,
            signature: signature(&p.signature)?,
        })
    }
}

/// Public keys decoded recently, per thread: decoding a key is a square
/// root on the curve, and the same few hundred peers' keys arrive again and
/// again in proofs. A pure memo: the answer is the same with or without it.
/// Cleared whole when full (`KEY_CACHE` keys, at most about 4 MiB; a node
/// that meets few peers keeps few).
const KEY_CACHE: usize = 16384;

thread_local! {
    static KEYS: std::cell::RefCell<std::collections::HashMap<[u8; 32], VerifyingKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn key(bytes: &[u8]) -> Result<VerifyingKey, WireError> {
    let b: [u8; 32] = bytes.try_into().map_err(|_| WireError::BadKey)?;
    if let Some(k) = KEYS.with(|c| c.borrow().get(&b).copied()) {
        return Ok(k);
    }
    let k = VerifyingKey::from_bytes(&b).map_err(|_| WireError::BadKey)?;
    KEYS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= KEY_CACHE {
            c.clear();
        }
        c.insert(b, k);
    });
    Ok(k)
}

fn signature(bytes: &[u8]) -> Result<Signature, WireError> {
    let b: [u8; 64] = bytes
        .try_into()
        .map_err(|_| WireError::SignatureLength(bytes.len()))?;
    Ok(Signature::from_bytes(&b))
}

fn message_id(bytes: &[u8]) -> Result<MessageId, WireError> {
    address("message id", bytes).map(|a| MessageId(a.0))
}

impl TryFrom<proto::Envelope> for Envelope {
    type Error = WireError;

    fn try_from(e: proto::Envelope) -> Result<Self, WireError> {
        if e.body.len() > MAX_BODY {
            return Err(WireError::BodyTooLarge(e.body.len()));
        }
        if e.hop_limit > MAX_HOP_LIMIT {
            return Err(WireError::BadHops);
        }
        if e.ttl_secs == 0 {
            return Err(WireError::BadTtl);
        }
        let sender_key = key(&e.sender_key)?;
        let recipient = address("recipient", &e.recipient)?;
        let signature = signature(&e.signature)?;
        Ok(Envelope::from_parts(
            sender_key,
            recipient,
            e.created_at_ms,
            e.ttl_secs,
            e.hop_limit,
            e.body,
            signature,
        ))
    }
}

/// The schema form of an envelope (for `Store` and for stored records).
pub fn envelope_to_proto(e: &Envelope) -> proto::Envelope {
    proto::Envelope {
        sender_key: Bytes::copy_from_slice(e.sender_key().as_bytes()),
        recipient: Bytes::copy_from_slice(&e.recipient().0),
        created_at_ms: e.created_at_ms(),
        ttl_secs: e.ttl_secs(),
        hop_limit: e.hop_limit(),
        body: e.body().clone(),
        signature: Bytes::copy_from_slice(&e.signature().to_bytes()),
    }
}

impl TryFrom<proto::Ack> for Ack {
    type Error = WireError;

    fn try_from(a: proto::Ack) -> Result<Self, WireError> {
        Ok(Ack {
            id: message_id(&a.id)?,
            sender: address("ack sender", &a.sender)?,
            expires_at_ms: a.expires_at_ms,
            recipient_key: key(&a.recipient_key)?,
            signature: signature(&a.signature)?,
        })
    }
}

/// The schema form of an ack.
pub fn ack_to_proto(a: &Ack) -> proto::Ack {
    proto::Ack {
        id: Bytes::copy_from_slice(&a.id.0),
        sender: Bytes::copy_from_slice(&a.sender.0),
        expires_at_ms: a.expires_at_ms,
        recipient_key: Bytes::copy_from_slice(a.recipient_key.as_bytes()),
        signature: Bytes::copy_from_slice(&a.signature.to_bytes()),
    }
}

fn status_from_proto(
    id: &MessageId,
    code: u32,
    ack: Option<proto::Ack>,
) -> Result<StoreStatus, WireError> {
    let ack = ack.map(Ack::try_from).transpose()?;
    let matching = |ack: Option<Ack>| match ack {
        Some(a) if a.id == *id => Ok(Box::new(a)),
        _ => Err(WireError::BadStatus),
    };
    match code {
        1 => Ok(StoreStatus::Held),
        2 => Ok(StoreStatus::Delivered(matching(ack)?)),
        3 => Ok(StoreStatus::Acknowledged(matching(ack)?)),
        4 => Ok(StoreStatus::Refused),
        5 => Ok(StoreStatus::Busy),
        _ => Err(WireError::BadStatus),
    }
}

/// The ids of an `Offer` or an `Offered`: the count checked first (at most
/// [`MAX_OFFER_IDS`] in all), then each id's length, then repeats.
fn offer_ids(lists: &[&[Bytes]]) -> Result<Vec<Vec<MessageId>>, WireError> {
    let total: usize = lists.iter().map(|l| l.len()).sum();
    if total > MAX_OFFER_IDS {
        return Err(WireError::BadOffer("too many ids"));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(lists.len());
    for list in lists {
        let mut ids = Vec::with_capacity(list.len());
        for raw in list.iter() {
            let id = message_id(raw)?;
            if !seen.insert(id) {
                return Err(WireError::BadOffer("repeated id"));
            }
            ids.push(id);
        }
        out.push(ids);
    }
    Ok(out)
}

fn packet_from_proto(raw: proto::Packet) -> Result<Packet, WireError> {
    use proto::packet::Body as B;
    if raw.version != PROTOCOL_VERSION {
        return Err(WireError::Version(raw.version));
    }
    let sender = address("sender", &raw.sender)?;
    let body = match raw.body.ok_or(WireError::UnknownType)? {
        B::Store(st) => {
            let envelope = Envelope::try_from(st.envelope.ok_or(WireError::Missing("envelope"))?)?;
            if st.hops_left > envelope.hop_limit() {
                return Err(WireError::BadHops);
            }
            Body::Store {
                envelope: Box::new(envelope),
                hops_left: st.hops_left,
            }
        }
        B::Stored(st) => {
            let id = message_id(&st.id)?;
            let status = status_from_proto(&id, st.status, st.ack)?;
            Body::Stored { id, status }
        }
        B::Acknowledge(a) => {
            if a.hops_left > MAX_HOP_LIMIT {
                return Err(WireError::BadHops);
            }
            Body::Acknowledge {
                ack: Box::new(Ack::try_from(a.ack.ok_or(WireError::Missing("ack"))?)?),
                hops_left: a.hops_left,
            }
        }
        B::Acknowledged(a) => Body::Acknowledged {
            id: message_id(&a.id)?,
        },
        B::Pull(_) => Body::Pull,
        B::Pulled(p) => Body::Pulled { count: p.count },
        B::FindRecord(f) => Body::FindRecord {
            target: address("target", &f.target)?,
        },
        B::Record(r) => {
            let record = r
                .record
                .map(|r| IdentityRecord::try_from(r).map(Box::new))
                .transpose()?;
            if r.contacts.len() > MAX_CONTACTS {
                return Err(WireError::TooManyContacts {
                    got: r.contacts.len(),
                    max: MAX_CONTACTS,
                });
            }
            let contacts = r
                .contacts
                .into_iter()
                .map(Contact::try_from)
                .collect::<Result<_, _>>()?;
            let token = if r.token.is_empty() {
                None
            } else {
                Some(token(&r.token)?)
            };
            Body::Record {
                record,
                contacts,
                token,
            }
        }
        B::PutRecord(p) => Body::PutRecord {
            record: Box::new(IdentityRecord::try_from(
                p.record.ok_or(WireError::Missing("record"))?,
            )?),
            token: token(&p.token)?,
        },
        B::RecordStored(r) => Body::RecordStored { stored: r.stored },
        B::Offer(o) => {
            if o.ids.is_empty() {
                return Err(WireError::BadOffer("no ids"));
            }
            let mut lists = offer_ids(&[&o.ids])?;
            Body::Offer {
                ids: lists.pop().unwrap_or_default(),
            }
        }
        B::Offered(o) => {
            let mut lists = offer_ids(&[&o.want, &o.held])?.into_iter();
            Body::Offered {
                want: lists.next().unwrap_or_default(),
                held: lists.next().unwrap_or_default(),
            }
        }
        B::Ping(_) => Body::Ping,
        B::Pong(p) => Body::Pong {
            observed: p.observed.map(SocketAddr::try_from).transpose()?,
        },
        B::FindNode(f) => Body::FindNode {
            target: address("target", &f.target)?,
        },
        B::Nodes(n) => {
            if n.contacts.len() > MAX_CONTACTS {
                return Err(WireError::TooManyContacts {
                    got: n.contacts.len(),
                    max: MAX_CONTACTS,
                });
            }
            Body::Nodes {
                contacts: n
                    .contacts
                    .into_iter()
                    .map(Contact::try_from)
                    .collect::<Result<_, _>>()?,
            }
        }
    };
    let challenge = if raw.challenge.is_empty() {
        None
    } else {
        if !body.is_request() {
            return Err(WireError::Misplaced("challenge on a response"));
        }
        Some(
            raw.challenge[..]
                .try_into()
                .map_err(|_| WireError::ChallengeLength(raw.challenge.len()))?,
        )
    };
    let proof = match raw.proof {
        None => None,
        Some(_) if body.is_request() => return Err(WireError::Misplaced("proof on a request")),
        Some(p) => Some(Proof::try_from(p)?),
    };
    Ok(Packet {
        sender,
        txid: raw.txid,
        challenge,
        proof,
        body,
    })
}

fn packet_to_proto(p: &Packet) -> proto::Packet {
    use proto::packet::Body as B;
    let body = match &p.body {
        Body::Store {
            envelope,
            hops_left,
        } => B::Store(proto::Store {
            envelope: Some(envelope_to_proto(envelope)),
            hops_left: *hops_left,
        }),
        Body::Stored { id, status } => {
            let (code, ack) = match status {
                StoreStatus::Held => (1, None),
                StoreStatus::Delivered(a) => (2, Some(ack_to_proto(a))),
                StoreStatus::Acknowledged(a) => (3, Some(ack_to_proto(a))),
                StoreStatus::Refused => (4, None),
                StoreStatus::Busy => (5, None),
            };
            B::Stored(proto::Stored {
                id: Bytes::copy_from_slice(&id.0),
                status: code,
                ack,
            })
        }
        Body::Acknowledge { ack, hops_left } => B::Acknowledge(proto::Acknowledge {
            ack: Some(ack_to_proto(ack)),
            hops_left: *hops_left,
        }),
        Body::Acknowledged { id } => B::Acknowledged(proto::Acknowledged {
            id: Bytes::copy_from_slice(&id.0),
        }),
        Body::Pull => B::Pull(proto::Pull {}),
        Body::Pulled { count } => B::Pulled(proto::Pulled { count: *count }),
        Body::FindRecord { target } => B::FindRecord(proto::FindRecord {
            target: Bytes::copy_from_slice(&target.0),
        }),
        Body::Record {
            record,
            contacts,
            token,
        } => B::Record(proto::Record {
            record: record.as_deref().map(record_to_proto),
            contacts: contacts_to_proto(contacts),
            token: token
                .map(|t| Bytes::copy_from_slice(&t))
                .unwrap_or_default(),
        }),
        Body::PutRecord { record, token } => B::PutRecord(proto::PutRecord {
            record: Some(record_to_proto(record)),
            token: Bytes::copy_from_slice(token),
        }),
        Body::RecordStored { stored } => B::RecordStored(proto::RecordStored { stored: *stored }),
        Body::Offer { ids } => B::Offer(proto::Offer {
            ids: ids.iter().map(|id| Bytes::copy_from_slice(&id.0)).collect(),
        }),
        Body::Offered { want, held } => B::Offered(proto::Offered {
            want: want
                .iter()
                .map(|id| Bytes::copy_from_slice(&id.0))
                .collect(),
            held: held
                .iter()
                .map(|id| Bytes::copy_from_slice(&id.0))
                .collect(),
        }),
        Body::Ping => B::Ping(proto::Ping {}),
        Body::Pong { observed } => B::Pong(proto::Pong {
            observed: observed.as_ref().map(endpoint),
        }),
        Body::FindNode { target } => B::FindNode(proto::FindNode {
            target: Bytes::copy_from_slice(&target.0),
        }),
        Body::Nodes { contacts } => B::Nodes(proto::Nodes {
            contacts: contacts_to_proto(contacts),
        }),
    };
    proto::Packet {
        version: PROTOCOL_VERSION,
        sender: Bytes::copy_from_slice(&p.sender.0),
        txid: p.txid,
        challenge: p
            .challenge
            .map(|c| Bytes::copy_from_slice(&c))
            .unwrap_or_default(),
        proof: p.proof.as_ref().map(|proof| proto::Proof {
            public_key: Bytes::copy_from_slice(proof.key.as_bytes()),
            signature: Bytes::copy_from_slice(&proof.signature.to_bytes()),
        }),
        padding: Bytes::new(),
        body: Some(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{proof_message, Identity};

    fn sample_contacts(n: usize) -> Vec<Contact> {
        (0..n)
            .map(|i| Contact {
                id: Address([i as u8; 20]),
                addr: if i % 2 == 0 {
                    SocketAddr::from(([10, 0, i as u8, 1], 4000 + i as u16))
                } else {
                    SocketAddr::from(([0xfe80, 0, 0, 0, 0, 0, 0, i as u16], 65535))
                },
            })
            .collect()
    }

    #[test]
    fn contacts_sliced_from_one_buffer_match_one_by_one() {
        for n in [0, 1, 2, 7, 8] {
            let contacts = sample_contacts(n);
            let one_by_one: Vec<proto::Contact> = contacts.iter().map(contact_to_proto).collect();
            assert_eq!(contacts_to_proto(&contacts), one_by_one);
        }
    }

    fn all_bodies() -> Vec<Body> {
        vec![
            Body::Ping,
            Body::Pong {
                observed: Some(SocketAddr::from(([127, 0, 0, 1], 9))),
            },
            Body::Pong { observed: None },
            Body::FindNode {
                target: Address([7; 20]),
            },
            Body::Nodes {
                contacts: sample_contacts(8),
            },
            Body::Nodes { contacts: vec![] },
            Body::Store {
                envelope: Box::new(big_envelope()),
                hops_left: 3,
            },
            Body::Stored {
                id: big_envelope().id(),
                status: StoreStatus::Delivered(Box::new(ack())),
            },
            Body::Stored {
                id: big_envelope().id(),
                status: StoreStatus::Held,
            },
            Body::Acknowledge {
                ack: Box::new(ack()),
                hops_left: 2,
            },
            Body::Acknowledged {
                id: big_envelope().id(),
            },
            Body::Pull,
            Body::Pulled { count: 3 },
            Body::FindRecord {
                target: Address([5; 20]),
            },
            Body::Record {
                record: Some(Box::new(IdentityRecord::sign(
                    &Identity::from_seed([8; 32]),
                    7,
                    u64::MAX,
                ))),
                contacts: sample_contacts(8),
                token: Some([9; TOKEN_LEN]),
            },
            Body::Record {
                record: None,
                contacts: vec![],
                token: None,
            },
            Body::PutRecord {
                record: Box::new(IdentityRecord::sign(
                    &Identity::from_seed([8; 32]),
                    7,
                    u64::MAX,
                )),
                token: [1; TOKEN_LEN],
            },
            Body::RecordStored { stored: true },
            Body::Offer {
                ids: offer_sample(MAX_OFFER_IDS),
            },
            Body::Offered {
                want: offer_sample(MAX_OFFER_IDS / 2),
                held: offer_sample(MAX_OFFER_IDS)[MAX_OFFER_IDS / 2..].to_vec(),
            },
            Body::Offered {
                want: vec![],
                held: vec![],
            },
        ]
    }

    fn offer_sample(n: usize) -> Vec<MessageId> {
        (0..n).map(|i| MessageId([i as u8; 20])).collect()
    }

    fn raw_packet(body: proto::packet::Body) -> Vec<u8> {
        proto::Packet {
            version: PROTOCOL_VERSION,
            sender: Bytes::from_static(&[1; 20]),
            txid: 1,
            challenge: Bytes::new(),
            proof: None,
            padding: Bytes::new(),
            body: Some(body),
        }
        .encode_to_vec()
    }

    #[test]
    fn rejects_bad_offers() {
        use proto::packet::Body as B;
        let id = |b: u8| Bytes::from(vec![b; 20]);
        let offer = |ids: Vec<Bytes>| raw_packet(B::Offer(proto::Offer { ids }));
        let offered = |want: Vec<Bytes>, held: Vec<Bytes>| {
            raw_packet(B::Offered(proto::Offered { want, held }))
        };
        let bad = |what| Err(WireError::BadOffer(what));
        assert_eq!(decode(&offer(vec![])), bad("no ids"));
        let many: Vec<Bytes> = (0..=MAX_OFFER_IDS as u8).map(id).collect();
        assert_eq!(decode(&offer(many.clone())), bad("too many ids"));
        assert_eq!(
            decode(&offer(vec![id(1), id(2), id(1)])),
            bad("repeated id")
        );
        assert_eq!(
            decode(&offer(vec![Bytes::from_static(&[1; 19])])),
            Err(WireError::IdLength {
                field: "message id",
                len: 19
            })
        );
        // The cap holds for want and held together, and an id is in one.
        let (want, held) = many.split_at(MAX_OFFER_IDS / 2);
        assert_eq!(
            decode(&offered(want.to_vec(), held.to_vec())),
            bad("too many ids")
        );
        assert_eq!(
            decode(&offered(vec![id(3)], vec![id(3)])),
            bad("repeated id")
        );
        for e in [bad("no ids"), bad("repeated id")] {
            assert_eq!(e.unwrap_err().kind(), DropReason::BadOffer);
        }
    }

    fn big_envelope() -> Envelope {
        let from = Identity::from_seed([8; 32]);
        Envelope::sign(
            &from,
            Address([9; 20]),
            u64::MAX,
            u32::MAX,
            MAX_HOP_LIMIT,
            Bytes::from(vec![0xff; MAX_BODY]),
        )
    }

    fn ack() -> Ack {
        Ack::sign(&Identity::from_seed([9; 32]), &big_envelope())
    }

    #[test]
    fn direct_encoding_is_byte_for_byte_what_prost_writes() {
        let id = Identity::from_seed([3; 32]);
        let proof = Proof {
            key: id.public_key(),
            signature: id.sign(&proof_message(&[5; 16])),
        };
        let mut direct = 0;
        for body in all_bodies() {
            for (txid, challenge, proof) in [
                (0, None, None),
                (u64::MAX, Some([6; CHALLENGE_LEN]), None),
                (1 << 40, None, Some(proof)),
                (9, Some([7; CHALLENGE_LEN]), Some(proof)),
            ] {
                let p = Packet {
                    sender: Address([4; 20]),
                    txid,
                    challenge,
                    proof,
                    body: body.clone(),
                };
                for min_len in [
                    0,
                    1,
                    60,
                    128,
                    129,
                    130,
                    131,
                    210,
                    300,
                    1000,
                    MAX_DATAGRAM * 2,
                ] {
                    let mut raw = packet_to_proto(&p);
                    let n = padding_for(raw.encoded_len(), min_len);
                    raw.padding = Bytes::from_static(&ZEROS[..n]);
                    let by_prost = raw.encode_to_vec();
                    assert_eq!(
                        encode_padded(&p, min_len)[..],
                        by_prost[..],
                        "{p:?} {min_len}"
                    );
                    if let Some(b) = encode_direct(&p, min_len) {
                        direct += 1;
                        assert_eq!(b[..], by_prost[..]);
                    }
                }
                assert_eq!(
                    encode(&p)[..],
                    packet_to_proto(&p).encode_to_vec()[..],
                    "{p:?}"
                );
            }
        }
        assert_eq!(direct, 6 * 4 * 11, "Ping, two Pongs, FindNode, two Nodes");
    }

    #[test]
    fn roundtrip_every_body() {
        let id = Identity::from_seed([3; 32]);
        for body in all_bodies() {
            let request = body.is_request();
            let p = Packet {
                sender: id.address(),
                txid: 0xdead_beef_0102_0304,
                challenge: request.then_some([5; 16]),
                proof: (!request).then(|| Proof {
                    key: id.public_key(),
                    signature: id.sign(&proof_message(&[5; 16])),
                }),
                body,
            };
            let bytes = encode(&p);
            assert!(bytes.len() <= MAX_DATAGRAM, "{} bytes", bytes.len());
            assert_eq!(decode(&bytes), Ok(p));
        }
    }

    #[test]
    fn the_direct_nodes_encoder_writes_what_prost_writes() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(8);
        let id = Identity::from_seed([3; 32]);
        for _ in 0..2000 {
            let contacts = (0..rng.gen_range(0..=MAX_CONTACTS))
                .map(|_| Contact {
                    id: Address::random(&mut rng),
                    addr: if rng.gen_bool(0.5) {
                        SocketAddr::from((rng.gen::<[u8; 4]>(), rng.gen::<u16>()))
                    } else {
                        SocketAddr::from((rng.gen::<[u8; 16]>(), rng.gen_range(0..3)))
                    },
                })
                .collect();
            let p = Packet {
                sender: Address::random(&mut rng),
                txid: if rng.gen_bool(0.1) { 0 } else { rng.gen() },
                challenge: None,
                proof: rng.gen_bool(0.5).then(|| Proof {
                    key: id.public_key(),
                    signature: id.sign(&proof_message(&rng.gen::<[u8; 16]>())),
                }),
                body: Body::Nodes { contacts },
            };
            let prost = packet_to_proto(&p).encode_to_vec();
            assert_eq!(&encode(&p)[..], &prost[..]);
        }
    }

    #[test]
    fn padded_lookup_requests_earn_their_largest_answer_and_a_challenge() {
        let id = Identity::from_seed([3; 32]);
        let answer = |body| {
            encode(&Packet {
                sender: id.address(),
                txid: u64::MAX,
                challenge: None,
                proof: Some(Proof {
                    key: id.public_key(),
                    signature: id.sign(&proof_message(&[5; 16])),
                }),
                body,
            })
            .len()
        };
        // The largest contacts: IPv6 endpoints with the largest port.
        let contacts: Vec<Contact> = (0..MAX_CONTACTS as u8)
            .map(|i| Contact {
                id: Address([i; 20]),
                addr: "[2001:db8::1]:65535".parse().unwrap(),
            })
            .collect();
        let nodes = answer(Body::Nodes {
            contacts: contacts.clone(),
        });
        let record = answer(Body::Record {
            record: Some(Box::new(IdentityRecord::sign(&id, u64::MAX, u64::MAX))),
            contacts,
            token: Some([0xff; TOKEN_LEN]),
        });
        assert_eq!((nodes, record), (522, 661));
        assert!(nodes + PADDED_PING <= 3 * PADDED_REQUEST);
        assert!(record + PADDED_PING <= 3 * PADDED_FIND_RECORD);
    }

    #[test]
    fn padding_reaches_the_size_asked_and_is_ignored() {
        let id = Identity::from_seed([3; 32]);
        let p = Packet {
            sender: id.address(),
            txid: 9,
            challenge: Some([1; 16]),
            proof: None,
            body: Body::FindNode {
                target: Address([2; 20]),
            },
        };
        for min in [0, 100, 129, 130, 131, PADDED_REQUEST, 300] {
            let bytes = encode_padded(&p, min);
            assert!(
                bytes.len() >= min.min(MAX_DATAGRAM),
                "{min}: {}",
                bytes.len()
            );
            assert!(
                bytes.len() <= min.max(encode(&p).len()) + 1,
                "{min}: {}",
                bytes.len()
            );
            assert_eq!(decode(&bytes), Ok(p.clone()));
        }
    }

    #[test]
    fn rejects_before_decoding_when_oversize() {
        assert_eq!(decode(&[]), Err(WireError::Empty));
        let big = vec![0u8; MAX_DATAGRAM + 1];
        assert_eq!(decode(&big), Err(WireError::Oversize(MAX_DATAGRAM + 1)));
    }

    #[test]
    fn rejects_too_many_contacts() {
        let p = Packet {
            sender: Address([1; 20]),
            txid: 1,
            challenge: None,
            proof: None,
            body: Body::Nodes {
                contacts: sample_contacts(9),
            },
        };
        assert_eq!(
            decode(&encode(&p)),
            Err(WireError::TooManyContacts { got: 9, max: 8 })
        );
    }

    #[test]
    fn rejects_short_ids_and_missing_body() {
        let raw = proto::Packet {
            version: PROTOCOL_VERSION,
            sender: Bytes::from_static(&[1; 19]),
            txid: 1,
            challenge: Bytes::new(),
            proof: None,
            padding: Bytes::new(),
            body: Some(proto::packet::Body::Ping(proto::Ping {})),
        };
        assert_eq!(
            decode(&raw.encode_to_vec()),
            Err(WireError::IdLength {
                field: "sender",
                len: 19
            })
        );
        let raw = proto::Packet {
            sender: Bytes::from_static(&[1; 20]),
            body: None,
            ..raw
        };
        assert_eq!(decode(&raw.encode_to_vec()), Err(WireError::UnknownType));
    }

    #[test]
    fn the_last_of_several_bodies_wins_and_unknown_fields_are_skipped() {
        // A Ping, then a FindNode whose target is too short (not checked:
        // it is discarded), then a FindNode: a FindNode, as protobuf reads
        // a oneof (protocol.md §3.1).
        let mut raw = raw_packet(proto::packet::Body::Ping(proto::Ping {}));
        raw.extend_from_slice(&[0x62, 0x03, 0x0a, 0x01, 0x00]);
        raw.extend_from_slice(&[0x62, 0x16, 0x0a, 0x14]);
        raw.extend_from_slice(&[7; 20]);
        let p = decode(&raw).map(|p| p.body);
        assert_eq!(
            p,
            Ok(Body::FindNode {
                target: Address([7; 20])
            })
        );
        assert_eq!(decode_with_prost(&raw).map(|p| p.body), p);
        // An unknown field 30 (length-delimited, tag f2 01) after a Ping is
        // skipped; alone, it leaves no body.
        let mut raw = raw_packet(proto::packet::Body::Ping(proto::Ping {}));
        raw.extend_from_slice(&[0xf2, 0x01, 0x02, 0x08, 0x01]);
        assert_eq!(decode(&raw).map(|p| p.body), Ok(Body::Ping));
        let mut raw = proto::Packet {
            version: PROTOCOL_VERSION,
            sender: Bytes::from_static(&[1; 20]),
            txid: 1,
            ..Default::default()
        }
        .encode_to_vec();
        raw.extend_from_slice(&[0xf2, 0x01, 0x02, 0x08, 0x01]);
        assert_eq!(decode(&raw), Err(WireError::UnknownType));
    }
}
