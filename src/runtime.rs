//! The tokio driver: one UDP socket, one timer, one command channel around
//! the sans-IO [`Node`].
//!
//! Each turn of the loop sends every pending transmit, forwards every event,
//! then waits for the first of: a datagram, the node's next timeout, a
//! command, or shutdown. A burst of datagrams is drained without waiting, but
//! at most [`IO_LOOP_BOUND`] per turn, so timers and commands are never
//! starved by a busy peer.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::address::Address;
use crate::config::MAX_DATAGRAM;
use crate::lookup::LookupResult;
use crate::message::MessageId;
use crate::node::{Event, Node};
use crate::wire::Contact;

/// Datagrams handled per loop turn before timers and commands are served.
pub const IO_LOOP_BOUND: usize = 64;

/// Socket buffer size asked of the kernel, so bursts of replies to a lookup
/// fan-out are not dropped before we read them.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// What the user asks of the running node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Iterative lookup of an address.
    Lookup(Address),
    /// Send a text message.
    Send {
        /// Recipient.
        to: Address,
        /// The text.
        text: String,
    },
    /// Show the routing table.
    Peers,
    /// Show counters.
    Stats,
    /// Stop the node.
    Quit,
}

/// One routing-table row for `/peers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRow {
    /// Bucket index (159 = farthest half of the address space).
    pub bucket: usize,
    /// The contact.
    pub contact: Contact,
    /// Time since it was last heard from.
    pub last_seen: Duration,
}

/// Counters for `/stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsReport {
    /// Contacts in the routing table.
    pub contacts: usize,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams dropped, by reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// Requests that got no answer.
    pub rpc_timeouts: u64,
    /// Lookups in progress.
    pub lookups: usize,
    /// Messages held for others (and our own undelivered ones).
    pub held_messages: usize,
    /// Acks kept as tombstones.
    pub held_acks: usize,
    /// Our messages not yet delivered.
    pub outbox: usize,
    /// Received messages remembered.
    pub inbox: usize,
    /// Message transfers (`Store` requests) sent.
    pub stores_sent: u64,
    /// Ack transfers sent.
    pub acks_sent: u64,
}

/// Everything the runtime reports to the user interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The socket is bound.
    Ready {
        /// This node's address.
        address: Address,
        /// The bound UDP endpoint.
        listen: SocketAddr,
    },
    /// Started without bootstrap addresses: this is the first node.
    Alone {
        /// The bound UDP endpoint others can join through.
        listen: SocketAddr,
    },
    /// Bootstrap worked.
    Joined {
        /// Contacts in the routing table.
        contacts: usize,
    },
    /// No bootstrap address answered.
    BootstrapFailed {
        /// Addresses tried.
        addrs: Vec<SocketAddr>,
        /// Datagrams sent to each.
        tries: u32,
        /// Next round in.
        retry_in: Duration,
    },
    /// A `/lookup` finished.
    Lookup(LookupResult),
    /// Answer to `/peers`.
    Peers(Vec<PeerRow>),
    /// Our message's first copies are placed.
    Sent {
        /// Message id.
        id: MessageId,
        /// Recipient.
        to: Address,
        /// Relays holding it.
        relays: usize,
    },
    /// A message arrived.
    Message {
        /// Message id.
        id: MessageId,
        /// Sender.
        from: Address,
        /// Text (invalid UTF-8 replaced).
        text: String,
        /// Creation time, ms since the Unix epoch.
        created_at_ms: u64,
    },
    /// The recipient's signed ack arrived.
    Delivered {
        /// Message id.
        id: MessageId,
        /// Recipient.
        to: Address,
        /// When the ack arrived, ms since the Unix epoch.
        at_ms: u64,
    },
    /// Our message expired undelivered.
    Expired {
        /// Message id.
        id: MessageId,
    },
    /// Answer to `/stats`.
    Stats(StatsReport),
    /// Answer to `/whoami`.
    WhoAmI {
        /// This node's address.
        address: Address,
        /// The bound UDP endpoint.
        listen: SocketAddr,
    },
    /// Answer to `/help`.
    Help,
    /// Information for the user that is neither an error nor an event.
    Notice(String),
    /// Something the user asked for failed.
    Error(String),
    /// The node stopped.
    Stopped,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested endpoint.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// Bind a UDP socket with enlarged kernel buffers.
pub fn bind(addr: SocketAddr) -> Result<UdpSocket, RuntimeError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| RuntimeError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    // Best effort: the kernel may cap these.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    UdpSocket::from_std(socket.into()).map_err(err)
}

