//! Seq/ack replay across reconnects, after ceph's `RECONNECT_SEQ`: sans-IO.
//!
//! Every message carries a sequence number (the first is `start + 1`). The
//! [`Sender`] keeps what it has sent and the peer has not acknowledged in a
//! bounded window: it takes a new message only while the window has room
//! ([`Sender::has_room`]: back-pressure), and drops messages when the peer
//! acknowledges them ([`Sender::ack`]: the peer has made them durable).
//! After a reconnect each side states the last seq it received; the sender
//! drops what the peer has and sends the rest again
//! ([`Sender::reconnect`]), so nothing already delivered crosses the wire
//! twice. The [`Receiver`] delivers each seq once, in order: it discards
//! duplicates and refuses gaps ([`Receiver::accept`]).
//!
//! Nothing here does I/O or keeps time: the caller moves the bytes.
//!
//! ```
//! use proto_session::replay::{Accept, Limits, Receiver, Sender};
//!
//! let mut tx = Sender::new(Limits { max_bytes: 1024, max_messages: 4 }, 0);
//! let mut rx = Receiver::new(0);
//! for msg in [&b"one"[..], b"two", b"three"] {
//!     tx.push(msg).unwrap();
//! }
//! // Seqs 1 and 2 cross; the connection drops while 3 is in flight.
//! for _ in 0..2 {
//!     let (seq, _bytes) = tx.next_to_send().unwrap();
//!     assert_eq!(rx.accept(seq).unwrap(), Accept::Deliver);
//! }
//! let _lost = tx.next_to_send().unwrap();
//! rx.mark_durable(1).unwrap();
//! tx.ack(rx.take_ack().unwrap()).unwrap(); // seq 1 dropped from the window
//!
//! // Reconnect: the receiver says it has seq 2; only seq 3 is sent again.
//! let resend = tx.reconnect(rx.last_received()).unwrap();
//! assert_eq!((resend.messages, resend.bytes), (1, 5));
//! assert_eq!(tx.next_to_send().unwrap(), (3, &b"three"[..]));
//! assert_eq!(rx.accept(3).unwrap(), Accept::Deliver);
//! assert_eq!(rx.accept(3).unwrap(), Accept::Duplicate);
//! assert!(rx.accept(5).is_err()); // a gap: seq 4 is missing
//! ```

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Bounds of a [`Sender`]'s window of unacknowledged messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A new message is taken only while fewer bytes than this are held
    /// (at least 1), so the window holds at most `max_bytes` plus one
    /// message.
    pub max_bytes: usize,
    /// At most this many messages are held (at least 1).
    pub max_messages: usize,
}

/// Why a replay operation was refused. Nothing changes when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A message was pushed while the window was full: wait for acks.
    #[error("window full: {messages} messages, {bytes} bytes unacknowledged")]
    WindowFull {
        /// Messages held.
        messages: usize,
        /// Bytes held.
        bytes: usize,
    },
    /// The peer acknowledged or claims to have received a seq this sender
    /// has never sent.
    #[error("seq from the future: the peer has {peer}, but only up to {sent} was sent")]
    FromTheFuture {
        /// What the peer claims.
        peer: u64,
        /// The last seq sent.
        sent: u64,
    },
    /// The peer now claims less than it had acknowledged: it lost messages
    /// it had declared durable, which the sender has already dropped.
    #[error("the peer has {peer}, below its own acknowledgement of {acked}: messages {first}..={acked} were dropped and cannot be sent again", first = peer + 1)]
    PeerRegressed {
        /// What the peer claims.
        peer: u64,
        /// What it had acknowledged.
        acked: u64,
    },
    /// The receiver got a seq past the next one it expected.
    #[error("gap: expected seq {expected}, got {got}")]
    Gap {
        /// The next seq in order.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// The receiver was told a seq is durable that it has not received.
    #[error("durable seq {durable} is past the last received {received}")]
    DurableAhead {
        /// The seq declared durable.
        durable: u64,
        /// The last seq received.
        received: u64,
    },
}

/// What a reconnect will send again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resend {
    /// Messages sent before that will be sent again.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Messages the peer had but had not acknowledged (dropped now).
    pub dropped: u64,
}

