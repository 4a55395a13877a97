//! The `comm` command: derive the identity, bind the socket, start the
//! runtime, and hand the terminal (or stdin) to the REPL.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rand::RngCore;
use tokio::sync::mpsc;

use comm::book::Book;
use comm::chatlog::ChatLog;
use comm::control::Output;
use comm::identity::{Identity, KDF_ITERATIONS, KDF_MEMORY_KIB};
use comm::repl::render::Paint;
use comm::repl::{self, Format, Session, Shared};
use comm::runtime;
use comm::store::shown::{absorb, FileShownLog};
use comm::store::{RedbStore, Store, StoreError};
use comm::{Config, Node};

/// A serverless, delay-tolerant messenger on a Kademlia overlay over UDP.
///
/// Your address is derived from SECRET (Argon2id, then Ed25519): the same
/// secret gives the same address anywhere. Give SECRET as `-` to type it at
/// a prompt that does not echo it, or leave it out and set COMM_SECRET, so
/// it stays out of `ps` and your shell history. Type `/help` at the prompt.
#[derive(Parser, Debug)]
#[command(
    name = "comm",
    version,
    override_usage = "comm [OPTIONS] SECRET LISTEN [BOOTSTRAP]...\n       comm [OPTIONS] --key-file PATH LISTEN [BOOTSTRAP]..."
)]
struct Cli {
    /// SECRET your identity is derived from (`-`: ask for it; omit it with
    /// --key-file or when COMM_SECRET is set), then the UDP address to
    /// LISTEN on (e.g. 0.0.0.0:4000), then BOOTSTRAP nodes as HOST:PORT to
    /// join through.
    #[arg(value_name = "ARGS", required = true, num_args = 1..)]
    args: Vec<String>,

    /// Load the Ed25519 key from PATH (64 hex chars) instead of deriving it
    /// from SECRET; the file is created with a random key if missing.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,

    /// Write one JSON object per line to stdout and read commands from stdin.
    #[arg(long)]
    json: bool,

    /// Count each loopback port as a network of its own for the sybil
    /// limits (they are off for loopback otherwise), to test the limits
    /// with processes on one machine.
    #[arg(long)]
    loopback_per_port: bool,

    /// Change a limit, e.g. `--set max_inbox=100` (repeatable; for testing
    /// and for nodes with little memory; see protocol.md §12 for each).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,

    /// Where held messages, outbox, inbox, acks and contacts are kept
    /// [default: <data dir>/comm/<address>, e.g. ~/.local/share/comm/…].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn resolve(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("{text}: {e} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("{text}: no address found"))
}

/// Where the secret comes from: the first argument; `-` asks for it
/// without echo (or reads the first line of stdin when it is not a
/// terminal); no argument that could be a secret (the first one is the
/// LISTEN address) takes COMM_SECRET.
fn secret(args: &mut std::iter::Peekable<std::vec::IntoIter<String>>) -> Result<String, String> {
    let from_env = std::env::var("COMM_SECRET").ok().filter(|s| !s.is_empty());
    let first_is_listen = args.peek().is_some_and(|a| a.parse::<SocketAddr>().is_ok());
    let secret = match (from_env, first_is_listen) {
        (Some(s), true) => s,
        (None, true) => {
            return Err(
                "missing SECRET: give it first, `-` to type it unseen, or set COMM_SECRET".into(),
            )
        }
        (_, false) => match args.next().ok_or("missing SECRET")?.as_str() {
            "-" => ask_secret()?,
            s => s.to_string(),
        },
    };
    if secret.is_empty() {
        return Err("SECRET must not be empty".into());
    }
    Ok(secret)
}

/// Ask for the secret on the terminal without echoing it.
fn ask_secret() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        let s = rpassword::prompt_password("secret (not shown): ")
            .map_err(|e| format!("cannot read the secret: {e}"))?;
        Ok(s.trim_end_matches(['\r', '\n']).to_string())
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the secret from stdin: {e}"))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

/// The file naming the identity a data directory belongs to.
const IDENTITY_FILE: &str = "identity";

