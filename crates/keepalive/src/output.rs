//! Every file the tools write for the user (`lab --pcap`, `--svg`, `status --prometheus`,
//! `sysctl persist`): made whole or not at all, through one path. The content goes to an
//! unnamed file (`O_TMPFILE`) in the target's directory, given mode 0644 whatever the umask
//! (fchmod: a file applied as root at boot must never be world-writable), which gets a name
//! only when complete and synced: linked under a fresh temporary name (`linkat` never follows or
//! replaces what is there, so a symlink or file planted at that name makes the write fail,
//! naming the planted path, and is left alone) and renamed over the target, then the directory
//! synced. The temporary name is `.NAME.PID.tmp`, NAME cut short (with a hash of all of it)
//! where that would pass the filesystem's limit on a name; a NAME past that limit itself is
//! refused at the start. Errors name the path asked for, except one about a name planted at
//! the temporary name. The unnamed file is made when the output is asked for, so a path that
//! cannot be written fails before any work is done, and a run that fails or is killed leaves nothing
//! behind: an unnamed file vanishes with its last descriptor.
//!
//! A filesystem without unnamed files (vfat, some FUSE and network filesystems: EOPNOTSUPP)
//! gets the same through a named one: created exclusively (O_CREAT|O_EXCL|O_NOFOLLOW, so
//! nothing planted at the name is opened) under the temporary name at once, and removed if the
//! output is abandoned; a run killed by a signal before it finishes can leave it behind there.

use crate::error::Error;
use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// An output file on its way.
#[derive(Debug)]
pub struct Pending {
    path: PathBuf,
    /// The directory, opened once through no other user's symbolic link; every later step
    /// (the check of the target, the unnamed file, the link, the rename, the sync) is made
    /// relative to it, so that swapping a directory on the path for a link afterwards changes
    /// nothing.
    dir: OwnedFd,
    name: std::ffi::OsString,
    file: File,
    /// The longest name the directory's filesystem takes.
    name_max: usize,
    /// The file's temporary name, when it has one from the start (no O_TMPFILE here).
    named: Option<std::ffi::OsString>,
}

/// Linux's limit on one name in a path (NAME_MAX), where the filesystem says none.
const NAME_MAX: usize = 255;

/// The temporary name of an output called `name`: hidden, and this process's own, within
/// `name_max` bytes (the directory's filesystem's limit on a name). A name too long to take
/// the extra bytes whole keeps what fits of its start and a hash of all of it, so two long
/// names that start alike still get temporary names of their own.
fn temporary_name(name: &std::ffi::OsStr, name_max: usize) -> std::ffi::OsString {
    use std::hash::{Hash, Hasher};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let suffix = format!(".{}.tmp", std::process::id());
    let bytes = name.as_bytes();
    let mut tmp = b".".to_vec();
    if 1 + bytes.len() + suffix.len() <= name_max {
        tmp.extend_from_slice(bytes);
    } else {
        // DefaultHasher::new() has fixed keys: the same name, the same hash.
        let mut hasher = std::hash::DefaultHasher::new();
        bytes.hash(&mut hasher);
        let hash = format!(".{:016x}", hasher.finish());
        let room = name_max.saturating_sub(1 + hash.len() + suffix.len());
        tmp.extend_from_slice(&bytes[..room.min(bytes.len())]);
        tmp.extend_from_slice(hash.as_bytes());
    }
    tmp.extend_from_slice(suffix.as_bytes());
    std::ffi::OsString::from_vec(tmp)
}

/// The longest name the filesystem of `dir` takes (statfs's f_namelen), at most NAME_MAX.
fn name_max(dir: &OwnedFd) -> usize {
    rustix::fs::fstatfs(dir)
        .ok()
        .and_then(|st| usize::try_from(st.f_namelen).ok())
        .filter(|&n| n > 0)
        .map_or(NAME_MAX, |n| n.min(NAME_MAX))
}

