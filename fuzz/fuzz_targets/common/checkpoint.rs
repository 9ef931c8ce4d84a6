//! Shared by the `checkpoint_*` targets: btrfs-like profiles, arbitrary
//! command lists, and a model of the WRITE split rule written here from its
//! documentation (`proto_checkpoint::DataSplit`), not from its code.
#![allow(dead_code)]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use proto_checkpoint::{DataSplit, Split};
use proto_tlv::{Commands, CrcVariant, OwnedCommand, Profile};

/// btrfs `WRITE`: path 15, file offset 18, data 19.
pub const WRITE: DataSplit = DataSplit {
    cmd: 15,
    offset_attr: 18,
    data_attr: 19,
    path_attr: Some(15),
};
pub const WRITE_CMD: u16 = 15;
pub const PATH: u16 = 15;
pub const OFFSET: u16 = 18;
pub const DATA: u16 = 19;
pub const END: u16 = 21;
pub const MAX_PAYLOAD: u32 = 65536;

/// Data lengths go up to this (past the emitter's 4 KiB CRC marks).
pub const MAX_DATA: usize = 12 * 1024;
/// Commands per stream (END not counted).
pub const MAX_CMDS: usize = 40;
/// Data bytes of all writes together (so that a run through the smallest
/// buffers, a data byte or so per piece, stays short).
pub const MAX_TOTAL_DATA: usize = 24 * 1024;

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum ProfileChoice {
    /// btrfs v1-like: every attribute has a length field.
    V1Raw,
    /// btrfs v2-like: DATA (19) has none and runs to the end.
    V2Raw,
    V1Standard,
    V2Standard,
}

