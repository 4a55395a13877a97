//! The line editor: Tab completion of commands, names and known addresses,
//! a trailing `\` to continue a message on the next line, Ctrl-C that
//! clears a half-typed line (and quits on an empty one), and typed lines
//! remembered across restarts.
//!
//! Up-arrow recalls every line of this run, but only command lines that
//! carry no message text are written to the history file: message text is
//! never stored in the clear (the conversation log is sealed).

use std::path::{Path, PathBuf};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{
    Cmd, ConditionalEventHandler, Context, Event, EventContext, EventHandler, Helper, KeyEvent,
    Movement, RepeatCount,
};

use super::parse::{Input, COMMANDS};
use super::session::Shared;

/// Typed lines kept in the history file.
pub const HISTORY_LINES: usize = 1_000;

/// The editor comm uses.
pub type Editor = rustyline::Editor<ChatHelper, FileHistory>;

/// Completion and validation, reading names from the shared session.
pub struct ChatHelper {
    session: Shared,
}

/// Commands whose argument is a person.
const TAKES_PERSON: &[&str] = &["/history", "/lookup", "/remove"];

/// Help topics besides the commands.
const TOPICS: &[&str] = &["send", "address", "relays", "state"];

impl ChatHelper {
    /// Words that can stand for a person: names (and `@name`) and the
    /// addresses of everyone we exchanged messages with.
    fn people(&self, word: &str) -> Vec<String> {
        let s = self.session.lock();
        let (at, bare) = match word.strip_prefix('@') {
            Some(rest) => ("@", rest),
            None => ("", word),
        };
        let lower = bare.to_lowercase();
        let mut out: Vec<String> = s
            .book
            .entries()
            .filter(|e| e.name.to_lowercase().starts_with(&lower))
            .map(|e| format!("{at}{}", e.name))
            .collect();
        if at.is_empty() {
            out.extend(
                s.log
                    .peers()
                    .into_iter()
                    .map(|a| a.to_string())
                    .filter(|a| a.starts_with(&lower))
                    .take(20),
            );
        }
        out
    }

    /// Candidates for the word ending at `pos`.
    pub fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| {
            i + before[i..].chars().next().map_or(1, char::len_utf8)
        });
        let word = &before[start..];
        let earlier: Vec<&str> = before[..start].split_whitespace().collect();
        let list = match earlier.as_slice() {
            [] if word.starts_with('/') => COMMANDS
                .iter()
                .filter(|c| c.starts_with(word))
                .map(|c| c.to_string())
                .collect(),
            [] => self.people(word),
            ["/help"] | ["/?"] => COMMANDS
                .iter()
                .map(|c| &c[1..])
                .chain(TOPICS.iter().copied())
                .filter(|c| c.starts_with(word))
                .map(str::to_string)
                .collect(),
            [cmd] if TAKES_PERSON.contains(cmd) => self.people(word),
            _ => Vec::new(),
        };
        (start, list)
    }
}

impl Completer for ChatHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, list) = self.candidates(line, pos);
        let unique = list.len() == 1;
        Ok((
            start,
            list.into_iter()
                .map(|c| Pair {
                    display: c.clone(),
                    replacement: if unique { format!("{c} ") } else { c },
                })
                .collect(),
        ))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;
}

impl Highlighter for ChatHelper {}

impl Validator for ChatHelper {
    /// A line ending in `\` goes on: Enter adds a newline instead of sending.
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if ctx.input().ends_with('\\') {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl Helper for ChatHelper {}

/// Ctrl-C: clear what is typed; on an empty line, the default (interrupt,
/// which the REPL takes as quit).
struct ClearOrQuit;

impl ConditionalEventHandler for ClearOrQuit {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        if ctx.line().is_empty() {
            None
        } else {
            Some(Cmd::Kill(Movement::WholeBuffer))
        }
    }
}

/// A configured editor; `history` is the typed-line file (loaded if it
/// exists).
pub fn editor(session: Shared, history: Option<&Path>) -> rustyline::Result<Editor> {
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_LINES)?
        .history_ignore_dups(true)?
        .history_ignore_space(true)
        .auto_add_history(false)
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut e = Editor::with_config(config)?;
    e.set_helper(Some(ChatHelper { session }));
    e.bind_sequence(
        KeyEvent::ctrl('C'),
        EventHandler::Conditional(Box::new(ClearOrQuit)),
    );
    if let Some(path) = history {
        for line in read_history(path) {
            let _ = e.add_history_entry(line);
        }
    }
    Ok(e)
}

