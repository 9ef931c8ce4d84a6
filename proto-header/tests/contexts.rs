//! Context selection (NBD payload) and feature dependencies.

use proptest::collection::vec;
use proptest::prelude::*;
use proto_header::{
    advertised, check_required, encode_selection, parse_selection, Error, FeatureDep,
};

const NEGOTIATED: &[u32] = &[1, 5, 9];

fn raw(len: u32, ids: &[u32]) -> Vec<u8> {
    let mut b = len.to_be_bytes().to_vec();
    for id in ids {
        b.extend_from_slice(&id.to_be_bytes());
    }
    b
}

#[test]
fn valid_selection_roundtrips() {
    let mut b = Vec::new();
    encode_selection(&[9, 1], &mut b).unwrap();
    assert_eq!(b, raw(8, &[9, 1]));
    b.extend_from_slice(b"next");
    assert_eq!(
        parse_selection(&b, 0, NEGOTIATED).unwrap(),
        (vec![9, 1], 12)
    );
}

#[test]
fn each_rejection_has_its_own_error() {
    assert_eq!(
        parse_selection(&raw(0, &[]), 10, NEGOTIATED).unwrap_err(),
        Error::EmptySelection { offset: 10 }
    );
    assert_eq!(
        parse_selection(&raw(4, &[2]), 10, NEGOTIATED).unwrap_err(),
        Error::UnknownContext { offset: 14, id: 2 }
    );
    assert_eq!(
        parse_selection(&raw(12, &[1, 5, 1]), 10, NEGOTIATED).unwrap_err(),
        Error::DuplicateContext { offset: 22, id: 1 }
    );
    assert_eq!(
        parse_selection(&raw(16, &[1, 5, 9, 9]), 10, NEGOTIATED).unwrap_err(),
        Error::SelectionTooLong {
            offset: 10,
            count: 4,
            negotiated: 3
        }
    );
    assert_eq!(
        parse_selection(&raw(6, &[1, 5]), 10, NEGOTIATED).unwrap_err(),
        Error::SelectionLenNotMultipleOf4 { offset: 10, len: 6 }
    );
    // A huge declared length is refused from the length alone.
    assert_eq!(
        parse_selection(&raw(u32::MAX - 3, &[]), 0, NEGOTIATED).unwrap_err(),
        Error::SelectionTooLong {
            offset: 0,
            count: u64::from(u32::MAX / 4),
            negotiated: 3
        }
    );
    assert_eq!(
        parse_selection(&raw(8, &[1]), 10, NEGOTIATED).unwrap_err(),
        Error::Truncated {
            what: "context selection",
            offset: 14,
            needed: 8,
            available: 4
        }
    );
    assert_eq!(
        parse_selection(&[0, 0], 10, NEGOTIATED).unwrap_err(),
        Error::Truncated {
            what: "context selection length",
            offset: 10,
            needed: 4,
            available: 2
        }
    );
    let msg = Error::DuplicateContext { offset: 22, id: 1 }.to_string();
    assert!(msg.contains("byte offset 22"), "{msg}");
}

/// The ids a v1 header advertises are what a selection is checked against.
#[test]
fn selection_against_an_advertised_header() {
    use proto_header::{Context, Endian, V1Header};
    let h = V1Header {
        byte_order: Endian::Big,
        features_supported: 0,
        features_required: 0,
        stream_id: [0; 16],
        contexts: vec![
            Context {
                id: 4,
                name: "base:allocation".into(),
            },
            Context {
                id: 8,
                name: "qemu:dirty-bitmap:b0".into(),
            },
        ],
    };
    let negotiated = h.context_ids();
    assert_eq!(negotiated, vec![4, 8]);
    let mut b = Vec::new();
    encode_selection(&[8], &mut b).unwrap();
    assert_eq!(parse_selection(&b, 0, &negotiated).unwrap(), (vec![8], 8));
    let mut b = Vec::new();
    encode_selection(&[8, 4, 5], &mut b).unwrap();
    assert!(matches!(
        parse_selection(&b, 0, &negotiated),
        Err(Error::SelectionTooLong {
            count: 3,
            negotiated: 2,
            ..
        })
    ));
}