/// Whether an error making the temporary name is about something already there: a name
/// planted at it, which the error then names.
fn planted(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::EXIST
}

impl Pending {
    /// Starts the file at `path`: checks now that its directory takes a new file.
    pub fn create(path: &Path) -> Result<Pending, Error> {
        Self::start(path, true)
    }

    /// `create`, with an unnamed file where `unnamed` and the filesystem has them.
    fn start(path: &Path, unnamed: bool) -> Result<Pending, Error> {
        let Some(name) = path.file_name().map(std::ffi::OsStr::to_os_string) else {
            return Err(output_error(
                path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it names no file (it ends in '..' or '/'): give a file's path",
                ),
            ));
        };
        let parent = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = open_dir(path, parent, 0)?;
        let name_max = name_max(&dir);
        let len = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()).len();
        if len > name_max {
            return Err(output_error(
                path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "its file name is {len} bytes, more than the {name_max} a name may have \
                         there (NAME_MAX): give a shorter name"
                    ),
                ),
            ));
        }
        refuse_non_file(path, &dir, &name)?;
        let mode = Mode::from_raw_mode(0o644);
        let tmpfile = if unnamed {
            rustix::fs::openat(
                &dir,
                ".",
                OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
                mode,
            )
        } else {
            Err(rustix::io::Errno::OPNOTSUPP)
        };
        let (fd, named) = match tmpfile {
            Ok(fd) => (fd, None),
            // No unnamed files on this filesystem (EISDIR, EINVAL: a kernel without them).
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => {
                let tmp = temporary_name(&name, name_max);
                let fd = rustix::fs::openat(
                    &dir,
                    &tmp,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::WRONLY
                        | OFlags::CLOEXEC,
                    mode,
                )
                .map_err(|e| {
                    // Something planted at the temporary name: say where it is. Any other
                    // failure is the output's.
                    let shown = if planted(e) {
                        path.with_file_name(&tmp)
                    } else {
                        path.to_path_buf()
                    };
                    output_error(&shown, e.into())
                })?;
                (fd, Some(tmp))
            }
            Err(e) => return Err(output_error(path, e.into())),
        };
        let pending = Pending {
            path: path.to_path_buf(),
            dir,
            name,
            name_max,
            file: File::from(fd),
            named,
        };
        rustix::fs::fchmod(&pending.file, mode).map_err(|e| output_error(path, e.into()))?;
        Ok(pending)
    }

    /// The path the output was asked for.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this output and `other` would land on the same file: the same name in the same
    /// directory (however each path reached it), or two names of one existing file.
    pub fn same_target(&self, other: &Pending) -> bool {
        let id = |st: rustix::fs::Stat| (st.st_dev, st.st_ino);
        let dir = |p: &Pending| rustix::fs::fstat(&p.dir).ok().map(id);
        if self.name == other.name && dir(self).is_some() && dir(self) == dir(other) {
            return true;
        }
        let target = |p: &Pending| {
            rustix::fs::statat(&p.dir, &p.name, AtFlags::SYMLINK_NOFOLLOW)
                .ok()
                .map(id)
        };
        matches!((target(self), target(other)), (Some(a), Some(b)) if a == b)
    }

    /// Removes the temporary name if it is still this file's.
    fn remove_named(&mut self) {
        if let Some(tmp) = self.named.take()
            && let (Ok(ours), Ok(there)) = (
                rustix::fs::fstat(&self.file),
                rustix::fs::statat(&self.dir, &tmp, AtFlags::SYMLINK_NOFOLLOW),
            )
            && (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino)
        {
            let _ = rustix::fs::unlinkat(&self.dir, &tmp, AtFlags::empty());
        }
    }

    /// Writes `bytes` and puts the file in place.
    pub fn finish(mut self, bytes: &[u8]) -> Result<PathBuf, Error> {
        let fail = |e: io::Error| output_error(&self.path, e);
        self.file.write_all(bytes).map_err(fail)?;
        self.file.sync_all().map_err(fail)?;
        let tmp = match self.named.take() {
            Some(tmp) => tmp,
            None => {
                let tmp = temporary_name(&self.name, self.name_max);
                let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                rustix::fs::linkat(
                    CWD,
                    proc_path.as_str(),
                    &self.dir,
                    &tmp,
                    AtFlags::SYMLINK_FOLLOW,
                )
                .map_err(|e| {
                    // What is at the temporary name is not ours: say where it is, touch nothing.
                    // Any other failure is the output's.
                    let shown = if planted(e) {
                        self.path.with_file_name(&tmp)
                    } else {
                        self.path.clone()
                    };
                    output_error(&shown, e.into())
                })?;
                tmp
            }
        };
        if let Err(e) = rustix::fs::renameat(&self.dir, &tmp, &self.dir, &self.name) {
            self.named = Some(tmp);
            self.remove_named();
            return Err(output_error(&self.path, e.into()));
        }
        // The rename itself survives a crash once the directory is synced.
        if let Ok(dir) = rustix::fs::openat(
            &self.dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            let _ = rustix::fs::fsync(&dir);
        }
        Ok(self.path.clone())
    }
}

