//! The two programs keepalive attaches to a cgroup, and the record they share.
//!
//! - [`sock_ops`] (`BPF_PROG_TYPE_SOCK_OPS` at `BPF_CGROUP_SOCK_OPS`) runs when a TCP
//!   connection of the cgroup reaches ESTABLISHED, on the connecting side
//!   (`BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB`, from `tcp_finish_connect()`) and on the accepting
//!   side (`BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB`, from `tcp_init_transfer()` on the child
//!   socket), IPv4 and IPv6 alike, whatever the language or linking of the program. It calls
//!   `bpf_setsockopt()` for each option the policy sets, then `SO_KEEPALIVE`, which arms the
//!   timer through `sk->sk_prot->keepalive` (net/core/filter.c, `sol_socket_sockopt()` and
//!   `sol_tcp_sockopt()`). These are the kernel's own setsockopt paths with the kernel's
//!   limits, so a value the program could not set, the program cannot set here either.
//! - [`force`] (`BPF_PROG_TYPE_CGROUP_SOCKOPT` at `BPF_CGROUP_SETSOCKOPT`) runs before every
//!   setsockopt(2) on a socket of the cgroup. For an option the policy owns, on a TCP socket,
//!   called by a task inside the cgroup, it sets `ctx->optlen = -1`: the kernel then skips its
//!   own setsockopt and the call returns 0 (kernel/bpf/cgroup.c,
//!   `__cgroup_bpf_run_filter_setsockopt()`; Documentation/bpf/prog_cgroup_sockopt.rst). Every
//!   other call passes untouched. Calls from outside the cgroup (keepalive's own retrofit
//!   through pidfd_getfd among them) pass too: the socket's cgroup decides that the program
//!   runs, the caller's that it swallows.
//!
//! Both read the policy from a one-slot array map, the [`Record`], so what `get --cgroup`
//! reads back is what the programs act on, and count what they did in it.

use super::insn::{Asm, Cond, Insn, R0, R1, R2, R3, R4, R5, R6, R7, R8, R10};
use crate::policy::Settings;

/// `BPF_PROG_TYPE_SOCK_OPS`.
pub const PROG_TYPE_SOCK_OPS: u32 = 13;
/// `BPF_PROG_TYPE_CGROUP_SOCKOPT`.
pub const PROG_TYPE_CGROUP_SOCKOPT: u32 = 25;
/// `BPF_CGROUP_SOCK_OPS`.
pub const ATTACH_SOCK_OPS: u32 = 3;
/// `BPF_CGROUP_SETSOCKOPT`.
pub const ATTACH_SETSOCKOPT: u32 = 22;

// Kernel helpers (enum bpf_func_id).
const MAP_LOOKUP_ELEM: i32 = 1;
const SETSOCKOPT: i32 = 49;
const GET_CURRENT_ANCESTOR_CGROUP_ID: i32 = 123;

// struct bpf_sock_ops: op at 0.
const SOCK_OPS_OP: i16 = 0;
const ACTIVE_ESTABLISHED_CB: i32 = 4;
const PASSIVE_ESTABLISHED_CB: i32 = 5;

// struct bpf_sockopt: sk 0 (a struct bpf_sock *, never NULL), level 24, optname 28, optlen 32.
const SOCKOPT_SK: i16 = 0;
const SOCKOPT_LEVEL: i16 = 24;
const SOCKOPT_OPTNAME: i16 = 28;
const SOCKOPT_OPTLEN: i16 = 32;
// struct bpf_sock: protocol at 12.
const SOCK_PROTOCOL: i16 = 12;

const SOL_SOCKET: i32 = 1;
const SO_KEEPALIVE: i32 = 9;
const IPPROTO_TCP: i32 = 6;
const TCP_KEEPIDLE: i32 = 4;
const TCP_KEEPINTVL: i32 = 5;
const TCP_KEEPCNT: i32 = 6;
const TCP_USER_TIMEOUT: i32 = 18;

/// One option the programs know: its bit in [`Record::options`], where its value sits in the
/// record, its setsockopt level and name, and the labels the programs jump to around it.
struct Opt {
    bit: u32,
    value_at: i16,
    level: i32,
    name: i32,
    after: &'static str,
    other: &'static str,
}

