//! `session_replay`: `proto_session::replay`'s `Sender` and
//! `Receiver` over a simulated link, driven by arbitrary operations, against
//! a model written here from the module's documentation.
//!
//! Input: limits (bytes up to 64 KiB, 0 included; messages up to 16, 0
//! included), the seq before the first message, and a list of operations:
//! push a message (by `push` or `push_with`, some writes failing), transmit,
//! deliver, duplicate an old frame, skip a frame, disconnect (frames and
//! acks in flight lost) and reconnect, mark durable (any seq), send and
//! deliver acks, restart the receiver from its durable seq, accept any seq,
//! ack or reconnect with any claim.
//!
//! Properties:
//! - every operation succeeds or fails exactly as the model says (push:
//!   `WindowFull` exactly when the window holds `max_messages` messages or
//!   `max_bytes` bytes, both at least 1; ack: `FromTheFuture` exactly past
//!   the last seq sent; reconnect: `PeerRegressed` below the acknowledged
//!   seq, else `FromTheFuture` past the last sent; accept: `Deliver` for the
//!   next seq, `Duplicate` at or below the last received, else `Gap`;
//!   `mark_durable`: `DurableAhead` past the last received), with the
//!   fields the model says, and a refused operation changes nothing;
//! - after every operation both sides show the model's state: held
//!   messages and bytes, acked, sent, next seq, resent counts, room, last
//!   received, durable, the ack to send; the window never holds more than
//!   `max_messages` messages nor more than `max_bytes` plus one message;
//! - every frame transmitted carries the model's next seq and its bytes;
//!   the honest link only ever carries the next seq the receiver expects;
//!   a reconnect's `Resend` counts exactly the messages transmitted and not
//!   received by the peer, and their bytes;
//! - claims the sender may take but an honest peer would not make (acks or
//!   reconnects up to the last sent, seqs accepted ahead of the link) are
//!   tried on copies, checked, and the copy drained to the end;
//! - at the end the link runs until everything is acknowledged: the
//!   application has every message pushed exactly once, in order (a
//!   restarted receiver gets again what it had not made durable), and the
//!   window is empty. No operation panics.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use proto_session::replay::{Accept, Limits, Receiver, ReplayError, Resend, Sender};

/// Operations per input.
const MAX_OPS: usize = 2048;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Len {
    /// Up to 15 bytes (0 included).
    Tiny(u8),
    /// Up to 4 KiB.
    Small(u16),
    /// Up to 64 KiB (past the buffer's first 64 KiB).
    Large(u16),
}

impl Len {
    fn get(self) -> usize {
        match self {
            Len::Tiny(n) => usize::from(n % 16),
            Len::Small(n) => usize::from(n % 4097),
            Len::Large(n) => usize::from(n),
        }
    }
}

/// A seq claimed by a peer, relative to the sender's state or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Claim {
    FromSent(i16),
    FromAcked(i16),
    Any(u64),
}

