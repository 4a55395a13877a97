//! The real binary in a pseudo-terminal, driven as a person types: a
//! partial line survives a message printed over it, a line pasted in one
//! write is sent at once, contacts are named and written to by name,
//! `/reply` answers, Ctrl-C clears a line and Ctrl-D quits.
//!
//! The other side of the conversation is a second node run with `--json`
//! on pipes. Everything stays on 127.0.0.1 and every wait has a deadline.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, Proc, DEADLINE};
use portable_pty::{native_pty_system, CommandBuilder, PtySize};

/// Terminal output with escape sequences removed.
fn strip_ansi(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters, then one final byte in @..~
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// A `comm` in a pseudo-terminal.
struct Terminal {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    raw: Arc<Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
    // Keeps the terminal open while the child runs.
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

impl Terminal {
    fn start(args: &[&str]) -> Terminal {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 50,
                cols: 200,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pseudo-terminal");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_comm"));
        cmd.arg("--data-dir");
        cmd.arg(dir.path());
        for a in args {
            cmd.arg(a);
        }
        cmd.env("TERM", "xterm-256color");
        cmd.env_remove("NO_COLOR");
        cmd.env("RUST_LOG", "warn");
        let child = pty.slave.spawn_command(cmd).expect("start comm");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("reader");
        let writer = pty.master.take_writer().expect("writer");
        let raw = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&raw);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            child,
            writer,
            raw,
            _dir: dir,
            _master: pty.master,
        }
    }

    fn screen(&self) -> String {
        strip_ansi(&self.raw.lock().unwrap())
    }

    /// Wait until the output after byte `from` of the stripped screen
    /// contains `text`; returns where it ends.
    fn wait_for(&self, from: usize, text: &str) -> usize {
        let end = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if let Some(i) = screen.get(from..).and_then(|s| s.find(text)) {
                return from + i + text.len();
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {text:?}; the terminal shows:\n{}",
                screen.get(from..).unwrap_or(&screen)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Type `text` one key at a time, as a person does.
    fn type_keys(&mut self, text: &str) {
        for b in text.bytes() {
            self.writer.write_all(&[b]).expect("type");
            self.writer.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Write `text` in one write, as a paste without bracketed paste does.
    fn paste(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).expect("paste");
        self.writer.flush().expect("flush");
    }

    fn exited(&mut self) -> Option<bool> {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.success());
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn a_person_chats_by_name_in_a_terminal() {
    let port_a = free_port();
    let listen_a = format!("127.0.0.1:{port_a}");
    let mut alice = Proc::start(&["--json", "alice-terminal-test", &listen_a]);
    let alice_addr = alice.wait_event("ready")["address"]
        .as_str()
        .expect("address")
        .to_string();

    let port_b = free_port();
    let listen_b = format!("127.0.0.1:{port_b}");
    let mut t = Terminal::start(&["bob-terminal-test", &listen_b, &listen_a]);
    let at = t.wait_for(0, "you are ");
    let screen = t.screen();
    let bob_addr: String = screen[at..].chars().take(40).collect();
    assert_eq!(bob_addr.len(), 40, "{screen}");
    let at = t.wait_for(at, "joined the network");
    assert!(
        t.raw.lock().unwrap().windows(7).any(|w| w == b"\x1b[1;36m"),
        "a terminal gets colour"
    );

    // Name a contact with a line pasted in one write: sent at once.
    t.paste(&format!("/add alice {alice_addr}\r"));
    let at = t.wait_for(at, &format!("alice is now {alice_addr}"));

    // A half-typed line survives a message printed over it.
    t.type_keys("alice hel");
    let at = t.wait_for(at, "> alice hel");
    alice.send(&format!("{bob_addr} ping from alice"));
    let at = t.wait_for(at, "] ping from alice");
    let at = t.wait_for(at, "> alice hel");
    t.type_keys("lo there\r");
    let msg = alice.wait_event("message");
    assert_eq!(msg["text"], "hello there", "the typed line arrived whole");
    assert_eq!(msg["from"], bob_addr.as_str());
    let at = t.wait_for(at, "delivered");

    // A stranger's message shows the full address once; /reply answers it.
    alice.send(&format!("{bob_addr} second"));
    let at = t.wait_for(at, "] second");
    t.paste("/reply got it\r");
    let msg = alice.wait_event("message");
    assert_eq!(msg["text"], "got it");

    // A trailing backslash continues the message on the next line.
    t.type_keys("@alice two\\\rlines\r");
    let msg = alice.wait_event("message");
    assert_eq!(msg["text"], "two\nlines");
    let at = t.wait_for(at, "delivered");

    // A bracketed paste of several lines is one message, newlines kept.
    t.paste("alice \x1b[200~pasted one\npasted two\x1b[201~\r");
    let msg = alice.wait_event("message");
    assert_eq!(msg["text"], "pasted one\npasted two");
    let at = t.wait_for(at, "delivered");

    // Two lines pasted in one write (no bracketed paste) are two messages.
    t.paste("alice line A\ralice line B\r");
    assert_eq!(alice.wait_event("message")["text"], "line A");
    assert_eq!(alice.wait_event("message")["text"], "line B");

    // The conversation is there, in order, with states.
    t.paste("/history alice\r");
    let h = t.wait_for(at, "conversation with alice (8 messages)");
    let screen = t.screen();
    let view = &screen[h..];
    let order = [
        "ping from alice",
        "hello there",
        "second",
        "got it",
        "two",
        "pasted one",
    ];
    let mut pos = 0;
    for text in order {
        let i = view[pos..]
            .find(text)
            .unwrap_or_else(|| panic!("{text:?} missing or out of order in:\n{view}"));
        pos += i + text.len();
    }

    // Ctrl-C clears a half-typed line; the node keeps running.
    t.type_keys("alice never sent");
    t.paste("\x03");
    t.type_keys("alice after clear\r");
    let msg = alice.wait_event("message");
    assert_eq!(msg["text"], "after clear", "the cleared text was not sent");
    t.wait_for(h, "after clear");
    // Ctrl-D on an empty line quits cleanly.
    t.paste("\x04");
    assert_eq!(t.exited(), Some(true), "Ctrl-D stops the node");
}