/// The sending side: numbers messages, keeps the unacknowledged ones in a
/// bounded window, sends them again after a reconnect.
///
/// The window's bytes live in one buffer, a ring of whole messages: a
/// message goes after the last one, or to the front of the buffer when the
/// end is short (nothing held is moved to make room). The buffer grows to
/// twice what it must hold when neither has room, which is at most about
/// twice `max_bytes` plus two messages: it follows the window, and is never
/// sized from `max_bytes` up front.
#[derive(Clone, Debug)]
pub struct Sender {
    limits: Limits,
    buf: Vec<u8>,
    /// Where the held messages are in `buf` (offset, length): seqs
    /// `acked + 1 ..= acked + msgs.len()`. Each is contiguous; in order
    /// they run from the first one's offset to the end of the last one,
    /// wrapping at most once to the front of `buf` (the bytes after the
    /// message before the wrap are unused).
    msgs: VecDeque<(usize, usize)>,
    /// Bytes held (the sum of the lengths).
    held: usize,
    /// Where the next message goes when it fits there: the end of the last.
    tail: usize,
    /// The seq of the held message that went to the front of `buf` (the
    /// messages wrap there), while an older one is held after it.
    wrap: Option<u64>,
    acked: u64,
    /// The next message to transmit.
    send_seq: u64,
    /// The highest seq ever transmitted (sending one at or below it again
    /// counts as a resend).
    sent_high: u64,
    resent_messages: u64,
    resent_bytes: u64,
    /// The lengths [`Sender::push_many_with`] collects (kept for reuse).
    batch: Vec<usize>,
}

impl Sender {
    /// A sender whose first message will be `start + 1` (`start`: messages
    /// delivered before, e.g. the seq of a checkpoint token re-armed from).
    pub fn new(limits: Limits, start: u64) -> Self {
        Sender {
            limits: Limits {
                max_bytes: limits.max_bytes.max(1),
                max_messages: limits.max_messages.max(1),
            },
            buf: Vec::new(),
            msgs: VecDeque::new(),
            held: 0,
            tail: 0,
            wrap: None,
            acked: start,
            send_seq: start + 1,
            sent_high: start,
            resent_messages: 0,
            resent_bytes: 0,
            batch: Vec::new(),
        }
    }

    /// The window's bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether a new message can be taken (back-pressure: when not, read
    /// acks before pushing more).
    pub fn has_room(&self) -> bool {
        self.msgs.len() < self.limits.max_messages && self.held < self.limits.max_bytes
    }

    /// Takes a copy of `msg` as the next message; returns its seq.
    ///
    /// Errors: [`ReplayError::WindowFull`] (nothing is taken).
    pub fn push(&mut self, msg: &[u8]) -> Result<u64, ReplayError> {
        self.push_with(msg.len(), |buf| {
            buf.copy_from_slice(msg);
            Ok::<_, ReplayError>(msg.len())
        })?
    }

    /// Takes the next message written in place: `write` gets `max_len`
    /// bytes of the window and returns how many it wrote (at most
    /// `max_len`). Returns the new seq, or `write`'s error (then nothing is
    /// taken).
    ///
    /// Errors: [`ReplayError::WindowFull`] before `write` is called.
    pub fn push_with<E>(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<Result<u64, E>, ReplayError> {
        if !self.has_room() {
            return Err(self.full());
        }
        let (at, wraps) = self.reserve(max_len);
        let n = match write(&mut self.buf[at..at + max_len]) {
            Ok(n) => n.min(max_len),
            Err(e) => return Ok(Err(e)),
        };
        self.take(at, n, wraps);
        Ok(Ok(self.acked + self.msgs.len() as u64))
    }

    /// Takes several messages written in place at once: `write` gets
    /// `max_len` bytes of the window, writes messages there one after the
    /// other and appends their lengths to the `Vec` it is given (empty).
    /// Returns the seq of the last one (or the last seq pushed, when it
    /// wrote none), or `write`'s error (then nothing is taken). The window
    /// keeps its bounds: several messages take at most [`Sender::room`]
    /// bytes and [`Sender::room_messages`] messages (one alone may take it
    /// past `max_bytes`, as with [`Sender::push_with`]).
    ///
    /// Errors: [`ReplayError::WindowFull`] before `write` is called, or
    /// when what it wrote breaks those bounds or takes more than `max_len`
    /// bytes (then nothing is taken).
    pub fn push_many_with<E>(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut [u8], &mut Vec<usize>) -> Result<(), E>,
    ) -> Result<Result<u64, E>, ReplayError> {
        if !self.has_room() {
            return Err(self.full());
        }
        let (at, wraps) = self.reserve(max_len);
        let mut lens = core::mem::take(&mut self.batch);
        lens.clear();
        let r = write(&mut self.buf[at..at + max_len], &mut lens);
        let total = lens.iter().try_fold(0usize, |a, n| a.checked_add(*n));
        // Within `max_len`, and the window's bounds: one message may take
        // it past `max_bytes` (as with `push_with`), several may not.
        let fits = lens.len() <= self.room_messages()
            && total.is_some_and(|t| t <= max_len && (lens.len() <= 1 || t <= self.room()));
        let out = match r {
            Err(e) => Ok(Err(e)),
            Ok(()) if !fits => Err(self.full()),
            Ok(()) => {
                let mut at = at;
                for (i, &n) in lens.iter().enumerate() {
                    self.take(at, n, wraps && i == 0);
                    at += n;
                }
                Ok(Ok(self.acked + self.msgs.len() as u64))
            }
        };
        self.batch = lens;
        out
    }

