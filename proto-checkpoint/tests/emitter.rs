//! `Emitter` over random command streams: bounded buffers, split data
//! commands, tokens, crashes and resumes, damaged input and tokens that do
//! not fit.
//!
//! Every stream is built from a model (data commands and others, then END),
//! so the output is checked against the model rather than against the
//! emitter's own view: which input command each output command carries,
//! what each piece of a split command must look like byte for byte, and
//! what each token must say.

use proptest::prelude::*;
use proptest::sample::Index;
use proto_checkpoint::{
    compare, CommandsError, CommandsProducer, DataSplit, EmitError, Emitter, Fill, Outcome,
    RearmError, Token, TokenError,
};
use proto_tlv::{decode_command, Commands, CrcVariant, ErrorKind, Profile};

mod support;
use support::*;

const OTHER_ID: [u8; 16] = *b"another-stream!!";

/// Buffer sizes as amounts above the smallest workable size, used in turn.
fn schedule() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![
            4 => 0usize..8,
            4 => 0usize..300,
            2 => 0usize..4000,
            1 => 0usize..100_000,
        ],
        1..6,
    )
}

fn per_fill() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![3 => Just(None), 2 => Just(Some(1)), 1 => (2u64..5).prop_map(Some)]
}

// ---------------------------------------------------------------------------
// Running an emitter.

/// One successful fill that wrote something.
#[derive(Clone, Debug)]
struct Rec {
    buf: usize,
    chunk: Vec<u8>,
    fill: Fill,
    /// The emitter's token after the fill.
    token: Token,
}

/// Fills until the end, through buffers of `base + extra` bytes in turn.
fn drain<P: proto_checkpoint::Producer>(
    e: &mut Emitter<P, DataSplit>,
    base: usize,
    extra: &[usize],
) -> Vec<Rec> {
    let mut recs = Vec::new();
    for i in 0.. {
        assert!(i < 1_000_000, "no end in sight");
        let size = base + extra[i % extra.len()];
        let mut buf = vec![0xa5; size];
        let fill = e
            .fill(&mut buf)
            .unwrap_or_else(|err| panic!("fill {i} ({size} bytes): {err}"));
        assert!(fill.written <= size);
        if fill.written == 0 {
            assert!(fill.ended, "a fill that wrote nothing must be at the end");
            assert_eq!((fill.units, fill.pieces), (0, 0));
            break;
        }
        let ended = fill.ended;
        recs.push(Rec {
            buf: size,
            chunk: buf[..fill.written].to_vec(),
            fill,
            token: e.token(),
        });
        if ended {
            break;
        }
    }
    recs
}

/// Which input command an output command carries: whole, or the piece with
/// data bytes `from..to`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Carried {
    input: usize,
    piece: Option<(u64, u64)>,
}

/// Maps output commands to input commands: each is the input command as
/// it is, or one of the pieces that a split data command becomes, each of
/// which must be byte for byte the command the model says (the original's
/// attributes, the offset advanced by the data before it, its slice of the
/// data). `complete`: the output must cover the whole input.
fn carried(m: &Model, out: &[&[u8]], complete: bool) -> Vec<Carried> {
    let mut res = Vec::new();
    let (mut k, mut j) = (0, 0);
    while j < out.len() {
        assert!(
            k < m.cmds.len(),
            "output command {j} is past the input's END"
        );
        if out[j] == m.cmd(k) {
            res.push(Carried {
                input: k,
                piece: None,
            });
            k += 1;
            j += 1;
            continue;
        }
        let Cmd::Data { path, offset, data } = &m.cmds[k] else {
            panic!("output command {j} is not input command {k}, which may not be split");
        };
        assert!(
            m.layouts[k].is_some(),
            "output command {j}: input command {k} was changed but may not be split"
        );
        let mut done = 0usize;
        let mut pieces = 0;
        while done < data.len() {
            if j == out.len() {
                assert!(
                    !complete,
                    "input command {k}: pieces missing after byte {done}"
                );
                return res;
            }
            let (c, _) = decode_command(out[j], &m.profile, j as u64, 0).unwrap();
            assert_eq!(c.cmd(), WRITE.cmd, "output command {j}");
            let at = c.attr(18).unwrap().as_u64().unwrap();
            assert_eq!(at, offset + done as u64, "output command {j}: file offset");
            let d = c.attr(19).unwrap().value();
            assert!(
                !d.is_empty() && done + d.len() <= data.len(),
                "output command {j}"
            );
            assert_eq!(d, &data[done..done + d.len()], "output command {j}: data");
            assert_eq!(c.attr(15).unwrap().value(), &path[..], "output command {j}");
            let mut want = Vec::new();
            encode(
                &m.profile,
                &Cmd::Data {
                    path: path.clone(),
                    offset: offset + done as u64,
                    data: d.to_vec(),
                },
                &mut want,
            );
            assert_eq!(out[j], &want[..], "output command {j}: piece bytes");
            res.push(Carried {
                input: k,
                piece: Some((done as u64, (done + d.len()) as u64)),
            });
            done += d.len();
            pieces += 1;
            j += 1;
        }
        // A piece never carries a whole command's data.
        assert!(pieces >= 2, "input command {k} went out in {pieces} piece");
        k += 1;
    }
    if complete {
        assert_eq!(k, m.cmds.len(), "the output stops before the input's END");
    }
    res
}