/// In the order `sock_ops` sets them: the values first, so that the timer `SO_KEEPALIVE`
/// arms starts with the policy's idle time.
#[rustfmt::skip]
const OPTS: [Opt; 5] = [
    Opt { bit: Record::IDLE, value_at: 8, level: IPPROTO_TCP, name: TCP_KEEPIDLE, after: "after_idle", other: "not_idle" },
    Opt { bit: Record::INTERVAL, value_at: 12, level: IPPROTO_TCP, name: TCP_KEEPINTVL, after: "after_interval", other: "not_interval" },
    Opt { bit: Record::COUNT, value_at: 16, level: IPPROTO_TCP, name: TCP_KEEPCNT, after: "after_count", other: "not_count" },
    Opt { bit: Record::USER_TIMEOUT, value_at: 20, level: IPPROTO_TCP, name: TCP_USER_TIMEOUT, after: "after_user_timeout", other: "not_user_timeout" },
    Opt { bit: Record::KEEPALIVE, value_at: 4, level: SOL_SOCKET, name: SO_KEEPALIVE, after: "after_keepalive", other: "not_keepalive" },
];

/// The map slot both programs read: native endian, [`Record::SIZE`] bytes.
///
/// | offset | field |
/// |---|---|
/// | 0 | options: which values below are set ([`Record::IDLE`]...), and [`Record::FORCE`] |
/// | 4 | the SO_KEEPALIVE value (1) |
/// | 8, 12, 16, 20 | TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT |
/// | 24 | connections that got every option (u64, atomic adds) |
/// | 32 | connections where a bpf_setsockopt failed |
/// | 40 | setsockopt calls of the program's that were made no-ops (force) |
/// | 48 | the cgroup's id; 56: its level in the hierarchy (the caller check) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub options: u32,
    pub settings: Settings,
    pub applied: u64,
    pub failed: u64,
    pub forced: u64,
    pub cgroup_id: u64,
    pub cgroup_level: u32,
}

const APPLIED_AT: i16 = 24;
const FAILED_AT: i16 = 32;
const FORCED_AT: i16 = 40;
const CGROUP_ID_AT: i16 = 48;
const CGROUP_LEVEL_AT: i16 = 56;

impl Record {
    pub const KEEPALIVE: u32 = 1;
    pub const IDLE: u32 = 2;
    pub const INTERVAL: u32 = 4;
    pub const COUNT: u32 = 8;
    pub const USER_TIMEOUT: u32 = 16;
    /// A force program runs beside `sock_ops`.
    pub const FORCE: u32 = 1 << 8;
    pub const SIZE: usize = 64;

    pub fn to_bytes(&self) -> [u8; Record::SIZE] {
        let mut b = [0u8; Record::SIZE];
        let s = &self.settings;
        let words = [
            self.options,
            1,
            s.idle,
            s.interval,
            s.count,
            s.user_timeout_ms,
        ];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        let longs = [self.applied, self.failed, self.forced, self.cgroup_id];
        for (i, w) in longs.iter().enumerate() {
            b[24 + i * 8..32 + i * 8].copy_from_slice(&w.to_ne_bytes());
        }
        b[56..60].copy_from_slice(&self.cgroup_level.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; Record::SIZE]) -> Record {
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | u64::from(u32_at(o + 4)) << 32;
        Record {
            options: u32_at(0),
            settings: Settings {
                idle: u32_at(8),
                interval: u32_at(12),
                count: u32_at(16),
                user_timeout_ms: u32_at(20),
            },
            applied: u64_at(24),
            failed: u64_at(32),
            forced: u64_at(40),
            cgroup_id: u64_at(48),
            cgroup_level: u32_at(56),
        }
    }

    pub fn has(&self, bit: u32) -> bool {
        self.options & bit != 0
    }
}

/// `r0 = &record`, or on to `miss` when the lookup fails (it cannot for slot 0 of an array,
/// but the verifier insists on the check). Clobbers r1-r5.
fn lookup_record(a: &mut Asm, map_fd: i32, miss: &'static str) {
    a.store32_imm(R10, -4, 0) //                      key = 0, on the stack
        .load_map_fd(R1, map_fd) //                   r1 = the record's map
        .mov(R2, R10)
        .add_imm(R2, -4) //                           r2 = &key
        .call(MAP_LOOKUP_ELEM) //                     r0 = &record, or NULL
        .jump(Cond::Eq(R0, 0), miss);
}

