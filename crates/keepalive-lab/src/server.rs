//! The lab's server: the built-in one (listens with the policy, reads, sends data or
//! heartbeats when told) or a program of the user's (`--server-cmd`), and what it saw.

use crate::clock::now_ns;
use crate::program::{Program, exited};
use keepalive::{Policy, Settings};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the server thread saw.
pub(crate) struct ServerSide {
    pub(crate) settings: Settings,
    pub(crate) error: Option<(f64, std::io::Error)>,
    pub(crate) received: Vec<(f64, Vec<u8>)>,
    pub(crate) heartbeats_sent: usize,
    pub(crate) heartbeats_answered: usize,
    /// When each heartbeat ping was due (it goes out at the loop's next wake-up).
    pub(crate) pings: Vec<f64>,
    /// When the application declared the peer dead: `heartbeat_misses` pings in a row went
    /// unanswered.
    pub(crate) declared_dead: Option<f64>,
    /// The latest the heartbeat loop woke after a ping was due, in seconds.
    pub(crate) loop_late_s: f64,
    /// The connection's retransmission timeout when the unanswered data went out.
    pub(crate) rto_ms: Option<u64>,
    /// A `--server-cmd` program's connection went away at this time (its errno is not ours to
    /// see; the capture tells which).
    pub(crate) program_lost: Option<f64>,
    /// The server's read returned 0: the peer closed its end.
    pub(crate) peer_closed: Option<f64>,
    /// A `--server-cmd` program exited by itself, then, with this status.
    pub(crate) program_exit: Option<(f64, String)>,
}

impl ServerSide {
    pub(crate) fn new(settings: Settings) -> Self {
        ServerSide {
            settings,
            error: None,
            received: Vec::new(),
            heartbeats_sent: 0,
            heartbeats_answered: 0,
            pings: Vec::new(),
            declared_dead: None,
            rto_ms: None,
            loop_late_s: 0.0,
            program_lost: None,
            peer_closed: None,
            program_exit: None,
        }
    }
}

pub(crate) enum ToServer {
    /// Send this much data now (busy).
    Send(usize),
    Stop,
}

/// tcp_info's `tcpi_rto`, in milliseconds.
fn tcp_rto_ms(s: &TcpStream) -> Option<u64> {
    // SAFETY: an all-zero tcp_info is a valid out-buffer; getsockopt writes at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: TCP_INFO on a socket we own, into `info`.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| u64::from(info.tcpi_rto) / 1000)
}

