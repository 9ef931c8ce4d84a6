//! Nothing is allocated per command on the paths of `proto-stream verify`,
//! `dump` and `chunk`: their core loops (the stream decoder fed in pieces,
//! the command checker or the dumper, counts into fixed tables, output into
//! a reused buffer; the checkpoint emitter through one reused buffer)
//! allocate as much for 10,000 commands as for 1,000.
//!
//! Its own test binary: the counting global allocator is only here, and
//! the one test keeps other threads from allocating while it counts.

use std::alloc::System;

use proto_btrfs::{
    BtrfsCommand as B, CommandChecker, Dumper, Error, StreamDecoder, StreamWriter, Visit,
};
use proto_tlv::{Command, Timespec};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A v2 stream of a subvolume, then `files` rounds of every common
/// command (9 commands per round), then END.
fn stream(files: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let w = StreamWriter::new(2, &mut out).unwrap();
    let subvol = B::Subvol {
        path: b"snap",
        uuid: [7; 16],
        ctransid: 9,
    };
    w.write(&subvol, &mut out).unwrap();
    let t = Timespec {
        sec: 1_700_000_000,
        nsec: 5,
    };
    let data = [0x5a; 700];
    for i in 0..files {
        let name = format!("dir/f\u{e9} {i}\n");
        let path = name.as_bytes();
        let round = [
            B::Mkfile { path, ino: 300 },
            B::Rename {
                path: b"o300-5-0",
                to: path,
            },
            B::Write {
                path,
                offset: 0,
                data: &data[..i % 700],
            },
            B::SetXattr {
                path,
                name: b"user.x",
                data: b"v",
            },
            B::Clone {
                path,
                offset: 4096,
                len: 4096,
                clone_uuid: [7; 16],
                clone_ctransid: 9,
                clone_path: b"dir/src",
                clone_offset: 0,
            },
            B::Symlink {
                path: b"dir/l",
                ino: 301,
                link: path,
            },
            B::Chmod { path, mode: 0o644 },
            B::Chown {
                path,
                uid: 1000,
                gid: 1000,
            },
            B::Utimes {
                path,
                atime: t,
                mtime: t,
                ctime: t,
                otime: None,
            },
        ];
        for c in &round {
            w.write(c, &mut out).unwrap();
        }
    }
    w.finish(&mut out).unwrap();
    out
}

/// Piece size: commands straddle pieces, as they straddle the CLI's reads.
const PIECE: usize = 4096;

/// Allocations (and reallocations) while every command of `bytes`, fed
/// in pieces, goes to `each`; `out` is emptied after each piece (as the CLI
/// writes it out).
fn allocs(
    bytes: &[u8],
    out: &mut Vec<u8>,
    mut each: impl FnMut(&Command<'_>, &mut Vec<u8>) -> Result<(), Error>,
) -> usize {
    let reg = Region::new(GLOBAL);
    let mut dec = StreamDecoder::new();
    for piece in bytes.chunks(PIECE) {
        dec.decode_each(piece, |v| {
            if let Visit::Command(c) = v {
                each(c, out)?;
            }
            Ok::<_, Error>(true)
        })
        .unwrap();
        out.clear();
    }
    dec.finish().unwrap();
    let s = reg.change();
    s.allocations + s.reallocations
}

/// verify's core loop: checked, data bytes and types counted.
fn verify_allocs(bytes: &[u8]) -> usize {
    let mut counts = vec![0u64; 1 << 16];
    let mut data_bytes = 0u64;
    let mut checker = CommandChecker::new();
    let n = allocs(bytes, &mut Vec::new(), |c, _| {
        if let Some(d) = checker.check(c)? {
            data_bytes += d.len() as u64;
        }
        counts[usize::from(c.cmd())] += 1;
        Ok(())
    });
    assert!(data_bytes > 0 && counts.iter().sum::<u64>() > 0);
    n
}

/// dump's core loop: every line into one buffer.
fn dump_allocs(bytes: &[u8]) -> usize {
    let mut dumper = Dumper::new();
    let mut lines = 0;
    let n = allocs(bytes, &mut Vec::with_capacity(1 << 20), |c, out| {
        lines += usize::from(dumper.dump(c, out)?);
        Ok(())
    });
    assert!(lines > 0);
    n
}

/// chunk's core loop: the emitter of the stream (btrfs's producer and
/// split of large writes), filling one reused buffer of `PIECE` bytes
/// until the end. (The CLI also writes each buffer and its token: per
/// buffer, not per command.)
fn chunk_allocs(bytes: &[u8]) -> usize {
    use proto_checkpoint::{Emitter, Format};
    let reg = Region::new(GLOBAL);
    let producer = proto_btrfs::Btrfs.producer(bytes, 1).unwrap();
    let mut e = Emitter::new(producer, proto_btrfs::Btrfs.split()).unwrap();
    let mut buf = vec![0u8; PIECE];
    let (mut written, mut units) = (0, 0);
    while !e.ended() {
        let f = e.fill(&mut buf).unwrap();
        written += f.written;
        units += f.units;
    }
    // WRITEs that straddle a buffer are split in two: a little more out.
    assert!(written >= bytes.len() && units > 1000);
    let s = reg.change();
    s.allocations + s.reallocations
}

/// One test: the counting allocator counts every thread's allocations.
#[test]
fn verify_dump_and_chunk_allocate_nothing_per_command() {
    let (small, big) = (stream(111), stream(1111));
    // 1,001 and 10,001 commands (and END).
    let (v1, v2) = (verify_allocs(&small), verify_allocs(&big));
    let (d1, d2) = (dump_allocs(&small), dump_allocs(&big));
    // A few buffers (the decoder's for a command in pieces, the dumper's
    // scratch) grow to their size once; beyond that, nothing.
    const SLACK: usize = 8;
    assert!(
        v2 <= v1 + SLACK,
        "verify: {v1} allocations for 1,001 commands, {v2} for 10,001"
    );
    assert!(
        d2 <= d1 + SLACK,
        "dump: {d1} allocations for 1,001 commands, {d2} for 10,001"
    );
    // And not many to start with.
    assert!(v1 <= 16 && d1 <= 16, "verify {v1}, dump {d1}");
    let (c1, c2) = (chunk_allocs(&small), chunk_allocs(&big));
    eprintln!(
        "allocations for 1,001 and 10,001 commands: verify {v1}, {v2}; dump {d1}, {d2}; chunk {c1}, {c2}"
    );
    assert!(
        c2 <= c1 + SLACK,
        "chunk: {c1} allocations for 1,001 commands, {c2} for 10,001"
    );
    assert!(c1 <= 32, "chunk {c1}");
}
