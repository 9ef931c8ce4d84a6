//! `compare`: streams that carry the same commands are equal however their
//! data commands are cut (by a re-splitter written here, independent of the
//! crate's), and the first divergence of streams that differ is found, of
//! the right kind, at the right command, byte, path and file offset. Every
//! comparison is also made the other way round, which must mirror it.

use proptest::prelude::*;
use proptest::sample::Index;
use proto_checkpoint::{
    compare, At, CommandsError, CompareError, Divergence, DivergenceKind, Outcome, Side, Unit,
    UnitKind, Units,
};
use proto_tlv::{ErrorKind, Profile};

mod support;
use support::*;

type CmpResult = Result<Outcome, CompareError<CommandsError, CommandsError>>;

fn cmp(a: &Model, b: &Model) -> CmpResult {
    compare(&mut a.producer(1), &mut b.producer(1), &WRITE)
}

// ---------------------------------------------------------------------------
// An independent re-splitter.

/// Where a command of the re-split stream comes from.
#[derive(Clone, Copy, Debug)]
enum Src {
    /// This command of the original, as it is.
    Whole(usize),
    /// Data of run `run` from run byte `from` on.
    Piece { run: usize, from: u64 },
}

/// Consecutive data commands of the original for one path at contiguous
/// offsets: (command, first run byte) each.
#[derive(Clone, Debug, Default)]
struct Run {
    cmds: Vec<(usize, u64)>,
}

struct Resplit {
    b: Model,
    src: Vec<Src>,
    runs: Vec<Run>,
}

impl Resplit {
    /// The original command and data index of byte `pos` of run `run`.
    fn origin(&self, run: usize, pos: u64) -> (usize, u64) {
        let (k, start) = *self.runs[run]
            .cmds
            .iter()
            .rev()
            .find(|(_, s)| *s <= pos)
            .unwrap();
        (k, pos - start)
    }

    /// The re-split command that carries data byte `data` of original
    /// command `k` (which has data), and that byte's index in its data.
    fn carrier(&self, k: usize, data: u64) -> (usize, u64) {
        let run = self
            .runs
            .iter()
            .position(|r| r.cmds.iter().any(|(c, _)| *c == k))
            .unwrap();
        let start = self.runs[run].cmds.iter().find(|(c, _)| *c == k).unwrap().1;
        let pos = start + data;
        let mut best = None;
        for (j, s) in self.src.iter().enumerate() {
            if let Src::Piece { run: r, from } = *s {
                if r == run && from <= pos {
                    best = Some((j, pos - from));
                }
            }
        }
        best.unwrap()
    }
}

/// A tiny generator for cut points.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Cuts the data of `a` anew: runs of data commands for one path at
/// contiguous offsets are joined (when `join`) and cut at random points,
/// each piece re-encoded with `encode_command`. Everything else is kept.
fn resplit(a: &Model, seed: u64, join: bool) -> Resplit {
    let mut rng = Rng(seed);
    let (mut cmds, mut src, mut runs) = (Vec::new(), Vec::new(), Vec::new());
    let mut k = 0;
    while k < a.cmds.len() {
        let Some(first) = a.layouts[k] else {
            cmds.push(a.cmds[k].clone());
            src.push(Src::Whole(k));
            k += 1;
            continue;
        };
        let Cmd::Data { path, .. } = &a.cmds[k] else {
            unreachable!()
        };
        let mut run = Run::default();
        let mut data = Vec::new();
        let mut next_pos = first.position;
        while k < a.cmds.len() {
            match (&a.cmds[k], a.layouts[k]) {
                (
                    Cmd::Data {
                        path: p, data: d, ..
                    },
                    Some(l),
                ) if p == path && l.position == next_pos && (run.cmds.is_empty() || join) => {
                    run.cmds.push((k, data.len() as u64));
                    data.extend_from_slice(d);
                    next_pos = l.position + l.data_len;
                    k += 1;
                }
                _ => break,
            }
        }
        // Up to 4 cuts, anywhere inside.
        let mut cuts: Vec<usize> = (0..rng.next() % 5)
            .map(|_| 1 + (rng.next() as usize) % data.len())
            .filter(|&c| c < data.len())
            .collect();
        cuts.push(0);
        cuts.push(data.len());
        cuts.sort_unstable();
        cuts.dedup();
        for w in cuts.windows(2) {
            cmds.push(Cmd::Data {
                path: path.clone(),
                offset: first.position + w[0] as u64,
                data: data[w[0]..w[1]].to_vec(),
            });
            src.push(Src::Piece {
                run: runs.len(),
                from: w[0] as u64,
            });
        }
        runs.push(run);
    }
    let b = Model::new(a.profile, cmds);
    assert_eq!(b.data_bytes(), a.data_bytes());
    Resplit { b, src, runs }
}