impl Claim {
    fn get(self, tx: &Sender) -> u64 {
        let rel = |base: u64, d: i16| {
            if d < 0 {
                base.saturating_sub(u64::from(d.unsigned_abs()))
            } else {
                base.saturating_add(d as u64)
            }
        };
        match self {
            Claim::FromSent(d) => rel(tx.sent(), d),
            Claim::FromAcked(d) => rel(tx.acked(), d),
            Claim::Any(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Push(Len),
    /// `push_with` of `len + spare` bytes, writing `len`.
    PushWith(Len, u8),
    /// `push_with` whose write fails: nothing taken.
    PushFailing(Len),
    Transmit,
    Deliver,
    /// The link delivers an old frame again.
    Duplicate(u16),
    /// The link skips frames.
    Skip(u8),
    /// The connection drops, both sides reconnect (the receiver calling
    /// `reconnected` or not).
    Disconnect(bool),
    /// Durable up to a seq picked between durable and received.
    Durable(u16),
    /// `mark_durable` of any seq.
    DurableAny(u64),
    TakeAck,
    DeliverAck,
    /// The receiver restarts from its durable seq and reconnects.
    Restart(bool),
    /// `accept` of any seq, on a copy of the receiver.
    AcceptAny(u64),
    /// `ack` of a claim: on the sender when refused, else on a copy.
    Ack(Claim),
    /// `reconnect` with a claim: on the sender when refused, else on a copy.
    Reconnect(Claim),
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_bytes: u16,
    max_messages: u8,
    start: u64,
    ops: Vec<Op>,
}

/// Byte `j` of message `seq`.
fn byte(seq: u64, j: usize) -> u8 {
    (seq.wrapping_mul(0x9E37) as u8) ^ (j as u8).wrapping_mul(7) ^ (j >> 8) as u8
}

fn fill(seq: u64, b: &mut [u8]) {
    for (j, x) in b.iter_mut().enumerate() {
        *x = byte(seq, j);
    }
}

fn is_message(seq: u64, b: &[u8]) -> bool {
    b.iter().enumerate().all(|(j, &x)| x == byte(seq, j))
}

/// What the sender shows from outside (the next message read from a copy).
#[derive(Debug, PartialEq, Eq)]
struct TxView {
    acked: u64,
    next_seq: u64,
    sent: u64,
    unacked: (usize, usize),
    resent: (u64, u64),
    has_room: bool,
    limits: Limits,
    next: Option<(u64, Vec<u8>)>,
}

fn view(tx: &Sender) -> TxView {
    let mut c = tx.clone();
    TxView {
        acked: tx.acked(),
        next_seq: tx.next_seq(),
        sent: tx.sent(),
        unacked: tx.unacked(),
        resent: tx.resent(),
        has_room: tx.has_room(),
        limits: tx.limits(),
        next: c.next_to_send().map(|(s, b)| (s, b.to_vec())),
    }
}

/// The documented behaviour of both sides.
struct Model {
    max_bytes: usize,
    max_messages: usize,
    start: u64,
    /// Lengths of every message pushed: seq `start + 1 + i` at `i`.
    lens: Vec<usize>,
    acked: u64,
    /// The last seq transmitted.
    high: u64,
    /// The next seq to transmit.
    next: u64,
    resent: (u64, u64),
    received: u64,
    durable: u64,
    /// The last ack the receiver sent (or counts as sent).
    rx_acked: u64,
}

impl Model {
    fn len(&self, seq: u64) -> usize {
        self.lens[(seq - self.start - 1) as usize]
    }
    fn bytes(&self, from: u64, to: u64) -> usize {
        (from..=to).map(|s| self.len(s)).sum()
    }
    fn last(&self) -> u64 {
        self.start + self.lens.len() as u64
    }
    fn held(&self) -> (usize, usize) {
        (
            (self.last() - self.acked) as usize,
            self.bytes(self.acked + 1, self.last()),
        )
    }
    fn has_room(&self) -> bool {
        let (n, b) = self.held();
        n < self.max_messages && b < self.max_bytes
    }
    /// The sender after `ack(seq)` (`seq` at most `high`).
    fn ack(&mut self, seq: u64) {
        self.acked = self.acked.max(seq);
        self.next = self.next.max(self.acked + 1);
    }
    /// The sender transmits `next`.
    fn transmit(&mut self) -> u64 {
        let seq = self.next;
        if seq <= self.high {
            self.resent.0 += 1;
            self.resent.1 += self.len(seq) as u64;
        } else {
            self.high = seq;
        }
        self.next += 1;
        seq
    }
}

struct Sim {
    tx: Sender,
    rx: Receiver,
    m: Model,
    /// Seqs transmitted and not delivered (their bytes were checked when
    /// transmitted).
    link: VecDeque<u64>,
    acks: VecDeque<u64>,
    /// The seqs the application got (a restarted receiver's cut back to
    /// its durable seq).
    app: Vec<u64>,
}

impl Sim {
    fn check(&self) {
        let m = &self.m;
        let (n, b) = m.held();
        assert_eq!(self.tx.unacked(), (n, b), "unacked");
        assert!(n <= m.max_messages);
        if n > 0 {
            // All but the last were under the byte bound when it came.
            assert!(b - m.len(m.last()) < m.max_bytes, "{b} bytes held");
        }
        assert_eq!(self.tx.acked(), m.acked, "acked");
        assert_eq!(self.tx.sent(), m.high, "sent");
        assert_eq!(self.tx.next_seq(), m.last() + 1, "next_seq");
        assert_eq!(self.tx.resent(), m.resent, "resent");
        assert_eq!(self.tx.has_room(), m.has_room(), "has_room");
        assert_eq!(self.rx.last_received(), m.received, "last_received");
        assert_eq!(self.rx.durable(), m.durable, "durable");
    }

    fn push(&mut self, len: usize, spare: Option<usize>, failing: bool) {
        let room = self.m.has_room();
        let before = view(&self.tx);
        let seq = self.m.last() + 1;
        let r = if failing {
            self.tx
                .push_with(len, |b| {
                    b.fill(0xA5);
                    Err(())
                })
                .map(|r| {
                    assert_eq!(r, Err(()));
                    0
                })
        } else if let Some(spare) = spare {
            self.tx
                .push_with(len + spare, |b| {
                    fill(seq, &mut b[..len]);
                    b[len..].fill(0x5A);
                    Ok::<_, ()>(len)
                })
                .map(Result::unwrap)
        } else {
            let mut msg = vec![0; len];
            fill(seq, &mut msg);
            self.tx.push(&msg)
        };
        match r {
            Ok(_) if failing => {
                assert!(room);
                assert_eq!(view(&self.tx), before, "a failed write took something");
            }
            Ok(s) => {
                assert!(room, "pushed into a full window");
                assert_eq!(s, seq);
                self.m.lens.push(len);
            }
            Err(e) => {
                assert!(!room, "refused with room: {e}");
                let (messages, bytes) = before.unacked;
                assert_eq!(e, ReplayError::WindowFull { messages, bytes });
                assert_eq!(view(&self.tx), before, "a refused push changed it");
            }
        }
    }

    fn transmit(&mut self) {
        let got = self
            .tx
            .next_to_send()
            .map(|(s, b)| (s, is_message(s, b), b.len()));
        if self.m.next > self.m.last() {
            assert_eq!(got, None);
            return;
        }
        let seq = self.m.transmit();
        assert_eq!(got, Some((seq, true, self.m.len(seq))), "transmitted");
        self.link.push_back(seq);
    }

    fn deliver(&mut self) {
        let Some(seq) = self.link.pop_front() else {
            return;
        };
        // The honest link carries exactly the next seq expected.
        assert_eq!(seq, self.m.received + 1);
        assert_eq!(self.rx.accept(seq), Ok(Accept::Deliver));
        self.m.received = seq;
        self.app.push(seq);
    }

    fn duplicate(&mut self, k: u16) {
        let had = self.m.received - self.m.start;
        if had == 0 {
            return;
        }
        let seq = self.m.start + 1 + u64::from(k) % had;
        let before = format!("{:?}", self.rx);
        assert_eq!(self.rx.accept(seq), Ok(Accept::Duplicate));
        assert_eq!(format!("{:?}", self.rx), before);
    }

    fn skip(&mut self, k: u8) {
        let seq = match self.link.get(1 + usize::from(k % 4)) {
            Some(&s) => s,
            None => self.m.received + 2 + u64::from(k),
        };
        let before = format!("{:?}", self.rx);
        assert_eq!(
            self.rx.accept(seq),
            Err(ReplayError::Gap {
                expected: self.m.received + 1,
                got: seq
            })
        );
        assert_eq!(format!("{:?}", self.rx), before);
    }

    fn durable(&mut self, d: u64) {
        let before = format!("{:?}", self.rx);
        let r = self.rx.mark_durable(d);
        if d > self.m.received {
            assert_eq!(
                r,
                Err(ReplayError::DurableAhead {
                    durable: d,
                    received: self.m.received
                })
            );
            assert_eq!(format!("{:?}", self.rx), before);
        } else {
            assert_eq!(r, Ok(()));
            self.m.durable = self.m.durable.max(d);
        }
    }

    fn take_ack(&mut self) {
        let want = (self.m.durable > self.m.rx_acked).then_some(self.m.durable);
        assert_eq!(self.rx.take_ack(), want, "take_ack");
        if let Some(a) = want {
            self.m.rx_acked = a;
            self.acks.push_back(a);
        }
    }

    fn deliver_ack(&mut self) {
        if let Some(a) = self.acks.pop_front() {
            assert_eq!(self.tx.ack(a), Ok(()), "honest ack {a}");
            self.m.ack(a);
        }
    }

    /// The sender hears the receiver's last seq; the receiver maybe calls
    /// `reconnected`.
    fn reconnect(&mut self, reconnected: bool) {
        let peer = self.rx.last_received();
        let r = self.tx.reconnect(peer);
        let want = Resend {
            messages: self.m.high - peer,
            bytes: self.m.bytes(peer + 1, self.m.high) as u64,
            dropped: peer - self.m.acked,
        };
        assert_eq!(r, Ok(want), "reconnect({peer})");
        self.m.acked = peer;
        self.m.next = peer + 1;
        if reconnected {
            self.rx.reconnected();
            self.m.rx_acked = self.m.rx_acked.min(self.m.durable.saturating_sub(1));
        }
    }

    fn disconnect(&mut self, reconnected: bool) {
        self.link.clear();
        self.acks.clear();
        self.reconnect(reconnected);
    }

    fn restart(&mut self, reconnected: bool) {
        let d = self.m.durable;
        if d < self.m.acked {
            // The sender dropped what the peer had received at a reconnect;
            // a receiver restarted below that is refused.
            let before = view(&self.tx);
            assert_eq!(
                self.tx.reconnect(Receiver::new(d).last_received()),
                Err(ReplayError::PeerRegressed {
                    peer: d,
                    acked: self.m.acked
                })
            );
            assert_eq!(view(&self.tx), before);
            return;
        }
        self.link.clear();
        self.acks.clear();
        self.rx = Receiver::new(d);
        self.app.truncate((d - self.m.start) as usize);
        self.m.received = d;
        self.m.rx_acked = d;
        self.reconnect(reconnected);
    }

    fn accept_any(&mut self, seq: u64) {
        let mut rx = self.rx.clone();
        let r = rx.accept(seq);
        let m = &self.m;
        if seq <= m.received {
            assert_eq!(r, Ok(Accept::Duplicate));
            assert_eq!(rx.last_received(), m.received);
        } else if seq == m.received + 1 {
            assert_eq!(r, Ok(Accept::Deliver));
            assert_eq!(rx.last_received(), seq);
            // Delivered once: again, it is a duplicate.
            assert_eq!(rx.accept(seq), Ok(Accept::Duplicate));
        } else {
            assert_eq!(
                r,
                Err(ReplayError::Gap {
                    expected: m.received + 1,
                    got: seq
                })
            );
            assert_eq!(format!("{rx:?}"), format!("{:?}", self.rx));
        }
    }

    /// A copy of the sender after taking `seq` (acked..=high) as acked or
    /// as the peer's reconnect claim: the rest goes out in order, with its
    /// bytes, resends counted.
    fn drain_copy(&self, mut tx: Sender, seq: u64, mut next: u64) {
        let m = &self.m;
        assert_eq!(tx.acked(), seq);
        assert_eq!(
            tx.unacked(),
            ((m.last() - seq) as usize, m.bytes(seq + 1, m.last()))
        );
        let mut resent = m.resent;
        while let Some((s, b)) = tx.next_to_send() {
            assert_eq!(s, next);
            assert_eq!(b.len(), m.len(s));
            assert!(is_message(s, b));
            if s <= m.high {
                resent.0 += 1;
                resent.1 += b.len() as u64;
            }
            next += 1;
        }
        assert_eq!(next, m.last() + 1);
        assert_eq!(tx.resent(), resent);
    }

    fn ack_claim(&mut self, c: Claim) {
        let seq = c.get(&self.tx);
        if seq > self.m.high {
            let before = view(&self.tx);
            assert_eq!(
                self.tx.ack(seq),
                Err(ReplayError::FromTheFuture {
                    peer: seq,
                    sent: self.m.high
                })
            );
            assert_eq!(view(&self.tx), before);
            return;
        }
        let mut tx = self.tx.clone();
        assert_eq!(tx.ack(seq), Ok(()));
        let acked = self.m.acked.max(seq);
        self.drain_copy(tx, acked, self.m.next.max(acked + 1));
    }

    fn reconnect_claim(&mut self, c: Claim) {
        let seq = c.get(&self.tx);
        let m = &self.m;
        let err = if seq < m.acked {
            Some(ReplayError::PeerRegressed {
                peer: seq,
                acked: m.acked,
            })
        } else if seq > m.high {
            Some(ReplayError::FromTheFuture {
                peer: seq,
                sent: m.high,
            })
        } else {
            None
        };
        if let Some(e) = err {
            let before = view(&self.tx);
            assert_eq!(self.tx.reconnect(seq), Err(e));
            assert_eq!(view(&self.tx), before);
            return;
        }
        let mut tx = self.tx.clone();
        let want = Resend {
            messages: m.high - seq,
            bytes: m.bytes(seq + 1, m.high) as u64,
            dropped: seq - m.acked,
        };
        assert_eq!(tx.reconnect(seq), Ok(want));
        self.drain_copy(tx, seq, seq + 1);
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Push(l) => self.push(l.get(), None, false),
            Op::PushWith(l, spare) => self.push(l.get(), Some(usize::from(spare)), false),
            Op::PushFailing(l) => self.push(l.get(), None, true),
            Op::Transmit => self.transmit(),
            Op::Deliver => self.deliver(),
            Op::Duplicate(k) => self.duplicate(k),
            Op::Skip(k) => self.skip(k),
            Op::Disconnect(r) => self.disconnect(r),
            Op::Durable(k) => {
                let span = self.m.received - self.m.durable;
                self.durable(self.m.durable + u64::from(k) % (span + 1));
            }
            Op::DurableAny(d) => self.durable(d),
            Op::TakeAck => self.take_ack(),
            Op::DeliverAck => self.deliver_ack(),
            Op::Restart(r) => self.restart(r),
            Op::AcceptAny(s) => self.accept_any(s),
            Op::Ack(c) => self.ack_claim(c),
            Op::Reconnect(c) => self.reconnect_claim(c),
        }
        self.check();
    }
}

target!(|input: Input| {
    let limits = Limits {
        max_bytes: usize::from(input.max_bytes),
        max_messages: usize::from(input.max_messages % 17),
    };
    // Far from the end of u64: seqs are counted from here.
    let start = input.start >> 2;
    let mut sim = Sim {
        tx: Sender::new(limits, start),
        rx: Receiver::new(start),
        m: Model {
            max_bytes: limits.max_bytes.max(1),
            max_messages: limits.max_messages.max(1),
            start,
            lens: Vec::new(),
            acked: start,
            high: start,
            next: start + 1,
            resent: (0, 0),
            received: start,
            durable: start,
            rx_acked: start,
        },
        link: VecDeque::new(),
        acks: VecDeque::new(),
        app: Vec::new(),
    };
    assert_eq!(
        sim.tx.limits(),
        Limits {
            max_bytes: sim.m.max_bytes,
            max_messages: sim.m.max_messages,
        }
    );
    sim.check();
    for &op in input.ops.iter().take(MAX_OPS) {
        sim.step(op);
    }

    // The link works until everything pushed is acknowledged.
    let mut rounds = 0;
    while sim.m.acked < sim.m.last() {
        rounds += 1;
        assert!(rounds <= 4, "no progress");
        while sim.m.next <= sim.m.last() {
            sim.step(Op::Transmit);
        }
        while !sim.link.is_empty() {
            sim.step(Op::Deliver);
        }
        sim.durable(sim.m.received);
        sim.step(Op::TakeAck);
        while !sim.acks.is_empty() {
            sim.step(Op::DeliverAck);
        }
    }
    // Every message pushed reached the application once, in order (with
    // its bytes, checked when transmitted).
    assert_eq!(sim.rx.last_received(), sim.m.last());
    assert!(sim.app.iter().copied().eq(start + 1..=sim.m.last()));
    assert_eq!(sim.tx.unacked(), (0, 0));
    assert!(sim.tx.next_to_send().is_none());
});
