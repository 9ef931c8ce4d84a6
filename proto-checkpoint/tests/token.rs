//! `Token`: the wire form and the text form.
//!
//! Every valid token survives both forms unchanged; every damaged, cut,
//! padded, re-versioned or inconsistent one is refused with the typed error
//! that names what is wrong, and no input at all makes the decoder panic.

use proptest::prelude::*;
use proto_checkpoint::token::{
    MAX_STATE_LEN, MAX_TOKEN_LEN, TEXT_PREFIX, TOKEN_FIXED_LEN, TOKEN_VERSION,
};
use proto_checkpoint::{Token, TokenError};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        // A failure shrinks for at most this long (ms): cases are big.
        max_shrink_time: 30_000,
        ..ProptestConfig::default()
    }
}

/// A u64 biased towards the edges, where the field checks live.
fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => any::<u64>(),
        2 => 0u64..64,
        1 => (u64::MAX - 64)..=u64::MAX,
    ]
}

/// Producer states: usually short, sometimes at or near the limit.
fn state() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => proptest::collection::vec(any::<u8>(), (MAX_STATE_LEN - 2)..=MAX_STATE_LEN),
    ]
}

/// `x` reduced into `0..=max` (the whole range, no overflow).
fn upto(x: u64, max: u64) -> u64 {
    (u128::from(x) % (u128::from(max) + 1)) as u64
}

/// Any token that [`Token::check`] accepts.
fn valid_token() -> impl Strategy<Value = Token> {
    (
        any::<[u8; 16]>(),
        edgy_u64(),
        edgy_u64(),
        edgy_u64(),
        edgy_u64(),
        any::<bool>(),
        any::<bool>(),
        state(),
    )
        .prop_map(|(stream_id, offset, a, b, c, ended, splitting, state)| {
            // split_done > 0 needs seq < offset (so offset >= 1).
            let split_done = if ended || !splitting || offset == 0 {
                0
            } else {
                upto(a, offset - 1) + 1
            };
            let seq_max = if split_done > 0 { offset - 1 } else { offset };
            let seq = upto(b, seq_max);
            let since_safe_point = upto(c, seq);
            Token {
                stream_id,
                seq,
                offset,
                since_safe_point,
                split_done,
                ended,
                state,
            }
        })
}

/// The header fields of a token as written on the wire, for crafting
/// tokens that the encoder would never write.
#[derive(Clone, Debug)]
struct Raw {
    size: Option<u32>,
    version: u16,
    flags: u16,
    stream_id: [u8; 16],
    seq: u64,
    offset: u64,
    since_safe_point: u64,
    split_done: u64,
    state_len: Option<u32>,
    state: Vec<u8>,
}

impl Raw {
    fn of(t: &Token) -> Raw {
        Raw {
            size: None,
            version: TOKEN_VERSION,
            flags: u16::from(t.ended),
            stream_id: t.stream_id,
            seq: t.seq,
            offset: t.offset,
            since_safe_point: t.since_safe_point,
            split_done: t.split_done,
            state_len: None,
            state: t.state.clone(),
        }
    }

    /// The bytes, with `size` and `state_len` filled in unless given, and
    /// a correct CRC over everything before it.
    fn bytes(&self) -> Vec<u8> {
        let size = self
            .size
            .unwrap_or((TOKEN_FIXED_LEN + self.state.len()) as u32);
        let state_len = self.state_len.unwrap_or(self.state.len() as u32);
        let mut b = Vec::new();
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.stream_id);
        for v in [
            self.seq,
            self.offset,
            self.since_safe_point,
            self.split_done,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&state_len.to_le_bytes());
        b.extend_from_slice(&self.state);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }
}

