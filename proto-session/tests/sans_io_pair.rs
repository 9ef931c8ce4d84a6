//! Both sans-IO sides of a session against each other in memory (no
//! socket, no clock; see `support/pair.rs`): the kit's native sample streams
//! arrive byte-identical through connections that drop, reads cut to any
//! size, and a sender that forgets its transfer; damage in transit is
//! refused with a typed error and never written.

#[path = "support/pair.rs"]
mod pair;

use pair::{run, Plan};
use proto_session::replay::Limits;
use proto_session::SessionError;

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/../testdata/native/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn small_window() -> Limits {
    Limits {
        max_bytes: 200_000,
        max_messages: 3,
    }
}

#[test]
fn a_clean_transfer_is_byte_identical() {
    for name in ["data-v1.stream", "sample-v1.stream"] {
        let file = sample(name);
        for chunk in [usize::MAX, 1, 7, 4096] {
            let plan = Plan {
                chunk,
                ..Plan::clean()
            };
            let o = run(&file, &plan, 1);
            assert!(o.error.is_none(), "{name}, chunk {chunk}: {:?}", o.error);
            assert!(o.out == file, "{name}, chunk {chunk}: output differs");
            assert_eq!(o.connections, 1);
            assert_eq!(o.received.duplicates, 0);
            assert_eq!(o.sent.units_resent, 0);
        }
    }
}

#[test]
fn drops_resend_only_what_the_receiver_lacks() {
    let file = sample("data-v1.stream");
    for drop in [1, 150_000, 260_000, 300_000] {
        let plan = Plan {
            window: small_window(),
            drops: vec![drop],
            chunk: 9000,
            ..Plan::clean()
        };
        let o = run(&file, &plan, 50);
        assert!(o.error.is_none(), "drop {drop}: {:?}", o.error);
        assert!(o.out == file, "drop {drop}: output differs");
        assert!(o.connections > 1, "drop {drop}: never dropped");
        assert_eq!(o.received.duplicates, 0, "drop {drop}");
        assert_eq!(o.sent.resumed_by_seq, o.connections - 1, "drop {drop}");
        // Resent: only the unacknowledged window, never more than it holds.
        assert!(
            o.sent.units_resent <= (o.connections - 1) * small_window().max_messages as u64,
            "drop {drop}: {} units resent over {} connections",
            o.sent.units_resent,
            o.connections
        );
    }
}

#[test]
fn a_sender_that_forgets_resumes_from_the_receivers_token() {
    let file = sample("data-v1.stream");
    for token_every in [1, 1 << 20] {
        let plan = Plan {
            window: small_window(),
            token_every,
            drops: vec![200_000],
            forget: vec![true],
            chunk: 5000,
            ..Plan::clean()
        };
        let o = run(&file, &plan, 50);
        assert!(
            o.error.is_none(),
            "token every {token_every}: {:?}",
            o.error
        );
        assert!(o.out == file, "token every {token_every}: output differs");
        assert!(o.forgot > 0);
        assert!(o.sent.resumed_by_token > 0, "token every {token_every}");
        assert_eq!(o.received.resumed_by_token, o.sent.resumed_by_token);
        assert_eq!(o.sent.resumed_by_seq, 0);
        assert_eq!(o.received.duplicates, 0);
    }
}

/// A byte damaged in transit: the frame's CRC (or the unit's) refuses it,
/// with a typed error; the output is a prefix of the stream, never a
/// damaged unit. The flipped bytes cover the handshake, frame headers and
/// the middle of a 150 KB data command.
#[test]
fn damage_in_transit_is_refused_and_never_written() {
    let file = sample("data-v1.stream");
    for at in [3u64, 20, 40, 200, 300, 1000, 100_500, 200_000, 300_000] {
        let plan = Plan {
            flip: Some(at),
            ..Plan::clean()
        };
        let o = run(&file, &plan, 1);
        assert!(
            file.starts_with(&o.out),
            "flip at {at}: output not a prefix"
        );
        match &o.error {
            Some(SessionError::Frame(_) | SessionError::Header(_) | SessionError::Unit { .. }) => {}
            e => panic!(
                "flip at {at}: {e:?} (output {} of {})",
                o.out.len(),
                file.len()
            ),
        }
    }
}

/// Found by the `session_pair` fuzz target (its harness then lost what a
/// receiver read just before a drop): a window larger than the stream,
/// no token ever, whole-buffer deliveries, a drop on every connection and
/// a sender that forgets before each one. Every connection still moves
/// the receiver forward and the stream arrives whole.
#[test]
fn a_sender_that_forgets_every_time_and_no_token_still_completes() {
    let file = sample("data-v1.stream");
    let plan = Plan {
        window: Limits {
            max_bytes: 2 << 20,
            max_messages: 63,
        },
        token_every: u64::MAX,
        drops: vec![200_000, 10_000],
        forget: vec![true],
        ..Plan::clean()
    };
    let o = run(&file, &plan, 20);
    assert!(o.error.is_none(), "{:?}", o.error);
    assert!(o.out == file, "output differs");
    assert!(o.connections > 1 && o.forgot == o.connections - 1);
    assert_eq!(o.sent.resumed_by_token, o.connections - 1);
    assert!(o.sent.units_skipped > 0);
    assert_eq!(o.received.duplicates, 0);
}
