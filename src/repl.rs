//! The user interface: parse what the user types, render what the node
//! reports, as human text or one JSON object per line.
//!
//! Interactive use goes through rustyline; lines printed while the user is
//! typing go through its external printer so they never garble the input.
//! With `--json`, or when stdin is not a terminal, commands are read line by
//! line from stdin and every output is one line on stdout.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use crate::address::{Address, AddressError};
use crate::control::{Command, Me, Output, PeerRow, StatsReport};
use crate::message::MessageId;
use crate::store::shown::ShownLog;
use crate::wire::Contact;

/// Help text for `/help`.
pub const HELP: &str = "\
commands:
  ADDRESS TEXT      send TEXT to the 40-hex-digit ADDRESS (sealed to its
                    key, found in the network; queued until it is)
  KEY TEXT          send TEXT to the owner of the 64-hex-digit public KEY
                    (as /whoami shows it): sealed at once
  /whoami           this node's address, public key and endpoint
  /peers            the routing table, bucket by bucket
  /lookup ADDRESS   find the k nodes closest to ADDRESS
  /stats            counters: contacts, datagrams, drops
  /help             this text
  /quit             stop the node (also Ctrl-D, Ctrl-C)";

/// What one input line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Something for the runtime.
    Command(Command),
    /// Send a message.
    Send {
        /// Recipient.
        to: Address,
        /// Its public key, if the user typed it instead of the address.
        key: Option<ed25519_dalek::VerifyingKey>,
        /// Body.
        text: String,
    },
    /// Show our address.
    WhoAmI,
    /// Show the help.
    Help,
    /// A blank line.
    Nothing,
}

/// Why an input line was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputError {
    /// A slash command we do not know.
    #[error("unknown command {0}; type /help for the list")]
    Unknown(String),
    /// A command that needs an argument got none.
    #[error("{0} needs an address: {0} ADDRESS")]
    MissingAddress(&'static str),
    /// The address did not parse.
    #[error("{0}")]
    BadAddress(#[from] AddressError),
    /// 64 hex digits that are not an Ed25519 public key.
    #[error("that is not a valid public key (64 hex digits of an Ed25519 key)")]
    BadKey,
    /// An address with nothing to send.
    #[error("nothing to send: type ADDRESS followed by the message")]
    EmptyMessage,
}

/// Parse one line typed by the user.
pub fn parse(line: &str) -> Result<Input, InputError> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(Input::Nothing);
    }
    let (head, rest) = match line.split_once(char::is_whitespace) {
        Some((h, r)) => (h, r.trim()),
        None => (line, ""),
    };
    match head {
        "/quit" | "/exit" => Ok(Input::Command(Command::Quit)),
        "/help" | "/?" => Ok(Input::Help),
        "/whoami" => Ok(Input::WhoAmI),
        "/peers" => Ok(Input::Command(Command::Peers)),
        "/stats" => Ok(Input::Command(Command::Stats)),
        "/lookup" => {
            if rest.is_empty() {
                return Err(InputError::MissingAddress("/lookup"));
            }
            Ok(Input::Command(Command::Lookup(rest.parse()?)))
        }
        h if h.starts_with('/') => Err(InputError::Unknown(h.to_string())),
        h => {
            let (to, key) = recipient(h)?;
            if rest.is_empty() {
                return Err(InputError::EmptyMessage);
            }
            Ok(Input::Send {
                to,
                key,
                text: rest.to_string(),
            })
        }
    }
}

/// A recipient typed as a 40-hex address or a 64-hex public key.
fn recipient(word: &str) -> Result<(Address, Option<ed25519_dalek::VerifyingKey>), InputError> {
    if word.len() == 64 && word.chars().all(|c| c.is_ascii_hexdigit()) {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(word, &mut bytes).map_err(|_| InputError::BadKey)?;
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| InputError::BadKey)?;
        return Ok((Address::of_key(&bytes), Some(key)));
    }
    Ok((word.parse()?, None))
}

