//! Version negotiation: one-way (a reader against a writer's
//! `[compat_version, version]`) and two-way (two peers' ranges).

use core::fmt;

use crate::Error;

/// An inclusive range of versions, `min..=max`, `min <= max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionRange {
    /// Lowest version (for a writer: its compat_version).
    pub min: u32,
    /// Highest version (for a writer: its version).
    pub max: u32,
}

impl VersionRange {
    /// `min..=max`; [`Error::EmptyRange`] if `min > max`.
    pub fn new(min: u32, max: u32) -> Result<Self, Error> {
        if min > max {
            return Err(Error::EmptyRange { min, max });
        }
        Ok(VersionRange { min, max })
    }

    /// Whether `v` lies in the range.
    pub fn contains(&self, v: u32) -> bool {
        self.min <= v && v <= self.max
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// One-way negotiation: the highest version in `supported` that lies in
/// `offered` (`[compat_version, version]` of the writer).
///
/// A reader supporting 1..=3 reads a stream with version 5 and
/// compat_version 2 as version 3: the writer promises that readers of any
/// version from 2 on can read it.
///
/// ```
/// use proto_header::{negotiate, VersionRange};
/// let offered = VersionRange::new(2, 5).unwrap();
/// assert_eq!(negotiate(&[1, 2, 3], offered).unwrap(), 3);
/// assert!(negotiate(&[1], offered).is_err());
/// ```
///
/// Errors: [`Error::Unsupported`] naming `offered` and the supported set;
/// [`Error::EmptyRange`] if `offered.min > offered.max`.
pub fn negotiate(supported: &[u32], offered: VersionRange) -> Result<u32, Error> {
    if offered.min > offered.max {
        return Err(Error::EmptyRange {
            min: offered.min,
            max: offered.max,
        });
    }
    supported
        .iter()
        .copied()
        .filter(|&v| offered.contains(v))
        .max()
        .ok_or_else(|| {
            let mut s = supported.to_vec();
            s.sort_unstable();
            s.dedup();
            Error::Unsupported {
                offered,
                supported: s,
            }
        })
}

/// Two-way negotiation: the highest version inside both peers' ranges.
///
/// Errors: [`Error::NoCommonVersion`] naming both ranges;
/// [`Error::EmptyRange`] if either range is empty.
pub fn negotiate_two_way(ours: VersionRange, theirs: VersionRange) -> Result<u32, Error> {
    for r in [ours, theirs] {
        if r.min > r.max {
            return Err(Error::EmptyRange {
                min: r.min,
                max: r.max,
            });
        }
    }
    let hi = ours.max.min(theirs.max);
    let lo = ours.min.max(theirs.min);
    if lo <= hi {
        Ok(hi)
    } else {
        Err(Error::NoCommonVersion { ours, theirs })
    }
}
