//! The user interface: parse what the user types, render what the node
//! reports, as human text or one JSON object per line.
//!
//! Interactive use goes through rustyline; lines printed while the user is
//! typing go through its external printer so they never garble the input.
//! With `--json`, or when stdin is not a terminal, commands are read line by
//! line from stdin and every output is one line on stdout.
//!
//! The parts: [`parse`] (typed line → [`Input`]), [`session`] (address
//! book, conversation log, last sender), [`render`] (outputs and views as
//! text or JSON), [`editor`] (completion, continuation lines, Ctrl-C,
//! line history) and [`help`].

pub mod editor;
pub mod help;
pub mod parse;
pub mod render;
pub mod session;

use std::io::{BufRead, Write};
use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::chatlog::Direction;
use crate::control::{Command, Output};
use crate::message::MessageId;
use crate::node::unix_ms;
use crate::store::shown::ShownLog;

pub use parse::{parse, Input, InputError, Target};
pub use session::{Session, Shared};

/// Where outputs are printed and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Text for people.
    Human,
    /// One JSON object per line with an `"event"` field.
    Json,
}

fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

/// Print every output until [`Output::Stopped`] or the channel closes.
/// `external` prints above the user's prompt in interactive mode;
/// `session` records each output in the conversation log first.
///
/// Received messages are recorded in `shown` just before they are written
/// (see [`crate::store::shown`]), so a message reaches the screen once,
/// crash or not.
pub fn print_loop(
    mut outputs: mpsc::Receiver<Output>,
    format: Format,
    mut external: Option<Box<dyn rustyline::ExternalPrinter + Send>>,
    mut shown: Option<Box<dyn ShownLog>>,
    session: Shared,
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
        {
            let mut s = session.lock();
            let now = now_ms();
            for o in &batch {
                if let Some(problem) = s.observe(o, now) {
                    let e = Output::Error(problem);
                    text.push_str(&match format {
                        Format::Human => render::human(&e, &mut s, now),
                        Format::Json => render::json(&e, &s),
                    });
                    text.push('\n');
                }
                text.push_str(&match format {
                    Format::Human => render::human(o, &mut s, now),
                    Format::Json => render::json(o, &s),
                });
                text.push('\n');
            }
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
    session: &Shared,
    commands: &mpsc::Sender<Command>,
    outputs: &mpsc::Sender<Output>,
) -> bool {
    let reply = match act(line, session) {
        Ok(Act::Nothing) => return true,
        Ok(Act::Show(o)) => o,
        Ok(Act::Run(c)) => {
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

/// What a line comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Act {
    /// Nothing (a blank line).
    Nothing,
    /// Something for the node.
    Run(Command),
    /// Something to show at once.
    Show(Output),
}

fn rendered((human, json): (String, String)) -> Act {
    Act::Show(Output::Rendered { human, json })
}

/// Decide what `line` comes to, resolving names and ids in `session`.
pub fn act(line: &str, session: &Shared) -> Result<Act, InputError> {
    let input = parse(line)?;
    let mut s = session.lock();
    let now = now_ms();
    Ok(match input {
        Input::Nothing => Act::Nothing,
        Input::Help(None) => Act::Show(Output::Help),
        Input::Help(Some(topic)) => match help::topic(&topic) {
            Some(text) => Act::Show(Output::Notice(text.to_string())),
            None => return Err(InputError::NoHelp(topic)),
        },
        Input::WhoAmI => match s.me {
            Some(me) => Act::Show(Output::WhoAmI(me)),
            None => Act::Show(Output::Notice("the node is still starting".into())),
        },
        Input::Command(c) => Act::Run(c),
        Input::Send { to, text } => {
            let r = s.resolve(&to)?;
            Act::Run(Command::Send {
                to: r.address,
                key: r.key.map(Box::new),
                text,
            })
        }
        Input::Reply(text) => {
            let to = s.last_sender.ok_or(InputError::NoOneToReply)?;
            let r = s.resolve(&Target::Address(to))?;
            Act::Run(Command::Send {
                to,
                key: r.key.map(Box::new),
                text,
            })
        }
        Input::Lookup(t) => Act::Run(Command::Lookup(s.resolve(&t)?.address)),
        Input::Add { name, address, key } => {
            let me = s.me.map(|m| m.address);
            if me == Some(address) {
                return Err(InputError::BadName(
                    "that is your own address; /whoami shows it".into(),
                ));
            }
            match s.book.add(&name, address, key, now) {
                Ok(e) => {
                    let text = format!(
                        "{} is now {}{}; write with: {} your message",
                        e.name,
                        e.address,
                        if e.key.is_some() { " (key known)" } else { "" },
                        e.name
                    );
                    match e.key {
                        // Messages already waiting for this key go now.
                        Some(key) => Act::Run(Command::LearnKey {
                            key: Box::new(key),
                            notice: text,
                        }),
                        None => Act::Show(Output::Notice(text)),
                    }
                }
                Err(e) => Act::Show(Output::Error(e.to_string())),
            }
        }
        Input::Remove(name) => match s.book.remove(&name) {
            Ok(e) => Act::Show(Output::Notice(format!(
                "forgot {} ({}); their messages stay in /history {}",
                e.name, e.address, e.address
            ))),
            Err(e) => Act::Show(Output::Error(e.to_string())),
        },
        Input::Contacts => rendered(render::contacts_view(&s, now)),
        Input::Inbox => {
            let view = render::inbox_view(&s);
            let peers = s.log.peers();
            let _ = s.book.mark_read(&peers, now);
            rendered(view)
        }
        Input::Outbox => rendered(render::outbox_view(&s)),
        Input::History(None) => rendered(render::conversations_view(&s, now)),
        Input::History(Some(t)) => {
            let with = s.resolve(&t)?.address;
            let view = render::history_view(&s, with);
            let _ = s.book.mark_read(&[with], now);
            rendered(view)
        }
        Input::Cancel(prefix) => {
            let found = s.log.sent_matching(&prefix);
            match found.as_slice() {
                [] => return Err(InputError::NoSuchMessage(prefix)),
                [e] => match e.direction {
                    Direction::Out { state, .. } if state.open() => Act::Run(Command::Cancel(e.id)),
                    Direction::Out { state, .. } => {
                        return Err(InputError::NotOpen {
                            id: render::short_id(&e.id),
                            state: state.describe(),
                        })
                    }
                    Direction::In { .. } => return Err(InputError::NoSuchMessage(prefix)),
                },
                many => {
                    // Only one still open: that one is meant.
                    let open: Vec<MessageId> = many
                        .iter()
                        .filter(
                            |e| matches!(e.direction, Direction::Out { state, .. } if state.open()),
                        )
                        .map(|e| e.id)
                        .collect();
                    match open.as_slice() {
                        [id] => Act::Run(Command::Cancel(*id)),
                        _ => return Err(InputError::Ambiguous(many.len(), prefix)),
                    }
                }
            }
        }
    })
}

/// Read commands from a terminal with line editing until the user quits.
/// Typed lines are remembered in `history` (a file) across restarts.
pub fn interactive(
    mut editor: editor::Editor,
    history: Option<PathBuf>,
    session: Shared,
    commands: mpsc::Sender<Command>,
    outputs: mpsc::Sender<Output>,
) {
    use rustyline::error::ReadlineError;
    loop {
        match editor.readline("> ") {
            Ok(line) => {
                editor::remember(&mut editor, &line, history.as_ref());
                if !dispatch(&line, &session, &commands, &outputs) {
                    return;
                }
            }
            // Ctrl-C on an empty line (on a typed one it only clears it),
            // or Ctrl-D.
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
pub fn lines(session: Shared, commands: mpsc::Sender<Command>, outputs: mpsc::Sender<Output>) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else {
            let _ = outputs.blocking_send(Output::Error("stdin is not valid UTF-8 text".into()));
            continue;
        };
        if !dispatch(&line, &session, &commands, &outputs) {
            return;
        }
    }
    // Dropping `commands` tells the runtime that input ended; it keeps running.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::book::Book;
    use crate::chatlog::{ChatLog, SentState};

    fn session() -> Shared {
        let mut s = Session::new(Book::in_memory(), ChatLog::in_memory(), Default::default());
        s.book.add("ann", Address([1; 20]), None, 0).unwrap();
        s.log
            .sent(MessageId([0xab; 20]), Address([1; 20]), "one", 1)
            .unwrap();
        let mut id = [0xab; 20];
        id[19] = 0;
        s.log
            .sent(MessageId(id), Address([1; 20]), "two", 2)
            .unwrap();
        s.log
            .set_state(&MessageId(id), SentState::Delivered, 3)
            .unwrap();
        s.log
            .sent(MessageId([0xcd; 20]), Address([1; 20]), "three", 4)
            .unwrap();
        s.log
            .set_state(&MessageId([0xcd; 20]), SentState::Expired, 5)
            .unwrap();
        Shared::new(s)
    }

    #[test]
    fn names_replies_and_ids_resolve() {
        let s = session();
        assert!(matches!(
            act("ann hi", &s),
            Ok(Act::Run(Command::Send { to, .. })) if to == Address([1; 20])
        ));
        // Two ids start with abab; only one is still open.
        assert_eq!(
            act("/cancel abab", &s),
            Ok(Act::Run(Command::Cancel(MessageId([0xab; 20]))))
        );
        assert!(matches!(
            act("/help relays", &s),
            Ok(Act::Show(Output::Notice(_)))
        ));
        assert!(matches!(
            act("/history ann", &s),
            Ok(Act::Show(Output::Rendered { .. }))
        ));
        // A contact added with its key: the node learns the key, so
        // messages already waiting for it go out.
        let key = crate::identity::Identity::from_seed([9; 32]).public_key();
        let hex_key = hex::encode(key.as_bytes());
        assert!(matches!(
            act(&format!("/add bea {hex_key}"), &s),
            Ok(Act::Run(Command::LearnKey { key: k, notice }))
                if *k == key && notice.starts_with("bea is now")
        ));
        assert!(matches!(
            act(&format!("/add cid {}", Address([3; 20])), &s),
            Ok(Act::Show(Output::Notice(_)))
        ));
    }

    /// Every error that needs the session, in the words a user sees.
    #[test]
    fn explains_what_cannot_be_done() {
        let s = session();
        let cases: &[(&str, &str)] = &[
            (
                "bob hi",
                "no contact named bob; /contacts lists them, /add bob ADDRESS names one",
            ),
            ("/history bob", "no contact named bob"),
            ("/lookup @bob", "no contact named bob"),
            ("/lookup 12345", "an address is 40 hex characters, got 5"),
            (
                "/reply hi",
                "nobody has written to you since the node started; /reply answers the last sender",
            ),
            (
                "/cancel 1234",
                "no message of yours starts with 1234; /outbox lists them",
            ),
            (
                "/cancel cdcd",
                "message cdcdcdcd is already expired; nothing to cancel",
            ),
            ("/help frob", "no help on /frob; /help lists the commands"),
        ];
        for (line, want) in cases {
            let got = act(line, &s).expect_err(line).to_string();
            assert!(got.starts_with(want), "{line:?}: got {got:?}");
            assert!(!got.contains('\n'));
        }
        // Two open messages share a prefix: ask for more digits.
        s.lock()
            .log
            .sent(MessageId([0xaa; 20]), Address([1; 20]), "four", 6)
            .unwrap();
        let mut id = [0xaa; 20];
        id[19] = 1;
        s.lock()
            .log
            .sent(MessageId(id), Address([1; 20]), "five", 7)
            .unwrap();
        assert_eq!(
            act("/cancel aaaa", &s).unwrap_err().to_string(),
            "2 of your messages start with aaaa; type more digits of the id"
        );
    }
}
