//! The address book: names a person gives to the addresses they write to,
//! with the public key when they were given one, and how far they have read
//! each conversation.
//!
//! It belongs to the front end, not to the protocol: nothing in it is ever
//! sent. It lives in `contacts.json` in the node's data directory, rewritten
//! whole (to a temporary file, synced, then renamed over the old one) on
//! every change, so a crash leaves either the old book or the new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::address::Address;

/// Most names a book holds: adding beyond it is refused (the user removes
/// one first), so the file and every completion list stay small.
pub const MAX_NAMES: usize = 1_000;

/// Most conversations whose read position is remembered; the oldest
/// position is forgotten first (its messages then count as read).
pub const MAX_READ_MARKS: usize = 4_096;

/// Longest name, in characters.
pub const MAX_NAME_LEN: usize = 24;

/// Why the book refused a change or could not be read or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BookError {
    /// The name breaks the naming rules.
    #[error("{0}")]
    BadName(String),
    /// The name is taken by another address.
    #[error("{name} is already {address}; /remove {name} first, or pick another name")]
    NameTaken {
        /// The name.
        name: String,
        /// The address it names now.
        address: Address,
    },
    /// The address already has a name.
    #[error("{address} is already named {name}")]
    AlreadyNamed {
        /// The existing name.
        name: String,
        /// The address.
        address: Address,
    },
    /// The book is full.
    #[error("the address book is full ({MAX_NAMES} names); /remove one first")]
    Full,
    /// No such name.
    #[error("no contact named {0}; /contacts lists them")]
    NoSuchName(String),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a book.
    #[error("{path} is damaged ({reason}); move it away to start an empty address book")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        reason: String,
    },
}

/// One named contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name the user gave.
    pub name: String,
    /// Its address.
    pub address: Address,
    /// Its public key, if the user gave it: messages are then sealed at
    /// once instead of after a lookup of the key.
    pub key: Option<VerifyingKey>,
    /// When it was added, ms since the Unix epoch.
    pub added_ms: u64,
}

/// The file's shape.
#[derive(Serialize, Deserialize, Default)]
struct File {
    version: u32,
    contacts: Vec<FileEntry>,
    /// Address → ms since the epoch up to which its messages were read.
    #[serde(default)]
    read: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    name: String,
    address: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    added: u64,
}

/// The address book, loaded in memory, saved on every change.
#[derive(Debug, Default)]
pub struct Book {
    /// None for a book that is never saved (tests, and when the data
    /// directory is not writable).
    path: Option<PathBuf>,
    by_name: BTreeMap<String, Entry>,
    read: BTreeMap<Address, u64>,
}

