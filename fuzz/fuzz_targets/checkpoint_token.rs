//! `checkpoint_token`: checkpoint tokens (`proto_checkpoint::Token`), read
//! from arbitrary bytes and text, and written from arbitrary fields.
//!
//! The wire format and the text form are modelled here from the table in
//! `proto_checkpoint::token` (a plain reader, a bitwise CRC-32C and a strict
//! base64url codec), independently of the crate's code.
//!
//! Input: the raw bytes themselves (so that tokens and their text forms
//! serve as seeds), then the same bytes as a structured input: bytes, token
//! fields, or text.
//!
//! Properties:
//! - bytes: `Token::from_bytes` agrees with the model reader: the same token,
//!   or the same error (`Truncated`, `TrailingBytes`, `Corrupt`,
//!   `UnknownVersion` with their fields; `OutOfRange` naming a field that the
//!   model finds out of range). Inputs can have their size field and CRC
//!   fixed up first, so that the field checks are reached. An accepted token
//!   passes `check()`, re-encodes to exactly the input (`to_bytes`), and its
//!   text form is `pstoken:` + base64url of the input and reads back to it;
//! - text: the input as lossy UTF-8, as itself when it is UTF-8, as
//!   `pstoken:` + base64url of the input, and `pstoken:` + any text
//!   (repeated, up to 12 000 bytes), with surrounding whitespace:
//!   `Token::from_text` is `from_bytes` of what the strict base64url model
//!   decodes, or `BadText` when the model refuses (a character position
//!   inside the text, at a character that is not base64url when it says
//!   so); an accepted text
//!   is exactly the token's `to_text` once trimmed;
//! - fields: `to_bytes` succeeds exactly when the model's field rules hold
//!   (and otherwise names a field that breaks them, as `check()` and
//!   `to_text` do); the bytes are the model's encoding, `from_bytes` gives the
//!   token back, the text form round-trips (also through `Display` and
//!   `FromStr`); every 1-bit flip at an input-chosen position, a byte cut
//!   off or added, and any other base64url character at an input-chosen
//!   position of the text are refused; a header field patched (CRC
//!   recomputed) is judged as the model says.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use arbitrary::{Arbitrary, Unstructured};
use proto_checkpoint::token::{
    MAX_STATE_LEN, MAX_TOKEN_LEN, TEXT_PREFIX, TOKEN_FIXED_LEN, TOKEN_VERSION,
};
use proto_checkpoint::{Token, TokenError};

// ---------------------------------------------------------------- models

