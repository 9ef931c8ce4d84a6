//! Checkpointed emission of every real kernel stream (`testdata/btrfs/`, the
//! small set in `testdata/btrfs/small/`, and `../shared/fixtures/btrfs/` when
//! present; see `../../tests/support/fixtures.rs`), and full + incremental of
//! each set concatenated: through buffers from the smallest workable size
//! upward and one unit per buffer, with safe points every 1, 5 and 64 units;
//! stopped after any chunk and resumed from its token. The output always
//! compares equal to the original, and is byte-identical when no command had
//! to be split. Every piece is a valid command.

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use proto_btrfs::checkpoint::{StreamProducer, WRITE_SPLIT};
use proto_btrfs::Btrfs;
use proto_btrfs::{BtrfsCommand, StreamReader};
use proto_checkpoint::Format;
use proto_checkpoint::{
    compare, DivergenceKind, EmitError, Emitter, FileSource, Outcome, RearmError, Split, Token,
    TokenError, UnitKind, Units,
};

/// (name, bytes) of every fixture stream, then full + incremental v2 of each
/// set as one concatenated input.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in fixtures::stream_dirs() {
        for p in fixtures::streams_in(&dir) {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    for dir in fixtures::sets() {
        let mut both = std::fs::read(dir.join("full-v2.stream")).unwrap();
        both.extend(std::fs::read(dir.join("incr-v2.stream")).unwrap());
        out.push((
            format!(
                "{}: full-v2 + incr-v2 (concatenated)",
                fixtures::label(&dir)
            ),
            both,
        ));
    }
    assert!(out.len() >= 10, "too few fixtures found");
    out
}

fn producer(bytes: &[u8], safe_every: u64) -> StreamProducer<&[u8]> {
    Btrfs.producer(bytes, safe_every).unwrap()
}

/// The smallest buffer that emission through works: the largest unit that
/// may not be split, or a split command's prefix plus one data byte.
/// Also returns the largest unit.
fn smallest_workable(bytes: &[u8]) -> (usize, usize) {
    let mut p = Btrfs.units(bytes);
    let (mut min, mut max) = (0, 0);
    while let Some(u) = p.current().unwrap() {
        let need = match u.kind {
            UnitKind::Command(profile) => WRITE_SPLIT
                .layout(&profile, u.bytes)
                .map_or(u.bytes.len(), |l| l.data_start + 1),
            UnitKind::Raw => u.bytes.len(),
        };
        min = min.max(need);
        max = max.max(u.bytes.len());
        p.advance().unwrap();
    }
    (min, max)
}

/// One complete emission: the chunks, the token after each, pieces in all.
struct Run {
    chunks: Vec<Vec<u8>>,
    tokens: Vec<Token>,
    pieces: u64,
}

fn drain(
    mut e: Emitter<StreamProducer<&[u8]>, proto_checkpoint::DataSplit>,
    buf_size: usize,
    units_per_fill: Option<u64>,
) -> Run {
    if let Some(n) = units_per_fill {
        e.set_units_per_fill(n);
    }
    let mut buf = vec![0u8; buf_size];
    let mut run = Run {
        chunks: Vec::new(),
        tokens: Vec::new(),
        pieces: 0,
    };
    loop {
        let f = e.fill(&mut buf).unwrap_or_else(|err| panic!("fill: {err}"));
        assert!(f.written <= buf_size);
        if f.written == 0 {
            assert!(f.ended, "a fill that wrote nothing must be the end");
            break;
        }
        run.chunks.push(buf[..f.written].to_vec());
        run.tokens.push(e.token());
        run.pieces += f.pieces;
        if f.ended {
            break;
        }
    }
    run
}

fn emit(bytes: &[u8], safe_every: u64, buf_size: usize, units_per_fill: Option<u64>) -> Run {
    drain(
        Emitter::new(producer(bytes, safe_every), WRITE_SPLIT).unwrap(),
        buf_size,
        units_per_fill,
    )
}