impl ProfileChoice {
    pub fn profile(self) -> Profile {
        let (crc, v2) = match self {
            ProfileChoice::V1Raw => (CrcVariant::BtrfsRaw, false),
            ProfileChoice::V2Raw => (CrcVariant::BtrfsRaw, true),
            ProfileChoice::V1Standard => (CrcVariant::Standard, false),
            ProfileChoice::V2Standard => (CrcVariant::Standard, true),
        };
        Profile {
            crc,
            max_payload_len: MAX_PAYLOAD,
            unbounded_data_attr: v2.then_some(DATA),
            end_cmd: END,
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum PathChoice {
    /// One of four short names, so that names repeat.
    Short(u8),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
pub enum OffsetChoice {
    /// Where the last write to the same path ended.
    Continue,
    Small(u16),
    Any(u64),
}

#[derive(Arbitrary, Debug)]
pub enum LenChoice {
    /// Up to 255 bytes.
    Short(u8),
    /// Up to 4 KiB.
    Page(u16),
    /// Over 4 KiB, up to `MAX_DATA`: pieces cross the emitter's CRC marks.
    Long(u16),
}

impl LenChoice {
    fn len(&self) -> usize {
        match *self {
            LenChoice::Short(v) => usize::from(v),
            LenChoice::Page(v) => usize::from(v) % 4097,
            LenChoice::Long(v) => 4097 + usize::from(v) % (MAX_DATA - 4096),
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum ValueChoice {
    Bytes(Vec<u8>),
    U64(u64),
}

#[derive(Arbitrary, Debug)]
pub enum CmdSpec {
    /// A write: path, offset, data (btrfs order).
    Write {
        path: PathChoice,
        offset: OffsetChoice,
        len: LenChoice,
        seed: u8,
    },
    /// Any other command, a WRITE of odd shape among them.
    Other {
        cmd: u8,
        attrs: Vec<(u8, ValueChoice)>,
    },
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 8) as u8)
        .collect()
}

/// The command list the specs describe, END last; commands the profile
/// cannot encode are left out.
pub fn build(profile: &Profile, specs: &[CmdSpec]) -> Vec<OwnedCommand> {
    let mut out = Vec::new();
    let mut ends: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut budget = MAX_TOTAL_DATA;
    for spec in specs.iter().take(MAX_CMDS) {
        let cmd = match spec {
            CmdSpec::Write {
                path,
                offset,
                len,
                seed,
            } => {
                let path = match path {
                    PathChoice::Short(n) => format!("file{}", n % 4).into_bytes(),
                    PathChoice::Bytes(b) => b.iter().take(40).copied().collect(),
                };
                let len = len.len().min(budget);
                budget -= len;
                let offset = match offset {
                    OffsetChoice::Continue => ends.get(&path).copied().unwrap_or(0),
                    OffsetChoice::Small(v) => u64::from(*v),
                    OffsetChoice::Any(v) => *v,
                };
                ends.insert(path.clone(), offset.wrapping_add(len as u64));
                OwnedCommand {
                    cmd: WRITE_CMD,
                    attrs: vec![
                        (PATH, path),
                        (OFFSET, offset.to_le_bytes().to_vec()),
                        (DATA, data(len, *seed)),
                    ],
                }
            }
            CmdSpec::Other { cmd, attrs } => {
                // END only last; WRITE twice as often as others.
                let cmd = match u16::from(cmd % 32) {
                    END => WRITE_CMD,
                    c => c,
                };
                let attrs = attrs
                    .iter()
                    .take(6)
                    .map(|(t, v)| {
                        let v = match v {
                            ValueChoice::Bytes(b) => b.iter().take(48).copied().collect(),
                            ValueChoice::U64(x) => x.to_le_bytes().to_vec(),
                        };
                        (u16::from(t % 24), v)
                    })
                    .collect();
                OwnedCommand { cmd, attrs }
            }
        };
        if cmd.encoded_len(profile).is_ok() {
            out.push(cmd);
        }
    }
    out.push(OwnedCommand {
        cmd: END,
        attrs: Vec::new(),
    });
    out
}

pub fn encode(profile: &Profile, list: &[OwnedCommand]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in list {
        c.encode(profile, &mut out).expect("built commands encode");
    }
    out
}

/// Where the data of a command the rule splits lies (the model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub offset_idx: usize,
    pub data_idx: usize,
    pub position: u64,
    pub data_len: usize,
    /// Encoded bytes before the first data byte.
    pub data_start: usize,
}

/// The documented rule: a command of type 15 with the offset (18) and data
/// (19) attributes each exactly once, the offset 8 bytes, the data last and
/// at least one byte, offset + length within a u64.
pub fn model_layout(profile: &Profile, c: &OwnedCommand) -> Option<Layout> {
    if c.cmd != WRITE_CMD {
        return None;
    }
    let find = |ty| {
        let mut it = c.attrs.iter().enumerate().filter(|(_, (t, _))| *t == ty);
        match (it.next(), it.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    };
    let (offset_idx, data_idx) = (find(OFFSET)?, find(DATA)?);
    if data_idx + 1 != c.attrs.len() {
        return None;
    }
    let off = &c.attrs[offset_idx].1;
    let data_len = c.attrs[data_idx].1.len();
    if off.len() != 8 || data_len == 0 {
        return None;
    }
    let position = u64::from_le_bytes(off[..].try_into().unwrap());
    position.checked_add(data_len as u64)?;
    let len = c.encoded_len(profile).ok()?;
    Some(Layout {
        offset_idx,
        data_idx,
        position,
        data_len,
        data_start: len - data_len,
    })
}

/// The model and `DataSplit::layout` agree on an encoded command.
pub fn check_layout(profile: &Profile, c: &OwnedCommand, bytes: &[u8]) -> Option<Layout> {
    let m = model_layout(profile, c);
    let got = WRITE.layout(profile, bytes);
    match (m, got) {
        (None, None) => {}
        (Some(m), Some(g)) => assert_eq!(
            (g.data_start, g.data_len, g.position),
            (m.data_start, m.data_len as u64, m.position),
            "DataSplit::layout vs the model: {c:?}"
        ),
        (m, g) => panic!("DataSplit::layout {g:?}, the model says {m:?}: {c:?}"),
    }
    m
}

/// The piece of `c` that carries data bytes `from..from + len`.
pub fn piece(c: &OwnedCommand, l: &Layout, from: usize, len: usize) -> OwnedCommand {
    let attrs = c
        .attrs
        .iter()
        .enumerate()
        .map(|(i, (t, v))| {
            let v = if i == l.offset_idx {
                (l.position + from as u64).to_le_bytes().to_vec()
            } else if i == l.data_idx {
                v[from..from + len].to_vec()
            } else {
                v.clone()
            };
            (*t, v)
        })
        .collect();
    OwnedCommand { cmd: c.cmd, attrs }
}

/// The smallest buffer that emission of `list` works through: the largest
/// command that may not be split, or a write's bytes before its data plus
/// one.
pub fn smallest_workable(profile: &Profile, list: &[OwnedCommand]) -> usize {
    list.iter()
        .map(|c| match model_layout(profile, c) {
            Some(l) => l.data_start + 1,
            None => c.encoded_len(profile).unwrap(),
        })
        .max()
        .unwrap_or(1)
}

/// Data bytes of the commands the rule splits.
pub fn data_bytes(profile: &Profile, list: &[OwnedCommand]) -> u64 {
    list.iter()
        .filter_map(|c| model_layout(profile, c))
        .map(|l| l.data_len as u64)
        .sum()
}

/// `out` decodes (every CRC and attribute layout valid) to `list` with some
/// writes cut into pieces: every command is the original, or a run of
/// pieces that covers its data in order, each with its offset advanced and
/// every other attribute as it was. Nothing follows END. Returns the
/// number of commands in `out`.
pub fn check_pieces(profile: &Profile, list: &[OwnedCommand], out: &[u8], what: &str) -> u64 {
    let (mut j, mut from, mut n) = (0usize, 0usize, 0u64);
    let mut it = Commands::new(out, *profile, 0);
    for c in it.by_ref() {
        let c = c.unwrap_or_else(|e| panic!("{what}: the output does not decode: {e}"));
        n += 1;
        let got = OwnedCommand::from(&c);
        let want = list
            .get(j)
            .unwrap_or_else(|| panic!("{what}: more commands out than in"));
        if from == 0 && &got == want {
            j += 1;
            continue;
        }
        let Some(l) = model_layout(profile, want) else {
            panic!("{what}: command {j} changed, and it may not be split: {got:?} vs {want:?}");
        };
        let len = got.attrs.get(l.data_idx).map_or(0, |a| a.1.len());
        assert!(
            len >= 1 && from + len <= l.data_len && got.attrs.len() == want.attrs.len(),
            "{what}: not a piece of command {j} at data byte {from}: {got:?}"
        );
        // Compared in place: `piece()` would copy the whole data each time.
        assert_eq!(got.cmd, want.cmd, "{what}: piece of command {j}");
        for (i, ((tg, vg), (tw, vw))) in got.attrs.iter().zip(&want.attrs).enumerate() {
            let expect: &[u8] = if i == l.offset_idx {
                &(l.position + from as u64).to_le_bytes()
            } else if i == l.data_idx {
                &vw[from..from + len]
            } else {
                vw
            };
            assert!(
                tg == tw && vg[..] == expect[..],
                "{what}: piece of command {j} at data byte {from}: attribute {i} is {tg} {vg:?}"
            );
        }
        from += len;
        if from == l.data_len {
            from = 0;
            j += 1;
        }
    }
    assert_eq!(
        (j, from),
        (list.len(), 0),
        "{what}: the output stops inside the input"
    );
    assert!(it.remainder().is_empty(), "{what}: bytes after END");
    n
}
