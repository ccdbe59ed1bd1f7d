//! The classic-BPF seccomp filter the program runs under.
//!
//! The kernel runs it on every system call the program (and every process it starts) makes,
//! over a `struct seccomp_data` (`nr` at offset 0, `arch` at 4, `instruction_pointer` at 8,
//! `args[6]` from 16, each 64 bits), and does what the returned action says
//! (kernel/seccomp.c, `__seccomp_filter`): SECCOMP_RET_ALLOW runs the call,
//! SECCOMP_RET_USER_NOTIF stops the calling thread and queues the call on the listener, where
//! the supervisor answers it. Only `connect`, `listen`, the sends that connect by TCP Fast
//! Open and, in force mode, the `setsockopt` calls for options the policy owns are trapped; everything else runs untouched, at the cost
//! of a few BPF instructions.

use crate::policy::Key;
use crate::policy::grammar::Mode;
use crate::policy::injection::Injection;
use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W, sock_filter};

/// `AUDIT_ARCH_*` of the architecture this was built for (include/uapi/linux/audit.h): the
/// value the kernel puts in `seccomp_data.arch` for this architecture's native system calls.
/// A call made through another ABI (i386 on x86_64, arm32 on aarch64) carries another value and
/// other system call numbers, and the filter lets it run.
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: Option<u32> = Some(0xC000_003E); // EM_X86_64 | 64BIT | LE
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7); // EM_AARCH64 | 64BIT | LE
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const AUDIT_ARCH: Option<u32> = None;

/// The socket options a policy owns in force mode, as (level, optname): SO_KEEPALIVE always,
/// each TCP option only when the policy sets it. The filter traps exactly these, and the
/// supervisor swallows exactly these.
pub fn owned_options(injection: &Injection) -> impl Iterator<Item = (i32, i32)> + '_ {
    let tcp = [
        (Key::Idle, libc::TCP_KEEPIDLE),
        (Key::Interval, libc::TCP_KEEPINTVL),
        (Key::Count, libc::TCP_KEEPCNT),
        (Key::UserTimeout, libc::TCP_USER_TIMEOUT),
    ];
    std::iter::once((libc::SOL_SOCKET, libc::SO_KEEPALIVE)).chain(
        tcp.into_iter()
            .filter(|(key, _)| injection.policy.has(*key))
            .map(|(_, opt)| (libc::IPPROTO_TCP, opt)),
    )
}

const NR: u32 = 0;
const ARCH: u32 = 4;

/// The offset of the low 32 bits of `args[i]`: the kernel reads `level` and `optname` as
/// `int`, so the high half of the register is ignored by the call and by the filter alike.
const fn arg_low(i: u32) -> u32 {
    let at = 16 + 8 * i;
    if cfg!(target_endian = "little") {
        at
    } else {
        at + 4
    }
}

/// Where a conditional jump goes.
#[derive(Clone, Copy)]
enum To {
    /// The next instruction.
    Next,
    /// Skip this many instructions.
    Skip(u8),
    /// The shared `return SECCOMP_RET_ALLOW`.
    Allow,
    /// The shared `return SECCOMP_RET_USER_NOTIF`.
    Notify,
}

enum Insn {
    /// `A = seccomp_data[k]` (32 bits).
    Load(u32),
    /// `if A == k goto t else goto f`.
    Jeq(u32, To, To),
    /// `if A & k goto t else goto f`.
    Jset(u32, To, To),
}

