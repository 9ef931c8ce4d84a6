//! `native_reader`: arbitrary bytes after the native magic, read by the top
//! crate's `native::Reader` (fixed header, negotiation, version header, TLV
//! commands, END).
//!
//! Properties:
//! - no panic, only typed errors;
//! - every error's byte offset lies inside the input;
//! - commands come in order, contiguous from the end of the headers, and
//!   the stream ends where the reader says (`offset()` after END);
//! - reading one byte per `read` call gives exactly the same commands and
//!   the same error as reading it whole.
#![cfg_attr(fuzzing, no_main)]

#[macro_use]
#[path = "common/harness.rs"]
mod harness;

use std::io::Read;

use proto_stream::header::ReadOptions;
use proto_stream::native::{Reader, NATIVE_MAGIC};

const OPTS: ReadOptions = ReadOptions { known_features: u64::MAX };

/// A reader that hands out one byte per call.
struct OneByte<'a>(&'a [u8]);
impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((b, rest)), Some(slot)) => {
                *slot = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

/// (cmd, offset, payload) of every command, then the error as text.
fn read_all(r: impl Read, len: usize) -> (Vec<(u16, u64, Vec<u8>)>, Option<String>) {
    let mut out = Vec::new();
    let mut rd = match Reader::new(r, OPTS) {
        Ok(rd) => rd,
        Err(e) => {
            if let Some(o) = e.offset() {
                assert!(o <= len as u64, "header error offset {o} past the input ({len}): {e}");
            }
            return (out, Some(e.to_string()));
        }
    };
    let mut next = rd.header_len();
    loop {
        match rd.next_command() {
            Ok(Some(c)) => {
                assert_eq!(c.offset(), next, "commands are contiguous");
                next = c.offset() + c.encoded_len() as u64;
                out.push((c.cmd(), c.offset(), c.payload().to_vec()));
            }
            Ok(None) => {
                assert_eq!(rd.offset(), next);
                return (out, None);
            }
            Err(e) => {
                if let Some(o) = e.offset() {
                    assert!(o <= len as u64, "error offset {o} past the input ({len}): {e}");
                }
                return (out, Some(e.to_string()));
            }
        }
    }
}

target!(|data: &[u8]| {
    let mut input = NATIVE_MAGIC.to_vec();
    input.extend_from_slice(data);
    let whole = read_all(&input[..], input.len());
    let bytewise = read_all(OneByte(&input), input.len());
    assert_eq!(whole, bytewise, "whole vs one byte per read");
});
