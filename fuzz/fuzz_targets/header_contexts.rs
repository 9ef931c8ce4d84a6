//! `header_contexts`: context selections and feature dependencies.
//!
//! Properties:
//! - arbitrary payloads against an arbitrary negotiated set: no panic; an
//!   error is the one a straightforward model predicts (the checks in their
//!   documented order, with the same offsets); an accepted selection holds
//!   distinct negotiated ids, no more than negotiated, and re-encodes to the
//!   bytes it was read from;
//! - a valid selection (distinct ids drawn from the negotiated set) encodes
//!   and parses back to itself;
//! - `advertised` is the largest subset of the supported features closed
//!   under the dependency table (brute force over 8 feature bits).
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use arbitrary::Arbitrary;
use proto_header::{advertised, encode_selection, parse_selection, Error, FeatureDep};

#[derive(Arbitrary, Debug)]
struct Input {
    negotiated: Vec<u32>,
    base: u32,
    payload: Vec<u8>,
    picks: Vec<u8>,
    supported: u8,
    deps: Vec<(u8, u8)>,
}

/// The selection rules, written out plainly.
fn model(bytes: &[u8], base: u64, negotiated: &[u32]) -> Result<(Vec<u32>, usize), Error> {
    if bytes.len() < 4 {
        return Err(Error::Truncated {
            what: "context selection length",
            offset: base,
            needed: 4,
            available: bytes.len() as u64,
        });
    }
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if !len.is_multiple_of(4) {
        return Err(Error::SelectionLenNotMultipleOf4 { offset: base, len });
    }
    if len == 0 {
        return Err(Error::EmptySelection { offset: base });
    }
    if (len / 4) as usize > negotiated.len() {
        return Err(Error::SelectionTooLong {
            offset: base,
            count: u64::from(len / 4),
            negotiated: negotiated.len() as u64,
        });
    }
    if bytes.len() - 4 < len as usize {
        return Err(Error::Truncated {
            what: "context selection",
            offset: base + 4,
            needed: len.into(),
            available: (bytes.len() - 4) as u64,
        });
    }
    let mut ids = Vec::new();
    for i in 0..(len / 4) as usize {
        let at = 4 + 4 * i;
        let id = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let offset = base + at as u64;
        if !negotiated.contains(&id) {
            return Err(Error::UnknownContext { offset, id });
        }
        if ids.contains(&id) {
            return Err(Error::DuplicateContext { offset, id });
        }
        ids.push(id);
    }
    Ok((ids, 4 + len as usize))
}

target!(|input: Input| {
    let Input {
        mut negotiated,
        base,
        payload,
        picks,
        supported,
        deps,
    } = input;
    negotiated.truncate(64);
    let base = u64::from(base);

    // Arbitrary payloads.
    let got = parse_selection(&payload, base, &negotiated);
    assert_eq!(got, model(&payload, base, &negotiated));
    if let Ok((ids, used)) = &got {
        assert!(!ids.is_empty() && ids.len() <= negotiated.len());
        let mut again = Vec::new();
        encode_selection(ids, &mut again).expect("encode");
        assert_eq!(&again[..], &payload[..*used]);
    }

    // A valid selection round-trips.
    if !negotiated.is_empty() {
        let mut ids: Vec<u32> = Vec::new();
        for p in picks {
            let id = negotiated[usize::from(p) % negotiated.len()];
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if !ids.is_empty() {
            let mut b = Vec::new();
            encode_selection(&ids, &mut b).expect("encode");
            let n = b.len();
            b.extend_from_slice(&payload);
            assert_eq!(parse_selection(&b, base, &negotiated), Ok((ids, n)));
        }
    }

    // Feature dependencies over 8 bits.
    let deps: Vec<FeatureDep> = deps
        .into_iter()
        .take(16)
        .map(|(f, r)| FeatureDep {
            feature: 1 << (f % 8),
            requires: 1 << (r % 8),
        })
        .collect();
    let supported = u64::from(supported);
    let a = advertised(supported, &deps);
    let closed = |s: u64| {
        deps.iter()
            .all(|d| s & d.feature == 0 || s & d.requires == d.requires)
    };
    assert_eq!(a & !supported, 0);
    assert!(closed(a));
    for s in 0u64..256 {
        if s & !supported == 0 && closed(s) {
            assert_eq!(s & !a, 0, "closed subset {s:#b} is not within {a:#b}");
        }
    }
});
