//! The model both property tests build streams from: data commands and
//! others, then END, encoded with `proto_tlv::encode_command`, with what
//! each command's layout must be worked out independently of the crate.
#![allow(dead_code)]

use proptest::prelude::*;
use proto_checkpoint::{
    CommandsProducer, DataLayout, DataSplit, Emitter, Producer, Split, Unit, Units,
};
use proto_tlv::{decode_command, encode_command, AttrValue, CrcVariant, Profile, Value};

pub const WRITE: DataSplit = DataSplit {
    cmd: 15,
    offset_attr: 18,
    data_attr: 19,
    path_attr: Some(15),
};
pub const ID: [u8; 16] = *b"emitter-test-id!";
pub const END: u16 = 21;

pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        // A failure shrinks for at most this long (ms): cases are big.
        max_shrink_time: 30_000,
        ..ProptestConfig::default()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Cmd {
    /// Type 15: PATH (15), FILE_OFFSET (18, u64), DATA (19).
    Data {
        path: Vec<u8>,
        offset: u64,
        data: Vec<u8>,
    },
    /// Any other type but END, any attributes.
    Other {
        ty: u16,
        attrs: Vec<(u16, Vec<u8>)>,
    },
    End,
}

pub fn encode(profile: &Profile, c: &Cmd, out: &mut Vec<u8>) -> usize {
    let r = match c {
        Cmd::Data { path, offset, data } => encode_command(
            profile,
            WRITE.cmd,
            &[
                AttrValue::new(15, Value::Bytes(path)),
                AttrValue::new(18, Value::U64(*offset)),
                AttrValue::new(19, Value::Bytes(data)),
            ],
            out,
        ),
        Cmd::Other { ty, attrs } => {
            let attrs: Vec<_> = attrs
                .iter()
                .map(|(t, v)| AttrValue::new(*t, Value::Bytes(v)))
                .collect();
            encode_command(profile, *ty, &attrs, out)
        }
        Cmd::End => encode_command(profile, END, &[], out),
    };
    r.unwrap()
}

/// A stream and everything known about it.
#[derive(Clone, Debug)]
pub struct Model {
    pub profile: Profile,
    pub cmds: Vec<Cmd>,
    pub bytes: Vec<u8>,
    /// (offset, length) of each command in `bytes`.
    pub at: Vec<(usize, usize)>,
    /// The layout each command must have, worked out from the model.
    pub layouts: Vec<Option<DataLayout>>,
}

impl Model {
    pub fn new(profile: Profile, mut cmds: Vec<Cmd>) -> Model {
        let mut bytes = Vec::new();
        let mut at = Vec::new();
        let mut layouts = Vec::new();
        for c in &mut cmds {
            if let (Cmd::Other { attrs, .. }, Some(d)) = (&mut *c, profile.unbounded_data_attr) {
                // The unbounded data attribute must be last.
                if let Some(i) = attrs.iter().position(|(t, _)| *t == d) {
                    attrs.truncate(i + 1);
                }
            }
            let start = bytes.len();
            let len = encode(&profile, c, &mut bytes);
            at.push((start, len));
            layouts.push(match c {
                Cmd::Data { path, offset, data }
                    if !data.is_empty() && offset.checked_add(data.len() as u64).is_some() =>
                {
                    let data_hdr = if profile.unbounded_data_attr.is_some() {
                        2
                    } else {
                        4
                    };
                    Some(DataLayout {
                        data_start: 10 + 4 + path.len() + 4 + 8 + data_hdr,
                        data_len: data.len() as u64,
                        position: *offset,
                    })
                }
                _ => None,
            });
        }
        let m = Model {
            profile,
            cmds,
            bytes,
            at,
            layouts,
        };
        // The split rule agrees with the model.
        for k in 0..m.cmds.len() {
            assert_eq!(
                WRITE.layout(&m.profile, m.cmd(k)),
                m.layouts[k],
                "command {k}"
            );
        }
        m
    }

    pub fn n(&self) -> u64 {
        self.cmds.len() as u64
    }

    pub fn cmd(&self, k: usize) -> &[u8] {
        let (o, l) = self.at[k];
        &self.bytes[o..o + l]
    }

    /// The smallest buffer a command can go through.
    pub fn need(&self, k: usize) -> usize {
        self.layouts[k].map_or(self.at[k].1, |l| l.data_start + 1)
    }

    pub fn min_workable(&self) -> usize {
        (0..self.cmds.len()).map(|k| self.need(k)).max().unwrap()
    }

    pub fn data_bytes(&self) -> u64 {
        self.layouts.iter().flatten().map(|l| l.data_len).sum()
    }

    pub fn producer(&self, safe_every: u64) -> CommandsProducer<'_> {
        CommandsProducer::new(&self.bytes, self.profile, ID, safe_every)
    }

    pub fn emitter(&self, safe_every: u64) -> Emitter<CommandsProducer<'_>, DataSplit> {
        Emitter::new(self.producer(safe_every), WRITE).unwrap()
    }
}

