//! The node's durable records: the one place they become bytes and back.
//!
//! The core never touches a disk. It describes what changed as a
//! [`WriteBatch`] of [`Op`]s on named [`Table`]s; a driver makes the batch
//! durable (redb for the real node, memory for the simulator) and reports
//! back. On start the driver hands the stored rows back as a [`Snapshot`].
//! Values are protobuf messages from `proto/store.proto`, encoded and
//! decoded only here.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;

use super::{ack_to_proto, envelope_to_proto, proto, Contact};
use crate::address::Distance;
use crate::message::{Ack, Envelope, MessageId};
use crate::routing::Prefix;

/// Which collection a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Messages held for relaying (and our own undelivered ones).
    Held,
    /// Acks routed towards senders.
    Acks,
    /// Acks kept to answer late copies.
    Tombstones,
    /// Messages we sent.
    Outbox,
    /// Messages we received.
    Inbox,
    /// Ids of received messages the front end has shown, written by the
    /// front end itself just before it shows them.
    Shown,
    /// Single-record tables (the routing-table snapshot).
    Meta,
    /// Records that could not be read back, kept aside for inspection
    /// under their table's name, a zero byte and their key.
    Damaged,
    /// Our messages waiting for their recipient's key.
    Drafts,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 9] = [
        Table::Held,
        Table::Acks,
        Table::Tombstones,
        Table::Outbox,
        Table::Inbox,
        Table::Shown,
        Table::Meta,
        Table::Damaged,
        Table::Drafts,
    ];

    /// The table's stable name in a database.
    pub fn name(self) -> &'static str {
        match self {
            Table::Held => "held",
            Table::Acks => "acks",
            Table::Tombstones => "tombstones",
            Table::Outbox => "outbox",
            Table::Inbox => "inbox",
            Table::Shown => "shown",
            Table::Meta => "meta",
            Table::Damaged => "damaged",
            Table::Drafts => "drafts",
        }
    }
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace `key` in a table.
    Put(Table, Vec<u8>, Vec<u8>),
    /// Remove `key` from a table.
    Delete(Table, Vec<u8>),
}

impl Op {
    /// The table and key this change touches.
    pub fn key(&self) -> (Table, &[u8]) {
        match self {
            Op::Put(t, k, _) | Op::Delete(t, k) => (*t, k),
        }
    }
}

/// Identifies a write batch; batches are numbered from 1 in the order the
/// core emits them.
pub type BatchId = u64;

/// Changes the core wants made durable, all or nothing, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteBatch {
    /// Its number, to report back with `Node::handle_written`.
    pub id: BatchId,
    /// The changes.
    pub ops: Vec<Op>,
}

/// Everything stored, by table, in key order.
pub type Snapshot = BTreeMap<Table, Vec<(Vec<u8>, Vec<u8>)>>;

/// Key of the routing-table snapshot in [`Table::Meta`].
pub const CONTACTS_KEY: &[u8] = b"contacts";

/// A held message as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRecord {
    /// The message.
    pub envelope: Envelope,
    /// Our own hops left for it.
    pub hops_left: u32,
    /// Transmissions left.
    pub budget: u32,
    /// Copies go only to nodes nearer the recipient than this.
    pub bound: Distance,
    /// The network prefix it came from, if recorded.
    pub source: Option<Prefix>,
}

/// A routed ack as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckRecord {
    /// The ack.
    pub ack: Ack,
    /// Our own hops left for it.
    pub hops_left: u32,
    /// Transmissions left.
    pub budget: u32,
    /// Copies go only to nodes nearer the sender than this.
    pub bound: Distance,
}

/// A tombstone as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TombstoneRecord {
    /// The ack.
    pub ack: Ack,
    /// Kept until, ms since the Unix epoch.
    pub keep_until_ms: u64,
    /// We have routed it towards its sender already.
    pub routed: bool,
}

/// What became of a message we sent, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentState {
    /// Waiting for the ack.
    Sent,
    /// The ack arrived.
    Delivered,
    /// It expired without an ack.
    Expired,
}

