//! `replay`: a `Sender` and a `Receiver` over a simulated link that loses
//! everything in flight when it drops, under random schedules of pushes,
//! transmissions, deliveries, durable marks, acks (which may be lost),
//! disconnects, receiver restarts, duplicated and skipped frames, and bogus
//! acks and reconnect claims.
//!
//! Every step is checked against a model of the documented behaviour:
//! - the application sees every message exactly once, in order, with its
//!   bytes (a restarted receiver, which lost what was not durable, sees
//!   the rest again from its durable seq), and a frame the honest link
//!   carries is always the next one expected (nothing the peer has crosses
//!   the wire again);
//! - back-pressure: a push is taken exactly while the window holds fewer
//!   than `max_messages` messages and fewer than `max_bytes` bytes, so it
//!   never holds more than `max_messages` messages nor more than
//!   `max_bytes` plus one message;
//! - a reconnect resends exactly the messages transmitted and not received
//!   by the peer (their count and bytes), `Resend` says so, and
//!   `Sender::resent()` grows by exactly that once they are transmitted;
//! - duplicates are discarded, gaps refused, acks from the future and
//!   reconnect claims past what was sent refused (`FromTheFuture`), a peer
//!   that claims less than it acknowledged refused (`PeerRegressed`), a
//!   durable mark past what was received refused (`DurableAhead`), a push
//!   into a full window refused (`WindowFull`): each changing nothing.

use std::collections::VecDeque;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proto_session::replay::{Accept, Limits, Receiver, ReplayError, Resend, Sender};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_time: 30_000,
        ..ProptestConfig::default()
    }
}

/// The bytes of message `i` (0-based) of a run: `len` bytes that differ
/// from message to message and along the message.
fn message(i: usize, len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|j| (i as u8).wrapping_mul(31) ^ (j as u8).wrapping_mul(7) ^ salt ^ (j >> 8) as u8)
        .collect()
}

/// What the sender shows from outside; equal before and after a refused
/// operation. The next message to transmit is read from a clone.
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

/// One step of a schedule.
#[derive(Clone, Debug)]
enum Op {
    /// Push the next message (`how`: `push`, `push_with` exact or with
    /// spare room, or a failing `push_with` first).
    Push(u8),
    /// Transmit the next message onto the link.
    Transmit,
    /// The link delivers its oldest frame.
    Deliver,
    /// The receiver marks a seq durable (`k` picks it; some picks are
    /// below what is durable, some past what was received).
    Durable(u8),
    /// The receiver sends its ack, if it has one.
    Ack,
    /// The link delivers the oldest ack.
    DeliverAck,
    /// The connection drops: frames and acks in flight are lost; both
    /// sides reconnect.
    Disconnect,
    /// The link delivers an old frame again.
    Duplicate(u8),
    /// The link skips a frame.
    Skip(u8),
    /// The receiver restarts from its durable seq (losing the rest), and
    /// reconnects (calling `reconnected` or not).
    Restart(bool),
    /// A receiver that lost durable messages claims a seq below the
    /// sender's acknowledged one.
    Regressed(u8),
    /// An ack of a seq never sent.
    BogusAck(u8),
    /// On a copy of the sender: an ack (or a reconnect claim) of any seq
    /// from its acknowledged one to the last sent, then every message left
    /// transmitted.
    Probe(u8, bool),
    /// A reconnect claim past what was sent.
    BogusReconnect(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u8>().prop_map(Op::Push),
        8 => Just(Op::Transmit),
        6 => Just(Op::Deliver),
        3 => any::<u8>().prop_map(Op::Durable),
        3 => Just(Op::Ack),
        3 => Just(Op::DeliverAck),
        2 => Just(Op::Disconnect),
        1 => any::<u8>().prop_map(Op::Duplicate),
        1 => any::<u8>().prop_map(Op::Skip),
        1 => any::<bool>().prop_map(Op::Restart),
        1 => any::<u8>().prop_map(Op::Regressed),
        1 => any::<u8>().prop_map(Op::BogusAck),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(k, r)| Op::Probe(k, r)),
        1 => any::<u8>().prop_map(Op::BogusReconnect),
    ]
}

/// A run: limits, the seq before the first message, the message lengths
/// (some past the byte bound) and the schedule.
#[derive(Clone, Debug)]
struct Run {
    limits: Limits,
    start: u64,
    lens: Vec<usize>,
    salt: u8,
    ops: Vec<Op>,
}

