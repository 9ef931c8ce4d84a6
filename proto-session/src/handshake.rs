//! The handshake, sans-IO, one for both roles, and the frames that end it.
//!
//! 1. Both peers send the fixed header ([`SESSION_FORMAT`]: their version
//!    range as `version` and `compat_version`), and each picks the highest
//!    version in both ranges ([`negotiate_two_way`]).
//! 2. Both send `HELLO` with the version header of that version
//!    ([`V1Header`]: features supported and required, stream id, and for the
//!    sender the contexts it can produce). A required feature the peer does
//!    not know is refused, naming the bits. [`Handshake`] does 1 and 2.
//! 3. The receiver sends [`Select`]: the contexts it wants, the last seq it
//!    received, the sender instance it received it from, and its latest
//!    checkpoint token.
//! 4. The sender answers [`Accept`] (its instance, window, how it resumed
//!    and what it will send again) or `REFUSE`.
//!
//! ```
//! use proto_header::{Endian, V1Header};
//! use proto_session::framer::Framer;
//! use proto_session::handshake::Handshake;
//! use proto_session::wire::{FEATURE_REPLAY, SESSION_VERSIONS};
//!
//! let hello = |features| V1Header {
//!     byte_order: Endian::Little,
//!     features_supported: features,
//!     features_required: FEATURE_REPLAY,
//!     stream_id: [0; 16],
//!     contexts: Vec::new(),
//! };
//! let (mut fa, mut fb) = (Framer::new(), Framer::new());
//! let mut a = Handshake::new(SESSION_VERSIONS, FEATURE_REPLAY, hello(0b11));
//! let mut b = Handshake::new(SESSION_VERSIONS, FEATURE_REPLAY, hello(0b1));
//! let (mut done_a, mut done_b) = (None, None);
//! while done_a.is_none() || done_b.is_none() {
//!     if done_a.is_none() {
//!         done_a = a.poll(&mut fa).unwrap();
//!     }
//!     if done_b.is_none() {
//!         done_b = b.poll(&mut fb).unwrap();
//!     }
//!     // The wire: what each wrote, the other receives.
//!     carry(&mut fa, &mut fb);
//!     carry(&mut fb, &mut fa);
//! }
//! assert_eq!(done_a.unwrap().peer.features_supported, 0b1);
//! assert_eq!(done_b.unwrap().version, 1);
//!
//! fn carry(from: &mut Framer, to: &mut Framer) {
//!     let bytes = from.pending().to_vec();
//!     from.output_sent(bytes.len());
//!     let mut rest = &bytes[..];
//!     while !rest.is_empty() {
//!         let buf = to.recv_buf();
//!         let n = buf.len().min(rest.len());
//!         buf[..n].copy_from_slice(&rest[..n]);
//!         to.received(n);
//!         rest = &rest[n..];
//!     }
//! }
//! ```

use alloc::string::String;
use alloc::vec::Vec;
use alloc::{format, vec};

use proto_header::{
    check_required, encode_selection, negotiate_two_way, parse_selection, Context, ReadOptions,
    V1Header, VersionRange, KIT_VERSIONS,
};
use proto_tlv::{AttrValue, Command, Value};

use crate::error::SessionError;
use crate::framer::{expect, u64_attr, Framer};
use crate::replay::{Limits, Resend};
use crate::wire::{attr, frame, SESSION_FORMAT};

/// Both peers' first two steps: fixed headers, version negotiation, HELLO
/// with features, the required-feature check.
#[derive(Clone, Debug)]
pub struct Handshake {
    versions: VersionRange,
    required: u64,
    ours: V1Header,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    Fixed,
    Hello { version: u32 },
    Done,
}

/// A completed [`Handshake`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Established {
    /// The session version negotiated.
    pub version: u32,
    /// The peer's version header (its features and contexts).
    pub peer: V1Header,
}

impl Handshake {
    /// Offers `versions`, requires the peer to support `required`, and
    /// sends `ours` (its `features_supported` as advertised, dependencies
    /// applied) in HELLO.
    pub fn new(versions: VersionRange, required: u64, ours: V1Header) -> Self {
        Handshake {
            versions,
            required,
            ours,
            state: State::Start,
        }
    }

    /// Writes what is due into `f`'s output and reads what arrived:
    /// `Ok(None)` while it needs the peer's bytes (send the output, then
    /// feed `f`), the peer's version header once both HELLOs are through.
    /// After that, further calls return `Ok(None)` and do nothing.
    pub fn poll(&mut self, f: &mut Framer) -> Result<Option<Established>, SessionError> {
        loop {
            match self.state {
                State::Start => {
                    f.write_fixed(&SESSION_FORMAT, self.versions);
                    self.state = State::Fixed;
                }
                State::Fixed => {
                    let Some(theirs) = f.fixed(&SESSION_FORMAT)? else {
                        return Ok(None);
                    };
                    let version = negotiate_two_way(self.versions, theirs.range())?;
                    let mut body = Vec::new();
                    KIT_VERSIONS.entry(version)?.write(&self.ours, &mut body)?;
                    f.write_frame(
                        frame::HELLO,
                        &[AttrValue::new(attr::BODY, Value::Bytes(&body))],
                    )?;
                    self.state = State::Hello { version };
                }
                State::Hello { version } => {
                    let Some(at) = f.next_frame("in the handshake (HELLO)")? else {
                        return Ok(None);
                    };
                    let c = f.frame(at)?;
                    expect(&c, frame::HELLO)?;
                    let b = c.require(attr::BODY)?;
                    let opts = ReadOptions {
                        known_features: self.ours.features_supported,
                    };
                    let (peer, _) =
                        KIT_VERSIONS
                            .entry(version)?
                            .read(b.value(), b.offset(), &opts)?;
                    check_required(self.required, peer.features_supported, b.offset())?;
                    self.state = State::Done;
                    return Ok(Some(Established { version, peer }));
                }
                State::Done => return Ok(None),
            }
        }
    }
}

