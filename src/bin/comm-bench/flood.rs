//! The request flood shared by `comm-bench findnode` and
//! `bench/dht-compare` (which includes this file), so that comm and
//! mainline face exactly the same load: one socket keeps a window of
//! requests in flight, sending and receiving up to 64 datagrams per system
//! call (`sendmmsg`, `recvmmsg`), so that on a machine with two cores the
//! generator stays cheaper per request than the node it measures.
//! Depends on std and libc only.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Datagrams per system call.
const BATCH: usize = 64;

/// Room for one reply (comm's are at most 1,232 bytes, mainline's 2,048).
const SLOT: usize = 2048;

/// What one sender counted.
#[derive(Default, Clone, Copy, Debug)]
pub struct Counts {
    /// Requests sent.
    pub sent: u64,
    /// Replies received.
    pub replies: u64,
    /// Replies given to `check` (one in 1,024).
    pub sampled: u64,
    /// Sum of what `check` returned for them.
    pub sampled_value: u64,
}

fn sockaddr(to: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = to.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from(*to.ip()).to_be(),
    };
    sa
}

/// `sendmmsg`/`recvmmsg` headers, built once and reused.
struct Batch {
    iov: Box<[libc::iovec; BATCH]>,
    msgs: Box<[libc::mmsghdr; BATCH]>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            iov: Box::new(
                [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; BATCH],
            ),
            // SAFETY: mmsghdr is plain data; all-zero is a valid value.
            msgs: Box::new(unsafe { std::mem::zeroed() }),
        }
    }
}

/// Send `count` of `packets` from `*next` on (wrapping) to `to` in one
/// call. Returns how many the kernel took.
fn send_batch(
    fd: i32,
    b: &mut Batch,
    to: &libc::sockaddr_in,
    packets: &[Vec<u8>],
    next: &mut usize,
    count: usize,
) -> usize {
    let count = count.min(BATCH);
    for i in 0..count {
        let p = &packets[(*next + i) % packets.len()];
        b.iov[i] = libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        };
        let h = &mut b.msgs[i].msg_hdr;
        h.msg_name = to as *const libc::sockaddr_in as *mut libc::c_void;
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_iov = &mut b.iov[i];
        h.msg_iovlen = 1;
    }
    // SAFETY: the first `count` headers point at live iovecs over live
    // packets and at `to`; the kernel only reads them.
    let n = unsafe { libc::sendmmsg(fd, b.msgs.as_mut_ptr(), count as libc::c_uint, 0) };
    let n = if n < 0 { 0 } else { n as usize };
    *next = (*next + n) % packets.len();
    n
}

/// Receive up to `BATCH` datagrams into `bufs`, waiting (up to the
/// socket's read timeout) for the first only. Returns how many; their
/// lengths are in `b.msgs[i].msg_len`.
fn recv_batch(fd: i32, b: &mut Batch, bufs: &mut [[u8; SLOT]]) -> usize {
    for (i, buf) in bufs.iter_mut().enumerate().take(BATCH) {
        b.iov[i] = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: SLOT,
        };
        let h = &mut b.msgs[i].msg_hdr;
        h.msg_name = std::ptr::null_mut();
        h.msg_namelen = 0;
        h.msg_iov = &mut b.iov[i];
        h.msg_iovlen = 1;
    }
    let count = bufs.len().min(BATCH);
    // SAFETY: the first `count` headers point at live iovecs over live
    // buffers of SLOT bytes; no source address or control data is asked for.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            b.msgs.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if n <= 0 {
        0
    } else {
        n as usize
    }
}

/// Keep `window` requests from `packets` (cycled) in flight on `socket` to
/// `to` until `end`, then wait up to `drain` for the last answers. When
/// nothing arrives for 20 ms, whatever was in flight counts as lost. One
/// reply in 1,024 is passed to `check`, whose results are summed (comm-bench
/// checks that replies really carry contacts).
pub fn flood(
    socket: &UdpSocket,
    to: SocketAddr,
    packets: &[Vec<u8>],
    window: usize,
    end: Instant,
    drain: Duration,
    check: &dyn Fn(&[u8]) -> Option<u64>,
) -> Counts {
    let mut c = Counts::default();
    let SocketAddr::V4(to) = to else {
        return c;
    };
    let to = sockaddr(to);
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; SLOT]; BATCH];
    let (mut sb, mut rb) = (Batch::new(), Batch::new());
    let mut inflight = 0usize;
    let mut next = 0usize;
    let count = |c: &mut Counts, n: usize, bufs: &[[u8; SLOT]], rb: &Batch| {
        for (buf, m) in bufs.iter().zip(rb.msgs.iter()).take(n) {
            c.replies += 1;
            if c.replies % 1024 == 1 {
                let len = (m.msg_len as usize).min(SLOT);
                if let Some(v) = check(&buf[..len]) {
                    c.sampled += 1;
                    c.sampled_value += v;
                }
            }
        }
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(20)));
    while Instant::now() < end {
        while inflight < window {
            let n = send_batch(fd, &mut sb, &to, packets, &mut next, window - inflight);
            if n == 0 {
                break;
            }
            c.sent += n as u64;
            inflight += n;
        }
        let n = recv_batch(fd, &mut rb, &mut bufs);
        if n == 0 {
            // Nothing for 20 ms: what was in flight is lost.
            inflight = 0;
            continue;
        }
        count(&mut c, n, &bufs, &rb);
        inflight = inflight.saturating_sub(n);
    }
    let _ = socket.set_read_timeout(Some(drain));
    while inflight > 0 {
        let n = recv_batch(fd, &mut rb, &mut bufs);
        if n == 0 {
            break;
        }
        count(&mut c, n, &bufs, &rb);
        inflight = inflight.saturating_sub(n);
    }
    c
}

/// Seconds of CPU (user + system, all threads) process `pid` has used.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name may hold spaces; the fields after it do not.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let tick = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| "unreadable /proc stat".to_string())
    };
    let ticks = tick(11)? + tick(12)?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// One result row, printed as a table line and as JSON.
pub struct Row {
    /// Which node.
    pub name: String,
    /// Contacts in its routing table when the flood started.
    pub contacts: u64,
    /// Requests sent.
    pub sent: u64,
    /// Replies received.
    pub replies: u64,
    /// CPU seconds of the node process during the flood.
    pub cpu: f64,
    /// Wall seconds of the flood (with the final drain).
    pub wall: f64,
}

impl Row {
    /// The Markdown table header matching [`Row::line`].
    pub fn header() -> &'static str {
        "| node | contacts | requests sent | replies | node CPU s | replies per CPU-s | wall s |\n|---|---|---|---|---|---|---|"
    }

    /// One Markdown table line.
    pub fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {:.2} | {:.0} | {:.2} |",
            self.name,
            self.contacts,
            self.sent,
            self.replies,
            self.cpu,
            self.replies as f64 / self.cpu.max(1e-9),
            self.wall
        )
    }
}