/// Where outputs are printed and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Text for people.
    Human,
    /// One JSON object per line with an `"event"` field.
    Json,
}

/// "1 contact", "2 contacts".
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

fn contact_json(c: &Contact) -> serde_json::Value {
    json!({"address": c.id.to_string(), "addr": c.addr.to_string()})
}

fn peers_human(rows: &[PeerRow]) -> String {
    let buckets = {
        let mut b: Vec<usize> = rows.iter().map(|r| r.bucket).collect();
        b.dedup();
        b.len()
    };
    let mut out = format!(
        "{} in {}",
        plural(rows.len(), "contact"),
        plural(buckets, "bucket")
    );
    let mut current = None;
    for r in rows.iter().rev() {
        if current != Some(r.bucket) {
            current = Some(r.bucket);
            let n = rows.iter().filter(|x| x.bucket == r.bucket).count();
            out.push_str(&format!("\n bucket {} ({n})", r.bucket));
        }
        out.push_str(&format!(
            "\n   {}  {:<21}  last seen {}",
            r.contact.id,
            r.contact.addr,
            ago(r.last_seen)
        ));
    }
    out
}

fn stats_human(s: &StatsReport) -> String {
    let dropped: u64 = s.dropped.iter().map(|(_, n)| n).sum();
    let mut out = format!(
        "contacts {}  lookups {}  datagrams in {}  out {}  timeouts {}  dropped {}\n\
         held messages {}  held acks {}  routed acks {}  outbox {}  inbox {} ({} unshown)\n\
         stores sent {}  acks sent {}  requests open {}  queued {}  saves {}",
        s.contacts,
        s.lookups,
        s.datagrams_in,
        s.datagrams_out,
        s.rpc_timeouts,
        dropped,
        s.held_messages,
        s.held_acks,
        s.routed_acks,
        s.outbox,
        s.inbox,
        s.unshown,
        s.stores_sent,
        s.acks_sent,
        s.requests.0,
        s.requests.1,
        s.write_batches
    );
    for (reason, n) in &s.dropped {
        out.push_str(&format!("\n  dropped {reason}: {n}"));
    }
    out
}

/// Local wall-clock time of day for `ms` since the Unix epoch.
fn clock(ms: u64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_millis_opt(ms as i64) {
        chrono::LocalResult::Single(t) => t.format("%H:%M:%S").to_string(),
        _ => "??:??:??".to_string(),
    }
}

/// Message text made safe for a terminal: control characters (which could
/// move the cursor or recolour the screen) are shown as U+FFFD.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn short_id(id: &MessageId) -> String {
    format!("{}…", &id.to_string()[..4])
}

