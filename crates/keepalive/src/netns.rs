//! Running code inside another network namespace.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens a file there, and
//! `setns(2)` with `CLONE_NEWNET` moves only the calling thread. So work for a named namespace
//! runs on a short-lived thread that enters it, while the rest of the process stays put.

use crate::error::Error;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;

/// Where `ip netns add NAME` pins a namespace (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A network namespace, named the way `ip netns` names it, or by a path such as
/// `/proc/PID/ns/net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    /// The namespace `ip netns` calls `name`; a name starting with `/` is taken as a path.
    pub fn named(name: &str) -> Result<NetNs, Error> {
        let path = if name.starts_with('/') {
            PathBuf::from(name)
        } else if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            // A file name's limit (NAME_MAX): `ip netns add` cannot make a longer one.
            || name.len() > 255
        {
            return Err(Error::BadNetnsName(name.to_owned()));
        } else {
            PathBuf::from(NETNS_RUN_DIR).join(name)
        };
        Ok(NetNs {
            name: name.to_owned(),
            path,
        })
    }

    /// The network namespace of process `pid`, or `None` when it is the caller's own.
    pub fn of_pid(pid: u32) -> Result<Option<NetNs>, Error> {
        use std::os::unix::fs::MetadataExt;
        crate::process::check(u64::from(pid))?;
        let theirs =
            std::fs::metadata(format!("/proc/{pid}/ns/net")).map_err(|source| {
                match source.kind() {
                    std::io::ErrorKind::NotFound => Error::NoSuchProcess(pid),
                    _ => crate::process::ptrace_denied(pid, source),
                }
            })?;
        let ours = std::fs::metadata("/proc/self/ns/net").map_err(|source| Error::Io {
            what: "/proc/self/ns/net".into(),
            source,
        })?;
        if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
            return Ok(None);
        }
        Ok(Some(NetNs::named(&format!("/proc/{pid}/ns/net"))?))
    }

    /// The name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's inode (what /proc/PID/ns/net links to), when its file can be read.
    pub fn inode(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).ok().map(|m| m.ino())
    }

    /// Runs `f` on a thread inside this namespace and returns what it returns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        let file = File::open(&self.path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::NetnsNotFound {
                name: self.name.clone(),
                path: self.path.clone(),
            },
            _ => Error::Netns {
                name: self.name.clone(),
                source,
            },
        })?;
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|errno| {
                    let source = io::Error::from(errno);
                    match source.kind() {
                        io::ErrorKind::PermissionDenied => Error::NetnsPermission {
                            name: self.name.clone(),
                            source,
                        },
                        _ => Error::Netns {
                            name: self.name.clone(),
                            source,
                        },
                    }
                })?;
                Ok(f())
            });
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}
