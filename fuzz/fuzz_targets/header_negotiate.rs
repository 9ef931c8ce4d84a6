//! `header_negotiate`: arbitrary supported sets and version ranges.
//!
//! Properties: `negotiate` and `negotiate_two_way` match brute-force
//! models, exactly (the same version, or the same error with the same
//! ranges and the sorted, deduplicated supported set):
//! - with versions folded into 0..64, by scanning every version from the
//!   top of the offered range down;
//! - with full u32 versions, by sorting the supported set from the top and
//!   taking the first one in range (two-way: the smaller maximum, if it is
//!   at least the larger minimum);
//! - `VersionTable::negotiate` over a table of the same versions picks the
//!   entry of the same version.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use arbitrary::Arbitrary;
use proto_header::{negotiate, negotiate_two_way, Error, VersionRange};

#[derive(Arbitrary, Debug)]
struct Input {
    supported: Vec<u32>,
    a: (u32, u32),
    b: (u32, u32),
    small: bool,
}

fn range((x, y): (u32, u32)) -> VersionRange {
    VersionRange {
        min: x.min(y),
        max: x.max(y),
    }
}

fn unsupported(offered: VersionRange, supported: &[u32]) -> Error {
    let mut s = supported.to_vec();
    s.sort_unstable();
    s.dedup();
    Error::Unsupported {
        offered,
        supported: s,
    }
}

/// Scans every version of the (small) offered range, top down.
fn one_way_scan(supported: &[u32], offered: VersionRange) -> Result<u32, Error> {
    let mut v = offered.max;
    loop {
        if supported.contains(&v) {
            return Ok(v);
        }
        if v == offered.min {
            return Err(unsupported(offered, supported));
        }
        v -= 1;
    }
}

/// Sorts the supported set from the top and takes the first in range.
fn one_way_sorted(supported: &[u32], offered: VersionRange) -> Result<u32, Error> {
    let mut s = supported.to_vec();
    s.sort_unstable_by(|x, y| y.cmp(x));
    s.into_iter()
        .find(|&v| offered.min <= v && v <= offered.max)
        .ok_or_else(|| unsupported(offered, supported))
}

/// Scans every version 0..64 for the highest in both ranges.
fn two_way_scan(ours: VersionRange, theirs: VersionRange) -> Result<u32, Error> {
    (0..64u32)
        .rev()
        .find(|&v| ours.contains(v) && theirs.contains(v))
        .ok_or(Error::NoCommonVersion { ours, theirs })
}

fn two_way_closed(ours: VersionRange, theirs: VersionRange) -> Result<u32, Error> {
    let hi = ours.max.min(theirs.max);
    if hi >= ours.min && hi >= theirs.min {
        Ok(hi)
    } else {
        Err(Error::NoCommonVersion { ours, theirs })
    }
}

target!(|input: Input| {
    let Input {
        mut supported,
        mut a,
        mut b,
        small,
    } = input;
    supported.truncate(64);
    if small {
        for v in supported
            .iter_mut()
            .chain([&mut a.0, &mut a.1, &mut b.0, &mut b.1])
        {
            *v %= 64;
        }
    }
    let (ra, rb) = (range(a), range(b));
    let got = negotiate(&supported, ra);
    assert_eq!(got, one_way_sorted(&supported, ra));
    if small {
        assert_eq!(got, one_way_scan(&supported, ra));
    }
    let two = negotiate_two_way(ra, rb);
    assert_eq!(two, two_way_closed(ra, rb));
    assert_eq!(
        two,
        negotiate_two_way(rb, ra).map_err(|_| Error::NoCommonVersion {
            ours: ra,
            theirs: rb
        })
    );
    if small {
        assert_eq!(two, two_way_scan(ra, rb));
    }
    // An empty range is refused, never answered.
    if a.0 != a.1 {
        let bad = VersionRange {
            min: ra.max,
            max: ra.min,
        };
        assert!(matches!(
            negotiate(&supported, bad),
            Err(Error::EmptyRange { .. })
        ));
        assert!(matches!(
            negotiate_two_way(bad, rb),
            Err(Error::EmptyRange { .. })
        ));
    }
});