    /// Bytes the window takes before it is full (0 when it is).
    pub fn room(&self) -> usize {
        self.limits.max_bytes.saturating_sub(self.held)
    }

    /// Messages the window takes before it is full (0 when it is).
    pub fn room_messages(&self) -> usize {
        self.limits.max_messages.saturating_sub(self.msgs.len())
    }

    fn full(&self) -> ReplayError {
        ReplayError::WindowFull {
            messages: self.msgs.len(),
            bytes: self.held,
        }
    }

    /// Where `n` contiguous bytes are free for the next message, and
    /// whether it goes to the front of the buffer: after the last message,
    /// else at the front when the held messages leave that much there (the
    /// window is a ring; nothing held moves). When neither has room, the
    /// buffer grows to twice what it then must hold, its messages copied
    /// to its front in order: once it is that large, one of the two always
    /// has room (the free bytes are at least the held ones plus twice `n`),
    /// so it stops growing at about twice the window's bound plus two
    /// messages.
    fn reserve(&mut self, n: usize) -> (usize, bool) {
        let Some(&(first, _)) = self.msgs.front() else {
            (self.tail, self.wrap) = (0, None);
            if self.buf.len() < n {
                self.buf.resize(n.saturating_mul(2).max(64 * 1024), 0);
            }
            return (0, false);
        };
        match self.wrap {
            // From the front of the buffer up to the first message.
            Some(_) if first - self.tail >= n => return (self.tail, false),
            Some(_) => {}
            None if self.buf.len() - self.tail >= n => return (self.tail, false),
            None if first >= n => return (0, true),
            None => {}
        }
        let mut grown = alloc::vec![0u8; (self.held + n).saturating_mul(2).max(64 * 1024)];
        let mut at = 0;
        for m in &mut self.msgs {
            grown[at..at + m.1].copy_from_slice(&self.buf[m.0..m.0 + m.1]);
            m.0 = at;
            at += m.1;
        }
        (self.buf, self.tail, self.wrap) = (grown, at, None);
        (at, false)
    }

    /// A message of `n` bytes written at `at` is held (`wraps`: it went to
    /// the front of the buffer, before the held ones).
    fn take(&mut self, at: usize, n: usize, wraps: bool) {
        self.msgs.push_back((at, n));
        self.held += n;
        self.tail = at + n;
        if wraps {
            self.wrap = Some(self.acked + self.msgs.len() as u64);
        }
    }

    /// The next message to transmit (its seq and bytes), in seq order:
    /// after a reconnect, the ones to send again first. `None` when every
    /// held message has been transmitted.
    pub fn next_to_send(&mut self) -> Option<(u64, &[u8])> {
        self.next_run(1, 0).map(|r| (r.seq, r.bytes))
    }

