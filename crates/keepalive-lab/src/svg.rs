//! A picture of a run: a time axis, the client's and the server's lanes, every segment as a
//! tick in its sender's lane (probes marked, answered or not), the fault, the end, and where
//! the theory put each probe and the reset. Plain SVG, no dependencies.

use crate::analysis::{self, Dir};
use crate::{Ending, Report};
use std::fmt::Write;

const W: f64 = 960.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 30.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG document for `report`.
pub fn render(report: &Report) -> String {
    let span = report.duration_s.max(1.0);
    let x = |t: f64| LEFT + (t / span).clamp(0.0, 1.0) * (W - LEFT - RIGHT);
    let (client_y, server_y, axis_y) = (110.0, 190.0, 250.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="330" viewBox="0 0 {W} 330" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="28" font-size="16" font-weight="bold">keepalive lab: {} ({})</text>
<text x="20" y="48" fill="#444">{}</text>
<text x="20" y="66" fill="#444">policy {}{}</text>
"##,
        esc(&report.scenario),
        esc(&format!("{:?}", report.ending).to_lowercase()),
        esc(&report.summary),
        esc(&report.policy),
        if report.keepalive {
            ""
        } else {
            " (keepalive off)"
        },
    );
    for (y, label) in [
        (client_y, format!("client {}", report.client)),
        (server_y, format!("server {}", report.server.ip())),
    ] {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#bbb"/><text x="10" y="{}">{}</text>"##,
            W - RIGHT,
            y + 4.0,
            esc(&label)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#333"/>"##,
        W - RIGHT
    );
    let step = if span > 60.0 {
        10.0
    } else if span > 20.0 {
        5.0
    } else {
        1.0
    };
    let mut t = 0.0;
    while t <= span {
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{axis_y}" x2="{0}" y2="{1}" stroke="#333"/><text x="{0}" y="{2}" text-anchor="middle">{t}s</text>"##,
            x(t),
            axis_y + 5.0,
            axis_y + 20.0
        );
        t += step;
    }
    // Segments: a tick in the sender's lane with an arrow towards the receiver's.
    let wire = analysis::parse(
        &report.frames,
        report.start_ns,
        report.server,
        report.client,
    );
    let probe_times: Vec<f64> = report.probes.iter().map(|p| p.t).collect();
    for seg in &wire.segments {
        let (from, to) = match seg.dir {
            Dir::ToClient => (server_y, client_y),
            Dir::ToServer => (client_y, server_y),
        };
        let is_probe =
            probe_times.iter().any(|p| (p - seg.t).abs() < 1e-9) && seg.dir == Dir::ToClient;
        let color = if seg.has(analysis::RST) {
            "#c00"
        } else if is_probe {
            "#e67e00"
        } else if seg.len > 0 {
            "#1f5fbf"
        } else {
            "#888"
        };
        let tip = from + (to - from) * 0.8;
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{from}" x2="{0}" y2="{tip}" stroke="{color}" stroke-width="2"><title>{1:.3}s {2}</title></line>"#,
            x(seg.t),
            seg.t,
            esc(&crate::describe(seg))
        );
    }
    for icmp in &wire.icmp {
        let _ = writeln!(
            s,
            r##"<circle cx="{}" cy="{}" r="4" fill="#8a2be2"><title>{:.3}s ICMP type {} code {}</title></circle>"##,
            x(icmp.t),
            server_y - 14.0,
            icmp.t,
            icmp.kind,
            icmp.code
        );
    }
    // Theory: where each probe and the reset should be.
    if let Some(last) = report
        .probes
        .first()
        .and_then(|p| p.after_last_rx.map(|a| p.t - a))
    {
        for p in &report.probes {
            let _ = writeln!(
                s,
                r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#e67e00" stroke-dasharray="3,3"/>"##,
                x(last + p.theory),
                server_y + 8.0,
                server_y + 30.0
            );
        }
        if let Some(d) = &report.detection {
            let _ = writeln!(
                s,
                r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#c00" stroke-dasharray="3,3"/><text x="{0}" y="{3}" fill="#c00" text-anchor="middle">theory {4:.2}s</text>"##,
                x(last + d.theory_s),
                client_y - 30.0,
                server_y + 30.0,
                client_y - 34.0,
                d.theory_s
            );
        }
    }
    for e in &report.events {
        if matches!(e.what, crate::What::Fault { .. }) {
            let _ = writeln!(
                s,
                r##"<line x1="{0}" y1="80" x2="{0}" y2="{axis_y}" stroke="#d4a000" stroke-width="2"/><text x="{0}" y="92" fill="#a07800">fault</text>"##,
                x(e.t)
            );
        }
    }
    let verdict = match (&report.detection, report.ending) {
        (Some(d), _) => format!(
            "detected after {:.3}s, theory {:.3}s ({:+.3}s)",
            d.measured_s,
            d.theory_s,
            d.measured_s - d.theory_s
        ),
        (None, Ending::Alive) => "still alive at the end of the run".into(),
        (None, e) => format!("{e:?}"),
    };
    let _ = writeln!(
        s,
        r##"<text x="20" y="300">{}</text>
<text x="20" y="318" fill="#666">orange: keepalive probes (dashed: theory) · blue: data · grey: ACKs · red: RST · purple: ICMP</text>
</svg>"##,
        esc(&verdict)
    );
    s
}