/// Deterministic filler bytes (quick to make, and they shrink by length).
pub fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn profile() -> impl Strategy<Value = Profile> {
    (any::<bool>(), any::<bool>()).prop_map(|(v2, standard)| Profile {
        crc: if standard {
            CrcVariant::Standard
        } else {
            CrcVariant::BtrfsRaw
        },
        max_payload_len: if v2 { 1 << 18 } else { 1 << 16 },
        unbounded_data_attr: if v2 { Some(19) } else { None },
        end_cmd: END,
    })
}

pub fn command() -> impl Strategy<Value = Cmd> {
    let data = (
        proptest::collection::vec(any::<u8>(), 0..12),
        prop_oneof![
            8 => 0u64..1 << 40,
            1 => (u64::MAX - 6000)..=u64::MAX,
        ],
        prop_oneof![
            6 => 1usize..5000,
            1 => 0usize..4,
            1 => 4990usize..5000,
        ],
        any::<u64>(),
    )
        .prop_map(|(path, offset, len, seed)| Cmd::Data {
            path,
            offset,
            data: filler(len, seed),
        });
    let other = (
        (1u16..=20).prop_filter("not the data command", |t| *t != 15),
        proptest::collection::vec(
            (1u16..=30, proptest::collection::vec(any::<u8>(), 0..80)),
            0..5,
        ),
    )
        .prop_map(|(ty, attrs)| Cmd::Other { ty, attrs });
    prop_oneof![3 => data, 2 => other]
}

pub fn model(max_cmds: usize) -> impl Strategy<Value = Model> {
    (profile(), proptest::collection::vec(command(), 0..max_cmds)).prop_map(|(p, mut cmds)| {
        cmds.push(Cmd::End);
        Model::new(p, cmds)
    })
}

/// Splits bytes into whole, CRC-checked commands (no END needed).
pub fn commands_of<'b>(profile: &Profile, bytes: &'b [u8]) -> Vec<&'b [u8]> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let (_, n) = decode_command(&bytes[pos..], profile, out.len() as u64, pos as u64)
            .unwrap_or_else(|e| panic!("not whole valid commands: {e}"));
        out.push(&bytes[pos..pos + n]);
        pos += n;
    }
    out
}

/// Like [`model`], but data commands often continue the one before (same
/// path, the next offset): runs of data that a re-splitter may cut and
/// join anywhere.
pub fn model_with_runs(max_cmds: usize) -> impl Strategy<Value = Model> {
    let item = prop_oneof![
        3 => command().prop_map(Ok),
        2 => (1usize..3000, any::<u64>()).prop_map(Err),
    ];
    (profile(), proptest::collection::vec(item, 0..max_cmds)).prop_map(|(p, items)| {
        let mut cmds: Vec<Cmd> = Vec::new();
        for it in items {
            match it {
                Ok(c) => cmds.push(c),
                Err((len, seed)) => {
                    if let Some(Cmd::Data { path, offset, data }) = cmds.last() {
                        let next = offset.checked_add(data.len() as u64);
                        if let Some(next) = next.filter(|n| n.checked_add(len as u64).is_some()) {
                            let path = path.clone();
                            cmds.push(Cmd::Data {
                                path,
                                offset: next,
                                data: filler(len, seed),
                            });
                        }
                    }
                }
            }
        }
        cmds.push(Cmd::End);
        Model::new(p, cmds)
    })
}

/// A producer as the emitter sees another one: one that gives no runs of
/// commands (`runs` false: the emitter takes its units one at a time), or
/// one that gives runs but does not say where its safe points are
/// (`safe_points` left as the default: the emitter must then ask after
/// every unit).
pub struct Hidden<P> {
    pub inner: P,
    pub runs: bool,
}

/// `p`, giving no runs of commands.
pub fn one_at_a_time<P>(p: P) -> Hidden<P> {
    Hidden {
        inner: p,
        runs: false,
    }
}

/// `p`, giving runs but not its safe points.
pub fn runs_without_safe_points<P>(p: P) -> Hidden<P> {
    Hidden {
        inner: p,
        runs: true,
    }
}

impl<P: Producer> Units for Hidden<P> {
    type Error = P::Error;
    fn current(&mut self) -> Result<Option<Unit<'_>>, P::Error> {
        self.inner.current()
    }
    fn advance(&mut self) -> Result<(), P::Error> {
        self.inner.advance()
    }
}

impl<P: Producer> Producer for Hidden<P> {
    fn safe_point(&mut self) -> Result<bool, P::Error> {
        self.inner.safe_point()
    }
    fn save_state(&mut self, state: &mut Vec<u8>) -> Result<(), P::Error> {
        self.inner.save_state(state)
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), P::Error> {
        self.inner.restore(state)
    }
    fn position(&self) -> u64 {
        self.inner.position()
    }
    fn stream_id(&self) -> [u8; 16] {
        self.inner.stream_id()
    }
    fn commands_ahead(&mut self, max: usize) -> Result<Option<Unit<'_>>, P::Error> {
        if !self.runs {
            return Ok(None);
        }
        self.inner.commands_ahead(max)
    }
    fn advance_commands(&mut self, units: u64, bytes: u64) -> Result<(), P::Error> {
        self.inner.advance_commands(units, bytes)
    }
}