/// Check a name against the rules; returns it as it will be kept.
pub fn check_name(name: &str) -> Result<String, BookError> {
    let bad = |why: &str| BookError::BadName(format!("{name:?} cannot be a name: {why}"));
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    let hex = name.chars().all(|c| c.is_ascii_hexdigit());
    if hex && (name.len() == 40 || name.len() == 64) {
        return Err(bad("it would read as an address or a key"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(bad(&format!("names are at most {MAX_NAME_LEN} characters")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(bad(&format!(
            "{c:?} is not allowed (letters, digits, _ - . only)"
        )));
    }
    if name.starts_with(['-', '.']) {
        return Err(bad("it must start with a letter, a digit or _"));
    }
    if name.eq_ignore_ascii_case("me") {
        return Err(bad("\"me\" stands for you in /history"));
    }
    Ok(name.to_string())
}

impl Book {
    /// A book that lives only in memory.
    pub fn in_memory() -> Book {
        Book::default()
    }

    /// Load the book at `path` (an empty one if the file does not exist).
    pub fn open(path: &Path) -> Result<Book, BookError> {
        let mut book = Book {
            path: Some(path.to_path_buf()),
            ..Book::default()
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(book),
            Err(source) => {
                return Err(BookError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let damaged = |reason: String| BookError::Damaged {
            path: path.to_path_buf(),
            reason,
        };
        let file: File = serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
        for e in file.contacts.into_iter().take(MAX_NAMES) {
            let name = check_name(&e.name).map_err(|e| damaged(e.to_string()))?;
            let address: Address = e
                .address
                .parse()
                .map_err(|_| damaged(format!("bad address for {name}")))?;
            let key = match e.key {
                Some(k) => {
                    Some(parse_key(&k).ok_or_else(|| damaged(format!("bad key for {name}")))?)
                }
                None => None,
            };
            book.by_name.insert(
                name.to_lowercase(),
                Entry {
                    name,
                    address,
                    key,
                    added_ms: e.added,
                },
            );
        }
        for (a, ms) in file.read {
            if let Ok(a) = a.parse() {
                book.read.insert(a, ms);
            }
        }
        Ok(book)
    }

    /// Name `address` (with its `key`, if known) `name`.
    pub fn add(
        &mut self,
        name: &str,
        address: Address,
        key: Option<VerifyingKey>,
        now_ms: u64,
    ) -> Result<&Entry, BookError> {
        let name = check_name(name)?;
        let lower = name.to_lowercase();
        if let Some(e) = self.by_name.get(&lower) {
            if e.address != address {
                return Err(BookError::NameTaken {
                    name: e.name.clone(),
                    address: e.address,
                });
            }
        } else if let Some(e) = self.by_address(&address) {
            return Err(BookError::AlreadyNamed {
                name: e.name.clone(),
                address,
            });
        } else if self.by_name.len() >= MAX_NAMES {
            return Err(BookError::Full);
        }
        let old_key = self.by_name.get(&lower).and_then(|e| e.key);
        self.by_name.insert(
            lower.clone(),
            Entry {
                name,
                address,
                key: key.or(old_key),
                added_ms: now_ms,
            },
        );
        self.save()?;
        self.by_name.get(&lower).ok_or(BookError::Full)
    }

    /// Forget the name `name`; returns what it named.
    pub fn remove(&mut self, name: &str) -> Result<Entry, BookError> {
        let e = self
            .by_name
            .remove(&name.to_lowercase())
            .ok_or_else(|| BookError::NoSuchName(name.to_string()))?;
        self.save()?;
        Ok(e)
    }

    /// The contact called `name` (any case).
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(&name.to_lowercase())
    }

    /// The contact with `address`.
    pub fn by_address(&self, address: &Address) -> Option<&Entry> {
        self.by_name.values().find(|e| e.address == *address)
    }

    /// The name of `address`, if it has one.
    pub fn name_of(&self, address: &Address) -> Option<&str> {
        self.by_address(address).map(|e| e.name.as_str())
    }

    /// Every contact, by name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.by_name.values()
    }

    /// How many names the book holds.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Up to when (ms since the epoch) the conversation with `address`
    /// was read.
    pub fn read_until(&self, address: &Address) -> u64 {
        self.read.get(address).copied().unwrap_or(0)
    }

    /// Mark the conversations with `addresses` read up to `ms`; the book
    /// is saved once, and only if a mark moved.
    pub fn mark_read(&mut self, addresses: &[Address], ms: u64) -> Result<(), BookError> {
        let mut moved = false;
        for a in addresses {
            if self.read.get(a).is_some_and(|&m| m >= ms) {
                continue;
            }
            self.read.insert(*a, ms);
            moved = true;
        }
        if !moved {
            return Ok(());
        }
        while self.read.len() > MAX_READ_MARKS {
            let oldest = self.read.iter().min_by_key(|(_, &m)| m).map(|(a, _)| *a);
            match oldest {
                Some(a) => self.read.remove(&a),
                None => break,
            };
        }
        self.save()
    }

    fn save(&self) -> Result<(), BookError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = File {
            version: 1,
            contacts: self
                .by_name
                .values()
                .map(|e| FileEntry {
                    name: e.name.clone(),
                    address: e.address.to_string(),
                    key: e.key.map(|k| hex::encode(k.as_bytes())),
                    added: e.added_ms,
                })
                .collect(),
            read: self.read.iter().map(|(a, m)| (a.to_string(), *m)).collect(),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| BookError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomically(path, &text).map_err(|source| BookError::Io {
            path: path.clone(),
            source,
        })
    }
}

/// An Ed25519 public key from 64 hex digits.
pub fn parse_key(text: &str) -> Option<VerifyingKey> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Replace `path` with `bytes` so that a crash leaves the old file or the
/// new one, never half of either: write a temporary file beside it, sync
/// it, rename it over `path`, sync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> Address {
        Address([n; 20])
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("bob_2.home").is_ok());
        for (bad, why) in [
            ("", "empty"),
            ("a b", "not allowed"),
            ("-x", "must start"),
            ("me", "stands for you"),
            ("aaaaaaaaaaaaaaaaaaaaaaaaa", "at most 24"),
            ("44751799925b964a00bae3863cc4236f9bb8d519", "address"),
        ] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn a_book_survives_a_restart_and_refuses_clashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contacts.json");
        let mut b = Book::open(&path).unwrap();
        b.add("Alice", addr(1), None, 5).unwrap();
        b.mark_read(&[addr(1)], 77).unwrap();
        assert!(matches!(
            b.add("alice", addr(2), None, 6),
            Err(BookError::NameTaken { .. })
        ));
        assert!(matches!(
            b.add("al", addr(1), None, 6),
            Err(BookError::AlreadyNamed { .. })
        ));
        let b = Book::open(&path).unwrap();
        assert_eq!(b.get("ALICE").map(|e| e.address), Some(addr(1)));
        assert_eq!(b.name_of(&addr(1)), Some("Alice"));
        assert_eq!(b.read_until(&addr(1)), 77);
        let mut b = b;
        b.remove("alice").unwrap();
        assert!(Book::open(&path).unwrap().is_empty());
        assert!(matches!(b.remove("zed"), Err(BookError::NoSuchName(_))));
    }

    #[test]
    fn a_damaged_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contacts.json");
        std::fs::write(&path, b"{not json").unwrap();
        let e = Book::open(&path).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{not json");
    }
}
