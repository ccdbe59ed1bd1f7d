//! Files the tools write for the user (`lab --pcap`, `--svg`): made whole or not at all. The
//! content goes to an unnamed file (`O_TMPFILE`, mode 0644) in the target's directory, which
//! gets a name only when complete: linked under a fresh temporary name (`linkat` never follows
//! or replaces what is there) and renamed over the target. The unnamed file is made when the
//! output is asked for, so a path that cannot be written fails before any work is done, and a
//! run that fails or is killed leaves nothing behind: an unnamed file vanishes with its last
//! descriptor.

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
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let fd: OwnedFd = rustix::fs::openat(
            CWD,
            &dir,
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
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
        rustix::fs::linkat(CWD, proc_path.as_str(), CWD, &tmp, AtFlags::SYMLINK_FOLLOW)
            .map_err(|e| fail(e.into()))?;
        fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            fail(e)
        })?;
        Ok(self.path.clone())
    }
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
    fn a_missing_directory_is_bad_input() {
        let e = Pending::create(Path::new("/nonexistent-ka/x.pcap")).unwrap_err();
        assert_eq!(e.class(), crate::Class::BadInput);
        assert!(e.to_string().contains("/nonexistent-ka/x.pcap"), "{e}");
    }
}