/// Render an output for people.
pub fn human(o: &Output) -> String {
    match o {
        Output::Ready(me) => {
            format!(
                "comm {}\naddress {}\nkey     {}\nlistening on {}",
                env!("CARGO_PKG_VERSION"),
                me.address,
                hex::encode(me.key.as_bytes()),
                me.listen
            )
        }
        Output::Alone { listen } => {
            let through = if listen.ip().is_unspecified() {
                format!("this machine's address, port {}", listen.port())
            } else {
                listen.to_string()
            };
            format!("no bootstrap given: running alone; others can join through {through}")
        }
        Output::Joined { contacts } => {
            format!(
                "joined: {contacts} contact{}",
                if *contacts == 1 { "" } else { "s" }
            )
        }
        Output::BootstrapFailed {
            addrs,
            tries,
            retry_in,
        } => {
            let list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
            format!(
                "bootstrap {} did not answer after {tries} tries; running alone, will retry in {}s",
                list.join(", "),
                retry_in.as_secs()
            )
        }
        Output::Lookup(r) => {
            let mut out = format!(
                "lookup {}: {} closest in {}, {}",
                r.target,
                r.closest.len(),
                plural(r.rounds as usize, "round"),
                plural(r.rpcs as usize, "RPC")
            );
            for (i, c) in r.closest.iter().enumerate() {
                let d = c.id.distance(&r.target).bucket_index();
                let d = d.map_or("0".to_string(), |b| format!("2^{b}"));
                out.push_str(&format!(
                    "\n  {:>2}  {}  {:<21}  distance ~{d}",
                    i + 1,
                    c.id,
                    c.addr
                ));
            }
            if r.closest.is_empty() {
                out.push_str("\n  (no contacts answered: is this node joined?)");
            }
            out
        }
        Output::Peers(rows) => peers_human(rows),
        Output::Stats(s) => stats_human(s),
        Output::Queued { id, to } => format!(
            "  [msg {}] queued → looking up {}'s key",
            short_id(id),
            to.short()
        ),
        Output::KeyNotFound {
            to,
            queued,
            retry_in,
        } => format!(
            "  no key found for {} yet: {} queued, retrying in {}s",
            to.short(),
            plural(*queued, "message"),
            retry_in.as_secs()
        ),
        Output::Sent {
            id, relays, direct, ..
        } => match (direct, relays) {
            (true, 0) => format!("  [msg {}] sent → taken by the recipient", short_id(id)),
            (true, n) => format!(
                "  [msg {}] sent → taken by the recipient, held by {}",
                short_id(id),
                plural(*n, "relay")
            ),
            (false, 0) => format!(
                "  [msg {}] queued → no relay has it yet; retrying",
                short_id(id)
            ),
            (false, n) => format!(
                "  [msg {}] sent → held by {}",
                short_id(id),
                plural(*n, "relay")
            ),
        },
        Output::Message {
            from,
            text,
            created_at_ms,
            ..
        } => format!(
            "[from {} {}] {}",
            from.short(),
            clock(*created_at_ms),
            printable(text)
        ),
        Output::Delivered { id, to, at_ms } => format!(
            "  [msg {}] delivered to {} at {} (signed ack)",
            short_id(id),
            to.short(),
            clock(*at_ms)
        ),
        Output::Expired { id } => format!("  [msg {}] expired undelivered", short_id(id)),
        Output::WhoAmI(me) => format!(
            "{} on {}\nkey {}",
            me.address,
            me.listen,
            hex::encode(me.key.as_bytes())
        ),
        Output::Help => HELP.to_string(),
        Output::Notice(text) => text.clone(),
        Output::Error(message) => format!("error: {message}"),
        Output::Stopped => "stopped".to_string(),
    }
}

