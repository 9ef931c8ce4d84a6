//! Both sans-IO sides of a session wired to each other in memory, with no
//! socket and no clock: a native stream carried from a `Sending` to a
//! `Receiving` through connections that drop, a sender that forgets its
//! transfer between connections, reads cut to any size, and bytes damaged
//! in transit. Shared by `tests/sans_io_pair.rs` and the `session_pair` fuzz target
//! (`fuzz/fuzz_targets/session_pair.rs` includes this file).

use std::sync::Arc;

use proto_checkpoint::native::{NativeFormat, PRSTREAM};
use proto_checkpoint::Format;
use proto_header::{advertised, Endian, V1Header};
use proto_session::framer::Framer;
use proto_session::handshake::{Accept, Handshake, Select};
use proto_session::offer::{BoxSource, Offer, Open};
use proto_session::receive::{ReceiveStats, Receiving};
use proto_session::replay::Limits;
use proto_session::send::{SendConfig, SendStats, Sending, Step};
use proto_session::wire::{
    FEATURE_DEPS, FEATURE_REPLAY, FEATURE_ZSTD, KNOWN_FEATURES, SESSION_VERSIONS,
};
use proto_session::SessionError;

/// How the connections misbehave.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The sender's window.
    pub window: Limits,
    /// A token after at least this many payload bytes.
    pub token_every: u64,
    /// A safe point every this many units.
    pub safe_every: u64,
    /// Connection `i` drops after the sender's side delivered
    /// `drops[i % len]` bytes to the receiver (0: never drops); empty:
    /// never drops. Values below [`Plan::min_drop`] are raised to it, so
    /// every connection can carry the handshake and a unit.
    pub drops: Vec<u64>,
    /// Before connection `i` (after the first) the sender forgets its
    /// transfer when `forget[i % len]`; empty: never.
    pub forget: Vec<bool>,
    /// The most bytes one delivery moves (at least 1).
    pub chunk: usize,
    /// Damage: flip the byte at this offset of the sender's output on the
    /// first connection.
    pub flip: Option<u64>,
    /// The sender is asked to compress DATA frames (`SendConfig::compress`).
    pub compress: bool,
    /// The receiver advertises `FEATURE_ZSTD` (when this build knows it).
    pub receiver_zstd: bool,
}

impl Plan {
    /// No fault at all.
    pub fn clean() -> Plan {
        Plan {
            window: Limits {
                max_bytes: 1 << 20,
                max_messages: 64,
            },
            token_every: 64 << 10,
            safe_every: 1,
            drops: Vec::new(),
            forget: Vec::new(),
            chunk: usize::MAX,
            flip: None,
            compress: false,
            receiver_zstd: true,
        }
    }

    /// The least a connection carries before it may drop: the handshake
    /// and the largest unit with its frames and tokens.
    pub fn min_drop(largest: usize) -> u64 {
        largest as u64 + 8192
    }
}

/// What happened.
#[derive(Debug)]
pub struct Outcome {
    /// What the receiver wrote.
    pub out: Vec<u8>,
    /// Connections used.
    pub connections: u64,
    /// The sender's figures.
    pub sent: SendStats,
    /// The receiver's figures.
    pub received: ReceiveStats,
    /// Times the sender forgot its transfer.
    pub forgot: u64,
    /// The error that ended the transfer, if one did (only damage may
    /// cause one).
    pub error: Option<SessionError>,
}

enum SenderState {
    Handshake(Handshake),
    Select,
    Data,
    Done,
}

enum ReceiverState {
    Handshake(Handshake),
    Accept,
    Data,
}

