//! `checkpoint_compare`: `proto_checkpoint::compare` over two
//! `Commands` cursors (btrfs v1-like and v2-like profiles, both CRC
//! variants, the WRITE rule).
//!
//! Input: one command list (writes of up to 12 KiB, other commands, END
//! last); each side cuts every write into pieces at its own input-chosen
//! lengths (a splitter written here: the offset advanced, the data sliced,
//! re-encoded with `encode_command`); then an optional mutation of side B,
//! or raw bytes on either side.
//!
//! Properties:
//! - A and B (and A with itself) compare `Equal`, with the units of each
//!   side and the data bytes counted; the model of the split rule agrees
//!   with `DataSplit::layout` on every piece;
//! - a data byte of a B piece changed (CRC made right again): `Differ` with
//!   `Data`, at exactly the changed byte in B and the byte it faces in A
//!   (command index, unit offset, byte offset), `file_offset` the data's
//!   position, the command's path;
//! - a B command dropped: `Differ`, not before it;
//! - an attribute changed: `Attributes` for another command, at the first
//!   byte that differs in both streams; `Object` for a write, at both units;
//! - a B piece's offset shifted: `Position` with both data positions (A's
//!   the original one), `file_offset` the smaller, at both units;
//! - every divergence lies inside both streams: each side's unit starts at
//!   its offset with its index, and the byte named is inside that unit;
//! - raw bytes on either side, or B damaged (bytes XORed): only typed errors
//!   (`CompareError`) positioned inside the streams, never a panic; for any
//!   inputs, comparing B with A gives the mirror of comparing A with B (both
//!   succeed or both fail; `Equal` counts swapped; a divergence with its
//!   sides swapped), and a stream compared with itself is `Equal` unless it
//!   cannot be read.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

#[path = "common/checkpoint.rs"]
mod common;

use arbitrary::Arbitrary;
use common::*;
use proto_checkpoint::{
    compare, At, Commands, CommandsError, CompareError, Divergence, DivergenceKind,
    Outcome, Side,
};
use proto_tlv::{frame_len, OwnedCommand, Profile};

#[derive(Arbitrary, Debug)]
enum Mutation {
    DataByte { pick: u16, at: u16, xor: u8 },
    Drop { pick: u16 },
    Attribute { pick: u16, at: u16, xor: u8 },
    Shift { pick: u16, delta: u16, down: bool },
}

#[derive(Arbitrary, Debug)]
enum Raw {
    A(Vec<u8>),
    B(Vec<u8>),
    Both(Vec<u8>, Vec<u8>),
    /// B's bytes XORed at these positions.
    DamageB(Vec<(u32, u8)>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    profile: ProfileChoice,
    cmds: Vec<CmdSpec>,
    cuts_a: Vec<u16>,
    cuts_b: Vec<u16>,
    mutation: Option<Mutation>,
    raw: Option<Raw>,
}

/// One side: its commands (pieces), which list command and data bytes each
/// carries, and where each lies.
struct SideStream {
    cmds: Vec<OwnedCommand>,
    /// (list index, first data byte) of each command.
    src: Vec<(usize, usize)>,
    bytes: Vec<u8>,
    offsets: Vec<usize>,
}

impl SideStream {
    fn new(profile: &Profile, cmds: Vec<OwnedCommand>, src: Vec<(usize, usize)>) -> Self {
        let mut s = SideStream {
            cmds,
            src,
            bytes: Vec::new(),
            offsets: Vec::new(),
        };
        s.encode(profile);
        s
    }
    fn encode(&mut self, profile: &Profile) {
        self.bytes.clear();
        self.offsets.clear();
        for c in &self.cmds {
            self.offsets.push(self.bytes.len());
            c.encode(profile, &mut self.bytes)
                .expect("pieces of encodable commands encode");
        }
    }
    /// The command that carries data byte `from` of list command `j`.
    fn find(&self, profile: &Profile, j: usize, from: usize) -> usize {
        (0..self.cmds.len())
            .find(|&i| {
                let (lj, f) = self.src[i];
                lj == j
                    && f <= from
                    && from < f + model_layout(profile, &self.cmds[i]).map_or(1, |l| l.data_len)
            })
            .expect("a command carries that data byte")
    }
}

/// Cuts every write into pieces whose lengths come from `cuts` in turn (a
/// cut of 0 mod 4 takes the rest; so do all after the 512th piece).
fn split(profile: &Profile, list: &[OwnedCommand], cuts: &[u16]) -> SideStream {
    let (mut cmds, mut src) = (Vec::new(), Vec::new());
    let mut cuts = cuts.iter().take(64).cycle().take(512);
    for (j, c) in list.iter().enumerate() {
        let Some(l) = model_layout(profile, c) else {
            cmds.push(c.clone());
            src.push((j, 0));
            continue;
        };
        let mut from = 0;
        while from < l.data_len {
            let rest = l.data_len - from;
            let len = match cuts.next() {
                None => rest,
                Some(&k) if k % 4 == 0 => rest,
                Some(&k) => 1 + usize::from(k / 4) % rest,
            };
            cmds.push(piece(c, &l, from, len));
            src.push((j, from));
            from += len;
        }
    }
    SideStream::new(profile, cmds, src)
}

fn producer(bytes: &[u8], profile: Profile) -> Commands<'_> {
    Commands::new(bytes, profile)
}

