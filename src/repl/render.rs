//! How outputs look: text for people (with names from the address book,
//! dates, colour when the terminal takes it) or one JSON object per line.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use crate::address::Address;
use crate::chatlog::{Direction, Entry, SentState};
use crate::control::{Output, PeerRow, StatsReport};
use crate::message::MessageId;
use crate::wire::Contact;

use super::session::Session;

/// Terminal colours, on only when stdout is a terminal and `NO_COLOR` is
/// unset (<https://no-color.org>) and `TERM` is not `dumb`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Paint {
    /// Whether to emit ANSI colour codes.
    pub on: bool,
}

impl Paint {
    /// Decide from the environment.
    pub fn detect() -> Paint {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Paint {
            on: !no_color && !dumb && std::io::stdout().is_terminal(),
        }
    }

    fn wrap(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A person's name.
    pub fn who(&self, text: &str) -> String {
        self.wrap("1;36", text)
    }

    /// Progress and status lines.
    pub fn dim(&self, text: &str) -> String {
        self.wrap("2", text)
    }

    /// Something that went well.
    pub fn good(&self, text: &str) -> String {
        self.wrap("32", text)
    }

    /// Errors.
    pub fn bad(&self, text: &str) -> String {
        self.wrap("31", text)
    }

    /// Warnings.
    pub fn warn(&self, text: &str) -> String {
        self.wrap("33", text)
    }
}

/// "1 contact", "2 contacts".
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn ago(d: Duration) -> String {
    format!("{} ago", span(d))
}

fn local(ms: u64) -> Option<chrono::DateTime<chrono::Local>> {
    use chrono::TimeZone;
    match chrono::Local.timestamp_millis_opt(i64::try_from(ms).ok()?) {
        chrono::LocalResult::Single(t) => Some(t),
        _ => None,
    }
}

/// A moment in this machine's local time: the time alone if it is today,
/// with the date otherwise.
pub fn when(ms: u64, now_ms: u64) -> String {
    let (Some(t), Some(now)) = (local(ms), local(now_ms)) else {
        return "(bad time)".into();
    };
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M").to_string()
    } else if t.format("%Y").to_string() == now.format("%Y").to_string() {
        t.format("%b %d %H:%M").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M").to_string()
    }
}

fn day(ms: u64) -> String {
    local(ms).map_or_else(
        || "(bad date)".into(),
        |t| t.format("%a %b %d %Y").to_string(),
    )
}

/// Message text made safe for a terminal: control characters (which could
/// move the cursor or recolour the screen) are shown as U+FFFD; newlines
/// are kept, each following line indented by `indent`.
pub fn printable(text: &str, indent: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => {
                out.push('\n');
                out.push_str(indent);
            }
            '\t' => out.push_str("    "),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The id as shown to people: its first 8 hex digits.
pub fn short_id(id: &MessageId) -> String {
    id.to_string()[..8].to_string()
}

/// The first words of a text, on one line.
fn excerpt(text: &str) -> String {
    let one: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out: String = one.chars().take(24).collect();
    if one.chars().count() > 24 {
        out.push('…');
    }
    out
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
        let rtt = r
            .rtt
            .map_or("rtt ?".to_string(), |d| format!("rtt {}", ms(d)));
        let failures = if r.failures > 0 {
            format!("  {} failed in a row", r.failures)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "\n   {}  {:<21}  {rtt:<12} last seen {}{failures}",
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
    let pct = |d: Option<Duration>| d.map_or("-".to_string(), ms);
    out.push_str(&format!(
        "\nrequest latency (of {} answered): p50 {}  p90 {}  p99 {}",
        s.rpc_answered,
        pct(s.rpc_latency[0]),
        pct(s.rpc_latency[1]),
        pct(s.rpc_latency[2])
    ));
    for (reason, n) in &s.dropped {
        out.push_str(&format!("\n  dropped {reason}: {n}"));
    }
    out
}

/// A duration in milliseconds, for round trips.
fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// A duration from now, for people.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=172_799 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d", s / 86_400),
    }
}

