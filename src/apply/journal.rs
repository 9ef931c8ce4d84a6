//! The journal of an apply: where in the stream it is, in
//! `DIR/.proto-stream/apply.journal`.
//!
//! Three 64-byte slots, each with its own CRC-32C:
//! - slots 0 and 1 are durable: written in turn after `syncfs` made
//!   everything before their position durable, then fsync'd, so that a
//!   torn write never loses both;
//! - slot 2 is the progress of the running process, written (not
//!   fsync'd) before each command whose effect depends on the tree's state
//!   (a rename, a creation, a removal, a clone) and after each clone. A
//!   process that is killed leaves it in the page cache, so a run started
//!   in the same boot (same `boot_id`) continues from it; after a reboot
//!   only the durable slots count.
//!
//! A position also holds a CRC-32C chain over the CRCs of every command
//! before it, which binds the journal to its stream: another stream is
//! refused where the chains differ.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::fd::BorrowedFd;
use rustix::fs::{flock, openat, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

const MAGIC: &[u8; 8] = b"PSAPPLY1";
const SLOT: usize = 64;
const PROGRESS: u64 = 2;
pub(super) const NAME: &str = "apply.journal";

/// A point in the input: every command before `next` is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Position {
    /// Commands before this point, counted over every stream of the input.
    pub(super) next: u64,
    /// Byte offset of the input at this point.
    pub(super) offset: u64,
    /// CRC-32C chain over the CRCs of the commands before this point.
    pub(super) chain: u32,
}

/// Where a run continues, as the journal says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Resume {
    /// The position to continue from.
    pub(super) at: Position,
    /// Commands before this index (from `at.next` on) may have been carried
    /// out already: "exists" or "is gone" means done for them.
    pub(super) doubt_until: u64,
    /// Whether `at` comes from the progress slot of this boot.
    pub(super) same_boot: bool,
    /// The command at `at` failed when it was carried out: it is not in
    /// doubt.
    pub(super) failed: bool,
}

#[derive(Debug)]
pub(super) struct Journal {
    file: File,
    seq: u64,
    boot: [u8; 16],
}

fn boot_id() -> Option<[u8; 16]> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    super::records::unhex(&text.trim().replace('-', ""))?
        .try_into()
        .ok()
}

/// Flag of a progress slot: the command at its position failed, so it
/// certainly did not take effect (it is not in doubt).
const FAILED: u32 = 1;

fn encode(seq: u64, pos: Position, boot: [u8; 16]) -> [u8; SLOT] {
    encode_flags(seq, pos, boot, 0)
}

fn encode_flags(seq: u64, pos: Position, boot: [u8; 16], flags: u32) -> [u8; SLOT] {
    let mut b = [0u8; SLOT];
    b[0..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..24].copy_from_slice(&pos.next.to_le_bytes());
    b[24..32].copy_from_slice(&pos.offset.to_le_bytes());
    b[32..36].copy_from_slice(&pos.chain.to_le_bytes());
    b[36..40].copy_from_slice(&flags.to_le_bytes());
    b[40..56].copy_from_slice(&boot);
    let crc = proto_crc32c::crc32c(&b[..56]);
    b[56..60].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<(u64, Position, [u8; 16])> {
    decode_flags(b).map(|(seq, pos, boot, _)| (seq, pos, boot))
}

fn decode_flags(b: &[u8]) -> Option<(u64, Position, [u8; 16], u32)> {
    if b.len() < SLOT || &b[0..8] != MAGIC {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(b[56..60].try_into().expect("4 bytes"));
    if crc != proto_crc32c::crc32c(&b[..56]) {
        return None;
    }
    let pos = Position {
        next: u64_at(16),
        offset: u64_at(24),
        chain: u32::from_le_bytes(b[32..36].try_into().expect("4 bytes")),
    };
    let flags = u32::from_le_bytes(b[36..40].try_into().expect("4 bytes"));
    Some((
        u64_at(8),
        pos,
        b[40..56].try_into().expect("16 bytes"),
        flags,
    ))
}

impl Journal {
    /// Opens (making it when missing) and locks the journal in `meta`;
    /// `Err(WouldBlock)` when another process holds it. Returns where to
    /// continue, if anywhere.
    pub(super) fn open(meta: BorrowedFd<'_>) -> io::Result<(Journal, Option<Resume>)> {
        let fd = openat(
            meta,
            NAME,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => return Err(e.into()),
        }
        let file = File::from(fd);
        let mut all = [0u8; 3 * SLOT];
        let n = file.read_at(&mut all, 0)?;
        let slot = |i: usize| {
            if n >= (i + 1) * SLOT {
                decode(&all[i * SLOT..(i + 1) * SLOT])
            } else {
                None
            }
        };
        let boot = boot_id();
        let durable = [slot(0), slot(1)]
            .into_iter()
            .flatten()
            .max_by_key(|(seq, _, _)| *seq);
        let progress = if n >= 3 * SLOT {
            decode_flags(&all[2 * SLOT..3 * SLOT])
        } else {
            None
        };
        let seq = durable.map_or(0, |(s, _, _)| s + 1);
        let resume = match (durable, progress) {
            (_, Some((_, p, b, flags))) if boot.is_some() && Some(b) == boot => Some(Resume {
                at: p,
                doubt_until: p.next,
                same_boot: true,
                failed: flags & FAILED != 0,
            }),
            (Some((_, d, _)), p) => Some(Resume {
                at: d,
                doubt_until: p.map_or(d.next, |(_, p, _, _)| p.next.max(d.next)),
                same_boot: false,
                failed: false,
            }),
            (None, _) => None,
        };
        let journal = Journal {
            file,
            seq,
            boot: boot.unwrap_or_default(),
        };
        Ok((journal, resume))
    }

    /// Records the running process's position (not fsync'd).
    pub(super) fn progress(&mut self, pos: Position) -> io::Result<()> {
        self.file
            .write_all_at(&encode(0, pos, self.boot), PROGRESS * SLOT as u64)
    }

    /// Records that the command at `pos` failed (it took no effect): a
    /// run that goes on from here does not take it as in doubt.
    pub(super) fn failed(&mut self, pos: Position) -> io::Result<()> {
        self.file.write_all_at(
            &encode_flags(0, pos, self.boot, FAILED),
            PROGRESS * SLOT as u64,
        )
    }

    /// Records `pos` durably: the caller made everything before it durable.
    pub(super) fn durable(&mut self, pos: Position) -> io::Result<()> {
        self.progress(pos)?;
        let slot = self.seq % 2;
        self.file
            .write_all_at(&encode(self.seq, pos, self.boot), slot * SLOT as u64)?;
        self.file.sync_data()?;
        self.seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_refuse_damage() {
        let pos = Position {
            next: 12345,
            offset: 987654321,
            chain: 0xdead_beef,
        };
        let b = encode(7, pos, [3; 16]);
        assert_eq!(decode(&b), Some((7, pos, [3; 16])));
        for i in 0..60 {
            let mut d = b;
            d[i] ^= 0x10;
            assert_eq!(decode(&d), None, "byte {i} flipped");
        }
        assert!(boot_id().is_some(), "this machine has a boot_id");
    }
}