/// The filter for `injection`, or `None` on an architecture this build has no AUDIT_ARCH for.
pub fn program(injection: &Injection) -> Option<Vec<sock_filter>> {
    let arch = AUDIT_ARCH?;
    let mut code = vec![
        // A = seccomp_data.arch
        Insn::Load(ARCH),
        // Another ABI (i386, x32's own value is the same but its numbers carry bit 30, which
        // no comparison below matches): let it run.
        Insn::Jeq(arch, To::Next, To::Allow),
        // A = seccomp_data.nr
        Insn::Load(NR),
        // connect(fd, addr, len): the supervisor looks at the socket, then lets it run.
        Insn::Jeq(libc::SYS_connect as u32, To::Notify, To::Next),
        // listen(fd, backlog): the same; accepted sockets inherit the listener's options.
        Insn::Jeq(libc::SYS_listen as u32, To::Notify, To::Next),
    ];
    // TCP Fast Open connects with a send: sendto(fd, buf, len, flags, addr, addrlen),
    // sendmsg(fd, msg, flags) and sendmmsg(fd, msgs, n, flags) with MSG_FASTOPEN in flags are
    // trapped as connect is; every other send runs (A still holds nr past a miss).
    for (nr, flags) in [
        (libc::SYS_sendto, 3),
        (libc::SYS_sendmsg, 2),
        (libc::SYS_sendmmsg, 3),
    ] {
        code.extend([
            Insn::Jeq(nr as u32, To::Next, To::Skip(2)),
            Insn::Load(arg_low(flags)),
            Insn::Jset(libc::MSG_FASTOPEN as u32, To::Notify, To::Allow),
        ]);
    }
    if injection.mode == Mode::Force {
        let owned: Vec<(i32, i32)> = owned_options(injection).collect();
        let tcp: Vec<u32> = owned
            .iter()
            .filter(|(level, _)| *level == libc::IPPROTO_TCP)
            .map(|(_, opt)| *opt as u32)
            .collect();
        code.extend([
            // Any other system call: run it.
            Insn::Jeq(libc::SYS_setsockopt as u32, To::Next, To::Allow),
            // A = level (args[1])
            Insn::Load(arg_low(1)),
            // Not SOL_SOCKET: skip its two instructions, to the IPPROTO_TCP test.
            Insn::Jeq(libc::SOL_SOCKET as u32, To::Next, To::Skip(2)),
            // A = optname (args[2])
            Insn::Load(arg_low(2)),
            // SO_KEEPALIVE is the supervisor's; any other SOL_SOCKET option runs.
            Insn::Jeq(libc::SO_KEEPALIVE as u32, To::Notify, To::Allow),
        ]);
        if !tcp.is_empty() {
            code.extend([
                // A still holds the level: anything but IPPROTO_TCP runs.
                Insn::Jeq(libc::IPPROTO_TCP as u32, To::Next, To::Allow),
                // A = optname (args[2])
                Insn::Load(arg_low(2)),
            ]);
            // Each TCP option the policy sets is the supervisor's; the last miss falls
            // through to the allow below.
            code.extend(tcp.iter().map(|&opt| Insn::Jeq(opt, To::Notify, To::Next)));
        }
    }
    Some(assemble(&code))
}