fn run() -> impl Strategy<Value = Run> {
    let limits = prop_oneof![
        // Small windows, a few bytes to a few messages.
        3 => (0usize..=64, 0usize..=6),
        // Larger messages, so that the sender's buffer compacts and grows.
        1 => (1024usize..=20_000, 1usize..=8),
    ];
    let start = prop_oneof![Just(0u64), 0u64..1000, (u64::MAX >> 2)..(u64::MAX >> 1)];
    (
        limits,
        start,
        proptest::collection::vec(any::<u32>(), 0..40),
        any::<u8>(),
        proptest::collection::vec(op(), 0..160),
    )
        .prop_map(|((max_bytes, max_messages), start, raw, salt, ops)| {
            let b = max_bytes.max(1);
            let lens = raw
                .into_iter()
                .map(|r| {
                    let r = r as usize;
                    match r % 8 {
                        0 | 1 => r / 8 % 4,
                        2..=5 => r / 8 % (b + 1),
                        // Past the byte bound: held alone or with a few.
                        _ => b + r / 8 % (2 * b + 4),
                    }
                })
                .collect();
            Run {
                limits: Limits {
                    max_bytes,
                    max_messages,
                },
                start,
                lens,
                salt,
                ops,
            }
        })
}

/// The sender, the receiver, the link and the model.
struct Sim {
    tx: Sender,
    rx: Receiver,
    start: u64,
    /// Bounds as documented (`max_messages` at least 1; `max_bytes` at
    /// least 1, else nothing could ever be sent).
    max_bytes: usize,
    max_messages: usize,
    msgs: Vec<Vec<u8>>,
    /// Frames transmitted and not yet delivered, in order.
    link: VecDeque<(u64, Vec<u8>)>,
    /// Acks sent and not yet delivered, in order.
    acks: VecDeque<u64>,
    /// Every frame ever transmitted (for duplicates).
    history: Vec<(u64, Vec<u8>)>,
    /// What the application has: message `start + 1 + i` at `i`.
    out: Vec<Vec<u8>>,

    // The model.
    pushed: usize,
    acked: u64,
    high: u64,
    next: u64,
    resent: (u64, u64),
    received: u64,
    durable: u64,
    /// The last ack the receiver sent (or counts as sent).
    rx_acked: u64,
    /// The last reconnect's `Resend`, the `resent()` before it, and the
    /// seq whose transmission completes it; until then.
    pending: Option<(Resend, (u64, u64), u64)>,

    // Counters, to see that schedules do reach the paths.
    reconnects: u64,
    resends: u64,
    restarts: u64,
    duplicates: u64,
    gaps: u64,
    full: u64,
    regressions: u64,
    probes: u64,
}

impl Sim {
    fn new(run: &Run) -> Sim {
        let msgs = run
            .lens
            .iter()
            .enumerate()
            .map(|(i, &n)| message(i, n, run.salt))
            .collect();
        Sim {
            tx: Sender::new(run.limits, run.start),
            rx: Receiver::new(run.start),
            start: run.start,
            max_bytes: run.limits.max_bytes.max(1),
            max_messages: run.limits.max_messages.max(1),
            msgs,
            link: VecDeque::new(),
            acks: VecDeque::new(),
            history: Vec::new(),
            out: Vec::new(),
            pushed: 0,
            acked: run.start,
            high: run.start,
            next: run.start + 1,
            resent: (0, 0),
            received: run.start,
            durable: run.start,
            rx_acked: run.start,
            pending: None,
            reconnects: 0,
            resends: 0,
            restarts: 0,
            duplicates: 0,
            gaps: 0,
            full: 0,
            regressions: 0,
            probes: 0,
        }
    }

    fn msg(&self, seq: u64) -> &[u8] {
        &self.msgs[(seq - self.start - 1) as usize]
    }

    /// Bytes of the messages `from..=to`.
    fn bytes(&self, from: u64, to: u64) -> usize {
        (from..=to).map(|s| self.msg(s).len()).sum()
    }

    fn last_pushed(&self) -> u64 {
        self.start + self.pushed as u64
    }

    fn model_has_room(&self) -> bool {
        let held = (self.last_pushed() - self.acked) as usize;
        held < self.max_messages && self.bytes(self.acked + 1, self.last_pushed()) < self.max_bytes
    }