    /// The next messages to transmit, as [`Sender::next_to_send`] would
    /// give them one by one: the first, then as many as follow it that lie
    /// right after it in the buffer, at most `max_messages` in all and,
    /// past the first, within `max_bytes` together. `None` when every held
    /// message has been transmitted.
    pub fn next_run(&mut self, max_messages: usize, max_bytes: usize) -> Option<Run<'_>> {
        let i = usize::try_from(self.send_seq - self.acked - 1).ok()?;
        let (off, len) = *self.msgs.get(i)?;
        let (mut end, mut j) = (off + len, i + 1);
        while j - i < max_messages {
            match self.msgs.get(j) {
                Some(&(o, l)) if o == end && end - off + l <= max_bytes => {
                    end += l;
                    j += 1;
                }
                _ => break,
            }
        }
        let seq = self.send_seq;
        let last = seq + (j - i - 1) as u64;
        self.send_seq = last + 1;
        let mut resent = (0, 0);
        if seq <= self.sent_high {
            // Sent before, up to the highest seq ever sent.
            let again = (self.sent_high.min(last) - seq + 1) as usize;
            let bytes = self
                .msgs
                .range(i..i + again)
                .map(|m| m.1 as u64)
                .sum::<u64>();
            resent = (again as u64, bytes);
            self.resent_messages += resent.0;
            self.resent_bytes += resent.1;
        }
        self.sent_high = self.sent_high.max(last);
        Some(Run {
            seq,
            bytes: &self.buf[off..end],
            msgs: self.msgs.range(i..j),
            resent,
        })
    }

    /// The peer acknowledges every seq up to `seq`: those messages are
    /// dropped from the window. An ack at or below an earlier one changes
    /// nothing.
    ///
    /// Errors: [`ReplayError::FromTheFuture`] when `seq` was never sent.
    pub fn ack(&mut self, seq: u64) -> Result<(), ReplayError> {
        if seq > self.sent_high {
            return Err(ReplayError::FromTheFuture {
                peer: seq,
                sent: self.sent_high,
            });
        }
        if self.acked < seq {
            // Every seq up to `sent_high` is held, so all of them are.
            let n = usize::try_from(seq - self.acked)
                .map_or(self.msgs.len(), |n| n.min(self.msgs.len()));
            self.held -= self.msgs.drain(..n).map(|m| m.1).sum::<usize>();
            self.acked = seq;
        }
        // Once the message at the front of the buffer is the oldest held,
        // the messages no longer wrap.
        if self.wrap.is_some_and(|w| w <= self.acked + 1) {
            self.wrap = None;
        }
        if self.send_seq <= self.acked {
            // Acked before it was transmitted again after a reconnect.
            self.send_seq = self.acked + 1;
        }
        Ok(())
    }

    /// After a reconnect the peer says it has received every seq up to
    /// `peer_received`: those are dropped, and the rest is transmitted again
    /// from the first the peer lacks.
    ///
    /// Errors: [`ReplayError::FromTheFuture`] (more than was ever sent),
    /// [`ReplayError::PeerRegressed`] (less than it acknowledged).
    pub fn reconnect(&mut self, peer_received: u64) -> Result<Resend, ReplayError> {
        if peer_received < self.acked {
            return Err(ReplayError::PeerRegressed {
                peer: peer_received,
                acked: self.acked,
            });
        }
        let before = self.acked;
        self.ack(peer_received)?;
        self.send_seq = self.acked + 1;
        let pending = (self.sent_high - self.acked) as usize;
        let bytes: usize = self.msgs.iter().take(pending).map(|m| m.1).sum();
        Ok(Resend {
            messages: pending as u64,
            bytes: bytes as u64,
            dropped: peer_received - before,
        })
    }

    /// Every seq up to this one has been acknowledged (or was delivered
    /// before `start`).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Whether a held message waits to be transmitted
    /// ([`Sender::next_to_send`] returns it).
    pub fn has_unsent(&self) -> bool {
        self.send_seq < self.next_seq()
    }

    /// The seq the next pushed message will get.
    pub fn next_seq(&self) -> u64 {
        self.acked + self.msgs.len() as u64 + 1
    }

    /// The highest seq transmitted so far.
    pub fn sent(&self) -> u64 {
        self.sent_high
    }

    /// Messages and bytes held, unacknowledged.
    pub fn unacked(&self) -> (usize, usize) {
        (self.msgs.len(), self.held)
    }

    /// Messages and bytes transmitted more than once so far.
    pub fn resent(&self) -> (u64, u64) {
        (self.resent_messages, self.resent_bytes)
    }
}