fn held_human(rows: &[crate::relay::HeldRow], s: &Session, now_ms: u64) -> String {
    let others = rows.iter().filter(|r| !r.own).count();
    let mut out = format!(
        "holding {} for others and {} of ours",
        plural(others, "message"),
        rows.len() - others
    );
    for r in rows {
        let next = match r.next_attempt {
            Some(d) if d.is_zero() => "next try now".to_string(),
            Some(d) => format!("next try in {}", span(d)),
            None => "budget spent: kept for its recipient to collect".to_string(),
        };
        let from = r
            .sender
            .map_or(String::new(), |a| format!(" from {}", s.label(&a)));
        out.push_str(&format!(
            "\n  [{}] for {}{from}{}  {} B  held {}  expires {}\n      budget {} left, {} hops left, {next}",
            short_id(&r.id),
            s.label(&r.recipient),
            if r.own { " (ours)" } else { "" },
            r.bytes,
            span(r.age),
            when(r.expires_at_ms, now_ms),
            r.budget_left,
            r.hops_left,
        ));
        if !r.holders.is_empty() {
            let list: Vec<String> = r.holders.iter().map(SocketAddr::to_string).collect();
            out.push_str(&format!("\n      copies also at {}", list.join(", ")));
        }
    }
    out
}

fn acks_human(rows: &[crate::relay::TombstoneRow], s: &Session, now_ms: u64) -> String {
    let mut out = format!(
        "{} kept (copies that come late are answered with them)",
        plural(rows.len(), "acknowledgement")
    );
    for r in rows {
        out.push_str(&format!(
            "\n  [{}] {} → {}  kept until {}{}",
            short_id(&r.id),
            s.label(&r.sender),
            s.label(&r.recipient),
            when(r.keep_until_ms, now_ms),
            if r.routed {
                "  (routed to the sender)"
            } else {
                ""
            }
        ));
    }
    out
}

/// The line naming one of our messages: `[1a2b3c4d] → bob "first words"`.
fn our(s: &Session, id: &MessageId, to: Option<Address>) -> String {
    let entry = s.log.get(id);
    let to = to.or(entry.map(Entry::peer));
    let mut out = format!("  [{}]", short_id(id));
    if let Some(to) = to {
        out.push_str(&format!(" → {}", s.paint.who(&s.label(&to))));
    }
    if let Some(e) = entry {
        out.push_str(&format!(" \"{}\"", excerpt(&e.text)));
    }
    out
}

