//! Starting a program with keepalive injected: choosing the mechanism (the LD_PRELOAD shim, or
//! the seccomp supervisor of [`crate::supervise`] for what the shim cannot reach), finding the
//! shim, and the environment to exec it with.
//!
//! The dynamic loader honours LD_PRELOAD only for dynamically linked programs, and in secure
//! execution (a setuid or setgid program run by someone else, or one with file capabilities;
//! `AT_SECURE`, see ld.so(8)) only for libraries in the standard directories that are setuid
//! themselves. Go programs make their socket system calls directly, never through libc's
//! socket(), so a preloaded hook never sees them. `keepalive set --pid` reaches all of these.

use crate::error::Error;
use crate::policy::grammar::Mode;
use crate::policy::injection::{ENV, Injection};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The shim's file name, as cargo builds it.
pub const SHIM_FILE: &str = "libkeepalive_inject.so";
/// Overrides where the shim is looked for.
pub const SHIM_ENV: &str = "KEEPALIVE_SHIM";

/// Where the shim is looked for, in order: `$KEEPALIVE_SHIM`, next to the `keepalive` binary
/// (a cargo build), and `../lib/keepalive/` from it (an installed prefix).
pub fn shim_candidates(exe: &Path, override_path: Option<&OsStr>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = override_path.map(PathBuf::from).into_iter().collect();
    if let Some(dir) = exe.parent() {
        out.push(dir.join(SHIM_FILE));
        out.push(dir.join("../lib/keepalive").join(SHIM_FILE));
    }
    out
}

/// The first candidate that exists, made absolute.
pub fn find_shim(exe: &Path, override_path: Option<&OsStr>) -> Result<PathBuf, Error> {
    let candidates = shim_candidates(exe, override_path);
    let found = candidates
        .iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::ShimNotFound {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let path = found.canonicalize().map_err(|source| Error::Io {
        what: found.display().to_string(),
        source,
    })?;
    // LD_PRELOAD splits on ':' and ' '.
    if path
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| *b == b':' || *b == b' ')
    {
        return Err(Error::ShimPath(path));
    }
    Ok(path)
}

/// Looks `name` up as a shell would: a name with a slash is a path, anything else is searched
/// in `path_var` (PATH).
pub fn resolve_program(name: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if name.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

/// Why the shim cannot act inside a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreachable {
    /// Statically linked: no dynamic loader, so no LD_PRELOAD.
    Static,
    /// A Go program: its sockets bypass libc.
    Go,
    /// Setuid or setgid for someone else: the loader ignores LD_PRELOAD.
    SetId(&'static str),
    /// File capabilities: secure execution, as for setuid.
    FileCapabilities,
}

impl Unreachable {
    /// One line on why, for messages.
    pub fn reason(&self) -> String {
        match self {
            Unreachable::Static => {
                "it is statically linked, so the dynamic loader never reads LD_PRELOAD".into()
            }
            Unreachable::Go => {
                "it is a Go program, which makes its socket system calls without libc".into()
            }
            Unreachable::SetId(bit) => {
                format!("it is {bit} for another user, so the loader ignores LD_PRELOAD")
            }
            Unreachable::FileCapabilities => {
                "it has file capabilities, so the loader ignores LD_PRELOAD".into()
            }
        }
    }
}

/// How a policy reaches a program started by `keepalive run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// The LD_PRELOAD shim: the program is exec'd in place and keeps keepalive's pid.
    Shim,
    /// A seccomp supervisor ([`crate::supervise`]): keepalive stays the parent.
    Seccomp,
}

/// Which mechanism the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The shim, or a refusal.
    Shim,
    /// The supervisor, whatever the program is.
    Seccomp,
    /// The cheapest that reaches the program: the shim for dynamically linked programs, the
    /// supervisor for static and Go programs and for scripts (which may exec either).
    Auto,
}

/// How `keepalive run` will start a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// The program (or a script's interpreter) is a Go program.
    pub go: bool,
}

impl Plan {
    /// A warning for the user, if the policy will not have the last word: Go's net package
    /// turns keepalive on with 15 s idle and interval on every TCP connection it dials or
    /// accepts (net.Dialer.KeepAlive, net.ListenConfig.KeepAlive; `defaultTCPKeepAlive`), after
    /// connect and accept, so in default mode Go's values replace the policy's.
    pub fn warning(&self, injection: &Injection) -> Option<&'static str> {
        (self.go && self.mechanism == Mechanism::Seccomp && injection.mode != Mode::Force).then_some(
            "Go sets its own keepalive (15 s idle and interval) on every connection it dials or accepts, so Go's values win over the policy's; use --force to keep the policy",
        )
    }
}