/// Consecutive messages to transmit ([`Sender::next_run`]).
#[derive(Clone, Debug)]
pub struct Run<'a> {
    /// The first one's seq.
    pub seq: u64,
    /// Their bytes, one after the other.
    pub bytes: &'a [u8],
    msgs: alloc::collections::vec_deque::Iter<'a, (usize, usize)>,
    resent: (u64, u64),
}

impl Run<'_> {
    /// How many messages.
    pub fn count(&self) -> usize {
        self.msgs.len()
    }

    /// The seq of the last.
    pub fn last(&self) -> u64 {
        self.seq + self.msgs.len() as u64 - 1
    }

    /// How many of them, and their bytes, were transmitted before (the
    /// first ones, after a reconnect).
    pub fn resent(&self) -> (u64, u64) {
        self.resent
    }

    /// The length of each, in order.
    pub fn lens(&self) -> impl ExactSizeIterator<Item = usize> + Clone + '_ {
        self.msgs.clone().map(|m| m.1)
    }
}

/// What [`Receiver::accept`] says about a seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// The next seq in order: deliver the message.
    Deliver,
    /// Already received: discard it.
    Duplicate,
}

/// The receiving side: accepts seqs once and in order, and acknowledges
/// what the application has made durable.
#[derive(Clone, Debug)]
pub struct Receiver {
    received: u64,
    durable: u64,
    acked: u64,
}

impl Receiver {
    /// A receiver that has every seq up to `start` (durable: 0 for a new
    /// transfer, or what a restarted receiver had made durable).
    pub fn new(start: u64) -> Self {
        Receiver {
            received: start,
            durable: start,
            acked: start,
        }
    }

    /// Whether to deliver the message with this seq.
    ///
    /// Errors: [`ReplayError::Gap`] when `seq` is past the next one expected
    /// (the state does not change).
    pub fn accept(&mut self, seq: u64) -> Result<Accept, ReplayError> {
        let a = self.expects(seq)?;
        if a == Accept::Deliver {
            self.received = seq;
        }
        Ok(a)
    }

    /// What [`Receiver::accept`] would say about `seq`, without taking it:
    /// a receiver that checks a message first takes it only once it holds.
    pub fn expects(&self, seq: u64) -> Result<Accept, ReplayError> {
        if seq <= self.received {
            Ok(Accept::Duplicate)
        } else if seq == self.received + 1 {
            Ok(Accept::Deliver)
        } else {
            Err(ReplayError::Gap {
                expected: self.received + 1,
                got: seq,
            })
        }
    }

    /// Takes `n` messages from `first` on, as `n` calls of
    /// [`Receiver::accept`] that each said [`Accept::Deliver`] would.
    ///
    /// Errors: [`ReplayError::Gap`] when `first` is not the next seq
    /// expected (the state does not change).
    pub fn accept_run(&mut self, first: u64, n: u64) -> Result<(), ReplayError> {
        if n == 0 {
            return Ok(());
        }
        if first != self.received + 1 {
            return Err(ReplayError::Gap {
                expected: self.received + 1,
                got: first,
            });
        }
        self.received += n;
        Ok(())
    }

    /// The application has made every seq up to `seq` durable.
    ///
    /// Errors: [`ReplayError::DurableAhead`] when `seq` was not received.
    pub fn mark_durable(&mut self, seq: u64) -> Result<(), ReplayError> {
        if seq > self.received {
            return Err(ReplayError::DurableAhead {
                durable: seq,
                received: self.received,
            });
        }
        self.durable = self.durable.max(seq);
        Ok(())
    }

    /// The ack to send, if anything durable has not been acknowledged yet;
    /// it is then counted as sent.
    pub fn take_ack(&mut self) -> Option<u64> {
        (self.durable > self.acked).then(|| {
            self.acked = self.durable;
            self.durable
        })
    }

    /// The last seq received: what to state on a reconnect.
    pub fn last_received(&self) -> u64 {
        self.received
    }