/// Render an output for people. `now_ms` is the wall clock.
pub fn human(o: &Output, s: &mut Session, now_ms: u64) -> String {
    let p = s.paint;
    match o {
        Output::Ready(me) => {
            let dir = s
                .data_dir
                .as_ref()
                .map_or_else(String::new, |d| format!("\ndata in {}", d.display()));
            format!(
                "comm {} · you are {}\nlistening on {}{dir}\n{} in your address book · type /help",
                env!("CARGO_PKG_VERSION"),
                p.who(&me.address.to_string()),
                me.listen,
                plural(s.book.len(), "contact"),
            )
        }
        Output::Alone { listen } => {
            let through = if listen.ip().is_unspecified() {
                format!("this machine's address, port {}", listen.port())
            } else {
                listen.to_string()
            };
            p.dim(&format!(
                "no bootstrap given: running alone; others can join through {through}"
            ))
        }
        Output::Joined { contacts } => p.good(&format!(
            "joined the network: {} known",
            plural(*contacts, "node")
        )),
        Output::BootstrapFailed {
            addrs,
            tries,
            retry_in,
        } => {
            let list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
            p.warn(&format!(
                "bootstrap {} did not answer after {tries} tries; running alone, will retry in {}s",
                list.join(", "),
                retry_in.as_secs()
            ))
        }
        Output::Lookup(r) => {
            let mut out = format!(
                "lookup {}: {} closest in {}, {}",
                r.target,
                r.closest.len(),
                plural(r.rounds as usize, "round"),
                plural(r.rpcs as usize, "RPC")
            );
            if r.unanswered > 0 {
                out.push_str(&format!(" ({} unanswered)", r.unanswered));
            }
            for (i, c) in r.closest.iter().enumerate() {
                let d = c.id.distance(&r.target).bucket_index();
                let d = d.map_or("0".to_string(), |b| format!("2^{b}"));
                let name = s
                    .book
                    .name_of(&c.id)
                    .map_or(String::new(), |n| format!(" ({n})"));
                out.push_str(&format!(
                    "\n  {:>2}  {}  {:<21}  distance ~{d}{name}",
                    i + 1,
                    c.id,
                    c.addr
                ));
            }
            if r.closest.is_empty() {
                out.push_str("\n  (no contacts answered: is this node joined?)");
            }
            if !r.path.is_empty() {
                out.push_str("\n path:");
                let mut round = 0;
                for step in &r.path {
                    if step.round != round {
                        round = step.round;
                        out.push_str(&format!("\n  round {round}"));
                    }
                    let d = step.contact.id.distance(&r.target).bucket_index();
                    let d = d.map_or("0".to_string(), |b| format!("2^{b}"));
                    let what = match step.outcome {
                        crate::lookup::StepOutcome::Answered => format!(
                            "answered{}: {} closer",
                            step.rtt.map_or(String::new(), |t| format!(" in {}", ms(t))),
                            step.new_closer
                        ),
                        crate::lookup::StepOutcome::TimedOut => p.warn("no answer"),
                        _ => p.warn("refused"),
                    };
                    out.push_str(&format!(
                        "\n    asked {} (distance ~{d}) → {what}",
                        step.contact.id.short()
                    ));
                }
            }
            out
        }
        Output::Peers(rows) => peers_human(rows),
        Output::Stats(st) => stats_human(st),
        Output::Accepted { id, to, .. } => p.dim(&format!("{}: sending…", our(s, id, Some(*to)))),
        Output::Queued { id, to, .. } => p.dim(&format!(
            "{}: looking up {}'s key",
            our(s, id, Some(*to)),
            s.label(to)
        )),
        Output::KeyNotFound {
            to,
            queued,
            retry_in,
        } => p.warn(&format!(
            "  no key found for {} yet ({} offline, or never ran comm): {} queued, retrying in {}s",
            s.label(to),
            s.label(to),
            plural(*queued, "message"),
            retry_in.as_secs()
        )),
        Output::Sent {
            id,
            relays,
            direct,
            no_contacts,
            expires_at_ms,
            ..
        } => {
            let head = our(s, id, None);
            let until = when(*expires_at_ms, now_ms);
            p.dim(&match (direct, relays) {
                (true, 0) => format!("{head}: taken by the recipient"),
                (true, n) => format!(
                    "{head}: taken by the recipient, and on {}",
                    plural(*n, "relay")
                ),
                (false, 0) if *no_contacts => format!(
                    "{head}: not sent yet: this node knows no other node; it goes out once joined (tried until {until})"
                ),
                (false, 0) => format!("{head}: no relay took it yet; retrying until {until}"),
                (false, n) => format!(
                    "{head}: recipient offline; on {} that {} offering it until {until} (/cancel {} withdraws it)",
                    plural(*n, "relay"),
                    if *n == 1 { "keeps" } else { "keep" },
                    short_id(id)
                ),
            })
        }
        Output::CatchUp { count } => p.good(&format!(
            "── {} while you were away, in the order written ──",
            plural(*count, "message")
        )),
        Output::Cancelled(r) => {
            let head = our(s, &r.id, Some(r.to));
            let fate = if r.was_queued {
                "no copy had left this node: it will not arrive".to_string()
            } else if r.relays_holding + r.sent_unconfirmed == 0 {
                "no relay was known to hold a copy".to_string()
            } else {
                format!(
                    "{} already held a copy and keep offering it until it expires: it may still arrive",
                    plural(r.relays_holding + r.sent_unconfirmed, "relay")
                )
            };
            p.warn(&format!(
                "{head}: cancelled; this node stopped sending it; {fate}"
            ))
        }
        Output::Held(rows) => held_human(rows, s, now_ms),
        Output::Acks(rows) => acks_human(rows, s, now_ms),
        Output::SameIdentity { endpoint } => {
            let where_ = endpoint.map_or_else(
                || "a record signed with your key that this node did not sign".to_string(),
                |e| format!("datagrams from your own address at {e}"),
            );
            p.warn(&format!(
                "warning: your identity seems to run twice ({where_}): the two nodes split its \
                 messages. If you started comm with this secret elsewhere, stop one of them."
            ))
        }
        Output::Message {
            id,
            from,
            text,
            created_at_ms,
            maybe_repeat,
        } => {
            // The node could not tell (protocol.md §16.4); the conversation
            // log can, while it still has the id: the same id is the same
            // signed message, received before this showing.
            if *maybe_repeat {
                if let Some(e) = s.log.get(id).filter(|e| e.at_ms < now_ms) {
                    return p.dim(&format!(
                        "{} from {} came again (received {}); not shown twice",
                        id.short(),
                        s.label(from),
                        when(e.at_ms, now_ms)
                    ));
                }
            }
            let mut out = String::new();
            if s.introduce(from) {
                out.push_str(&p.dim(&format!(
                    "new sender {from} (not in your contacts: /add NAME {from} names them, /reply answers)\n"
                )));
            }
            let mut head = format!("{} {}", p.who(&s.label(from)), when(now_ms, now_ms));
            // Written long before it arrived (held while we were away), or
            // a sender's clock far off: say when it was written.
            if created_at_ms.abs_diff(now_ms) > 120_000 {
                head.push_str(&format!(", written {}", when(*created_at_ms, now_ms)));
            }
            // Older than messages this node had to forget (protocol.md
            // §16.4): shown rather than risk losing it, and said so.
            if *maybe_repeat {
                head.push_str(", may repeat an earlier message");
            }
            out.push_str(&format!("[{head}] {}", printable(text, "  ")));
            out
        }
        Output::Delivered { id, at_ms, .. } => p.good(&format!(
            "{}: delivered {} (signed ack)",
            our(s, id, None),
            when(*at_ms, now_ms)
        )),
        Output::Expired { id } => p.warn(&format!(
            "{}: expired undelivered (its lifetime ran out)",
            our(s, id, None)
        )),
        Output::WhoAmI(me) => {
            let key = hex::encode(me.key.as_bytes());
            format!(
                "you are {} on {}\nyour identity line (give it to people; they type /add YOURNAME and paste it):\n  {}:{key}",
                p.who(&me.address.to_string()),
                me.listen,
                me.address
            )
        }
        Output::Help => super::help::OVERVIEW.to_string(),
        Output::Rendered { human, .. } => human.clone(),
        Output::Notice(text) => p.dim(text),
        Output::Error(message) => p.bad(&format!("error: {message}")),
        Output::Stopped => "stopped".to_string(),
    }
}