/// Chooses how to start `program`. setuid, setgid and file-capability programs are refused
/// whatever `via` says: the loader ignores LD_PRELOAD for them, and the no_new_privs that a
/// seccomp filter needs would start them without their privileges.
pub fn plan(program: &Path, via: Via) -> Result<Plan, Error> {
    let blocked = reach(program)?;
    let seccomp = |go| Plan {
        mechanism: Mechanism::Seccomp,
        go,
    };
    match (blocked, via) {
        (Some((program, why @ (Unreachable::SetId(_) | Unreachable::FileCapabilities))), _) => {
            Err(Error::Privileged {
                program,
                why: why.reason(),
            })
        }
        (Some((program, why)), Via::Shim) => Err(Error::Unreachable {
            program,
            why: why.reason(),
        }),
        (Some((_, why)), Via::Seccomp | Via::Auto) => Ok(seccomp(why == Unreachable::Go)),
        (None, Via::Seccomp) => Ok(seccomp(false)),
        // A script may exec anything, a Go or static program among them (a wrapper that ends in
        // `exec ./server`), and the shim would silently miss it: the supervisor reaches every
        // program the script starts.
        (None, Via::Auto) if is_script(program) => Ok(seccomp(false)),
        (None, Via::Shim | Via::Auto) => Ok(Plan {
            mechanism: Mechanism::Shim,
            go: false,
        }),
    }
}

/// Whether `program` starts with `#!`.
fn is_script(program: &Path) -> bool {
    let mut head = [0u8; 2];
    File::open(program)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .is_ok_and(|n| n == 2 && head == *b"#!")
}

/// Whether the shim can act inside `program`; a script is judged by its interpreter.
/// `None` means nothing stands in the way.
pub fn reach(program: &Path) -> Result<Option<(PathBuf, Unreachable)>, Error> {
    let mut current = program.to_path_buf();
    for _ in 0..4 {
        let io = |source| Error::Io {
            what: current.display().to_string(),
            source,
        };
        let meta = current.metadata().map_err(io)?;
        if let Some(why) = setid(&meta) {
            return Ok(Some((current, why)));
        }
        if !rustix::process::getuid().is_root() && has_file_caps(&current) {
            return Ok(Some((current, Unreachable::FileCapabilities)));
        }
        let mut file = File::open(&current).map_err(io)?;
        let mut head = [0u8; 256];
        let n = read_up_to(&mut file, &mut head).map_err(io)?;
        let head = &head[..n];
        if let Some(interpreter) = shebang(head) {
            current = interpreter;
            continue;
        }
        if head.starts_with(b"\x7fELF") {
            let elf = elf::inspect(&file).map_err(io)?;
            if elf.go {
                return Ok(Some((current, Unreachable::Go)));
            }
            if !elf.dynamic {
                return Ok(Some((current, Unreachable::Static)));
            }
        }
        return Ok(None);
    }
    Ok(None)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn setid(meta: &std::fs::Metadata) -> Option<Unreachable> {
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    if meta.mode() & 0o4000 != 0 && meta.uid() != uid {
        return Some(Unreachable::SetId("setuid"));
    }
    if meta.mode() & 0o2000 != 0 && meta.mode() & 0o010 != 0 && meta.gid() != gid {
        return Some(Unreachable::SetId("setgid"));
    }
    None
}

fn has_file_caps(path: &Path) -> bool {
    let mut buf = [0u8; 64];
    rustix::fs::getxattr(path, "security.capability", &mut buf).is_ok()
}

/// `#!/path/interp [arg]`: the program that will really run. `/usr/bin/env NAME` is followed
/// to NAME on PATH.
fn shebang(head: &[u8]) -> Option<PathBuf> {
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let mut words = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty());
    let interpreter = Path::new(OsStr::from_bytes(words.next()?));
    if interpreter.file_name() == Some(OsStr::new("env")) {
        let name = words.find(|w| !w.starts_with(b"-"))?;
        return resolve_program(OsStr::from_bytes(name), std::env::var_os("PATH").as_deref());
    }
    Some(interpreter.to_path_buf())
}

/// The environment additions for running a program under the shim: LD_PRELOAD with the shim
/// appended to whatever is there (once), and the injection in `KEEPALIVE_POLICY`.
pub fn environment(
    shim: &Path,
    existing_preload: Option<&OsStr>,
    injection: &Injection,
) -> [(OsString, OsString); 2] {
    let mut preload = OsString::new();
    if let Some(existing) = existing_preload.filter(|e| !e.is_empty()) {
        let already = existing
            .as_bytes()
            .split(|b| *b == b':' || *b == b' ')
            .any(|entry| entry == shim.as_os_str().as_bytes());
        if already {
            preload.push(existing);
        } else {
            preload.push(existing);
            preload.push(":");
            preload.push(shim);
        }
    } else {
        preload.push(shim);
    }
    [
        ("LD_PRELOAD".into(), preload),
        (ENV.into(), injection.to_string().into()),
    ]
}

