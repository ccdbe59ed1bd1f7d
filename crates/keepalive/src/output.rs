//! Every file the tools write for the user (`lab --pcap`, `--svg`, `status --prometheus`,
//! `sysctl persist`): made whole or not at all, through one path. The content goes to an
//! unnamed file (`O_TMPFILE`) in the target's directory, given mode 0644 whatever the umask
//! (fchmod: a file applied as root at boot must never be world-writable), which gets a name
//! only when complete and synced: linked under a fresh temporary name (`linkat` never follows or
//! replaces what is there, so a symlink or file planted at that name makes the write fail,
//! naming the planted path, and is left alone) and renamed over the target, then the directory
//! synced. The unnamed file is made when the output is asked for, so a path that cannot be
//! written fails before any work is done, and a run that fails or is killed leaves nothing
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
    /// The file's temporary name, when it has one from the start (no O_TMPFILE here).
    named: Option<std::ffi::OsString>,
}

/// The temporary name of an output called `name`: hidden, and this process's own.
fn temporary_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.tmp", std::process::id()));
    tmp
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
                let tmp = temporary_name(&name);
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
                .map_err(|e| output_error(&path.with_file_name(&tmp), e.into()))?;
                (fd, Some(tmp))
            }
            Err(e) => return Err(output_error(path, e.into())),
        };
        let pending = Pending {
            path: path.to_path_buf(),
            dir,
            name,
            file: File::from(fd),
            named,
        };
        rustix::fs::fchmod(&pending.file, mode).map_err(|e| output_error(path, e.into()))?;
        Ok(pending)
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
                let tmp = temporary_name(&self.name);
                let shown = self.path.with_file_name(&tmp);
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

    #[test]
    fn a_missing_directory_is_bad_input() {
        let e = Pending::create(Path::new("/nonexistent-ka/x.pcap")).unwrap_err();
        assert_eq!(e.class(), crate::Class::BadInput);
        assert!(e.to_string().contains("/nonexistent-ka/x.pcap"), "{e}");
    }
}
