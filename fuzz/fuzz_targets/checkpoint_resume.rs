//! `checkpoint_resume`: `proto_checkpoint::Emitter` over a
//! `CommandsProducer` (btrfs v1-like and v2-like profiles, both CRC
//! variants, the WRITE split rule), stopped after an input-chosen fill as a
//! crash would, and re-armed from that fill's token.
//!
//! Input: a command list (writes of up to 12 KiB at chosen paths and offsets,
//! other commands, END last), a safe point every 1..=16 commands, a schedule
//! of buffer sizes (each at least the smallest workable size: the largest
//! command that may not be split, or a write's bytes before its data plus
//! one; for streams over 256 bytes, that plus their length / 128, to keep
//! runs short), an optional limit of units per fill, the fill to crash
//! after, and a second schedule (and limit) for the resumed run.
//!
//! Properties, on the well-formed stream:
//! - each fill writes at most its buffer, something unless the stream
//!   ended, at most the limit of units and pieces, and gives a token that
//!   passes `check()`, equals `Emitter::token()` and counts the bytes
//!   (`offset`), units (`seq`) and the end as they are;
//! - the whole run, and the run stopped after the crash fill and resumed
//!   from that token's TEXT form (a fresh producer) through the second
//!   schedule: the output decodes with `proto_tlv::Commands` (every CRC
//!   valid) to the input list with writes cut into valid pieces (a model of
//!   the split rule: offsets advanced, data in order, nothing else changed),
//!   `compare`s `Equal` to the input (units and data bytes counted), and is
//!   byte-identical to the input exactly when no fill wrote a piece;
//! - re-armed from the crash token, one fill with the first schedule's next
//!   size gives the uninterrupted run's next chunk and token;
//! - the crash token is refused for another stream (`WrongStream`); on a
//!   producer with another safe-point interval it is refused, typed, or
//!   gives the same output;
//! - buffers below the smallest workable size: `DoesNotFit` names a size
//!   above the buffer and at most the smallest workable size, changes
//!   nothing, and a buffer of the size it names goes on.
//!
//! And on a damaged stream (bytes of the encoded stream flipped, bytes after
//! END) or on raw bytes, through any buffer sizes: only typed errors
//! (`Producer` at the framing fault, `Corrupt` at a command whose CRC is
//! wrong, `DoesNotFit` when the buffer is too small, then a buffer of the
//! size it names works), never a panic; no command whose CRC was wrong in
//! the input is emitted, whole or in pieces, every command emitted has a
//! valid CRC, and without pieces the output is the input's prefix; every
//! token the emitter gave re-arms an emitter on the same input, which fails
//! or ends as the first did. Run again with `Emitter::set_unchecked_below`
//! (64, 256, 1 KiB or 4 KiB): the same, except that commands below it may
//! go out with the wrong CRC they have in the input.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

#[path = "common/checkpoint.rs"]
mod common;

use arbitrary::Arbitrary;
use common::*;
use proto_checkpoint::{
    compare, CommandsError, CommandsProducer, DataSplit, EmitError, Emitter, Fill, Outcome, Token,
    TokenError,
};
use proto_tlv::{frame_len, OwnedCommand, Profile, CMD_HEADER_LEN};

const ID: [u8; 16] = *b"checkpoint-fuzz!";
/// A bound on the fills of a run over a long stream: buffers grow by the
/// stream's length over this.
const FILLS: usize = 128;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Tiny(u8),
    Small(u16),
    Any(u16),
}