/// Render an output as one JSON line.
pub fn json(o: &Output) -> String {
    let v = match o {
        Output::Ready(me) => {
            json!({"event": "ready", "address": me.address.to_string(), "key": hex::encode(me.key.as_bytes()), "listen": me.listen.to_string()})
        }
        Output::Alone { listen } => json!({"event": "alone", "listen": listen.to_string()}),
        Output::Joined { contacts } => json!({"event": "joined", "contacts": contacts}),
        Output::BootstrapFailed {
            addrs,
            tries,
            retry_in,
        } => json!({
            "event": "bootstrap_failed",
            "addrs": addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>(),
            "tries": tries,
            "retry_in_secs": retry_in.as_secs(),
        }),
        Output::Lookup(r) => json!({
            "event": "lookup",
            "target": r.target.to_string(),
            "closest": r.closest.iter().map(contact_json).collect::<Vec<_>>(),
            "rounds": r.rounds,
            "rpcs": r.rpcs,
        }),
        Output::Peers(rows) => json!({
            "event": "peers",
            "contacts": rows.iter().map(|r| json!({
                "address": r.contact.id.to_string(),
                "addr": r.contact.addr.to_string(),
                "bucket": r.bucket,
                "last_seen_secs": r.last_seen.as_secs(),
            })).collect::<Vec<_>>(),
        }),
        Output::Stats(s) => json!({
            "event": "stats",
            "contacts": s.contacts,
            "lookups": s.lookups,
            "datagrams_in": s.datagrams_in,
            "datagrams_out": s.datagrams_out,
            "rpc_timeouts": s.rpc_timeouts,
            "dropped": s.dropped.iter().map(|(_, n)| n).sum::<u64>(),
            "dropped_by_reason": s.dropped.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "held_messages": s.held_messages,
            "held_acks": s.held_acks,
            "routed_acks": s.routed_acks,
            "outbox": s.outbox,
            "inbox": s.inbox,
            "unshown": s.unshown,
            "requests_open": s.requests.0,
            "requests_queued": s.requests.1,
            "write_batches": s.write_batches,
            "stores_sent": s.stores_sent,
            "acks_sent": s.acks_sent,
        }),
        Output::Sent {
            id,
            to,
            relays,
            direct,
        } => json!({
            "event": "sent", "id": id.to_string(), "to": to.to_string(), "relays": relays,
            "direct": direct,
        }),
        Output::Message {
            id,
            from,
            text,
            created_at_ms,
        } => json!({
            "event": "message", "id": id.to_string(), "from": from.to_string(),
            "text": text, "created_at": created_at_ms,
        }),
        Output::Delivered { id, to, at_ms } => json!({
            "event": "delivered", "id": id.to_string(), "to": to.to_string(), "at": at_ms,
        }),
        Output::Expired { id } => json!({"event": "expired", "id": id.to_string()}),
        Output::WhoAmI(me) => {
            json!({"event": "whoami", "address": me.address.to_string(), "key": hex::encode(me.key.as_bytes()), "listen": me.listen.to_string()})
        }
        Output::Queued { id, to } => json!({
            "event": "queued", "id": id.to_string(), "to": to.to_string(),
        }),
        Output::KeyNotFound {
            to,
            queued,
            retry_in,
        } => json!({
            "event": "key_not_found", "to": to.to_string(), "queued": queued, "retry_in_secs": retry_in.as_secs(),
        }),
        Output::Help => json!({"event": "help", "text": HELP}),
        Output::Notice(text) => json!({"event": "notice", "message": text}),
        Output::Error(message) => json!({"event": "error", "message": message}),
        Output::Stopped => json!({"event": "stopped"}),
    };
    v.to_string()
}