/// Standard CRC-32C, bit by bit.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(bytes: &[u8]) -> String {
    let mut s = String::new();
    for chunk in bytes.chunks(3) {
        let mut v = [0u8; 3];
        v[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from(v[0]) << 16 | u32::from(v[1]) << 8 | u32::from(v[2]);
        for i in 0..=chunk.len() {
            s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

fn b64_value(c: u8) -> Option<u32> {
    B64.iter().position(|&x| x == c).map(|v| v as u32)
}

/// Strict unpadded base64url: the alphabet only, no length of 1 mod 4, no
/// stray bits in the last character.
fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::new();
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= b64_value(c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let k = chunk.len() - 1;
        // Bits past the last whole byte must be zero.
        if k < 3 && n & (0xFF_FFFF >> (8 * k)) != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[..k]);
    }
    Some(out)
}

/// What the model says about some bytes: a token, or an error.
#[derive(Debug, PartialEq, Eq)]
enum Model {
    Token(Token),
    Err(TokenError),
    /// Out of range: any of these fields may be named.
    Range(Vec<&'static str>),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The fields a token breaks (empty: none).
fn field_faults(t: &Token) -> Vec<&'static str> {
    let mut f = Vec::new();
    if t.state.len() > MAX_STATE_LEN {
        f.push("state_len");
    }
    if t.since_safe_point > t.seq {
        f.push("since_safe_point");
    }
    if (t.ended && t.split_done != 0) || t.split_done > t.offset {
        f.push("split_done");
    }
    // Every unit is at least one byte, and so is a piece in progress.
    if t.seq > t.offset || (t.split_done > 0 && t.seq >= t.offset) {
        f.push("seq");
    }
    f
}

fn model_read(b: &[u8]) -> Model {
    let available = b.len() as u64;
    if b.len() < 4 {
        return Model::Err(TokenError::Truncated {
            needed: 4,
            available,
        });
    }
    let size = u64::from(u32_at(b, 0));
    if size < 10 || size > (64 + 4096) {
        return Model::Range(vec!["size"]);
    }
    if available < size {
        return Model::Err(TokenError::Truncated {
            needed: size,
            available,
        });
    }
    if available > size {
        return Model::Err(TokenError::TrailingBytes {
            size,
            extra: available - size,
        });
    }
    let n = b.len();
    let (stored, computed) = (u32_at(b, n - 4), crc32c(&b[..n - 4]));
    if stored != computed {
        return Model::Err(TokenError::Corrupt { stored, computed });
    }
    let version = u16_at(b, 4);
    if version != 1 {
        return Model::Err(TokenError::UnknownVersion {
            found: version,
            supported: 1,
        });
    }
    if n < 64 {
        return Model::Range(vec!["size"]);
    }
    let flags = u16_at(b, 6);
    let state_len = u32_at(b, 56) as usize;
    let t = Token {
        stream_id: b[8..24].try_into().unwrap(),
        seq: u64_at(b, 24),
        offset: u64_at(b, 32),
        since_safe_point: u64_at(b, 40),
        split_done: u64_at(b, 48),
        ended: flags & 1 != 0,
        state: b[60..n - 4].to_vec(),
    };
    let mut faults = field_faults(&t);
    if flags & !1 != 0 {
        faults.push("flags");
    }
    if state_len != n - 64 {
        faults.push("state_len");
    }
    if faults.is_empty() {
        Model::Token(t)
    } else {
        Model::Range(faults)
    }
}

/// The model's encoding of a token that passes the field rules.
fn model_write(t: &Token) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&((64 + t.state.len()) as u32).to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&u16::from(t.ended).to_le_bytes());
    b.extend_from_slice(&t.stream_id);
    for v in [t.seq, t.offset, t.since_safe_point, t.split_done] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(t.state.len() as u32).to_le_bytes());
    b.extend_from_slice(&t.state);
    let crc = crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

// ---------------------------------------------------------------- checks

/// `from_bytes` against the model; an accepted token re-encodes to `b`.
fn check_bytes(b: &[u8]) -> Result<Token, TokenError> {
    let got = Token::from_bytes(b);
    match (&got, model_read(b)) {
        (Ok(t), Model::Token(m)) => {
            assert_eq!(t, &m, "from_bytes vs the model");
            t.check().expect("an accepted token passes check()");
            assert_eq!(t.encoded_len(), b.len());
            assert_eq!(t.to_bytes().expect("to_bytes"), b, "re-encoding differs");
            let text = t.to_text().expect("to_text");
            assert_eq!(text, format!("{TEXT_PREFIX}{}", b64_encode(b)));
            assert_eq!(&Token::from_text(&text).expect("text round trip"), t);
        }
        (Err(e), Model::Err(m)) => assert_eq!(e, &m, "from_bytes error vs the model"),
        (Err(TokenError::OutOfRange { field, .. }), Model::Range(fields)) => {
            assert!(
                fields.contains(field),
                "{field} named, the model says {fields:?}"
            )
        }
        (got, want) => panic!("from_bytes: {got:?}, the model says {want:?}"),
    }
    got
}