/// Carries `stream` (a native `PRSTREAM` stream) as `plan` says until the
/// receiver has it all, a side fails, or `max_connections` are used.
pub fn run(stream: &[u8], plan: &Plan, max_connections: u64) -> Outcome {
    let stream: Arc<[u8]> = stream.into();
    let safe_every = plan.safe_every.max(1);
    let source = stream.clone();
    let open: Open = Box::new(move || Ok(Box::new(source.clone()) as BoxSource));
    let mut arm = Offer::new(PRSTREAM, open, safe_every).expect("a valid native stream");
    let (contexts, largest) = (arm.contexts(), arm.max_unit());
    let features = advertised(KNOWN_FEATURES, FEATURE_DEPS);
    let sender_hello = V1Header {
        byte_order: Endian::Little,
        features_supported: features,
        features_required: FEATURE_REPLAY,
        stream_id: [7; 16],
        contexts,
    };
    let receiver_features = if plan.receiver_zstd {
        features
    } else {
        features & !FEATURE_ZSTD
    };
    let receiver_hello = V1Header {
        contexts: Vec::new(),
        stream_id: [0; 16],
        features_supported: receiver_features,
        ..sender_hello.clone()
    };
    let mut sending = Sending::new(
        plan.window,
        SendConfig {
            token_every: plan.token_every,
            max_unit: largest,
            unit_crc: Some(proto_tlv::CrcVariant::Standard),
            compress: plan.compress,
        },
    );
    let check = Box::new(<NativeFormat as Format>::validator(&PRSTREAM));
    let mut receiving = Receiving::new(check);
    let mut out = Vec::new();
    let mut forgot = 0;
    let mut connections = 0;
    let chunk = plan.chunk.max(1);
    let min_drop = Plan::min_drop(largest);

    while connections < max_connections && !receiving.done() {
        let n = connections;
        connections += 1;
        if n > 0 && !plan.forget.is_empty() && plan.forget[n as usize % plan.forget.len()] {
            sending.forget();
            forgot += 1;
        }
        let drop_after = match plan.drops.get(n as usize % plan.drops.len().max(1)) {
            None | Some(0) => u64::MAX,
            Some(&d) => d.max(min_drop),
        };
        let mut instance = [0u8; 16];
        instance[..8].copy_from_slice(&(n + 1).to_le_bytes());

        if let Err(e) = receiving.connect() {
            return outcome(out, connections, &sending, &receiving, forgot, Some(e));
        }
        let (mut fs, mut fr) = (Framer::new(), Framer::new());
        let mut s = SenderState::Handshake(Handshake::new(
            SESSION_VERSIONS,
            FEATURE_REPLAY,
            sender_hello.clone(),
        ));
        let mut r = ReceiverState::Handshake(Handshake::new(
            SESSION_VERSIONS,
            FEATURE_REPLAY,
            receiver_hello.clone(),
        ));
        // The bytes in flight each way, and what was delivered.
        let (mut to_r, mut to_s) = (Wire::default(), Wire::default());
        let mut delivered = 0u64;
        loop {
            // Each side runs until it needs the other's bytes.
            let r_s = step_sender(&mut s, &mut sending, &mut fs, &mut arm, instance, &mut to_r);
            drain(&mut fs, &mut to_r);
            if let Err(e) = r_s {
                // A refusal goes to the peer; then the transfer ends.
                fs.refuse(&e);
                return outcome(out, connections, &sending, &receiving, forgot, Some(e));
            }
            let r_r = step_receiver(&mut r, &mut receiving, &mut fr, &mut out);
            drain(&mut fr, &mut to_s);
            if let Err(e) = r_r {
                fr.refuse(&e);
                return outcome(out, connections, &sending, &receiving, forgot, Some(e));
            }
            if receiving.done() {
                break;
            }
            if to_r.is_empty() && to_s.is_empty() {
                // Both sides wait for bytes that will not come: a stall.
                let e = SessionError::Closed {
                    during: "the simulation (both sides wait)",
                    offset: delivered,
                };
                return outcome(out, connections, &sending, &receiving, forgot, Some(e));
            }
            // The wire: up to `chunk` bytes each way, until the drop.
            let room = drop_after.saturating_sub(delivered);
            let k = to_r
                .len()
                .min(chunk)
                .min(usize::try_from(room).unwrap_or(usize::MAX));
            if let Some(at) = plan.flip.filter(|_| n == 0) {
                // Damage in transit: the byte at `at` of this connection.
                if at >= delivered && at < delivered + k as u64 {
                    to_r[(at - delivered) as usize] ^= 0x40;
                }
            }
            feed(&mut fr, &to_r[..k]);
            consume(&mut to_r, k);
            delivered += k as u64;
            let k2 = to_s.len().min(chunk);
            feed(&mut fs, &to_s[..k2]);
            consume(&mut to_s, k2);
            if delivered >= drop_after {
                // The connection drops: what each side received before
                // it is still read; what either writes now is lost.
                let r_r = step_receiver(&mut r, &mut receiving, &mut fr, &mut out);
                let mut lost = Wire::default();
                let r_s = step_sender(&mut s, &mut sending, &mut fs, &mut arm, instance, &mut lost);
                if let Some(e) = r_r.err().or(r_s.err()) {
                    return outcome(out, connections, &sending, &receiving, forgot, Some(e));
                }
                break;
            }
        }
    }
    outcome(out, connections, &sending, &receiving, forgot, None)
}

fn outcome(
    out: Vec<u8>,
    connections: u64,
    sending: &Sending,
    receiving: &Receiving,
    forgot: u64,
    error: Option<SessionError>,
) -> Outcome {
    Outcome {
        out,
        connections,
        sent: sending.stats(),
        received: receiving.stats(),
        forgot,
        error,
    }
}

/// Bytes in flight one way: a buffer and how much of it was delivered (so
/// that delivering a byte at a time costs no copy of the rest).
#[derive(Default)]
struct Wire {
    buf: Vec<u8>,
    at: usize,
}

