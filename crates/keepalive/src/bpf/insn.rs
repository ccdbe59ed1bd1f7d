//! eBPF instructions, encoded by hand: the programs keepalive loads are a few dozen
//! instructions, so they are written in Rust source (see [`super::programs`]) instead of
//! compiled from C, and nothing on the build machine or the user's needs clang or libbpf.
//!
//! The encoding is the kernel's `struct bpf_insn` (include/uapi/linux/bpf.h): an 8-bit opcode,
//! the destination register in the low and the source register in the high nibble of one byte,
//! a signed 16-bit offset and a signed 32-bit immediate. Opcode bits follow
//! include/uapi/linux/bpf_common.h and Documentation/bpf/standardization/instruction-set.rst.

/// One instruction, as the kernel reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// dst in bits 0-3, src in bits 4-7.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// A register: r0 return value, r1-r5 arguments, r6-r9 kept across calls, r10 frame pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(pub u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R10: Reg = Reg(10);

// Instruction classes.
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
// Sizes and modes.
const W: u8 = 0x00;
const DW: u8 = 0x18;
const IMM: u8 = 0x00;
const MEM: u8 = 0x60;
const ATOMIC: u8 = 0xc0;
// Sources.
const K: u8 = 0x00;
const X: u8 = 0x08;
// ALU and jump operations.
const ADD: u8 = 0x00;
const AND: u8 = 0x50;
const MOV: u8 = 0xb0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JNE: u8 = 0x50;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;

/// `src_reg` of a 64-bit immediate load whose immediate is a map's file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (dst.0 & 0xf) | (src.0 << 4),
        off,
        imm,
    }
}

/// A jump condition.
#[derive(Debug, Clone, Copy)]
pub enum Cond {
    /// `dst == imm`
    Eq(Reg, i32),
    /// `dst != imm`
    Ne(Reg, i32),
    /// `dst != src`
    NeReg(Reg, Reg),
    /// Always.
    Always,
}

/// A program being written: instructions plus jumps to named labels, resolved by [`Asm::finish`].
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<(&'static str, usize)>,
    jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(insn(ALU64 | MOV | K, dst, R0, 0, imm))
    }

    /// `dst = src`.
    pub fn mov(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(insn(ALU64 | MOV | X, dst, src, 0, 0))
    }

    /// `dst += imm`.
    pub fn add_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(insn(ALU64 | ADD | K, dst, R0, 0, imm))
    }

    /// `dst &= imm`.
    pub fn and_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(insn(ALU64 | AND | K, dst, R0, 0, imm))
    }

    /// `dst = *(u32 *)(src + off)`.
    pub fn load32(&mut self, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(insn(LDX | MEM | W, dst, src, off, 0))
    }

    /// `dst = *(u64 *)(src + off)`.
    pub fn load64(&mut self, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(insn(LDX | MEM | DW, dst, src, off, 0))
    }

    /// `*(u32 *)(dst + off) = imm`.
    pub fn store32_imm(&mut self, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(insn(ST | MEM | W, dst, R0, off, imm))
    }

    /// `*(u32 *)(dst + off) = src`.
    pub fn store32(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(insn(STX | MEM | W, dst, src, off, 0))
    }

    /// `lock *(u64 *)(dst + off) += src` (an atomic add, safe against other CPUs).
    pub fn atomic_add64(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(insn(STX | ATOMIC | DW, dst, src, off, i32::from(ADD)))
    }

    /// `dst = the map behind file descriptor fd` (two instruction slots; the kernel replaces
    /// the descriptor with the map's address when it loads the program).
    pub fn load_map_fd(&mut self, dst: Reg, fd: i32) -> &mut Self {
        self.push(insn(LD | DW | IMM, dst, Reg(PSEUDO_MAP_FD), 0, fd));
        self.push(insn(0, R0, R0, 0, 0))
    }

    /// Calls kernel helper number `helper`; arguments in r1-r5, result in r0.
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(insn(JMP | CALL, R0, R0, 0, helper))
    }

    /// Returns r0.
    pub fn exit(&mut self) -> &mut Self {
        self.push(insn(JMP | EXIT, R0, R0, 0, 0))
    }

    /// Jumps to `label` when `cond` holds.
    pub fn jump(&mut self, cond: Cond, label: &'static str) -> &mut Self {
        let i = match cond {
            Cond::Eq(r, imm) => insn(JMP | JEQ | K, r, R0, 0, imm),
            Cond::Ne(r, imm) => insn(JMP | JNE | K, r, R0, 0, imm),
            Cond::NeReg(r, s) => insn(JMP | JNE | X, r, s, 0, 0),
            Cond::Always => insn(JMP | JA, R0, R0, 0, 0),
        };
        self.jumps.push((self.insns.len(), label));
        self.push(i)
    }

    /// Marks where `label` is: the next instruction.
    pub fn label(&mut self, label: &'static str) -> &mut Self {
        self.labels.push((label, self.insns.len()));
        self
    }

    /// The instructions, with every jump pointed at its label.
    ///
    /// # Panics
    /// On a jump to a label never placed, or placed twice: a mistake in the program's source,
    /// caught by the unit tests that build every program.
    pub fn finish(mut self) -> Vec<Insn> {
        for &(at, label) in &self.jumps {
            let mut targets = self.labels.iter().filter(|(l, _)| *l == label);
            let (Some(&(_, target)), None) = (targets.next(), targets.next()) else {
                panic!("eBPF label {label} must be placed exactly once");
            };
            // Offsets count from the instruction after the jump.
            let off = target as i64 - at as i64 - 1;
            self.insns[at].off = i16::try_from(off).expect("eBPF jump within 32767 instructions");
        }
        self.insns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_kernel_reads() {
        let mut a = Asm::new();
        a.mov(R6, R1) // bf 16
            .load32(R2, R6, 0) // 61 62
            .jump(Cond::Ne(R2, 5), "out") // 55 02 off=1
            .mov_imm(R0, 0)
            .label("out")
            .mov_imm(R0, 1) // b7 00 imm 1
            .exit(); // 95
        let p = a.finish();
        assert_eq!((p[0].code, p[0].regs), (0xbf, 0x16));
        assert_eq!((p[1].code, p[1].regs, p[1].off), (0x61, 0x62, 0));
        assert_eq!(
            (p[2].code, p[2].regs, p[2].off, p[2].imm),
            (0x55, 0x02, 1, 5)
        );
        assert_eq!((p[4].code, p[4].imm), (0xb7, 1));
        assert_eq!(p[5].code, 0x95);
    }

    #[test]
    fn map_loads_take_two_slots_and_atomics_say_add() {
        let mut a = Asm::new();
        a.load_map_fd(R1, 7).atomic_add64(R7, 24, R8);
        let p = a.finish();
        assert_eq!((p[0].code, p[0].regs, p[0].imm), (0x18, 0x11, 7));
        assert_eq!(
            p[1],
            Insn {
                code: 0,
                regs: 0,
                off: 0,
                imm: 0
            }
        );
        assert_eq!(
            (p[2].code, p[2].regs, p[2].off, p[2].imm),
            (0xdb, 0x87, 24, 0)
        );
    }
}
