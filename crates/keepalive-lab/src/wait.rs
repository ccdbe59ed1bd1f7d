//! The wait stage: watching the connection until theory says it has ended, and a little more,
//! telling the caller what the wire shows as it shows it.

use crate::analysis;
use crate::capture::Capture;
use crate::clock::now_ns;
use crate::connect::Ends;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// What a run shows while it goes on (times in seconds since the lab started).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Live {
    /// Keepalive probe `n` went out, `since_rx` after the peer last spoke.
    Probe {
        n: usize,
        t: f64,
        since_rx: Option<f64>,
    },
    /// The server sent unacknowledged data again (retransmission `n`).
    Retransmission { n: usize, t: f64 },
    /// A reset crossed the wire.
    Reset { t: f64, by_server: bool },
    /// Still watching at `t`; the watch ends at about `expected`.
    Waiting { t: f64, expected: f64 },
}

/// Where the watch is: what the capture shows and what `live` was told of it.
pub(crate) struct Watch<'a> {
    pub(crate) capture: &'a Capture,
    pub(crate) start_ns: u128,
    pub(crate) server: SocketAddrV4,
    pub(crate) client: Ipv4Addr,
    pub(crate) live: Option<&'a dyn Fn(Live)>,
}

/// How the watch ended.
pub(crate) struct Watched {
    /// When the client sent "still there?" through the firewall (firewall scenarios).
    pub(crate) still_there: Option<f64>,
    /// The end of what is the run's: what the lab does from here on (its server closing, the
    /// client's kernel answering that with RST when its socket is gone) is not.
    pub(crate) until: f64,
}

/// Watches for `window` seconds, or until the server's end is over; then, through a firewall,
/// checks whether the client's data still arrives.
pub(crate) fn watch(
    watch: &Watch,
    window: f64,
    ends: &mut Ends,
    through_firewall: bool,
) -> Watched {
    let secs = |ns: u128| ns.saturating_sub(watch.start_ns) as f64 / 1e9;
    let begin = Instant::now();
    let deadline = begin + Duration::from_secs_f64(window);
    // On the events' clock: seconds since the lab started.
    let ends_at = secs(now_ns()) + window;
    let mut told = Told::default();
    while Instant::now() < deadline && !ends.server_done() {
        if let Some(live) = watch.live {
            told.tell(watch, live);
            live(Live::Waiting {
                t: secs(now_ns()),
                expected: ends_at,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // An idle firewall path, or a black hole: does the client's data still arrive?
    let mut still_there = None;
    if through_firewall && !ends.server_done() && ends.client.send(b"still there?\n") {
        still_there = Some(secs(now_ns()));
        std::thread::sleep(Duration::from_secs(2));
    }
    Watched {
        still_there,
        until: secs(now_ns()),
    }
}

/// What `live` has been told: probes and retransmissions so far, and each end's reset.
#[derive(Default)]
struct Told {
    probes: usize,
    retransmissions: usize,
    server_rst: bool,
    client_rst: bool,
}

impl Told {
    /// Tells `live` what the wire shows that it has not been told yet.
    fn tell(&mut self, watch: &Watch, live: &dyn Fn(Live)) {
        let wire = analysis::parse(
            &watch.capture.so_far(),
            watch.start_ns,
            watch.server,
            watch.client,
        );
        let found = analysis::findings(&wire);
        for p in found.probes.iter().skip(self.probes) {
            live(Live::Probe {
                n: p.n,
                t: p.t,
                since_rx: p.since_rx,
            });
        }
        for (i, t) in found
            .retransmissions
            .iter()
            .enumerate()
            .skip(self.retransmissions)
        {
            live(Live::Retransmission { n: i + 1, t: *t });
        }
        for (seen, at, by_server) in [
            (&mut self.server_rst, found.server_rst, true),
            (&mut self.client_rst, found.client_rst, false),
        ] {
            if let (false, Some(t)) = (*seen, at) {
                *seen = true;
                live(Live::Reset { t, by_server });
            }
        }
        self.probes = found.probes.len();
        self.retransmissions = found.retransmissions.len();
    }
}
