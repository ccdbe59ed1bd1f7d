//! `keepalive run` against programs that are not there, cannot run, or are odd but run: env(1)'s
//! exit statuses (127 not found, 126 cannot run) through every mechanism; execvp(3)'s default
//! path and /bin/sh for files without `#!`; `--no-inherit` leaving no LD_PRELOAD behind; ELF
//! files whose section headers are cut off, which run and must not be refused; a shim the
//! loader would skip and a log nobody could write, refused before anything runs; the policy
//! argument in the shim's grammar; and names with control characters, escaped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use testkit::{assert_one_line_failure, bounded_output};

const BIN: &str = env!("CARGO_BIN_EXE_keepalive");
const LIMIT: Duration = Duration::from_secs(30);
const VIAS: [&str; 3] = ["shim", "seccomp", "auto"];

fn keepalive() -> Command {
    testkit::shim_next_to(Path::new(BIN));
    let mut cmd = Command::new(BIN);
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("LD_PRELOAD")
        .env_remove("KEEPALIVE_POLICY");
    cmd
}

/// `keepalive run --via VIA ARGS`, to its end (bounded).
fn run(via: &str, args: &[&str]) -> Output {
    bounded_output(keepalive().args(["run", "--via", via]).args(args), LIMIT)
}

fn write_program(path: &Path, content: &[u8], mode: u32) -> String {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_missing_program_exits_127_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_program(
        &dir.path().join("no-interpreter"),
        b"#!/nonexistent/keepalive-test/sh\necho ran\n",
        0o755,
    );
    for via in VIAS {
        let out = run(via, &["--", "/nonexistent/keepalive-test/prog"]);
        assert_one_line_failure(
            &out,
            127,
            &["/nonexistent/keepalive-test/prog", "no such file"],
        );
        // The interpreter is what is missing: execve says ENOENT, env(1) says 127.
        let out = run(via, &["--", &script]);
        assert_one_line_failure(
            &out,
            127,
            &[&script, "interpreter /nonexistent/keepalive-test/sh"],
        );
        assert!(out.stdout.is_empty(), "--via {via}: {out:?}");
        // Looked up in PATH (an empty directory here) and not there.
        let out = bounded_output(
            keepalive()
                .args(["run", "--via", via, "--", "keepalive-test-no-such-command"])
                .env("PATH", dir.path()),
            LIMIT,
        );
        assert_one_line_failure(
            &out,
            127,
            &["keepalive-test-no-such-command", "not", "PATH"],
        );
    }
}

#[test]
fn a_program_that_cannot_run_exits_126_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let no_x = write_program(
        &dir.path().join("not-executable"),
        format!("#!/bin/sh\ntouch {}\n", marker.display()).as_bytes(),
        0o644,
    );
    let a_dir = dir.path().join("a-directory");
    std::fs::create_dir(&a_dir).unwrap();
    let a_dir = a_dir.to_str().unwrap();
    // A well-formed ELF for another machine: e_machine changed in a copy of /bin/true.
    let mut elf = std::fs::read("/bin/true").unwrap();
    let other = if cfg!(target_arch = "aarch64") {
        62u16
    } else {
        183
    };
    elf[0x12..0x14].copy_from_slice(&other.to_le_bytes());
    let foreign = write_program(&dir.path().join("foreign-elf"), &elf, 0o755);
    for via in VIAS {
        for (program, needle) in [
            (&no_x[..], "execute permission"),
            (a_dir, "directory"),
            // An ELF is never handed to /bin/sh (a_file_that_is_not_an_elf_runs_with_bin_sh).
            (&foreign[..], "exec format error"),
        ] {
            let out = run(via, &["--", program]);
            assert_one_line_failure(&out, 126, &[program, needle]);
            assert!(out.stdout.is_empty(), "--via {via} {program}: {out:?}");
        }
        assert!(!marker.exists(), "--via {via}: the program ran");
    }
}

#[test]
fn a_programs_own_126_and_127_pass_through() {
    for via in VIAS {
        for code in ["126", "127"] {
            let out = run(via, &["--", "/bin/sh", "-c", &format!("exit {code}")]);
            assert_eq!(
                out.status.code(),
                Some(code.parse().unwrap()),
                "--via {via}: {out:?}"
            );
            assert!(out.stderr.is_empty(), "--via {via}: {out:?}");
        }
    }
}