/// NBD: the payload flag is advertised only when block status (which it
/// extends) is negotiated; chains drop transitively.
#[test]
fn feature_dependencies() {
    const BLOCK_STATUS: u64 = 1 << 0;
    const PAYLOAD: u64 = 1 << 1;
    const EXTENDED: u64 = 1 << 2;
    const OTHER: u64 = 1 << 3;
    let deps = [
        FeatureDep {
            feature: PAYLOAD,
            requires: BLOCK_STATUS,
        },
        FeatureDep {
            feature: EXTENDED,
            requires: PAYLOAD,
        },
    ];
    let all = BLOCK_STATUS | PAYLOAD | EXTENDED | OTHER;
    assert_eq!(advertised(all, &deps), all);
    assert_eq!(advertised(all & !BLOCK_STATUS, &deps), OTHER);
    assert_eq!(advertised(all & !PAYLOAD, &deps), BLOCK_STATUS | OTHER);
    assert_eq!(advertised(0, &deps), 0);
    assert_eq!(advertised(all, &[]), all);
    // Order of the table does not matter.
    let rev = [deps[1], deps[0]];
    assert_eq!(advertised(all & !BLOCK_STATUS, &rev), OTHER);
}

#[test]
fn required_features() {
    assert!(check_required(0b101, 0b111, 0).is_ok());
    assert_eq!(
        check_required(0b1101, 0b0101, 7).unwrap_err(),
        Error::UnknownRequiredFeatures {
            offset: 7,
            unknown: 0b1000,
            required: 0b1101,
            known: 0b0101
        }
    );
}

fn deps() -> impl Strategy<Value = Vec<FeatureDep>> {
    vec(
        (0u32..8, 0u32..8).prop_map(|(f, r)| FeatureDep {
            feature: 1 << f,
            requires: 1 << r,
        }),
        0..8,
    )
}

proptest! {
    /// The advertised set is a subset of the supported one, closed under
    /// the dependencies, and the largest such subset.
    #[test]
    fn advertised_is_the_largest_closed_subset(supported in 0u64..256, deps in deps()) {
        let a = advertised(supported, &deps);
        prop_assert_eq!(a & !supported, 0);
        let closed = |s: u64| deps.iter().all(|d| s & d.feature == 0 || s & d.requires == d.requires);
        prop_assert!(closed(a));
        // Brute force: no closed subset of `supported` has a bit `a` lacks.
        for s in 0u64..256 {
            if s & !supported == 0 && closed(s) {
                prop_assert_eq!(s & !a, 0, "closed subset {:#b} not within {:#b}", s, a);
            }
        }
    }

    #[test]
    fn arbitrary_payloads(b in vec(any::<u8>(), 0..40), negotiated in vec(0u32..8, 0..6)) {
        if let Ok((ids, used)) = parse_selection(&b, 0, &negotiated) {
            prop_assert!(!ids.is_empty() && ids.len() <= negotiated.len());
            prop_assert!(ids.iter().all(|id| negotiated.contains(id)));
            let mut again = Vec::new();
            encode_selection(&ids, &mut again).unwrap();
            prop_assert_eq!(&again[..], &b[..used]);
        }
    }

    #[test]
    fn valid_selections_roundtrip(negotiated in vec(any::<u32>(), 1..10), pick in vec(any::<prop::sample::Index>(), 1..10)) {
        let mut ids: Vec<u32> = Vec::new();
        for i in pick {
            let id = negotiated[i.index(negotiated.len())];
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mut b = Vec::new();
        encode_selection(&ids, &mut b).unwrap();
        prop_assert_eq!(parse_selection(&b, 0, &negotiated).unwrap(), (ids, b.len()));
    }
}
