//! What crossed the wire, read back from the captured frames: TCP segments of the lab's
//! connection and ICMP errors, then keepalive probes (no data, ACK set, sequence number
//! `snd_nxt - 1`, the mark tshark's `tcp.analysis.keep_alive` looks for), their answers, and
//! retransmissions.

use crate::capture::Frame;
use std::net::{Ipv4Addr, SocketAddrV4};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Which way a segment went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dir {
    ToClient,
    ToServer,
}

/// One TCP segment of the connection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Segment {
    /// Seconds since the lab started.
    pub t: f64,
    pub dir: Dir,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Payload bytes.
    pub len: u32,
}

impl Segment {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// An ICMP message seen on the server's interface.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Icmp {
    pub t: f64,
    pub kind: u8,
    pub code: u8,
}

/// The parsed capture.
#[derive(Debug, Default)]
pub struct Wire {
    pub segments: Vec<Segment>,
    pub icmp: Vec<Icmp>,
}

/// Parses Ethernet/IPv4 frames, keeping the connection between `server` and `client` and
/// ICMP errors addressed to the server.
pub fn parse(frames: &[Frame], start_ns: u128, server: SocketAddrV4, client: Ipv4Addr) -> Wire {
    let mut wire = Wire::default();
    for f in frames {
        let t = f.ns.saturating_sub(start_ns) as f64 / 1e9;
        let d = &f.data;
        if d.len() < 34 || d[12..14] != [0x08, 0x00] || d[14] >> 4 != 4 {
            continue;
        }
        let ip = &d[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        let (proto, src, dst) = (
            ip[9],
            Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        );
        if ihl < 20 || total < ihl {
            continue;
        }
        let body = &ip[ihl..total];
        match proto {
            1 if dst == *server.ip() && body.len() >= 2 => wire.icmp.push(Icmp {
                t,
                kind: body[0],
                code: body[1],
            }),
            6 if body.len() >= 20 => {
                let (sport, dport) = (
                    u16::from_be_bytes([body[0], body[1]]),
                    u16::from_be_bytes([body[2], body[3]]),
                );
                let dir = if src == *server.ip() && sport == server.port() && dst == client {
                    Dir::ToClient
                } else if dst == *server.ip() && dport == server.port() && src == client {
                    Dir::ToServer
                } else {
                    continue;
                };
                let doff = usize::from(body[12] >> 4) * 4;
                wire.segments.push(Segment {
                    t,
                    dir,
                    seq: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                    ack: u32::from_be_bytes([body[8], body[9], body[10], body[11]]),
                    flags: body[13],
                    len: body.len().saturating_sub(doff) as u32,
                });
            }
            _ => {}
        }
    }
    wire
}

/// A keepalive probe the server sent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    pub n: usize,
    pub t: f64,
    /// Seconds since the last segment from the client before this probe: what the keepalive
    /// timer measures.
    pub since_rx: Option<f64>,
    /// 1 for the first probe since the client last spoke, 2 for the next unanswered one, ...
    pub in_run: usize,
    pub seq: u32,
    /// The client sent something back before the next probe.
    pub answered: bool,
    /// The client answered with RST.
    pub reset: bool,
}

/// Probes, retransmissions and endings found in the segments.
#[derive(Debug, Default, serde::Serialize)]
pub struct Findings {
    pub probes: Vec<Probe>,
    /// Times of data segments the server sent again.
    pub retransmissions: Vec<f64>,
    /// First time the server sent data the client never acknowledged.
    pub first_unacked: Option<f64>,
    /// The server reset the connection.
    pub server_rst: Option<f64>,
    /// The client reset it.
    pub client_rst: Option<f64>,
    /// The server's first FIN.
    pub server_fin: Option<f64>,
    /// The client's first FIN.
    pub client_fin: Option<f64>,
    /// Last segment from the client before the run of probes the connection ended on (an
    /// answer to an earlier probe restarts the keepalive timer, `tcp_keepalive_timer()` counts
    /// from the last segment received), or before the first retransmission.
    pub last_rx: Option<f64>,
}

