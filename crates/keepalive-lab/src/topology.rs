//! Throwaway hosts: each a network namespace that the lab makes itself (a thread unshares
//! into a new one and hands back a descriptor of it, `/proc/thread-self/ns/net`) and that lives
//! exactly as long as the lab holds that descriptor: namespaces, veths, routes and nftables
//! rules vanish on success, failure, Ctrl-C, SIGKILL or a crash alike. Nothing is named in
//! /run/netns; two labs never collide. Links, addresses and routes are made through rtnetlink
//! ([`crate::netlink`]), sysctls written in /proc/sys from inside the namespace: no `ip`,
//! `nsenter` or `sysctl`.
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544's benchmarking range) and exist only inside
//! these namespaces.

use crate::LabError;
use crate::netlink::{Kind, Rtnl};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Where nftables' command is installed by Debian's nftables package. The firewall scenario
/// needs it (conntrack rules); nothing else does.
pub const NFT: &str = "/usr/sbin/nft";

/// One network namespace, alive as long as this value.
pub struct Host {
    pub name: &'static str,
    ns: OwnedFd,
}

fn ns_err(what: &str) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |e| LabError::Namespace(format!("{what}: {e}"))
}

impl Host {
    /// A new, empty network namespace with its loopback up.
    pub fn new(name: &'static str) -> Result<Host, LabError> {
        let made = std::thread::spawn(|| -> std::io::Result<OwnedFd> {
            // unshare(CLONE_NEWNET) moves only this thread; the descriptor keeps the namespace
            // alive after the thread ends.
            // SAFETY: CLONE_NEWNET changes only this thread's network namespace; it shares no
            // file table, filesystem or credentials state that other threads rely on.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET)? };
            let ns = rustix::fs::open(
                "/proc/thread-self/ns/net",
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?;
            Rtnl::open()?.set_up("lo", true)?;
            // No IPv6 in the lab: its router solicitations and multicast reports would only
            // add frames to the capture. /proc/sys/net is this thread's namespace's. A kernel
            // without IPv6 has no such file, which is as good.
            for conf in ["all", "default"] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
            }
            Ok(ns)
        })
        .join()
        .map_err(|_| LabError::Namespace("namespace thread panicked".into()))?
        .map_err(ns_err("a new network namespace"))?;
        Ok(Host { name, ns: made })
    }

    /// Runs `f` on a new thread that has entered this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, LabError>>, LabError> {
        let ns = self.ns.try_clone().map_err(ns_err(self.name))?;
        Ok(std::thread::spawn(move || {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| LabError::Namespace(e.to_string()))?;
            Ok(f())
        }))
    }

    /// Runs `f` inside this namespace and waits for it.
    fn inside<T: Send + 'static>(
        &self,
        what: String,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, LabError> {
        self.spawn(f)?
            .join()
            .map_err(|_| LabError::Namespace(format!("{what}: thread panicked")))?
            .and_then(|r| r.map_err(|e| LabError::Tool(format!("{what} in {}: {e}", self.name))))
    }

    /// rtnetlink requests made inside this namespace.
    pub fn rtnl<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Rtnl) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, LabError> {
        self.inside(what.to_owned(), move || f(&mut Rtnl::open()?))
    }

    /// Feeds an nftables ruleset to `nft -f -`, run inside the namespace.
    pub fn nft(&self, ruleset: &str) -> Result<(), LabError> {
        require_nft()?;
        let ruleset = ruleset.to_owned();
        let name = self.name;
        self.inside("nft".into(), move || {
            use std::io::Write;
            use std::process::{Command, Stdio};
            let mut child = Command::new(NFT)
                .args(["-f", "-"])
                .env_clear()
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(ruleset.as_bytes())?;
            }
            let out = child.wait_with_output()?;
            if out.status.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "{NFT} in {name}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        })
    }

    /// Writes a sysctl of this namespace (`net.ipv4.tcp_retries2`, conntrack timeouts):
    /// /proc/sys/net shows the namespace of the thread that opens the file.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        let path = sysctl_path(key);
        let value = value.to_owned();
        self.inside(format!("writing {key}"), move || {
            std::fs::write(path, value)
        })
    }

    /// Reads a sysctl of this namespace.
    pub fn read_sysctl(&self, key: &str) -> Result<String, LabError> {
        let path = sysctl_path(key);
        self.inside(format!("reading {key}"), move || {
            std::fs::read_to_string(path).map(|s| s.trim().to_owned())
        })
    }
}