/// Just enough ELF to answer two questions: dynamically linked (a PT_INTERP program header)?
/// Go (a `.go.buildinfo` or `.note.go.buildid` section)?
mod elf {
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::FileExt;

    pub struct Facts {
        pub dynamic: bool,
        pub go: bool,
    }

    const PT_INTERP: u32 = 3;

    fn bad() -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, "malformed ELF headers")
    }

    struct Reader<'a> {
        file: &'a File,
        le: bool,
        wide: bool,
    }

    impl Reader<'_> {
        fn bytes(&self, at: u64, n: usize) -> io::Result<Vec<u8>> {
            if n > 1 << 24 {
                return Err(bad());
            }
            let mut buf = vec![0; n];
            self.file.read_exact_at(&mut buf, at)?;
            Ok(buf)
        }
        fn uint(&self, at: u64, n: usize) -> io::Result<u64> {
            let b = self.bytes(at, n)?;
            let mut v = 0u64;
            for i in 0..n {
                let byte = if self.le { b[n - 1 - i] } else { b[i] };
                v = (v << 8) | u64::from(byte);
            }
            Ok(v)
        }
        /// An address-sized field: 8 bytes in ELF64, 4 in ELF32.
        fn addr(&self, at: u64) -> io::Result<u64> {
            self.uint(at, if self.wide { 8 } else { 4 })
        }
    }

    pub fn inspect(file: &File) -> io::Result<Facts> {
        let mut ident = [0u8; 6];
        file.read_exact_at(&mut ident, 0)?;
        let r = Reader {
            file,
            wide: ident[4] == 2,
            le: ident[5] == 1,
        };
        let (phoff, shoff) = if r.wide {
            (r.addr(0x20)?, r.addr(0x28)?)
        } else {
            (r.addr(0x1c)?, r.addr(0x20)?)
        };
        let base = if r.wide { 0x36 } else { 0x2a };
        let phentsize = r.uint(base, 2)?;
        let phnum = r.uint(base + 2, 2)?;
        let shentsize = r.uint(base + 4, 2)?;
        let shnum = r.uint(base + 6, 2)?;
        let shstrndx = r.uint(base + 8, 2)?;

        let mut dynamic = false;
        for i in 0..phnum {
            if r.uint(phoff + i * phentsize, 4)? as u32 == PT_INTERP {
                dynamic = true;
            }
        }

        let mut go = false;
        if shoff != 0 && shnum != 0 && shstrndx < shnum {
            // sh_offset and sh_size of the section-name string table.
            let (off_at, size_at) = if r.wide { (0x18, 0x20) } else { (0x10, 0x14) };
            let strtab = shoff + shstrndx * shentsize;
            let names = r.bytes(r.addr(strtab + off_at)?, r.addr(strtab + size_at)? as usize)?;
            for i in 0..shnum {
                let name_at = r.uint(shoff + i * shentsize, 4)? as usize;
                let name = names.get(name_at..).unwrap_or(&[]);
                let name = name.split(|b| *b == 0).next().unwrap_or(&[]);
                if name == b".go.buildinfo" || name == b".note.go.buildid" {
                    go = true;
                }
            }
        }
        Ok(Facts { dynamic, go })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_is_appended_once() {
        let inj = Injection::parse("idle=30").unwrap();
        let shim = Path::new("/opt/k/libkeepalive_inject.so");
        let [(k, v), (p, q)] = environment(shim, None, &inj);
        assert_eq!(
            (k.as_os_str(), v.as_os_str()),
            (OsStr::new("LD_PRELOAD"), shim.as_os_str())
        );
        assert_eq!(
            (p.as_os_str(), q.as_os_str()),
            (OsStr::new("KEEPALIVE_POLICY"), OsStr::new("idle=30s"))
        );
        let [(_, v), _] = environment(shim, Some(OsStr::new("/x/other.so")), &inj);
        assert_eq!(v, "/x/other.so:/opt/k/libkeepalive_inject.so");
        let [(_, v), _] = environment(
            shim,
            Some(OsStr::new("/x/a.so /opt/k/libkeepalive_inject.so")),
            &inj,
        );
        assert_eq!(v, "/x/a.so /opt/k/libkeepalive_inject.so");
    }

    #[test]
    fn shebangs() {
        assert_eq!(
            shebang(b"#!/bin/sh -e\necho"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            shebang(b"#! /usr/bin/python3\n"),
            Some(PathBuf::from("/usr/bin/python3"))
        );
        assert_eq!(shebang(b"\x7fELF"), None);
        let sh = shebang(b"#!/usr/bin/env -S sh\n").unwrap();
        assert!(sh.ends_with("sh"), "{sh:?}");
    }

    #[test]
    fn this_test_binary_is_dynamic_and_not_go() {
        let me = std::env::current_exe().unwrap();
        assert_eq!(reach(&me).unwrap(), None);
    }
}