impl Wire {
    fn len(&self) -> usize {
        self.buf.len() - self.at
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

impl std::ops::Index<std::ops::RangeTo<usize>> for Wire {
    type Output = [u8];
    fn index(&self, r: std::ops::RangeTo<usize>) -> &[u8] {
        &self.buf[self.at..self.at + r.end]
    }
}

impl std::ops::IndexMut<usize> for Wire {
    fn index_mut(&mut self, i: usize) -> &mut u8 {
        &mut self.buf[self.at + i]
    }
}

impl std::ops::Index<usize> for Wire {
    type Output = u8;
    fn index(&self, i: usize) -> &u8 {
        &self.buf[self.at + i]
    }
}

/// `k` bytes of the wire were delivered.
fn consume(w: &mut Wire, k: usize) {
    w.at += k;
    if w.at == w.buf.len() {
        w.buf.clear();
        w.at = 0;
    } else if w.at > (1 << 20) && w.at * 2 > w.buf.len() {
        w.buf.drain(..w.at);
        w.at = 0;
    }
}

/// Moves a framer's output onto the wire.
fn drain(f: &mut Framer, wire: &mut Wire) -> usize {
    let n = f.pending().len();
    wire.extend_from_slice(f.pending());
    f.output_sent(n);
    n
}

/// Delivers bytes to a framer.
fn feed(f: &mut Framer, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let buf = f.recv_buf();
        let n = buf.len().min(bytes.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        f.received(n);
        bytes = &bytes[n..];
    }
}

fn step_sender(
    s: &mut SenderState,
    sending: &mut Sending,
    f: &mut Framer,
    arm: &mut dyn proto_session::send::Arm,
    instance: [u8; 16],
    wire: &mut Wire,
) -> Result<(), SessionError> {
    loop {
        match s {
            SenderState::Handshake(hs) => match hs.poll(f)? {
                Some(est) => {
                    sending.negotiated(est.peer.features_supported);
                    *s = SenderState::Select;
                }
                None => return Ok(()),
            },
            SenderState::Select => {
                let Some(at) = f.next_frame("in the handshake (SELECT)")? else {
                    return Ok(());
                };
                let c = f.frame(at)?;
                let select = Select::read(&c, &[1])?;
                let accept = sending.resume(&select, instance, arm)?;
                accept.write(f)?;
                f.handshake_done();
                *s = SenderState::Data;
            }
            SenderState::Data => match sending.poll(f)? {
                Step::Data { body, .. } => {
                    if let Some(b) = body {
                        drain(f, wire);
                        wire.extend_from_slice(b);
                    }
                }
                Step::Wait => {
                    let Some(at) = f.next_frame("waiting for an ACK")? else {
                        return Ok(());
                    };
                    let c = f.frame(at)?;
                    sending.handle(&c)?;
                }
                Step::Done { .. } => {
                    sending.forget();
                    *s = SenderState::Done;
                }
            },
            SenderState::Done => return Ok(()),
        }
    }
}

fn step_receiver(
    r: &mut ReceiverState,
    receiving: &mut Receiving,
    f: &mut Framer,
    out: &mut Vec<u8>,
) -> Result<(), SessionError> {
    loop {
        match r {
            ReceiverState::Handshake(hs) => match hs.poll(f)? {
                Some(est) => {
                    let ids = est.peer.contexts.iter().map(|c| c.id).collect();
                    receiving.select(ids).write(f)?;
                    *r = ReceiverState::Accept;
                }
                None => return Ok(()),
            },
            ReceiverState::Accept => {
                let Some(at) = f.next_frame("in the handshake (ACCEPT)")? else {
                    return Ok(());
                };
                let a = Accept::read(&f.frame(at)?)?;
                receiving.accepted(&a)?;
                f.handshake_done();
                *r = ReceiverState::Data;
            }
            ReceiverState::Data => {
                let Some(at) = f.next_frame("in the transfer")? else {
                    return Ok(());
                };
                let crc = receiving.unit_crc();
                let action = receiving.handle(f.incoming(at, crc)?)?;
                if let Some(units) = action.deliver {
                    out.extend_from_slice(units.bytes());
                }
                if action.refused {
                    return Err(receiving.take_refusal().expect("the refusal"));
                }
                let (ack, done) = (action.ack, action.done);
                if ack {
                    // The output (memory) is as durable as it gets.
                    receiving.durable(f)?;
                }
                if done {
                    return Ok(());
                }
            }
        }
    }
}

/// A native stream of `n` small commands (a few dozen bytes each).
pub fn small_units(n: usize) -> Vec<u8> {
    units_with_bodies((0..n).map(|i| format!("unit {i} {}", "x".repeat(i % 37)).into_bytes()))
}

/// A native stream of one command per body (its index, then the body).
pub fn units_with_bodies(bodies: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    use proto_checkpoint::native::Writer;
    use proto_header::{Endian, V1Header, KIT_VERSIONS};
    use proto_tlv::{AttrValue, Value};

    let header = V1Header {
        byte_order: Endian::Little,
        features_supported: 0,
        features_required: 0,
        stream_id: *b"small units.....",
        contexts: Vec::new(),
    };
    let mut w = Writer::new(Vec::new(), KIT_VERSIONS.entry(1).unwrap(), 1, &header).unwrap();
    for (i, body) in bodies.into_iter().enumerate() {
        w.write_command(
            1,
            &[
                AttrValue::new(1, Value::U64(i as u64)),
                AttrValue::new(2, Value::Bytes(&body)),
            ],
        )
        .unwrap();
    }
    w.finish().unwrap()
}
