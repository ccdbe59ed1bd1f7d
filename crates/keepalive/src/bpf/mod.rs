//! BPF through the `bpf(2)` system call: the instruction encoding, the commands, and the
//! programs keepalive attaches to cgroups. No compiler, loader library or object file: the
//! programs are built in memory and handed to the kernel, whose verifier checks them.

pub mod insn;
pub mod programs;
pub mod sys;