    /// Both sides agree with the model; the window is within its bounds.
    fn check(&self) {
        let held = (self.last_pushed() - self.acked) as usize;
        let held_bytes = self.bytes(self.acked + 1, self.last_pushed());
        assert_eq!(self.tx.unacked(), (held, held_bytes), "unacked");
        assert_eq!(self.tx.acked(), self.acked, "acked");
        assert_eq!(self.tx.sent(), self.high, "sent");
        assert_eq!(self.tx.next_seq(), self.last_pushed() + 1, "next_seq");
        assert_eq!(self.tx.resent(), self.resent, "resent");
        assert_eq!(self.tx.has_room(), self.model_has_room(), "has_room");
        // Back-pressure: at most max_messages, and at most max_bytes plus
        // one message (all but the last were under the bound when it came).
        assert!(held <= self.max_messages, "{held} messages held");
        if held > 0 {
            let last = self.msg(self.last_pushed()).len();
            assert!(
                held_bytes - last < self.max_bytes,
                "{held_bytes} bytes held, the last {last}, bound {}",
                self.max_bytes
            );
        }
        assert_eq!(self.rx.last_received(), self.received, "last_received");
        assert_eq!(self.rx.durable(), self.durable, "durable");
        assert_eq!(self.out.len() as u64, self.received - self.start);
    }

    fn push(&mut self, how: u8) {
        if self.pushed == self.msgs.len() {
            return;
        }
        let room = self.model_has_room();
        let before = view(&self.tx);
        let seq = self.last_pushed() + 1;
        let msg = self.msgs[self.pushed].clone();
        let r = match how % 4 {
            0 => self.tx.push(&msg),
            1 => self
                .tx
                .push_with(msg.len(), |b| {
                    b.copy_from_slice(&msg);
                    Ok::<_, ()>(msg.len())
                })
                .map(Result::unwrap),
            2 => self
                .tx
                .push_with(msg.len() + usize::from(how % 64), |b| {
                    b[..msg.len()].copy_from_slice(&msg);
                    // Scribble past the message: not taken.
                    b[msg.len()..].fill(0xA5);
                    Ok::<_, ()>(msg.len())
                })
                .map(Result::unwrap),
            _ => {
                // A write that fails takes nothing.
                match self.tx.push_with(msg.len() + 3, |b| {
                    b.fill(0x5A);
                    Err("no")
                }) {
                    Ok(Err("no")) => {
                        assert_eq!(view(&self.tx), before, "a failed write changed the sender")
                    }
                    Ok(other) => panic!("failed write: {other:?}"),
                    Err(e) => assert!(!room, "{e}"),
                }
                self.tx.push(&msg)
            }
        };
        if room {
            assert_eq!(r, Ok(seq), "push with room");
            self.pushed += 1;
        } else {
            self.full += 1;
            let (messages, bytes) = before.unacked;
            assert_eq!(r, Err(ReplayError::WindowFull { messages, bytes }));
            assert_eq!(view(&self.tx), before, "a refused push changed the sender");
        }
    }

    fn transmit(&mut self) {
        let got = self.tx.next_to_send().map(|(s, b)| (s, b.to_vec()));
        if self.next > self.last_pushed() {
            assert_eq!(got, None, "nothing to transmit");
            return;
        }
        let seq = self.next;
        assert_eq!(got, Some((seq, self.msg(seq).to_vec())), "transmitted");
        if seq <= self.high {
            self.resent.0 += 1;
            self.resent.1 += self.msg(seq).len() as u64;
        } else {
            self.high = seq;
        }
        self.next += 1;
        if let Some((r, base, last)) = self.pending {
            if seq == last {
                // Every message the reconnect announced has gone again.
                let now = self.tx.resent();
                assert_eq!((now.0 - base.0, now.1 - base.1), (r.messages, r.bytes));
                self.pending = None;
            }
        }
        let frame = (seq, self.msg(seq).to_vec());
        self.link.push_back(frame.clone());
        self.history.push(frame);
    }

    fn deliver(&mut self) {
        let Some((seq, bytes)) = self.link.pop_front() else {
            return;
        };
        // The honest link carries the next seq expected: nothing the
        // receiver has comes again, nothing is missing.
        assert_eq!(self.rx.accept(seq), Ok(Accept::Deliver), "seq {seq}");
        assert_eq!(seq, self.received + 1);
        assert_eq!(bytes, self.msg(seq), "bytes of seq {seq}");
        self.received = seq;
        self.out.push(bytes);
    }