impl Size {
    /// At least `min`.
    fn at_least(self, min: usize) -> usize {
        match self {
            Size::Tiny(v) => min + usize::from(v % 32),
            Size::Small(v) => min + usize::from(v % 2048),
            Size::Any(v) => min.max(usize::from(v)),
        }
    }
    /// Anything (0 included).
    fn any(self) -> usize {
        match self {
            Size::Tiny(v) => usize::from(v % 64),
            Size::Small(v) => usize::from(v % 2048),
            Size::Any(v) => usize::from(v),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Mode {
    WellFormed,
    /// The encoded stream with bytes XORed at chosen positions, and bytes
    /// appended after END.
    Damaged {
        flips: Vec<(u32, u8)>,
        trailing: Vec<u8>,
    },
    /// Raw bytes as the stream.
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    profile: ProfileChoice,
    cmds: Vec<CmdSpec>,
    safe_every: u8,
    sizes: Vec<Size>,
    per_fill: Option<u8>,
    crash: u16,
    sizes2: Vec<Size>,
    per_fill2: Option<u8>,
    /// Also run through buffers below the smallest workable size.
    below: Option<u8>,
    mode: Mode,
}

type E<'a> = Emitter<CommandsProducer<'a>, DataSplit>;
type Err = EmitError<CommandsError>;

fn producer(stream: &[u8], profile: Profile, safe_every: u64) -> CommandsProducer<'_> {
    CommandsProducer::new(stream, profile, ID, safe_every)
}

/// Buffer sizes in turn (a single `default` when there are none).
struct Schedule {
    sizes: Vec<usize>,
    next: usize,
}

impl Schedule {
    fn new(sizes: Vec<usize>, default: usize) -> Self {
        let sizes = if sizes.is_empty() {
            vec![default]
        } else {
            sizes
        };
        Schedule { sizes, next: 0 }
    }
    fn at(&self, i: usize) -> usize {
        self.sizes[i % self.sizes.len()]
    }
    fn take(&mut self) -> usize {
        let s = self.at(self.next);
        self.next += 1;
        s
    }
}

/// What one emission wrote: chunks, the token before the first fill and
/// after each, the pieces of each fill, and the error it stopped at.
struct Run {
    chunks: Vec<Vec<u8>>,
    tokens: Vec<Token>,
    pieces: Vec<u64>,
    error: Option<Err>,
}

impl Run {
    fn out(&self) -> Vec<u8> {
        self.chunks.concat()
    }
    fn pieces(&self) -> u64 {
        self.pieces.iter().sum()
    }
}

/// The checks every successful fill passes.
fn check_fill(e: &E<'_>, f: &Fill, before: &Token, size: usize, per_fill: Option<u64>) {
    assert!(f.written <= size, "{} bytes written into {size}", f.written);
    assert!(
        f.written > 0 || f.ended,
        "a fill wrote nothing before the end"
    );
    if let Some(n) = per_fill {
        assert!(
            f.units <= n && f.pieces <= n,
            "{f:?}: more than {n} per fill"
        );
    }
    let t = &e.token();
    t.check().expect("a fill's token passes check()");
    assert_eq!(t.stream_id, ID);
    assert_eq!(t.offset, before.offset + f.written as u64, "token offset");
    assert_eq!(t.offset, e.offset());
    assert_eq!(t.seq, before.seq + f.units, "token seq");
    assert_eq!((t.ended, e.ended()), (f.ended, f.ended));
    assert!(t.since_safe_point <= t.seq);
    if f.written == 0 {
        assert_eq!(t, before, "an empty fill moved the token");
    }
}

/// Fills until the end or an error. A `DoesNotFit` is checked (it names a
/// size above the buffer and, when `min` is known, at most `min`; it changes
/// nothing) and the fill is repeated with a buffer of the size it names,
/// which must not be refused as too small again.
fn drain(
    e: &mut E<'_>,
    sched: &mut Schedule,
    per_fill: Option<u64>,
    max_fills: usize,
    min: Option<usize>,
) -> Run {
    if let Some(n) = per_fill {
        e.set_units_per_fill(n);
    }
    let mut run = Run {
        chunks: Vec::new(),
        tokens: vec![e.token()],
        pieces: Vec::new(),
        error: None,
    };
    for _ in 0..max_fills {
        let before = e.token();
        let mut size = sched.take();
        let mut buf = vec![0u8; size];
        let mut r = e.fill(&mut buf);
        if let Err(EmitError::DoesNotFit {
            seq,
            needed,
            available,
            ..
        }) = r
        {
            assert_eq!((seq, available), (before.seq, size), "DoesNotFit fields");
            assert!(
                needed > available,
                "DoesNotFit: {needed} needed, {available} there"
            );
            if let Some(min) = min {
                assert!(
                    needed <= min,
                    "DoesNotFit: {needed} needed, all works from {min}"
                );
            }
            assert_eq!(e.token(), before, "DoesNotFit moved the emitter");
            size = needed;
            buf = vec![0u8; size];
            r = e.fill(&mut buf);
            if let Err(EmitError::DoesNotFit { needed: n2, .. }) = r {
                panic!("a buffer of the {needed} bytes named is too small: {n2} needed");
            }
        }
        match r {
            Ok(f) => {
                check_fill(e, &f, &before, size, per_fill);
                if f.written > 0 {
                    run.chunks.push(buf[..f.written].to_vec());
                    run.tokens.push(e.token());
                    run.pieces.push(f.pieces);
                }
                if f.ended {
                    // Later fills write nothing.
                    let t = e.token();
                    let again = e.fill(&mut buf).expect("a fill after the end");
                    assert!(again.written == 0 && again.ended && e.token() == t);
                    return run;
                }
            }
            Err(err) => {
                // It stays failed, naming the unit it failed at (the
                // input's command index: one unit per command).
                let mut b = [0u8; 64];
                let at = match &err {
                    EmitError::Corrupt(t) | EmitError::Producer(CommandsError::Tlv(t)) => t.index,
                    other => panic!("fill: unexpected error {other}"),
                };
                match e.fill(&mut b) {
                    Err(EmitError::Failed { seq }) => {
                        assert!(
                            seq >= before.seq && seq == at,
                            "Failed {{ seq: {seq} }} after {err}"
                        )
                    }
                    other => panic!("after {err}: {other:?}"),
                }
                run.error = Some(err);
                return run;
            }
        }
    }
    panic!("no end after {max_fills} fills");
}

fn assert_equal(profile: Profile, input: &[u8], out: &[u8], list: &[OwnedCommand], what: &str) {
    let outcome = compare(
        &mut producer(input, profile, 1),
        &mut producer(out, profile, 3),
        &WRITE,
    )
    .unwrap_or_else(|e| panic!("{what}: compare: {e}"));
    let n = check_pieces(&profile, list, out, what);
    match outcome {
        Outcome::Equal {
            units_a,
            units_b,
            data_bytes: d,
        } => assert_eq!(
            (units_a, units_b, d),
            (list.len() as u64, n, data_bytes(&profile, list)),
            "{what}: Outcome::Equal counts"
        ),
        Outcome::Differ(d) => panic!("{what}: differs from the input: {d}"),
    }
}

fn well_formed(input: &Input) {
    let profile = input.profile.profile();
    let list = build(&profile, &input.cmds);
    let stream = encode(&profile, &list);
    // The model of the split rule agrees with DataSplit::layout.
    let mut at = 0;
    for c in &list {
        let n = c.encoded_len(&profile).unwrap();
        check_layout(&profile, c, &stream[at..at + n]);
        at += n;
    }
    // The smallest workable size; for streams over 256 bytes, raised by
    // their length / 128, so that a run takes a hundred or so fills (through
    // 1-byte pieces, 16 KiB of data would take most of a second).
    let min_workable = smallest_workable(&profile, &list);
    let min = match stream.len() {
        n if n > 256 => min_workable + n / FILLS,
        _ => min_workable,
    };
    let safe_every = 16 - u64::from(input.safe_every % 16);
    let per_fill = input.per_fill.map(|n| 1 + u64::from(n % 4));
    let per_fill2 = input.per_fill2.map(|n| 1 + u64::from(n % 4));
    let sizes = |s: &[Size]| s.iter().take(16).map(|s| s.at_least(min)).collect();
    let sched1 = Schedule::new(sizes(&input.sizes), min);
    // Enough fills for one data byte each, plus one per command.
    let max_fills = stream.len() + list.len() + 2;

    // The whole run.
    let mut e = Emitter::new(producer(&stream, profile, safe_every), WRITE).unwrap();
    let mut s = Schedule::new(sched1.sizes.clone(), min);
    let run = drain(&mut e, &mut s, per_fill, max_fills, Some(min));
    if let Some(err) = &run.error {
        panic!("well-formed stream, buffers >= {min}: {err}");
    }
    let out = run.out();
    assert_equal(profile, &stream, &out, &list, "whole run");
    assert_eq!(
        run.pieces() == 0,
        out == stream,
        "pieces vs identical bytes"
    );
    let last = run.tokens.last().unwrap();
    assert!(last.ended && last.split_done == 0);
    assert_eq!(
        (last.offset, last.seq),
        (out.len() as u64, list.len() as u64)
    );

    // Crash after fill k (k >= 1: the start is re-armed from in the damaged
    // runs), resume from the text form of its token.
    let k = 1 + usize::from(input.crash) % (run.tokens.len() - 1);
    let token = &run.tokens[k];
    let text = token.to_text().unwrap();
    let parsed: Token = text.parse().unwrap();
    assert_eq!(&parsed, token, "text round trip");
    let resume = || {
        Emitter::resume(producer(&stream, profile, safe_every), WRITE, &parsed)
            .unwrap_or_else(|e| panic!("resume from token {k} ({text}): {e}"))
    };

    // One fill with the first schedule's next size: the same chunk and token.
    let mut e = resume();
    assert_eq!(e.token(), *token, "a re-armed emitter's token");
    if let Some(n) = per_fill {
        e.set_units_per_fill(n);
    }
    let mut buf = vec![0u8; sched1.at(k)];
    let f = e
        .fill(&mut buf)
        .unwrap_or_else(|e| panic!("fill after resume: {e}"));
    match run.chunks.get(k) {
        Some(next) => {
            assert_eq!(&buf[..f.written], &next[..], "chunk {k} after resume");
            assert_eq!(e.token(), run.tokens[k + 1], "token {} after resume", k + 1);
            assert_eq!(f.pieces, run.pieces[k]);
        }
        None => assert!(f.written == 0 && f.ended, "resumed at the end"),
    }

    // Resume and finish through the second schedule.
    let mut e = resume();
    let mut s2 = Schedule::new(
        input
            .sizes2
            .iter()
            .take(16)
            .map(|s| s.at_least(min))
            .collect(),
        min + 97,
    );
    let rest = drain(&mut e, &mut s2, per_fill2, max_fills, Some(min));
    if let Some(err) = &rest.error {
        panic!("resumed run: {err}");
    }
    let mut joined = run.chunks[..k].concat();
    joined.extend(rest.out());
    let what = format!("crash after fill {k}, resumed");
    assert_equal(profile, &stream, &joined, &list, &what);
    let pieces: u64 = run.pieces[..k].iter().sum::<u64>() + rest.pieces();
    assert_eq!(
        pieces == 0,
        joined == stream,
        "{what}: pieces vs identical bytes"
    );
    assert_eq!(rest.tokens.last().unwrap().offset, joined.len() as u64);

    // Another stream's producer refuses the token.
    let other = CommandsProducer::new(&stream, profile, [0xEE; 16], safe_every);
    match Emitter::resume(other, WRITE, &parsed) {
        Err(EmitError::Token(TokenError::WrongStream { expected, found })) => {
            assert_eq!((expected, found), ([0xEE; 16], ID))
        }
        Err(e) => panic!("another stream: {e}"),
        Ok(_) => panic!("another stream's token accepted"),
    }
    // Another safe-point interval: refused, or the same commands.
    let k2 = safe_every % 16 + 1;
    if let Ok(mut e) = Emitter::resume(producer(&stream, profile, k2), WRITE, &parsed) {
        let mut s = Schedule::new(vec![min + 13], min);
        let rest = drain(&mut e, &mut s, None, max_fills, Some(min));
        if let Some(err) = &rest.error {
            panic!("resumed with safe points every {k2}: {err}");
        }
        let mut joined = run.chunks[..k].concat();
        joined.extend(rest.out());
        assert_equal(
            profile,
            &stream,
            &joined,
            &list,
            "another safe-point interval",
        );
    }

    // Buffers below the smallest workable size (short streams only).
    if let Some(b) = input.below.filter(|_| stream.len() <= 256) {
        let min = min_workable;
        let small = min.saturating_sub(1 + usize::from(b % 8));
        let mut e = Emitter::new(producer(&stream, profile, safe_every), WRITE).unwrap();
        let mut s = Schedule::new(vec![small], small);
        let run = drain(&mut e, &mut s, None, max_fills, Some(min));
        if let Some(err) = &run.error {
            panic!("buffers of {small} bytes (retried when too small): {err}");
        }
        assert_equal(profile, &stream, &run.out(), &list, "small buffers");
    }
}

/// One framed input command: offset, length, whether its CRC is right.
struct Framed {
    offset: usize,
    len: usize,
    crc_ok: bool,
}

/// Frames `stream` as `CommandsProducer` does, up to END or the first
/// framing fault.
fn frame(stream: &[u8], profile: &Profile) -> Vec<Framed> {
    let mut cmds = Vec::new();
    let mut at = 0usize;
    loop {
        let rest = &stream[at..];
        let len = match frame_len(rest, profile, 0, 0) {
            Ok(n) if n <= rest.len() => n,
            _ => return cmds,
        };
        let c = &rest[..len];
        let stored = u32::from_le_bytes(c[6..10].try_into().unwrap());
        let crc_ok = profile.crc.command_crc(c, &c[CMD_HEADER_LEN..]) == stored;
        cmds.push(Framed {
            offset: at,
            len,
            crc_ok,
        });
        at += len;
        if u16::from_le_bytes([c[4], c[5]]) == profile.end_cmd {
            return cmds;
        }
    }
}

/// The output of a run on a damaged stream: nothing laundered. Commands
/// shorter than `unchecked_below` (the emitter's setting) may go out with
/// the wrong CRC they have in the input, never with another.
fn check_damaged_run(
    stream: &[u8],
    profile: &Profile,
    cmds: &[Framed],
    run: &Run,
    unchecked_below: usize,
    what: &str,
) {
    let out = run.out();
    let last = run.tokens.last().unwrap();
    assert_eq!(last.offset, out.len() as u64);
    // Every input command emitted, whole or in part, had a right CRC (or
    // was not checked).
    let emitted = last.seq as usize + usize::from(last.split_done > 0);
    assert!(emitted <= cmds.len(), "{what}: more units than commands");
    for (i, c) in cmds[..emitted].iter().enumerate() {
        assert!(
            c.crc_ok || c.len < unchecked_below,
            "{what}: command {i} (CRC wrong in the input) was emitted"
        );
    }
    // Every command emitted has a valid CRC (or was not checked), and they
    // fill the output.
    let mut at = 0;
    while at < out.len() {
        let len = frame_len(&out[at..], profile, 0, 0).expect("output framing");
        let c = &out[at..at + len];
        let stored = u32::from_le_bytes(c[6..10].try_into().unwrap());
        assert!(
            profile.crc.command_crc(c, &c[CMD_HEADER_LEN..]) == stored || len < unchecked_below,
            "{what}: an output command at {at} has a wrong CRC"
        );
        at += len;
    }
    assert_eq!(at, out.len(), "{what}: output ends inside a command");
    if run.pieces() == 0 {
        assert_eq!(
            &out[..],
            &stream[..out.len()],
            "{what}: no pieces, other bytes"
        );
    }
    match &run.error {
        None => {
            assert!(last.ended, "{what}");
            assert_eq!(emitted, cmds.len(), "{what}: ended before END");
        }
        Some(EmitError::Corrupt(e)) => {
            let c = &cmds[e.index as usize];
            assert!(
                !c.crc_ok,
                "{what}: Corrupt at a command with a right CRC: {e}"
            );
            assert_eq!(e.offset, c.offset as u64, "{what}: {e}");
            assert!(
                e.index >= last.seq,
                "{what}: {e} before the last token's unit {}",
                last.seq
            );
        }
        Some(EmitError::Producer(CommandsError::Tlv(e))) => {
            // The framing fault is right after the commands framed.
            assert_eq!(e.index as usize, cmds.len(), "{what}: {e}");
            let end = cmds.last().map_or(0, |c| c.offset + c.len);
            assert_eq!(e.offset, end as u64, "{what}: {e}");
        }
        Some(e) => panic!("{what}: unexpected error {e}"),
    }
}

fn damaged(input: &Input, stream: Vec<u8>) {
    let profile = input.profile.profile();
    let safe_every = 16 - u64::from(input.safe_every % 16);
    let cmds = frame(&stream, &profile);
    let per_fill = input.per_fill.map(|n| 1 + u64::from(n % 4));
    // Any sizes, plus the stream's length / 128 (a bound on fills).
    let floor = stream.len() / FILLS;
    let any = |s: &[Size]| {
        s.iter()
            .take(16)
            .map(|s| s.any() + floor)
            .collect::<Vec<_>>()
    };
    let max_fills = 2 * stream.len() + 4;

    let mut e = Emitter::new(producer(&stream, profile, safe_every), WRITE).unwrap();
    let mut s = Schedule::new(any(&input.sizes), 4096);
    let run = drain(&mut e, &mut s, per_fill, max_fills, None);
    check_damaged_run(&stream, &profile, &cmds, &run, 0, "damaged");

    // The same, with the CRCs of commands below `u` left to the consumer
    // (as a session's sender leaves them to its receiver): those may go out
    // as they are in the input, damaged; nothing else changes.
    let u = [64, 256, 1024, 4096][usize::from(input.crash >> 14)];
    let mut e = Emitter::new(producer(&stream, profile, safe_every), WRITE).unwrap();
    e.set_unchecked_below(u);
    let mut s = Schedule::new(any(&input.sizes), 4096);
    let unchecked = drain(&mut e, &mut s, per_fill, max_fills, None);
    check_damaged_run(&stream, &profile, &cmds, &unchecked, u, "damaged, unchecked below");

    // Every token re-arms (the last one may meet the framing fault the run
    // stopped at: re-arming looks at the next unit); from the crash one, the
    // run fails or ends as the first did.
    let rearm = |t: &Token| Emitter::resume(producer(&stream, profile, safe_every), WRITE, t);
    let last = run.tokens.len() - 1;
    for (i, t) in run.tokens.iter().enumerate() {
        match rearm(t) {
            Ok(_) => {}
            Err(err @ EmitError::Producer(_))
                if i == last
                    && run.error.as_ref().map(ToString::to_string) == Some(err.to_string()) => {}
            Err(err) => panic!("the emitter's token {i} does not re-arm it: {err}\n{t:?}"),
        }
    }
    let k = usize::from(input.crash) % run.tokens.len();
    let Ok(mut e) = rearm(&run.tokens[k]) else {
        return;
    };
    let mut s = Schedule::new(any(&input.sizes2), 777);
    let rest = drain(&mut e, &mut s, None, max_fills, None);
    let joined = Run {
        chunks: [&run.chunks[..k], &rest.chunks[..]].concat(),
        tokens: rest.tokens,
        pieces: [&run.pieces[..k], &rest.pieces[..]].concat(),
        error: rest.error,
    };
    check_damaged_run(&stream, &profile, &cmds, &joined, 0, "damaged, resumed");
    assert_eq!(
        run.error.as_ref().map(ToString::to_string),
        joined.error.as_ref().map(ToString::to_string),
        "the resumed run stops otherwise"
    );
}

target!(|input: Input| {
    match &input.mode {
        Mode::WellFormed => well_formed(&input),
        Mode::Damaged { flips, trailing } => {
            let profile = input.profile.profile();
            let list = build(&profile, &input.cmds);
            let mut stream = encode(&profile, &list);
            for &(at, x) in flips.iter().take(4) {
                let n = stream.len();
                stream[at as usize % n] ^= x;
            }
            stream.extend(trailing.iter().take(256));
            damaged(&input, stream);
        }
        Mode::Raw(bytes) => damaged(&input, bytes.clone()),
    }
});
