//! `session_pair`: a native stream carried between the two sans-IO sides
//! of a session (`proto_session::send::Sending` and
//! `proto_session::receive::Receiving`), in memory, under faults the input
//! chooses: connections that drop, a sender that forgets its transfer
//! between connections (a restart: it resumes from the receiver's token),
//! reads cut to any size, windows and token intervals of any size, and one
//! byte damaged in transit. The harness is `proto-session/tests/support/pair.rs`,
//! shared with the test `sans_io_pair`.
//!
//! Input (missing bytes read as 0): byte 0: bit 0 the stream
//! (`testdata/native/data-v1.stream`, three data commands of 100 to 150 KB,
//! or `sample-v1.stream`), bit 1 damage on, bit 2 the sender compresses
//! (zstd DATA frames); u32 window bytes; u8 window
//! messages; u32 token interval; u8 safe-point interval; u16 read size
//! (0: whole); u8 forget mask (bit i: forget before connection i mod 8);
//! u32 damage offset; then up to 8 u32 drop points (each raised to the
//! harness's minimum, so a connection carries the handshake and a unit).
//!
//! Properties:
//! - no panic; the output is always a prefix of the stream;
//! - without damage: the transfer completes, byte-identical, with no error
//!   and no duplicate delivered, in at most 200 connections;
//! - with damage: it completes byte-identical, or ends with a typed error
//!   (a frame, header or unit refused, or both sides waiting on a frame
//!   whose length was damaged) and the output a prefix.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use proto_session::replay::Limits;
use proto_session::SessionError;

#[path = "../../proto-session/tests/support/pair.rs"]
#[allow(dead_code)]
mod pair;

const DATA: &[u8] = include_bytes!("../../testdata/native/data-v1.stream");
const SAMPLE: &[u8] = include_bytes!("../../testdata/native/sample-v1.stream");

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let n = N.min(self.0.len());
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
}

target!(|data: &[u8]| {
    let mut input = Input(data);
    let mode = input.u8();
    let stream = if mode & 1 == 0 { DATA } else { SAMPLE };
    let damage = mode & 2 != 0;
    let compress = mode & 4 != 0;
    let window = Limits {
        max_bytes: (input.u32() as usize % (2 << 20)).max(1),
        max_messages: (input.u8() as usize % 64).max(1),
    };
    let token_every = u64::from(input.u32());
    let safe_every = u64::from(input.u8() % 4).max(1);
    let chunk = match input.u16() {
        0 => usize::MAX,
        n => n as usize,
    };
    let mask = input.u8();
    let flip = u64::from(input.u32());
    let mut drops = Vec::new();
    while !input.0.is_empty() && drops.len() < 8 {
        drops.push(u64::from(input.u32()));
    }
    let plan = pair::Plan {
        window,
        token_every,
        safe_every,
        drops,
        forget: (0..8).map(|i| mask & (1 << i) != 0).collect(),
        chunk,
        flip: damage.then_some(flip % (stream.len() as u64 + 4096)),
        compress,
        receiver_zstd: true,
    };
    let o = pair::run(stream, &plan, 200);
    assert!(stream.starts_with(&o.out), "output not a prefix: {plan:?}");
    match &o.error {
        None => {
            assert!(o.out == stream, "incomplete without an error: {plan:?}");
            assert_eq!(o.received.duplicates, 0, "{plan:?}");
        }
        Some(e) if damage => {
            assert!(
                matches!(
                    e,
                    SessionError::Frame(_)
                        | SessionError::Header(_)
                        | SessionError::Unit { .. }
                        | SessionError::Compressed { .. }
                        | SessionError::Closed { .. }
                ),
                "damage at {flip}: {e:?}"
            );
            assert!(!e.to_string().is_empty());
        }
        Some(e) => panic!("no damage, yet {e}: {plan:?}"),
    }
});