    /// The last seq made durable.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// After a reconnect: the last ack sent may not have arrived, so the
    /// next [`take_ack`](Receiver::take_ack) repeats it.
    pub fn reconnected(&mut self) {
        self.acked = self.acked.min(self.durable.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(bytes: usize, messages: usize) -> Limits {
        Limits {
            max_bytes: bytes,
            max_messages: messages,
        }
    }

    #[test]
    fn back_pressure_by_messages_and_bytes() {
        let mut tx = Sender::new(limits(10, 2), 0);
        tx.push(b"abc").unwrap();
        tx.push(b"def").unwrap();
        assert_eq!(
            tx.push(b"g"),
            Err(ReplayError::WindowFull {
                messages: 2,
                bytes: 6
            })
        );
        tx.next_to_send().unwrap();
        tx.ack(1).unwrap();
        assert_eq!(tx.push(b"0123456789").unwrap(), 3);
        // Over the byte bound by one message: nothing more until acks.
        assert!(!tx.has_room());
        assert_eq!(tx.unacked(), (2, 13));
    }

    /// Runs take consecutive messages that lie one after the other, within
    /// the bounds (the first whatever its length), stop where the ring
    /// wraps, and count what they send again after a reconnect.
    #[test]
    fn runs_of_messages() {
        let mut tx = Sender::new(limits(64 * 1024, 1000), 0);
        for m in [&b"aa"[..], b"bbb", b"c", b"dddd", b"ee"] {
            tx.push(m).unwrap();
        }
        let r = tx.next_run(3, 100).unwrap();
        assert_eq!(
            (r.seq, r.bytes, r.count(), r.last()),
            (1, &b"aabbbc"[..], 3, 3)
        );
        assert_eq!(r.lens().collect::<Vec<_>>(), [2, 3, 1]);
        assert_eq!(r.resent(), (0, 0));
        // The first goes whatever its length; the next would pass 5 bytes.
        let r = tx.next_run(10, 5).unwrap();
        assert_eq!((r.seq, r.bytes), (4, &b"dddd"[..]));
        let r = tx.next_run(10, 0).unwrap();
        assert_eq!((r.seq, r.bytes), (5, &b"ee"[..]));
        assert!(tx.next_run(10, 100).is_none());
        // Seqs 2..=5 again after a reconnect, then one more never sent.
        tx.push(b"ff").unwrap();
        tx.reconnect(1).unwrap();
        let r = tx.next_run(10, 100).unwrap();
        assert_eq!((r.seq, r.bytes, r.count()), (2, &b"bbbcddddeeff"[..], 5));
        assert_eq!(r.resent(), (4, 10));
        assert_eq!(tx.resent(), (4, 10));
        assert_eq!(tx.sent(), 6);

        // A ring that wraps: the run stops at the wrap.
        let mut tx = Sender::new(limits(64 * 1024, 1000), 0);
        let big = alloc::vec![7u8; 40 * 1024];
        tx.push(&big).unwrap();
        tx.push(&big).unwrap();
        assert_eq!(tx.next_run(1, usize::MAX).unwrap().seq, 1);
        tx.ack(1).unwrap();
        tx.push(b"front").unwrap();
        tx.push(b"next").unwrap();
        let r = tx.next_run(10, usize::MAX).unwrap();
        assert_eq!((r.seq, r.count()), (2, 1));
        let r = tx.next_run(10, usize::MAX).unwrap();
        assert_eq!((r.seq, r.bytes), (3, &b"frontnext"[..]));
    }

    #[test]
    fn acks_from_the_future_and_reconnect_claims_are_refused() {
        let mut tx = Sender::new(limits(100, 10), 5);
        tx.push(b"six").unwrap();
        tx.push(b"seven").unwrap();
        assert_eq!(
            tx.ack(6),
            Err(ReplayError::FromTheFuture { peer: 6, sent: 5 })
        );
        tx.next_to_send().unwrap();
        tx.ack(6).unwrap();
        assert_eq!(
            tx.reconnect(7),
            Err(ReplayError::FromTheFuture { peer: 7, sent: 6 })
        );
        assert_eq!(
            tx.reconnect(5),
            Err(ReplayError::PeerRegressed { peer: 5, acked: 6 })
        );
        let r = tx.reconnect(6).unwrap();
        assert_eq!(r, Resend::default());
        assert_eq!(tx.next_to_send().unwrap(), (7, &b"seven"[..]));
        assert_eq!(tx.resent(), (0, 0));
    }

    #[test]
    fn the_ring_keeps_the_bytes_of_every_held_message() {
        let mut tx = Sender::new(limits(64 * 1024, 1000), 0);
        let mut rx = Receiver::new(0);
        let msg = |seq: u64| vec![seq as u8; (seq as usize * 7919) % 40_000 + 1];
        let mut pushed = 0;
        let (mut wrapped, mut sizes) = (0, std::collections::BTreeSet::new());
        while rx.last_received() < 500 {
            while tx.has_room() && pushed < 500 {
                pushed += 1;
                assert_eq!(tx.push(&msg(pushed)).unwrap(), pushed);
                wrapped += u32::from(tx.wrap.is_some());
                sizes.insert(tx.buf.len());
            }
            // Send three, lose the third, reconnect.
            for i in 0..3 {
                let Some((seq, bytes)) = tx.next_to_send() else {
                    break;
                };
                assert_eq!(bytes, &msg(seq)[..]);
                if i < 2 && rx.accept(seq).unwrap() == Accept::Deliver {
                    rx.mark_durable(seq).unwrap();
                }
            }
            if let Some(a) = rx.take_ack() {
                tx.ack(a).unwrap();
            }
            tx.reconnect(rx.last_received()).unwrap();
        }
        assert_eq!(tx.acked(), 500);
        assert!(tx.buf.len() <= 4 * 64 * 1024 + 40_000);
        // Messages went to the front of the buffer, and it grew only a few
        // times (nothing held is moved otherwise).
        assert!(wrapped > 0);
        assert!(sizes.len() <= 4, "{sizes:?}");
    }

    /// Several messages pushed at once are held, sent, acknowledged and
    /// sent again one by one, as pushed singly: a connection that drops
    /// inside a batch sends again exactly the messages the receiver lacks.
    /// What would break the window's bounds is refused, taking nothing.
    #[test]
    fn a_batch_is_held_message_by_message() {
        let mut tx = Sender::new(limits(100, 8), 0);
        let batch = |tx: &mut Sender, msgs: &[&[u8]], max_len: usize| {
            tx.push_many_with(max_len, |buf, lens| {
                let mut at = 0;
                // (A writer that claims more than its buffer copies what fits.)
                for m in msgs {
                    let n = m.len().min(buf.len().saturating_sub(at));
                    buf[at..at + n].copy_from_slice(&m[..n]);
                    lens.push(m.len());
                    at += n;
                }
                Ok::<_, ()>(())
            })
        };
        assert_eq!(batch(&mut tx, &[b"one", b"two", b"three"], 60), Ok(Ok(3)));
        assert_eq!(tx.unacked(), (3, 11));
        assert_eq!((tx.room(), tx.room_messages()), (89, 5));
        // More messages than the window has room for: nothing taken.
        let six: Vec<&[u8]> = vec![b"x"; 6];
        assert!(matches!(
            batch(&mut tx, &six, 60),
            Err(ReplayError::WindowFull { .. })
        ));
        // More bytes than asked for, or than the room (several messages):
        // nothing taken.
        assert!(batch(&mut tx, &[b"abcdef", b"ghij"], 8).is_err());
        let long = [0u8; 50];
        assert!(batch(&mut tx, &[&long[..], &long[..]], 100).is_err());
        assert_eq!(tx.unacked(), (3, 11));
        // An error of the writer takes nothing.
        let mut tx2 = tx.clone();
        assert_eq!(
            tx2.push_many_with(10, |_, lens| {
                lens.push(3);
                Err("no")
            }),
            Ok(Err("no"))
        );
        assert_eq!(tx2.unacked(), tx.unacked());
        // One message alone may take the window past its byte bound.
        let big = [7u8; 120];
        assert_eq!(batch(&mut tx, &[&big[..]], 120), Ok(Ok(4)));
        assert!(!tx.has_room());

        // Sent one by one; the connection drops after "two" arrived.
        let mut rx = Receiver::new(0);
        for want in [&b"one"[..], b"two"] {
            let (seq, bytes) = tx.next_to_send().unwrap();
            assert_eq!(bytes, want);
            assert_eq!(rx.accept(seq).unwrap(), Accept::Deliver);
        }
        let _lost = tx.next_to_send().unwrap();
        rx.mark_durable(1).unwrap();
        tx.ack(rx.take_ack().unwrap()).unwrap();
        let r = tx.reconnect(rx.last_received()).unwrap();
        assert_eq!((r.messages, r.bytes, r.dropped), (1, 5, 1));
        assert_eq!(tx.next_to_send().unwrap(), (3, &b"three"[..]));
        assert_eq!(tx.next_to_send().unwrap(), (4, &big[..]));
        assert!(tx.next_to_send().is_none());
    }
}