/// Refuse a data directory made by another identity (a mistyped secret
/// would otherwise take over someone's stored messages); claim an
/// unclaimed one.
fn claim(data_dir: &std::path::Path, identity: &Identity) -> Result<(), String> {
    let path = data_dir.join(IDENTITY_FILE);
    let mine = identity.address().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let owner = text.split_whitespace().next().unwrap_or("");
            if owner != mine {
                return Err(format!(
                    "{} belongs to identity {owner}, and you are {mine}: a mistyped secret gives another identity. \
                     Start with the right secret, or give this identity its own --data-dir.",
                    data_dir.display()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            comm::book::write_atomically(&path, format!("{mine}\n").as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match start(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("comm: {message}");
            ExitCode::FAILURE
        }
    }
}

fn start(cli: Cli) -> Result<(), String> {
    let mut args = cli.args.into_iter().peekable();
    let identity = match &cli.key_file {
        Some(path) => {
            let identity = Identity::from_key_file(path).map_err(|e| e.to_string())?;
            if let Some(warning) = Identity::key_file_warning(path) {
                eprintln!("comm: warning: {warning}");
            }
            identity
        }
        None => {
            let secret = secret(&mut args)?;
            tracing::info!(
                memory_kib = KDF_MEMORY_KIB,
                passes = KDF_ITERATIONS,
                "deriving key"
            );
            Identity::from_secret(&secret).map_err(|e| e.to_string())?
        }
    };
    let listen_text = args
        .next()
        .ok_or("missing LISTEN address, e.g. 0.0.0.0:4000")?;
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|_| format!("LISTEN {listen_text:?} is not IP:PORT, e.g. 0.0.0.0:4000"))?;
    let mut bootstrap = args
        .map(|b| resolve(&b).map_err(|e| format!("BOOTSTRAP {e}")))
        .collect::<Result<Vec<_>, _>>()?;

    let data_dir = match cli.data_dir {
        Some(d) => d,
        None => dirs::data_dir()
            .or_else(|| std::env::current_dir().ok())
            .ok_or("no data directory; pass --data-dir DIR")?
            .join("comm")
            .join(identity.address().to_string()),
    };
    // Only its owner may read what the node keeps (received messages too).
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(&data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    claim(&data_dir, &identity)?;
    let db = data_dir.join("comm.redb");
    if std::fs::metadata(&db).is_ok_and(|m| m.len() == 0) {
        eprintln!(
            "comm: warning: {} is empty (0 bytes): starting with no saved messages or contacts",
            db.display()
        );
    }
    let store = RedbStore::open(&db).map_err(|e| match e {
        StoreError::Damaged(_) => e.to_string(),
        e => format!(
            "cannot open {} ({e}); is another comm running with this data directory?",
            db.display()
        ),
    })?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let _guard = rt.enter();
    let socket = runtime::bind(listen).map_err(|e| e.to_string())?;
    let bound = socket.local_addr().map_err(|e| e.to_string())?;

    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let started = std::time::Instant::now();
    let mut config = Config {
        loopback: if cli.loopback_per_port {
            comm::routing::LoopbackPrefixes::PerPort
        } else {
            comm::routing::LoopbackPrefixes::Exempt
        },
        ..Config::default()
    };
    for setting in &cli.set {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("--set {setting:?}: expected KEY=VALUE"))?;
        config.set(key, value).map_err(|e| format!("--set: {e}"))?;
    }
    let mut node = Node::new(config, identity.clone(), seed, started).map_err(|e| e.to_string())?;
    // Resume held messages and retries, show what was never shown; rejoin
    // through the saved contacts too.
    // Messages shown just before a crash are recorded as shown first.
    let shown_path = data_dir.join("shown.log");
    absorb(&shown_path, &store).map_err(|e| format!("{}: {e}", shown_path.display()))?;
    let snapshot = store
        .load()
        .map_err(|e| format!("cannot read {}: {e}", db.display()))?;
    let saved = node.restore(started, std::time::SystemTime::now(), &snapshot);
    drop(snapshot);
    for addr in saved {
        if !bootstrap.contains(&addr) && addr != bound {
            bootstrap.push(addr);
        }
    }

    let (command_tx, command_rx) = mpsc::channel(64);
    let (output_tx, output_rx) = mpsc::channel(runtime::OUTPUT_CHANNEL);
    let interactive = !cli.json && std::io::stdin().is_terminal();
    let format = if cli.json {
        Format::Json
    } else {
        Format::Human
    };

    let book = Book::open(&data_dir.join("contacts.json")).map_err(|e| e.to_string())?;
    let log = ChatLog::open(
        &data_dir.join("conversations.jsonl"),
        &identity.storage_key(comm::chatlog::KEY_LABEL),
    )
    .map_err(|e| e.to_string())?;
    let paint = if cli.json {
        Paint::default()
    } else {
        Paint::detect()
    };
    let mut session = Session::new(book, log, paint);
    session.data_dir = Some(data_dir.clone());
    let session = Shared::new(session);

    let history = data_dir.join("lines.txt");
    let mut external = None;
    let editor = if interactive {
        let mut editor = repl::editor::editor(session.clone(), Some(&history))
            .map_err(|e| format!("terminal: {e}"))?;
        if let Ok(p) = editor.create_external_printer() {
            external = Some(Box::new(p) as Box<dyn rustyline::ExternalPrinter + Send>);
        }
        Some(editor)
    } else {
        None
    };
    let shown =
        Box::new(FileShownLog::open(&shown_path, store.handle()).map_err(|e| e.to_string())?);
    let printer_session = session.clone();
    let printer = std::thread::spawn(move || {
        repl::print_loop(output_rx, format, external, Some(shown), printer_session)
    });
    let input_outputs = output_tx.clone();
    std::thread::spawn(move || match editor {
        Some(editor) => {
            repl::interactive(editor, Some(history), session, command_tx, input_outputs)
        }
        None => repl::lines(session, command_tx, input_outputs),
    });

    let result = rt.block_on(runtime::run(
        node,
        socket,
        Box::new(store),
        bootstrap,
        command_rx,
        output_tx.clone(),
    ));
    if let Err(e) = &result {
        let _ = output_tx.blocking_send(Output::Error(e.to_string()));
        let _ = output_tx.blocking_send(Output::Stopped);
    }
    let _ = printer.join();
    // The input thread may be blocked reading a terminal or stdin; leaving
    // main ends it.
    result.map_err(|e| e.to_string())
}