#[track_caller]
fn assert_equal(original: &[u8], out: &[u8], what: &str) {
    let outcome = compare(
        &mut Btrfs.units(original),
        &mut Btrfs.units(out),
        &WRITE_SPLIT,
    )
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    match outcome {
        Outcome::Equal { .. } => {}
        Outcome::Differ(d) => panic!("{what}: differs from the original: {d}"),
    }
}

/// Every command of the output is a valid btrfs command (its CRC, attribute
/// layout and typed view), END included, in every concatenated stream.
#[track_caller]
fn assert_valid_stream(out: &[u8], what: &str) {
    let mut rd = StreamReader::new(out).unwrap_or_else(|e| panic!("{what}: {e}"));
    loop {
        while let Some(c) = rd.next_command().unwrap_or_else(|e| panic!("{what}: {e}")) {
            BtrfsCommand::parse(&c).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        if rd
            .next_stream()
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .is_none()
        {
            break;
        }
    }
}

fn concat(chunks: &[Vec<u8>]) -> Vec<u8> {
    chunks.concat()
}

/// Checks one configuration: the whole run, then a resume from every token
/// (one fill, which must reproduce the next chunk and token), then complete
/// resumed runs, with another buffer size, from `full_resumes` tokens
/// spread over the run (all of them when there are no more than that).
fn check(name: &str, bytes: &[u8], safe_every: u64, size: usize, per_fill: Option<u64>) -> u64 {
    let what = format!("{name}: buffer {size}, safe every {safe_every}, per fill {per_fill:?}");
    let run = emit(bytes, safe_every, size, per_fill);
    let out = concat(&run.chunks);
    assert_valid_stream(&out, &what);
    assert_equal(bytes, &out, &what);
    if run.pieces == 0 {
        assert!(
            out == bytes,
            "{what}: no command was split, yet the bytes differ"
        );
    } else {
        assert_ne!(
            out, bytes,
            "{what}: commands were split, yet nothing changed"
        );
    }
    let last = run.tokens.last().unwrap();
    assert!(last.ended && last.offset == out.len() as u64, "{what}");

    for (i, t) in run.tokens.iter().enumerate() {
        // The text form survives the trip.
        let back: Token = t.to_text().unwrap().parse().unwrap();
        assert_eq!(&back, t, "{what}: token {i}");
        let mut e = Emitter::resume(producer(bytes, safe_every), WRITE_SPLIT, &back)
            .unwrap_or_else(|err| panic!("{what}: resume from token {i}: {err}"));
        if let Some(n) = per_fill {
            e.set_units_per_fill(n);
        }
        let mut buf = vec![0u8; size];
        let f = e.fill(&mut buf).unwrap();
        match run.chunks.get(i + 1) {
            Some(next) => {
                assert_eq!(
                    &buf[..f.written],
                    &next[..],
                    "{what}: chunk {} after resume",
                    i + 1
                );
                assert_eq!(
                    &e.token(),
                    &run.tokens[i + 1],
                    "{what}: token {} after resume",
                    i + 1
                );
            }
            None => assert!(f.written == 0 && f.ended, "{what}: resume at the end"),
        }
    }

    let n = run.tokens.len();
    let full_resumes = 6;
    let picks: Vec<usize> = if n <= full_resumes {
        (0..n).collect()
    } else {
        (0..full_resumes)
            .map(|k| k * (n - 1) / (full_resumes - 1))
            .collect()
    };
    for i in picks {
        // Resume through another buffer size: the cut points differ from
        // here on, the commands do not.
        let other = size + 97;
        let e = Emitter::resume(producer(bytes, safe_every), WRITE_SPLIT, &run.tokens[i]).unwrap();
        let rest = drain(e, other, None);
        let mut joined = concat(&run.chunks[..=i]);
        joined.extend(concat(&rest.chunks));
        let w = format!("{what}: stopped after chunk {i}, resumed through {other}-byte buffers");
        assert_valid_stream(&joined, &w);
        assert_equal(bytes, &joined, &w);
    }
    run.pieces
}

#[test]
fn buffers_from_the_smallest_upward() {
    for (name, bytes) in fixtures() {
        let (min, max) = smallest_workable(&bytes);
        let mut split_somewhere = false;
        for size in [min, min + 1, min + 13, 4096, 65536, max, bytes.len()] {
            if size < min {
                continue;
            }
            let pieces = check(&name, &bytes, 1, size, None);
            split_somewhere |= pieces > 0;
            if size >= bytes.len() {
                assert_eq!(pieces, 0, "{name}: one buffer for all needs no split");
            }
        }
        // One byte less than the smallest workable size fails, typed, at once.
        let mut e = Emitter::new(producer(&bytes, 1), WRITE_SPLIT).unwrap();
        let mut buf = vec![0u8; min - 1];
        let mut err = None;
        for _ in 0..bytes.len() {
            match e.fill(&mut buf) {
                Ok(f) if f.ended => break,
                Ok(_) => {}
                Err(x) => {
                    err = Some(x);
                    break;
                }
            }
        }
        match err {
            Some(EmitError::DoesNotFit {
                needed, available, ..
            }) => assert_eq!((needed, available), (min, min - 1), "{name}"),
            other => panic!("{name}: expected DoesNotFit at {min} - 1 bytes, got {other:?}"),
        }
        let has_data = !name.contains("nodata");
        assert_eq!(split_somewhere, has_data, "{name}: splits");
    }
}

#[test]
fn one_unit_per_buffer() {
    for (name, bytes) in fixtures() {
        let (min, max) = smallest_workable(&bytes);
        // Big buffers: every unit whole, one per fill, byte-identical.
        assert_eq!(check(&name, &bytes, 1, max, Some(1)), 0, "{name}");
        // The smallest buffers, one piece or unit per fill.
        check(&name, &bytes, 1, min, Some(1));
    }
}

#[test]
fn safe_points_every_k_units() {
    for (name, bytes) in fixtures() {
        let (min, _) = smallest_workable(&bytes);
        for k in [5, 64] {
            check(&name, &bytes, k, min + 1000, None);
            check(&name, &bytes, k, min.max(4096), Some(1));
        }
    }
}

/// A token is bound to its stream (and carries its safe-point interval); a token
/// with a field changed (CRC recomputed, so only the emitter can tell) is
/// refused with a typed error, and nothing is emitted.
#[test]
fn tokens_that_do_not_fit_are_refused() {
    let fx = fixtures();
    let pick = |n: &str| {
        &fx.iter()
            .find(|(name, _)| name.ends_with(n))
            .unwrap_or_else(|| panic!("{n} missing"))
            .1
    };
    let (a, b) = (pick("incr-v2.stream"), pick("incr-v1.stream"));
    let run = emit(a, 5, 4096, None);
    let mid = run.tokens[run.tokens.len() / 2].clone();
    assert!(mid.split_done > 0 || mid.since_safe_point > 0, "{mid:?}");

    let refuse = |bytes: &[u8], k: u64, t: &Token| -> EmitError<proto_btrfs::Error> {
        match Emitter::resume(producer(bytes, k), WRITE_SPLIT, t) {
            Ok(_) => panic!("token accepted: {t:?}"),
            Err(e) => e,
        }
    };
    // Another stream.
    assert!(matches!(
        refuse(b, 5, &mid),
        EmitError::Token(TokenError::WrongStream { .. })
    ));
    // A producer made with another safe-point interval takes the token's
    // (the token carries it) and goes on exactly as the first run did.
    let mut e = Emitter::resume(producer(a, 7), WRITE_SPLIT, &mid).unwrap();
    assert_eq!(e.producer().safe_every(), 5);
    let i = run.tokens.iter().position(|t| *t == mid).unwrap();
    let mut buf = vec![0u8; 4096];
    let f = e.fill(&mut buf).unwrap();
    assert_eq!(&buf[..f.written], &run.chunks[i + 1][..]);
    assert_eq!(e.token(), run.tokens[i + 1]);
    // Skipping more units than there are since the safe point.
    let mut t = mid.clone();
    t.seq += 5;
    t.since_safe_point += 5;
    t.offset += 1000;
    let e = refuse(a, 5, &t);
    assert!(
        matches!(e, EmitError::Rearm(RearmError::SafePointSkipped { .. })),
        "{e}"
    );
    // The wrong unit count for the state.
    let mut t = mid.clone();
    t.seq += 1;
    t.offset += 1000;
    let e = refuse(a, 5, &t);
    assert!(
        matches!(e, EmitError::Rearm(RearmError::Position { .. })),
        "{e}"
    );
    // More data bytes than the command has, or data of a command that is not a write.
    let at_write = run.tokens.iter().find(|t| t.split_done > 0).unwrap();
    let mut t = at_write.clone();
    t.split_done = 1 << 40;
    t.offset += 1 << 41;
    let e = refuse(a, 5, &t);
    assert!(
        matches!(e, EmitError::Rearm(RearmError::Split { .. })),
        "{e}"
    );
    let one_by_one = emit(a, 5, 1 << 20, Some(1));
    let whole = &one_by_one.tokens[3];
    assert!(whole.split_done == 0 && !whole.ended);
    let mut t = whole.clone();
    t.split_done = 1;
    let e = refuse(a, 5, &t);
    assert!(
        matches!(e, EmitError::Rearm(RearmError::Split { .. })),
        "{e}"
    );
    // The end claimed early.
    let mut t = whole.clone();
    t.ended = true;
    let e = refuse(a, 5, &t);
    assert!(
        matches!(e, EmitError::Rearm(RearmError::NotEnded { .. })),
        "{e}"
    );
    // A state whose fingerprint does not match the bytes there.
    let mut t = mid.clone();
    let n = t.state.len();
    t.state[n - 1] ^= 1;
    let e = refuse(a, 5, &t);
    assert!(matches!(e, EmitError::BadState(_)), "{e}");
    // A damaged token never gets this far: its CRC catches every flipped bit.
    let bytes = mid.to_bytes().unwrap();
    for i in 0..bytes.len() * 8 {
        let mut x = bytes.clone();
        x[i / 8] ^= 1 << (i % 8);
        assert!(Token::from_bytes(&x).is_err(), "bit {i}");
    }
}

/// A damaged command is an error at its index and offset, never passed on
/// with a fresh CRC, whether it goes whole or in pieces.
#[test]
fn damaged_commands_are_refused_not_laundered() {
    let fx = fixtures();
    let (_, bytes) = fx
        .iter()
        .find(|(n, _)| n.ends_with("incr-v2.stream"))
        .unwrap();
    // The big write of incr-v2: flip a byte deep in its data.
    let mut p = Btrfs.units(&bytes[..]);
    let mut write = None;
    while let Some(u) = p.current().unwrap() {
        if let UnitKind::Command(pr) = u.kind {
            if let Some(l) = WRITE_SPLIT.layout(&pr, u.bytes) {
                if l.data_len > 50_000 {
                    write = Some((u.index, u.offset, l));
                }
            }
        }
        p.advance().unwrap();
    }
    let (index, offset, layout) = write.unwrap();
    let mut bad = bytes.clone();
    bad[offset as usize + layout.data_start + 40_000] ^= 0x20;
    for size in [4096, 1 << 20] {
        let mut e = Emitter::new(producer(&bad, 1), WRITE_SPLIT).unwrap();
        let mut buf = vec![0u8; size];
        let err = loop {
            match e.fill(&mut buf) {
                Ok(f) => assert!(!f.ended, "size {size}: the damage went unnoticed"),
                Err(err) => break err,
            }
        };
        match err {
            EmitError::Corrupt(t) => assert_eq!((t.index, t.offset), (index, offset), "{t}"),
            other => panic!("size {size}: {other}"),
        }
        // It stays failed, and its token is still the last good fill's:
        // re-armed from it, the same error comes at the same place.
        assert!(matches!(e.fill(&mut buf), Err(EmitError::Failed { .. })));
        let last_good = e.token();
        last_good.check().unwrap();
        let mut again = Emitter::resume(producer(&bad, 1), WRITE_SPLIT, &last_good).unwrap();
        let err = loop {
            match again.fill(&mut buf) {
                Ok(f) => assert!(!f.ended),
                Err(err) => break err,
            }
        };
        assert!(matches!(err, EmitError::Corrupt(t) if (t.index, t.offset) == (index, offset)));
    }
    // compare says where.
    let got = compare(
        &mut Btrfs.units(&bytes[..]),
        &mut Btrfs.units(&bad[..]),
        &WRITE_SPLIT,
    );
    assert!(matches!(
        got,
        Err(proto_checkpoint::CompareError::Corrupt { .. })
    ));
}

/// compare on real streams: equal however split; a changed data byte, a
/// dropped command and a changed attribute are found where they are.
#[test]
fn compare_finds_the_first_divergence() {
    let fx = fixtures();
    let full_v1: Vec<_> = fx
        .iter()
        .filter(|(n, _)| n.ends_with("/full-v1.stream"))
        .collect();
    // The shipped set has one, and so does the shared set.
    assert_eq!(full_v1.len(), fixtures::sets().len(), "full-v1 streams");
    for (name, bytes) in full_v1 {
        compare_finds_the_first_divergence_in(name, bytes);
    }
}

fn compare_finds_the_first_divergence_in(name: &str, bytes: &[u8]) {
    eprintln!("{name}");
    let run = emit(bytes, 1, 5000, None);
    let mut out = concat(&run.chunks);
    assert_equal(bytes, &out, "full-v1 through 5000-byte buffers");
    // Change one data byte in a piece, and give the piece a valid CRC again:
    // only the comparison can see it.
    let mut p = Btrfs.units(&out[..]);
    let mut target = None;
    while let Some(u) = p.current().unwrap() {
        if let UnitKind::Command(pr) = u.kind {
            if let Some(l) = WRITE_SPLIT.layout(&pr, u.bytes) {
                if l.data_len > 100 && target.is_none() && u.index > 20 {
                    target = Some((
                        u.offset,
                        u.index,
                        l,
                        WRITE_SPLIT.path(&pr, u.bytes).unwrap().to_vec(),
                    ));
                }
            }
        }
        p.advance().unwrap();
    }
    let (off, index, l, path) = target.unwrap();
    let at = off as usize + l.data_start + 77;
    out[at] ^= 1;
    let cmd_end = off as usize + l.data_start + l.data_len as usize;
    let c = &mut out[off as usize..cmd_end];
    c[6..10].fill(0);
    let crc = proto_tlv::CrcVariant::BtrfsRaw.checksum(c);
    c[6..10].copy_from_slice(&crc.to_le_bytes());
    match compare(
        &mut Btrfs.units(bytes),
        &mut Btrfs.units(&out[..]),
        &WRITE_SPLIT,
    )
    .unwrap()
    {
        Outcome::Differ(d) => {
            assert_eq!(d.kind, DivergenceKind::Data, "{d}");
            let b = d.b.unwrap();
            assert_eq!((b.index, b.offset, b.byte), (index, off, at as u64), "{d}");
            assert_eq!(d.file_offset, Some(l.position + 77), "{d}");
            assert_eq!(d.path.as_deref(), Some(&path[..]), "{d}");
        }
        other => panic!("{other:?}"),
    }
}

/// The file-backed source gives the same emission as the in-memory one, and
/// re-arms from the same tokens (with a 1 MiB read-ahead window that the
/// stream is larger than).
#[test]
fn file_source_agrees_with_memory() {
    let fx = fixtures();
    let (name, bytes) = fx.iter().max_by_key(|(_, b)| b.len()).unwrap();
    // Larger than the read-ahead window: the largest input repeated when it
    // is smaller (whole streams one after another, as a producer takes them).
    let n = proto_checkpoint::READ_AHEAD / bytes.len() + 1;
    let (name, bytes) = (&format!("{name} (x{n})"), &bytes.repeat(n));
    assert!(bytes.len() > proto_checkpoint::READ_AHEAD, "{name}");
    let dir = std::env::temp_dir().join(format!("proto-btrfs-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.stream");
    std::fs::write(&path, bytes).unwrap();
    let run = emit(bytes, 3, 70_000, None);
    let file = || {
        Btrfs
            .producer(
                FileSource::new(std::fs::File::open(&path).unwrap()).unwrap(),
                3,
            )
            .unwrap()
    };
    let mut e = Emitter::new(file(), WRITE_SPLIT).unwrap();
    let mut buf = vec![0u8; 70_000];
    for (i, chunk) in run.chunks.iter().enumerate() {
        let f = e.fill(&mut buf).unwrap();
        assert_eq!(&buf[..f.written], &chunk[..], "{name}: chunk {i}");
        assert_eq!(e.token(), run.tokens[i]);
    }
    for i in [run.tokens.len() / 3, run.tokens.len() - 2] {
        let mut e = Emitter::resume(file(), WRITE_SPLIT, &run.tokens[i]).unwrap();
        let f = e.fill(&mut buf).unwrap();
        assert_eq!(
            &buf[..f.written],
            &run.chunks[i + 1][..],
            "{name}: resumed chunk {}",
            i + 1
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `list_streams` finds each stream of a concatenation with its name, and
/// `Spans` over any selection reads exactly the selected bytes, across
/// range boundaries too.
#[test]
fn streams_of_a_concatenation_and_spans_over_a_selection() {
    use proto_checkpoint::{list_streams, Source, Spans};
    let set = fixtures::shipped_set();
    let get = |n: &str| std::fs::read(set.join(format!("{n}.stream"))).unwrap();
    let (full, incr) = (get("full-v2"), get("incr-v2"));
    let file = [full.as_slice(), &incr, &full].concat();
    let streams = list_streams(&Btrfs, &mut &file[..]).unwrap();
    let spans: Vec<(u64, u64)> = streams.iter().map(|s| (s.offset, s.len)).collect();
    let (f, i) = (full.len() as u64, incr.len() as u64);
    assert_eq!(spans, vec![(0, f), (f, i), (f + i, f)]);
    assert_eq!(streams[1].name, "snapshot:snap2");
    assert!(streams.iter().all(|s| s.version == 2));
    for (s, bytes) in streams.iter().zip([&full, &incr, &full]) {
        let largest = proto_btrfs::BtrfsStream::parse(bytes)
            .unwrap()
            .commands()
            .map(|c| c.unwrap().encoded_len())
            .max()
            .unwrap();
        assert_eq!(s.largest, largest.max(proto_btrfs::HEADER_LEN));
    }

    // A truncated concatenation is refused at the right offset.
    let cut = &file[..file.len() - 5];
    let err = list_streams(&Btrfs, &mut &cut[..]).unwrap_err();
    let at = err.offset().unwrap();
    assert!((f + i..f + i + f).contains(&at), "{err} at {at}");

    for sel in [vec![0usize], vec![1], vec![0, 2], vec![1, 2], vec![0, 1, 2]] {
        let ranges: Vec<(u64, u64)> = sel.iter().map(|&k| spans[k]).collect();
        let want: Vec<u8> = sel
            .iter()
            .flat_map(|&k| file[spans[k].0 as usize..][..spans[k].1 as usize].to_vec())
            .collect();
        let mut src = Spans::new(&file[..], &ranges).unwrap();
        assert_eq!(src.len(), want.len() as u64);
        // Reads of every length at offsets around each boundary.
        let mut at = 0u64;
        let mut bounds = vec![0u64];
        for &(_, len) in &ranges {
            at += len;
            bounds.push(at);
        }
        for &b in &bounds {
            for off in b.saturating_sub(40)..(b + 40).min(want.len() as u64) {
                for len in [1usize, 7, 64, 300] {
                    let end = (off as usize + len).min(want.len());
                    let got = src.read_at(off, end - off as usize).unwrap();
                    assert_eq!(got, &want[off as usize..end], "{sel:?} at {off}+{len}");
                }
            }
        }
        assert!(src.read_at(want.len() as u64, 1).is_err());
        // The selection is a valid stream of its own.
        assert_valid_stream(&want, "selection");
    }
    assert!(Spans::new(&file[..], &[(0, file.len() as u64 + 1)]).is_err());
}