/// The path a command names (its last PATH attribute), from the model.
fn path_of(m: &Model, k: usize) -> Option<Vec<u8>> {
    match &m.cmds[k] {
        Cmd::Data { path, .. } => Some(path.clone()),
        Cmd::Other { attrs, .. } => attrs
            .iter()
            .rev()
            .find(|(t, _)| *t == 15)
            .map(|(_, v)| v.clone()),
        Cmd::End => None,
    }
}

fn ty(c: &Cmd) -> u16 {
    match c {
        Cmd::Data { .. } => WRITE.cmd,
        Cmd::Other { ty, .. } => *ty,
        Cmd::End => END,
    }
}

/// Command `k` of `m` (a CommandsProducer stream: unit number = index).
fn at(m: &Model, k: usize, byte: u64) -> At {
    At {
        seq: k as u64,
        index: k as u64,
        offset: m.at[k].0 as u64,
        byte,
    }
}

fn whole(m: &Model, k: usize) -> At {
    at(m, k, m.at[k].0 as u64)
}

// ---------------------------------------------------------------------------
// Checking both ways round.

fn swap_side(s: Side) -> Side {
    match s {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

fn mirror(d: &Divergence, path: Option<Vec<u8>>) -> Divergence {
    let kind = match &d.kind {
        DivergenceKind::Ends { ended } => DivergenceKind::Ends {
            ended: swap_side(*ended),
        },
        DivergenceKind::CommandType { a, b } => DivergenceKind::CommandType { a: *b, b: *a },
        DivergenceKind::Position { a, b } => DivergenceKind::Position { a: *b, b: *a },
        other => other.clone(),
    };
    Divergence {
        kind,
        a: d.b,
        b: d.a,
        path,
        file_offset: d.file_offset,
    }
}

/// compare(a, b) is `want`, and compare(b, a) mirrors it, naming
/// `path_ba` (the path of b's command first).
#[track_caller]
fn assert_differ(a: &Model, b: &Model, want: Divergence, path_ba: Option<Vec<u8>>) {
    match cmp(a, b) {
        Ok(Outcome::Differ(d)) => assert_eq!(d, want, "{d}"),
        other => panic!("expected {want:?}, got {other:?}"),
    }
    let back = mirror(&want, path_ba);
    match cmp(b, a) {
        Ok(Outcome::Differ(d)) => assert_eq!(d, back, "the other way round: {d}"),
        other => panic!("the other way round: expected {back:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_equal(a: &Model, b: &Model) {
    let want = Outcome::Equal {
        units_a: a.n(),
        units_b: b.n(),
        data_bytes: a.data_bytes(),
    };
    assert_eq!(cmp(a, b).unwrap(), want);
    let back = Outcome::Equal {
        units_a: b.n(),
        units_b: a.n(),
        data_bytes: a.data_bytes(),
    };
    assert_eq!(cmp(b, a).unwrap(), back);
}

/// Equal one way iff equal the other way; divergences mirror each other
/// (all but the path, which names the first stream's command first).
#[track_caller]
fn assert_symmetric(a: &Model, b: &Model) {
    match (cmp(a, b), cmp(b, a)) {
        (
            Ok(Outcome::Equal {
                units_a,
                units_b,
                data_bytes,
            }),
            Ok(Outcome::Equal {
                units_a: ua,
                units_b: ub,
                data_bytes: db,
            }),
        ) => {
            assert_eq!((units_a, units_b, data_bytes), (ub, ua, db));
        }
        (Ok(Outcome::Differ(x)), Ok(Outcome::Differ(y))) => {
            assert_eq!(mirror(&x, y.path.clone()), y, "{x} / {y}");
            assert_eq!(x.path.is_some(), y.path.is_some(), "{x} / {y}");
        }
        (
            Err(CompareError::Corrupt {
                side: s1,
                error: e1,
            }),
            Err(CompareError::Corrupt {
                side: s2,
                error: e2,
            }),
        ) => {
            assert_eq!((swap_side(s1), e1), (s2, e2));
        }
        (Err(CompareError::A(e1)), Err(CompareError::B(e2)))
        | (Err(CompareError::B(e1)), Err(CompareError::A(e2))) => {
            assert_eq!(e1, e2);
        }
        (x, y) => panic!("not symmetric: {x:?} / {y:?}"),
    }
}

/// What compare must report when A shows command `ka` of `a` and B command
/// `kb` of `b`, neither started, everything before equal: the divergence,
/// and the path the mirrored one names. `None` when nothing differs there
/// yet (the same command, or data for one object at one position).
fn fresh(a: &Model, ka: usize, b: &Model, kb: usize) -> Option<(Divergence, Option<Vec<u8>>)> {
    let (x, y) = (&a.cmds[ka], &b.cmds[kb]);
    let (pa, pb) = (path_of(a, ka), path_of(b, kb));
    let differ = |kind, byte: usize, file_offset| {
        let d = Divergence {
            kind,
            a: Some(at(a, ka, (a.at[ka].0 + byte) as u64)),
            b: Some(at(b, kb, (b.at[kb].0 + byte) as u64)),
            path: pa.clone().or(pb.clone()),
            file_offset,
        };
        Some((d, pb.clone().or(pa.clone())))
    };
    match (a.layouts[ka], b.layouts[kb]) {
        (Some(la), Some(lb)) => {
            if pa != pb {
                differ(DivergenceKind::Object, 0, None)
            } else if la.position != lb.position {
                let pos = DivergenceKind::Position {
                    a: Some(la.position),
                    b: Some(lb.position),
                };
                differ(pos, 0, Some(la.position.min(lb.position)))
            } else {
                None
            }
        }
        _ if ty(x) != ty(y) => differ(DivergenceKind::CommandType { a: ty(x), b: ty(y) }, 0, None),
        _ if x != y => {
            // The first differing payload byte; the length field when one
            // payload is the start of the other.
            let (ea, eb) = (&a.cmd(ka)[10..], &b.cmd(kb)[10..]);
            let i = ea
                .iter()
                .zip(eb)
                .position(|(p, q)| p != q)
                .map_or(0, |i| 10 + i);
            differ(DivergenceKind::Attributes { cmd: ty(x) }, i, None)
        }
        _ => None,
    }
}

fn with_cmds(m: &Model, f: impl FnOnce(&mut Vec<Cmd>)) -> Model {
    let mut cmds = m.cmds.clone();
    f(&mut cmds);
    Model::new(m.profile, cmds)
}

fn data_cmds(m: &Model) -> Vec<usize> {
    (0..m.cmds.len())
        .filter(|&k| m.layouts[k].is_some())
        .collect()
}

// ---------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config(1000))]

    /// However the data is cut and joined, the streams are equal, and
    /// two different cuttings are equal to each other.
    #[test]
    fn equal_however_split(m in model_with_runs(30), s1 in any::<u64>(), s2 in any::<u64>(), join in any::<bool>()) {
        assert_equal(&m, &m);
        let b = resplit(&m, s1, join).b;
        let c = resplit(&m, s2, true).b;
        assert_equal(&m, &b);
        assert_equal(&b, &c);
    }

    /// One data byte changed, the CRC made right again: `Data`, at that
    /// byte in both streams, with its path and file offset.
    #[test]
    fn changed_data_byte(m in model_with_runs(20), seed in any::<u64>(), which in any::<Index>(), byte in any::<Index>(), bit in 0u8..8) {
        let r = resplit(&m, seed, true);
        let pieces = data_cmds(&r.b);
        prop_assume!(!pieces.is_empty());
        let j = pieces[which.index(pieces.len())];
        let i = byte.index(r.b.layouts[j].unwrap().data_len as usize);
        let b = with_cmds(&r.b, |c| {
            if let Cmd::Data { data, .. } = &mut c[j] {
                data[i] ^= 1 << bit;
            }
        });
        let Src::Piece { run, from } = r.src[j] else { unreachable!() };
        let (k, ka) = r.origin(run, from + i as u64);
        let la = m.layouts[k].unwrap();
        let lb = b.layouts[j].unwrap();
        let path = path_of(&m, k);
        let want = Divergence {
            kind: DivergenceKind::Data,
            a: Some(at(&m, k, (m.at[k].0 + la.data_start) as u64 + ka)),
            b: Some(at(&b, j, (b.at[j].0 + lb.data_start + i) as u64)),
            path: path.clone(),
            file_offset: Some(la.position + ka),
        };
        assert_differ(&m, &b, want, path);
    }

    /// Another command type, or the same type with other attributes.
    #[test]
    fn changed_attributes(
        m in model_with_runs(20),
        seed in any::<u64>(),
        which in any::<Index>(),
        how in 0u8..5,
        x in any::<Index>(),
        v in any::<u8>(),
    ) {
        let others: Vec<usize> = (0..m.cmds.len()).filter(|&k| matches!(m.cmds[k], Cmd::Other { .. })).collect();
        prop_assume!(!others.is_empty());
        let k = others[which.index(others.len())];
        let changed = with_cmds(&m, |c| {
            let Cmd::Other { ty, attrs } = &mut c[k] else { unreachable!() };
            match how {
                // Another type (never the data command or END).
                0 => *ty = [1u16, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20]
                    .into_iter()
                    .filter(|t| t != ty)
                    .nth(x.index(18))
                    .unwrap(),
                // A value changed, lengthened, or an attribute renamed.
                1 if attrs.iter().any(|(_, v)| !v.is_empty()) => {
                    let full: Vec<usize> = (0..attrs.len()).filter(|&i| !attrs[i].1.is_empty()).collect();
                    let a = &mut attrs[full[x.index(full.len())]].1;
                    let i = x.index(a.len());
                    a[i] ^= 1 | v;
                }
                2 if !attrs.is_empty() => {
                    let i = x.index(attrs.len());
                    attrs[i].1.push(v);
                }
                3 if !attrs.is_empty() => {
                    let i = x.index(attrs.len());
                    attrs[i].0 = if attrs[i].0 == 30 { 1 } else { attrs[i].0 + 1 };
                }
                // An attribute more.
                _ => attrs.insert(0, (1 + u16::from(v % 30), vec![v; x.index(20)])),
            }
        });
        prop_assume!(changed.cmd(k) != m.cmd(k));
        let r = resplit(&changed, seed, true);
        let j = r.src.iter().position(|s| matches!(s, Src::Whole(c) if *c == k)).unwrap();
        let b = &r.b;
        let (ta, tb) = (ty(&m.cmds[k]), ty(&b.cmds[j]));
        let (ea, eb) = (m.cmd(k), b.cmd(j));
        let want = if ta != tb {
            Divergence {
                kind: DivergenceKind::CommandType { a: ta, b: tb },
                a: Some(whole(&m, k)),
                b: Some(whole(b, j)),
                path: path_of(&m, k).or(path_of(b, j)),
                file_offset: None,
            }
        } else {
            // The first differing payload byte; the length field when one
            // payload is the start of the other.
            let (pa, pb) = (&ea[10..], &eb[10..]);
            let i = pa.iter().zip(pb).position(|(x, y)| x != y).map_or(0, |i| 10 + i);
            Divergence {
                kind: DivergenceKind::Attributes { cmd: ta },
                a: Some(at(&m, k, (m.at[k].0 + i) as u64)),
                b: Some(at(b, j, (b.at[j].0 + i) as u64)),
                path: path_of(&m, k).or(path_of(b, j)),
                file_offset: None,
            }
        };
        assert_differ(&m, b, want, path_of(b, j).or(path_of(&m, k)));
    }

    /// Data moved to another path: `Object`, at the first command for the
    /// new path.
    #[test]
    fn data_for_another_object(
        m in model_with_runs(20),
        seed in any::<u64>(),
        which in any::<Index>(),
        new_path in proptest::collection::vec(any::<u8>(), 0..12),
        borrow in any::<bool>(),
    ) {
        let datas = data_cmds(&m);
        prop_assume!(!datas.is_empty());
        let k = datas[which.index(datas.len())];
        // Sometimes the path of the command before, so that the data may
        // join that command's in the re-split stream.
        let new_path = match (borrow, k.checked_sub(1).map(|p| &m.cmds[p])) {
            (true, Some(Cmd::Data { path, .. })) => path.clone(),
            _ => new_path,
        };
        let old = path_of(&m, k).unwrap();
        prop_assume!(new_path != old);
        let changed = with_cmds(&m, |c| {
            if let Cmd::Data { path, .. } = &mut c[k] {
                *path = new_path.clone();
            }
        });
        let r = resplit(&changed, seed, true);
        let (j, _) = r.carrier(k, 0);
        let want = Divergence {
            kind: DivergenceKind::Object,
            a: Some(whole(&m, k)),
            b: Some(whole(&r.b, j)),
            path: Some(old),
            file_offset: None,
        };
        assert_differ(&m, &r.b, want, Some(new_path));
    }

    /// Data at another file offset (a gap, or an overlap): `Position`,
    /// naming both positions.
    #[test]
    fn data_at_another_offset(
        m in model_with_runs(20),
        seed in any::<u64>(),
        which in any::<Index>(),
        delta in prop_oneof![1u64..10, 1u64..100_000],
        up in any::<bool>(),
    ) {
        let datas = data_cmds(&m);
        prop_assume!(!datas.is_empty());
        let k = datas[which.index(datas.len())];
        let l = m.layouts[k].unwrap();
        let new = if up { l.position.checked_add(delta) } else { l.position.checked_sub(delta) };
        let new = new.filter(|n| n.checked_add(l.data_len).is_some());
        prop_assume!(new.is_some());
        let new = new.unwrap();
        let changed = with_cmds(&m, |c| {
            if let Cmd::Data { offset, .. } = &mut c[k] {
                *offset = new;
            }
        });
        let r = resplit(&changed, seed, true);
        let (j, _) = r.carrier(k, 0);
        let path = path_of(&m, k);
        let want = Divergence {
            kind: DivergenceKind::Position { a: Some(l.position), b: Some(new) },
            a: Some(whole(&m, k)),
            b: Some(whole(&r.b, j)),
            path: path.clone(),
            file_offset: Some(l.position.min(new)),
        };
        assert_differ(&m, &r.b, want, path);
    }

    /// A command cut in pieces with one piece missing (a gap) or one piece
    /// twice (an overlap): `Position` in the middle of the command.
    #[test]
    fn missing_or_repeated_piece(
        m in model(15),
        which in any::<Index>(),
        cuts in proptest::collection::vec(any::<Index>(), 2..6),
        drop_it in any::<Index>(),
        repeat in any::<bool>(),
    ) {
        let datas: Vec<usize> = data_cmds(&m).into_iter().filter(|&k| m.layouts[k].unwrap().data_len >= 3).collect();
        prop_assume!(!datas.is_empty());
        let k = datas[which.index(datas.len())];
        let l = m.layouts[k].unwrap();
        let len = l.data_len as usize;
        let mut points: Vec<usize> = cuts.iter().map(|c| 1 + c.index(len - 1)).collect();
        points.push(0);
        points.push(len);
        points.sort_unstable();
        points.dedup();
        prop_assume!(points.len() >= 4); // at least 3 pieces
        let Cmd::Data { path, data, .. } = &m.cmds[k] else { unreachable!() };
        let pieces: Vec<Cmd> = points.windows(2).map(|w| Cmd::Data {
            path: path.clone(),
            offset: l.position + w[0] as u64,
            data: data[w[0]..w[1]].to_vec(),
        }).collect();
        // Not the last piece.
        let p = drop_it.index(pieces.len() - 1);
        let mut cut = pieces.clone();
        let (pa, pb, j) = if repeat {
            cut.insert(p + 1, pieces[p].clone());
            (points[p + 1], points[p], k + p + 1)
        } else {
            cut.remove(p);
            (points[p], points[p + 1], k + p)
        };
        let b = with_cmds(&m, |c| {
            c.splice(k..=k, cut);
        });
        let (pa, pb) = (l.position + pa as u64, l.position + pb as u64);
        let path = path_of(&m, k);
        let want = Divergence {
            kind: DivergenceKind::Position { a: Some(pa), b: Some(pb) },
            a: Some(whole(&m, k)),
            b: Some(whole(&b, j)),
            path: path.clone(),
            file_offset: Some(pa.min(pb)),
        };
        assert_differ(&m, &b, want, path);
    }

    /// The last piece of a cut command missing: A is in the middle of the
    /// command's data where B goes on to the next command; or the last piece
    /// twice: B repeats data where A goes on.
    #[test]
    fn last_piece_missing_or_repeated(
        m in model(15),
        which in any::<Index>(),
        cuts in proptest::collection::vec(any::<Index>(), 1..4),
        repeat in any::<bool>(),
    ) {
        let datas: Vec<usize> = data_cmds(&m).into_iter().filter(|&k| m.layouts[k].unwrap().data_len >= 2).collect();
        prop_assume!(!datas.is_empty());
        let k = datas[which.index(datas.len())];
        let l = m.layouts[k].unwrap();
        let len = l.data_len as usize;
        let mut points: Vec<usize> = cuts.iter().map(|c| 1 + c.index(len - 1)).collect();
        points.extend([0, len]);
        points.sort_unstable();
        points.dedup();
        let Cmd::Data { path, data, .. } = &m.cmds[k] else { unreachable!() };
        let mut pieces: Vec<Cmd> = points.windows(2).map(|w| Cmd::Data {
            path: path.clone(),
            offset: l.position + w[0] as u64,
            data: data[w[0]..w[1]].to_vec(),
        }).collect();
        let n = pieces.len();
        if repeat {
            pieces.push(pieces[n - 1].clone());
        } else {
            pieces.pop();
        }
        let b = with_cmds(&m, |c| {
            c.splice(k..=k, pieces);
        });
        if repeat {
            // A goes on to command k + 1, B repeats the last piece.
            match fresh(&m, k + 1, &b, k + n) {
                Some((want, path_ba)) => assert_differ(&m, &b, want, path_ba),
                None => prop_assert!(matches!(cmp(&m, &b), Ok(Outcome::Differ(_)))),
            }
            return Ok(());
        }
        // A has matched all but the last piece's data; B shows what follows.
        let (kb, pa) = (k + n - 1, l.position + points[n - 1] as u64);
        let want = match b.layouts[kb] {
            Some(_) if path_of(&b, kb) != path_of(&m, k) => Some(DivergenceKind::Object),
            Some(lb) if lb.position != pa => Some(DivergenceKind::Position { a: Some(pa), b: Some(lb.position) }),
            // The next command carries on at the same place.
            Some(_) => None,
            None => Some(DivergenceKind::Position { a: Some(pa), b: None }),
        };
        let Some(kind) = want else {
            prop_assert!(matches!(cmp(&m, &b), Ok(Outcome::Differ(_))));
            return Ok(());
        };
        let file_offset = match &kind {
            DivergenceKind::Position { a: Some(x), b: Some(y) } => Some(*x.min(y)),
            DivergenceKind::Position { a, .. } => *a,
            _ => None,
        };
        let want = Divergence {
            kind,
            a: Some(whole(&m, k)),
            b: Some(whole(&b, kb)),
            path: path_of(&m, k),
            file_offset,
        };
        assert_differ(&m, &b, want, path_of(&b, kb).or(path_of(&m, k)));
    }

    /// A command removed or added: the divergence the two commands that
    /// then face each other call for.
    #[test]
    fn removed_or_added_command(
        m in model(15),
        which in any::<Index>(),
        add in any::<bool>(),
        extra in command(),
    ) {
        let k = which.index(m.cmds.len());
        let b = if add {
            with_cmds(&m, |c| c.insert(k, extra.clone()))
        } else {
            with_cmds(&m, |c| {
                c.remove(k);
            })
        };
        if !add && k == m.cmds.len() - 1 {
            // Without its END, B is truncated: an error of B's, not a difference.
            let at = (k as u64, b.bytes.len() as u64);
            match cmp(&m, &b) {
                Err(CompareError::B(CommandsError::Tlv(e))) => {
                    prop_assert_eq!((e.kind, e.index, e.offset), (ErrorKind::MissingEnd, at.0, at.1));
                }
                other => prop_assert!(false, "{:?}", other),
            }
            assert_symmetric(&m, &b);
            return Ok(());
        }
        // What A shows at k against what B shows there.
        match fresh(&m, k, &b, k) {
            Some((want, path_ba)) => assert_differ(&m, &b, want, path_ba),
            None => {
                // The same command twice in a row, or data for the same
                // place: the difference shows later, but it shows.
                prop_assert!(matches!(cmp(&m, &b), Ok(Outcome::Differ(_))));
                assert_symmetric(&m, &b);
            }
        }
    }

    /// A damaged command (a flipped bit, CRC not fixed) in either stream is
    /// an error of that stream, at that command.
    #[test]
    fn corrupt_command(
        m in model_with_runs(15),
        seed in any::<u64>(),
        which in any::<Index>(),
        byte in any::<Index>(),
        bit in 0u8..8,
    ) {
        let r = resplit(&m, seed, true);
        let mut b = r.b.clone();
        let j = which.index(b.cmds.len());
        let (off, len) = b.at[j];
        let i = byte.index(len);
        b.bytes[off + i] ^= 1 << bit;
        let got = cmp(&m, &b);
        let (e, corrupt) = match got {
            Err(CompareError::Corrupt { side: Side::B, error }) => (error, true),
            // A flip in the length field changes the framing.
            Err(CompareError::B(CommandsError::Tlv(e))) if i < 4 => (e, false),
            other => return Err(TestCaseError::fail(format!("byte {i} of command {j}: {other:?}"))),
        };
        prop_assert_eq!((e.index, e.offset), (j as u64, off as u64), "{}", e);
        if corrupt {
            prop_assert!(matches!(e.kind, ErrorKind::CrcMismatch { .. }), "{}", e);
        } else {
            prop_assert!(matches!(e.kind, ErrorKind::Truncated { .. } | ErrorKind::Oversized { .. }), "{}", e);
        }
        assert_symmetric(&m, &b);
    }

    /// Equal one way iff equal the other, and every divergence mirrors,
    /// whatever was changed.
    #[test]
    fn symmetric(
        m in model_with_runs(15),
        seed in any::<u64>(),
        how in 0u8..7,
        which in any::<Index>(),
        byte in any::<Index>(),
        extra in command(),
    ) {
        let r = resplit(&m, seed, true);
        let b = &r.b;
        let j = which.index(b.cmds.len());
        let changed = match how {
            0 => b.clone(),
            1 => with_cmds(b, |c| { c.remove(j); }),
            2 => with_cmds(b, |c| c.insert(j, extra.clone())),
            3 => with_cmds(b, |c| c[j] = extra.clone()),
            4 => with_cmds(b, |c| {
                if let Cmd::Data { data, .. } = &mut c[j] {
                    if !data.is_empty() {
                        let i = byte.index(data.len());
                        data[i] ^= 0x10;
                    }
                }
            }),
            5 => with_cmds(b, |c| {
                if let Cmd::Data { offset, .. } = &mut c[j] {
                    *offset ^= 1 << byte.index(8);
                }
            }),
            _ => {
                let mut x = b.clone();
                let i = b.at[j].0 + byte.index(b.at[j].1);
                x.bytes[i] ^= 4;
                x
            }
        };
        assert_symmetric(&m, &changed);
        assert_symmetric(b, &changed);
    }
}

// ---------------------------------------------------------------------------
// Streams that may stop anywhere, with stream headers: `Ends` and `Raw`.

/// A producer over a list of units (raw headers and commands), without
/// END: its stream ends where the list does.
struct Listed {
    units: Vec<(UnitKind, Vec<u8>)>,
    pos: usize,
}

impl Listed {
    fn new(header: Option<&[u8]>, m: &Model, take: usize) -> Listed {
        let mut units = Vec::new();
        if let Some(h) = header {
            units.push((UnitKind::Raw, h.to_vec()));
        }
        for k in 0..take {
            units.push((UnitKind::Command(m.profile), m.cmd(k).to_vec()));
        }
        Listed { units, pos: 0 }
    }

    /// (command index, byte offset) of unit `u`.
    fn place(&self, u: usize) -> (u64, u64) {
        let before = &self.units[..u];
        let index = before
            .iter()
            .filter(|(k, _)| matches!(k, UnitKind::Command(_)))
            .count();
        let offset: usize = before.iter().map(|(_, b)| b.len()).sum();
        (index as u64, offset as u64)
    }
}

impl Units for Listed {
    type Error = std::convert::Infallible;

    fn current(&mut self) -> Result<Option<Unit<'_>>, Self::Error> {
        let pos = self.pos;
        if pos == self.units.len() {
            return Ok(None);
        }
        let (index, offset) = self.place(pos);
        let (kind, bytes) = &self.units[pos];
        Ok(Some(Unit {
            kind: *kind,
            bytes,
            index,
            offset,
        }))
    }
    fn advance(&mut self) -> Result<(), Self::Error> {
        self.pos += 1;
        Ok(())
    }
}

fn cmp_units(a: &mut Listed, b: &mut Listed) -> Outcome {
    compare(a, b, &WRITE).unwrap()
}

/// Unit `u` of a `Listed` stream, as compare reports it.
fn unit_at(s: &Listed, u: usize) -> At {
    let (index, offset) = s.place(u);
    At {
        seq: u as u64,
        index,
        offset,
        byte: offset,
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// One stream stops where the other goes on: `Ends`, naming the one
    /// that ended and where the other is.
    #[test]
    fn one_stream_ends(m in model(15), header in any::<bool>(), cut in any::<Index>()) {
        let h: &[u8] = b"header v1";
        let header = header.then_some(h);
        let n = m.cmds.len();
        let take = cut.index(n);
        let full = || Listed::new(header, &m, n);
        let short = || Listed::new(header, &m, take);
        let u = take + usize::from(header.is_some());
        let a = full();
        let want = Divergence {
            kind: DivergenceKind::Ends { ended: Side::B },
            a: Some(unit_at(&a, u)),
            b: None,
            path: path_of(&m, take),
            file_offset: None,
        };
        prop_assert_eq!(cmp_units(&mut full(), &mut short()), Outcome::Differ(want.clone()));
        prop_assert_eq!(cmp_units(&mut short(), &mut full()), Outcome::Differ(mirror(&want, want.path.clone())));
        prop_assert_eq!(
            cmp_units(&mut full(), &mut full()),
            Outcome::Equal { units_a: a.units.len() as u64, units_b: a.units.len() as u64, data_bytes: m.data_bytes() }
        );
    }

    /// Stream headers that differ, or a header where the other stream has
    /// a command: `Raw`.
    #[test]
    fn stream_headers_differ(m in model(5), h1 in proptest::collection::vec(any::<u8>(), 1..20), h2 in proptest::collection::vec(any::<u8>(), 1..20)) {
        prop_assume!(h1 != h2);
        let n = m.cmds.len();
        let (a, b) = (Listed::new(Some(&h1), &m, n), Listed::new(Some(&h2), &m, n));
        let want = Divergence {
            kind: DivergenceKind::Raw,
            a: Some(unit_at(&a, 0)),
            b: Some(unit_at(&b, 0)),
            path: None,
            file_offset: None,
        };
        prop_assert_eq!(cmp_units(&mut Listed::new(Some(&h1), &m, n), &mut Listed::new(Some(&h2), &m, n)), Outcome::Differ(want));
        // A header against no header.
        let none = Listed::new(None, &m, n);
        let want = Divergence {
            kind: DivergenceKind::Raw,
            a: Some(unit_at(&a, 0)),
            b: Some(unit_at(&none, 0)),
            path: path_of(&m, 0),
            file_offset: None,
        };
        prop_assert_eq!(cmp_units(&mut Listed::new(Some(&h1), &m, n), &mut Listed::new(None, &m, n)), Outcome::Differ(want));
    }
}

/// The divergence found in the crate's own example, checked field by
/// field, and its message.
#[test]
fn divergence_message_names_everything() {
    let profile = Profile {
        crc: proto_tlv::CrcVariant::BtrfsRaw,
        max_payload_len: 1 << 16,
        unbounded_data_attr: None,
        end_cmd: END,
    };
    let data = |path: &[u8], offset, data: &[u8]| Cmd::Data {
        path: path.to_vec(),
        offset,
        data: data.to_vec(),
    };
    let a = Model::new(profile, vec![data(b"f", 100, b"hello world"), Cmd::End]);
    let b = Model::new(
        profile,
        vec![
            data(b"f", 100, b"hello"),
            data(b"f", 105, b" World"),
            Cmd::End,
        ],
    );
    let d = match cmp(&a, &b).unwrap() {
        Outcome::Differ(d) => d,
        other => panic!("{other:?}"),
    };
    // 'w' is data byte 6 of A's command (data at 10 + 5 + 12 + 4 = 31) and
    // byte 1 of B's second one.
    let b_off = b.at[1].0 as u64;
    assert_eq!(
        d,
        Divergence {
            kind: DivergenceKind::Data,
            a: Some(At {
                seq: 0,
                index: 0,
                offset: 0,
                byte: 31 + 6
            }),
            b: Some(At {
                seq: 1,
                index: 1,
                offset: b_off,
                byte: b_off + 31 + 1
            }),
            path: Some(b"f".to_vec()),
            file_offset: Some(106),
        }
    );
    let msg = d.to_string();
    for part in [
        "data bytes differ",
        "first differing byte 37",
        "path \"f\"",
        "file offset 106",
    ] {
        assert!(msg.contains(part), "{msg}");
    }
}