fn sysctl_path(key: &str) -> std::path::PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// The firewall's conntrack rules need nftables' command; checked before anything is built.
pub fn require_nft() -> Result<(), LabError> {
    if Path::new(NFT).is_file() {
        Ok(())
    } else {
        Err(LabError::Tool(format!(
            "this scenario's firewall needs {NFT}, which is not installed: install Debian's nftables package"
        )))
    }
}

/// Where the server and client sit, and who is between.
pub struct Net {
    pub client: Host,
    pub server: Host,
    pub router: Option<Host>,
    pub client_ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    /// The router's address on the client's side.
    pub router_client_side: Option<Ipv4Addr>,
    /// The server's interface, for capture.
    pub server_if: &'static str,
}

/// A veth pair from `a` (named `a_if`, with `a_addr`) to `b` (named `b_if`, with `b_addr`),
/// both ends up, in one /24.
fn veth(
    (a, a_if, a_addr): (&Host, &'static str, Ipv4Addr),
    (b, b_if, b_addr): (&Host, &'static str, Ipv4Addr),
) -> Result<(), LabError> {
    let peer_ns = b.ns.try_clone().map_err(ns_err(b.name))?;
    a.rtnl("making a veth pair", move |r| {
        r.add_veth(a_if, b_if, peer_ns.as_raw_fd())?;
        r.add_address(a_if, a_addr, 24)?;
        r.set_up(a_if, true)
    })?;
    b.rtnl("configuring a veth", move |r| {
        r.add_address(b_if, b_addr, 24)?;
        r.set_up(b_if, true)
    })
}

/// The default route of `host`, through `gateway`.
fn default_route(host: &Host, gateway: Ipv4Addr) -> Result<(), LabError> {
    host.rtnl("adding the default route", move |r| {
        r.add_route(Ipv4Addr::UNSPECIFIED, 0, Kind::Unicast, Some(gateway))
    })
}

/// Where a topology puts the server: what `{server}` stands for in a `--client-cmd`.
pub fn server_address(topology: crate::scenario::Topology) -> Ipv4Addr {
    match topology {
        crate::scenario::Topology::Pair => Ipv4Addr::new(198, 18, 0, 2),
        crate::scenario::Topology::Router => Ipv4Addr::new(198, 18, 2, 2),
    }
}

impl Net {
    /// Client 198.18.0.1 and server 198.18.0.2 on one veth pair.
    pub fn pair() -> Result<Net, LabError> {
        let (client, server) = (Host::new("client")?, Host::new("server")?);
        let (client_ip, server_ip) = (
            Ipv4Addr::new(198, 18, 0, 1),
            server_address(crate::scenario::Topology::Pair),
        );
        veth((&client, "eth0", client_ip), (&server, "eth0", server_ip))?;
        Ok(Net {
            client,
            server,
            router: None,
            client_ip,
            server_ip,
            router_client_side: None,
            server_if: "eth0",
        })
    }

    /// Client 198.18.1.2 — (198.18.1.1) router (198.18.2.1) — server 198.18.2.2.
    pub fn router() -> Result<Net, LabError> {
        let (client, router, server) = (
            Host::new("client")?,
            Host::new("router")?,
            Host::new("server")?,
        );
        let ip = |c, d| Ipv4Addr::new(198, 18, c, d);
        veth((&client, "eth0", ip(1, 2)), (&router, "c0", ip(1, 1)))?;
        veth((&server, "eth0", ip(2, 2)), (&router, "s0", ip(2, 1)))?;
        default_route(&client, ip(1, 1))?;
        default_route(&server, ip(2, 1))?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(Net {
            client,
            server,
            router: Some(router),
            client_ip: Ipv4Addr::new(198, 18, 1, 2),
            server_ip: server_address(crate::scenario::Topology::Router),
            router_client_side: Some(Ipv4Addr::new(198, 18, 1, 1)),
            server_if: "eth0",
        })
    }
}