/// The token the emitter must give after output command `last` (None: at
/// the start), `offset` bytes into the output.
fn expected_token(m: &Model, safe_every: u64, last: Option<Carried>, offset: u64) -> Token {
    let (seq, split_done) = match last {
        None => (0, 0),
        Some(Carried { input, piece: None }) => (input as u64 + 1, 0),
        Some(Carried {
            input,
            piece: Some((_, to)),
        }) => {
            if to == m.layouts[input].unwrap().data_len {
                (input as u64 + 1, 0)
            } else {
                (input as u64, to)
            }
        }
    };
    let since_safe_point = seq % safe_every;
    let base = seq - since_safe_point;
    let pos = if base == m.n() {
        m.bytes.len()
    } else {
        m.at[base as usize].0
    };
    let mut state = vec![1, u8::from(base == m.n())];
    state.extend_from_slice(&(pos as u64).to_le_bytes());
    state.extend_from_slice(&base.to_le_bytes());
    Token {
        stream_id: ID,
        seq,
        offset,
        since_safe_point,
        split_done,
        ended: seq == m.n(),
        state,
    }
}

/// Everything a complete emission (fills from the start of the stream to
/// its end, possibly through a crash and a resume) must satisfy.
fn check_emission(m: &Model, safe_every: u64, per_fill: Option<u64>, recs: &[Rec], what: &str) {
    let p = &m.profile;
    // Each chunk is whole, valid commands, within its buffer.
    let mut out_cmds = Vec::new();
    let mut per_chunk = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        assert!(r.chunk.len() <= r.buf, "{what}: chunk {i}");
        let cmds = commands_of(p, &r.chunk);
        assert!(!cmds.is_empty(), "{what}: chunk {i} is empty");
        if let Some(n) = per_fill {
            assert!(
                cmds.len() as u64 <= n,
                "{what}: chunk {i}: {} commands",
                cmds.len()
            );
            if n == 1 {
                assert!(
                    matches!((r.fill.units, r.fill.pieces), (1, 0) | (0, 1) | (1, 1)),
                    "{what}: chunk {i}: {:?}",
                    r.fill
                );
            }
        }
        per_chunk.push(cmds.len());
        out_cmds.extend(cmds);
    }
    let out: Vec<u8> = recs.iter().flat_map(|r| r.chunk.iter().copied()).collect();

    // (a) The whole output decodes, every CRC valid, END last.
    let decoded: Vec<_> = Commands::new(&out, *p, 0)
        .map(|c| c.unwrap_or_else(|e| panic!("{what}: {e}")))
        .collect();
    assert_eq!(decoded.len(), out_cmds.len(), "{what}");
    assert!(decoded.last().unwrap().is_end(), "{what}");

    // (b) The same commands as the input.
    let outcome = compare(
        &mut m.producer(1),
        &mut CommandsProducer::new(&out, *p, ID, 1),
        &WRITE,
    )
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        outcome,
        Outcome::Equal {
            units_a: m.n(),
            units_b: out_cmds.len() as u64,
            data_bytes: m.data_bytes()
        },
        "{what}"
    );

    // (c) Byte-identical unless something was split.
    let pieces: u64 = recs.iter().map(|r| r.fill.pieces).sum();
    if pieces == 0 {
        assert!(
            out == m.bytes,
            "{what}: nothing split, yet the bytes differ"
        );
    } else {
        assert!(
            out != m.bytes,
            "{what}: {pieces} pieces, yet nothing changed"
        );
    }

    // Every output command is an input command or a piece of one, and the
    // counts and tokens say so.
    let map = carried(m, &out_cmds, true);
    let pieces_seen = map.iter().filter(|c| c.piece.is_some()).count() as u64;
    assert_eq!(pieces, pieces_seen, "{what}: pieces reported");
    let units: u64 = recs.iter().map(|r| r.fill.units).sum();
    assert_eq!(units, m.n(), "{what}: units reported");
    let (mut j, mut offset, mut seq) = (0, 0u64, 0u64);
    for (i, r) in recs.iter().enumerate() {
        let chunk_map = &map[j..j + per_chunk[i]];
        j += per_chunk[i];
        offset += r.chunk.len() as u64;
        let want = expected_token(m, safe_every, chunk_map.last().copied(), offset);
        assert_eq!(r.token, want, "{what}: token after chunk {i}");
        assert_eq!(r.fill.ended, want.ended, "{what}: chunk {i}");
        assert_eq!(r.fill.units, want.seq - seq, "{what}: units of chunk {i}");
        let p = chunk_map.iter().filter(|c| c.piece.is_some()).count() as u64;
        assert_eq!(r.fill.pieces, p, "{what}: pieces of chunk {i}");
        seq = want.seq;
    }
    assert!(recs.last().unwrap().fill.ended, "{what}");
}

