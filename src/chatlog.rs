//! The conversation log: every message this person sent or received, with
//! the state of the sent ones, kept across restarts for `/inbox`,
//! `/outbox` and `/history`.
//!
//! It belongs to the front end: the node keeps only what the protocol
//! needs (undelivered messages, sealed, and received ids to recognise
//! copies), and forgets delivered ones. The log lives in
//! `conversations.jsonl` in the data directory, one record per line,
//! appended as things happen; on start it is read back and, once it holds
//! more than twice [`MAX_ENTRIES`] lines, rewritten with only the newest
//! [`MAX_ENTRIES`] messages. A line a crash cut short is skipped (and
//! counted), never fatal.
//!
//! No message text is on disk in the clear, as for the node's own
//! records: each line is a JSON object sealed with XChaCha20-Poly1305
//! under a key derived from the identity's private key
//! ([`crate::identity::Identity::storage_key`]), with a random 24-byte
//! nonce, written as hex.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::XChaCha20Poly1305;
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::message::MessageId;

/// Messages kept in memory and on disk; the oldest go first.
pub const MAX_ENTRIES: usize = 10_000;

/// Longest text kept per message, in bytes (the wire limit is lower).
const MAX_TEXT: usize = 64 * 1024;

/// Where a sent message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentState {
    /// Accepted by the node; waiting for the recipient's key or its first
    /// copies.
    Queued,
    /// Held by this many relays (0: none confirmed yet; retried).
    Placed(usize),
    /// Taken by the recipient directly, ack pending.
    Taken,
    /// The recipient's signed ack arrived.
    Delivered,
    /// Its TTL ran out without an ack.
    Expired,
    /// Withdrawn by the user before it was delivered.
    Cancelled,
}

impl SentState {
    /// Whether the message may still reach its recipient and be acked.
    pub fn open(self) -> bool {
        matches!(
            self,
            SentState::Queued | SentState::Placed(_) | SentState::Taken
        )
    }

    /// Words for people.
    pub fn describe(self) -> String {
        match self {
            SentState::Queued => "queued".into(),
            SentState::Placed(0) => "not placed yet".into(),
            SentState::Placed(1) => "on 1 relay".into(),
            SentState::Placed(n) => format!("on {n} relays"),
            SentState::Taken => "taken by the recipient".into(),
            SentState::Delivered => "delivered".into(),
            SentState::Expired => "expired".into(),
            SentState::Cancelled => "cancelled".into(),
        }
    }
}

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// We received it from this address.
    In {
        /// The sender.
        from: Address,
    },
    /// We sent it to this address.
    Out {
        /// The recipient.
        to: Address,
        /// Where it stands.
        state: SentState,
    },
}

/// One message in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The message id.
    pub id: MessageId,
    /// Received or sent.
    pub direction: Direction,
    /// The text.
    pub text: String,
    /// When it was written, ms since the epoch (the sender's clock).
    pub written_ms: u64,
    /// When it arrived or was sent, ms since the epoch (our clock).
    pub at_ms: u64,
    /// When its state last changed (sent messages), ms since the epoch.
    pub changed_ms: u64,
}

impl Entry {
    /// The other party.
    pub fn peer(&self) -> Address {
        match self.direction {
            Direction::In { from } => from,
            Direction::Out { to, .. } => to,
        }
    }
}

/// One line of the file.
#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Line {
    In {
        id: String,
        from: String,
        text: String,
        written: u64,
        at: u64,
    },
    Out {
        id: String,
        to: String,
        text: String,
        at: u64,
    },
    State {
        id: String,
        state: SentState,
        at: u64,
    },
}

/// Why the log could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct LogError {
    /// The file.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

/// Seals and opens the log's lines.
#[derive(Clone)]
struct Sealer(XChaCha20Poly1305);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

/// Label of the log's key ([`crate::identity::Identity::storage_key`]).
pub const KEY_LABEL: &[u8] = b"conversations";