/// The server: listen with the policy, accept one connection, read until it ends.
pub(crate) fn serve(
    addr: SocketAddrV4,
    policy: Policy,
    keepalive_on: bool,
    heartbeat: Option<(u64, usize)>,
    ready: mpsc::Sender<Result<(), String>>,
    commands: mpsc::Receiver<ToServer>,
    start_ns: u128,
) -> Result<ServerSide, String> {
    let secs = |ns: u128| ns.saturating_sub(start_ns) as f64 / 1e9;
    let heartbeat_ms = heartbeat.map(|(ms, _)| ms);
    let allowed_misses = heartbeat.map_or(usize::MAX, |(_, n)| n);
    let (mut answered_since_ping, mut misses) = (true, 0usize);
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("bind {addr}: {e}")));
            return Err(e.to_string());
        }
    };
    // Keepalive off may still carry a user timeout, which bounds retransmission on its own.
    let applied = if keepalive_on {
        keepalive::socket::apply(&listener, &policy)
            .map(drop)
            .map_err(|e| e.to_string())
    } else {
        match policy.user_timeout() {
            Some(keepalive::policy::UserTimeout::Millis(ms)) => {
                rustix::net::sockopt::set_tcp_user_timeout(&listener, ms)
                    .map_err(|e| format!("TCP_USER_TIMEOUT: {e}"))
            }
            _ => Ok(()),
        }
    };
    if let Err(e) = applied {
        let _ = ready.send(Err(e.clone()));
        return Err(e);
    }
    let _ = ready.send(Ok(()));
    let (mut conn, _) = listener.accept().map_err(|e| e.to_string())?;
    let settings = keepalive::socket::read(&conn)
        .map_err(|e| e.to_string())?
        .settings;
    conn.set_read_timeout(Some(Duration::from_secs_f64(
        crate::verdict::HEARTBEAT_POLL_S,
    )))
    .map_err(|e| e.to_string())?;
    let mut side = ServerSide::new(settings);
    let mut buf = [0u8; 4096];
    let mut next_beat = heartbeat_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    // The clocks side by side, to put the pings' schedule on the lab's time line.
    let (epoch, epoch_ns) = (Instant::now(), now_ns());
    let scheduled = |at: Instant| secs(epoch_ns + at.saturating_duration_since(epoch).as_nanos());
    loop {
        match commands.try_recv() {
            Ok(ToServer::Stop) | Err(mpsc::TryRecvError::Disconnected) => return Ok(side),
            Ok(ToServer::Send(n)) => {
                side.rto_ms = tcp_rto_ms(&conn);
                if let Err(e) = conn.write_all(&vec![b'x'; n]) {
                    side.error = Some((secs(now_ns()), e));
                    return Ok(side);
                }
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if let (Some(at), Some(ms)) = (next_beat, heartbeat_ms)
            && Instant::now() >= at
        {
            // The application's own heartbeat: a ping the peer's program should answer
            // before the next is due; `allowed_misses` in a row and the peer is dead to it.
            if side.heartbeats_sent > 0 && !answered_since_ping {
                misses += 1;
                if misses >= allowed_misses && side.declared_dead.is_none() {
                    side.declared_dead = Some(secs(now_ns()));
                }
            } else {
                misses = 0;
            }
            // How late the loop woke for this one: the same lateness delays a declaration.
            side.loop_late_s = side.loop_late_s.max(at.elapsed().as_secs_f64());
            if conn.write_all(b"ping\n").is_ok() {
                side.heartbeats_sent += 1;
                side.pings.push(scheduled(at));
                answered_since_ping = false;
            }
            next_beat = Some(at + Duration::from_millis(ms));
        }
        match conn.read(&mut buf) {
            Ok(0) => {
                side.peer_closed = Some(secs(now_ns()));
                return Ok(side);
            }
            Ok(n) => {
                let data = buf[..n].to_vec();
                let pongs = data.windows(4).filter(|w| w == b"pong").count();
                side.heartbeats_answered += pongs;
                answered_since_ping |= pongs > 0;
                side.received.push((secs(now_ns()), data));
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => {
                side.error = Some((secs(now_ns()), e));
                return Ok(side);
            }
        }
    }
}

/// A `--server-cmd` program as the server: started, watched until it listens on the lab's
/// port, then until its connection ends; its socket's options are read back (through a
/// duplicate of its descriptor) as soon as the accepted connection has one.
pub(crate) fn serve_program(
    program: &Program,
    addr: SocketAddrV4,
    ready: mpsc::Sender<Result<(), String>>,
    commands: mpsc::Receiver<ToServer>,
    start_ns: u128,
) -> Result<ServerSide, String> {
    use keepalive::diag::{self, TcpState};
    let secs = |ns: u128| ns.saturating_sub(start_ns) as f64 / 1e9;
    let cmd = &program.text;
    let mut child = match program.start() {
        Ok(child) => child,
        Err(e) => {
            let _ = ready.send(Err(format!("`{cmd}`: {e}")));
            return Err(format!("`{cmd}`: {e}"));
        }
    };
    let port = addr.port();
    let find = |state: TcpState| {
        let mut found = None;
        let _ = diag::for_each_socket(None, &[state], |e| {
            if e.local.port() == port {
                found = Some(e.inode);
            }
        });
        found
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while find(TcpState::Listen).is_none() {
        let exited = exited(&mut child);
        if Instant::now() > deadline || exited.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            let why = match exited {
                Some(status) => {
                    format!(
                        "--server-cmd `{cmd}` exited ({status}) without listening on port {port}"
                    )
                }
                None => format!("--server-cmd `{cmd}` did not listen on port {port} within 10 s"),
            };
            let _ = ready.send(Err(why.clone()));
            return Err(why);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = ready.send(Ok(()));
    let mut side = ServerSide::new(Settings::LINUX_DEFAULT);
    let (mut seen, mut read) = (false, false);
    loop {
        if matches!(
            commands.try_recv(),
            Ok(ToServer::Stop) | Err(mpsc::TryRecvError::Disconnected)
        ) {
            break;
        }
        if side.program_exit.is_none()
            && let Some(status) = exited(&mut child)
        {
            if !read {
                return Err(format!(
                    "--server-cmd `{cmd}` exited ({status}) before the lab could read its \
                     connection's options: the server must keep its connection for the run"
                ));
            }
            side.program_exit = Some((secs(now_ns()), status));
        }
        match find(TcpState::Established) {
            Some(inode) => {
                seen = true;
                // The program's own socket, read through a duplicate of its descriptor, once
                // it has one: a connection still in the accept queue has no inode yet.
                if !read && inode != 0 {
                    let owners = diag::owners();
                    if let Some(o) = owners.holders(inode).first()
                        && let Ok(dup) = keepalive::retrofit::duplicate(o.pid, o.fd)
                        && let Ok(k) = keepalive::socket::read(&dup)
                    {
                        side.settings = k.settings;
                        read = true;
                    }
                }
            }
            None if seen => {
                side.program_lost = Some(secs(now_ns()));
                break;
            }
            None => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    if seen && !read {
        return Err(format!(
            "the options of `{cmd}`'s connection could not be read back (pidfd_getfd)"
        ));
    }
    Ok(side)
}
