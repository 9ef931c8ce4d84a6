//! Negotiation: the answer lies in both ranges and is maximal, or the error
//! is exact.

use proptest::collection::vec;
use proptest::prelude::*;
use proto_header::{negotiate, negotiate_two_way, Error, VersionRange};

fn r(min: u32, max: u32) -> VersionRange {
    VersionRange::new(min, max).unwrap()
}

#[test]
fn seed_case_reads_version_5_compat_2_as_3() {
    // passt's loop compares against the wrong bounds; the rule is the
    // highest supported v with compat_version <= v <= version.
    assert_eq!(negotiate(&[1, 2, 3], r(2, 5)).unwrap(), 3);
    assert_eq!(negotiate(&[3, 1, 2], r(2, 5)).unwrap(), 3);
    assert_eq!(negotiate(&[1, 2, 3], r(1, 1)).unwrap(), 1);
    assert_eq!(negotiate(&[1, 2, 3, 7], r(2, 5)).unwrap(), 3);
}

#[test]
fn unsupported_names_both() {
    let err = negotiate(&[3, 1, 1], r(4, 6)).unwrap_err();
    assert_eq!(
        err,
        Error::Unsupported {
            offered: r(4, 6),
            supported: vec![1, 3]
        }
    );
    assert_eq!(
        err.to_string(),
        "unsupported: the stream offers versions 4..=6, this reader supports {1, 3}"
    );
    assert!(matches!(
        negotiate(&[], r(1, 1)),
        Err(Error::Unsupported { .. })
    ));
}

#[test]
fn empty_ranges_are_refused() {
    assert_eq!(
        VersionRange::new(3, 2).unwrap_err(),
        Error::EmptyRange { min: 3, max: 2 }
    );
    let bad = VersionRange { min: 3, max: 2 };
    assert!(matches!(
        negotiate(&[2, 3], bad),
        Err(Error::EmptyRange { .. })
    ));
    assert!(matches!(
        negotiate_two_way(bad, r(1, 5)),
        Err(Error::EmptyRange { .. })
    ));
    assert!(matches!(
        negotiate_two_way(r(1, 5), bad),
        Err(Error::EmptyRange { .. })
    ));
}

#[test]
fn two_way_examples() {
    assert_eq!(negotiate_two_way(r(1, 3), r(2, 5)).unwrap(), 3);
    assert_eq!(negotiate_two_way(r(2, 5), r(1, 3)).unwrap(), 3);
    assert_eq!(negotiate_two_way(r(3, 3), r(3, 9)).unwrap(), 3);
    let err = negotiate_two_way(r(1, 2), r(3, 4)).unwrap_err();
    assert_eq!(
        err,
        Error::NoCommonVersion {
            ours: r(1, 2),
            theirs: r(3, 4)
        }
    );
    assert_eq!(
        err.to_string(),
        "no common version: ours are 1..=2, theirs are 3..=4"
    );
}

/// Small versions collide often; any u32 finds edge cases at the top.
fn version() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..12, any::<u32>(), (u32::MAX - 3)..=u32::MAX]
}

fn range() -> impl Strategy<Value = VersionRange> {
    (version(), version()).prop_map(|(a, b)| VersionRange {
        min: a.min(b),
        max: a.max(b),
    })
}

proptest! {
    #[test]
    fn one_way_is_inside_and_maximal(supported in vec(version(), 0..8), offered in range()) {
        match negotiate(&supported, offered) {
            Ok(v) => {
                prop_assert!(supported.contains(&v));
                prop_assert!(offered.min <= v && v <= offered.max);
                prop_assert!(!supported.iter().any(|&w| offered.contains(w) && w > v));
            }
            Err(e) => {
                prop_assert!(!supported.iter().any(|&w| offered.contains(w)));
                let mut s = supported.clone();
                s.sort_unstable();
                s.dedup();
                prop_assert_eq!(e, Error::Unsupported { offered, supported: s });
            }
        }
    }

    #[test]
    fn two_way_is_inside_both_and_maximal(a in range(), b in range()) {
        match negotiate_two_way(a, b) {
            Ok(v) => {
                prop_assert!(a.contains(v) && b.contains(v));
                prop_assert!(v == u32::MAX || !(a.contains(v + 1) && b.contains(v + 1)));
                prop_assert_eq!(negotiate_two_way(b, a), Ok(v));
            }
            Err(e) => {
                // No overlap: one range ends before the other starts.
                prop_assert!(a.max < b.min || b.max < a.min);
                prop_assert_eq!(e, Error::NoCommonVersion { ours: a, theirs: b });
            }
        }
    }

    /// Two-way equals one-way with the whole of our range as the supported set.
    #[test]
    fn two_way_agrees_with_one_way(lo in 0u32..40, len in 0u32..20, b in (0u32..60, 0u32..60)) {
        let ours = VersionRange { min: lo, max: lo + len };
        let theirs = VersionRange { min: b.0.min(b.1), max: b.0.max(b.1) };
        let set: Vec<u32> = (ours.min..=ours.max).collect();
        prop_assert_eq!(negotiate_two_way(ours, theirs).ok(), negotiate(&set, theirs).ok());
    }
}
