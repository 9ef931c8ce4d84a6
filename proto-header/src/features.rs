//! Feature bits: required-feature checks (as ceph does) and dependencies
//! (as NBD's payload flag, advertised only when what it depends on is).

use crate::Error;

/// One dependency: `feature` is advertised only when every bit of
/// `requires` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FeatureDep {
    /// The dependent feature bit(s).
    pub feature: u64,
    /// The bit(s) it needs.
    pub requires: u64,
}

/// The features to advertise: `supported`, minus every feature whose
/// dependencies are not all advertised (transitively: a feature whose
/// dependency is itself dropped is dropped too).
///
/// ```
/// use proto_header::{advertised, FeatureDep};
/// const BASE: u64 = 1;
/// const PAYLOAD: u64 = 2;
/// let deps = [FeatureDep { feature: PAYLOAD, requires: BASE }];
/// assert_eq!(advertised(BASE | PAYLOAD, &deps), BASE | PAYLOAD);
/// assert_eq!(advertised(PAYLOAD, &deps), 0);
/// ```
pub fn advertised(supported: u64, deps: &[FeatureDep]) -> u64 {
    let mut set = supported;
    loop {
        let mut next = set;
        for d in deps {
            if next & d.feature != 0 && next & d.requires != d.requires {
                next &= !d.feature;
            }
        }
        if next == set {
            return set;
        }
        set = next;
    }
}

/// Checks that every `required` bit is `known`; otherwise
/// [`Error::UnknownRequiredFeatures`] naming the unknown bits (at `offset`).
pub fn check_required(required: u64, known: u64, offset: u64) -> Result<(), Error> {
    let unknown = required & !known;
    if unknown != 0 {
        return Err(Error::UnknownRequiredFeatures {
            offset,
            unknown,
            required,
            known,
        });
    }
    Ok(())
}
