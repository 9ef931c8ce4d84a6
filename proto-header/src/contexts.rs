//! Context selection, as in NBD's `FLAG_PAYLOAD`: a peer asks for a subset
//! of the negotiated contexts by id.
//!
//! On the wire: `len u32 BE | ids[len / 4]`, each id a u32 BE.

use alloc::vec::Vec;

use zerocopy::byteorder::{BigEndian, U32};
use zerocopy::{FromBytes, IntoBytes};

use crate::version::LEN_PREFIX;
use crate::Error;

/// Appends the selection `ids` as a length-prefixed payload. The ids are
/// not checked (see [`parse_selection`]).
///
/// Errors: [`Error::EncodeTooLong`] when the payload length does not fit
/// a u32.
pub fn encode_selection(ids: &[u32], out: &mut Vec<u8>) -> Result<(), Error> {
    let len = ids.len().checked_mul(4).filter(|&l| l <= u32::MAX as usize);
    let Some(len) = len else {
        return Err(Error::EncodeTooLong {
            what: "context selection",
            len: ids.len() as u64,
            max: u64::from(u32::MAX / 4),
        });
    };
    out.reserve(LEN_PREFIX + len);
    out.extend_from_slice(U32::<BigEndian>::new(len as u32).as_bytes());
    for &id in ids {
        out.extend_from_slice(U32::<BigEndian>::new(id).as_bytes());
    }
    Ok(())
}

/// Reads a length-prefixed selection at the start of `bytes` (`base`: its
/// stream offset) against the `negotiated` context ids. Returns the ids in
/// the order given and the bytes taken.
///
/// Checks, each with its own error, in this order:
/// [`Error::Truncated`] (no length prefix),
/// [`Error::SelectionLenNotMultipleOf4`], [`Error::EmptySelection`],
/// [`Error::SelectionTooLong`] (more ids than negotiated; checked before the
/// payload is read or anything allocated), [`Error::Truncated`] (payload runs
/// past the input), then per id [`Error::UnknownContext`] and
/// [`Error::DuplicateContext`].
pub fn parse_selection(
    bytes: &[u8],
    base: u64,
    negotiated: &[u32],
) -> Result<(Vec<u32>, usize), Error> {
    let Ok((len, rest)) = U32::<BigEndian>::read_from_prefix(bytes) else {
        return Err(Error::Truncated {
            what: "context selection length",
            offset: base,
            needed: LEN_PREFIX as u64,
            available: bytes.len() as u64,
        });
    };
    let len = len.get();
    if len % 4 != 0 {
        return Err(Error::SelectionLenNotMultipleOf4 { offset: base, len });
    }
    if len == 0 {
        return Err(Error::EmptySelection { offset: base });
    }
    let count = u64::from(len / 4);
    if count > negotiated.len() as u64 {
        return Err(Error::SelectionTooLong {
            offset: base,
            count,
            negotiated: negotiated.len() as u64,
        });
    }
    let Some(payload) = rest.get(..len as usize) else {
        return Err(Error::Truncated {
            what: "context selection",
            offset: base + LEN_PREFIX as u64,
            needed: len.into(),
            available: rest.len() as u64,
        });
    };
    // `len` is a multiple of 4 and the ids are unaligned: this always borrows.
    let wire = <[U32<BigEndian>]>::ref_from_bytes(payload).unwrap_or(&[]);
    let mut ids: Vec<u32> = Vec::with_capacity(count as usize);
    for (i, id) in wire.iter().enumerate() {
        let offset = base + (LEN_PREFIX + 4 * i) as u64;
        let id = id.get();
        if !negotiated.contains(&id) {
            return Err(Error::UnknownContext { offset, id });
        }
        if ids.contains(&id) {
            return Err(Error::DuplicateContext { offset, id });
        }
        ids.push(id);
    }
    Ok((ids, LEN_PREFIX + len as usize))
}