/// `from_text` against the strict base64url model and `from_bytes`.
fn check_text(text: &str) -> Result<Token, TokenError> {
    let got = Token::from_text(text);
    if let Err(TokenError::BadText { position, why }) = &got {
        // A character position, inside the text.
        let chars = text.chars().count();
        assert!(
            *position <= chars,
            "BadText at {position} of {chars} characters: {why}"
        );
        if *why == "not a base64url character" {
            let c = text.chars().nth(*position).unwrap();
            assert!(
                !c.is_ascii() || b64_value(c as u8).is_none(),
                "{c:?} at character {position} is base64url"
            );
        }
    }
    let t = text.trim();
    let decoded = t
        .strip_prefix(TEXT_PREFIX)
        .filter(|b| b.len() <= MAX_TOKEN_LEN.div_ceil(3) * 4)
        .and_then(b64_decode);
    match decoded {
        Some(bytes) => assert_eq!(got, Token::from_bytes(&bytes), "from_text vs from_bytes"),
        None => assert!(
            matches!(got, Err(TokenError::BadText { .. })),
            "the model refuses {text:?}, from_text says {got:?}"
        ),
    }
    if let Ok(tok) = &got {
        assert_eq!(
            tok.to_text().as_deref(),
            Ok(t),
            "accepted text is not canonical"
        );
        assert_eq!(&t.parse::<Token>().expect("FromStr"), tok);
    }
    got
}

// ---------------------------------------------------------------- input

#[derive(Arbitrary, Debug)]
enum Num {
    Small(u8),
    Any(u64),
    Max,
}

impl Num {
    fn get(&self) -> u64 {
        match *self {
            Num::Small(v) => u64::from(v),
            Num::Any(v) => v,
            Num::Max => u64::MAX,
        }
    }
}

/// A header field overwritten in an encoded token, the CRC recomputed.
#[derive(Arbitrary, Debug)]
enum Patch {
    Size(u32),
    Version(u16),
    Flags(u16),
    StateLen(u32),
    U64 { field: u8, value: u64 },
}

#[derive(Arbitrary, Debug)]
struct Fields {
    stream_id: [u8; 16],
    seq: Num,
    offset: Num,
    since_safe_point: Num,
    split_done: Num,
    ended: bool,
    state: Vec<u8>,
    /// Grows the state by `grow % 4200` bytes (past `MAX_STATE_LEN` at
    /// times) when it is set.
    grow: Option<u16>,
    /// Bit to flip (modulo the bits of the encoding).
    flip: u32,
    /// Text position (modulo the base64 part) and the character put there.
    char_at: u16,
    char_to: u8,
    patch: Option<Patch>,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Bytes {
        bytes: Vec<u8>,
        /// Sets the size field to the input's length first.
        fix_size: bool,
        /// Sets the last 4 bytes to the CRC of the others first.
        fix_crc: bool,
        /// Whitespace around the text form (two bits each side).
        ws: u8,
    },
    Fields(Fields),
    /// `pstoken:` and any text, repeated (up to 12 000 bytes), with
    /// whitespace around it.
    Text {
        body: String,
        repeat: u16,
        ws: u8,
    },
}

const WS: [&str; 4] = ["", " \t", "\n", "\u{3000}\r\n"];