impl Sealer {
    fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self.0.encrypt(&nonce, plain).ok()?;
        let mut out = hex::encode(nonce).into_bytes();
        out.extend_from_slice(hex::encode(ct).as_bytes());
        Some(out)
    }

    fn open(&self, line: &[u8]) -> Option<Vec<u8>> {
        let bytes = hex::decode(line).ok()?;
        if bytes.len() < 24 {
            return None;
        }
        let (nonce, ct) = bytes.split_at(24);
        self.0
            .decrypt(chacha20poly1305::XNonce::from_slice(nonce), ct)
            .ok()
    }
}

/// The conversation log.
#[derive(Debug, Default)]
pub struct ChatLog {
    path: Option<PathBuf>,
    sealer: Option<Sealer>,
    /// Oldest first.
    entries: Vec<Entry>,
    index: HashMap<MessageId, usize>,
    /// Lines in the file (to know when to compact).
    lines: usize,
    /// Lines that could not be read at load.
    skipped: usize,
}

fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl ChatLog {
    /// A log kept only in memory.
    pub fn in_memory() -> ChatLog {
        ChatLog::default()
    }

    /// Read the log at `path` (empty if missing), sealed with `key`,
    /// compacting it if it grew past twice [`MAX_ENTRIES`] lines.
    pub fn open(path: &Path, key: &[u8; 32]) -> Result<ChatLog, LogError> {
        let err = |source| LogError {
            path: path.to_path_buf(),
            source,
        };
        let mut log = ChatLog {
            path: Some(path.to_path_buf()),
            sealer: Some(Sealer(XChaCha20Poly1305::new(key.into()))),
            ..ChatLog::default()
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(log),
            Err(e) => return Err(err(e)),
        };
        for line in std::io::BufReader::new(file).split(b'\n') {
            let line = line.map_err(err)?;
            if line.is_empty() {
                continue;
            }
            log.lines += 1;
            let line = match &log.sealer {
                Some(s) => match s.open(&line) {
                    Some(plain) => plain,
                    None => {
                        log.skipped += 1;
                        continue;
                    }
                },
                None => line,
            };
            match serde_json::from_slice::<Line>(&line) {
                Ok(l) => {
                    if !log.apply(l) {
                        log.skipped += 1;
                    }
                }
                Err(_) => log.skipped += 1,
            }
        }
        if log.skipped > 0 {
            tracing::warn!(skipped = log.skipped, path = %path.display(), "unreadable lines in the conversation log");
        }
        if log.lines > 2 * MAX_ENTRIES {
            log.compact().map_err(err)?;
        }
        Ok(log)
    }

    /// Lines of the file that could not be read when it was opened.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn apply(&mut self, line: Line) -> bool {
        match line {
            Line::In {
                id,
                from,
                text,
                written,
                at,
            } => {
                let (Ok(id), Ok(from)) = (id.parse(), from.parse()) else {
                    return false;
                };
                self.insert(Entry {
                    id,
                    direction: Direction::In { from },
                    text,
                    written_ms: written,
                    at_ms: at,
                    changed_ms: at,
                });
            }
            Line::Out { id, to, text, at } => {
                let (Ok(id), Ok(to)) = (id.parse(), to.parse()) else {
                    return false;
                };
                self.insert(Entry {
                    id,
                    direction: Direction::Out {
                        to,
                        state: SentState::Queued,
                    },
                    text,
                    written_ms: at,
                    at_ms: at,
                    changed_ms: at,
                });
            }
            Line::State { id, state, at } => {
                let Ok(id) = id.parse::<MessageId>() else {
                    return false;
                };
                let Some(&i) = self.index.get(&id) else {
                    // Its message was compacted away.
                    return true;
                };
                if let Direction::Out { state: s, .. } = &mut self.entries[i].direction {
                    *s = state;
                    self.entries[i].changed_ms = at;
                }
            }
        }
        true
    }

    fn insert(&mut self, e: Entry) -> bool {
        if self.index.contains_key(&e.id) {
            return false;
        }
        self.index.insert(e.id, self.entries.len());
        self.entries.push(e);
        if self.entries.len() > MAX_ENTRIES + MAX_ENTRIES / 8 {
            self.trim();
        }
        true
    }

    /// Keep the newest [`MAX_ENTRIES`] in memory.
    fn trim(&mut self) {
        let drop = self.entries.len().saturating_sub(MAX_ENTRIES);
        self.entries.drain(..drop);
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id, i))
            .collect();
    }

    fn compact(&mut self) -> std::io::Result<()> {
        self.trim();
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let mut out = Vec::new();
        for e in &self.entries {
            for l in lines_of(e) {
                if let Some(mut bytes) = self.encode(&l) {
                    bytes.push(b'\n');
                    out.extend_from_slice(&bytes);
                }
            }
        }
        crate::book::write_atomically(&path, &out)?;
        self.lines = out.iter().filter(|&&b| b == b'\n').count();
        Ok(())
    }

    /// One line as stored: JSON, sealed when the log has a key.
    fn encode(&self, line: &Line) -> Option<Vec<u8>> {
        let json = serde_json::to_vec(line).ok()?;
        match &self.sealer {
            Some(s) => s.seal(&json),
            None => Some(json),
        }
    }

    fn append(&mut self, line: &Line) -> Result<(), LogError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |source| LogError {
            path: path.clone(),
            source,
        };
        let mut bytes = self
            .encode(line)
            .ok_or_else(|| err(std::io::Error::other("could not seal the line")))?;
        bytes.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        self.lines += 1;
        if self.lines > 2 * MAX_ENTRIES {
            let path = path.clone();
            self.compact().map_err(|source| LogError { path, source })?;
        }
        Ok(())
    }

    /// Record a message we received (once: a repeat is ignored).
    pub fn received(
        &mut self,
        id: MessageId,
        from: Address,
        text: &str,
        written_ms: u64,
        at_ms: u64,
    ) -> Result<bool, LogError> {
        let text = clip(text);
        if !self.insert(Entry {
            id,
            direction: Direction::In { from },
            text: text.clone(),
            written_ms,
            at_ms,
            changed_ms: at_ms,
        }) {
            return Ok(false);
        }
        self.append(&Line::In {
            id: id.to_string(),
            from: from.to_string(),
            text,
            written: written_ms,
            at: at_ms,
        })?;
        Ok(true)
    }

    /// Record a message we sent.
    pub fn sent(
        &mut self,
        id: MessageId,
        to: Address,
        text: &str,
        at_ms: u64,
    ) -> Result<(), LogError> {
        let text = clip(text);
        if !self.insert(Entry {
            id,
            direction: Direction::Out {
                to,
                state: SentState::Queued,
            },
            text: text.clone(),
            written_ms: at_ms,
            at_ms,
            changed_ms: at_ms,
        }) {
            return Ok(());
        }
        self.append(&Line::Out {
            id: id.to_string(),
            to: to.to_string(),
            text,
            at: at_ms,
        })
    }

    /// Record a new state of a sent message. A final state (delivered,
    /// expired, cancelled) is not overwritten by a late progress report,
    /// and `Delivered` wins over everything.
    pub fn set_state(
        &mut self,
        id: &MessageId,
        state: SentState,
        at_ms: u64,
    ) -> Result<(), LogError> {
        let Some(&i) = self.index.get(id) else {
            return Ok(());
        };
        let Direction::Out { state: s, .. } = &mut self.entries[i].direction else {
            return Ok(());
        };
        if *s == state || *s == SentState::Delivered || (!s.open() && state.open()) {
            return Ok(());
        }
        *s = state;
        self.entries[i].changed_ms = at_ms;
        self.append(&Line::State {
            id: id.to_string(),
            state,
            at: at_ms,
        })
    }

    /// The message `id`, if logged.
    pub fn get(&self, id: &MessageId) -> Option<&Entry> {
        self.index.get(id).map(|&i| &self.entries[i])
    }

    /// Every logged message, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Sent messages whose id starts with the hex digits `prefix`.
    pub fn sent_matching(&self, prefix: &str) -> Vec<&Entry> {
        let prefix = prefix.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(|e| matches!(e.direction, Direction::Out { .. }))
            .filter(|e| e.id.to_string().starts_with(&prefix))
            .collect()
    }

    /// Every address we exchanged messages with, most recent first.
    pub fn peers(&self) -> Vec<Address> {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .rev()
            .map(Entry::peer)
            .filter(|a| seen.insert(*a))
            .collect()
    }
}