impl Drop for Pending {
    /// An abandoned output leaves nothing: an unnamed file vanishes by itself, a named one is
    /// removed.
    fn drop(&mut self) {
        self.remove_named();
    }
}

/// The directory `dir` (of the output `path`), opened component by component: a directory is
/// opened without following anything (O_NOFOLLOW with O_DIRECTORY: a link swapped in meanwhile
/// is refused), and a symbolic link is followed only when it is the caller's or root's. In a
/// shared directory anyone may plant `shared/evil -> /etc`, and a privileged writer following
/// it writes where nobody chose; the kernel's own rule for this (fs.protected_symlinks, off on
/// some systems and only for sticky world-writable directories) is the model.
fn open_dir(path: &Path, dir: &Path, depth: u32) -> Result<OwnedFd, Error> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let open = |at: &OwnedFd, name: &Path| rustix::fs::openat(at, name, flags, Mode::empty());
    let start = if dir.is_absolute() { "/" } else { "." };
    let mut cur =
        rustix::fs::open(start, flags, Mode::empty()).map_err(|e| output_error(path, e.into()))?;
    walk(path, &mut cur, dir, depth, &open)?;
    Ok(cur)
}

fn walk(
    path: &Path,
    cur: &mut OwnedFd,
    dir: &Path,
    depth: u32,
    open: &dyn Fn(&OwnedFd, &Path) -> rustix::io::Result<OwnedFd>,
) -> Result<(), Error> {
    use std::path::Component;
    let me = rustix::process::geteuid().as_raw();
    let mut prefix = PathBuf::new();
    for part in dir.components() {
        prefix.push(part);
        let name: &Path = match part {
            Component::RootDir => {
                *cur = open(cur, Path::new("/")).map_err(|e| output_error(path, e.into()))?;
                continue;
            }
            Component::CurDir | Component::Prefix(_) => continue,
            Component::ParentDir => Path::new(".."),
            Component::Normal(n) => Path::new(n),
        };
        let st = rustix::fs::statat(&*cur, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| output_error(path, e.into()))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
            if st.st_uid != me && st.st_uid != 0 {
                return Err(output_error(
                    path,
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} is a symbolic link owned by uid {}, another user, and is not \
                             followed: give a path without it",
                            prefix.display(),
                            st.st_uid
                        ),
                    ),
                ));
            }
            // Linux's limit on links followed in one lookup (MAXSYMLINKS).
            if depth >= 40 {
                return Err(output_error(path, io::Error::from_raw_os_error(40)));
            }
            let target = rustix::fs::readlinkat(&*cur, name, Vec::new())
                .map_err(|e| output_error(path, e.into()))?;
            let target: PathBuf =
                <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(
                    target.into_bytes(),
                )
                .into();
            walk(path, cur, &target, depth + 1, open)?;
            continue;
        }
        *cur = open(cur, name).map_err(|e| output_error(path, e.into()))?;
    }
    Ok(())
}

