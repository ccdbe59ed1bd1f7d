//! The lab's client side: what a fault does to the client's socket, and the client's program
//! in `hung`.

use std::net::TcpStream;
use std::time::Duration;

/// Closing with linger 0 sends RST instead of FIN.
pub(crate) fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_linger(
        s,
        Some(Duration::ZERO),
    )?)
}

/// The client's program in `hung`: a forked process holding the client's socket, answering
/// each "ping" with "pong" until stopped. Between fork and its end it makes only read, write,
/// prctl and _exit calls on stack memory (async-signal-safe: the lab has other threads).
pub(crate) struct Responder {
    pid: libc::pid_t,
}

impl Responder {
    pub(crate) fn start(socket: &TcpStream) -> std::io::Result<Responder> {
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

    /// The program hangs: SIGSTOP. Its kernel still ACKs data and probes.
    pub(crate) fn freeze(&self) {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.pid, libc::SIGSTOP) };
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
