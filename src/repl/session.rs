//! What the front end remembers between lines: the address book, the
//! conversation log, who wrote last, and how to paint text. The input
//! thread (commands, Tab completion) and the printing thread (outputs)
//! share one [`Session`] behind a mutex; neither holds it across I/O other
//! than the small file appends of the book and the log.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use ed25519_dalek::VerifyingKey;

use crate::address::Address;
use crate::book::Book;
use crate::chatlog::{ChatLog, Direction, SentState};
use crate::control::{Me, Output};

use super::parse::{InputError, Target};
use super::render::Paint;

/// The front end's state.
#[derive(Debug, Default)]
pub struct Session {
    /// Who we are, once the node is up.
    pub me: Option<Me>,
    /// Names.
    pub book: Book,
    /// Every message sent and received.
    pub log: ChatLog,
    /// Who wrote last (for `/reply`).
    pub last_sender: Option<Address>,
    /// Strangers whose full address was already shown.
    introduced: HashSet<Address>,
    /// Colours on or off.
    pub paint: Paint,
    /// Where the node keeps its files (for the start banner).
    pub data_dir: Option<PathBuf>,
}

/// The session as both threads hold it.
#[derive(Clone, Debug, Default)]
pub struct Shared(Arc<Mutex<Session>>);

impl Shared {
    /// Share `s`.
    pub fn new(s: Session) -> Shared {
        Shared(Arc::new(Mutex::new(s)))
    }

    /// Lock it (a panic in the other thread does not lose the state).
    pub fn lock(&self) -> MutexGuard<'_, Session> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A resolved recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The address.
    pub address: Address,
    /// Its key, if known to the book or typed.
    pub key: Option<VerifyingKey>,
}

impl Session {
    /// A session with this book and log.
    pub fn new(book: Book, log: ChatLog, paint: Paint) -> Session {
        // Whoever we exchanged messages with before is no stranger.
        let introduced = log.peers().into_iter().collect();
        Session {
            book,
            log,
            paint,
            introduced,
            ..Session::default()
        }
    }

    /// A contact's name, or the short form of a stranger's address.
    pub fn label(&self, a: &Address) -> String {
        match self.book.name_of(a) {
            Some(n) => n.to_string(),
            None => a.short(),
        }
    }

    /// Turn what was typed into an address (and key).
    pub fn resolve(&self, t: &Target) -> Result<Recipient, InputError> {
        match t {
            Target::Address(a) => Ok(Recipient {
                address: *a,
                key: self.book.by_address(a).and_then(|e| e.key),
            }),
            Target::Key(k) => Ok(Recipient {
                address: Address::of_key(k.as_bytes()),
                key: Some(*k),
            }),
            // Hex digits that name nobody were meant as an address.
            Target::Name(n)
                if self.book.get(n).is_none() && n.chars().all(|c| c.is_ascii_hexdigit()) =>
            {
                Err(InputError::BadAddress(
                    crate::address::AddressError::Length(n.len()),
                ))
            }
            Target::Name(n) => self
                .book
                .get(n)
                .map(|e| Recipient {
                    address: e.address,
                    key: e.key,
                })
                .ok_or_else(|| InputError::NoSuchName(n.clone())),
        }
    }

    /// Whether `from` should be introduced with its full address now
    /// (the first message of a stranger); marks it introduced.
    pub fn introduce(&mut self, from: &Address) -> bool {
        self.book.by_address(from).is_none() && self.introduced.insert(*from)
    }

    /// Record what an output means for the log and the book. Errors of the
    /// files are returned for the user to see; the output is shown anyway.
    pub fn observe(&mut self, o: &Output, now_ms: u64) -> Option<String> {
        let r = match o {
            Output::Ready(me) => {
                self.me = Some(*me);
                Ok(())
            }
            Output::Accepted {
                id,
                to,
                text,
                at_ms,
            } => {
                let r = self.log.sent(*id, *to, text, *at_ms);
                // Writing to someone means their messages were read.
                let _ = self.book.mark_read(&[*to], now_ms);
                r
            }
            Output::Sent {
                id,
                relays,
                direct,
                no_contacts,
                ..
            } => {
                let state = if *direct {
                    SentState::Taken
                } else if *no_contacts {
                    SentState::Queued
                } else {
                    SentState::Placed(*relays)
                };
                self.log.set_state(id, state, now_ms)
            }
            Output::Cancelled(r) => self.log.set_state(&r.id, SentState::Cancelled, now_ms),
            Output::Delivered { id, .. } => self.log.set_state(id, SentState::Delivered, now_ms),
            Output::Expired { id } => self.log.set_state(id, SentState::Expired, now_ms),
            Output::Message {
                id,
                from,
                text,
                created_at_ms,
                ..
            } => {
                self.last_sender = Some(*from);
                self.log
                    .received(*id, *from, text, *created_at_ms, now_ms)
                    .map(|_| ())
            }
            _ => Ok(()),
        };
        r.err()
            .map(|e| format!("could not record it in the conversation log: {e}"))
    }

    /// Messages from `a` not yet read.
    pub fn unread(&self, a: &Address) -> usize {
        let since = self.book.read_until(a);
        self.log
            .entries()
            .iter()
            .filter(|e| matches!(e.direction, Direction::In { from } if from == *a))
            .filter(|e| e.at_ms > since)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;

    #[test]
    fn names_resolve_and_strangers_are_introduced_once() {
        let mut s = Session::new(Book::in_memory(), ChatLog::in_memory(), Paint::default());
        let (a, b) = (Address([1; 20]), Address([2; 20]));
        s.book.add("ann", a, None, 1).unwrap();
        assert_eq!(
            s.resolve(&Target::Name("ANN".into())).map(|r| r.address),
            Ok(a)
        );
        assert_eq!(
            s.resolve(&Target::Name("zed".into()))
                .unwrap_err()
                .to_string(),
            "no contact named zed; /contacts lists them, /add zed ADDRESS names one"
        );
        assert!(!s.introduce(&a), "named contacts need no introduction");
        assert!(s.introduce(&b));
        assert!(!s.introduce(&b));
        let m = Output::Message {
            id: MessageId([9; 20]),
            from: b,
            text: "hi".into(),
            created_at_ms: 5,
            maybe_repeat: false,
        };
        assert_eq!(s.observe(&m, 10), None);
        assert_eq!(s.last_sender, Some(b));
        assert_eq!(s.unread(&b), 1);
        assert_eq!(s.label(&a), "ann");
        assert_eq!(s.label(&b), b.short());
    }
}
