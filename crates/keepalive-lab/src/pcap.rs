//! Frames as a classic libpcap file (nanosecond timestamps, Ethernet), which Wireshark and
//! tshark open. Written by hand: the format is a 24-byte header and a 16-byte header per frame.

use crate::capture::Frame;
use std::io::Write;

/// Writes `frames` to `out`.
pub fn write(out: &mut impl Write, frames: &[Frame]) -> std::io::Result<()> {
    // Magic 0xa1b23c4d: timestamps in nanoseconds. Version 2.4, snaplen 65535, LINKTYPE_ETHERNET.
    out.write_all(&0xa1b2_3c4du32.to_le_bytes())?;
    out.write_all(&2u16.to_le_bytes())?;
    out.write_all(&4u16.to_le_bytes())?;
    out.write_all(&0i32.to_le_bytes())?;
    out.write_all(&0u32.to_le_bytes())?;
    out.write_all(&65535u32.to_le_bytes())?;
    out.write_all(&1u32.to_le_bytes())?;
    for f in frames {
        let len = f.data.len() as u32;
        out.write_all(&((f.ns / 1_000_000_000) as u32).to_le_bytes())?;
        out.write_all(&((f.ns % 1_000_000_000) as u32).to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&f.data)?;
    }
    Ok(())
}