/// A target that exists must be a regular file: the rename that puts the output in place would
/// replace a device node (`/dev/full`), a FIFO or a symbolic link (`/dev/stdout`) with a file.
fn refuse_non_file(path: &Path, dir: &OwnedFd, name: &std::ffi::OsStr) -> Result<(), Error> {
    let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return Ok(());
    };
    use rustix::fs::FileType;
    let what = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => return Ok(()),
        FileType::Symlink => "a symbolic link",
        FileType::Directory => "a directory",
        _ => "a device, FIFO or socket",
    };
    Err(output_error(
        path,
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it exists and is {what}, which the output would replace: give a file's path"),
        ),
    ))
}

fn output_error(path: &Path, source: io::Error) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_directory_swapped_for_a_link_after_the_start_changes_nothing() {
        // Another user renames the directory away and plants a link in its place between the
        // check and the write: the file still lands in the directory chosen at the start.
        let top = tempfile::tempdir().unwrap();
        let (d, victim) = (top.path().join("d"), top.path().join("victim"));
        fs::create_dir(&d).unwrap();
        fs::create_dir(&victim).unwrap();
        let pending = Pending::create(&d.join("out.prom")).unwrap();
        fs::rename(&d, top.path().join("d.real")).unwrap();
        std::os::unix::fs::symlink(&victim, &d).unwrap();
        pending.finish(b"x\n").unwrap();
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
        assert_eq!(
            fs::read(top.path().join("d.real/out.prom")).unwrap(),
            b"x\n"
        );
        let left: Vec<_> = fs::read_dir(top.path().join("d.real")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary name left behind");
    }

    #[test]
    fn nothing_has_a_name_until_it_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.svg");
        let pending = Pending::create(&target).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        drop(pending);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "a dropped file leaves nothing"
        );
        let pending = Pending::create(&target).unwrap();
        pending.finish(b"<svg/>").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"<svg/>");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["out.svg"]);
    }

    #[test]
    fn the_mode_is_0644_whatever_the_umask_and_planted_names_are_left_alone() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("90-keepalive.conf");
        let old = rustix::process::umask(Mode::empty());
        let pending = Pending::create(&target);
        rustix::process::umask(old);
        pending.unwrap().finish(b"x\n").unwrap();
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        // A symlink planted at the temporary name: the write fails naming it, and neither it
        // nor what it points to is touched.
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let tmp = dir
            .path()
            .join(format!(".90-keepalive.conf.{}.tmp", std::process::id()));
        symlink(&victim, &tmp).unwrap();
        let e = Pending::create(&target)
            .unwrap()
            .finish(b"new")
            .unwrap_err();
        assert!(e.to_string().contains(&tmp.display().to_string()), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(fs::symlink_metadata(&tmp).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"x\n");
    }

    #[test]
    fn devices_fifos_and_symlinks_at_the_target_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("stdout");
        std::os::unix::fs::symlink("/proc/self/fd/1", &link).unwrap();
        for target in [
            Path::new("/dev/full"),
            Path::new("/dev/null"),
            &link,
            dir.path(),
        ] {
            let e = Pending::create(target).unwrap_err();
            assert_eq!(e.class(), crate::Class::BadInput, "{e}");
            assert!(
                e.to_string().contains("which the output would replace"),
                "{e}"
            );
        }
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    /// Where the filesystem has no unnamed files: the same guarantees through a named
    /// temporary file, made exclusively with mode 0644, removed when the output is abandoned,
    /// never opened through a name planted first.
    #[test]
    fn without_unnamed_files_a_named_temporary_keeps_every_guarantee() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.pcap");
        let tmp = dir
            .path()
            .join(format!(".out.pcap.{}.tmp", std::process::id()));
        let old = rustix::process::umask(Mode::empty());
        let pending = Pending::start(&target, false);
        rustix::process::umask(old);
        let pending = pending.unwrap();
        drop(pending);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "abandoned: nothing left"
        );
        Pending::start(&target, false)
            .unwrap()
            .finish(b"pcap")
            .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"pcap");
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        symlink(&victim, &tmp).unwrap();
        let e = Pending::start(&target, false).unwrap_err();
        assert!(e.to_string().contains(&tmp.display().to_string()), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(fs::symlink_metadata(&tmp).unwrap().file_type().is_symlink());
    }

    /// A name near NAME_MAX is the user's to choose: the temporary name made for it stays
    /// within the limit and its own, through either kind of temporary file; a name past the
    /// limit is refused at the start, naming the path.
    #[test]
    fn long_names_get_temporary_names_within_name_max_and_too_long_ones_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ("b".repeat(250), format!("{}c", "b".repeat(249)));
        let (ta, tb) = (
            temporary_name(a.as_ref(), NAME_MAX),
            temporary_name(b.as_ref(), NAME_MAX),
        );
        assert!(ta.as_bytes().len() <= NAME_MAX && tb.as_bytes().len() <= NAME_MAX);
        assert_ne!(ta, tb, "two long names that start alike");
        assert!(ta.as_bytes().starts_with(b".bbbb"), "{ta:?}");
        // Short names are as they were.
        assert_eq!(
            temporary_name("out.pcap".as_ref(), NAME_MAX),
            format!(".out.pcap.{}.tmp", std::process::id()).as_str()
        );
        for unnamed in [true, false] {
            let first = Pending::start(&dir.path().join(&a), unnamed).unwrap();
            let second = Pending::start(&dir.path().join(&b), unnamed).unwrap();
            first.finish(b"a").unwrap();
            second.finish(b"b").unwrap();
            assert_eq!(fs::read(dir.path().join(&a)).unwrap(), b"a");
            assert_eq!(fs::read(dir.path().join(&b)).unwrap(), b"b");
            assert_eq!(
                fs::read_dir(dir.path()).unwrap().count(),
                2,
                "nothing else left"
            );
        }
        let too_long = dir.path().join("b".repeat(NAME_MAX + 1));
        for unnamed in [true, false] {
            let e = Pending::start(&too_long, unnamed).unwrap_err();
            assert_eq!(e.class(), crate::Class::BadInput, "{e}");
            assert!(
                e.to_string().contains(&too_long.display().to_string()),
                "{e}"
            );
            assert!(e.to_string().contains("NAME_MAX"), "{e}");
        }
    }

    /// A failure that is not a name planted at the temporary name names the path asked for,
    /// never the temporary name.
    #[test]
    fn errors_name_the_users_path() {
        for unnamed in [true, false] {
            let e = Pending::start(Path::new("/proc/ka-x.pcap"), unnamed).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("cannot write /proc/ka-x.pcap:"), "{text}");
            assert!(!text.contains(".tmp"), "{text}");
        }
    }

    #[test]
    fn the_same_file_by_two_paths_or_two_links_is_one_target() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        fs::create_dir(&d).unwrap();
        let x = d.join("x.pcap");
        let start = |p: &Path| Pending::create(p).unwrap();
        assert!(start(&x).same_target(&start(&x)));
        assert!(start(&x).same_target(&start(&dir.path().join("d/../d/./x.pcap"))));
        assert!(!start(&x).same_target(&start(&d.join("x.svg"))));
        fs::write(&x, b"").unwrap();
        fs::hard_link(&x, d.join("y.svg")).unwrap();
        assert!(start(&x).same_target(&start(&d.join("y.svg"))));
    }

    #[test]
    fn a_missing_directory_is_bad_input() {
        let e = Pending::create(Path::new("/nonexistent-ka/x.pcap")).unwrap_err();
        assert_eq!(e.class(), crate::Class::BadInput);
        assert!(e.to_string().contains("/nonexistent-ka/x.pcap"), "{e}");
    }
}
