//! Writes a native `PRSTREAM` stream of about SIZE MiB (data commands of
//! 256 KiB of pseudo-random bytes, a small command before each), for the
//! transfer benches (`benches/resume.sh`).
//!
//! ```text
//! cargo run --release --example make_big_native -- SIZE_MIB OUT
//! ```

use std::io::BufWriter;

use proto_stream::header::{Endian, V1Header, KIT_VERSIONS};
use proto_stream::native::{Writer, NATIVE_DATA, NATIVE_DATA_CMD, NATIVE_OBJECT, NATIVE_OFFSET};
use proto_stream::tlv::{AttrValue, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [size, out] = &args[..] else {
        return Err("usage: make_big_native SIZE_MIB OUT".into());
    };
    let mib: u64 = size.parse()?;
    let header = V1Header {
        byte_order: Endian::Little,
        features_supported: 0,
        features_required: 0,
        stream_id: *b"make_big_native!",
        contexts: Vec::new(),
    };
    let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let entry = KIT_VERSIONS.entry(1)?;
    let mut w = Writer::new(file, entry, 1, &header)?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data = vec![0u8; 256 * 1024];
    for i in 0..mib * 4 {
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        w.write_command(1, &[AttrValue::new(1, Value::U64(i))])?;
        w.write_command(
            NATIVE_DATA_CMD,
            &[
                AttrValue::new(NATIVE_OBJECT, Value::Bytes(b"image")),
                AttrValue::new(NATIVE_OFFSET, Value::U64(i * data.len() as u64)),
                AttrValue::new(NATIVE_DATA, Value::Bytes(&data)),
            ],
        )?;
    }
    w.finish()?;
    Ok(())
}