/// The history file's lines, the newest [`HISTORY_LINES`]; rewritten
/// when it grew past twice that.
fn read_history(path: &Path) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(err) => {
            if path.exists() {
                tracing::warn!(error = %err, path = %path.display(), "could not read line history");
            }
            return Vec::new();
        }
    };
    let all: Vec<String> = text.lines().map(str::to_string).collect();
    let keep = all[all.len().saturating_sub(HISTORY_LINES)..].to_vec();
    if all.len() > 2 * HISTORY_LINES {
        let mut out = keep.join("\n");
        out.push('\n');
        if let Err(err) = crate::book::write_atomically(path, out.as_bytes()) {
            tracing::warn!(error = %err, "could not shorten line history");
        }
    }
    keep
}

/// Whether a typed line may be written to the history file: commands
/// that carry no message text.
pub fn keep_on_disk(line: &str) -> bool {
    !line.contains('\n')
        && matches!(
            super::parse::parse(line),
            Ok(input) if !matches!(input, Input::Send { .. } | Input::Reply(_) | Input::Nothing)
        )
}

/// Remember `line` for up-arrow, and in the history file if it carries
/// no message text.
pub fn remember(e: &mut Editor, line: &str, file: Option<&PathBuf>) {
    if line.trim().is_empty() {
        return;
    }
    let added = e.add_history_entry(line).unwrap_or(false);
    if let (true, Some(path)) = (added && keep_on_disk(line), file) {
        let write = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, format!("{}\n", line.trim()).as_bytes())
            });
        if let Err(err) = write {
            tracing::warn!(error = %err, "could not save line history");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::book::Book;
    use crate::chatlog::ChatLog;
    use crate::message::MessageId;
    use crate::repl::session::Session;

    #[test]
    fn tab_completes_commands_names_and_addresses() {
        let mut s = Session::new(Book::in_memory(), ChatLog::in_memory(), Default::default());
        s.book.add("bob", Address([0xb0; 20]), None, 0).unwrap();
        s.book.add("Berta", Address([0xbe; 20]), None, 0).unwrap();
        let stranger = Address([0x4a; 20]);
        s.log
            .received(MessageId([1; 20]), stranger, "hi", 0, 0)
            .unwrap();
        let h = ChatHelper {
            session: Shared::new(s),
        };
        assert_eq!(h.candidates("/co", 3), (0, vec!["/contacts".to_string()]));
        assert_eq!(
            h.candidates("/h", 2).1,
            vec!["/history".to_string(), "/held".into(), "/help".into()]
        );
        assert_eq!(
            h.candidates("b", 1).1,
            vec!["Berta".to_string(), "bob".into()]
        );
        assert_eq!(h.candidates("@bo", 3).1, vec!["@bob".to_string()]);
        assert_eq!(h.candidates("4a4a", 4).1, vec![stranger.to_string()]);
        assert_eq!(
            h.candidates("/history be", 11),
            (9, vec!["Berta".to_string()])
        );
        assert_eq!(h.candidates("/help rel", 9).1, vec!["relays".to_string()]);
        // Inside a message nothing is completed.
        assert!(h.candidates("bob hel", 7).1.is_empty());
    }

    #[test]
    fn only_lines_without_message_text_reach_the_history_file() {
        assert!(keep_on_disk("/contacts"));
        assert!(keep_on_disk("/history bob"));
        assert!(!keep_on_disk("bob the secret plan"));
        assert!(!keep_on_disk("/reply the secret plan"));
        assert!(!keep_on_disk("/frob"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.txt");
        let lines: Vec<String> = (0..2 * HISTORY_LINES + 5)
            .map(|i| format!("/lookup {i}"))
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        let kept = read_history(&path);
        assert_eq!(kept.len(), HISTORY_LINES);
        assert_eq!(kept.last(), lines.last());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count(),
            HISTORY_LINES
        );
    }
}