/// Render an output as one JSON line.
pub fn json(o: &Output, s: &Session) -> String {
    let name = |a: &Address| s.book.name_of(a).map(str::to_string);
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
            "unanswered": r.unanswered,
            "side_queries": r.side_queries,
            "path": r.path.iter().map(|st| json!({
                "round": st.round, "address": st.contact.id.to_string(),
                "addr": st.contact.addr.to_string(),
                "outcome": format!("{:?}", st.outcome).to_lowercase(),
                "new_closer": st.new_closer,
                "rtt_ms": st.rtt.map(|d| d.as_secs_f64() * 1e3),
            })).collect::<Vec<_>>(),
        }),
        Output::Peers(rows) => json!({
            "event": "peers",
            "contacts": rows.iter().map(|r| json!({
                "address": r.contact.id.to_string(),
                "addr": r.contact.addr.to_string(),
                "bucket": r.bucket,
                "last_seen_secs": r.last_seen.as_secs(),
                "rtt_ms": r.rtt.map(|d| d.as_secs_f64() * 1e3),
                "failures": r.failures,
            })).collect::<Vec<_>>(),
        }),
        Output::Stats(st) => json!({
            "event": "stats",
            "contacts": st.contacts,
            "lookups": st.lookups,
            "datagrams_in": st.datagrams_in,
            "datagrams_out": st.datagrams_out,
            "rpc_timeouts": st.rpc_timeouts,
            "dropped": st.dropped.iter().map(|(_, n)| n).sum::<u64>(),
            "dropped_by_reason": st.dropped.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "held_messages": st.held_messages,
            "held_acks": st.held_acks,
            "routed_acks": st.routed_acks,
            "outbox": st.outbox,
            "inbox": st.inbox,
            "unshown": st.unshown,
            "maybe_repeats": st.maybe_repeats,
            "requests_open": st.requests.0,
            "requests_queued": st.requests.1,
            "write_batches": st.write_batches,
            "stores_sent": st.stores_sent,
            "acks_sent": st.acks_sent,
            "rpc_answered": st.rpc_answered,
            "rpc_latency_ms": {
                "p50": st.rpc_latency[0].map(|d| d.as_secs_f64() * 1e3),
                "p90": st.rpc_latency[1].map(|d| d.as_secs_f64() * 1e3),
                "p99": st.rpc_latency[2].map(|d| d.as_secs_f64() * 1e3),
            },
        }),
        Output::Accepted { id, to, at_ms, .. } => json!({
            "event": "accepted", "id": id.to_string(), "to": to.to_string(), "to_name": name(to),
            "at": at_ms,
        }),
        Output::Sent {
            id,
            wire_id,
            to,
            relays,
            direct,
            no_contacts,
            expires_at_ms,
        } => json!({
            "event": "sent", "id": id.to_string(), "wire_id": wire_id.to_string(),
            "to": to.to_string(), "relays": relays,
            "direct": direct, "no_contacts": no_contacts, "expires_at": expires_at_ms,
        }),
        Output::CatchUp { count } => json!({"event": "catch_up", "count": count}),
        Output::Cancelled(r) => json!({
            "event": "cancelled", "id": r.id.to_string(), "to": r.to.to_string(),
            "was_queued": r.was_queued, "relays_holding": r.relays_holding,
            "sent_unconfirmed": r.sent_unconfirmed,
        }),
        Output::Held(rows) => json!({"event": "held", "messages": rows.iter().map(|r| json!({
            "id": r.id.to_string(), "recipient": r.recipient.to_string(),
            "sender": r.sender.map(|a| a.to_string()), "own": r.own,
            "age_secs": r.age.as_secs(), "expires_at": r.expires_at_ms,
            "budget_left": r.budget_left, "hops_left": r.hops_left,
            "next_attempt_secs": r.next_attempt.map(|d| d.as_secs_f64()),
            "holders": r.holders.iter().map(SocketAddr::to_string).collect::<Vec<_>>(),
            "bytes": r.bytes,
        })).collect::<Vec<_>>()}),
        Output::Acks(rows) => json!({"event": "acks", "tombstones": rows.iter().map(|r| json!({
            "id": r.id.to_string(), "keep_until": r.keep_until_ms, "routed": r.routed,
            "sender": r.sender.to_string(), "recipient": r.recipient.to_string(),
        })).collect::<Vec<_>>()}),
        Output::SameIdentity { endpoint } => {
            json!({"event": "same_identity", "endpoint": endpoint.map(|e| e.to_string())})
        }
        Output::Message {
            id,
            from,
            text,
            created_at_ms,
            maybe_repeat,
        } => json!({
            "event": "message", "id": id.to_string(), "from": from.to_string(),
            "from_name": name(from), "text": text, "created_at": created_at_ms,
            "maybe_repeat": maybe_repeat,
        }),
        Output::Delivered { id, to, at_ms } => json!({
            "event": "delivered", "id": id.to_string(), "to": to.to_string(), "at": at_ms,
        }),
        Output::Expired { id } => json!({"event": "expired", "id": id.to_string()}),
        Output::WhoAmI(me) => {
            json!({"event": "whoami", "address": me.address.to_string(), "key": hex::encode(me.key.as_bytes()), "listen": me.listen.to_string()})
        }
        Output::Queued {
            id,
            to,
            expires_at_ms,
        } => json!({
            "event": "queued", "id": id.to_string(), "to": to.to_string(), "expires_at": expires_at_ms,
        }),
        Output::KeyNotFound {
            to,
            queued,
            retry_in,
        } => json!({
            "event": "key_not_found", "to": to.to_string(), "queued": queued, "retry_in_secs": retry_in.as_secs(),
        }),
        Output::Help => json!({"event": "help", "text": super::help::OVERVIEW}),
        Output::Rendered { json, .. } => return json.clone(),
        Output::Notice(text) => json!({"event": "notice", "message": text}),
        Output::Error(message) => json!({"event": "error", "message": message}),
        Output::Stopped => json!({"event": "stopped"}),
    };
    v.to_string()
}