    fn durable(&mut self, k: u8) {
        let before = format!("{:?}", self.rx);
        match k % 8 {
            // Past what was received: refused.
            0 => {
                let d = self.received + 1 + u64::from(k / 8);
                assert_eq!(
                    self.rx.mark_durable(d),
                    Err(ReplayError::DurableAhead {
                        durable: d,
                        received: self.received
                    })
                );
                assert_eq!(format!("{:?}", self.rx), before);
            }
            // At or below what is durable: nothing changes.
            1 => {
                let d = self.durable - u64::from(k / 8).min(self.durable - self.start);
                self.rx.mark_durable(d).unwrap();
                assert_eq!(format!("{:?}", self.rx), before);
            }
            _ => {
                let span = self.received - self.durable;
                let d = self.durable + u64::from(k) % (span + 1);
                self.rx.mark_durable(d).unwrap();
                self.durable = self.durable.max(d);
            }
        }
    }

    fn send_ack(&mut self) {
        let want = (self.durable > self.rx_acked).then_some(self.durable);
        assert_eq!(self.rx.take_ack(), want, "take_ack");
        if let Some(a) = want {
            self.rx_acked = a;
            self.acks.push_back(a);
        }
    }

    fn deliver_ack(&mut self) {
        let Some(a) = self.acks.pop_front() else {
            return;
        };
        self.tx.ack(a).unwrap_or_else(|e| panic!("ack {a}: {e}"));
        self.acked = self.acked.max(a);
        if self.next <= self.acked {
            self.next = self.acked + 1;
        }
    }

    /// Both sides reconnect: the sender hears what the receiver has.
    fn reconnect(&mut self, reconnected: bool) {
        self.reconnects += 1;
        if let Some((r, base, _)) = self.pending.take() {
            // Cut short: some of the resend went, never more.
            let now = self.tx.resent();
            assert!(now.0 - base.0 < r.messages && now.1 - base.1 <= r.bytes);
        }
        let peer = self.rx.last_received();
        let resent_before = self.tx.resent();
        let r = self
            .tx
            .reconnect(peer)
            .unwrap_or_else(|e| panic!("reconnect({peer}): {e}"));
        // Exactly what was transmitted and not received goes again.
        let expected = Resend {
            messages: self.high - peer,
            bytes: self.bytes(peer + 1, self.high) as u64,
            dropped: peer - self.acked,
        };
        assert_eq!(r, expected, "Resend after the peer's {peer}");
        assert_eq!(self.tx.resent(), resent_before, "reconnect transmitted");
        self.acked = peer;
        self.next = peer + 1;
        if r.messages > 0 {
            self.resends += 1;
            self.pending = Some((r, resent_before, self.high));
        }
        if reconnected {
            self.rx.reconnected();
            self.rx_acked = self.rx_acked.min(self.durable.saturating_sub(1));
        }
    }

    fn disconnect(&mut self) {
        self.link.clear();
        self.acks.clear();
        self.reconnect(true);
    }

    fn duplicate(&mut self, k: u8) {
        let old: Vec<_> = self
            .history
            .iter()
            .filter(|(s, _)| *s <= self.received)
            .collect();
        if old.is_empty() {
            return;
        }
        let seq = old[usize::from(k) % old.len()].0;
        let before = format!("{:?}", self.rx);
        assert_eq!(self.rx.accept(seq), Ok(Accept::Duplicate), "seq {seq}");
        assert_eq!(format!("{:?}", self.rx), before, "a duplicate changed it");
        self.duplicates += 1;
    }

    fn skip(&mut self, k: u8) {
        // The frame after the next one in flight, or any seq past the next.
        let seq = match self.link.get(1) {
            Some((s, _)) if k.is_multiple_of(2) => *s,
            _ => self.received + 2 + u64::from(k / 2),
        };
        let before = format!("{:?}", self.rx);
        assert_eq!(
            self.rx.accept(seq),
            Err(ReplayError::Gap {
                expected: self.received + 1,
                got: seq
            })
        );
        assert_eq!(format!("{:?}", self.rx), before, "a gap changed it");
        self.gaps += 1;
    }

