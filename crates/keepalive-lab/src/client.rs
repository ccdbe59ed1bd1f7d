//! The lab's client side: what a fault does to the client's socket, and the client's program
//! in `hung`.

use crate::LabError;
use crate::netlink::Kind;
use crate::scenario::Fault;
use crate::topology::Net;
use std::net::TcpStream;
use std::time::Duration;

/// Does `fault` to the client (or, for `reject`, to the router in front of it). The client's
/// socket is taken away for `reboot`.
pub(crate) fn fault(
    net: &Net,
    fault: Fault,
    client: &mut Option<TcpStream>,
    responder: Option<&Responder>,
) -> Result<(), LabError> {
    let server_ip = net.server_ip;
    // A blackhole route in the client for the server's address (longer than the connected
    // /24, so it wins): everything the client's kernel sends there is discarded before it
    // reaches the wire, with no ICMP (`dst_discard_out`), so the client goes silent for the
    // server.
    let silence = |on: bool| {
        net.client.rtnl("the client's blackhole route", move |r| {
            if on {
                r.add_route(server_ip, 32, Kind::Blackhole, None)
            } else {
                r.delete_route(server_ip, 32, Kind::Blackhole)
            }
        })
    };
    match fault {
        Fault::None => {}
        Fault::Silence => silence(true)?,
        Fault::Reboot => {
            // The socket goes away with its RST discarded, then the host answers again.
            silence(true)?;
            if let Some(c) = client.take() {
                let _ = socket_linger_zero(&c);
                drop(c);
            }
            std::thread::sleep(Duration::from_millis(100));
            silence(false)?;
        }
        Fault::Reject => {
            if let Some(router) = &net.router {
                // An unreachable route for the client's address: the router answers what it
                // would forward there with ICMP host unreachable (`ip_error()`).
                let client_ip = net.client_ip;
                router.rtnl("the router's unreachable route", move |r| {
                    r.add_route(client_ip, 32, Kind::Unreachable, None)
                })?;
            }
        }
        Fault::Freeze => {
            if let Some(r) = responder {
                r.freeze();
            }
        }
    }
    Ok(())
}

/// Closing with linger 0 sends RST instead of FIN.
fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
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
