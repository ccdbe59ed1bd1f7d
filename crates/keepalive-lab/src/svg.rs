//! A picture of a run, for a person: the client's and the server's lanes with a time axis,
//! every segment as an arrow from its sender to its receiver (the handshake labelled,
//! keepalive probes numbered, retransmissions apart from first sends), the fault, the moment
//! the firewall forgets the connection, the heartbeat's verdict, and a dashed theory marker
//! for each probe and ending. Plain SVG; every label is placed inside the picture.

use crate::analysis::{self, Dir, Segment};
use crate::{Ending, Report, What};
use std::fmt::Write;

const W: f64 = 1000.0;
const H: f64 = 420.0;
const LEFT: f64 = 120.0;
const RIGHT: f64 = 40.0;
const CLIENT_Y: f64 = 150.0;
const SERVER_Y: f64 = 260.0;
const AXIS_Y: f64 = 320.0;
/// Roughly how wide a character of the 12 px font is, to keep labels inside the picture.
const CHAR_W: f64 = 6.6;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `text` shortened to `max` characters.
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// `text` in lines of at most `width` characters, broken at spaces; at most `max` lines,
/// the last shortened if need be.
fn wrap(text: &str, width: usize, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    if lines.len() > max {
        let rest = lines[max - 1..].join(" ");
        lines.truncate(max - 1);
        lines.push(fit(&rest, width));
    }
    lines
}

/// What kind of segment, for its colour and label.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Handshake,
    Probe(usize),
    Retransmission(usize),
    Data,
    Reset,
    Fin,
    Ack,
}

impl Kind {
    fn color(self) -> &'static str {
        match self {
            Kind::Handshake => "#2a9d3a",
            Kind::Probe(_) => "#e67e00",
            Kind::Retransmission(_) => "#b0369b",
            Kind::Data => "#1f5fbf",
            Kind::Reset => "#c00000",
            Kind::Fin => "#333333",
            Kind::Ack => "#999999",
        }
    }
}

struct Picture {
    out: String,
    span: f64,
}

impl Picture {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.span).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    }

    /// A label at `x`, kept inside the picture: anchored at its end near the right edge.
    fn label(&mut self, x: f64, y: f64, color: &str, text: &str) {
        let width = text.chars().count() as f64 * CHAR_W;
        let (x, anchor) = if x + width / 2.0 > W - 4.0 {
            ((x).min(W - 4.0), "end")
        } else if x - width / 2.0 < 4.0 {
            (x.max(4.0), "start")
        } else {
            (x, "middle")
        };
        let _ = writeln!(
            self.out,
            r#"<text x="{x:.1}" y="{y:.1}" fill="{color}" text-anchor="{anchor}" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"#,
            esc(text)
        );
    }

    /// A vertical marker across both lanes at `t`, labelled in row `row` above the lanes.
    fn marker(&mut self, t: f64, row: usize, color: &str, dashed: bool, text: &str) {
        let x = self.x(t);
        // Four rows between the title and the client's lane; more wrap around.
        let y = 88.0 + 14.0 * (row % 4) as f64;
        let dash = if dashed {
            r#" stroke-dasharray="4,3""#
        } else {
            ""
        };
        let _ = writeln!(
            self.out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{AXIS_Y}" stroke="{color}" stroke-width="1.5"{dash}><title>{t:.3}s {}</title></line>"#,
            y + 3.0,
            esc(text)
        );
        self.label(x, y, color, text);
    }

    /// An arrow from the sender's lane to the receiver's.
    fn arrow(&mut self, seg: &Segment, kind: Kind) {
        // Each direction a little to its side, so that a segment and its answer a few
        // microseconds later stand side by side.
        let (from, to, x) = match seg.dir {
            Dir::ToClient => (SERVER_Y, CLIENT_Y, self.x(seg.t) - 2.0),
            Dir::ToServer => (CLIENT_Y, SERVER_Y, self.x(seg.t) + 2.0),
        };
        // Stop short of the lane so the head shows.
        let tip = to + (from - to).signum() * 3.0;
        let color = kind.color();
        let dash = if matches!(kind, Kind::Retransmission(_)) {
            r#" stroke-dasharray="5,2""#
        } else {
            ""
        };
        let _ = writeln!(
            self.out,
            r#"<line x1="{x:.1}" y1="{from}" x2="{x:.1}" y2="{tip}" stroke="{color}" stroke-width="2"{dash} marker-end="url(#head-{})"><title>{:.3}s {} {}</title></line>"#,
            color.trim_start_matches('#'),
            seg.t,
            match seg.dir {
                Dir::ToClient => "server → client",
                Dir::ToServer => "client → server",
            },
            esc(&crate::describe(seg))
        );
    }
}