fn entry_json(e: &Entry, s: &Session) -> serde_json::Value {
    let peer = e.peer();
    let (dir, state) = match e.direction {
        Direction::In { .. } => ("in", None),
        Direction::Out { state, .. } => ("out", Some(state)),
    };
    json!({
        "id": e.id.to_string(), "direction": dir, "peer": peer.to_string(),
        "peer_name": s.book.name_of(&peer), "text": e.text,
        "written": e.written_ms, "at": e.at_ms, "state": state,
    })
}

/// Lines of a conversation, grouped under day headings.
fn conversation(entries: &[&Entry], s: &Session, with_peer: bool) -> String {
    let p = s.paint;
    let mut out = String::new();
    let mut last_day = String::new();
    for e in entries {
        let d = day(e.at_ms);
        if d != last_day {
            out.push_str(&format!("\n {}", p.dim(&d)));
            last_day = d;
        }
        let t = local(e.at_ms).map_or_else(|| "??:??".into(), |t| t.format("%H:%M").to_string());
        let (who, tail) = match e.direction {
            Direction::In { from } => (p.who(&s.label(&from)), String::new()),
            Direction::Out { to, state } => {
                let who = if with_peer {
                    format!("me → {}", s.label(&to))
                } else {
                    "me".to_string()
                };
                let st = match state {
                    SentState::Delivered => p.good(&state.describe()),
                    SentState::Expired | SentState::Cancelled => p.warn(&state.describe()),
                    _ => p.dim(&state.describe()),
                };
                (who, format!("  [{} {st}]", short_id(&e.id)))
            }
        };
        out.push_str(&format!(
            "\n  {t}  {who}: {}{tail}",
            printable(&e.text, "         ")
        ));
    }
    out
}