pub fn findings(wire: &Wire) -> Findings {
    let mut out = Findings::default();
    let mut snd_nxt: Option<u32> = None;
    let mut quiet_from: Option<f64> = None;
    let mut last_rx: Option<f64> = None;
    let mut run = 0usize;
    for s in &wire.segments {
        match s.dir {
            Dir::ToClient => {
                let end = s
                    .seq
                    .wrapping_add(s.len)
                    .wrapping_add(u32::from(s.has(SYN)) + u32::from(s.has(FIN)));
                if s.has(RST) {
                    out.server_rst.get_or_insert(s.t);
                    continue;
                }
                if s.has(FIN) {
                    out.server_fin.get_or_insert(s.t);
                }
                let probe = s.has(ACK)
                    && !s.has(SYN | FIN)
                    && s.len <= 1
                    && snd_nxt.is_some_and(|n| s.seq == n.wrapping_sub(1));
                if probe {
                    quiet_from.get_or_insert(s.t);
                    run += 1;
                    // The first probe since the client last spoke: the keepalive timer that
                    // sent it, and those after it, count from that segment.
                    if run == 1 && out.retransmissions.is_empty() {
                        out.last_rx = last_rx;
                    }
                    let since_rx = last_rx.map(|r| s.t - r);
                    let n = out.probes.len() + 1;
                    out.probes.push(Probe {
                        n,
                        t: s.t,
                        since_rx,
                        in_run: run,
                        seq: s.seq,
                        answered: false,
                        reset: false,
                    });
                    continue;
                }
                if s.len > 0 {
                    let resent = snd_nxt.is_some_and(|n| (n.wrapping_sub(s.seq) as i32) > 0);
                    if resent {
                        out.retransmissions.push(s.t);
                        quiet_from.get_or_insert(s.t);
                    } else {
                        out.first_unacked.get_or_insert(s.t);
                    }
                }
                if snd_nxt.is_none_or(|n| (end.wrapping_sub(n) as i32) > 0) {
                    snd_nxt = Some(end);
                }
            }
            Dir::ToServer => {
                if s.has(ACK) && Some(s.ack) == snd_nxt {
                    out.first_unacked = None;
                }
                if let Some(p) = out.probes.last_mut()
                    && p.t > last_rx.unwrap_or(f64::MIN)
                {
                    p.answered = true;
                    p.reset |= s.has(RST);
                }
                if s.has(RST) {
                    out.client_rst.get_or_insert(s.t);
                }
                if s.has(FIN) {
                    out.client_fin.get_or_insert(s.t);
                }
                last_rx = Some(s.t);
                run = 0;
                if quiet_from.is_none() {
                    out.last_rx = Some(s.t);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(t: f64, dir: Dir, seq: u32, ack: u32, flags: u8, len: u32) -> Segment {
        Segment {
            t,
            dir,
            seq,
            ack,
            flags,
            len,
        }
    }

    /// Probes answered, then a fault, then probes unanswered: the clock of the probes that
    /// ended the connection starts at the answer to the last answered probe, not at the
    /// last data.
    #[test]
    fn the_last_segment_from_the_peer_is_the_answer_before_the_final_run_of_probes() {
        use Dir::{ToClient as S, ToServer as C};
        let mut segments = vec![
            seg(0.0, C, 99, 0, SYN, 0),
            seg(0.001, S, 499, 100, SYN | ACK, 0),
            seg(0.002, C, 100, 500, ACK, 0),
            seg(0.003, C, 100, 500, ACK, 5),
            seg(0.004, S, 500, 105, ACK, 0),
        ];
        for k in 0..3 {
            let t = 3.0 * f64::from(k + 1);
            segments.push(seg(t, S, 499, 105, ACK, 0));
            segments.push(seg(t + 0.001, C, 105, 500, ACK, 0));
        }
        for t in [12.0, 13.0, 14.0] {
            segments.push(seg(t, S, 499, 105, ACK, 0));
        }
        segments.push(seg(15.0, S, 500, 105, RST | ACK, 0));
        let found = findings(&Wire {
            segments,
            icmp: Vec::new(),
        });
        assert_eq!(found.probes.len(), 6);
        assert!(found.probes[..3].iter().all(|p| p.answered));
        assert!(found.probes[3..].iter().all(|p| !p.answered));
        assert_eq!(found.last_rx, Some(9.001));
        assert_eq!(found.server_rst, Some(15.0));
    }
}
