//! The lab's client end: the lab's own socket (and in `hung` a forked program answering the
//! server's pings), or a program of the user's (`--client-cmd`) whose connected socket the
//! lab holds a duplicate of. The faults act on it through [`Client::freeze`] and
//! [`Client::vanish`]; the firewall check writes through [`Client::send`].

use crate::LabError;
use crate::clock::now_ns;
use crate::program::{Program, exited};
use crate::topology::Host;
use std::io::Write;
use std::net::{SocketAddrV4, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the client gets to connect.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// The client end of the lab's connection.
pub(crate) struct Client {
    /// The lab's own connected socket. `None` once a fault took it away, and for a program of
    /// the user's, whose socket the lab duplicates only for the moment it acts on it (a
    /// duplicate held longer would keep the connection open after the program closed it).
    socket: Option<TcpStream>,
    process: Option<Process>,
    /// When the connection was found up.
    pub(crate) connected_ns: u128,
    /// The user's program, when it is one.
    pub(crate) program: Option<String>,
}

/// The process behind the client's socket.
enum Process {
    /// `hung`'s built-in program.
    Responder(Responder),
    /// The user's program, started and reaped by a thread in the client's namespace.
    User {
        pgid: libc::pid_t,
        /// The program's descriptor for its connection (in the process `owner`).
        owner: u32,
        fd: i32,
        /// Dropping it tells the thread to kill the program; it answers on `gone`.
        kill: Option<mpsc::Sender<()>>,
        gone: mpsc::Receiver<()>,
        /// When the program exited by itself, and how.
        exited: std::sync::Arc<std::sync::Mutex<Option<(u128, String)>>>,
    },
}

/// A program's connection, found: its owner's pid and descriptor, and when it was seen.
struct Found {
    owner: u32,
    fd: i32,
    at: u128,
}

impl Client {
    /// The lab's own client: connects from `host` and says hello; with `responder`, a forked
    /// process holds the socket too and answers pings.
    pub(crate) fn connect(
        host: &Host,
        server: SocketAddrV4,
        responder: bool,
    ) -> Result<Client, LabError> {
        let (mut socket, connected_ns) = host
            .spawn(move || -> std::io::Result<(TcpStream, u128)> {
                let mut s = TcpStream::connect_timeout(&server.into(), CONNECT_WITHIN)?;
                let at = now_ns();
                s.write_all(b"hello\n")?;
                Ok((s, at))
            })?
            .join()
            .map_err(|_| LabError::Run("client thread panicked".into()))??
            .map_err(|e| LabError::Run(format!("client: connecting to {server}: {e}")))?;
        let process = if responder {
            let r = Responder::start(&socket)
                .map_err(|e| LabError::Run(format!("client program: {e}")))?;
            Some(Process::Responder(r))
        } else {
            None
        };
        let _ = socket.flush();
        Ok(Client {
            socket: Some(socket),
            process,
            connected_ns,
            program: None,
        })
    }

    /// A `--client-cmd` program as the client: started in `host`, watched until a socket of
    /// it is connected to `server`. A program that exits first, or does not connect within
    /// 10 s, is an error naming its exit status; one that exits later is noted
    /// ([`Client::program_exit`]).
    pub(crate) fn program(
        host: &Host,
        server: SocketAddrV4,
        program: Program,
    ) -> Result<Client, LabError> {
        let text = program.text.clone();
        let (found_tx, found_rx) = mpsc::channel::<Result<(Found, libc::pid_t), String>>();
        let (kill_tx, kill_rx) = mpsc::channel::<()>();
        let (gone_tx, gone_rx) = mpsc::channel::<()>();
        let exited = std::sync::Arc::new(std::sync::Mutex::new(None));
        let exit_note = exited.clone();
        host.spawn(move || {
            let cmd = &program.text;
            let mut child = match program.start() {
                Ok(child) => child,
                Err(e) => {
                    let _ = found_tx.send(Err(format!("--client-cmd `{cmd}`: {e}")));
                    return;
                }
            };
            let found = find_connection(&mut child, server, cmd);
            let failed = found.is_err();
            let _ = found_tx.send(found.map(|f| (f, child.id() as libc::pid_t)));
            // Until the lab is done with it (or gone: the sender dropped), noting when the
            // program ends by itself.
            if !failed {
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    kill_rx.recv_timeout(Duration::from_millis(20))
                {
                    if let Ok(Some(status)) = child.try_wait() {
                        if let Ok(mut note) = exit_note.lock() {
                            *note = Some((now_ns(), status.to_string()));
                        }
                        let _ = kill_rx.recv();
                        break;
                    }
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = gone_tx.send(());
        })?;
        let (found, pgid) = found_rx
            .recv_timeout(CONNECT_WITHIN + Duration::from_secs(5))
            .map_err(|_| LabError::Run(format!("`{text}`: the client's thread did not answer")))?
            .map_err(LabError::Run)?;
        Ok(Client {
            socket: None,
            process: Some(Process::User {
                pgid,
                owner: found.owner,
                fd: found.fd,
                kill: Some(kill_tx),
                gone: gone_rx,
                exited,
            }),
            connected_ns: found.at,
            program: Some(text),
        })
    }

    /// When the user's program exited by itself during the run, and its status.
    pub(crate) fn program_exit(&self) -> Option<(u128, String)> {
        match &self.process {
            Some(Process::User { exited, .. }) => exited.lock().ok()?.clone(),
            _ => None,
        }
    }

    /// A duplicate of the program's connection, for the moment the lab acts on it.
    fn program_socket(&self) -> Option<TcpStream> {
        match &self.process {
            Some(Process::User { owner, fd, .. }) => keepalive::retrofit::duplicate(*owner, *fd)
                .ok()
                .map(TcpStream::from),
            _ => None,
        }
    }

    /// The client's program hangs: SIGSTOP to it (its whole process group, for a program of
    /// the user's). Its kernel still ACKs data and answers probes.
    pub(crate) fn freeze(&self) {
        let target = match &self.process {
            Some(Process::Responder(r)) => r.pid,
            Some(Process::User { pgid, .. }) => -pgid,
            None => return,
        };
        // SAFETY: signals our own child (or its process group).
        unsafe { libc::kill(target, libc::SIGSTOP) };
    }

    /// The client's socket goes away with a reset instead of a FIN (linger 0), as a reboot
    /// loses it: for a program, the lab takes a duplicate, kills and reaps the program, so the
    /// duplicate is the last reference and closing it aborts the connection.
    pub(crate) fn vanish(&mut self) {
        let socket = self.socket.take().or_else(|| self.program_socket());
        if let Some(s) = &socket {
            let _ = rustix::net::sockopt::set_socket_linger(s, Some(Duration::ZERO));
        }
        match self.process.take() {
            Some(Process::User { mut kill, gone, .. }) => {
                drop(kill.take());
                let _ = gone.recv_timeout(Duration::from_secs(5));
            }
            Some(Process::Responder(r)) => drop(r),
            None => {}
        }
        drop(socket);
    }

    /// Writes `data` on the client's socket (the program's, for a program).
    pub(crate) fn send(&mut self, data: &[u8]) -> bool {
        if let Some(s) = self.socket.as_mut() {
            return s.write_all(data).is_ok();
        }
        self.program_socket()
            .is_some_and(|mut s| s.write_all(data).is_ok())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(Process::User { mut kill, gone, .. }) = self.process.take() {
            drop(kill.take());
            let _ = gone.recv_timeout(Duration::from_secs(5));
        }
    }
}

/// Waits until `child` (or a process it started) holds a TCP socket connected to `server`
/// in this thread's namespace: its owner and descriptor.
fn find_connection(
    child: &mut std::process::Child,
    server: SocketAddrV4,
    cmd: &str,
) -> Result<Found, String> {
    use keepalive::diag::{self, TcpState};
    let deadline = Instant::now() + CONNECT_WITHIN;
    loop {
        let mut inode = None;
        let _ = diag::for_each_socket(None, &[TcpState::Established], |e| {
            if e.peer == std::net::SocketAddr::V4(server) && e.inode != 0 {
                inode = Some(e.inode);
            }
        });
        if let Some(inode) = inode {
            let at = now_ns();
            if let Some(o) = diag::owners().holders(inode).first() {
                return Ok(Found {
                    owner: o.pid,
                    fd: o.fd,
                    at,
                });
            }
        }
        if let Some(status) = exited(child) {
            return Err(format!(
                "--client-cmd `{cmd}` exited ({status}) before the lab found it connected to \
                 {server}: the client must stay connected for the run"
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "--client-cmd `{cmd}` did not connect to {server} within {} s",
                CONNECT_WITHIN.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The client's program in `hung`: a forked process holding the client's socket, answering
/// each "ping" with "pong" until stopped. Between fork and its end it makes only read, write,
/// prctl and _exit calls on stack memory (async-signal-safe: the lab has other threads).
pub(crate) struct Responder {
    pid: libc::pid_t,
}

impl Responder {
    fn start(socket: &TcpStream) -> std::io::Result<Responder> {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        // SAFETY: fork(2); the child runs only the async-signal-safe loop below and never
        // returns into Rust code that could allocate or take a lock.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child: prctl, read, write and _exit on a stack buffer and the
            // inherited socket.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let mut buf = [0u8; 256];
                loop {
                    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                    if n <= 0 {
                        libc::_exit(0);
                    }
                    let got = &buf[..n as usize];
                    if got.windows(4).any(|w| w == b"ping") {
                        libc::write(fd, b"pong\n".as_ptr().cast(), 5);
                    }
                }
            }
        }
        Ok(Responder { pid })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // SAFETY: kills and reaps our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}