type Result_ = Result<Outcome, CompareError<CommandsError, CommandsError>>;

fn run(a: &[u8], b: &[u8], profile: Profile) -> Result_ {
    compare(&mut producer(a, profile), &mut producer(b, profile), &WRITE)
}

fn mirror_at(d: &Divergence) -> Divergence {
    let kind = match d.kind.clone() {
        DivergenceKind::Ends { ended } => DivergenceKind::Ends {
            ended: match ended {
                Side::A => Side::B,
                Side::B => Side::A,
            },
        },
        DivergenceKind::CommandType { a, b } => DivergenceKind::CommandType { a: b, b: a },
        DivergenceKind::Position { a, b } => DivergenceKind::Position { a: b, b: a },
        k => k,
    };
    Divergence {
        kind,
        a: d.b,
        b: d.a,
        path: None,
        file_offset: d.file_offset,
    }
}

/// Where a unit lies in a stream: it starts at `at.offset` with index
/// `at.index`, and `at.byte` is inside it.
fn check_at(bytes: &[u8], profile: &Profile, at: &At, what: &str) {
    assert_eq!(at.seq, at.index, "{what}: commands only, so unit = command");
    // Walk to the unit.
    let (mut off, mut i) = (0usize, 0u64);
    loop {
        let len = frame_len(&bytes[off..], profile, 0, 0)
            .unwrap_or_else(|e| panic!("{what}: {at:?} beyond the framed commands: {e}"));
        if i == at.index {
            assert_eq!(
                at.offset, off as u64,
                "{what}: unit {i} is at byte {off}: {at:?}"
            );
            assert!(
                at.byte >= at.offset && at.byte < (off + len) as u64 && off + len <= bytes.len(),
                "{what}: byte {} outside unit {i} ({off}..{})",
                at.byte,
                off + len
            );
            return;
        }
        off += len;
        i += 1;
    }
}

/// Checks a result for any two inputs: the sides mirror, errors and
/// divergences lie inside the streams.
fn check_any(a: &[u8], b: &[u8], profile: Profile, what: &str) -> Result_ {
    let ab = run(a, b, profile);
    let ba = run(b, a, profile);
    match (&ab, &ba) {
        (
            Ok(Outcome::Equal {
                units_a,
                units_b,
                data_bytes,
            }),
            Ok(Outcome::Equal {
                units_a: ub,
                units_b: ua,
                data_bytes: d,
            }),
        ) => assert_eq!(
            (units_a, units_b, data_bytes),
            (ua, ub, d),
            "{what}: mirror"
        ),
        (Ok(Outcome::Differ(x)), Ok(Outcome::Differ(y))) => {
            assert_eq!(
                mirror_at(x),
                Divergence {
                    path: None,
                    ..y.clone()
                },
                "{what}: mirror"
            );
            for (bytes, at) in [(a, &x.a), (b, &x.b)] {
                if let Some(at) = at {
                    check_at(bytes, &profile, at, what);
                }
            }
            match x.kind {
                DivergenceKind::Ends { ended: Side::A } => assert!(x.a.is_none() && x.b.is_some()),
                DivergenceKind::Ends { ended: Side::B } => assert!(x.b.is_none() && x.a.is_some()),
                DivergenceKind::Raw => panic!("{what}: commands only, yet {x}"),
                _ => assert!(x.a.is_some() && x.b.is_some(), "{what}: {x}"),
            }
        }
        (Err(x), Err(_)) => {
            let (e, len) = match x {
                CompareError::A(CommandsError::Tlv(e)) => (e, a.len()),
                CompareError::B(CommandsError::Tlv(e)) => (e, b.len()),
                CompareError::Corrupt {
                    side: Side::A,
                    error,
                } => (error, a.len()),
                CompareError::Corrupt {
                    side: Side::B,
                    error,
                } => (error, b.len()),
                other => panic!("{what}: {other}"),
            };
            assert!(
                e.offset <= len as u64,
                "{what}: error beyond the stream: {e}"
            );
        }
        (x, y) => panic!("{what}: A vs B {x:?}, B vs A {y:?}"),
    }
    // A stream with itself.
    match run(a, a, profile) {
        Ok(Outcome::Equal {
            units_a, units_b, ..
        }) => assert_eq!(units_a, units_b),
        Err(CompareError::A(_) | CompareError::Corrupt { side: Side::A, .. }) => {}
        other => panic!("{what}: A vs A: {other:?}"),
    }
    ab
}

