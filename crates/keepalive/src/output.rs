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

use crate::error::Error;
use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// An output file on its way.
#[derive(Debug)]
pub struct Pending {
    path: PathBuf,
    dir: PathBuf,
    file: File,
}

impl Pending {
    /// Starts the file at `path`: checks now that its directory takes a new file.
    pub fn create(path: &Path) -> Result<Pending, Error> {
        if path.file_name().is_none() {
            return Err(output_error(
                path,
                io::Error::from(io::ErrorKind::InvalidInput),
            ));
        }
        refuse_non_file(path)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        refuse_planted_dirs(path, &dir)?;
        let fd: OwnedFd = rustix::fs::openat(
            CWD,
            &dir,
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| output_error(path, e.into()))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))
            .map_err(|e| output_error(path, e.into()))?;
        Ok(Pending {
            path: path.to_path_buf(),
            dir,
            file: File::from(fd),
        })
    }

    /// Writes `bytes` and puts the file in place.
    pub fn finish(mut self, bytes: &[u8]) -> Result<PathBuf, Error> {
        let fail = |e: io::Error| output_error(&self.path, e);
        self.file.write_all(bytes).map_err(fail)?;
        self.file.sync_all().map_err(fail)?;
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        rustix::fs::linkat(CWD, proc_path.as_str(), CWD, &tmp, AtFlags::SYMLINK_FOLLOW).map_err(
            |e| {
                // What is at the temporary name is not ours: say where it is, touch nothing.
                output_error(&tmp, e.into())
            },
        )?;
        fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            fail(e)
        })?;
        // The rename itself survives a crash once the directory is synced.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(self.path.clone())
    }
}

/// A target that exists must be a regular file: the rename that puts the output in place would
/// replace a device node (`/dev/full`), a FIFO or a symbolic link (`/dev/stdout`) with a file.
fn refuse_non_file(path: &Path) -> Result<(), Error> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "a device, FIFO or socket"
    };
    Err(output_error(
        path,
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it exists and is {what}, which the output would replace: give a file's path"),
        ),
    ))
}

/// Refuses a directory path that goes through a symbolic link another user owns: in a shared
/// directory anyone may plant `shared/evil -> /etc`, and a privileged writer following it
/// writes where nobody chose. The kernel's own rule for this (fs.protected_symlinks, off on
/// some systems and only for sticky world-writable directories) is the model: a link is
/// followed only when it is the caller's or root's.
fn refuse_planted_dirs(path: &Path, dir: &Path) -> Result<(), Error> {
    let me = rustix::process::geteuid().as_raw();
    let mut prefix = std::path::PathBuf::new();
    for part in dir.components() {
        prefix.push(part);
        let Ok(meta) = fs::symlink_metadata(&prefix) else {
            // A missing directory is reported by the open that follows.
            return Ok(());
        };
        use std::os::unix::fs::MetadataExt;
        if meta.file_type().is_symlink() && meta.uid() != me && meta.uid() != 0 {
            return Err(output_error(
                path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is a symbolic link owned by uid {}, another user, and is not \
                         followed: give a path without it",
                        prefix.display(),
                        meta.uid()
                    ),
                ),
            ));
        }
    }
    Ok(())
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

    #[test]
    fn a_missing_directory_is_bad_input() {
        let e = Pending::create(Path::new("/nonexistent-ka/x.pcap")).unwrap_err();
        assert_eq!(e.class(), crate::Class::BadInput);
        assert!(e.to_string().contains("/nonexistent-ka/x.pcap"), "{e}");
    }
}