/// Each segment's kind: the handshake, probes and retransmissions as the analysis found them.
fn kinds(segments: &[Segment], report: &Report, retransmissions: &[f64]) -> Vec<Kind> {
    let mut handshake_ack_left = true;
    segments
        .iter()
        .map(|seg| {
            let same = |t: f64| (t - seg.t).abs() < 1e-9;
            if seg.has(analysis::RST) {
                Kind::Reset
            } else if seg.has(analysis::SYN) {
                Kind::Handshake
            } else if handshake_ack_left && seg.dir == Dir::ToServer && seg.len == 0 {
                // The ACK that completes the handshake.
                handshake_ack_left = false;
                Kind::Handshake
            } else if let Some(p) = report
                .probes
                .iter()
                .find(|p| same(p.t) && seg.dir == Dir::ToClient)
            {
                Kind::Probe(p.n)
            } else if let Some(i) = retransmissions.iter().position(|&t| same(t)) {
                Kind::Retransmission(i + 1)
            } else if seg.has(analysis::FIN) {
                Kind::Fin
            } else if seg.len > 0 {
                Kind::Data
            } else {
                Kind::Ack
            }
        })
        .collect()
}

/// The SVG document for `report`.
pub fn render(report: &Report) -> String {
    let mut p = Picture {
        out: String::new(),
        span: report.duration_s.max(1.0),
    };
    let _ = write!(
        p.out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<defs>
"##
    );
    for kind in [
        Kind::Handshake,
        Kind::Probe(0),
        Kind::Retransmission(0),
        Kind::Data,
        Kind::Reset,
        Kind::Fin,
        Kind::Ack,
    ] {
        let c = kind.color();
        let _ = writeln!(
            p.out,
            r#"<marker id="head-{}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>"#,
            c.trim_start_matches('#')
        );
    }
    let title = format!(
        "keepalive lab: {} ({})",
        report.scenario,
        report.ending.words()
    );
    let policy = if report.keepalive {
        format!("server policy {}", report.policy)
    } else {
        "server keepalive off".to_owned()
    };
    let _ = writeln!(
        p.out,
        r##"</defs>
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="26" font-size="16" font-weight="bold">{}</text>"##,
        esc(&fit(&title, 50))
    );
    // The summary in up to two lines, then the policy, left of the handshake's inset.
    let mut lines = wrap(&report.summary, 75, 2);
    lines.push(fit(&policy, 75));
    for (i, line) in lines.iter().enumerate() {
        let _ = writeln!(
            p.out,
            r##"<text x="20" y="{}" fill="#444">{}</text>"##,
            44 + 14 * i,
            esc(line)
        );
    }
    for (y, label) in [
        (CLIENT_Y, format!("client {}", report.client)),
        (SERVER_Y, format!("server {}", report.server.ip())),
    ] {
        let _ = writeln!(
            p.out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#bbb"/><text x="10" y="{}">{}</text>"##,
            W - RIGHT,
            y + 4.0,
            esc(&label)
        );
    }
    // The time axis, with about ten ticks at a round step.
    let _ = writeln!(
        p.out,
        r##"<line x1="{LEFT}" y1="{AXIS_Y}" x2="{}" y2="{AXIS_Y}" stroke="#333"/>"##,
        W - RIGHT
    );
    let step = [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ]
    .into_iter()
    .find(|s| p.span / s <= 12.0)
    .unwrap_or(1800.0);
    let mut i = 0u32;
    while f64::from(i) * step <= p.span + 1e-9 {
        let t = f64::from(i) * step;
        let x = p.x(t);
        let _ = writeln!(
            p.out,
            r##"<line x1="{x:.1}" y1="{AXIS_Y}" x2="{x:.1}" y2="{}" stroke="#333"/>"##,
            AXIS_Y + 5.0
        );
        p.label(x, AXIS_Y + 19.0, "#333", &format!("{}s", round(t)));
        i += 1;
    }

    // Segments.
    let wire = analysis::parse(
        &report.frames,
        report.start_ns,
        report.server,
        report.client,
    );
    let found = analysis::findings(&wire);
    let kinds = kinds(&wire.segments, report, &found.retransmissions);
    // Numbered probes, retransmissions and resets by their sender's lane: the server's below
    // it, the client's above it (a label is left out where it would overlap the one before in
    // its lane; the arrow's tooltip still says it).
    // Two rows of labels per lane, so that labels close in time stand one above the other;
    // only a third in the same place is left to the arrow's tooltip.
    let mut last_label_x = [[f64::MIN; 2]; 2];
    let tlp = report.tail_loss_probe;
    for (seg, &kind) in wire.segments.iter().zip(&kinds) {
        p.arrow(seg, kind);
        let text = match kind {
            Kind::Probe(n) => format!("P{n}"),
            Kind::Retransmission(_) if tlp.is_some_and(|t| (t - seg.t).abs() < 1e-9) => {
                "TLP".into()
            }
            Kind::Retransmission(n) => format!("R{}", n - usize::from(tlp.is_some())),
            Kind::Reset => "RST".into(),
            _ => continue,
        };
        let (lane, y, step) = match seg.dir {
            Dir::ToClient => (0, SERVER_Y + 16.0, 12.0),
            Dir::ToServer => (1, CLIENT_Y - 8.0, -12.0),
        };
        let x = p.x(seg.t);
        let room = text.len() as f64 * CHAR_W + 2.0;
        if let Some(row) = (0..2).find(|&r| x - last_label_x[lane][r] >= room) {
            p.label(x, y + step * row as f64, kind.color(), &text);
            last_label_x[lane][row] = x;
        }
    }
    handshake(&mut p, &wire.segments, &kinds);
    for icmp in &wire.icmp {
        let _ = writeln!(
            p.out,
            r##"<circle cx="{:.1}" cy="{}" r="4" fill="#8a2be2"><title>{:.3}s ICMP type {} code {}</title></circle>"##,
            p.x(icmp.t),
            SERVER_Y - 14.0,
            icmp.t,
            icmp.kind,
            icmp.code
        );
    }

    // Theory: where each probe should be (its idle or interval after the last segment from
    // the peer), and each ending.
    for probe in &report.probes {
        if let Some(after) = probe.after_last_rx {
            let x = p.x(probe.t - after + probe.theory);
            let _ = writeln!(
                p.out,
                r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#e67e00" stroke-dasharray="3,3"><title>probe {} in theory: {:.3}s after the peer last spoke</title></line>"##,
                SERVER_Y + 20.0,
                SERVER_Y + 40.0,
                probe.n,
                probe.theory
            );
        }
    }
    let mut row = 0;
    for e in &report.events {
        match &e.what {
            What::Fault { fault } => {
                let text = format!("fault: {}", format!("{fault:?}").to_lowercase());
                p.marker(e.t, row, "#a07800", false, &text);
                row += 1;
            }
            What::HeartbeatDead { misses } => {
                let text = format!("heartbeat: dead after {misses} missed");
                p.marker(e.t, row, "#2a7d7d", false, &text);
                row += 1;
            }
            What::ServerError { errno } => {
                p.marker(
                    e.t,
                    row,
                    "#c00000",
                    false,
                    &format!("server's read(): {errno}"),
                );
                row += 1;
            }
            What::ClientSends { text } => {
                let arrived = report
                    .events
                    .iter()
                    .any(|r| matches!(&r.what, What::ServerReads { text: t } if t == text));
                let what = if arrived {
                    format!("client sends \"{text}\"")
                } else {
                    format!("client sends \"{text}\": it never arrives")
                };
                p.marker(e.t, row, "#1f5fbf", false, &what);
                row += 1;
            }
            What::PeerClosed => {
                p.marker(e.t, row, "#333333", false, "client closed its end (FIN)");
                row += 1;
            }
            What::ProgramExited { end, status } => {
                p.marker(
                    e.t,
                    row,
                    "#333333",
                    false,
                    &format!("{end}'s program exited ({status})"),
                );
                row += 1;
            }
            _ => {}
        }
    }
    if let Some(t) = report.firewall_forgets {
        p.marker(t, row, "#7a4a00", true, "firewall forgets the connection");
        row += 1;
    }
    if let Some(h) = &report.heartbeat
        && let (Some(theory), Some(fault)) = (
            h.theory_s,
            report
                .events
                .iter()
                .find(|e| matches!(e.what, What::Fault { .. })),
        )
    {
        p.marker(
            fault.t + theory,
            row,
            "#2a7d7d",
            true,
            &format!("theory: heartbeat dead at {:.2}s", fault.t + theory),
        );
        row += 1;
    }
    if let Some(d) = &report.detection {
        p.marker(
            d.origin_t + d.theory_s,
            row,
            "#c00000",
            true,
            &format!("theory: ends {:.2}s after {}", d.theory_s, d.from),
        );
    }

    let verdict = match (&report.detection, report.ending) {
        (Some(d), _) => format!(
            "detected after {:.3}s, theory {:.3}s ({:+.3}s, tolerance {:.2}s)",
            d.measured_s,
            d.theory_s,
            d.measured_s - d.theory_s,
            d.tolerance_s
        ),
        (None, Ending::Alive) => "still alive at the end of the run".into(),
        (None, Ending::BlackHole) => {
            "a black hole: the server thinks the connection open, the client's data no longer arrives"
                .into()
        }
        (None, e) => format!("ended: {}", e.words()),
    };
    let heartbeat = report.heartbeat.as_ref().map_or(String::new(), |h| {
        match (h.declared_s, h.theory_s) {
            (Some(d), Some(t)) => format!(
                "heartbeat every {:.1}s declared the peer dead {d:.3}s after the fault, theory {t:.3}s",
                h.interval_s
            ),
            _ => "the heartbeat never declared the peer dead".into(),
        }
    });
    let _ = writeln!(
        p.out,
        r##"<text x="20" y="356">{}</text>
<text x="20" y="372">{}</text>
<text x="20" y="392" fill="#666">arrows: sender → receiver · green: handshake · orange P1…: keepalive probes (dashed: theory) · blue: data</text>
<text x="20" y="408" fill="#666">purple dashed R1…: retransmissions · grey: ACKs · black: FIN · red: RST · violet dot: ICMP · dashed lines: theory</text>
</svg>"##,
        esc(&fit(&verdict, 140)),
        esc(&fit(&heartbeat, 140)),
    );
    p.out
}