/// A sent message as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRecord {
    /// The message.
    pub envelope: Envelope,
    /// Its state.
    pub state: SentState,
    /// The id its user knows it by, if not the envelope's.
    pub user_id: Option<MessageId>,
}

/// A message of ours waiting for its recipient's key, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DraftRecord {
    /// Its recipient.
    pub recipient: crate::address::Address,
    /// Its text (plaintext: the sender's own disk only).
    pub text: Bytes,
    /// When it was written, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Its lifetime in seconds.
    pub ttl_secs: u32,
}

/// A received message as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxRecord {
    /// Remembered until, ms since the Unix epoch.
    pub keep_until_ms: u64,
    /// The message (absent in records of older versions).
    pub envelope: Option<Envelope>,
    /// Not yet handed to the user.
    pub unshown: bool,
    /// Created at or before the replay floor when it arrived: it may repeat
    /// a message shown before and forgotten (§16.4).
    pub maybe_repeat: bool,
}

/// Why a stored record could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// Not a valid protobuf encoding of the record.
    #[error("undecodable record: {0}")]
    Decode(String),
    /// A field fails the wire rules, or a required one is missing.
    #[error("invalid record: {0}")]
    Invalid(String),
    /// The key is not the id of the record's message or ack.
    #[error("record key does not match its content")]
    KeyMismatch,
}

fn invalid(e: impl std::fmt::Display) -> RecordError {
    RecordError::Invalid(e.to_string())
}

fn distance(bytes: &[u8]) -> Result<Distance, RecordError> {
    <[u8; 20]>::try_from(bytes)
        .map(Distance)
        .map_err(|_| invalid("bound is not 20 bytes"))
}

fn envelope(e: Option<proto::Envelope>) -> Result<Envelope, RecordError> {
    Envelope::try_from(e.ok_or_else(|| invalid("missing envelope"))?).map_err(invalid)
}

fn ack(a: Option<proto::Ack>) -> Result<Ack, RecordError> {
    Ack::try_from(a.ok_or_else(|| invalid("missing ack"))?).map_err(invalid)
}

fn check_key(key: &[u8], id: &MessageId) -> Result<(), RecordError> {
    if key == id.0 {
        Ok(())
    } else {
        Err(RecordError::KeyMismatch)
    }
}

fn decode<M: Message + Default>(value: &[u8]) -> Result<M, RecordError> {
    M::decode(value).map_err(|e| RecordError::Decode(e.to_string()))
}

/// The key of a record about message `id`.
pub fn key(id: &MessageId) -> Vec<u8> {
    id.0.to_vec()
}

/// The message id a key names, if it is one.
pub fn id_of_key(key: &[u8]) -> Option<MessageId> {
    <[u8; 20]>::try_from(key).ok().map(MessageId)
}

impl HeldRecord {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        proto::HeldRecord {
            envelope: Some(envelope_to_proto(&self.envelope)),
            hops_left: self.hops_left,
            budget: self.budget,
            bound: Bytes::copy_from_slice(&self.bound.0),
            source: self
                .source
                .map(|p| Bytes::copy_from_slice(&p.to_bytes()))
                .unwrap_or_default(),
        }
        .encode_to_vec()
    }

    /// Decode the record stored under `key`.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<HeldRecord, RecordError> {
        let r: proto::HeldRecord = decode(value)?;
        let envelope = envelope(r.envelope)?;
        check_key(key, &envelope.id())?;
        Ok(HeldRecord {
            envelope,
            hops_left: r.hops_left,
            budget: r.budget,
            bound: distance(&r.bound)?,
            source: <[u8; 8]>::try_from(&r.source[..])
                .ok()
                .map(Prefix::from_bytes),
        })
    }
}

impl AckRecord {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        proto::RoutedAckRecord {
            ack: Some(ack_to_proto(&self.ack)),
            hops_left: self.hops_left,
            budget: self.budget,
            bound: Bytes::copy_from_slice(&self.bound.0),
        }
        .encode_to_vec()
    }

    /// Decode the record stored under `key`.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<AckRecord, RecordError> {
        let r: proto::RoutedAckRecord = decode(value)?;
        let ack = ack(r.ack)?;
        check_key(key, &ack.id)?;
        Ok(AckRecord {
            ack,
            hops_left: r.hops_left,
            budget: r.budget,
            bound: distance(&r.bound)?,
        })
    }
}

