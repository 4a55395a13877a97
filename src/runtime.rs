//! The tokio driver: one UDP socket, one timer, one command channel and the
//! durable store around the sans-IO [`Node`].
//!
//! Each turn of the loop lets the front end take as many received messages
//! as its channel has room for, commits every pending write batch in one
//! transaction (group commit) and reports it durable, which releases the
//! replies and events that waited for it, sends every transmit and forwards
//! every event; then it waits for the first of: datagrams (a burst is
//! drained, at most [`IO_LOOP_BOUND`] per turn, so timers and commands are
//! never starved), the node's next timeout, a command, room in the output
//! channel, or shutdown. The wall clock is read with every input, so a
//! suspended laptop or a stepped clock does not skew message times.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::control::{Command, Me, Output, PeerRow, StatsReport};
use crate::event::Event;
use crate::node::{unix_ms, Node};
use crate::store::{self, Store};
use crate::wire::MAX_DATAGRAM;

/// Datagrams handled per loop turn before timers and commands are served.
pub const IO_LOOP_BOUND: usize = 64;

/// Socket buffer size asked of the kernel, so bursts of replies to a lookup
/// fan-out are not dropped before we read them.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Capacity of the channel to the front end. Received messages are handed
/// out only as it has room, so a front end that stops reading holds back at
/// most this many; the rest wait, stored, in the node's inbox.
pub const OUTPUT_CHANNEL: usize = 64;

/// Status outputs (not messages) kept while the front end is not reading;
/// beyond it the node's own event queue holds them.
const BACKLOG: usize = 256;

/// After the store fails, wait this long before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);

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
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `[::]` serves IPv4 peers too (as ::ffff:a.b.c.d), whatever the
        // system default; best effort where the OS forbids it.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into()).map_err(err)?;
    UdpSocket::from_std(socket.into()).map_err(err)
}

