//! What one typed line asks for. Parsing is pure: names are resolved
//! against the address book afterwards (see [`super::session`]), so every
//! error here is about the line itself.

use ed25519_dalek::VerifyingKey;

use crate::address::{Address, AddressError};
use crate::book;
use crate::control::Command;

/// Someone to write to, as typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// 40 hex digits.
    Address(Address),
    /// 64 hex digits: the public key (the address is derived from it).
    Key(VerifyingKey),
    /// A name from the address book (typed with or without `@`).
    Name(String),
}

/// What one input line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Something only the running node can answer.
    Command(Command),
    /// Send `text` to `to`.
    Send {
        /// Recipient.
        to: Target,
        /// Body (newlines kept).
        text: String,
    },
    /// Answer the last person who wrote.
    Reply(String),
    /// Look up an address or a contact's address.
    Lookup(Target),
    /// Name an address.
    Add {
        /// The name.
        name: String,
        /// The address.
        address: Address,
        /// Its key, if given.
        key: Option<VerifyingKey>,
    },
    /// Forget a name.
    Remove(String),
    /// List the address book.
    Contacts,
    /// Received messages.
    Inbox,
    /// Sent messages and their state.
    Outbox,
    /// One conversation, or a summary of all of them.
    History(Option<Target>),
    /// Withdraw an undelivered message, by (a prefix of) its id.
    Cancel(String),
    /// Show our address and identity line.
    WhoAmI,
    /// Show help, on one command if given.
    Help(Option<String>),
    /// A blank line.
    Nothing,
}

/// Why an input line was not understood, or could not be acted on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputError {
    /// A slash command we do not know.
    #[error("unknown command {0}; type /help for the list")]
    Unknown(String),
    /// A command that needs an argument got none.
    #[error("{cmd} needs {what}: {usage}")]
    Missing {
        /// The command.
        cmd: &'static str,
        /// What is missing.
        what: &'static str,
        /// How to type it.
        usage: &'static str,
    },
    /// A command got more than it takes.
    #[error("{0} takes no arguments")]
    NoArguments(&'static str),
    /// The address did not parse.
    #[error("{0}")]
    BadAddress(#[from] AddressError),
    /// 64 hex digits that are not an Ed25519 public key.
    #[error("that is not a valid public key (64 hex digits of an Ed25519 key)")]
    BadKey,
    /// A key of small order: it decodes, but nobody can sign with it and
    /// nothing can be sealed to it (protocol.md §5.1, §14.5).
    #[error("that key is of small order: no one can sign with it or read messages sealed to it")]
    WeakKey,
    /// The key and the address given together do not match.
    #[error("that key belongs to {key_address}, not {address}")]
    KeyMismatch {
        /// The address typed.
        address: Address,
        /// The key's address.
        key_address: Address,
    },
    /// Not a usable name.
    #[error("{0}")]
    BadName(String),
    /// A recipient with nothing to send.
    #[error("nothing to send: type {0} followed by the message")]
    EmptyMessage(String),
    /// `/cancel` got something that is not a message id.
    #[error(
        "{0:?} is not a message id: use the hex digits shown in brackets, e.g. /cancel 1a2b3c4d"
    )]
    BadId(String),
    /// `/help` on a command that does not exist.
    #[error("no help on {0}; /help lists the commands")]
    NoHelp(String),
    /// A name not in the address book.
    #[error("no contact named {0}; /contacts lists them, /add {0} ADDRESS names one")]
    NoSuchName(String),
    /// `/reply` before anyone wrote.
    #[error("nobody has written to you since the node started; /reply answers the last sender")]
    NoOneToReply,
    /// `/cancel` matched no sent message.
    #[error("no message of yours starts with {0}; /outbox lists them")]
    NoSuchMessage(String),
    /// `/cancel` matched several.
    #[error("{0} of your messages start with {1}; type more digits of the id")]
    Ambiguous(usize, String),
    /// `/cancel` on a message that is no longer open.
    #[error("message {id} is already {state}; nothing to cancel")]
    NotOpen {
        /// Short id.
        id: String,
        /// Its state in words.
        state: String,
    },
}