/// Lays `code` out followed by `return ALLOW` and `return USER_NOTIF`, resolving jumps to
/// them into the relative offsets BPF wants (a jump of n skips n instructions).
fn assemble(code: &[Insn]) -> Vec<sock_filter> {
    let allow = code.len();
    let notify = allow + 1;
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut out: Vec<sock_filter> = code
        .iter()
        .enumerate()
        .map(|(at, insn)| {
            let offset = |to: To| -> u8 {
                let target = match to {
                    To::Next => at + 1,
                    To::Skip(n) => at + 1 + usize::from(n),
                    To::Allow => allow,
                    To::Notify => notify,
                };
                // Programs here are a few dozen instructions: every offset fits.
                u8::try_from(target - at - 1).unwrap_or(u8::MAX)
            };
            match *insn {
                Insn::Load(k) => stmt(BPF_LD | BPF_W | BPF_ABS, k),
                Insn::Jeq(k, t, f) => sock_filter {
                    code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
                    jt: offset(t),
                    jf: offset(f),
                    k,
                },
                Insn::Jset(k, t, f) => sock_filter {
                    code: (BPF_JMP | BPF_JSET | BPF_K) as u16,
                    jt: offset(t),
                    jf: offset(f),
                    k,
                },
            }
        })
        .collect();
    // return SECCOMP_RET_ALLOW
    out.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
    // return SECCOMP_RET_USER_NOTIF
    out.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_USER_NOTIF));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` over a seccomp_data the way the kernel's classic-BPF interpreter would, for
    /// the instruction kinds the filter uses.
    fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let insn = prog[pc];
            match u32::from(insn.code) {
                c if c == BPF_LD | BPF_W | BPF_ABS => {
                    let k = insn.k as usize;
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    let skip = if acc == insn.k { insn.jt } else { insn.jf };
                    pc += 1 + usize::from(skip);
                }
                c if c == BPF_JMP | BPF_JSET | BPF_K => {
                    let skip = if acc & insn.k != 0 { insn.jt } else { insn.jf };
                    pc += 1 + usize::from(skip);
                }
                c if c == BPF_RET | BPF_K => return insn.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;

    #[test]
    fn traps_connect_and_listen_and_only_owned_setsockopts_under_force() {
        let arch = AUDIT_ARCH.unwrap();
        let sso = |prog: &[sock_filter], level: i32, opt: i32| {
            let high = 0xdead_beef_0000_0000u64;
            run(
                prog,
                arch,
                libc::SYS_setsockopt as u32,
                [3, high | level as u64, high | opt as u64, 0, 4, 0],
            )
        };
        let default = program(&Injection::parse("idle=37").unwrap()).unwrap();
        assert_eq!(
            run(&default, arch, libc::SYS_connect as u32, [0; 6]),
            NOTIFY
        );
        assert_eq!(run(&default, arch, libc::SYS_listen as u32, [0; 6]), NOTIFY);
        assert_eq!(run(&default, arch, libc::SYS_read as u32, [0; 6]), ALLOW);
        assert_eq!(
            sso(&default, libc::SOL_SOCKET, libc::SO_KEEPALIVE),
            ALLOW,
            "default mode leaves setsockopt alone"
        );
        assert_eq!(
            run(&default, 0x4000_0003, libc::SYS_connect as u32, [0; 6]),
            ALLOW
        );

        let force = program(&Injection::parse("idle=37,count=4,mode=force").unwrap()).unwrap();
        assert_eq!(sso(&force, libc::SOL_SOCKET, libc::SO_KEEPALIVE), NOTIFY);
        assert_eq!(sso(&force, libc::SOL_SOCKET, libc::SO_REUSEADDR), ALLOW);
        assert_eq!(sso(&force, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), NOTIFY);
        assert_eq!(sso(&force, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), NOTIFY);
        assert_eq!(
            sso(&force, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
            ALLOW,
            "the policy does not set the interval"
        );
        assert_eq!(sso(&force, libc::IPPROTO_TCP, libc::TCP_NODELAY), ALLOW);
        assert_eq!(sso(&force, libc::IPPROTO_IP, libc::TCP_KEEPIDLE), ALLOW);
        assert_eq!(run(&force, arch, libc::SYS_connect as u32, [0; 6]), NOTIFY);
        assert_eq!(run(&force, arch, libc::SYS_getpid as u32, [0; 6]), ALLOW);

        for prog in [&default, &force] {
            let fast_open = libc::MSG_FASTOPEN as u64 | libc::MSG_NOSIGNAL as u64;
            let sendto = libc::SYS_sendto as u32;
            let sendmsg = libc::SYS_sendmsg as u32;
            let sendmmsg = libc::SYS_sendmmsg as u32;
            assert_eq!(run(prog, arch, sendto, [3, 0, 1, fast_open, 0, 16]), NOTIFY);
            assert_eq!(run(prog, arch, sendto, [3, 0, 1, 0x4000, 0, 16]), ALLOW);
            assert_eq!(run(prog, arch, sendmsg, [3, 0, fast_open, 0, 0, 0]), NOTIFY);
            assert_eq!(run(prog, arch, sendmsg, [3, 0, 0, fast_open, 0, 0]), ALLOW);
            assert_eq!(
                run(prog, arch, sendmmsg, [3, 0, 1, fast_open, 0, 0]),
                NOTIFY
            );
            assert_eq!(run(prog, arch, sendmmsg, [3, 0, 1, 0, 0, 0]), ALLOW);
            assert_eq!(
                run(
                    prog,
                    arch,
                    libc::SYS_recvfrom as u32,
                    [3, 0, 1, fast_open, 0, 0]
                ),
                ALLOW
            );
        }
        assert_eq!(
            sso(&force, libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
            NOTIFY,
            "past the sends"
        );

        let empty = program(&Injection::parse("mode=force").unwrap()).unwrap();
        assert_eq!(sso(&empty, libc::SOL_SOCKET, libc::SO_KEEPALIVE), NOTIFY);
        assert_eq!(sso(&empty, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), ALLOW);
    }
}