    /// The receiver restarts from its durable seq: what it had received
    /// past that is lost, and it comes again.
    ///
    /// A reconnect drops what the peer had received, durable or not: when
    /// that is more than the restarted receiver has, the sender refuses it
    /// (`PeerRegressed`, nothing changed), and the run goes on with the
    /// receiver as it was.
    fn restart(&mut self, reconnected: bool) {
        if self.durable < self.acked {
            let before = view(&self.tx);
            let lost = Receiver::new(self.durable);
            assert_eq!(
                self.tx.reconnect(lost.last_received()),
                Err(ReplayError::PeerRegressed {
                    peer: self.durable,
                    acked: self.acked
                })
            );
            assert_eq!(view(&self.tx), before, "a refused reconnect changed it");
            self.regressions += 1;
            return;
        }
        self.restarts += 1;
        self.link.clear();
        self.acks.clear();
        self.rx = Receiver::new(self.durable);
        assert_eq!(
            (self.rx.last_received(), self.rx.durable()),
            (self.durable, self.durable)
        );
        self.received = self.durable;
        self.rx_acked = self.durable;
        self.out.truncate((self.durable - self.start) as usize);
        self.reconnect(reconnected);
    }

    fn regressed(&mut self, k: u8) {
        if self.acked == self.start {
            return;
        }
        // Restarted from a durable seq below what it had acknowledged.
        let peer = self.acked - 1 - u64::from(k) % (self.acked - self.start);
        let lost = Receiver::new(peer);
        let before = view(&self.tx);
        assert_eq!(
            self.tx.reconnect(lost.last_received()),
            Err(ReplayError::PeerRegressed {
                peer,
                acked: self.acked
            })
        );
        assert_eq!(view(&self.tx), before, "a refused reconnect changed it");
        self.regressions += 1;
    }

    fn bogus(&mut self, k: u8, reconnect: bool) {
        let peer = match k % 4 {
            0 => u64::MAX,
            _ => self.high + 1 + u64::from(k / 4),
        };
        let before = view(&self.tx);
        let r = if reconnect {
            self.tx.reconnect(peer).map(|_| ())
        } else {
            self.tx.ack(peer)
        };
        assert_eq!(
            r,
            Err(ReplayError::FromTheFuture {
                peer,
                sent: self.high
            })
        );
        assert_eq!(view(&self.tx), before, "a refused claim changed it");
    }

    /// A sender takes an ack or a reconnect claim of any seq it sent
    /// (the honest receiver only ever acks or claims what the sender will
    /// not transmit again; here the claim may be past the next message to
    /// transmit after a reconnect): it drops exactly those messages, and
    /// transmits the rest in order with their bytes, counting as resent
    /// exactly those sent before.
    fn probe(&mut self, k: u8, reconnect: bool) {
        let seq = self.acked + u64::from(k) % (self.high - self.acked + 1);
        let mut tx = self.tx.clone();
        let base = tx.resent();
        let mut next = if reconnect {
            let r = tx.reconnect(seq).unwrap();
            let expected = Resend {
                messages: self.high - seq,
                bytes: self.bytes(seq + 1, self.high) as u64,
                dropped: seq - self.acked,
            };
            assert_eq!(r, expected, "probe: reconnect({seq})");
            seq + 1
        } else {
            tx.ack(seq).unwrap();
            self.next.max(seq + 1)
        };
        assert_eq!(tx.acked(), seq);
        let held = (self.last_pushed() - seq) as usize;
        let bytes = self.bytes(seq + 1, self.last_pushed());
        assert_eq!(tx.unacked(), (held, bytes), "probe: unacked after {seq}");
        let mut resent = base;
        while let Some((s, b)) = tx.next_to_send() {
            assert_eq!((s, b), (next, self.msg(next)), "probe: after {seq}");
            if s <= self.high {
                resent.0 += 1;
                resent.1 += b.len() as u64;
            }
            next += 1;
        }
        assert_eq!(next, self.last_pushed() + 1, "probe: stopped early");
        assert_eq!(tx.resent(), resent, "probe: resent");
        self.probes += 1;
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Push(how) => self.push(how),
            Op::Transmit => self.transmit(),
            Op::Deliver => self.deliver(),
            Op::Durable(k) => self.durable(k),
            Op::Ack => self.send_ack(),
            Op::DeliverAck => self.deliver_ack(),
            Op::Disconnect => self.disconnect(),
            Op::Duplicate(k) => self.duplicate(k),
            Op::Skip(k) => self.skip(k),
            Op::Restart(r) => self.restart(r),
            Op::Regressed(k) => self.regressed(k),
            Op::BogusAck(k) => self.bogus(k, false),
            Op::Probe(k, r) => self.probe(k, r),
            Op::BogusReconnect(k) => self.bogus(k, true),
        }
        self.check();
    }

    /// After the schedule: the link works until every message is durable
    /// and acknowledged (each round makes progress or the run is stuck).
    fn finish(&mut self) {
        let total = self.start + self.msgs.len() as u64;
        let mut rounds = 0;
        while self.acked < total {
            rounds += 1;
            assert!(rounds <= 4 * self.msgs.len() + 4, "no progress");
            while self.pushed < self.msgs.len() && self.model_has_room() {
                self.step(&Op::Push(0));
            }
            while self.next <= self.last_pushed() {
                self.step(&Op::Transmit);
            }
            while !self.link.is_empty() {
                self.step(&Op::Deliver);
            }
            self.rx.mark_durable(self.received).unwrap();
            self.durable = self.received;
            self.step(&Op::Ack);
            while !self.acks.is_empty() {
                self.step(&Op::DeliverAck);
            }
        }
        assert!(self.pending.is_none(), "a resend never completed");
        assert_eq!(self.out, self.msgs, "the application's messages");
        assert_eq!(self.tx.unacked(), (0, 0));
        assert_eq!(self.tx.next_to_send(), None);
    }
}