/// Drive `node` on `socket`, joining through `bootstrap`, until
/// [`Command::Quit`] or SIGINT/SIGTERM. The command channel closing (end of
/// input) does not stop the node.
pub async fn run(
    mut node: Node,
    socket: UdpSocket,
    bootstrap: Vec<SocketAddr>,
    mut commands: mpsc::Receiver<Command>,
    out: mpsc::UnboundedSender<Output>,
) -> io::Result<()> {
    let listen = socket.local_addr()?;
    let _ = out.send(Output::Ready {
        address: node.address(),
        listen,
    });
    if bootstrap.is_empty() {
        let _ = out.send(Output::Alone { listen });
    } else {
        node.bootstrap(Instant::now(), bootstrap);
    }
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut commands_open = true;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        flush(&mut node, &socket, &out).await;
        let deadline = node
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                receive(&mut node, received, &buf);
                // Drain what is already queued, up to the loop bound.
                for _ in 1..IO_LOOP_BOUND {
                    match socket.try_recv_from(&mut buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        received => receive(&mut node, received, &buf),
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                node.handle_timeout(Instant::now());
            }
            command = commands.recv(), if commands_open => match command {
                Some(Command::Quit) => break,
                Some(c) => execute(&mut node, c, &out),
                // Input ended: keep serving the network until a signal.
                None => commands_open = false,
            },
            _ = &mut shutdown => break,
        }
    }
    if !node.shutdown() {
        let _ = out.send(Output::Error("could not save state on exit".into()));
    }
    flush(&mut node, &socket, &out).await;
    let _ = out.send(Output::Stopped);
    Ok(())
}

fn receive(node: &mut Node, received: io::Result<(usize, SocketAddr)>, buf: &[u8]) {
    match received {
        // A datagram longer than the buffer is truncated to MAX_DATAGRAM + 1
        // bytes, which the node rejects as oversize.
        Ok((n, from)) => node.handle_datagram(Instant::now(), from, &buf[..n]),
        // ICMP errors surface here on some systems; they are not fatal.
        Err(e) => debug!(error = %e, "recv failed"),
    }
}

async fn flush(node: &mut Node, socket: &UdpSocket, out: &mpsc::UnboundedSender<Output>) {
    while let Some(t) = node.poll_transmit() {
        if let Err(e) = socket.send_to(&t.payload, t.to).await {
            debug!(to = %t.to, error = %e, "send failed");
        }
    }
    while let Some(event) = node.poll_event() {
        let output = match event {
            Event::Joined { contacts } => Output::Joined { contacts },
            Event::BootstrapFailed {
                addrs,
                tries,
                retry_in,
            } => Output::BootstrapFailed {
                addrs,
                tries,
                retry_in,
            },
            Event::LookupDone { result, .. } => Output::Lookup(result),
            Event::MessageSent { id, to, relays } => Output::Sent { id, to, relays },
            Event::MessageReceived {
                id,
                from,
                body,
                created_at_ms,
            } => Output::Message {
                id,
                from,
                text: String::from_utf8_lossy(&body).into_owned(),
                created_at_ms,
            },
            Event::Delivered { id, to } => Output::Delivered {
                id,
                to,
                at_ms: unix_ms(),
            },
            Event::MessageExpired { id } => Output::Expired { id },
        };
        if out.send(output).is_err() {
            warn!("user interface is gone");
        }
    }
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn execute(node: &mut Node, command: Command, out: &mpsc::UnboundedSender<Output>) {
    let now = Instant::now();
    let output = match command {
        Command::Send { to, text } => match node.send(now, to, bytes::Bytes::from(text)) {
            Ok(_) => return,
            Err(e) => Output::Error(e.to_string()),
        },
        Command::Lookup(target) => match node.lookup(now, target) {
            Ok(_) => return,
            Err(e) => Output::Error(e.to_string()),
        },
        Command::Peers => Output::Peers(
            node.table()
                .buckets()
                .flat_map(|(bucket, b)| {
                    b.entries().iter().map(move |e| PeerRow {
                        bucket,
                        contact: e.contact,
                        last_seen: now.saturating_duration_since(e.last_seen),
                    })
                })
                .collect(),
        ),
        Command::Stats => {
            let s = node.stats();
            Output::Stats(StatsReport {
                contacts: node.table().len(),
                datagrams_in: s.datagrams_in,
                datagrams_out: s.datagrams_out,
                dropped: s.dropped.iter().map(|(k, v)| (*k, *v)).collect(),
                rpc_timeouts: s.rpc_timeouts,
                lookups: node.lookups_running(),
                held_messages: node.held_count(),
                held_acks: node.tombstone_count(),
                outbox: node.outbox_pending(),
                inbox: node.inbox_count(),
                stores_sent: s.stores_sent,
                acks_sent: s.acks_sent,
            })
        }
        Command::Quit => return,
    };
    let _ = out.send(output);
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
