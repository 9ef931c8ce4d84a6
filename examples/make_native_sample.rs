//! Writes the sample native stream `testdata/native/sample-v1.stream`
//! (deterministic: `tests/native.rs` checks the committed file against
//! [`sample_v1`]).
//!
//! ```text
//! cargo run --example make_native_sample [OUT]
//! ```

use proto_stream::header::{Context, Endian, V1Header};
use proto_stream::native::Writer;
use proto_stream::tlv::{AttrValue, Value};

/// The sample's version-specific header.
pub fn sample_header() -> V1Header {
    V1Header {
        byte_order: Endian::Little,
        features_supported: 0b111,
        features_required: 0b001,
        stream_id: *b"proto-stream-v1!",
        contexts: vec![
            Context {
                id: 1,
                name: "base:allocation".into(),
            },
            Context {
                id: 2,
                name: "device:state".into(),
            },
        ],
    }
}

/// The sample stream: version 1, compat 1, four commands and END.
pub fn sample_v1() -> Vec<u8> {
    let mut w = Writer::v1(Vec::new(), &sample_header()).expect("header");
    let cmds: [(u16, &[AttrValue<'_>]); 4] = [
        (
            1,
            &[
                AttrValue::new(1, Value::U32(1)),
                AttrValue::new(2, Value::Bytes(b"begin")),
            ],
        ),
        (
            2,
            &[
                AttrValue::new(1, Value::U32(2)),
                AttrValue::new(3, Value::U64(4096)),
                AttrValue::new(4, Value::Bytes(b"device state bytes")),
            ],
        ),
        (3, &[]),
        (
            0x0100,
            &[AttrValue::new(5, Value::Uuid(*b"0123456789abcdef"))],
        ),
    ];
    for (cmd, attrs) in cmds {
        w.write_command(cmd, attrs).expect("command");
    }
    w.finish().expect("end")
}

#[allow(dead_code)]
fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "testdata/native/sample-v1.stream".into());
    if let Err(e) = std::fs::write(&out, sample_v1()) {
        eprintln!("make_native_sample: {out}: {e}");
        std::process::exit(1);
    }
}