/// The destination as the socket takes it: an IPv6 socket reaches IPv4
/// peers at their IPv4-mapped address (the node itself only deals in
/// canonical IPv4 addresses).
pub fn socket_addr(to: SocketAddr, ipv6_socket: bool) -> SocketAddr {
    match to {
        SocketAddr::V4(v4) if ipv6_socket => {
            SocketAddr::new(std::net::IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    }
}

/// Datagrams handed to the kernel per `sendmmsg` call (Linux).
pub const SEND_BATCH: usize = 64;

/// Send the first [`SEND_BATCH`] of `batch` (at least one) in one call.
/// Returns how many the kernel took; an error is the first datagram's.
#[cfg(target_os = "linux")]
fn sendmmsg(
    fd: std::os::fd::RawFd,
    ipv6: bool,
    batch: &[crate::node::Transmit],
) -> io::Result<usize> {
    use std::mem::MaybeUninit;
    let n = batch.len().min(SEND_BATCH);
    let mut names: [MaybeUninit<socket2::SockAddr>; SEND_BATCH] =
        [const { MaybeUninit::uninit() }; SEND_BATCH];
    let mut iov: [MaybeUninit<libc::iovec>; SEND_BATCH] =
        [const { MaybeUninit::uninit() }; SEND_BATCH];
    let mut msgs: [MaybeUninit<libc::mmsghdr>; SEND_BATCH] =
        [const { MaybeUninit::uninit() }; SEND_BATCH];
    for (i, t) in batch.iter().take(n).enumerate() {
        let name = names[i].write(socket2::SockAddr::from(socket_addr(t.to, ipv6)));
        let (name_ptr, name_len) = (name.as_ptr(), name.len());
        let v = iov[i].write(libc::iovec {
            iov_base: t.payload.as_ptr() as *mut libc::c_void,
            iov_len: t.payload.len(),
        });
        // SAFETY: mmsghdr is plain data; all-zero is a valid value, and the
        // fields the kernel reads are set below.
        let m = msgs[i].write(unsafe { std::mem::zeroed() });
        m.msg_hdr.msg_name = name_ptr as *mut libc::c_void;
        m.msg_hdr.msg_namelen = name_len;
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `n` headers are initialised and point at addresses,
    // iovecs and payloads that live until the call returns; the kernel
    // only reads them (and writes each header's msg_len).
    let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr().cast(), n as libc::c_uint, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// The driver's state between turns.
struct Driver {
    node: Node,
    socket: UdpSocket,
    store: Box<dyn Store>,
    out: mpsc::Sender<Output>,
    backlog: VecDeque<Output>,
    store_retry: Option<Instant>,
    store_failed: bool,
    /// Transmits being sent (kept to reuse its allocation).
    batch: Vec<crate::node::Transmit>,
    /// The socket is IPv6 (IPv4 peers are reached IPv4-mapped).
    ipv6: bool,
}

/// Drive `node` on `socket` with `store`, joining through `bootstrap`, until
/// [`Command::Quit`] or SIGINT/SIGTERM. The command channel closing (end of
/// input) does not stop the node.
pub async fn run(
    node: Node,
    socket: UdpSocket,
    store: Box<dyn Store>,
    bootstrap: Vec<SocketAddr>,
    mut commands: mpsc::Receiver<Command>,
    out: mpsc::Sender<Output>,
) -> io::Result<()> {
    let listen = socket.local_addr()?;
    let mut node = node;
    node.set_local_addr(listen);
    let mut d = Driver {
        node,
        socket,
        store,
        out,
        backlog: VecDeque::new(),
        store_retry: None,
        store_failed: false,
        batch: Vec::with_capacity(SEND_BATCH),
        ipv6: listen.is_ipv6(),
    };
    d.output(Output::Ready(Me {
        address: d.node.address(),
        listen,
        key: d.node.public_key(),
    }));
    if bootstrap.is_empty() {
        d.output(Output::Alone { listen });
    } else {
        d.node
            .bootstrap(Instant::now(), SystemTime::now(), bootstrap);
    }
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut commands_open = true;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        d.turn().await;
        let deadline = [d.node.poll_timeout(), d.store_retry]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let waiting_for_room = !d.backlog.is_empty() || d.node.relay().unshown_count() > 0;
        let out = d.out.clone();
        tokio::select! {
            received = d.socket.recv_from(&mut buf) => {
                d.receive(received, &buf);
                // Drain what is already queued, up to the loop bound.
                for _ in 1..IO_LOOP_BOUND {
                    match d.socket.try_recv_from(&mut buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        received => d.receive(received, &buf),
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                d.node.handle_timeout(Instant::now(), SystemTime::now());
            }
            command = commands.recv(), if commands_open => match command {
                Some(Command::Quit) => break,
                Some(c) => d.execute(c),
                // Input ended: keep serving the network until a signal.
                None => commands_open = false,
            },
            permit = out.reserve(), if waiting_for_room => {
                // Room again: hand over the oldest waiting output.
                if let (Ok(permit), Some(o)) = (permit, d.backlog.pop_front()) {
                    permit.send(o);
                }
            }
            _ = &mut shutdown => break,
        }
    }
    d.node.shutdown();
    d.turn().await;
    if d.store_failed {
        d.output(Output::Error("could not save state on exit".into()));
    }
    // Whatever the front end has not taken yet goes out before we stop.
    for o in std::mem::take(&mut d.backlog) {
        let _ = d.out.send(o).await;
    }
    let _ = d.out.send(Output::Stopped).await;
    Ok(())
}

impl Driver {
    /// Everything between two waits: messages to the front end as it has
    /// room, group commit, transmits, events.
    async fn turn(&mut self) {
        let room = self.out.capacity().saturating_sub(self.backlog.len());
        self.node.set_message_credit(room);
        self.commit();
        self.send_transmits().await;
        while self.backlog.len() < BACKLOG {
            let Some(event) = self.node.poll_event() else {
                break;
            };
            let o = output_of(event);
            self.output(o);
        }
    }

    /// Send every pending transmit. On Linux up to [`SEND_BATCH`]
    /// datagrams go to the kernel in one `sendmmsg` call; a datagram the
    /// kernel refuses is logged and skipped, as a refused `send_to` is.
    #[cfg(target_os = "linux")]
    async fn send_transmits(&mut self) {
        use std::os::fd::AsRawFd;
        let mut batch = std::mem::take(&mut self.batch);
        let fd = self.socket.as_raw_fd();
        let ipv6 = self.ipv6;
        loop {
            batch.clear();
            while batch.len() < SEND_BATCH {
                match self.node.poll_transmit() {
                    Some(t) => batch.push(t),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let mut sent = 0;
            while sent < batch.len() {
                let rest = &batch[sent..];
                match self
                    .socket
                    .try_io(tokio::io::Interest::WRITABLE, || sendmmsg(fd, ipv6, rest))
                {
                    Ok(n) => sent += n.max(1),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Err(e) = self.socket.writable().await {
                            debug!(error = %e, "socket not writable");
                            sent = batch.len();
                        }
                    }
                    Err(e) => {
                        debug!(to = %rest[0].to, error = %e, "send failed");
                        sent += 1;
                    }
                }
            }
        }
        self.batch = batch;
    }

    /// Send every pending transmit, one system call each.
    #[cfg(not(target_os = "linux"))]
    async fn send_transmits(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            let to = socket_addr(t.to, self.ipv6);
            if let Err(e) = self.socket.send_to(&t.payload, to).await {
                debug!(to = %t.to, error = %e, "send failed");
            }
        }
    }

    /// One durable transaction for everything the last inputs changed.
    fn commit(&mut self) {
        if self.store_retry.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.store_retry = None;
        match store::commit(&mut self.node, self.store.as_mut()) {
            Ok(_) => {
                if self.store_failed {
                    self.store_failed = false;
                    self.output(Output::Notice("saving works again".into()));
                }
            }
            Err(e) => {
                warn!(error = %e, "could not save state");
                self.store_retry = Some(Instant::now() + STORE_RETRY);
                if !self.store_failed {
                    self.store_failed = true;
                    self.output(Output::Error(format!(
                        "could not save ({e}); nothing new is confirmed until saving works again"
                    )));
                }
            }
        }
    }

    /// Queue an output for the front end without ever blocking the node.
    fn output(&mut self, o: Output) {
        if self.backlog.is_empty() {
            match self.out.try_send(o) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(o)) => self.backlog.push_back(o),
                Err(mpsc::error::TrySendError::Closed(_)) => warn!("user interface is gone"),
            }
        } else {
            self.backlog.push_back(o);
        }
        while let Some(o) = self.backlog.pop_front() {
            match self.out.try_send(o) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(o)) => {
                    self.backlog.push_front(o);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }

    fn receive(&mut self, received: io::Result<(usize, SocketAddr)>, buf: &[u8]) {
        match received {
            // A datagram longer than the buffer is truncated to MAX_DATAGRAM + 1
            // bytes, which the node rejects as oversize.
            Ok((n, from)) => {
                self.node
                    .handle_datagram(Instant::now(), SystemTime::now(), from, &buf[..n])
            }
            // ICMP errors surface here on some systems; they are not fatal.
            Err(e) => debug!(error = %e, "recv failed"),
        }
    }

    fn execute(&mut self, command: Command) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let output = match command {
            Command::Send { to, key, text } => {
                if let Some(key) = key {
                    self.node.learn_key(now, wall, *key);
                }
                match self
                    .node
                    .send(now, wall, to, bytes::Bytes::from(text.clone()))
                {
                    // Shown before the node's own events about it, which
                    // wait for this turn's durable write.
                    Ok(id) => Output::Accepted {
                        id,
                        to,
                        text,
                        at_ms: unix_ms(wall),
                    },
                    Err(e) => Output::Error(e.to_string()),
                }
            }
            Command::LearnKey { key, notice } => {
                self.node.learn_key(now, wall, *key);
                Output::Notice(notice)
            }
            Command::Lookup(target) => match self.node.lookup(now, wall, target) {
                Ok(_) => return,
                Err(e) => Output::Error(e.to_string()),
            },
            Command::Peers => Output::Peers(
                self.node
                    .peer_rows(now)
                    .into_iter()
                    .map(|r| PeerRow {
                        bucket: r.bucket,
                        contact: r.contact,
                        last_seen: r.last_seen,
                        rtt: r.rtt,
                        failures: r.failures,
                    })
                    .collect(),
            ),
            Command::Stats => Output::Stats(stats(&self.node)),
            Command::Held => Output::Held(self.node.held_report(now, wall)),
            Command::Acks => Output::Acks(self.node.tombstones_report(wall)),
            Command::Cancel(id) => match self.node.cancel(now, wall, id) {
                Ok(report) => Output::Cancelled(report),
                Err(e) => Output::Error(e.to_string()),
            },
            Command::Quit => return,
        };
        self.output(output);
    }
}

/// The `/stats` report of `node`.
pub fn stats(node: &Node) -> StatsReport {
    let s = node.stats();
    let r = node.relay();
    let mut dropped: Vec<(&'static str, u64)> =
        s.dropped.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    dropped.sort();
    StatsReport {
        contacts: node.table().len(),
        datagrams_in: s.datagrams_in,
        datagrams_out: s.datagrams_out,
        dropped,
        rpc_timeouts: s.rpc_timeouts,
        requests: node.requests(),
        lookups: node.lookups_running(),
        held_messages: r.held_count(),
        held_acks: r.tombstone_count(),
        routed_acks: r.routing_acks(),
        outbox: r.outbox_pending(),
        inbox: r.inbox_count(),
        unshown: r.unshown_count(),
        maybe_repeats: r.maybe_repeats(),
        stores_sent: s.stores_sent,
        acks_sent: s.acks_sent,
        write_batches: s.write_batches,
        rpc_answered: s.rpc_answered(),
        rpc_latency: match s.rpc_latency_percentiles(&[50.0, 90.0, 99.0]).as_slice() {
            [a, b, c] => [*a, *b, *c],
            _ => [None; 3],
        },
    }
}

fn output_of(event: Event) -> Output {
    match event {
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
        Event::MessageQueued {
            id,
            to,
            expires_at_ms,
        } => Output::Queued {
            id,
            to,
            expires_at_ms,
        },
        Event::KeyNotFound {
            to,
            queued,
            retry_in,
        } => Output::KeyNotFound {
            to,
            queued,
            retry_in,
        },
        Event::MessageSent {
            id,
            wire_id,
            to,
            relays,
            direct,
            no_contacts,
            expires_at_ms,
        } => Output::Sent {
            id,
            wire_id,
            to,
            relays,
            direct,
            no_contacts,
            expires_at_ms,
        },
        Event::CatchUp { count } => Output::CatchUp { count },
        Event::SameIdentityElsewhere { endpoint } => Output::SameIdentity { endpoint },
        Event::MessageReceived {
            id,
            from,
            body,
            created_at_ms,
            maybe_repeat,
        } => Output::Message {
            id,
            from,
            text: String::from_utf8_lossy(&body).into_owned(),
            created_at_ms,
            maybe_repeat,
        },
        Event::Delivered { id, to } => Output::Delivered {
            id,
            to,
            at_ms: unix_ms(SystemTime::now()),
        },
        Event::MessageExpired { id } => Output::Expired { id },
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_peers_are_mapped_only_for_an_ipv6_socket() {
        let v4: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:4000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(socket_addr(v4, true), mapped);
        assert_eq!(socket_addr(v4, false), v4);
        assert_eq!(socket_addr(v6, true), v6);
    }
}