/// The path the rule names for a command: its last path attribute.
fn path(c: &OwnedCommand) -> Option<Vec<u8>> {
    c.attrs
        .iter()
        .rev()
        .find(|(t, _)| *t == PATH)
        .map(|(_, v)| v.clone())
}

fn expect_differ(r: Result_, what: &str) -> Divergence {
    match r {
        Ok(Outcome::Differ(d)) => d,
        other => panic!("{what}: expected a divergence, got {other:?}"),
    }
}

/// Applies `m` to B; checks the divergence found.
fn mutate(
    profile: &Profile,
    list: &[OwnedCommand],
    a: &SideStream,
    mut b: SideStream,
    m: &Mutation,
) {
    let n = b.cmds.len() - 1; // END stays.
    let data: Vec<usize> = (0..b.cmds.len())
        .filter(|&i| model_layout(profile, &b.cmds[i]).is_some())
        .collect();
    match *m {
        Mutation::DataByte { pick, at, xor } => {
            let Some(&i) = data.get(usize::from(pick) % data.len().max(1)) else {
                return;
            };
            let l = model_layout(profile, &b.cmds[i]).unwrap();
            let at = usize::from(at) % l.data_len;
            b.cmds[i].attrs[l.data_idx].1[at] ^= xor.max(1);
            b.encode(profile);
            let d = expect_differ(
                check_any(&a.bytes, &b.bytes, *profile, "data byte"),
                "data byte",
            );
            let (j, from) = b.src[i];
            let ia = a.find(profile, j, from + at);
            let la = model_layout(profile, &a.cmds[ia]).unwrap();
            let (_, from_a) = a.src[ia];
            assert_eq!(d.kind, DivergenceKind::Data, "{d}");
            assert_eq!(d.file_offset, Some(l.position + at as u64), "{d}");
            assert_eq!(d.path, path(&list[j]), "{d}");
            let (da, db) = (d.a.unwrap(), d.b.unwrap());
            assert_eq!(
                (db.index, db.offset, db.byte),
                (
                    i as u64,
                    b.offsets[i] as u64,
                    (b.offsets[i] + l.data_start + at) as u64
                ),
                "{d}"
            );
            assert_eq!(
                (da.index, da.offset, da.byte),
                (
                    ia as u64,
                    a.offsets[ia] as u64,
                    (a.offsets[ia] + la.data_start + from + at - from_a) as u64
                ),
                "{d}"
            );
        }
        Mutation::Drop { pick } => {
            if n == 0 {
                return;
            }
            let i = usize::from(pick) % n;
            b.cmds.remove(i);
            b.src.remove(i);
            b.encode(profile);
            let d = expect_differ(check_any(&a.bytes, &b.bytes, *profile, "drop"), "drop");
            let db = d.b.expect("B has END");
            assert!(db.index >= i as u64, "{d}: before the dropped command {i}");
        }
        Mutation::Attribute { pick, at, xor } => {
            if n == 0 {
                return;
            }
            let i = usize::from(pick) % n;
            let before = b.cmds[i].clone();
            let layout = model_layout(profile, &before);
            let c = &mut b.cmds[i];
            // The attributes that are not the write's offset and data.
            let keyed: Vec<usize> = (0..c.attrs.len())
                .filter(|&k| layout.is_none_or(|l| k != l.offset_idx && k != l.data_idx))
                .filter(|&k| !c.attrs[k].1.is_empty())
                .collect();
            match keyed.get(usize::from(at) % keyed.len().max(1)) {
                Some(&k) => {
                    let v = &mut c.attrs[k].1;
                    let x = usize::from(at) % v.len();
                    v[x] ^= xor.max(1);
                }
                None => c.attrs.insert(0, (1, vec![xor])),
            }
            if c.encoded_len(profile).is_err() {
                return;
            }
            b.encode(profile);
            let d = expect_differ(
                check_any(&a.bytes, &b.bytes, *profile, "attribute"),
                "attribute",
            );
            let (j, from) = b.src[i];
            let ia = a.find(profile, j, from);
            let (da, db) = (d.a.unwrap(), d.b.unwrap());
            assert_eq!(
                (da.index, da.offset),
                (ia as u64, a.offsets[ia] as u64),
                "{d}"
            );
            assert_eq!(
                (db.index, db.offset),
                (i as u64, b.offsets[i] as u64),
                "{d}"
            );
            assert_eq!(d.path, path(&list[j]).or_else(|| path(&b.cmds[i])), "{d}");
            if layout.is_some() {
                assert_eq!(d.kind, DivergenceKind::Object, "{d}");
                assert_eq!((da.byte, db.byte), (da.offset, db.offset), "{d}");
            } else {
                assert_eq!(
                    d.kind,
                    DivergenceKind::Attributes { cmd: before.cmd },
                    "{d}"
                );
                // The first differing payload byte; the length field when one
                // payload is the start of the other.
                let end = |o: &[usize], k: usize, n: usize| o.get(k + 1).copied().unwrap_or(n);
                let old = &a.bytes[a.offsets[ia] + 10..end(&a.offsets, ia, a.bytes.len())];
                let new = &b.bytes[b.offsets[i] + 10..end(&b.offsets, i, b.bytes.len())];
                let first = old
                    .iter()
                    .zip(new)
                    .position(|(x, y)| x != y)
                    .map_or(0, |i| 10 + i as u64);
                assert_eq!(
                    (da.byte - da.offset, db.byte - db.offset),
                    (first, first),
                    "{d}"
                );
            }
        }
        Mutation::Shift { pick, delta, down } => {
            let Some(&i) = data.get(usize::from(pick) % data.len().max(1)) else {
                return;
            };
            let l = model_layout(profile, &b.cmds[i]).unwrap();
            let delta = 1 + u64::from(delta % 1000);
            let end_ok = |p: u64| p.checked_add(l.data_len as u64).is_some();
            let up = l.position.checked_add(delta).filter(|&p| end_ok(p));
            let dn = l.position.checked_sub(delta);
            let Some(p) = (if down { dn.or(up) } else { up.or(dn) }) else {
                return;
            };
            b.cmds[i].attrs[l.offset_idx].1 = p.to_le_bytes().to_vec();
            b.encode(profile);
            let d = expect_differ(check_any(&a.bytes, &b.bytes, *profile, "shift"), "shift");
            let (j, from) = b.src[i];
            let ia = a.find(profile, j, from);
            assert_eq!(
                d.kind,
                DivergenceKind::Position {
                    a: Some(l.position),
                    b: Some(p)
                },
                "{d}"
            );
            assert_eq!(d.file_offset, Some(l.position.min(p)), "{d}");
            let (da, db) = (d.a.unwrap(), d.b.unwrap());
            assert_eq!(
                (da.index, da.offset, da.byte),
                (ia as u64, a.offsets[ia] as u64, a.offsets[ia] as u64),
                "{d}"
            );
            assert_eq!(
                (db.index, db.offset, db.byte),
                (i as u64, b.offsets[i] as u64, b.offsets[i] as u64),
                "{d}"
            );
        }
    }
}