/// `env` started by the program shows the environment the program's children get.
fn childrens_environment(preload: Option<&str>) -> Vec<String> {
    let mut cmd = keepalive();
    cmd.args([
        "run",
        "--via",
        "shim",
        "--no-inherit",
        "--",
        "/bin/sh",
        "-c",
        "exec /usr/bin/env",
    ]);
    if let Some(preload) = preload {
        cmd.env("LD_PRELOAD", preload);
    }
    let out = bounded_output(&mut cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("LD_PRELOAD"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_inherit_leaves_no_ld_preload_in_the_childrens_environment() {
    assert_eq!(childrens_environment(None), Vec::<String>::new());
    // Blanks left over from the user's own value do not keep it either.
    assert_eq!(childrens_environment(Some(" : ")), Vec::<String>::new());
    // Another library stays, and only it.
    assert_eq!(
        childrens_environment(Some("libc.so.6")),
        vec!["LD_PRELOAD=libc.so.6".to_owned()]
    );
    assert_eq!(
        childrens_environment(Some("libc.so.6 libm.so.6")),
        vec!["LD_PRELOAD=libc.so.6:libm.so.6".to_owned()]
    );
    // Without --no-inherit the children keep the shim, as before.
    let out = bounded_output(
        keepalive().args([
            "run",
            "--via",
            "shim",
            "--",
            "/bin/sh",
            "-c",
            "exec /usr/bin/env",
        ]),
        LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("LD_PRELOAD=/") && l.ends_with("/libkeepalive_inject.so")),
        "{text}"
    );
}

/// Copies of `src` named `dir/*/NAME` whose section headers cannot be read: one with e_shoff
/// pointing past the end of the file, and one cut off where the section header table begins
/// when that table ends the file (as GCC lays it out), or else (Go puts it first) with the
/// table overwritten by 0xff bytes. Each still runs, and exits with `status`.
fn without_section_headers(src: &Path, dir: &Path, name: &str, status: i32) -> [PathBuf; 2] {
    let bytes = std::fs::read(src).unwrap();
    assert!(
        bytes.starts_with(b"\x7fELF\x02\x01"),
        "{} is not a little-endian ELF64",
        src.display()
    );
    let field = |at: usize, n: usize| {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&bytes[at..at + n]);
        u64::from_le_bytes(v) as usize
    };
    let (shoff, shentsize, shnum) = (field(0x28, 8), field(0x3a, 2), field(0x3c, 2));
    let table_end = shoff + shentsize * shnum;
    assert!(shoff > 0 && table_end <= bytes.len(), "{}", src.display());
    let copy = |kind: &str, content: &[u8]| {
        let path = dir.join(kind);
        std::fs::create_dir_all(&path).unwrap();
        let path = path.join(name);
        write_program(&path, content, 0o755);
        path
    };
    let mut moved = bytes.clone();
    moved[0x28..0x30].copy_from_slice(&(bytes.len() as u64 + 4096).to_le_bytes());
    let past = copy("past", &moved);
    let broken = if table_end == bytes.len() {
        copy("cut", &bytes[..shoff])
    } else {
        let mut spoiled = bytes.clone();
        spoiled[shoff..table_end].fill(0xff);
        copy("spoiled", &spoiled)
    };
    for copy in [&past, &broken] {
        let out = bounded_output(&mut Command::new(copy), LIMIT);
        assert_eq!(
            out.status.code(),
            Some(status),
            "{}: {out:?}",
            copy.display()
        );
    }
    [past, broken]
}

#[test]
fn a_dynamic_program_without_section_headers_runs() {
    let dir = tempfile::tempdir().unwrap();
    for copy in without_section_headers(Path::new("/bin/true"), dir.path(), "true", 0) {
        let copy = copy.to_str().unwrap();
        for via in VIAS {
            let out = run(via, &["--", copy]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "--via {via} {copy}: {err}");
            // It may be Go, for all its headers say; that matters to the shim, which is told.
            if via != "seccomp" {
                assert!(
                    err.contains("cannot tell whether") && err.contains("--via seccomp"),
                    "--via {via} {copy}: {err}"
                );
            }
        }
        // Under force mode seccomp wins whatever it is: nothing to say.
        let out = run("seccomp", &["--force", "--", copy]);
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    }
}

#[test]
fn a_static_program_without_section_headers_is_still_static() {
    let busybox = Path::new("/bin/busybox");
    testkit::require_program("busybox", "busybox-static");
    let dir = tempfile::tempdir().unwrap();
    // Named `true`, busybox runs its `true` applet.
    for copy in without_section_headers(busybox, dir.path(), "true", 0) {
        let copy = copy.to_str().unwrap();
        for via in ["seccomp", "auto"] {
            let out = run(via, &["--force", "--", copy]);
            assert!(out.status.success(), "--via {via} {copy}: {out:?}");
        }
        // The program headers alone say it is static (no PT_INTERP).
        let out = run("shim", &["--", copy]);
        assert_one_line_failure(&out, 1, &[copy, "statically linked", "--via seccomp"]);
    }
}

#[test]
fn a_go_program_without_section_headers_is_still_go() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/client.go");
    let go = testkit::go_build(&src, dir.path());
    for copy in without_section_headers(&go, dir.path(), "client", 2) {
        let copy = copy.to_str().unwrap();
        // Go's build-ID note is in a PT_NOTE segment: no section header is needed to see it.
        let out = run("shim", &["--", copy]);
        assert_one_line_failure(&out, 1, &[copy, "Go program", "--via seccomp"]);
        // Through seccomp it runs (and exits 2: Go's panic for its missing argument), with
        // the warning Go programs get.
        let out = run("auto", &["--", copy]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("Go sets its own keepalive"), "{err}");
    }
}