/// `/contacts`.
pub fn contacts_view(s: &Session, now_ms: u64) -> (String, String) {
    let mut rows = Vec::new();
    let mut out = format!("{} in your address book", plural(s.book.len(), "contact"));
    for e in s.book.entries() {
        let last = s
            .log
            .entries()
            .iter()
            .rev()
            .find(|m| matches!(m.direction, Direction::In { from } if from == e.address))
            .map(|m| m.at_ms);
        let unread = s.unread(&e.address);
        let seen = last.map_or("never heard from".to_string(), |ms| {
            format!("last heard {}", when(ms, now_ms))
        });
        let unread_text = if unread > 0 {
            s.paint.good(&format!("  {unread} unread"))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "\n  {} {}  {seen}{unread_text}{}",
            s.paint.who(&format!("{:<12}", e.name)),
            e.address,
            if e.key.is_some() {
                ""
            } else {
                "  (key looked up)"
            }
        ));
        rows.push(json!({
            "name": e.name, "address": e.address.to_string(),
            "key": e.key.map(|k| hex::encode(k.as_bytes())),
            "last_heard": last, "unread": unread,
        }));
    }
    let strangers: Vec<Address> = s
        .log
        .peers()
        .into_iter()
        .filter(|a| s.book.by_address(a).is_none())
        .take(10)
        .collect();
    if !strangers.is_empty() {
        out.push_str("\n unnamed (/add NAME ADDRESS to name them):");
        for a in &strangers {
            out.push_str(&format!("\n  {a}  {} unread", s.unread(a)));
        }
    }
    if s.book.is_empty() && strangers.is_empty() {
        out.push_str("\n  (none yet: /add NAME ADDRESS, or /help add)");
    }
    let json = json!({"event": "contacts", "contacts": rows,
        "unnamed": strangers.iter().map(Address::to_string).collect::<Vec<_>>()});
    (out, json.to_string())
}