target!(|input: Input| {
    let profile = input.profile.profile();
    let list = build(&profile, &input.cmds);
    let a = split(&profile, &list, &input.cuts_a);
    let b = split(&profile, &list, &input.cuts_b);

    if let Some(raw) = &input.raw {
        let cap = |v: &Vec<u8>| v.iter().take(1 << 16).copied().collect::<Vec<u8>>();
        let (x, y) = match raw {
            Raw::A(v) => (cap(v), b.bytes.clone()),
            Raw::B(v) => (a.bytes.clone(), cap(v)),
            Raw::Both(v, w) => (cap(v), cap(w)),
            Raw::DamageB(flips) => {
                let mut y = b.bytes.clone();
                for &(at, x) in flips.iter().take(4) {
                    let n = y.len();
                    y[at as usize % n] ^= x.max(1);
                }
                (a.bytes.clone(), y)
            }
        };
        let _ = check_any(&x, &y, profile, "raw");
        return;
    }

    // Every piece is a data command to DataSplit as to the model.
    for s in [&a, &b] {
        for (i, c) in s.cmds.iter().enumerate() {
            let end = s.offsets.get(i + 1).copied().unwrap_or(s.bytes.len());
            check_layout(&profile, c, &s.bytes[s.offsets[i]..end]);
        }
    }
    let total = data_bytes(&profile, &list);
    match check_any(&a.bytes, &b.bytes, profile, "re-split") {
        Ok(Outcome::Equal {
            units_a,
            units_b,
            data_bytes,
        }) => assert_eq!(
            (units_a, units_b, data_bytes),
            (a.cmds.len() as u64, b.cmds.len() as u64, total)
        ),
        other => panic!("the same commands cut differently: {other:?}"),
    }
    if let Some(m) = &input.mutation {
        mutate(&profile, &list, &a, b, m);
    }
});