// ---------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config(600))]

    /// Random streams through random buffer schedules: the output is the
    /// input (re-split at most), the tokens are right, every token resumes
    /// to the very next chunk, and a crash after any fill resumed through
    /// other buffers gives a stream as good.
    #[test]
    fn emission_crash_and_resume(
        m in model(25),
        safe_every in 1u64..8,
        first in schedule(),
        second in schedule(),
        per_fill_1 in per_fill(),
        per_fill_2 in per_fill(),
        crash in any::<Index>(),
    ) {
        let min = m.min_workable();
        let mut e = m.emitter(safe_every);
        let start = e.token();
        prop_assert_eq!(&start, &expected_token(&m, safe_every, None, 0));
        if let Some(n) = per_fill_1 {
            e.set_units_per_fill(n);
        }
        let recs = drain(&mut e, min, &first);
        check_emission(&m, safe_every, per_fill_1, &recs, "one run");
        // An ended emitter writes nothing more.
        let f = e.fill(&mut [0u8; 16]).unwrap();
        prop_assert!(f.written == 0 && f.ended);
        prop_assert_eq!(&e.token(), &recs.last().unwrap().token);

        // Token i, resumed, gives chunk i + 1 and token i + 1 again.
        let tokens: Vec<&Token> = std::iter::once(&start).chain(recs.iter().map(|r| &r.token)).collect();
        for (i, t) in tokens.iter().enumerate() {
            let mut e = Emitter::resume(m.producer(safe_every), WRITE, t)
                .unwrap_or_else(|err| panic!("resume from token {i}: {err}"));
            if let Some(n) = per_fill_1 {
                e.set_units_per_fill(n);
            }
            prop_assert_eq!(&e.token(), *t);
            match recs.get(i) {
                Some(next) => {
                    let mut buf = vec![0u8; next.buf];
                    let f = e.fill(&mut buf).unwrap();
                    prop_assert_eq!(&f, &next.fill, "fill after token {}", i);
                    prop_assert_eq!(&buf[..f.written], &next.chunk[..], "chunk after token {}", i);
                }
                None => {
                    let f = e.fill(&mut vec![0u8; min]).unwrap();
                    prop_assert!(f.written == 0 && f.ended);
                }
            }
        }

        // Crash after fill c (or before the first), resume from the token's
        // text form with another schedule.
        let c = crash.index(tokens.len());
        let saved = tokens[c].to_text().unwrap();
        let token: Token = saved.parse().unwrap();
        let mut e = Emitter::resume(m.producer(safe_every), WRITE, &token).unwrap();
        if let Some(n) = per_fill_2 {
            e.set_units_per_fill(n);
        }
        let mut joined = recs[..c].to_vec();
        joined.extend(drain(&mut e, min, &second));
        let per_fill = if per_fill_1 == per_fill_2 { per_fill_1 } else { None };
        check_emission(&m, safe_every, per_fill, &joined, &format!("crash after fill {c}"));
    }

    /// Runs of commands ([`Producer::commands_ahead`]) change nothing: the
    /// same fills, bytes and tokens as the same producer taken one unit at
    /// a time, through the same buffers, with any number of units a fill,
    /// with the CRCs of commands below any length left unchecked or not.
    #[test]
    fn runs_of_commands_emit_what_units_one_at_a_time_do(
        m in model(25),
        safe_every in 1u64..8,
        sizes in schedule(),
        per_fill in per_fill(),
        unchecked_below in prop_oneof![Just(0usize), Just(256), Just(4096), 0usize..6000],
    ) {
        let min = m.min_workable();
        let mut runs = m.emitter(safe_every);
        let mut single = Emitter::new(one_at_a_time(m.producer(safe_every)), WRITE).unwrap();
        runs.set_unchecked_below(unchecked_below);
        single.set_unchecked_below(unchecked_below);
        if let Some(n) = per_fill {
            runs.set_units_per_fill(n);
            single.set_units_per_fill(n);
        }
        // Runs from a producer that does not say where its safe points
        // are: the emitter asks after every unit.
        let mut unknown =
            Emitter::new(runs_without_safe_points(m.producer(safe_every)), WRITE).unwrap();
        if let Some(n) = per_fill {
            unknown.set_units_per_fill(n);
        }
        let a = drain(&mut runs, min, &sizes);
        let b = drain(&mut single, min, &sizes);
        let c = drain(&mut unknown, min, &sizes);
        prop_assert_eq!(a.len(), b.len());
        prop_assert_eq!(c.len(), b.len());
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            prop_assert_eq!(&a.fill, &b.fill, "fill {}", i);
            prop_assert_eq!(&a.chunk, &b.chunk, "chunk {}", i);
            prop_assert_eq!(&a.token, &b.token, "token after fill {}", i);
            prop_assert_eq!(&c[i].fill, &b.fill, "fill {}", i);
            prop_assert_eq!(&c[i].token, &b.token, "token after fill {}", i);
        }
    }

    /// `fill_units`: whole commands only, each length reported, at most
    /// `max` a fill; a buffer smaller than the next command ends the fill
    /// before it (nothing is split), and one smaller than a command on its
    /// own is `DoesNotFit` at it. The output is the input, byte for byte.
    #[test]
    fn fill_units_takes_whole_commands_and_reports_each(
        m in model(25),
        safe_every in 1u64..8,
        sizes in schedule(),
        max in prop_oneof![Just(1u64), 2u64..6, Just(u64::MAX)],
    ) {
        let largest = m.at.iter().map(|a| a.1).max().unwrap();
        let mut e = m.emitter(safe_every);
        let (mut out, mut all_lens, mut i) = (Vec::new(), Vec::new(), 0);
        loop {
            let size = largest + sizes[i % sizes.len()];
            i += 1;
            let mut buf = vec![0u8; size];
            let mut lens = Vec::new();
            let f = e.fill_units(&mut buf, max, &mut lens).unwrap();
            prop_assert_eq!(f.pieces, 0);
            prop_assert_eq!(f.units, lens.len() as u64);
            prop_assert!(f.units <= max);
            prop_assert_eq!(lens.iter().sum::<usize>(), f.written);
            if !f.ended && f.units < max {
                // The next command did not fit in what was left.
                let next = m.at[all_lens.len() + lens.len()].1;
                prop_assert!(next > size - f.written, "{} left, next {}", size - f.written, next);
            }
            out.extend_from_slice(&buf[..f.written]);
            all_lens.extend(lens);
            if f.ended {
                break;
            }
        }
        prop_assert!(out == m.bytes);
        prop_assert_eq!(all_lens, m.at.iter().map(|a| a.1).collect::<Vec<_>>());
        // Smaller than the largest command: DoesNotFit when it comes first.
        let k = m.at.iter().position(|a| a.1 == largest).unwrap();
        let mut e = m.emitter(safe_every);
        let mut lens = Vec::new();
        let err = loop {
            let mut buf = vec![0u8; largest - 1];
            match e.fill_units(&mut buf, u64::MAX, &mut lens) {
                Ok(f) => prop_assert!(!f.ended),
                Err(err) => break err,
            }
        };
        match err {
            EmitError::DoesNotFit { seq, needed, available, .. } => {
                prop_assert_eq!((seq, needed, available), (k as u64, largest, largest - 1));
            }
            other => return Err(TestCaseError::fail(format!("{other}"))),
        }
    }

    /// Too small a buffer: `DoesNotFit` at the first command that needs
    /// more, naming it and both sizes; nothing moves, and larger buffers
    /// then finish the stream.
    #[test]
    fn too_small_a_buffer_does_not_poison(
        m in model(15),
        safe_every in 1u64..8,
        small in any::<Index>(),
        rest in schedule(),
    ) {
        let min = m.min_workable();
        let small = 1 + small.index(min - 1);
        let k = (0..m.cmds.len()).find(|&k| m.need(k) > small).unwrap();
        let mut e = m.emitter(safe_every);
        let mut recs = Vec::new();
        let err = loop {
            let mut buf = vec![0u8; small];
            match e.fill(&mut buf) {
                Ok(f) => {
                    prop_assert!(!f.ended && f.written > 0 && f.written <= small);
                    recs.push(Rec { buf: small, chunk: buf[..f.written].to_vec(), fill: f, token: e.token() });
                }
                Err(err) => break err,
            }
        };
        let before = e.token();
        let want = (k as u64, k as u64, m.at[k].0 as u64, m.need(k), small);
        match err {
            EmitError::DoesNotFit { seq, index, offset, needed, available } => {
                prop_assert_eq!((seq, index, offset, needed, available), want);
            }
            other => prop_assert!(false, "expected DoesNotFit, got {:?}", other),
        }
        // Again: the same error, the same token.
        match e.fill(&mut vec![0u8; small]) {
            Err(EmitError::DoesNotFit { seq, index, offset, needed, available }) => {
                prop_assert_eq!((seq, index, offset, needed, available), want);
            }
            other => prop_assert!(false, "expected DoesNotFit again, got {:?}", other),
        }
        prop_assert_eq!(e.token(), before);
        recs.extend(drain(&mut e, min, &rest));
        check_emission(&m, safe_every, None, &recs, "after DoesNotFit");
    }

    /// A flipped bit anywhere in any command: an error naming that command
    /// and its offset, whatever the buffers, never an `Ok` fill that passes
    /// it on with a valid CRC; then the emitter stays failed.
    #[test]
    fn damaged_commands_are_refused(
        m in model(15),
        safe_every in 1u64..8,
        which in any::<Index>(),
        byte in any::<Index>(),
        bit in 0u8..8,
        sizes in schedule(),
    ) {
        let k = which.index(m.cmds.len());
        let (off, len) = m.at[k];
        let b = byte.index(len);
        let mut bad = m.bytes.clone();
        bad[off + b] ^= 1 << bit;
        let mut e = Emitter::new(CommandsProducer::new(&bad, m.profile, ID, safe_every), WRITE).unwrap();
        let min = m.min_workable();
        let mut recs = Vec::new();
        let mut at_least = 0;
        let mut i = 0;
        let err = loop {
            let size = (min + sizes[i % sizes.len()]).max(at_least);
            i += 1;
            prop_assert!(i < 1_000_000);
            let mut buf = vec![0u8; size];
            match e.fill(&mut buf) {
                Ok(f) => {
                    prop_assert!(!f.ended, "the damage went unnoticed");
                    recs.push(Rec { buf: size, chunk: buf[..f.written].to_vec(), fill: f, token: e.token() });
                }
                // The damage may change a command's layout: take a larger buffer.
                Err(EmitError::DoesNotFit { needed, available, .. }) => {
                    prop_assert!(needed > available && available == size);
                    at_least = needed;
                }
                Err(err) => break err,
            }
        };
        let position = match &err {
            EmitError::Corrupt(t) => {
                prop_assert!(matches!(t.kind, ErrorKind::CrcMismatch { .. }), "{}", t);
                (t.index, t.offset)
            }
            // A flip in the length field changes the framing.
            EmitError::Producer(CommandsError::Tlv(t)) if b < 4 => {
                prop_assert!(
                    matches!(t.kind, ErrorKind::Truncated { .. } | ErrorKind::Oversized { .. }),
                    "{}", t
                );
                (t.index, t.offset)
            }
            other => return Err(TestCaseError::fail(format!("byte {b} of command {k}: {other:?}"))),
        };
        prop_assert_eq!(position, (k as u64, off as u64), "byte {} of command {}: {}", b, k, err);
        // Failed for good, whatever the buffer.
        for size in [1, min, 1 << 20] {
            match e.fill(&mut vec![0u8; size]) {
                Err(EmitError::Failed { seq }) => prop_assert_eq!(seq, k as u64),
                other => prop_assert!(false, "expected Failed, got {:?}", other),
            }
        }
        // What went out is valid and comes from the commands before the
        // damaged one, as the undamaged input has them.
        let out: Vec<u8> = recs.iter().flat_map(|r| r.chunk.iter().copied()).collect();
        let out_cmds = commands_of(&m.profile, &out);
        let map = carried(&m, &out_cmds, false);
        prop_assert!(map.iter().all(|c| c.input < k), "{:?}", map.last());
        for r in &recs {
            prop_assert!(r.token.seq <= k as u64);
        }
    }

    /// Tokens that do not fit the stream are refused with typed errors;
    /// tokens with nonsense in them never make the emitter panic.
    #[test]
    fn tokens_that_do_not_fit_are_refused(
        m in model(15),
        safe_every in 1u64..8,
        sizes in schedule(),
        pick in any::<Index>(),
        kind in 0u8..9,
        d in 1u64..6,
        r in any::<u64>(),
        junk in proptest::collection::vec(any::<u8>(), 0..30),
    ) {
        let min = m.min_workable();
        let mut e = m.emitter(safe_every);
        let mut tokens = vec![e.token()];
        tokens.extend(drain(&mut e, min, &sizes).into_iter().map(|r| r.token));
        let t = tokens[pick.index(tokens.len())].clone();
        let (n, k) = (m.n(), safe_every);
        let base = t.seq - t.since_safe_point;
        let resume = |t: &Token| Emitter::resume(m.producer(k), WRITE, t);
        let bad_state = |why: &str, t: &Token| match resume(t) {
            Err(EmitError::BadState(CommandsError::BadState { why: w })) => {
                assert_eq!(w, why, "{t:?}");
            }
            other => panic!("expected BadState({why}), got {:?}", other.err()),
        };
        let mut u = t.clone();
        match kind {
            // Another stream.
            0 => match Emitter::resume(CommandsProducer::new(&m.bytes, m.profile, OTHER_ID, k), WRITE, &t) {
                Err(EmitError::Token(TokenError::WrongStream { expected, found })) => {
                    prop_assert_eq!((expected, found), (OTHER_ID, ID));
                }
                other => prop_assert!(false, "{:?}", other.err()),
            },
            // More units, same safe point: the state is elsewhere.
            1 => {
                u.seq += d;
                u.offset += 1000;
                match resume(&u) {
                    Err(EmitError::Rearm(RearmError::Position { expected, found })) => {
                        prop_assert_eq!((expected, found), (base + d, base));
                    }
                    other => prop_assert!(false, "{:?}", other.err()),
                }
            }
            // More units since the safe point.
            2 => {
                u.since_safe_point += d;
                match resume(&u) {
                    Err(EmitError::Rearm(RearmError::Position { expected, found })) => {
                        prop_assert!(u.since_safe_point <= u.seq);
                        prop_assert_eq!((expected, found), (base - d, base));
                    }
                    Err(EmitError::Token(TokenError::OutOfRange { field, .. })) => {
                        prop_assert!(u.since_safe_point > u.seq);
                        prop_assert_eq!(field, "since_safe_point");
                    }
                    other => prop_assert!(false, "{:?}", other.err()),
                }
            }
            // Skipping more units after the same safe point.
            3 => {
                u.seq += d;
                u.since_safe_point += d;
                u.offset += 1000 * d;
                let skip = u.since_safe_point;
                match resume(&u) {
                    Err(EmitError::Rearm(RearmError::SafePointSkipped { after })) => {
                        prop_assert!(skip >= k && base + k <= n);
                        prop_assert_eq!(after, k);
                    }
                    Err(EmitError::Rearm(RearmError::SkipPastEnd { wanted, found })) => {
                        prop_assert!(skip > n - base && (skip < k || base + k > n));
                        prop_assert_eq!((wanted, found), (skip, n - base));
                    }
                    // Within the interval and the stream, only the data in
                    // progress can tell (a forged token is not detected).
                    Err(EmitError::Rearm(RearmError::Split { .. })) => {
                        prop_assert!(skip < k && u.seq <= n && u.split_done > 0);
                    }
                    Ok(_) => prop_assert!(skip < k && u.seq <= n),
                    Err(other) => prop_assert!(false, "{:?}", other),
                }
            }
            // Data in progress where there is none, or more than there is.
            4 => {
                let unit = usize::try_from(t.seq).ok().filter(|&s| s < m.cmds.len());
                let layout = unit.and_then(|s| m.layouts[s]);
                let s = match layout {
                    Some(l) if r % 2 == 0 => l.data_len + r % 3,
                    _ => 1 + r % 64,
                };
                u.split_done = s;
                u.offset += s + 1;
                let got = resume(&u);
                if t.ended {
                    match got {
                        Err(EmitError::Token(TokenError::OutOfRange { field, value, .. })) => {
                            prop_assert_eq!((field, value), ("split_done", s));
                        }
                        other => prop_assert!(false, "{:?}", other.err()),
                    }
                } else if layout.is_none_or(|l| s >= l.data_len) {
                    match got {
                        Err(EmitError::Rearm(RearmError::Split { seq, split_done, why })) => {
                            prop_assert_eq!((seq, split_done), (t.seq, s), "{}", why);
                        }
                        other => prop_assert!(false, "{:?}", other.err()),
                    }
                } else {
                    // A split point inside the command: it resumes there,
                    // and the rest is that command's remaining data.
                    let mut e = got.unwrap();
                    let rest = drain(&mut e, min, &sizes);
                    let out: Vec<u8> = rest.iter().flat_map(|r| r.chunk.iter().copied()).collect();
                    let cmds = commands_of(&m.profile, &out);
                    let (c, _) = decode_command(cmds[0], &m.profile, 0, 0).unwrap();
                    let l = layout.unwrap();
                    prop_assert_eq!(c.attr(18).unwrap().as_u64().unwrap(), l.position + s);
                }
            }
            // The end claimed early.
            5 => {
                prop_assume!(!t.ended);
                u.ended = true;
                match resume(&u) {
                    Err(EmitError::Rearm(RearmError::NotEnded { seq })) => {
                        prop_assert_eq!(t.split_done, 0);
                        prop_assert_eq!(seq, t.seq);
                    }
                    Err(EmitError::Token(TokenError::OutOfRange { field, .. })) => {
                        prop_assert!(t.split_done > 0);
                        prop_assert_eq!(field, "split_done");
                    }
                    other => prop_assert!(false, "{:?}", other.err()),
                }
            }
            // A producer state the producer refuses.
            6 => {
                let le = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
                let pos = le(&t.state, 2);
                match r % 7 {
                    0 => {
                        if r % 2 == 0 { u.state.pop(); } else { u.state.push(0); }
                        bad_state("not 18 bytes long", &u);
                    }
                    1 => {
                        u.state[0] = 2 + (r >> 8) as u8 % 254;
                        bad_state("unknown state version", &u);
                    }
                    2 => {
                        u.state[1] = 2 + (r >> 8) as u8 % 254;
                        bad_state("flags other than `ended`", &u);
                    }
                    3 if k > 1 => {
                        let index = base + 1 + (r >> 8) % (k - 1);
                        u.state[10..18].copy_from_slice(&index.to_le_bytes());
                        bad_state("command index is not a safe point", &u);
                    }
                    4 => {
                        let pos = m.bytes.len() as u64 + 1 + (r >> 8) % 1000;
                        u.state[2..10].copy_from_slice(&pos.to_le_bytes());
                        bad_state("byte offset beyond the input", &u);
                    }
                    5 => {
                        let index = (pos / 10 / k + 1) * k;
                        u.state[10..18].copy_from_slice(&index.to_le_bytes());
                        bad_state("more commands than fit before the byte offset", &u);
                    }
                    _ if base < n => {
                        u.state[1] = 1;
                        bad_state("ended before the end of the input", &u);
                    }
                    _ => {
                        // At the end, a state that says it is not: the
                        // producer finds no END where it stands.
                        u.state[1] = 0;
                        match resume(&u) {
                            Err(EmitError::Producer(CommandsError::Tlv(e))) => {
                                prop_assert_eq!(e.kind, ErrorKind::MissingEnd);
                            }
                            other => prop_assert!(false, "{:?}", other.err()),
                        }
                    }
                }
            }
            // Nonsense: never a panic, in `resume` or in the fills after it.
            _ => {
                if r % 2 == 0 {
                    u.state = junk;
                } else {
                    let mut s = u.state.clone();
                    for (i, b) in junk.iter().enumerate() {
                        let at = (r as usize).wrapping_add(i * 7) % s.len();
                        s[at] ^= b;
                    }
                    u.state = s;
                }
                u.seq = u.seq.wrapping_add(r % 3).min(u.offset);
                u.since_safe_point = (r >> 4) % (u.seq + 1).min(8);
                if let Ok(mut e) = resume(&u) {
                    for i in 0..10_000 {
                        match e.fill(&mut vec![0u8; min + (i % 7)]) {
                            Ok(f) if f.ended => break,
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    }
}

/// `set_units_per_fill(1)` on a stream with data to split: exactly one
/// command per fill, a token at every point, and every token resumes.
#[test]
fn one_unit_or_piece_per_fill() {
    let profile = Profile {
        crc: CrcVariant::BtrfsRaw,
        max_payload_len: 1 << 16,
        unbounded_data_attr: None,
        end_cmd: END,
    };
    let cmds = vec![
        Cmd::Other {
            ty: 1,
            attrs: vec![(15, b"f".to_vec())],
        },
        Cmd::Data {
            path: b"f".to_vec(),
            offset: 100,
            data: filler(1000, 7),
        },
        Cmd::Data {
            path: b"f".to_vec(),
            offset: 0,
            data: vec![],
        },
        Cmd::Other {
            ty: 20,
            attrs: vec![],
        },
        Cmd::End,
    ];
    let m = Model::new(profile, cmds);
    let min = m.min_workable();
    assert_eq!(min, 10 + 5 + 12 + 4 + 1);
    // Big buffers: every command whole, one per fill.
    let mut e = m.emitter(2);
    e.set_units_per_fill(1);
    let recs = drain(&mut e, 1 << 16, &[0]);
    assert_eq!(recs.len(), m.cmds.len());
    check_emission(&m, 2, Some(1), &recs, "big buffers");
    // Buffers of 100 bytes: the write goes in pieces of 69 data bytes.
    let mut e = m.emitter(2);
    e.set_units_per_fill(1);
    let recs = drain(&mut e, 100, &[0]);
    assert_eq!(recs.len(), 4 + 1000usize.div_ceil(100 - 31));
    check_emission(&m, 2, Some(1), &recs, "100-byte buffers");
}

/// A producer that breaks the unit contract (an empty unit, a command whose
/// bytes are not what its header declares) gets a typed error at that unit,
/// not a panic and not a token that cannot be written.
#[test]
fn units_that_break_the_contract_are_errors() {
    use proto_checkpoint::{Producer, Unit, UnitKind, Units};

    struct Bad {
        units: Vec<(UnitKind, Vec<u8>)>,
        at: usize,
    }
    impl Units for Bad {
        type Error = CommandsError;
        fn current(&mut self) -> Result<Option<Unit<'_>>, CommandsError> {
            Ok(self.units.get(self.at).map(|(kind, bytes)| Unit {
                kind: *kind,
                bytes,
                index: self.at as u64,
                offset: 100 + self.at as u64,
            }))
        }
        fn advance(&mut self) -> Result<(), CommandsError> {
            self.at += 1;
            Ok(())
        }
    }
    impl Producer for Bad {
        fn safe_point(&mut self) -> Result<bool, CommandsError> {
            Ok(true)
        }
        fn save_state(&mut self, state: &mut Vec<u8>) -> Result<(), CommandsError> {
            state.push(self.at as u8);
            Ok(())
        }
        fn restore(&mut self, _: &[u8]) -> Result<(), CommandsError> {
            Ok(())
        }
        fn position(&self) -> u64 {
            self.at as u64
        }
        fn stream_id(&self) -> [u8; 16] {
            [0; 16]
        }
    }
    let profile = Profile {
        crc: CrcVariant::BtrfsRaw,
        max_payload_len: 1 << 16,
        unbounded_data_attr: Some(19),
        end_cmd: 21,
    };
    let mut end = Vec::new();
    proto_tlv::encode_command(&profile, 21, &[], &mut end).unwrap();
    let mut long = end.clone();
    long.push(0); // one byte more than the header declares
    let cases: [(UnitKind, Vec<u8>, &str); 4] = [
        (UnitKind::Raw, Vec::new(), "unit"),
        (
            UnitKind::Command(profile),
            end[..6].to_vec(),
            "command header",
        ),
        (UnitKind::Command(profile), long, "command payload"),
        (
            UnitKind::Command(profile),
            {
                let mut big = end.clone();
                big[0..4].copy_from_slice(&(1u32 << 20).to_le_bytes());
                big
            },
            "",
        ),
    ];
    for (kind, bytes, what) in cases {
        let p = Bad {
            units: vec![(UnitKind::Raw, b"hdr".to_vec()), (kind, bytes)],
            at: 0,
        };
        let mut e = Emitter::new(p, WRITE).unwrap();
        let mut buf = [0u8; 256];
        match e.fill(&mut buf) {
            Err(EmitError::Corrupt(t)) => {
                assert_eq!((t.index, t.offset), (1, 101), "{what}: {t}");
                match t.kind {
                    ErrorKind::Truncated { what: w, .. } => assert_eq!(w, what),
                    ErrorKind::Oversized { .. } => assert_eq!(what, ""),
                    other => panic!("{what}: {other:?}"),
                }
            }
            other => panic!("{what}: {other:?}"),
        }
        // The last good token is the start's, and it can be written.
        assert_eq!(e.token().seq, 0);
        e.token().to_bytes().unwrap();
    }
}

/// Commands below `set_unchecked_below` (a session's sender, whose
/// receiver checks every unit) go out as they are when a CRC-covered byte
/// is damaged, whether they are checked after their copy (short) or in
/// the same pass (longer), by `fill` and by `fill_units` alike; a damaged
/// command at or past it is still refused, naming it; damage to a
/// command's length field is still an error (its framing is always
/// checked). With the default, every damaged command is refused.
#[test]
fn unchecked_commands_are_left_to_the_consumer() {
    let profile = Profile {
        crc: CrcVariant::BtrfsRaw,
        max_payload_len: 1 << 16,
        unbounded_data_attr: None,
        end_cmd: END,
    };
    let other = |len: usize| Cmd::Other {
        ty: 3,
        attrs: vec![(15, filler(len, len as u64))],
    };
    // Short (1), longer (2) and long (3) commands, then END.
    let m = Model::new(
        profile,
        vec![other(20), other(60), other(400), other(5000), Cmd::End],
    );
    let below = 4096;
    assert!(m.at[1].1 < 256 && (256..below).contains(&m.at[2].1) && m.at[3].1 >= below);
    let damaged = |k: usize, byte: usize| {
        let mut bad = m.bytes.clone();
        bad[m.at[k].0 + byte] ^= 0x10;
        bad
    };
    let emit = |bytes: &[u8], unchecked_below: usize, units: bool| {
        let p = CommandsProducer::new(bytes, profile, ID, 1);
        let mut e = Emitter::new(p, WRITE).unwrap();
        e.set_unchecked_below(unchecked_below);
        let mut out = Vec::new();
        loop {
            let mut buf = vec![0u8; 8192];
            let f = if units {
                e.fill_units(&mut buf, u64::MAX, &mut Vec::new())
            } else {
                e.fill(&mut buf)
            }?;
            out.extend_from_slice(&buf[..f.written]);
            if f.ended {
                return Ok(out);
            }
        }
    };
    // A CRC error naming command `k`.
    let refused = |r: Result<Vec<u8>, _>, k: usize, what: &str| match r {
        Err(EmitError::Corrupt(t)) => {
            assert!(
                matches!(t.kind, ErrorKind::CrcMismatch { .. }),
                "{what}: {t}"
            );
            assert_eq!((t.index, t.offset), (k as u64, m.at[k].0 as u64), "{what}");
        }
        other => panic!("{what}: {other:?}"),
    };
    for units in [false, true] {
        // A byte of the payload of the short and the longer command:
        // passed on as it is, else refused.
        for k in [1, 2] {
            let bad = damaged(k, 30);
            assert_eq!(emit(&bad, below, units).unwrap(), bad, "{k}, units {units}");
            refused(emit(&bad, 0, units), k, &format!("{k}, checked"));
        }
        // The long command: refused either way.
        let bad = damaged(3, 300);
        for b in [0, below] {
            refused(
                emit(&bad, b, units),
                3,
                &format!("long command, unchecked below {b}"),
            );
        }
        // The short command's length field: its framing no longer holds.
        let bad = damaged(1, 1);
        assert!(emit(&bad, below, units).is_err(), "units {units}");
    }
}
