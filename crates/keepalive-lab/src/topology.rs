//! Throwaway hosts: each a network namespace held by a `sleep` process that dies with the lab
//! (PR_SET_PDEATHSIG), so that namespaces, veths and nftables rules vanish on success, failure,
//! Ctrl-C or a crash alike. Nothing is named in /run/netns; two labs never collide.
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544's benchmarking range) and exist only inside
//! these namespaces.

use crate::LabError;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// One network namespace, alive as long as its holder process.
pub struct Host {
    pub name: &'static str,
    holder: Child,
}

impl Host {
    /// A new, empty network namespace with its loopback up.
    pub fn new(name: &'static str) -> Result<Host, LabError> {
        let mut cmd = Command::new("sleep");
        cmd.arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec, only async-signal-safe calls: prctl and unshare.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::unshare(libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let holder = cmd
            .spawn()
            .map_err(|e| LabError::Namespace(e.to_string()))?;
        let host = Host { name, holder };
        host.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(host)
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `/proc/PID/ns/net` of the namespace.
    pub fn netns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid())
    }

    /// Runs a tool (ip, nft, sysctl) inside the namespace and fails with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String, LabError> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path()))
            .args(args)
            .output()
            .map_err(|e| LabError::Tool(format!("nsenter {}: {e}", args.join(" "))))?;
        if !out.status.success() {
            return Err(LabError::Tool(format!(
                "{} in {}: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Feeds an nftables ruleset to `nft -f -` inside the namespace.
    pub fn nft(&self, ruleset: &str) -> Result<(), LabError> {
        use std::io::Write;
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path()))
            .args(["nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LabError::Tool(format!("nft: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(ruleset.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| LabError::Tool(format!("nft: {e}")))?;
        if !out.status.success() {
            return Err(LabError::Tool(format!(
                "nft in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Writes a sysctl of this namespace (`net.ipv4.tcp_retries2`, conntrack timeouts).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        self.run(&["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Runs `f` on a new thread that has entered this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, LabError>>, LabError> {
        let ns = File::open(self.netns_path()).map_err(|e| LabError::Namespace(e.to_string()))?;
        Ok(std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a namespace fd we hold open.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(LabError::Namespace(
                    std::io::Error::last_os_error().to_string(),
                ));
            }
            Ok(f())
        }))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
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

/// A veth pair from `a` (named `a_if`) to `b` (named `b_if`).
fn veth(a: &Host, a_if: &str, b: &Host, b_if: &str) -> Result<(), LabError> {
    a.run(&[
        "ip",
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        &b.pid().to_string(),
    ])?;
    a.run(&["ip", "link", "set", a_if, "up"])?;
    b.run(&["ip", "link", "set", b_if, "up"])?;
    Ok(())
}

impl Net {
    /// Client 198.18.0.1 and server 198.18.0.2 on one veth pair.
    pub fn pair() -> Result<Net, LabError> {
        let (client, server) = (Host::new("client")?, Host::new("server")?);
        veth(&client, "eth0", &server, "eth0")?;
        client.run(&["ip", "addr", "add", "198.18.0.1/24", "dev", "eth0"])?;
        server.run(&["ip", "addr", "add", "198.18.0.2/24", "dev", "eth0"])?;
        Ok(Net {
            client,
            server,
            router: None,
            client_ip: Ipv4Addr::new(198, 18, 0, 1),
            server_ip: Ipv4Addr::new(198, 18, 0, 2),
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
        veth(&client, "eth0", &router, "c0")?;
        veth(&server, "eth0", &router, "s0")?;
        client.run(&["ip", "addr", "add", "198.18.1.2/24", "dev", "eth0"])?;
        client.run(&["ip", "route", "add", "default", "via", "198.18.1.1"])?;
        server.run(&["ip", "addr", "add", "198.18.2.2/24", "dev", "eth0"])?;
        server.run(&["ip", "route", "add", "default", "via", "198.18.2.1"])?;
        router.run(&["ip", "addr", "add", "198.18.1.1/24", "dev", "c0"])?;
        router.run(&["ip", "addr", "add", "198.18.2.1/24", "dev", "s0"])?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(Net {
            client,
            server,
            router: Some(router),
            client_ip: Ipv4Addr::new(198, 18, 1, 2),
            server_ip: Ipv4Addr::new(198, 18, 2, 2),
            router_client_side: Some(Ipv4Addr::new(198, 18, 1, 1)),
            server_if: "eth0",
        })
    }
}