/// The sock_ops program: at ESTABLISHED, every option the record sets, by bpf_setsockopt.
pub fn sock_ops(map_fd: i32) -> Vec<Insn> {
    let mut a = Asm::new();
    a.mov(R6, R1) //                                  r6 = ctx (struct bpf_sock_ops *)
        .load32(R2, R6, SOCK_OPS_OP) //               r2 = ctx->op
        .jump(Cond::Eq(R2, ACTIVE_ESTABLISHED_CB), "established") // connect() completed
        .jump(Cond::Ne(R2, PASSIVE_ESTABLISHED_CB), "out") //       or accept's handshake did
        .label("established");
    lookup_record(&mut a, map_fd, "out");
    a.mov(R7, R0) //                                  r7 = &record
        .mov_imm(R8, 0); //                           r8 = failed bpf_setsockopt calls
    for opt in &OPTS {
        a.load32(R1, R7, 0) //                        r1 = record.options
            .and_imm(R1, opt.bit as i32)
            .jump(Cond::Eq(R1, 0), opt.after) //      the policy leaves this option alone
            .mov(R1, R6) //                           bpf_setsockopt(ctx,
            .mov_imm(R2, opt.level) //                  level,
            .mov_imm(R3, opt.name) //                   optname,
            .mov(R4, R7)
            .add_imm(R4, i32::from(opt.value_at)) //    &record.value,
            .mov_imm(R5, 4) //                          sizeof(int))
            .call(SETSOCKOPT)
            .jump(Cond::Eq(R0, 0), opt.after)
            .add_imm(R8, 1) //                        one more failure
            .label(opt.after);
    }
    a.mov_imm(R1, 1)
        .jump(Cond::Ne(R8, 0), "failed")
        .atomic_add64(R7, APPLIED_AT, R1) //          record.applied += 1
        .jump(Cond::Always, "out")
        .label("failed")
        .atomic_add64(R7, FAILED_AT, R1) //           record.failed += 1
        .label("out")
        .mov_imm(R0, 1) //                            1: carry on (the only value sock_ops takes)
        .exit();
    a.finish()
}

/// The force program: a setsockopt(2) of an option the record owns, on a TCP socket, by a
/// task inside the cgroup, returns 0 and changes nothing.
pub fn force(map_fd: i32) -> Vec<Insn> {
    let mut a = Asm::new();
    a.mov(R6, R1); //                                 r6 = ctx (struct bpf_sockopt *)
    lookup_record(&mut a, map_fd, "pass");
    a.mov(R7, R0) //                                  r7 = &record
        .load32(R8, R7, 0) //                         r8 = record.options
        .load32(R2, R6, SOCKOPT_LEVEL) //             r2 = ctx->level
        .load32(R3, R6, SOCKOPT_OPTNAME); //          r3 = ctx->optname
    for opt in &OPTS {
        a.jump(Cond::Ne(R2, opt.level), opt.other)
            .jump(Cond::Ne(R3, opt.name), opt.other) // not this option
            .mov(R1, R8)
            .and_imm(R1, opt.bit as i32)
            .jump(Cond::Eq(R1, 0), "pass") //         this option, but the policy does not own it
            .jump(Cond::Always, "owned")
            .label(opt.other);
    }
    a.jump(Cond::Always, "pass") //                   not a keepalive option
        .label("owned")
        .load64(R1, R6, SOCKOPT_SK) //                r1 = ctx->sk (never NULL here)
        .load32(R1, R1, SOCK_PROTOCOL) //             r1 = sk->protocol
        .jump(Cond::Ne(R1, IPPROTO_TCP), "pass") //   only TCP sockets have these options
        .load32(R1, R7, CGROUP_LEVEL_AT)
        .call(GET_CURRENT_ANCESTOR_CGROUP_ID) //      r0 = the caller's cgroup at that level
        .load64(R1, R7, CGROUP_ID_AT)
        .jump(Cond::NeReg(R0, R1), "pass") //         a caller outside the cgroup
        .mov_imm(R1, -1)
        .store32(R6, SOCKOPT_OPTLEN, R1) //           ctx->optlen = -1: skip the kernel's setsockopt
        .mov_imm(R1, 1)
        .atomic_add64(R7, FORCED_AT, R1) //           record.forced += 1
        .label("pass")
        .mov_imm(R0, 1) //                            1: go on (0 would fail the call with EPERM)
        .exit();
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_assemble() {
        // Every label placed once, every jump in range: finish() checks both.
        assert!(sock_ops(3).len() > 40);
        assert!(force(3).len() > 30);
    }

    #[test]
    fn record_round_trips() {
        let r = Record {
            options: Record::IDLE | Record::COUNT | Record::FORCE,
            settings: Settings {
                idle: 37,
                interval: 7,
                count: 4,
                user_timeout_ms: 65_000,
            },
            applied: 1 << 40,
            failed: 3,
            forced: 9,
            cgroup_id: 0x1234_5678_9abc,
            cgroup_level: 2,
        };
        assert_eq!(Record::from_bytes(&r.to_bytes()), r);
    }
}