impl TombstoneRecord {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        proto::TombstoneRecord {
            ack: Some(ack_to_proto(&self.ack)),
            keep_until_ms: self.keep_until_ms,
            routed: self.routed,
        }
        .encode_to_vec()
    }

    /// Decode the record stored under `key`.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<TombstoneRecord, RecordError> {
        let r: proto::TombstoneRecord = decode(value)?;
        let ack = ack(r.ack)?;
        check_key(key, &ack.id)?;
        Ok(TombstoneRecord {
            ack,
            keep_until_ms: r.keep_until_ms,
            routed: r.routed,
        })
    }
}

impl OutboxRecord {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        proto::OutboxRecord {
            envelope: Some(envelope_to_proto(&self.envelope)),
            state: match self.state {
                SentState::Sent => 1,
                SentState::Delivered => 2,
                SentState::Expired => 3,
            },
            user_id: self
                .user_id
                .map(|id| Bytes::copy_from_slice(&id.0))
                .unwrap_or_default(),
        }
        .encode_to_vec()
    }

    /// Decode the record stored under `key`.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<OutboxRecord, RecordError> {
        let r: proto::OutboxRecord = decode(value)?;
        let envelope = envelope(r.envelope)?;
        check_key(key, &envelope.id())?;
        let state = match r.state {
            1 => SentState::Sent,
            2 => SentState::Delivered,
            3 => SentState::Expired,
            other => return Err(invalid(format!("outbox state {other}"))),
        };
        let user_id = id_of_key(&r.user_id);
        Ok(OutboxRecord {
            envelope,
            state,
            user_id,
        })
    }
}

impl DraftRecord {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        proto::DraftRecord {
            recipient: Bytes::copy_from_slice(&self.recipient.0),
            text: self.text.clone(),
            created_at_ms: self.created_at_ms,
            ttl_secs: self.ttl_secs,
        }
        .encode_to_vec()
    }

    /// Decode the record stored under `key` (its draft id).
    pub fn decode(key: &[u8], value: &[u8]) -> Result<DraftRecord, RecordError> {
        let r: proto::DraftRecord = decode(value)?;
        id_of_key(key).ok_or(RecordError::KeyMismatch)?;
        let recipient = crate::address::Address::try_from(&r.recipient[..])
            .map_err(|_| invalid("recipient is not 20 bytes"))?;
        Ok(DraftRecord {
            recipient,
            text: r.text,
            created_at_ms: r.created_at_ms,
            ttl_secs: r.ttl_secs,
        })
    }
}

impl InboxRecord {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        proto::InboxRecord {
            keep_until_ms: self.keep_until_ms,
            envelope: self.envelope.as_ref().map(envelope_to_proto),
            unshown: self.unshown,
            maybe_repeat: self.maybe_repeat,
        }
        .encode_to_vec()
    }

    /// Decode the record stored under `key`.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<InboxRecord, RecordError> {
        let r: proto::InboxRecord = decode(value)?;
        let envelope = r
            .envelope
            .map(Envelope::try_from)
            .transpose()
            .map_err(invalid)?;
        match &envelope {
            Some(e) => check_key(key, &e.id())?,
            None if r.unshown => return Err(invalid("unshown message without its text")),
            None => {
                id_of_key(key).ok_or(RecordError::KeyMismatch)?;
            }
        }
        Ok(InboxRecord {
            keep_until_ms: r.keep_until_ms,
            envelope,
            unshown: r.unshown,
            maybe_repeat: r.maybe_repeat,
        })
    }
}

/// Where an unreadable record of `table` under `key` is kept aside.
pub fn damaged_key(table: Table, key: &[u8]) -> Vec<u8> {
    let mut k = table.name().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(key);
    k
}

/// The changes that record messages `ids` as shown.
pub fn shown_ops(ids: &[MessageId]) -> Vec<Op> {
    ids.iter()
        .map(|id| Op::Put(Table::Shown, key(id), Vec::new()))
        .collect()
}

