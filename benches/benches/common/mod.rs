//! The decoders measured by the benches, shared with the `profile` example.
//! Each decodes a whole stream held in memory, touches every command so that
//! nothing is optimized away, and returns the number of commands.

use std::hint::black_box;

use proto_btrfs::{
    BtrfsCommand, BtrfsStream, CommandChecker, Event, StreamDecoder, StreamReader, Visit,
};

/// proto-btrfs, in memory: `BtrfsStream::parse(..).commands()`, zero copy;
/// every CRC and attribute layout is checked. Touches each command.
pub fn proto_commands(bytes: &[u8]) -> u64 {
    let stream = BtrfsStream::parse(bytes).expect("header");
    let mut n = 0;
    for cmd in stream.commands() {
        let cmd = cmd.expect("command");
        black_box((cmd.cmd(), cmd.payload().len()));
        n += 1;
    }
    n
}

/// proto-btrfs, in memory, plus the typed view of every command.
pub fn proto_typed(bytes: &[u8]) -> u64 {
    let stream = BtrfsStream::parse(bytes).expect("header");
    let mut n = 0;
    for cmd in stream.commands() {
        let cmd = cmd.expect("command");
        black_box(BtrfsCommand::parse(&cmd).expect("view"));
        n += 1;
    }
    n
}

/// proto-btrfs through its `Read` adapter (`StreamReader`, one reused
/// buffer, 256 KiB reads).
pub fn proto_reader(bytes: &[u8]) -> u64 {
    let mut rd = StreamReader::new(bytes).expect("header");
    let mut n = 0;
    while let Some(cmd) = rd.next_command().expect("command") {
        black_box((cmd.cmd(), cmd.payload().len()));
        n += 1;
    }
    n
}

/// proto-btrfs through `StreamReader`, plus the typed view: the same work as
/// btrfs-stream (read from a `Read`, check, build a typed command).
pub fn proto_reader_typed(bytes: &[u8]) -> u64 {
    let mut rd = StreamReader::new(bytes).expect("header");
    let mut n = 0;
    while let Some(cmd) = rd.next_command().expect("command") {
        black_box(BtrfsCommand::parse(&cmd).expect("view"));
        n += 1;
    }
    n
}

/// proto-btrfs's sans-IO `StreamDecoder` fed 256 KiB pieces, as the CLI's
/// `dump` and `verify` feed it (a command cut by a piece boundary is
/// completed in the decoder's buffer).
pub fn proto_decoder(bytes: &[u8]) -> u64 {
    const PIECE: usize = 256 * 1024;
    let mut dec = StreamDecoder::new();
    let mut n = 0;
    for mut piece in bytes.chunks(PIECE) {
        while !piece.is_empty() {
            let used = match dec.decode(piece).expect("command") {
                Event::Command { command, consumed } => {
                    black_box((command.cmd(), command.payload().len()));
                    n += 1;
                    consumed
                }
                Event::Stream { consumed, .. } | Event::NeedMore { consumed } => consumed,
            };
            piece = &piece[used..];
        }
    }
    dec.finish().expect("end");
    n
}

/// What `proto-stream verify` does with each 1 MiB it reads, on bytes
/// already in memory: `StreamDecoder::decode_each` over 1 MiB pieces, every
/// command through `CommandChecker` (its attributes for its type) and
/// counted by type into a fixed table. The CLI's decoding thread cannot go
/// faster than this.
pub fn proto_verify(bytes: &[u8]) -> u64 {
    const PIECE: usize = 1 << 20;
    let mut dec = StreamDecoder::new();
    let mut checker = CommandChecker::new();
    let mut by_type = vec![0u64; 1 << 16];
    let (mut n, mut data) = (0u64, 0u64);
    for piece in bytes.chunks(PIECE) {
        dec.decode_each(piece, |v| {
            if let Visit::Command(cmd) = v {
                if let Some(d) = checker.check(cmd)? {
                    data += d.len() as u64;
                }
                by_type[usize::from(cmd.cmd())] += 1;
                n += 1;
            }
            Ok::<bool, proto_btrfs::Error>(true)
        })
        .expect("command");
    }
    dec.finish().expect("end");
    black_box((&by_type, data));
    n
}

/// The peer: btrfs-stream 0.13's `StreamReader` (reads each command into its
/// buffer, checks the CRC, builds an owned `StreamCommand`).
pub fn btrfs_stream(bytes: &[u8]) -> u64 {
    let mut rd = btrfs_stream::StreamReader::new(bytes).expect("header");
    let mut n = 0;
    while let Some(cmd) = rd.next_command().expect("command") {
        black_box(&cmd);
        n += 1;
    }
    n
}

/// Not a decoder: the checkpointing emitter (`proto-checkpoint` with the
/// btrfs producer) through 64 KiB buffers, as the `checkpoint` bench runs it.
/// Returns the units emitted.
pub fn emit_64k(bytes: &[u8]) -> u64 {
    use proto_btrfs::checkpoint::WRITE_SPLIT;
    use proto_btrfs::Btrfs;
    use proto_checkpoint::Format;
    let p = Btrfs.producer(bytes, 1).expect("producer");
    let mut e = proto_checkpoint::Emitter::new(p, WRITE_SPLIT).expect("emitter");
    let mut buf = vec![0u8; 64 * 1024];
    let mut units = 0;
    loop {
        let f = e.fill(&mut buf).expect("fill");
        black_box(&buf[..f.written]);
        units += f.units;
        if f.ended {
            return units;
        }
    }
}

/// A decoder: stream bytes in, number of commands out.
pub type Decoder = fn(&[u8]) -> u64;

/// Every decoder by its bench name. `crc32c` is not a decoder but the
/// ceiling: one CRC over the whole input.
pub const ALL: [(&str, Decoder); 10] = [
    ("crc32c", crc32c_only),
    ("proto-crc32c", proto_crc32c_only),
    ("proto-btrfs-commands", proto_commands),
    ("proto-btrfs-typed", proto_typed),
    ("proto-btrfs-reader", proto_reader),
    ("proto-btrfs-reader-typed", proto_reader_typed),
    ("proto-btrfs-decoder-256k", proto_decoder),
    ("proto-btrfs-verify-1m", proto_verify),
    ("btrfs-stream", btrfs_stream),
    ("emit-64k", emit_64k),
];

/// The ceiling: `crc32c` alone over the same bytes (returns the CRC).
pub fn crc32c_only(bytes: &[u8]) -> u64 {
    u64::from(crc32c::crc32c(bytes))
}

/// The same ceiling through `proto-crc32c`'s three-way kernel.
pub fn proto_crc32c_only(bytes: &[u8]) -> u64 {
    u64::from(proto_crc32c::crc32c(bytes))
}

/// The decoder named `name` in [`ALL`].
#[allow(dead_code)]
pub fn by_name(name: &str) -> Option<Decoder> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