/// The ids of the contexts `wanted` among those `offered`, each named by
/// its name or its id; all of them when none is named. A name that is
/// neither is [`SessionError::UnknownContext`], listing what was offered.
pub fn resolve_contexts(offered: &[Context], wanted: &[String]) -> Result<Vec<u32>, SessionError> {
    if wanted.is_empty() {
        return Ok(offered.iter().map(|c| c.id).collect());
    }
    wanted
        .iter()
        .map(|name| {
            if let Some(c) = offered.iter().find(|c| &c.name == name) {
                return Ok(c.id);
            }
            name.parse::<u32>()
                .map_err(|_| SessionError::UnknownContext {
                    name: name.clone(),
                    offered: offered
                        .iter()
                        .map(|c| format!("{} ({})", c.name, c.id))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        })
        .collect()
}

/// SELECT: the receiver's context selection and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Select<'a> {
    /// The context ids wanted (sorted when read).
    pub contexts: Vec<u32>,
    /// The last seq received.
    pub received: u64,
    /// The sender instance it was received from (zero: none yet).
    pub instance: [u8; 16],
    /// The receiver's latest checkpoint token.
    pub token: Option<&'a [u8]>,
}

impl<'a> Select<'a> {
    /// Writes the frame.
    pub fn write(&self, f: &mut Framer) -> Result<(), SessionError> {
        let mut selection = Vec::new();
        encode_selection(&self.contexts, &mut selection)?;
        let mut attrs = vec![
            AttrValue::new(attr::SELECTION, Value::Bytes(&selection)),
            AttrValue::new(attr::RECEIVED, Value::U64(self.received)),
            AttrValue::new(attr::INSTANCE, Value::Uuid(self.instance)),
        ];
        if let Some(t) = self.token {
            attrs.push(AttrValue::new(attr::TOKEN, Value::Bytes(t)));
        }
        f.write_frame(frame::SELECT, &attrs)
    }

    /// Reads the frame, checking the selection against the context ids the
    /// sender offered.
    pub fn read(c: &Command<'a>, offered: &[u32]) -> Result<Select<'a>, SessionError> {
        expect(c, frame::SELECT)?;
        let s = c.require(attr::SELECTION)?;
        let (mut contexts, _) = parse_selection(s.value(), s.offset(), offered)?;
        contexts.sort_unstable();
        Ok(Select {
            contexts,
            received: u64_attr(c, attr::RECEIVED)?,
            instance: c.require(attr::INSTANCE)?.as_uuid()?,
            token: c.attr(attr::TOKEN).map(|a| a.value()),
        })
    }
}

/// ACCEPT: the sender's answer to [`Select`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accept {
    /// The sender instance (the receiver states it next time).
    pub instance: [u8; 16],
    /// How the transfer resumed ([`crate::wire::Resumed`] as a u8; a value
    /// this implementation does not know is kept).
    pub resumed: u8,
    /// The next seq the sender sends.
    pub next: u64,
    /// The sender's window.
    pub window: Limits,
    /// What the sender will send again.
    pub resend: Resend,
}

impl Accept {
    /// Writes the frame.
    pub fn write(&self, f: &mut Framer) -> Result<(), SessionError> {
        f.write_frame(
            frame::ACCEPT,
            &[
                AttrValue::new(attr::INSTANCE, Value::Uuid(self.instance)),
                AttrValue::new(attr::RESUMED, Value::U8(self.resumed)),
                AttrValue::new(attr::SEQ, Value::U64(self.next)),
                AttrValue::new(attr::WINDOW_BYTES, Value::U64(self.window.max_bytes as u64)),
                AttrValue::new(
                    attr::WINDOW_MESSAGES,
                    Value::U64(self.window.max_messages as u64),
                ),
                AttrValue::new(attr::RESEND_MESSAGES, Value::U64(self.resend.messages)),
                AttrValue::new(attr::RESEND_BYTES, Value::U64(self.resend.bytes)),
            ],
        )
    }

    /// Reads the frame.
    pub fn read(c: &Command<'_>) -> Result<Accept, SessionError> {
        expect(c, frame::ACCEPT)?;
        let size = |ty| u64_attr(c, ty).map(|v| usize::try_from(v).unwrap_or(usize::MAX));
        Ok(Accept {
            instance: c.require(attr::INSTANCE)?.as_uuid()?,
            resumed: c.require(attr::RESUMED)?.as_u8()?,
            next: u64_attr(c, attr::SEQ)?,
            window: Limits {
                max_bytes: size(attr::WINDOW_BYTES)?,
                max_messages: size(attr::WINDOW_MESSAGES)?,
            },
            resend: Resend {
                messages: u64_attr(c, attr::RESEND_MESSAGES)?,
                bytes: u64_attr(c, attr::RESEND_BYTES)?,
                dropped: 0,
            },
        })
    }
}
