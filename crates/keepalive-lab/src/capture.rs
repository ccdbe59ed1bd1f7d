//! Every frame on the server's interface, through an AF_PACKET socket inside the server's
//! namespace, with the kernel's receive timestamp (SIOCGSTAMPNS). On a veth each frame is seen
//! once per direction (`lo` would show it twice).

use crate::LabError;
use crate::topology::Host;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Kernel timestamp, nanoseconds since the Unix epoch.
    pub ns: u128,
    /// The whole Ethernet frame.
    pub data: Vec<u8>,
}

pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<Frame>>>,
    handle: JoinHandle<Result<Result<(), LabError>, LabError>>,
}

impl Capture {
    /// Starts capturing on `ifname` inside `host`; returns once the socket is bound.
    pub fn start(host: &Host, ifname: &'static str) -> Result<Capture, LabError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = Arc::clone(&stop);
        let frames = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&frames);
        let handle = host.spawn(move || capture(ifname, &flag, &sink, ready_tx))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Capture {
                stop,
                frames,
                handle,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LabError::Capture(
                "capture thread ended before it was ready".into(),
            )),
        }
    }

    /// The frames so far, in order (for a live view while the run goes on).
    pub fn so_far(&self) -> Vec<Frame> {
        self.frames.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Stops and returns the frames, in order.
    pub fn stop(self) -> Result<Vec<Frame>, LabError> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| LabError::Capture("capture thread panicked".into()))???;
        let frames = self.frames.lock().map(|mut f| std::mem::take(&mut *f));
        frames.map_err(|_| LabError::Capture("capture buffer poisoned".into()))
    }
}

/// `SIOCGSTAMPNS` (`include/uapi/asm-generic/sockios.h`): the last packet's timestamp.
const SIOCGSTAMPNS: u64 = 0x8907;

fn os_err(what: &str) -> LabError {
    LabError::Capture(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn capture(
    ifname: &str,
    stop: &AtomicBool,
    frames: &Mutex<Vec<Frame>>,
    ready: std::sync::mpsc::Sender<Result<(), LabError>>,
) -> Result<(), LabError> {
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is closed by the guard below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    };
    if fd < 0 {
        let e = os_err("AF_PACKET socket (needs CAP_NET_RAW in the lab's namespace)");
        let _ = ready.send(Err(LabError::Capture(e.to_string())));
        return Err(e);
    }
    struct Close(i32);
    impl Drop for Close {
        fn drop(&mut self) {
            // SAFETY: closes the socket this function opened.
            unsafe { libc::close(self.0) };
        }
    }
    let _guard = Close(fd);
    let name = std::ffi::CString::new(ifname).unwrap_or_default();
    // SAFETY: a NUL-terminated interface name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    // SAFETY: an all-zero sockaddr_ll is valid; the fields used are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = index as i32;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: bind and setsockopt with correctly sized, initialized arguments.
    let ok = unsafe {
        libc::bind(
            fd,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) == 0
            && libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            ) == 0
    };
    if !ok || index == 0 {
        let e = os_err(&format!("binding the capture to {ifname}"));
        let _ = ready.send(Err(LabError::Capture(e.to_string())));
        return Err(e);
    }
    let _ = ready.send(Ok(()));
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: receives into `buf`, at most its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => continue,
                _ => return Err(LabError::Capture(format!("recv: {e}"))),
            }
        }
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: SIOCGSTAMPNS writes the last packet's timestamp into `ts`.
        unsafe { libc::ioctl(fd, SIOCGSTAMPNS as _, &mut ts) };
        let ns = (ts.tv_sec as u128) * 1_000_000_000 + ts.tv_nsec as u128;
        let frame = Frame {
            ns,
            data: buf[..n as usize].to_vec(),
        };
        if let Ok(mut f) = frames.lock() {
            f.push(frame);
        }
    }
    Ok(())
}
