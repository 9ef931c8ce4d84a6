//! Writes the sample native streams `testdata/native/sample-v1.stream`
//! (four small commands) and `testdata/native/data-v1.stream` (about
//! 300 KiB: data commands of 100 000 to 150 000 bytes between small ones,
//! so that chunking through buffers under 64 KiB must split them).
//! Deterministic: `tests/native.rs` checks the committed files against
//! [`sample_v1`] and [`data_v1`].
//!
//! ```text
//! cargo run --example make_native_sample [DIR]
//! ```

use proto_stream::header::{Context, Endian, V1Header};
use proto_stream::native::{Writer, NATIVE_DATA, NATIVE_DATA_CMD, NATIVE_OBJECT, NATIVE_OFFSET};
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

/// A stream of memory pages (three data commands of 100 000 to 150 000
/// bytes, pseudo-random but fixed) between small commands.
pub fn data_v1() -> Vec<u8> {
    let mut w = Writer::v1(Vec::new(), &sample_header()).expect("header");
    w.write_command(1, &[AttrValue::new(2, Value::Bytes(b"begin"))])
        .expect("command");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for (i, len) in [100_000usize, 150_000, 123_457].into_iter().enumerate() {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect();
        let object = format!("ram{i}");
        w.write_command(
            NATIVE_DATA_CMD,
            &[
                AttrValue::new(NATIVE_OBJECT, Value::Bytes(object.as_bytes())),
                AttrValue::new(NATIVE_OFFSET, Value::U64(i as u64 * (1 << 20))),
                AttrValue::new(NATIVE_DATA, Value::Bytes(&data)),
            ],
        )
        .expect("data command");
        w.write_command(2, &[AttrValue::new(1, Value::U32(i as u32))])
            .expect("command");
    }
    w.finish().expect("end")
}

#[allow(dead_code)]
fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "testdata/native".into());
    for (name, bytes) in [
        ("sample-v1.stream", sample_v1()),
        ("data-v1.stream", data_v1()),
    ] {
        let out = std::path::Path::new(&dir).join(name);
        if let Err(e) = std::fs::write(&out, bytes) {
            eprintln!("make_native_sample: {}: {e}", out.display());
            std::process::exit(1);
        }
    }
}