/// A name found in PATH only as a file that cannot run (no execute bit, a directory) is 126,
/// as execvp(3) and env(1) make it, not "not found".
#[test]
fn a_name_in_path_that_cannot_run_exits_126() {
    let dir = tempfile::tempdir().unwrap();
    write_program(&dir.path().join("plain"), b"#!/bin/sh\nexit 0\n", 0o644);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    for via in VIAS {
        for name in ["plain", "sub"] {
            let out = bounded_output(
                keepalive()
                    .env("PATH", &path)
                    .args(["run", "--via", via, "--idle", "5", "--", name]),
                LIMIT,
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(126), "{via} {name}: {err}");
            assert!(
                err.contains("is in PATH but cannot run"),
                "{via} {name}: {err}"
            );
        }
    }
}

#[test]
fn an_empty_program_name_exits_127_saying_so() {
    for via in VIAS {
        let out = run(via, &["--", ""]);
        assert_one_line_failure(&out, 127, &["program name is empty"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("directory"), "--via {via}: {err}");
    }
}

/// With no PATH at all, execvp(3) (and so env(1)) searches confstr(_CS_PATH), /bin:/usr/bin.
#[test]
fn without_path_the_default_path_is_searched_as_execvp_does() {
    for via in VIAS {
        let out = bounded_output(
            keepalive()
                .env_remove("PATH")
                .args(["run", "--via", via, "--", "sh", "-c", "echo hi"]),
            LIMIT,
        );
        assert!(out.status.success(), "--via {via}: {out:?}");
        assert_eq!(out.stdout, b"hi\n", "--via {via}: {out:?}");
        let out = bounded_output(
            keepalive().env_remove("PATH").args([
                "run",
                "--via",
                via,
                "--",
                "keepalive-test-no-such-command",
            ]),
            LIMIT,
        );
        assert_one_line_failure(
            &out,
            127,
            &["keepalive-test-no-such-command", "/bin:/usr/bin"],
        );
    }
}

/// A file the kernel refuses with ENOEXEC that is not an ELF (a script without `#!`, any
/// bytes) is run by /bin/sh, as execvp(3) and env(1) run it: the same output and status.
#[test]
fn a_file_that_is_not_an_elf_runs_with_bin_sh() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_program(
        &dir.path().join("no-shebang.sh"),
        b"echo \"ran $0 $*\"\nexit 3\n",
        0o755,
    );
    let garbage = write_program(
        &dir.path().join("garbage"),
        b"\x01\x02\x03\x04 not a program\n",
        0o755,
    );
    for program in [&script, &garbage] {
        let reference = bounded_output(
            Command::new("/usr/bin/env").args([program, "a", "b"]),
            LIMIT,
        );
        for via in VIAS {
            let out = run(via, &["--", program, "a", "b"]);
            assert_eq!(
                (out.status.code(), &out.stdout),
                (reference.status.code(), &reference.stdout),
                "--via {via} {program}: {out:?}"
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("exec format error"), "--via {via}: {err}");
        }
    }
    let out = run("shim", &["--", &script, "a", "b"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ran {script} a b\n")
    );
}

/// A copy of keepalive in a directory of its own, with `shim` as the shim beside it, and the
/// directory open to every user (for runs as uid 65534).
fn keepalive_beside(shim: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("keepalive");
    std::fs::copy(BIN, &bin).unwrap();
    let lib = dir.path().join("libkeepalive_inject.so");
    write_program(&lib, shim, 0o644);
    (dir, bin, lib)
}

/// `cmd` as uid 65534 when this is root (root reads any file), else as it is.
fn as_nobody(bin: &Path) -> Command {
    let mut cmd = if rustix::process::geteuid().is_root() {
        testkit::require_program("setpriv", "util-linux");
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(bin);
        cmd
    } else {
        Command::new(bin)
    };
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("LD_PRELOAD")
        .env_remove("KEEPALIVE_POLICY")
        .env_remove("KEEPALIVE_SHIM");
    cmd
}

/// The loader skips a preload it cannot open or map with a line of its own and runs the
/// program without keepalive: keepalive refuses first, naming the shim.
#[test]
fn a_shim_the_loader_would_skip_is_refused_naming_it() {
    let shim = std::fs::read(testkit::shim_next_to(Path::new(BIN))).unwrap();
    let pie = std::fs::read("/bin/true").unwrap();
    for (content, needle) in [
        (&b"garbage\n"[..], "not an ELF file"),
        (&pie[..], "position-independent executable"),
    ] {
        let (_dir, bin, lib) = keepalive_beside(content);
        let lib = lib.to_str().unwrap();
        for args in [
            &["run", "--via", "shim", "idle=5", "--", "/bin/true"][..],
            &["run", "--print-env", "idle=5"],
        ] {
            let out = bounded_output(as_nobody(&bin).args(args), LIMIT);
            assert_one_line_failure(&out, 1, &[lib, needle, "without keepalive"]);
            assert!(out.stdout.is_empty(), "{out:?}");
        }
    }
    // Unreadable for this user.
    let (_dir, bin, lib) = keepalive_beside(&shim);
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = bounded_output(
        as_nobody(&bin).args(["run", "--via", "shim", "idle=5", "--", "/bin/true"]),
        LIMIT,
    );
    assert_one_line_failure(
        &out,
        3,
        &[lib.to_str().unwrap(), "cannot be opened for reading"],
    );
    // The real shim, readable: it runs.
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bounded_output(
        as_nobody(&bin).args(["run", "--via", "shim", "idle=5", "--", "/bin/true"]),
        LIMIT,
    );
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
}

/// The shim opens its log with O_NOFOLLOW|O_APPEND|O_CREAT and says nothing when it cannot:
/// a log that cannot be opened is refused before the program runs, and a log file created by
/// that check goes again when the run is refused later.
#[test]
fn a_log_that_cannot_be_opened_is_refused_before_the_program_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let link = dir.path().join("link.log");
    std::os::unix::fs::symlink(dir.path().join("target.log"), &link).unwrap();
    let link = link.to_str().unwrap();
    let a_dir = dir.path().to_str().unwrap();
    for via in ["shim", "seccomp"] {
        for (log, needle) in [
            (
                "/nonexistent/keepalive-test/x.log",
                "/nonexistent/keepalive-test does not exist",
            ),
            (link, "symbolic link"),
            (a_dir, "directory"),
        ] {
            let flag = run(via, &["--log", log, "--", "/bin/sh", "-c", &touch]);
            let policy = format!("idle=5,log={log}");
            let whole = run(via, &[&policy, "--", "/bin/sh", "-c", &touch]);
            for out in [flag, whole] {
                assert_one_line_failure(&out, 2, &[log, needle]);
                assert!(!marker.exists(), "--via {via} --log {log}: the program ran");
            }
        }
        // Created by the check, then the exec fails (an ELF for another machine): not left.
        let mut elf = std::fs::read("/bin/true").unwrap();
        elf[0x12..0x14].copy_from_slice(
            &(if cfg!(target_arch = "aarch64") {
                62u16
            } else {
                183
            })
            .to_le_bytes(),
        );
        let foreign = write_program(&dir.path().join("foreign"), &elf, 0o755);
        let log = dir.path().join("new.log");
        let out = run(via, &["--log", log.to_str().unwrap(), "--", &foreign]);
        assert_one_line_failure(&out, 126, &["exec format error"]);
        assert!(!log.exists(), "--via {via}: {} left behind", log.display());
        // A log that can be written is kept.
        let out = run(via, &["--log", log.to_str().unwrap(), "--", "/bin/true"]);
        assert!(out.status.success(), "--via {via}: {out:?}");
        assert!(log.exists(), "--via {via}");
        std::fs::remove_file(&log).unwrap();
    }
    // A directory this user may not write to: permission (3).
    let (_keep, bin, _lib) =
        keepalive_beside(&std::fs::read(testkit::shim_next_to(Path::new(BIN))).unwrap());
    let closed = tempfile::tempdir().unwrap();
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let log = closed.path().join("x.log");
    let log = log.to_str().unwrap();
    for via in ["shim", "seccomp"] {
        let out = bounded_output(
            as_nobody(&bin).args(["run", "--via", via, "--log", log, "--", "/bin/true"]),
            LIMIT,
        );
        assert_one_line_failure(&out, 3, &[log, "permission denied"]);
    }
}