/// Print every output until [`Output::Stopped`] or the channel closes.
/// `external` prints above the user's prompt in interactive mode.
///
/// Received messages are recorded in `shown` just before they are written
/// (see [`crate::store::shown`]), so a message reaches the screen once,
/// crash or not.
pub fn print_loop(
    mut outputs: mpsc::Receiver<Output>,
    format: Format,
    mut external: Option<Box<dyn rustyline::ExternalPrinter + Send>>,
    mut shown: Option<Box<dyn ShownLog>>,
) {
    while let Some(first) = outputs.blocking_recv() {
        // Everything already waiting goes out in one write: the messages of
        // one durable batch reach the terminal together, so a crash cannot
        // fall between them.
        let mut batch = vec![first];
        while batch.len() < 256 {
            match outputs.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let stop = batch.contains(&Output::Stopped);
        let ids: Vec<MessageId> = batch
            .iter()
            .filter_map(|o| match o {
                Output::Message { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        if let Some(log) = shown.as_mut() {
            if let Err(e) = log.showing(&ids) {
                // Shown anyway: it may be shown once more after a restart.
                tracing::warn!(error = %e, "could not record messages as shown");
            }
        }
        let mut text = String::new();
        for o in &batch {
            text.push_str(&match format {
                Format::Human => human(o),
                Format::Json => json(o),
            });
            text.push('\n');
        }
        let printed = match external.as_mut() {
            Some(p) => p.print(text.clone()).is_ok(),
            None => false,
        };
        if !printed {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
        }
        if let Some(log) = shown.as_mut() {
            if let Err(e) = log.shown(&ids) {
                tracing::warn!(error = %e, "could not save messages as shown");
            }
        }
        if stop {
            return;
        }
    }
}

/// Act on one line: forward commands, answer local ones, report errors.
/// Returns false once the user asked to quit.
pub fn dispatch(
    line: &str,
    me: Me,
    commands: &mpsc::Sender<Command>,
    outputs: &mpsc::Sender<Output>,
) -> bool {
    let reply = match parse(line) {
        Ok(Input::Nothing) => return true,
        Ok(Input::Help) => Output::Help,
        Ok(Input::WhoAmI) => Output::WhoAmI(me),
        Ok(Input::Send { to, key, text }) => {
            if commands
                .blocking_send(Command::Send {
                    to,
                    key: key.map(Box::new),
                    text,
                })
                .is_err()
            {
                return false;
            }
            return true;
        }
        Ok(Input::Command(c)) => {
            let quit = c == Command::Quit;
            if commands.blocking_send(c).is_err() {
                return false;
            }
            return !quit;
        }
        Err(e) => Output::Error(e.to_string()),
    };
    let _ = outputs.blocking_send(reply);
    true
}

/// Read commands from a terminal with line editing until the user quits.
pub fn interactive(
    mut editor: rustyline::DefaultEditor,
    me: Me,
    commands: mpsc::Sender<Command>,
    outputs: mpsc::Sender<Output>,
) {
    use rustyline::error::ReadlineError;
    loop {
        match editor.readline("> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if !dispatch(&line, me, &commands, &outputs) {
                    return;
                }
            }
            Err(ReadlineError::Interrupted) | Err(ReadlineError::Eof) => {
                let _ = commands.blocking_send(Command::Quit);
                return;
            }
            Err(e) => {
                let _ = outputs.blocking_send(Output::Error(format!("terminal: {e}")));
                let _ = commands.blocking_send(Command::Quit);
                return;
            }
        }
    }
}

/// Read commands line by line from stdin. End of input does not stop the
/// node: it keeps serving the network until `/quit` or a signal.
pub fn lines(me: Me, commands: mpsc::Sender<Command>, outputs: mpsc::Sender<Output>) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else {
            let _ = outputs.blocking_send(Output::Error("stdin is not valid UTF-8 text".into()));
            continue;
        };
        if !dispatch(&line, me, &commands, &outputs) {
            return;
        }
    }
    // Dropping `commands` tells the runtime that input ended; it keeps running.
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "44751799925b964a00bae3863cc4236f9bb8d519";

    #[test]
    fn parses_commands_and_messages() {
        assert_eq!(parse("  "), Ok(Input::Nothing));
        assert_eq!(parse("/quit"), Ok(Input::Command(Command::Quit)));
        assert_eq!(parse("/peers"), Ok(Input::Command(Command::Peers)));
        let a: Address = A.parse().unwrap();
        assert_eq!(
            parse(&format!("/lookup {A}")),
            Ok(Input::Command(Command::Lookup(a)))
        );
        assert_eq!(
            parse(&format!("{A} Hi there!")),
            Ok(Input::Send {
                to: a,
                key: None,
                text: "Hi there!".into()
            })
        );
    }

    #[test]
    fn explains_bad_lines() {
        assert_eq!(parse("/frob"), Err(InputError::Unknown("/frob".into())));
        assert_eq!(parse("/lookup"), Err(InputError::MissingAddress("/lookup")));
        assert!(matches!(
            parse("/lookup 12"),
            Err(InputError::BadAddress(_))
        ));
        assert!(matches!(
            parse("hello world"),
            Err(InputError::BadAddress(_))
        ));
        assert_eq!(parse(A), Err(InputError::EmptyMessage));
        for e in [parse("/frob"), parse("hello"), parse(A)] {
            let text = e.unwrap_err().to_string();
            assert!(!text.contains('\n'), "one line: {text}");
        }
    }

    #[test]
    fn json_lines_have_an_event_field() {
        let outputs = [
            Output::Joined { contacts: 3 },
            Output::Error("x".into()),
            Output::Peers(vec![]),
            Output::Help,
        ];
        for o in outputs {
            let line = json(&o);
            assert!(!line.contains('\n'));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(v["event"].is_string());
        }
    }
}