/// Writes a CRC over every byte but the last four into them.
fn fix_crc(b: &mut [u8]) {
    let n = b.len() - 4;
    let crc = crc32c::crc32c(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
}

#[track_caller]
fn assert_out_of_range(got: Result<Token, TokenError>, field: &str, value: u64) {
    match got {
        Err(TokenError::OutOfRange {
            field: f,
            value: v,
            why,
        }) => {
            assert_eq!((f, v), (field, value), "{why}");
        }
        other => panic!("expected `{field}` = {value} out of range, got {other:?}"),
    }
}

/// The error every decoding of a damaged token must give: never `Ok`.
#[track_caller]
fn refused(got: Result<Token, TokenError>) -> TokenError {
    match got {
        Ok(t) => panic!("damaged token accepted: {t:?}"),
        Err(e) => {
            // Every error explains itself.
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

/// What `from_bytes` must say about input whose first four bytes declare
/// `size` and which is `len` bytes long, when the size is what is wrong.
fn size_error(size: u32, len: usize) -> Option<TokenError> {
    let (size, len) = (u64::from(size), len as u64);
    if size < 10 || size > MAX_TOKEN_LEN as u64 {
        return None; // OutOfRange("size"), checked by the caller
    }
    if len < size {
        Some(TokenError::Truncated {
            needed: size,
            available: len,
        })
    } else if len > size {
        Some(TokenError::TrailingBytes {
            size,
            extra: len - size,
        })
    } else {
        unreachable!("the size was not changed")
    }
}

#[test]
fn layout_constants() {
    assert_eq!(TOKEN_FIXED_LEN, 64);
    assert_eq!(MAX_TOKEN_LEN, 64 + 4096);
    assert_eq!(MAX_STATE_LEN, 4096);
    assert_eq!(TOKEN_VERSION, 1);
    assert_eq!(TEXT_PREFIX, "pstoken:");
}

/// The documented layout, field by field, for one known token.
#[test]
fn wire_layout_is_the_documented_one() {
    let t = Token {
        stream_id: *b"0123456789abcdef",
        seq: 7,
        offset: 0x0102_0304_0506_0708,
        since_safe_point: 3,
        split_done: 5,
        ended: false,
        state: vec![0xaa, 0xbb, 0xcc],
    };
    let b = t.to_bytes().unwrap();
    assert_eq!(b.len(), 67);
    assert_eq!(&b[0..4], &67u32.to_le_bytes());
    assert_eq!(&b[4..6], &1u16.to_le_bytes());
    assert_eq!(&b[6..8], &0u16.to_le_bytes());
    assert_eq!(&b[8..24], b"0123456789abcdef");
    assert_eq!(&b[24..32], &7u64.to_le_bytes());
    assert_eq!(&b[32..40], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&b[40..48], &3u64.to_le_bytes());
    assert_eq!(&b[48..56], &5u64.to_le_bytes());
    assert_eq!(&b[56..60], &3u32.to_le_bytes());
    assert_eq!(&b[60..63], &[0xaa, 0xbb, 0xcc]);
    assert_eq!(&b[63..67], &crc32c::crc32c(&b[..63]).to_le_bytes());
    assert_eq!(b, Raw::of(&t).bytes());

    let ended = Token {
        split_done: 0,
        ended: true,
        ..t
    };
    assert_eq!(&ended.to_bytes().unwrap()[6..8], &1u16.to_le_bytes());
    // The start token.
    let s = Token::start([9; 16], vec![1, 2]);
    assert_eq!(
        (s.seq, s.offset, s.since_safe_point, s.split_done, s.ended),
        (0, 0, 0, 0, false)
    );
    assert_eq!(Token::from_bytes(&s.to_bytes().unwrap()).unwrap(), s);
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn wire_and_text_forms_round_trip(t in valid_token()) {
        t.check().unwrap();
        let b = t.to_bytes().unwrap();
        prop_assert_eq!(b.len(), t.encoded_len());
        prop_assert_eq!(b.len(), TOKEN_FIXED_LEN + t.state.len());
        prop_assert_eq!(&b[..4], &(b.len() as u32).to_le_bytes()[..]);
        prop_assert_eq!(&b, &Raw::of(&t).bytes());
        prop_assert_eq!(Token::from_bytes(&b).unwrap(), t.clone());

        let text = t.to_text().unwrap();
        prop_assert!(text.starts_with(TEXT_PREFIX));
        prop_assert!(text[TEXT_PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        prop_assert_eq!(text.len(), TEXT_PREFIX.len() + (b.len() * 4).div_ceil(3));
        prop_assert_eq!(t.to_string(), text.clone());
        prop_assert_eq!(Token::from_text(&text).unwrap(), t.clone());
        prop_assert_eq!(text.parse::<Token>().unwrap(), t.clone());
        // A line read from a file, or pasted with spaces around it.
        let padded = format!(" \t{text}\r\n");
        prop_assert_eq!(Token::from_text(&padded).unwrap(), t.clone());
        prop_assert!(t.check_stream(&t.stream_id).is_ok());
    }

    /// Every single-bit flip is refused, with the error its position calls
    /// for: a flip in `size` is a length problem, any other a CRC mismatch
    /// (stored and computed named exactly).
    #[test]
    fn every_single_bit_flip_is_refused(t in valid_token()) {
        let b = t.to_bytes().unwrap();
        let n = b.len();
        for bit in 0..n * 8 {
            let mut x = b.clone();
            x[bit / 8] ^= 1 << (bit % 8);
            let e = refused(Token::from_bytes(&x));
            if bit < 32 {
                let size = u32::from_le_bytes(x[..4].try_into().unwrap());
                match size_error(size, n) {
                    Some(want) => prop_assert_eq!(e, want, "bit {}", bit),
                    None => assert_out_of_range(Err(e), "size", u64::from(size)),
                }
            } else {
                let stored = u32::from_le_bytes(x[n - 4..].try_into().unwrap());
                let computed = crc32c::crc32c(&x[..n - 4]);
                prop_assert_ne!(stored, computed);
                prop_assert_eq!(e, TokenError::Corrupt { stored, computed }, "bit {}", bit);
            }
        }
    }

    /// Cut anywhere: `Truncated`, needing 4 bytes until the size can be
    /// read and then the declared size.
    #[test]
    fn truncation_at_every_length(t in valid_token()) {
        let b = t.to_bytes().unwrap();
        for len in 0..b.len() {
            let needed = if len < 4 { 4 } else { b.len() as u64 };
            prop_assert_eq!(
                refused(Token::from_bytes(&b[..len])),
                TokenError::Truncated { needed, available: len as u64 },
                "cut at {}", len
            );
        }
    }

    /// One or more bytes after the token: `TrailingBytes`, whatever they
    /// are (a CRC over them would not help).
    #[test]
    fn trailing_bytes_are_refused(
        t in valid_token(),
        extra in proptest::collection::vec(any::<u8>(), 1..300),
    ) {
        let b = t.to_bytes().unwrap();
        let mut x = b.clone();
        x.extend_from_slice(&extra);
        prop_assert_eq!(
            refused(Token::from_bytes(&x)),
            TokenError::TrailingBytes { size: b.len() as u64, extra: extra.len() as u64 }
        );
        // Even when the trailing bytes are themselves a valid CRC.
        let mut y = b.clone();
        y.extend_from_slice(&crc32c::crc32c(&b).to_le_bytes());
        prop_assert_eq!(
            refused(Token::from_bytes(&y)),
            TokenError::TrailingBytes { size: b.len() as u64, extra: 4 }
        );
    }

    /// Another version, CRC recomputed: `UnknownVersion`, before any field
    /// is looked at.
    #[test]
    fn other_versions_are_refused(t in valid_token(), version in any::<u16>()) {
        prop_assume!(version != TOKEN_VERSION);
        let mut b = t.to_bytes().unwrap();
        b[4..6].copy_from_slice(&version.to_le_bytes());
        fix_crc(&mut b);
        prop_assert_eq!(
            refused(Token::from_bytes(&b)),
            TokenError::UnknownVersion { found: version, supported: TOKEN_VERSION }
        );
        // Also with nonsense in the fields a version-1 reader checks.
        let mut r = Raw::of(&t);
        r.version = version;
        r.flags = 0xfff0;
        r.since_safe_point = u64::MAX;
        r.seq = 0;
        r.state_len = Some(12345);
        prop_assert_eq!(
            refused(Token::from_bytes(&r.bytes())),
            TokenError::UnknownVersion { found: version, supported: TOKEN_VERSION }
        );
    }

    #[test]
    fn tokens_are_bound_to_their_stream(t in valid_token(), other in any::<[u8; 16]>()) {
        prop_assume!(other != t.stream_id);
        prop_assert_eq!(
            t.check_stream(&other),
            Err(TokenError::WrongStream { expected: other, found: t.stream_id })
        );
        prop_assert_eq!(t.check_stream(&t.stream_id), Ok(()));
        // The message names both ids in hex.
        let msg = t.check_stream(&other).unwrap_err().to_string();
        prop_assert!(msg.contains(&proto_header::stream_id_hex(&other)), "{}", msg);
        prop_assert!(msg.contains(&proto_header::stream_id_hex(&t.stream_id)), "{}", msg);
    }
}

/// Crafted tokens with a valid CRC and one field out of range: each is
/// refused with `OutOfRange` naming that field and its value.
mod out_of_range {
    use super::*;

    /// How far past a limit: often just one.
    fn by_one() -> impl Strategy<Value = u64> {
        prop_oneof![Just(1u64), 1u64..1000]
    }

    /// Each limit, just inside and just outside.
    #[test]
    fn limits() {
        let ok = |t: &Token| {
            let b = t.to_bytes().unwrap_or_else(|e| panic!("{t:?}: {e}"));
            assert_eq!(&Token::from_bytes(&b).unwrap(), t);
        };
        let refused = |t: &Token, field: &str, value: u64| {
            assert_out_of_range(t.to_bytes().map(|_| t.clone()), field, value);
            assert_out_of_range(Token::from_bytes(&Raw::of(t).bytes()), field, value);
        };
        let t = Token {
            seq: 10,
            offset: 20,
            ..Token::start([1; 16], vec![1; 18])
        };
        ok(&Token {
            since_safe_point: 10,
            ..t.clone()
        });
        refused(
            &Token {
                since_safe_point: 11,
                ..t.clone()
            },
            "since_safe_point",
            11,
        );
        ok(&Token {
            seq: 20,
            ..t.clone()
        });
        refused(
            &Token {
                seq: 21,
                ..t.clone()
            },
            "seq",
            21,
        );
        ok(&Token {
            seq: 19,
            split_done: 1,
            ..t.clone()
        });
        refused(
            &Token {
                seq: 20,
                split_done: 1,
                ..t.clone()
            },
            "seq",
            20,
        );
        ok(&Token {
            split_done: 20,
            ..t.clone()
        });
        refused(
            &Token {
                split_done: 21,
                ..t.clone()
            },
            "split_done",
            21,
        );
        ok(&Token {
            ended: true,
            ..t.clone()
        });
        refused(
            &Token {
                ended: true,
                split_done: 1,
                ..t.clone()
            },
            "split_done",
            1,
        );
        ok(&Token {
            offset: u64::MAX,
            seq: u64::MAX,
            since_safe_point: u64::MAX,
            ..t.clone()
        });
        ok(&Token {
            offset: u64::MAX,
            seq: u64::MAX - 1,
            split_done: u64::MAX,
            ..t.clone()
        });
        for flags in [2u16, 3, 0x8000, 0xffff] {
            let mut r = Raw::of(&t);
            r.flags = flags;
            assert_out_of_range(Token::from_bytes(&r.bytes()), "flags", u64::from(flags));
        }
        // Sizes: below 10, below 64, above the maximum.
        for size in [0u32, 9] {
            let mut b = vec![0; 64];
            b[..4].copy_from_slice(&size.to_le_bytes());
            assert_out_of_range(Token::from_bytes(&b), "size", u64::from(size));
        }
        for size in [10u32, 63] {
            let mut b = vec![0; size as usize];
            b[..4].copy_from_slice(&size.to_le_bytes());
            b[4..6].copy_from_slice(&TOKEN_VERSION.to_le_bytes());
            fix_crc(&mut b);
            assert_out_of_range(Token::from_bytes(&b), "size", u64::from(size));
        }
        let max = MAX_TOKEN_LEN as u32;
        let mut b = vec![0; 4];
        b.copy_from_slice(&(max + 1).to_le_bytes());
        assert_out_of_range(Token::from_bytes(&b), "size", u64::from(max + 1));
        b.copy_from_slice(&max.to_le_bytes());
        assert_eq!(
            Token::from_bytes(&b),
            Err(TokenError::Truncated {
                needed: u64::from(max),
                available: 4
            })
        );
    }

    proptest! {
        #![proptest_config(config(128))]

        #[test]
        fn since_safe_point_beyond_seq(t in valid_token(), d in by_one()) {
            prop_assume!(t.seq < u64::MAX - 1000);
            let mut r = Raw::of(&t);
            r.since_safe_point = t.seq + d;
            assert_out_of_range(Token::from_bytes(&r.bytes()), "since_safe_point", t.seq + d);
            let bad = Token { since_safe_point: t.seq + d, ..t };
            assert_out_of_range(bad.to_bytes().map(|_| bad.clone()), "since_safe_point", bad.since_safe_point);
        }

        #[test]
        fn ended_with_data_in_progress(t in valid_token(), split_done in 1u64..1000) {
            let mut r = Raw::of(&t);
            r.flags = 1;
            r.offset = t.offset.max(split_done + 1).max(t.seq.saturating_add(1));
            r.split_done = split_done;
            assert_out_of_range(Token::from_bytes(&r.bytes()), "split_done", split_done);
            let bad = Token { ended: true, split_done, offset: r.offset, ..t };
            assert_out_of_range(bad.to_text().map(|_| bad.clone()), "split_done", split_done);
        }

        #[test]
        fn more_units_than_bytes(t in valid_token(), d in by_one()) {
            prop_assume!(t.offset < u64::MAX - 1000 && t.split_done == 0);
            let mut r = Raw::of(&t);
            r.seq = t.offset + d;
            assert_out_of_range(Token::from_bytes(&r.bytes()), "seq", t.offset + d);
            // A unit in progress needs one more byte than the units before it.
            let mut r = Raw::of(&t);
            r.flags = 0;
            r.seq = t.offset;
            r.since_safe_point = 0;
            r.split_done = t.offset.clamp(1, 10);
            assert_out_of_range(Token::from_bytes(&r.bytes()), "seq", t.offset);
        }

        #[test]
        fn more_data_than_bytes(offset in 1u64..1_000_000, d in by_one()) {
            let t = Token { offset, split_done: offset + d, ..Token::start([1; 16], vec![]) };
            assert_out_of_range(Token::from_bytes(&Raw::of(&t).bytes()), "split_done", offset + d);
            assert_out_of_range(t.to_bytes().map(|_| t.clone()), "split_done", offset + d);
        }

        #[test]
        fn unknown_flags(t in valid_token(), flags in 2u16..) {
            let mut r = Raw::of(&t);
            r.flags = flags;
            assert_out_of_range(Token::from_bytes(&r.bytes()), "flags", u64::from(flags));
        }

        #[test]
        fn state_len_not_matching_size(t in valid_token(), state_len in any::<u32>()) {
            prop_assume!(state_len as usize != t.state.len());
            let mut r = Raw::of(&t);
            r.state_len = Some(state_len);
            assert_out_of_range(Token::from_bytes(&r.bytes()), "state_len", u64::from(state_len));
        }

        /// A declared size below 10 is refused from the first 4 bytes,
        /// before the length of the input matters.
        #[test]
        fn size_below_ten(size in 0u32..10, len in 4usize..200) {
            let mut b = vec![0x5a; len];
            b[..4].copy_from_slice(&size.to_le_bytes());
            assert_out_of_range(Token::from_bytes(&b), "size", u64::from(size));
        }

        /// From 10 to 63 bytes, CRC and version right: still too small for
        /// a version-1 token.
        #[test]
        fn size_below_the_fixed_part(size in 10u32..64, fill in any::<u8>()) {
            let mut b = vec![fill; size as usize];
            b[..4].copy_from_slice(&size.to_le_bytes());
            b[4..6].copy_from_slice(&TOKEN_VERSION.to_le_bytes());
            fix_crc(&mut b);
            assert_out_of_range(Token::from_bytes(&b), "size", u64::from(size));
        }

        /// Above the largest token: refused from the first 4 bytes, however
        /// many follow.
        #[test]
        fn size_above_the_maximum(size in (MAX_TOKEN_LEN as u32 + 1).., len in 4usize..5000) {
            let mut b = vec![0; len];
            b[..4].copy_from_slice(&size.to_le_bytes());
            assert_out_of_range(Token::from_bytes(&b), "size", u64::from(size));
        }
    }

    /// A state of 4097 bytes: refused by the encoder, and a crafted token
    /// carrying one is larger than any token.
    #[test]
    fn state_longer_than_the_maximum() {
        for len in [MAX_STATE_LEN + 1, MAX_STATE_LEN + 1000, 1 << 20] {
            let t = Token::start([3; 16], vec![7; len]);
            assert_out_of_range(t.to_bytes().map(|_| t.clone()), "state_len", len as u64);
            assert_out_of_range(t.to_text().map(|_| t.clone()), "state_len", len as u64);
            assert_out_of_range(t.check().map(|_| t.clone()), "state_len", len as u64);
            assert!(
                t.to_string().starts_with("pstoken:<invalid:"),
                "{}",
                &t.to_string()[..40]
            );
            let crafted = Raw::of(&t).bytes();
            assert_out_of_range(Token::from_bytes(&crafted), "size", crafted.len() as u64);
        }
        // The largest state is fine.
        let t = Token::start([3; 16], vec![7; MAX_STATE_LEN]);
        let b = t.to_bytes().unwrap();
        assert_eq!(b.len(), MAX_TOKEN_LEN);
        assert_eq!(Token::from_bytes(&b).unwrap(), t);
        assert_eq!(Token::from_text(&t.to_text().unwrap()).unwrap(), t);
    }
}

/// The text form's own errors: each a `BadText` with its position.
mod text {
    use super::*;

    fn bad_text(got: Result<Token, TokenError>) -> (usize, &'static str) {
        match got {
            Err(TokenError::BadText { position, why }) => (position, why),
            other => panic!("expected BadText, got {other:?}"),
        }
    }

    #[test]
    fn missing_or_wrong_prefix() {
        let t = Token::start([5; 16], vec![1, 2, 3]);
        let text = t.to_text().unwrap();
        let body = &text[TEXT_PREFIX.len()..];
        for (s, pos) in [
            (body.to_string(), 0),
            (format!("PSTOKEN:{body}"), 0),
            (format!("pstoken{body}"), 0),
            (format!("pstoken;{body}"), 0),
            (format!("  token:{body}"), 2),
            (String::new(), 0),
            ("   ".to_string(), 3),
            ("pstoke".to_string(), 0),
        ] {
            let (p, why) = bad_text(Token::from_text(&s));
            assert_eq!(p, pos, "{s:?}: {why}");
            assert!(why.contains("pstoken:"), "{why}");
        }
        // The prefix alone: no bytes, a token of 0 bytes is truncated.
        assert_eq!(
            Token::from_text("pstoken:"),
            Err(TokenError::Truncated {
                needed: 4,
                available: 0
            })
        );
    }

    /// Positions count characters, as documented, also after leading
    /// whitespace that is not ASCII.
    #[test]
    fn positions_count_characters() {
        let t = Token::start([5; 16], vec![1, 2, 3]);
        let text = t.to_text().unwrap();
        // U+3000 IDEOGRAPHIC SPACE is whitespace (3 bytes in UTF-8).
        let s = format!("\u{3000}\u{3000}{text}!");
        let (p, _) = bad_text(Token::from_text(&s));
        assert_eq!(p, 2 + text.len(), "{s:?}");
        let s = format!("\u{3000}x{text}");
        let (p, _) = bad_text(Token::from_text(&s));
        assert_eq!(p, 1, "{s:?}");
        // Whitespace of any kind around a good token is fine.
        assert_eq!(Token::from_text(&format!("\u{3000}{text}\u{a0}\n")), Ok(t));
    }

    /// Regression: with a body of 4k + 1 bytes the base64 decoder reports
    /// a bad *last* byte before any other, so a text with two bad
    /// characters was refused at the second one, and a non-ASCII last
    /// character at the position of its last UTF-8 byte.
    #[test]
    fn the_first_bad_character_is_reported() {
        let t = Token::start([5; 16], vec![1, 2, 3]);
        let text = t.to_text().unwrap();
        // 90 characters: replace the 5th, append one more (91 + ... = 4k + 3)
        // and then two (4k + 1).
        let mut s = text.clone();
        s.replace_range(12..13, "!");
        s.push_str("A!");
        assert_eq!((s.len() - TEXT_PREFIX.len()) % 4, 0);
        s.push('!');
        assert_eq!((s.len() - TEXT_PREFIX.len()) % 4, 1);
        let (p, why) = bad_text(Token::from_text(&s));
        assert_eq!((p, why), (12, "not a base64url character"), "{s}");

        // A 4-byte character at the end of an 89 + 1 character body.
        let mut s = text[..text.len() - 1].to_string();
        s.push('\u{1F600}');
        let (p, why) = bad_text(Token::from_text(&s));
        assert_eq!(
            (p, why),
            (TEXT_PREFIX.len() + 89, "not a base64url character")
        );
        // And a 2-byte one in the middle, after a bad ASCII one.
        let mut s = text.clone();
        s.replace_range(30..31, "\u{e9}");
        s.replace_range(20..21, " ");
        let (p, why) = bad_text(Token::from_text(&s));
        assert_eq!((p, why), (20, "not a base64url character"));
    }

    #[test]
    fn padding_is_refused() {
        // 67 bytes: 90 characters, and 2 `=` with padding.
        let t = Token::start([5; 16], vec![1, 2, 3]);
        let text = t.to_text().unwrap();
        assert_eq!(text.len() - TEXT_PREFIX.len(), 90);
        let end = TEXT_PREFIX.len() + 90;
        let padding = "padding is not used";
        assert_eq!(
            bad_text(Token::from_text(&format!("{text}=="))),
            (end, padding)
        );
        // One `=` is padding too (and a wrong amount of it).
        assert_eq!(
            bad_text(Token::from_text(&format!("{text}=\n"))),
            (end, padding)
        );
        // Padding inside.
        let mut s = text.clone();
        s.insert(20, '=');
        assert_eq!(bad_text(Token::from_text(&s)), (20, padding));
    }

    #[test]
    fn impossible_lengths() {
        for state_len in 0..12 {
            let t = Token::start([5; 16], vec![0xee; state_len]);
            let text = t.to_text().unwrap();
            let n = text.len() - TEXT_PREFIX.len();
            // A base64 text of 4k + 1 characters cannot be decoded.
            let want = (n / 4) * 4 + 1;
            let s: String = if want <= n {
                text[..TEXT_PREFIX.len() + want].to_string()
            } else {
                format!("{text}{}", "A".repeat(want - n))
            };
            let (p, why) = bad_text(Token::from_text(&s));
            assert_eq!(why, "impossible base64 length", "{s}");
            assert!(
                p >= TEXT_PREFIX.len() + want - 1 && p <= s.len(),
                "{p} in {} chars",
                s.len()
            );
        }
    }

    /// More characters than the largest token can have: refused at once,
    /// however bad they are (nothing is decoded).
    #[test]
    fn over_long_text_is_refused_before_decoding() {
        let max_chars = MAX_TOKEN_LEN.div_ceil(3) * 4;
        let biggest = Token::start([5; 16], vec![0xee; MAX_STATE_LEN]);
        let text = biggest.to_text().unwrap();
        assert!(text.len() - TEXT_PREFIX.len() <= max_chars);
        for body in [
            "!".repeat(max_chars + 1),
            "A".repeat(max_chars + 1),
            "\u{e9}".repeat(max_chars + 1),
            format!("{}A", &text[TEXT_PREFIX.len()..]).repeat(3),
            "A".repeat(10 << 20),
        ] {
            let (p, why) = bad_text(Token::from_text(&format!("pstoken:{body}")));
            assert_eq!(
                (p, why),
                (TEXT_PREFIX.len() + max_chars, "longer than any token")
            );
        }
        // Just at the limit, it is looked at (and found wrong for what it
        // is); the limit counts characters, not bytes.
        for body in ["!".repeat(max_chars), "\u{e9}".repeat(max_chars)] {
            let (p, why) = bad_text(Token::from_text(&format!("pstoken:{body}")));
            assert_eq!((p, why), (TEXT_PREFIX.len(), "not a base64url character"));
        }
    }

    proptest! {
        #![proptest_config(config(256))]

        /// A character outside base64url anywhere in the body is refused
        /// with its position in the text.
        #[test]
        fn bad_characters_are_positioned(
            t in valid_token(),
            at in any::<prop::sample::Index>(),
            c in prop_oneof![
                Just('+'), Just('/'), Just('='), Just('!'), Just(' '), Just('.'),
                Just('\n'), Just('\u{0}'), Just('\u{e9}'), Just('\u{1F600}'),
            ],
            lead in prop_oneof![Just(""), Just(" "), Just("\t\t")],
        ) {
            let text = t.to_text().unwrap();
            let body = &text[TEXT_PREFIX.len()..];
            let i = at.index(body.len());
            // `=` at the very end is padding, a whitespace at the end is trimmed.
            prop_assume!(!(i == body.len() - 1 && (c == '=' || c.is_whitespace())));
            let mut s = format!("{lead}{text}");
            let pos = lead.len() + TEXT_PREFIX.len() + i;
            s.replace_range(pos..pos + 1, c.encode_utf8(&mut [0; 4]));
            let why = if c == '=' { "padding is not used" } else { "not a base64url character" };
            prop_assert_eq!(bad_text(Token::from_text(&s)), (pos, why), "{:?}", s);
            // A second bad character after it changes nothing.
            s.push('!');
            prop_assert_eq!(bad_text(Token::from_text(&s)), (pos, why), "{:?}", s);
        }

        /// A token re-encoded with the standard alphabet (`+` and `/`) is
        /// refused when it uses either character.
        #[test]
        fn standard_alphabet_is_refused(t in valid_token()) {
            let text = t.to_text().unwrap();
            let std: String = text.chars().map(|c| match c { '-' => '+', '_' => '/', c => c }).collect();
            if std == text {
                prop_assert_eq!(Token::from_text(&std), Ok(t));
            } else {
                let first = std.find(['+', '/']).unwrap();
                let (p, why) = bad_text(Token::from_text(&std));
                prop_assert_eq!((p, why), (first, "not a base64url character"));
            }
        }
    }
}

/// No input makes the decoder panic, and what it accepts is exactly what
/// the encoder writes.
mod never_panics {
    use super::*;

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(t) = Token::from_bytes(&b) {
                prop_assert_eq!(t.to_bytes().unwrap(), b);
            }
        }

        /// Bytes that get past the size, length and CRC checks, so that the
        /// field checks see arbitrary values.
        #[test]
        fn arbitrary_fields_with_a_valid_crc(
            mut b in proptest::collection::vec(any::<u8>(), 64..140),
            state_len_right in any::<bool>(),
            version_right in any::<bool>(),
        ) {
            let len = b.len();
            b[..4].copy_from_slice(&(len as u32).to_le_bytes());
            if version_right {
                b[4..6].copy_from_slice(&TOKEN_VERSION.to_le_bytes());
            }
            if state_len_right {
                b[56..60].copy_from_slice(&((len - 64) as u32).to_le_bytes());
            }
            fix_crc(&mut b);
            match Token::from_bytes(&b) {
                Ok(t) => {
                    prop_assert!(t.check().is_ok());
                    prop_assert_eq!(t.to_bytes().unwrap(), b);
                }
                Err(TokenError::UnknownVersion { found, .. }) => prop_assert_ne!(found, TOKEN_VERSION),
                Err(TokenError::OutOfRange { field, .. }) => prop_assert!(
                    ["flags", "state_len", "since_safe_point", "split_done", "seq"].contains(&field),
                    "{}", field
                ),
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
        }

        #[test]
        fn arbitrary_strings(s in any::<String>()) {
            if let Ok(t) = Token::from_text(&s) {
                prop_assert_eq!(t.to_text().unwrap(), s.trim());
            }
            let prefixed = format!("pstoken:{s}");
            if let Ok(t) = Token::from_text(&prefixed) {
                prop_assert_eq!(t.to_text().unwrap(), prefixed.trim());
            }
        }

        #[test]
        fn arbitrary_base64url(s in "[A-Za-z0-9_-]{0,200}") {
            let text = format!("pstoken:{s}");
            match Token::from_text(&text) {
                Ok(t) => prop_assert_eq!(t.to_text().unwrap(), text),
                Err(TokenError::BadText { position, .. }) => prop_assert!(position <= text.len()),
                Err(_) => {}
            }
        }
    }
}