#[test]
fn print_env_with_a_command_is_refused() {
    let out = bounded_output(
        keepalive().args(["run", "--print-env", "idle=5", "--", "ls"]),
        LIMIT,
    );
    assert_one_line_failure(
        &out,
        2,
        &["--print-env", "runs nothing", "drop the command"],
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// POLICY (and --policy) is KEEPALIVE_POLICY's grammar: run's own keys are no error there.
#[test]
fn the_policy_argument_takes_the_shims_keys() {
    let text =
        "idle=5s,mode=force,ports=5432,6379,dest=::1/128,log=/tmp/keepalive-test.log,inherit=no";
    for args in [
        &["run", "--print-env", text][..],
        &["run", "--print-env", "--policy", text],
    ] {
        let out = bounded_output(keepalive().args(args), LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            stdout.contains(&format!("KEEPALIVE_POLICY={text}\n")),
            "{args:?}: {stdout}"
        );
    }
    // A key given in the policy and as its flag is given twice.
    let out = bounded_output(
        keepalive().args(["run", "--print-env", "--force", "idle=5,mode=force"]),
        LIMIT,
    );
    assert_one_line_failure(&out, 2, &["'mode' is given twice", "--force"]);
    // Unknown keys are still refused.
    let out = bounded_output(
        keepalive().args(["run", "--print-env", "idle=5,bogus=1"]),
        LIMIT,
    );
    assert_one_line_failure(&out, 2, &["bogus"]);
}

/// The shim takes itself out of the children's LD_PRELOAD; KEEPALIVE_POLICY stays (the shim
/// does not remove it), and the help says so rather than promise a clean environment.
#[test]
fn no_inherit_help_says_what_stays_in_the_childrens_environment() {
    let out = bounded_output(
        keepalive().args([
            "run",
            "--via",
            "shim",
            "--no-inherit",
            "idle=5",
            "--",
            "/bin/sh",
            "-c",
            "exec /usr/bin/env",
        ]),
        LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.lines().any(|l| l.starts_with("LD_PRELOAD=")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("KEEPALIVE_POLICY=")),
        "{text}"
    );
    let help = bounded_output(keepalive().args(["run", "--help"]), LIMIT);
    let help = String::from_utf8_lossy(&help.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(help.contains("KEEPALIVE_POLICY stays"), "{help}");
    assert!(!help.contains("leaves their environment"), "{help}");
}

/// Control characters in a program's name reach standard error escaped, on one line.
#[test]
fn control_characters_in_the_program_name_are_escaped() {
    for (name, escaped) in [
        ("./keepalive-test-no\nsuch", "./keepalive-test-no\\nsuch"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
    ] {
        for via in VIAS {
            let out = run(via, &["--", name]);
            assert_one_line_failure(&out, 127, &[escaped]);
            assert!(!out.stderr.contains(&0x1b), "--via {via}: {out:?}");
        }
    }
}