/// Every slash command, for `/help` and Tab completion.
pub const COMMANDS: &[&str] = &[
    "/add",
    "/remove",
    "/contacts",
    "/reply",
    "/inbox",
    "/outbox",
    "/history",
    "/cancel",
    "/whoami",
    "/peers",
    "/lookup",
    "/held",
    "/acks",
    "/stats",
    "/help",
    "/quit",
];

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// An address, key or name as typed.
pub fn target(word: &str) -> Result<Target, InputError> {
    if let Some(name) = word.strip_prefix('@') {
        return Ok(Target::Name(name.to_string()));
    }
    if word.len() == 64 && is_hex(word) {
        let key = book::parse_key(word).ok_or(InputError::BadKey)?;
        if key.is_weak() {
            return Err(InputError::WeakKey);
        }
        return Ok(Target::Key(key));
    }
    if word.len() == 40 && is_hex(word) {
        return Ok(Target::Address(word.parse()?));
    }
    // Something meant as an address but mistyped gets the address error.
    if is_hex(word) && word.len() >= 32 {
        return Err(word
            .parse::<Address>()
            .err()
            .map_or(InputError::BadKey, Into::into));
    }
    Ok(Target::Name(word.to_string()))
}

/// Join lines ended by a backslash: `a\` + newline + `b` is `a` newline `b`.
fn join_continuations(line: &str) -> String {
    line.replace("\\\r\n", "\n").replace("\\\n", "\n")
}

/// The words after `/add NAME`: an address, a key, both, or the identity
/// line `/whoami` prints (`ADDRESS:KEY`).
fn identity(words: &[&str]) -> Result<(Address, Option<VerifyingKey>), InputError> {
    let mut address = None;
    let mut key = None;
    for w in words.iter().flat_map(|w| w.split(':')) {
        match target(w)? {
            Target::Address(a) => address = Some(a),
            Target::Key(k) => key = Some(k),
            Target::Name(_) => {
                return Err(InputError::Missing {
                    cmd: "/add",
                    what: "an address or a key after the name",
                    usage: "/add NAME ADDRESS, or /add NAME and the identity line from /whoami",
                })
            }
        }
    }
    match (address, key) {
        (Some(a), Some(k)) => {
            let key_address = Address::of_key(k.as_bytes());
            if key_address != a {
                return Err(InputError::KeyMismatch {
                    address: a,
                    key_address,
                });
            }
            Ok((a, Some(k)))
        }
        (None, Some(k)) => Ok((Address::of_key(k.as_bytes()), Some(k))),
        (Some(a), None) => Ok((a, None)),
        (None, None) => Err(InputError::Missing {
            cmd: "/add",
            what: "a name and an address",
            usage: "/add NAME ADDRESS, or /add NAME and the identity line from /whoami",
        }),
    }
}

