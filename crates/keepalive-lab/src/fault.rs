//! The fault stage: what happens to the client once the connection is idle, done through
//! rtnetlink routes and signals, no external program.

use crate::LabError;
use crate::client::Client;
use crate::netlink::Kind;
use crate::scenario::Fault;
use crate::topology::Net;
use std::time::Duration;

/// Does `fault` to the client (or, for `reject`, to the router in front of it).
pub(crate) fn fault(net: &Net, fault: Fault, client: &mut Client) -> Result<(), LabError> {
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
            client.vanish();
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
        Fault::Freeze => client.freeze(),
    }
    Ok(())
}