fn lines_of(e: &Entry) -> Vec<Line> {
    match e.direction {
        Direction::In { from } => vec![Line::In {
            id: e.id.to_string(),
            from: from.to_string(),
            text: e.text.clone(),
            written: e.written_ms,
            at: e.at_ms,
        }],
        Direction::Out { to, state } => {
            let mut v = vec![Line::Out {
                id: e.id.to_string(),
                to: to.to_string(),
                text: e.text.clone(),
                at: e.at_ms,
            }];
            if state != SentState::Queued {
                v.push(Line::State {
                    id: e.id.to_string(),
                    state,
                    at: e.changed_ms,
                });
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn id(n: u8) -> MessageId {
        MessageId([n; 20])
    }

    #[test]
    fn the_log_comes_back_after_a_restart_with_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conversations.jsonl");
        let (a, b) = (Address([1; 20]), Address([2; 20]));
        let mut log = ChatLog::open(&path, &KEY).unwrap();
        log.sent(id(1), a, "hello\nthere", 10).unwrap();
        log.set_state(&id(1), SentState::Placed(3), 11).unwrap();
        log.received(id(2), b, "hi", 5, 12).unwrap();
        assert!(!log.received(id(2), b, "hi", 5, 13).unwrap(), "once");
        log.set_state(&id(1), SentState::Delivered, 14).unwrap();
        // A late progress report does not undo delivery.
        log.set_state(&id(1), SentState::Placed(4), 15).unwrap();
        drop(log);
        // A line cut short by a crash is skipped.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"0badc0de").unwrap();
        // Nothing is readable without the key.
        let text = std::fs::read(&path).unwrap();
        assert!(!text.windows(5).any(|w| w == b"hello"));
        assert_eq!(ChatLog::open(&path, &[8; 32]).unwrap().entries().len(), 0);
        let log = ChatLog::open(&path, &KEY).unwrap();
        assert_eq!(log.skipped(), 1);
        assert_eq!(log.entries().len(), 2);
        let e = log.get(&id(1)).unwrap();
        assert_eq!(e.text, "hello\nthere");
        assert_eq!(
            e.direction,
            Direction::Out {
                to: a,
                state: SentState::Delivered
            }
        );
        assert_eq!(log.peers(), vec![b, a]);
        assert_eq!(log.sent_matching("0101").len(), 1);
        assert!(log.sent_matching("02").is_empty());
    }

    #[test]
    fn the_log_is_bounded_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conversations.jsonl");
        let mut log = ChatLog::open(&path, &KEY).unwrap();
        let a = Address([1; 20]);
        for n in 0..(2 * MAX_ENTRIES as u32 + 10) {
            let mut bytes = [0u8; 20];
            bytes[..4].copy_from_slice(&n.to_be_bytes());
            log.received(MessageId(bytes), a, "x", n.into(), n.into())
                .unwrap();
        }
        assert!(log.entries().len() <= MAX_ENTRIES + MAX_ENTRIES / 8);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 2 * MAX_ENTRIES, "{lines}");
        let log = ChatLog::open(&path, &KEY).unwrap();
        assert!(log.entries().len() <= MAX_ENTRIES + MAX_ENTRIES / 8);
        assert_eq!(
            log.entries().last().unwrap().at_ms,
            2 * MAX_ENTRIES as u64 + 9
        );
    }
}