/// Encode the routing-table snapshot.
/// Written straight into one buffer (byte for byte what prost writes for
/// a `ContactsRecord`, checked by a test): a table is snapshotted often.
pub fn encode_contacts(contacts: &[Contact]) -> Vec<u8> {
    let mut out = Vec::with_capacity(super::contacts_len(contacts));
    super::put_contacts(&mut out, contacts);
    out
}

/// Decode the routing-table snapshot; invalid entries are skipped.
pub fn decode_contacts(value: &[u8]) -> Result<Vec<Contact>, RecordError> {
    let r: proto::ContactsRecord = decode(value)?;
    Ok(r.contacts
        .into_iter()
        .filter_map(|c| Contact::try_from(c).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::identity::Identity;
    use crate::wire::contact_to_proto;

    fn env() -> Envelope {
        Envelope::sign(
            &Identity::from_seed([1; 32]),
            Address([2; 20]),
            1_700_000_000_000,
            3600,
            4,
            Bytes::from_static(b"hi"),
        )
    }

    #[test]
    fn the_contacts_snapshot_is_what_prost_writes() {
        let contacts: Vec<Contact> = (0u8..5)
            .map(|i| Contact {
                id: Address([i; 20]),
                addr: if i % 2 == 0 {
                    format!("10.0.{i}.1:{}", u16::from(i) * 1000 + 1)
                        .parse()
                        .unwrap()
                } else {
                    format!("[2001:db8::{i}]:4000").parse().unwrap()
                },
            })
            .collect();
        let prost_form = proto::ContactsRecord {
            contacts: contacts.iter().map(contact_to_proto).collect(),
        }
        .encode_to_vec();
        assert_eq!(encode_contacts(&contacts), prost_form);
        assert_eq!(decode_contacts(&prost_form).unwrap(), contacts);
        assert!(encode_contacts(&[]).is_empty());
    }

    #[test]
    fn every_record_roundtrips_and_checks_its_key() {
        let e = env();
        let id = e.id();
        let a = Ack::sign(&Identity::from_seed([3; 32]), &e);
        let held = HeldRecord {
            envelope: e.clone(),
            hops_left: 3,
            budget: 7,
            bound: Distance([9; 20]),
            source: Some(Prefix::from_bytes([4, 10, 0, 0, 0, 0, 0, 0])),
        };
        assert_eq!(
            HeldRecord::decode(&key(&id), &held.encode()),
            Ok(held.clone())
        );
        assert_eq!(
            HeldRecord::decode(&[0; 20], &held.encode()),
            Err(RecordError::KeyMismatch)
        );
        let routed = AckRecord {
            ack: a,
            hops_left: 2,
            budget: 1,
            bound: Distance([1; 20]),
        };
        assert_eq!(AckRecord::decode(&key(&id), &routed.encode()), Ok(routed));
        let t = TombstoneRecord {
            ack: a,
            keep_until_ms: 5,
            routed: true,
        };
        assert_eq!(TombstoneRecord::decode(&key(&id), &t.encode()), Ok(t));
        let o = OutboxRecord {
            envelope: e.clone(),
            state: SentState::Delivered,
            user_id: Some(MessageId([4; 20])),
        };
        assert_eq!(OutboxRecord::decode(&key(&id), &o.encode()), Ok(o));
        let i = InboxRecord {
            keep_until_ms: 9,
            envelope: Some(e),
            unshown: true,
            maybe_repeat: true,
        };
        assert_eq!(InboxRecord::decode(&key(&id), &i.encode()), Ok(i));
    }

    #[test]
    fn an_old_inbox_record_reads_as_shown() {
        let old = proto::InboxRecord {
            keep_until_ms: 42,
            envelope: None,
            unshown: false,
            maybe_repeat: false,
        }
        .encode_to_vec();
        let r = InboxRecord::decode(&[7; 20], &old).unwrap();
        assert!(!r.unshown && r.envelope.is_none());
        assert!(InboxRecord::decode(&[7; 3], &old).is_err());
        assert!(matches!(
            HeldRecord::decode(&[7; 20], &[0xff, 0xff]),
            Err(RecordError::Decode(_))
        ));
    }
}
