//! Keeping a change whole: the signals that end a process by default (Ctrl-C's SIGINT, kill's
//! SIGTERM, a closed terminal's SIGHUP, Ctrl-\'s SIGQUIT) are held back while a change is made
//! and reported, and delivered after (pthread_sigmask(2): a blocked signal stays pending, and
//! unblocking it delivers it, so the process still ends by it, with the report written).
//! Threads started meanwhile inherit the mask.

/// Holds the signals back until dropped.
pub struct Deferred {
    old: libc::sigset_t,
}

/// The signals [`defer`] holds back.
pub const HELD: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Holds [`HELD`] back for the calling thread until the guard is dropped.
pub fn defer() -> Deferred {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set; pthread_sigmask reads it
    // and writes the old mask into another local one.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for s in HELD {
            libc::sigaddset(&mut set, s);
        }
        let mut old = std::mem::zeroed::<libc::sigset_t>();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        Deferred { old }
    }
}

/// Held for the rest of the run: a change the library has begun, whose report the caller
/// has still to write.
static RUN: std::sync::Mutex<Option<Deferred>> = std::sync::Mutex::new(None);

/// Holds [`HELD`] back from now until [`release`] ([`RUN`]): called by the library where a change
/// begins (after every check and wait that may still fail or take long, so that a signal
/// before it acts at once), released by the program once it has reported the change, or the
/// error that stopped it.
pub fn hold_until_released() {
    if let Ok(mut held) = RUN.lock()
        && held.is_none()
    {
        *held = Some(defer());
    }
}

/// Lets held signals through: one that came meanwhile is delivered now.
pub fn release() {
    if let Ok(mut held) = RUN.lock() {
        held.take();
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `defer`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_sent_meanwhile_waits_for_the_guard() {
        // SIGHUP with a handler of its own for the test: pending while held, run on drop.
        static GOT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        extern "C" fn on(_: libc::c_int) {
            GOT.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        // SAFETY: installs a handler that only stores to an atomic; raise sends to this thread.
        unsafe {
            libc::signal(libc::SIGHUP, on as *const () as libc::sighandler_t);
            let guard = defer();
            libc::raise(libc::SIGHUP);
            assert!(!GOT.load(std::sync::atomic::Ordering::SeqCst));
            drop(guard);
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
        }
        assert!(GOT.load(std::sync::atomic::Ordering::SeqCst));
    }
}
