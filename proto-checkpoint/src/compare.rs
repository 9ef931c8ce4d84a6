//! Comparing two streams however their data commands were split (the COLO
//! idea: TCP payloads are compared by sequence number, not packet by
//! packet).
//!
//! Units that are not data commands must be equal byte for byte (after
//! their CRC is checked; a command's CRC field is therefore equal too).
//! Data commands are aligned by (object, position): a run of data for one
//! object may be cut into commands differently on each side, as long as the
//! same bytes land at the same positions in the same order.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use proto_tlv::{decode_command, CmdBuf, CMD_HEADER_LEN};

use crate::split::{DataLayout, Split};
use crate::{Unit, UnitKind, Units};

/// Which of the two streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The first stream.
    A,
    /// The second stream.
    B,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::A => "A",
            Side::B => "B",
        })
    }
}

/// Where a divergence lies in one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    /// Unit number from the start of the input (stream headers count).
    pub seq: u64,
    /// Command index in its stream.
    pub index: u64,
    /// Byte offset of the unit in the input.
    pub offset: u64,
    /// Byte offset of the first byte that differs (the unit's offset when
    /// the whole unit is at fault).
    pub byte: u64,
}

/// How two streams differ.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DivergenceKind {
    /// One stream ends where the other goes on.
    Ends {
        /// The stream that ended.
        ended: Side,
    },
    /// Stream headers (or other raw units) differ, or one side has one
    /// where the other has a command.
    Raw,
    /// Commands of different types.
    CommandType {
        /// Type in A.
        a: u16,
        /// Type in B.
        b: u16,
    },
    /// Commands of one type with different attributes.
    Attributes {
        /// The command type.
        cmd: u16,
    },
    /// Data for different objects (another path, or other attributes).
    Object,
    /// Data at different positions: a gap, an overlap, or data that goes
    /// on in one stream where the other moves to another command.
    Position {
        /// Position of the next data byte in A (`None`: not a data command).
        a: Option<u64>,
        /// Position of the next data byte in B.
        b: Option<u64>,
    },
    /// Data bytes differ.
    Data,
}

/// The first place where two streams differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// What differs.
    pub kind: DivergenceKind,
    /// Where in A (`None` when A has ended).
    pub a: Option<At>,
    /// Where in B.
    pub b: Option<At>,
    /// The path of the object concerned, when the commands name one.
    pub path: Option<Vec<u8>>,
    /// The position (file offset) of the first differing data byte, for
    /// data commands.
    pub file_offset: Option<u64>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DivergenceKind::Ends { ended } => write!(f, "{ended} ends where the other goes on")?,
            DivergenceKind::Raw => f.write_str("stream headers differ")?,
            DivergenceKind::CommandType { a, b } => {
                write!(f, "command types differ: {a:#06x} vs {b:#06x}")?
            }
            DivergenceKind::Attributes { cmd } => {
                write!(f, "attributes of command type {cmd:#06x} differ")?
            }
            DivergenceKind::Object => f.write_str("data for different objects")?,
            DivergenceKind::Position { a, b } => {
                let p = |x: &Option<u64>| x.map_or("no data".to_string(), |v| v.to_string());
                write!(f, "data positions differ: {} vs {}", p(a), p(b))?
            }
            DivergenceKind::Data => f.write_str("data bytes differ")?,
        }
        for (side, at) in [(Side::A, &self.a), (Side::B, &self.b)] {
            match at {
                Some(at) => write!(
                    f,
                    "; {side}: command {} (unit {}) at byte offset {}, first differing byte {}",
                    at.index, at.seq, at.offset, at.byte
                )?,
                None => write!(f, "; {side}: end of stream")?,
            }
        }
        if let Some(p) = &self.path {
            write!(f, "; path {:?}", String::from_utf8_lossy(p))?;
        }
        if let Some(o) = self.file_offset {
            write!(f, "; file offset {o}")?;
        }
        Ok(())
    }
}

/// What a comparison found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The streams carry the same commands.
    Equal {
        /// Units in A.
        units_a: u64,
        /// Units in B.
        units_b: u64,
        /// Data bytes compared by position.
        data_bytes: u64,
    },
    /// They differ; the first divergence.
    Differ(Divergence),
}

/// A stream could not be read to the point of comparison.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError<EA: core::error::Error + 'static, EB: core::error::Error + 'static> {
    /// Stream A's producer failed.
    #[error("stream A: {0}")]
    A(EA),
    /// Stream B's producer failed.
    #[error("stream B: {0}")]
    B(EB),
    /// A command is damaged (CRC or attribute layout).
    #[error("stream {side}: {error}")]
    Corrupt {
        /// Which stream.
        side: Side,
        /// What and where.
        error: proto_tlv::Error,
    },
}

/// One side's position: the unit at its cursor and how much of its data
/// was matched already.
#[derive(Default)]
struct Cursor {
    seq: u64,
    /// Data bytes of the current unit already matched.
    done: u64,
    /// The current unit's CRC and layout were checked.
    checked: bool,
    key: Vec<u8>,
}