fn bytes_case(mut bytes: Vec<u8>, fix_size: bool, fix_crc: bool, ws: u8) {
    let n = bytes.len();
    if fix_size && n >= 4 {
        bytes[..4].copy_from_slice(&(n as u32).to_le_bytes());
    }
    if fix_crc && n >= 4 {
        let crc = crc32c(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }
    let r = check_bytes(&bytes);

    // The input as text.
    let _ = check_text(&String::from_utf8_lossy(&bytes));
    if let Ok(s) = core::str::from_utf8(&bytes) {
        let _ = check_text(s);
    }
    // The text form of the input, with whitespace around it.
    let enc = b64_encode(&bytes);
    let text = format!(
        "{}{TEXT_PREFIX}{enc}{}",
        WS[usize::from(ws & 3)],
        WS[usize::from(ws >> 2 & 3)]
    );
    let t = check_text(&text);
    if enc.len() <= MAX_TOKEN_LEN.div_ceil(3) * 4 {
        assert_eq!(t, r, "the text form of bytes reads as the bytes do");
    }
}

fn fields_case(f: Fields) {
    let mut state = f.state;
    if let Some(g) = f.grow {
        let extra = usize::from(g % 4200);
        state.extend((0..extra).map(|i| i as u8));
    }
    let token = Token {
        stream_id: f.stream_id,
        seq: f.seq.get(),
        offset: f.offset.get(),
        since_safe_point: f.since_safe_point.get(),
        split_done: f.split_done.get(),
        ended: f.ended,
        state,
    };
    let faults = field_faults(&token);
    let bytes = match token.to_bytes() {
        Err(e) => {
            let TokenError::OutOfRange { field, .. } = e else {
                panic!("to_bytes: {e:?}");
            };
            assert!(
                faults.contains(&field),
                "{field} named, the model says {faults:?}"
            );
            assert_eq!(token.check(), Err(e.clone()), "check vs to_bytes");
            assert_eq!(token.to_text(), Err(e), "to_text vs to_bytes");
            assert!(token.to_string().starts_with("pstoken:<invalid: "));
            return;
        }
        Ok(b) => b,
    };
    assert!(
        faults.is_empty(),
        "to_bytes accepted a token that breaks {faults:?}"
    );
    assert_eq!(token.check(), Ok(()));
    assert_eq!(bytes.len(), TOKEN_FIXED_LEN + token.state.len());
    assert_eq!(bytes.len(), token.encoded_len());
    assert_eq!(bytes, model_write(&token), "to_bytes vs the model");
    assert_eq!(u16_at(&bytes, 4), TOKEN_VERSION);
    assert_eq!(
        check_bytes(&bytes).as_ref(),
        Ok(&token),
        "from_bytes(to_bytes(t))"
    );
    let text = token.to_text().expect("to_text");
    assert_eq!(token.to_string(), text, "Display is the text form");
    assert_eq!(
        check_text(&text).as_ref(),
        Ok(&token),
        "from_text(to_text(t))"
    );

    // One flipped bit.
    let bit = f.flip as usize % (bytes.len() * 8);
    let mut x = bytes.clone();
    x[bit / 8] ^= 1 << (bit % 8);
    assert!(check_bytes(&x).is_err(), "bit {bit} flipped, accepted");
    // A byte less, a byte more.
    assert!(check_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.clone();
    longer.push(f.char_to);
    assert!(check_bytes(&longer).is_err());
    // Another base64url character in the text.
    let pos = TEXT_PREFIX.len() + usize::from(f.char_at) % (text.len() - TEXT_PREFIX.len());
    let old = text.as_bytes()[pos];
    let mut new = B64[usize::from(f.char_to % 64)];
    if new == old {
        new = B64[(usize::from(f.char_to % 64) + 1) % 64];
    }
    let mut changed = text.clone().into_bytes();
    changed[pos] = new;
    let changed = String::from_utf8(changed).unwrap();
    assert!(check_text(&changed).is_err(), "{changed} accepted");

    // A header field patched, the CRC made right again.
    if let Some(p) = f.patch {
        let mut y = bytes.clone();
        match p {
            Patch::Size(v) => y[0..4].copy_from_slice(&v.to_le_bytes()),
            Patch::Version(v) => y[4..6].copy_from_slice(&v.to_le_bytes()),
            Patch::Flags(v) => y[6..8].copy_from_slice(&v.to_le_bytes()),
            Patch::StateLen(v) => y[56..60].copy_from_slice(&v.to_le_bytes()),
            Patch::U64 { field, value } => {
                let at = 24 + 8 * usize::from(field % 4);
                y[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        let n = y.len();
        let crc = crc32c(&y[..n - 4]);
        y[n - 4..].copy_from_slice(&crc.to_le_bytes());
        let _ = check_bytes(&y);
    }
}

target!(|data: &[u8]| {
    // The whole input as bytes and as text first, so that a token (or its
    // text form) as a seed file is read as it is; then as structured input.
    bytes_case(data.to_vec(), false, false, 0);
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input {
        Input::Bytes {
            bytes,
            fix_size,
            fix_crc,
            ws,
        } => bytes_case(bytes, fix_size, fix_crc, ws),
        Input::Fields(f) => fields_case(f),
        Input::Text { body, repeat, ws } => {
            let mut body = body.repeat(1 + usize::from(repeat) % 2048);
            let mut cut = body.len().min(12_000);
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            let _ = check_text(&format!(
                "{}{TEXT_PREFIX}{body}{}",
                WS[usize::from(ws & 3)],
                WS[usize::from(ws >> 2 & 3)]
            ));
        }
    }
});