/// Most lines `/inbox`, `/outbox` and `/history NAME` show.
pub const VIEW_LINES: usize = 30;

/// The newest [`VIEW_LINES`] of `all`, and the words saying so when some
/// are left out.
fn newest<'a>(all: &'a [&'a Entry]) -> (&'a [&'a Entry], String) {
    let shown = &all[all.len().saturating_sub(VIEW_LINES)..];
    let note = if all.len() > shown.len() {
        format!(", the last {} shown", shown.len())
    } else {
        String::new()
    };
    (shown, note)
}

/// `/inbox`.
pub fn inbox_view(s: &Session) -> (String, String) {
    let all: Vec<&Entry> = s
        .log
        .entries()
        .iter()
        .filter(|e| matches!(e.direction, Direction::In { .. }))
        .collect();
    let (shown, note) = newest(&all);
    let mut out = format!("inbox: {} received{note}", plural(all.len(), "message"));
    out.push_str(&conversation(shown, s, true));
    let json = json!({"event": "inbox", "messages": shown.iter().map(|e| entry_json(e, s)).collect::<Vec<_>>()});
    (out, json.to_string())
}

/// `/outbox`: open messages first, then the latest finished ones.
pub fn outbox_view(s: &Session) -> (String, String) {
    let sent: Vec<&Entry> = s
        .log
        .entries()
        .iter()
        .filter(|e| matches!(e.direction, Direction::Out { .. }))
        .collect();
    let (open, done): (Vec<&Entry>, Vec<&Entry>) = sent
        .iter()
        .partition(|e| matches!(e.direction, Direction::Out { state, .. } if state.open()));
    let recent = &done[done.len().saturating_sub(10)..];
    let mut out = format!("outbox: {} on the way", plural(open.len(), "message"));
    if open.is_empty() {
        out.push_str("\n  (nothing waiting)");
    } else {
        out.push_str(&conversation(&open, s, true));
    }
    if !recent.is_empty() {
        out.push_str(&format!("\nlatest finished ({} in all):", done.len()));
        out.push_str(&conversation(recent, s, true));
    }
    let json = json!({"event": "outbox",
        "open": open.iter().map(|e| entry_json(e, s)).collect::<Vec<_>>(),
        "finished": recent.iter().map(|e| entry_json(e, s)).collect::<Vec<_>>()});
    (out, json.to_string())
}

/// `/history NAME`: one conversation.
pub fn history_view(s: &Session, with: Address) -> (String, String) {
    let all: Vec<&Entry> = s
        .log
        .entries()
        .iter()
        .filter(|e| e.peer() == with)
        .collect();
    let (shown, note) = newest(&all);
    let mut out = format!(
        "conversation with {} ({}){note}",
        s.paint.who(&s.label(&with)),
        plural(all.len(), "message")
    );
    if all.is_empty() {
        out.push_str("\n  (no messages yet)");
    }
    out.push_str(&conversation(shown, s, false));
    let json = json!({"event": "history", "with": with.to_string(),
        "name": s.book.name_of(&with),
        "messages": shown.iter().map(|e| entry_json(e, s)).collect::<Vec<_>>()});
    (out, json.to_string())
}

/// `/history`: every conversation, most recent first.
pub fn conversations_view(s: &Session, now_ms: u64) -> (String, String) {
    let peers = s.log.peers();
    let mut out = plural(peers.len(), "conversation");
    let mut rows = Vec::new();
    for a in peers.iter().take(VIEW_LINES) {
        let Some(last) = s.log.entries().iter().rev().find(|e| e.peer() == *a) else {
            continue;
        };
        let n = s.log.entries().iter().filter(|e| e.peer() == *a).count();
        let unread = s.unread(a);
        let arrow = match last.direction {
            Direction::In { .. } => "",
            Direction::Out { .. } => "me: ",
        };
        out.push_str(&format!(
            "\n  {} {:>5}  {}  {arrow}{}{}",
            s.paint.who(&format!("{:<12}", s.label(a))),
            when(last.at_ms, now_ms),
            plural(n, "message"),
            excerpt(&last.text),
            if unread > 0 {
                s.paint.good(&format!("  ({unread} unread)"))
            } else {
                String::new()
            }
        ));
        rows.push(
            json!({"with": a.to_string(), "name": s.book.name_of(a), "messages": n,
            "unread": unread, "last": entry_json(last, s)}),
        );
    }
    if peers.is_empty() {
        out.push_str("\n  (no messages yet)");
    } else {
        out.push_str("\n/history NAME shows one of them");
    }
    let json = json!({"event": "conversations", "conversations": rows});
    (out, json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Book;
    use crate::chatlog::ChatLog;

    #[test]
    fn json_lines_have_an_event_field() {
        let s = Session::default();
        let outputs = [
            Output::Joined { contacts: 3 },
            Output::Error("x".into()),
            Output::Peers(vec![]),
            Output::Help,
        ];
        for o in outputs {
            let line = json(&o, &s);
            assert!(!line.contains('\n'));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(v["event"].is_string());
        }
    }

    #[test]
    fn text_keeps_newlines_and_loses_control_characters() {
        assert_eq!(printable("a\nb\x1b[2Jc", "  "), "a\n  b\u{fffd}[2Jc");
    }

    #[test]
    fn messages_name_their_sender_and_strangers_once() {
        let mut s = Session::new(Book::in_memory(), ChatLog::in_memory(), Paint::default());
        let (a, b) = (Address([1; 20]), Address([2; 20]));
        s.book.add("ann", a, None, 0).unwrap();
        let now = 1_790_000_000_000;
        let m = |from, created| Output::Message {
            id: MessageId([3; 20]),
            from,
            text: "hi\nthere".into(),
            created_at_ms: created,
            maybe_repeat: false,
        };
        let line = human(&m(a, now), &mut s, now);
        assert!(line.starts_with("[ann "), "{line}");
        assert!(line.ends_with("] hi\n  there"), "{line}");
        let first = human(&m(b, now - 3_600_000), &mut s, now);
        assert!(first.starts_with(&format!("new sender {b}")), "{first}");
        assert!(first.contains(", written "), "{first}");
        let second = human(&m(b, now), &mut s, now);
        assert!(!second.contains("new sender"), "{second}");
        assert!(!second.contains("may repeat"), "{second}");
        let repeat = Output::Message {
            id: MessageId([4; 20]),
            from: a,
            text: "hi".into(),
            created_at_ms: now,
            maybe_repeat: true,
        };
        let line = human(&repeat, &mut s, now);
        assert!(line.contains(", may repeat an earlier message]"), "{line}");
        // One the conversation log already holds is a repeat for sure.
        s.log
            .received(MessageId([4; 20]), a, "hi", now - 10, now - 5)
            .unwrap();
        let line = human(&repeat, &mut s, now);
        assert!(
            line.contains("came again") && !line.contains("] hi"),
            "{line}"
        );
    }

    #[test]
    fn views_render_both_ways() {
        let mut s = Session::new(Book::in_memory(), ChatLog::in_memory(), Paint::default());
        let a = Address([1; 20]);
        s.book.add("ann", a, None, 0).unwrap();
        s.log.sent(MessageId([1; 20]), a, "hello", 1_000).unwrap();
        s.log
            .received(MessageId([2; 20]), a, "hey", 1_500, 2_000)
            .unwrap();
        for (h, j) in [
            contacts_view(&s, 3_000),
            inbox_view(&s),
            outbox_view(&s),
            history_view(&s, a),
            conversations_view(&s, 3_000),
        ] {
            assert!(!h.is_empty());
            let v: serde_json::Value = serde_json::from_str(&j).unwrap();
            assert!(v["event"].is_string(), "{j}");
        }
        let (h, _) = history_view(&s, a);
        assert!(h.contains("me: hello  [01010101 queued]"), "{h}");
        assert!(h.contains("ann: hey"), "{h}");
        let (c, _) = contacts_view(&s, 3_000);
        assert!(c.contains("1 unread"), "{c}");
    }
}