impl Cursor {
    /// On to the next unit.
    fn next(&mut self) {
        self.seq += 1;
        self.done = 0;
        self.checked = false;
    }
}

/// What one side shows at its cursor.
struct Seen<'a> {
    unit: Unit<'a>,
    data: Option<DataLayout>,
}

fn look<'a, S: Split>(
    unit: Option<Unit<'a>>,
    cur: &mut Cursor,
    split: &S,
    side: Side,
) -> Result<Option<Seen<'a>>, (Side, proto_tlv::Error)> {
    let Some(unit) = unit else { return Ok(None) };
    let data = match unit.kind {
        UnitKind::Raw => None,
        UnitKind::Command(p) => {
            if !cur.checked {
                decode_command(unit.bytes, &p, unit.index, unit.offset).map_err(|e| (side, e))?;
            }
            let l = split.layout(&p, unit.bytes);
            if !cur.checked {
                cur.key.clear();
                if let Some(l) = &l {
                    split.object_key(&p, unit.bytes, l, &mut cur.key);
                }
            }
            l
        }
    };
    cur.checked = true;
    Ok(Some(Seen { unit, data }))
}

fn at(s: &Seen<'_>, cur: &Cursor, byte: u64) -> At {
    At {
        seq: cur.seq,
        index: s.unit.index,
        offset: s.unit.offset,
        byte,
    }
}

fn path_of<S: Split>(split: &S, s: &Seen<'_>) -> Option<Vec<u8>> {
    match s.unit.kind {
        UnitKind::Command(p) => split.path(&p, s.unit.bytes).map(<[u8]>::to_vec),
        UnitKind::Raw => None,
    }
}

/// What to do after looking at both cursors.
enum Next {
    Differ(Divergence),
    /// `n` data bytes matched on both sides (0 for units compared whole);
    /// `true`: that side's unit is used up.
    Matched {
        n: u64,
        done_a: bool,
        done_b: bool,
    },
    Done,
}

const WHOLE: Next = Next::Matched {
    n: 0,
    done_a: true,
    done_b: true,
};

/// Compares two streams unit by unit, data commands by (object, position)
/// as `split` recognises them. Reads both to their ends when they are
/// equal, and stops at the first divergence otherwise.
///
/// ```
/// use proto_checkpoint::{compare, Commands, DataSplit, Outcome};
/// use proto_tlv::{encode_command, AttrValue, CrcVariant, Profile, Value};
///
/// let profile = Profile { crc: CrcVariant::BtrfsRaw, max_payload_len: 1 << 16,
///                         unbounded_data_attr: None, end_cmd: 21 };
/// let write = |off: u64, data: &[u8], out: &mut Vec<u8>| {
///     encode_command(&profile, 15, &[AttrValue::new(15, Value::Bytes(b"f")),
///         AttrValue::new(18, Value::U64(off)), AttrValue::new(19, Value::Bytes(data))], out).unwrap();
/// };
/// let (mut one, mut two) = (Vec::new(), Vec::new());
/// write(0, b"hello world", &mut one);
/// write(0, b"hello", &mut two);
/// write(5, b" world", &mut two);
/// for s in [&mut one, &mut two] { encode_command(&profile, 21, &[], s).unwrap(); }
///
/// let rule = DataSplit { cmd: 15, offset_attr: 18, data_attr: 19, path_attr: Some(15) };
/// let mut a = Commands::new(&one, profile);
/// let mut b = Commands::new(&two, profile);
/// let outcome = compare(&mut a, &mut b, &rule).unwrap();
/// assert_eq!(outcome, Outcome::Equal { units_a: 2, units_b: 3, data_bytes: 11 });
/// ```
pub fn compare<A: Units, B: Units, S: Split>(
    a: &mut A,
    b: &mut B,
    split: &S,
) -> Result<Outcome, CompareError<A::Error, B::Error>> {
    let (mut ca, mut cb) = (Cursor::default(), Cursor::default());
    let mut data_bytes = 0u64;
    let corrupt = |(side, error)| CompareError::Corrupt { side, error };
    loop {
        let next = {
            let ua = a.current().map_err(CompareError::A)?;
            let ub = b.current().map_err(CompareError::B)?;
            let sa = look(ua, &mut ca, split, Side::A).map_err(corrupt)?;
            let sb = look(ub, &mut cb, split, Side::B).map_err(corrupt)?;
            step(sa, sb, &ca, &cb, split)
        };
        match next {
            Next::Differ(d) => return Ok(Outcome::Differ(d)),
            Next::Done => {
                return Ok(Outcome::Equal {
                    units_a: ca.seq,
                    units_b: cb.seq,
                    data_bytes,
                })
            }
            Next::Matched { n, done_a, done_b } => {
                data_bytes += n;
                ca.done += n;
                cb.done += n;
                if done_a {
                    a.advance().map_err(CompareError::A)?;
                    ca.next();
                }
                if done_b {
                    b.advance().map_err(CompareError::B)?;
                    cb.next();
                }
            }
        }
    }
}

