//! Keepalive policies for a path: what keeps a connection through a middlebox that forgets
//! idle connections (docs/middleboxes.tsv, or a timeout measured), and still finds a dead peer
//! soon.

use crate::policy::{Key, Policy};

/// The policy that keeps a connection alive through a transport-layer middlebox (a NAT,
/// firewall or layer-4 load balancer: every segment refreshes its state, a keepalive probe and
/// the ACK that answers it included) that forgets a connection after `timeout_s` seconds of
/// silence, or `None` for a timeout under 2 s, which no keepalive policy can beat (idle is
/// whole seconds, at least 1, and a probe sent at the timeout races it).
///
/// - idle: four fifths of the timeout, rounded down: the fifth left over covers the device's
///   own timer granularity and the probe's trip to it; never above 7200 s, the kernel's
///   default, which already keeps a connection through anything slower.
/// - interval: a tenth of idle, within 1..=75 s (75 s is the kernel's default): unanswered
///   probes come quickly enough that a dead peer is found within about 1.4 x idle.
/// - count: 3 unanswered probes.
pub fn through(timeout_s: u64) -> Option<Policy> {
    if timeout_s < 2 {
        return None;
    }
    let idle = (timeout_s * 4 / 5).clamp(1, 7200) as u32;
    let interval = (idle / 10).clamp(1, 75);
    // Through the grammar, which holds the kernel's limits: every value here is inside them.
    let mut policy = Policy::empty();
    policy.set(Key::Idle, &idle.to_string()).ok()?;
    policy.set(Key::Interval, &interval.to_string()).ok()?;
    policy.set(Key::Count, "3").ok()?;
    Some(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Settings;

    #[test]
    fn every_probe_goes_out_before_the_device_forgets() {
        for t in 2..=20_000u64 {
            let p = through(t).unwrap();
            let s = p.resolve(&Settings::LINUX_DEFAULT).unwrap();
            assert!(u64::from(s.idle) < t, "{t}: {p}");
            assert!(u64::from(s.interval) < t, "{t}: {p}");
            // It reads back through the one grammar.
            assert_eq!(p.to_string().parse::<Policy>().unwrap(), p);
        }
        assert_eq!(
            through(350).unwrap().to_string(),
            "idle=280s,interval=28s,count=3"
        );
        assert_eq!(
            through(60).unwrap().to_string(),
            "idle=48s,interval=4s,count=3"
        );
        assert_eq!(
            through(432_000).unwrap().to_string(),
            "idle=7200s,interval=75s,count=3"
        );
        assert_eq!(
            through(2).unwrap().to_string(),
            "idle=1s,interval=1s,count=3"
        );
        assert_eq!(through(1), None);
    }
}