/// Parse one line typed by the user.
pub fn parse(line: &str) -> Result<Input, InputError> {
    let line = join_continuations(line);
    let line = line.trim();
    if line.is_empty() {
        return Ok(Input::Nothing);
    }
    let (head, rest) = match line.split_once(char::is_whitespace) {
        Some((h, r)) => (h, r.trim()),
        None => (line, ""),
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let bare = |cmd: &'static str, input: Input| {
        if rest.is_empty() {
            Ok(input)
        } else {
            Err(InputError::NoArguments(cmd))
        }
    };
    match head {
        "/quit" | "/exit" => bare("/quit", Input::Command(Command::Quit)),
        "/help" | "/?" => Ok(Input::Help(words.first().map(|w| {
            let w = w.trim_start_matches('/');
            format!("/{w}")
        }))),
        "/whoami" => bare("/whoami", Input::WhoAmI),
        "/peers" => bare("/peers", Input::Command(Command::Peers)),
        "/stats" => bare("/stats", Input::Command(Command::Stats)),
        "/held" => bare("/held", Input::Command(Command::Held)),
        "/acks" => bare("/acks", Input::Command(Command::Acks)),
        "/contacts" => bare("/contacts", Input::Contacts),
        "/inbox" => bare("/inbox", Input::Inbox),
        "/outbox" => bare("/outbox", Input::Outbox),
        "/lookup" => match words.as_slice() {
            [w] => Ok(Input::Lookup(target(w)?)),
            _ => Err(InputError::Missing {
                cmd: "/lookup",
                what: "one address or name",
                usage: "/lookup ADDRESS or /lookup NAME",
            }),
        },
        "/history" => match words.as_slice() {
            [] => Ok(Input::History(None)),
            [w] => Ok(Input::History(Some(target(w)?))),
            _ => Err(InputError::Missing {
                cmd: "/history",
                what: "at most one name",
                usage: "/history, or /history NAME",
            }),
        },
        "/add" => match words.as_slice() {
            [name, ids @ ..] if !ids.is_empty() => {
                let name = name.trim_start_matches('@');
                book::check_name(name).map_err(|e| InputError::BadName(e.to_string()))?;
                let (address, key) = identity(ids)?;
                Ok(Input::Add {
                    name: name.to_string(),
                    address,
                    key,
                })
            }
            _ => Err(InputError::Missing {
                cmd: "/add",
                what: "a name and an address",
                usage: "/add NAME ADDRESS, or /add NAME and the identity line from /whoami",
            }),
        },
        "/remove" => match words.as_slice() {
            [name] => Ok(Input::Remove(name.trim_start_matches('@').to_string())),
            _ => Err(InputError::Missing {
                cmd: "/remove",
                what: "one name",
                usage: "/remove NAME",
            }),
        },
        "/cancel" => match words.as_slice() {
            [id] => {
                let id = id.trim_matches(|c| c == '[' || c == ']' || c == '…');
                if id.len() < 4 || id.len() > 40 || !is_hex(id) {
                    return Err(InputError::BadId(id.to_string()));
                }
                Ok(Input::Cancel(id.to_ascii_lowercase()))
            }
            _ => Err(InputError::Missing {
                cmd: "/cancel",
                what: "a message id",
                usage: "/cancel ID (the hex digits in brackets, from /outbox)",
            }),
        },
        "/reply" => {
            if rest.is_empty() {
                return Err(InputError::EmptyMessage("/reply".into()));
            }
            Ok(Input::Reply(rest.to_string()))
        }
        h if h.starts_with('/') => Err(InputError::Unknown(h.to_string())),
        h => {
            let to = target(h)?;
            if rest.is_empty() {
                return Err(InputError::EmptyMessage(h.to_string()));
            }
            Ok(Input::Send {
                to,
                text: rest.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "44751799925b964a00bae3863cc4236f9bb8d519";
    // The RFC 8032 test 1 public key.
    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn parses_commands_and_messages() {
        assert_eq!(parse("  "), Ok(Input::Nothing));
        assert_eq!(parse("/quit"), Ok(Input::Command(Command::Quit)));
        assert_eq!(parse("/peers"), Ok(Input::Command(Command::Peers)));
        assert_eq!(parse("/held"), Ok(Input::Command(Command::Held)));
        assert_eq!(parse("/help send"), Ok(Input::Help(Some("/send".into()))));
        assert_eq!(parse("/help /add"), Ok(Input::Help(Some("/add".into()))));
        let a: Address = A.parse().unwrap();
        assert_eq!(
            parse(&format!("/lookup {A}")),
            Ok(Input::Lookup(Target::Address(a)))
        );
        assert_eq!(
            parse(&format!("{A} Hi there!")),
            Ok(Input::Send {
                to: Target::Address(a),
                text: "Hi there!".into()
            })
        );
        assert_eq!(
            parse("@bob  hi  you "),
            Ok(Input::Send {
                to: Target::Name("bob".into()),
                text: "hi  you".into()
            })
        );
        assert_eq!(
            parse("bob two\\\nlines"),
            Ok(Input::Send {
                to: Target::Name("bob".into()),
                text: "two\nlines".into()
            })
        );
        assert_eq!(parse("/reply ok"), Ok(Input::Reply("ok".into())));
        assert_eq!(
            parse("/cancel [1A2b3c4d]"),
            Ok(Input::Cancel("1a2b3c4d".into()))
        );
        assert_eq!(
            parse("/history bob"),
            Ok(Input::History(Some(Target::Name("bob".into()))))
        );
    }

    #[test]
    fn keys_of_small_order_are_refused() {
        // The identity point, and the point of order 2: both decode.
        let identity = format!("01{}", "0".repeat(62));
        let minus_one = format!("ec{}7f", "f".repeat(60));
        for key in [identity, minus_one] {
            assert!(book::parse_key(&key).is_some());
            assert_eq!(
                parse(&format!("{key} hello")),
                Err(InputError::WeakKey),
                "{key}"
            );
            assert_eq!(parse(&format!("/add eve {key}")), Err(InputError::WeakKey));
        }
    }

    #[test]
    fn add_takes_an_address_a_key_or_the_identity_line() {
        let key = book::parse_key(KEY).unwrap();
        let ka = Address::of_key(key.as_bytes());
        let a: Address = A.parse().unwrap();
        assert_eq!(
            parse(&format!("/add bob {A}")),
            Ok(Input::Add {
                name: "bob".into(),
                address: a,
                key: None
            })
        );
        for line in [
            format!("/add bob {KEY}"),
            format!("/add bob {ka}:{KEY}"),
            format!("/add @bob {ka} {KEY}"),
        ] {
            assert_eq!(
                parse(&line),
                Ok(Input::Add {
                    name: "bob".into(),
                    address: ka,
                    key: Some(key)
                }),
                "{line}"
            );
        }
        assert_eq!(
            parse(&format!("/add bob {A}:{KEY}")),
            Err(InputError::KeyMismatch {
                address: a,
                key_address: ka
            })
        );
    }

    /// Every error the parser gives, with the words a user sees.
    #[test]
    fn explains_every_bad_line_in_one_line() {
        let cases: &[(&str, &str)] = &[
            ("/frob", "unknown command /frob; type /help for the list"),
            (
                "/lookup",
                "/lookup needs one address or name: /lookup ADDRESS or /lookup NAME",
            ),
            (
                "/lookup 12345678901234567890123456789012345",
                "an address is 40 hex characters, got 35",
            ),
            ("/peers now", "/peers takes no arguments"),
            ("/quit please", "/quit takes no arguments"),
            ("/add", "/add needs a name and an address"),
            ("/add bob", "/add needs a name and an address"),
            (
                "/add bob carol",
                "/add needs an address or a key after the name",
            ),
            (
                "/add b!b 44751799925b964a00bae3863cc4236f9bb8d519",
                "\"b!b\" cannot be a name: '!' is not allowed",
            ),
            (
                "/add me 44751799925b964a00bae3863cc4236f9bb8d519",
                "\"me\" cannot be a name: \"me\" stands for you",
            ),
            ("/remove", "/remove needs one name: /remove NAME"),
            ("/cancel", "/cancel needs a message id"),
            ("/cancel xyz", "\"xyz\" is not a message id"),
            ("/cancel 12", "\"12\" is not a message id"),
            ("/history a b", "/history needs at most one name"),
            (
                "/reply",
                "nothing to send: type /reply followed by the message",
            ),
            ("bob", "nothing to send: type bob followed by the message"),
            (
                A,
                "nothing to send: type 44751799925b964a00bae3863cc4236f9bb8d519 followed",
            ),
            (
                "44751799925b964a00bae3863cc4236f9bb8d51 hi",
                "an address is 40 hex characters, got 39",
            ),
            (
                "0200000000000000000000000000000000000000000000000000000000000000 hi",
                "that is not a valid public key",
            ),
        ];
        for (line, want) in cases {
            let got = parse(line).expect_err(line).to_string();
            assert!(
                got.starts_with(want),
                "{line:?}: got {got:?}, want {want:?}"
            );
            assert!(!got.contains('\n'), "one line: {got}");
        }
    }
}