fn simulate(run: &Run) -> Sim {
    let mut sim = Sim::new(run);
    sim.check();
    for op in &run.ops {
        sim.step(op);
    }
    sim.finish();
    sim
}

proptest! {
    #![proptest_config(config(256))]

    /// Random schedules of disconnects, restarts, lost acks, duplicated and
    /// skipped frames and bogus claims: every message reaches the
    /// application once, in order, with its bytes; the window stays within
    /// its bounds; each reconnect resends exactly what the peer lacks.
    #[test]
    fn exactly_once_in_order_across_random_disconnects(run in run()) {
        simulate(&run);
    }

    /// The receiver alone, against any seqs: `Deliver` exactly for the next
    /// one, `Duplicate` for any before, `Gap` (and no change) after.
    #[test]
    fn receiver_delivers_each_seq_once_in_order(
        start in 0u64..1000,
        seqs in proptest::collection::vec(0u64..1040, 0..200),
    ) {
        let mut rx = Receiver::new(start);
        let mut delivered = Vec::new();
        for seq in seqs {
            let last = rx.last_received();
            let before = format!("{rx:?}");
            match rx.accept(seq) {
                Ok(Accept::Deliver) => {
                    prop_assert_eq!(seq, last + 1);
                    delivered.push(seq);
                }
                Ok(Accept::Duplicate) => {
                    prop_assert!(seq <= last);
                    prop_assert_eq!(format!("{rx:?}"), before);
                }
                Err(e) => {
                    prop_assert!(seq > last + 1);
                    prop_assert_eq!(e, ReplayError::Gap { expected: last + 1, got: seq });
                    prop_assert_eq!(format!("{rx:?}"), before);
                }
            }
        }
        let want: Vec<u64> = (start + 1..=rx.last_received()).collect();
        prop_assert_eq!(delivered, want);
    }
}

/// The schedules do reach the paths the properties are about.
#[test]
fn schedules_reach_every_path() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut total = [0u64; 8];
    for _ in 0..64 {
        let run = run().new_tree(&mut runner).unwrap().current();
        let s = simulate(&run);
        for (t, n) in total.iter_mut().zip([
            s.reconnects,
            s.resends,
            s.restarts,
            s.duplicates,
            s.gaps,
            s.full,
            s.regressions,
            s.probes,
        ]) {
            *t += n;
        }
    }
    assert!(
        total.iter().all(|&n| n > 0),
        "reconnects, resends, restarts, duplicates, gaps, full, regressions, probes: {total:?}"
    );
}

fn limits(max_bytes: usize, max_messages: usize) -> Limits {
    Limits {
        max_bytes,
        max_messages,
    }
}

