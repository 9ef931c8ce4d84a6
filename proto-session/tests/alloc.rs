//! Nothing is allocated per unit on the session's path: both sans-IO
//! sides (`Sending` with its emitter, window and framer; `Receiving` with
//! its framer and the format's check) carry 10,000 small units with as many
//! allocations as 1,000, apart from what grows with the bytes (the
//! receiver's output and the in-memory wire double now and then, a token
//! goes out every `token_every` bytes).
//!
//! Its own test binary: the counting global allocator is only here, and
//! the one test keeps other threads from allocating while it counts.

#[path = "support/pair.rs"]
#[allow(dead_code)]
mod pair;

use std::alloc::System;

use pair::{run, small_units, Plan};
use proto_session::replay::Limits;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations of one clean transfer of `n` small units, and its tokens.
fn allocs(n: usize) -> (usize, u64) {
    let file = small_units(n);
    let plan = Plan {
        window: Limits {
            max_bytes: 64 << 10,
            max_messages: 1024,
        },
        token_every: 1 << 20,
        chunk: 4096,
        ..Plan::clean()
    };
    let reg = Region::new(GLOBAL);
    let o = run(&file, &plan, 1);
    let s = reg.change();
    assert!(o.error.is_none(), "{:?}", o.error);
    assert!(o.out == file, "output differs");
    assert_eq!(o.received.units, n as u64 + 2);
    (s.allocations + s.reallocations, o.sent.tokens_sent)
}

#[test]
fn a_session_allocates_nothing_per_unit() {
    let (a1, t1) = allocs(1000);
    let (a2, t2) = allocs(10_000);
    eprintln!("allocations: {a1} for 1,000 units ({t1} tokens), {a2} for 10,000 ({t2} tokens)");
    // Doubling buffers: a few more reallocations for ten times the bytes;
    // a token costs a few allocations (its bytes, its queue entry).
    let slack = 24 + 4 * (t2 - t1) as usize;
    assert!(
        a2 <= a1 + slack,
        "{a1} allocations for 1,000 units, {a2} for 10,000 (slack {slack})"
    );
}