/// The handshake, which takes microseconds and is one line at the run's scale, drawn again as
/// a sequence diagram of its own in the top right corner: each segment an arrow between two
/// small lanes, with its flags and its time after the SYN.
fn handshake(p: &mut Picture, segments: &[Segment], kinds: &[Kind]) {
    let hs: Vec<&Segment> = segments
        .iter()
        .zip(kinds)
        .filter(|(_, k)| **k == Kind::Handshake)
        .map(|(s, _)| s)
        .take(3)
        .collect();
    let Some(first) = hs.first() else { return };
    let (left, top, bottom) = (W - 470.0, 24.0, 66.0);
    let color = Kind::Handshake.color();
    let _ = writeln!(
        p.out,
        r##"<text x="{left}" y="12" fill="{color}">handshake at {t:.3}s (zoomed, not to scale)</text>
<line x1="{lane}" y1="{top}" x2="{end}" y2="{top}" stroke="#bbb"/><text x="{left}" y="{ct}" fill="#666">client</text>
<line x1="{lane}" y1="{bottom}" x2="{end}" y2="{bottom}" stroke="#bbb"/><text x="{left}" y="{st}" fill="#666">server</text>"##,
        t = first.t,
        lane = left + 40.0,
        end = W - RIGHT,
        ct = top + 4.0,
        st = bottom + 4.0,
    );
    for (i, seg) in hs.iter().enumerate() {
        let x = left + 50.0 + 130.0 * i as f64;
        let (from, to) = match seg.dir {
            Dir::ToServer => (top, bottom - 3.0),
            Dir::ToClient => (bottom, top + 3.0),
        };
        let flags = if seg.has(analysis::SYN) && seg.has(analysis::ACK) {
            "SYN-ACK"
        } else if seg.has(analysis::SYN) {
            "SYN"
        } else {
            "ACK"
        };
        let micros = ((seg.t - first.t) * 1e6).max(0.0);
        let _ = writeln!(
            p.out,
            r##"<line x1="{x:.1}" y1="{from}" x2="{:.1}" y2="{to}" stroke="{color}" stroke-width="2" marker-end="url(#head-{})"><title>{}</title></line><text x="{:.1}" y="{:.1}" fill="{color}" font-size="11">{flags} +{micros:.0}µs</text>"##,
            x + 30.0,
            color.trim_start_matches('#'),
            esc(&crate::describe(seg)),
            x + 34.0,
            (top + bottom) / 2.0 + 4.0,
        );
    }
}

/// `t` without float noise (0.30000000000000004 → 0.3).
fn round(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}