/// A receiver restarted from its durable seq, at or above what the sender
/// has acknowledged: the sender resends from there, the messages past it
/// reach the new receiver once each.
#[test]
fn restarted_receiver_at_or_above_the_senders_ack() {
    let msgs: Vec<Vec<u8>> = (0..6).map(|i| message(i, 3 + i, 9)).collect();
    let mut tx = Sender::new(limits(1000, 10), 0);
    let mut rx = Receiver::new(0);
    for m in &msgs {
        tx.push(m).unwrap();
    }
    for _ in 0..5 {
        let (seq, _) = tx.next_to_send().unwrap();
        assert_eq!(rx.accept(seq), Ok(Accept::Deliver));
    }
    rx.mark_durable(2).unwrap();
    tx.ack(rx.take_ack().unwrap()).unwrap();
    rx.mark_durable(3).unwrap(); // durable, but the ack is lost
    assert_eq!(rx.take_ack(), Some(3));

    // Restart from 3: seqs 4 and 5 were received but are lost.
    let mut rx = Receiver::new(rx.durable());
    let r = tx.reconnect(rx.last_received()).unwrap();
    assert_eq!(
        r,
        Resend {
            messages: 2,
            bytes: (msgs[3].len() + msgs[4].len()) as u64,
            dropped: 1
        }
    );
    assert_eq!(tx.acked(), 3);
    let mut got = Vec::new();
    while let Some((seq, bytes)) = tx.next_to_send() {
        assert_eq!(rx.accept(seq), Ok(Accept::Deliver));
        got.push(bytes.to_vec());
    }
    assert_eq!(got, msgs[3..].to_vec());
    assert_eq!(tx.resent(), (2, r.bytes));
    // The new receiver's first ack after `reconnected` repeats its start,
    // which the sender already has: harmless.
    rx.reconnected();
    assert_eq!(rx.take_ack(), Some(3));
    tx.ack(3).unwrap();
    rx.mark_durable(6).unwrap();
    tx.ack(rx.take_ack().unwrap()).unwrap();
    assert_eq!(tx.unacked(), (0, 0));
}

/// A receiver that restarted below what it had acknowledged (it lost
/// messages it declared durable) is refused, and the sender is unchanged:
/// it still takes the honest peer afterwards.
#[test]
fn restarted_receiver_below_the_senders_ack_is_refused() {
    let mut tx = Sender::new(limits(1000, 10), 10);
    for m in [&b"a"[..], b"bb", b"ccc"] {
        tx.push(m).unwrap();
    }
    for _ in 0..3 {
        tx.next_to_send().unwrap();
    }
    tx.ack(12).unwrap();
    let before = view(&tx);
    for durable in [10, 11] {
        let rx = Receiver::new(durable);
        assert_eq!(
            tx.reconnect(rx.last_received()),
            Err(ReplayError::PeerRegressed {
                peer: durable,
                acked: 12
            })
        );
        assert_eq!(view(&tx), before);
    }
    let r = tx.reconnect(12).unwrap();
    assert_eq!(
        r,
        Resend {
            messages: 1,
            bytes: 3,
            dropped: 0
        }
    );
    assert_eq!(tx.next_to_send().unwrap(), (13, &b"ccc"[..]));
}

/// A byte bound of 0 must not stall the sender for ever: like
/// `max_messages`, it counts as at least 1 (one message at a time).
#[test]
fn zero_byte_bound_still_sends() {
    let mut tx = Sender::new(limits(0, 0), 0);
    assert!(tx.has_room());
    assert_eq!(tx.push(b"abc"), Ok(1));
    assert!(!tx.has_room());
    tx.next_to_send().unwrap();
    tx.ack(1).unwrap();
    assert_eq!(tx.push(b""), Ok(2));
}

/// A byte bound meant as "no bound" (`usize::MAX`) or merely large must not
/// overflow or allocate the bound up front: the buffer follows the window.
#[test]
fn huge_byte_bound() {
    for max_bytes in [usize::MAX, usize::MAX / 4 + 1, 1 << 40] {
        let mut tx = Sender::new(limits(max_bytes, 3), 0);
        for (i, m) in [&b"one"[..], b"two", b"three"].into_iter().enumerate() {
            assert_eq!(tx.push(m), Ok(i as u64 + 1));
        }
        assert!(!tx.has_room());
        assert_eq!(tx.next_to_send().unwrap(), (1, &b"one"[..]));
        tx.ack(1).unwrap();
        assert_eq!(tx.push(&[7; 100_000]), Ok(4));
        assert_eq!(tx.unacked(), (3, 100_008));
    }
}