/// Compares what the two cursors show.
fn step<S: Split>(
    sa: Option<Seen<'_>>,
    sb: Option<Seen<'_>>,
    ca: &Cursor,
    cb: &Cursor,
    split: &S,
) -> Next {
    let differ = |kind, sa: &Option<Seen<'_>>, sb: &Option<Seen<'_>>, bytes: (u64, u64)| {
        let path = sa
            .as_ref()
            .and_then(|s| path_of(split, s))
            .or_else(|| sb.as_ref().and_then(|s| path_of(split, s)));
        Divergence {
            kind,
            a: sa.as_ref().map(|s| at(s, ca, bytes.0)),
            b: sb.as_ref().map(|s| at(s, cb, bytes.1)),
            path,
            file_offset: None,
        }
    };
    let (ua, ub) = match (&sa, &sb) {
        (None, None) => return Next::Done,
        (None, Some(s)) | (Some(s), None) => {
            let ended = if sa.is_none() { Side::A } else { Side::B };
            let o = s.unit.offset;
            return Next::Differ(differ(DivergenceKind::Ends { ended }, &sa, &sb, (o, o)));
        }
        (Some(x), Some(y)) => (x, y),
    };
    let whole = (ua.unit.offset, ub.unit.offset);
    match (ua.unit.kind, ub.unit.kind) {
        (UnitKind::Raw, UnitKind::Raw) if ua.unit.bytes == ub.unit.bytes => return WHOLE,
        (UnitKind::Command(_), UnitKind::Command(_)) => {}
        _ => return Next::Differ(differ(DivergenceKind::Raw, &sa, &sb, whole)),
    }
    let (ba, bb) = (ua.unit.bytes, ub.unit.bytes);
    // Command units hold at least a header (they were framed).
    let cmd_of = |b| CmdBuf::new_checked(b).map_or(0, |c| c.cmd());
    let (ta, tb) = (cmd_of(ba), cmd_of(bb));
    match (&ua.data, &ub.data) {
        (Some(la), Some(lb)) => {
            if ca.key != cb.key {
                return Next::Differ(differ(DivergenceKind::Object, &sa, &sb, whole));
            }
            let (pa, pb) = (la.position + ca.done, lb.position + cb.done);
            if pa != pb {
                let mut d = differ(
                    DivergenceKind::Position {
                        a: Some(pa),
                        b: Some(pb),
                    },
                    &sa,
                    &sb,
                    whole,
                );
                d.file_offset = Some(pa.min(pb));
                return Next::Differ(d);
            }
            let (ra, rb) = (la.data_len - ca.done, lb.data_len - cb.done);
            let n = ra.min(rb) as usize;
            let (oa, ob) = (
                la.data_start + ca.done as usize,
                lb.data_start + cb.done as usize,
            );
            let (xa, xb) = (&ba[oa..oa + n], &bb[ob..ob + n]);
            if xa != xb {
                let i = xa.iter().zip(xb).position(|(x, y)| x != y).unwrap_or(0) as u64;
                let mut d = differ(
                    DivergenceKind::Data,
                    &sa,
                    &sb,
                    (
                        ua.unit.offset + oa as u64 + i,
                        ub.unit.offset + ob as u64 + i,
                    ),
                );
                d.file_offset = Some(pa + i);
                return Next::Differ(d);
            }
            Next::Matched {
                n: n as u64,
                done_a: ra == n as u64,
                done_b: rb == n as u64,
            }
        }
        // Data goes on in one stream, not in the other.
        (Some(_), None) | (None, Some(_)) if ca.done > 0 || cb.done > 0 => {
            let pos = |s: &Seen<'_>, c: &Cursor| s.data.map(|l| l.position + c.done);
            let mut d = differ(
                DivergenceKind::Position {
                    a: pos(ua, ca),
                    b: pos(ub, cb),
                },
                &sa,
                &sb,
                whole,
            );
            d.file_offset = pos(ua, ca).or(pos(ub, cb));
            Next::Differ(d)
        }
        _ if ta != tb => Next::Differ(differ(
            DivergenceKind::CommandType { a: ta, b: tb },
            &sa,
            &sb,
            whole,
        )),
        _ if ba != bb => {
            // The first differing payload byte (the CRC field differs
            // whenever the payload does); when one payload is the start of
            // the other, the length field.
            let (pa, pb) = (&ba[CMD_HEADER_LEN..], &bb[CMD_HEADER_LEN..]);
            let i = pa
                .iter()
                .zip(pb)
                .position(|(x, y)| x != y)
                .map_or(0, |i| (CMD_HEADER_LEN + i) as u64);
            Next::Differ(differ(
                DivergenceKind::Attributes { cmd: ta },
                &sa,
                &sb,
                (whole.0 + i, whole.1 + i),
            ))
        }
        _ => WHOLE,
    }
}
