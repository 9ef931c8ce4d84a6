//! A downstream format built on the kit, as a VM migration stream (seed
//! 004, passt's migration versioning): its own magic, a version 1 and a
//! version 2 that appends a header field and a section while staying
//! readable by version-1 readers (compat_version 1), device state as small
//! TLV sections and guest memory as large data sections that chunking may
//! split. Written with the crates' public API only.
//!
//! ```text
//! cargo run --example migration     # exit 0 only when every check holds
//! ```

use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use proto_stream::checkpoint::native::{Error, NativeFormat, Reader, Writer};
use proto_stream::checkpoint::{compare, DataSplit, Emitter, Format, Outcome, Token};
use proto_stream::header::Error::Unsupported;
use proto_stream::header::{
    Context, Endian, FixedHeaderFormat, ReadOptions, V1Header, VersionEntry, VersionRange,
    VersionTable, V1_FIELDS, V1_MAX_BODY_LEN,
};
use proto_stream::session::{DropEvery, FetchConfig, Fetcher, Server, ServerConfig};
use proto_stream::tlv::{AttrValue, CrcVariant, Profile, Value};

// Sections (command types) and their attributes.
const DEVICE: u16 = 1; // NAME, STATE
const MEMORY: u16 = 2; // REGION, ADDR, PAGES (the data: splittable)
const FLOWS: u16 = 3; // added in version 2: NAME, STATE
const END: u16 = 0xFFFF;
const NAME: u16 = 1;
const STATE: u16 = 2;
const REGION: u16 = 3;
const ADDR: u16 = 4;
const PAGES: u16 = 0x7FFF;

/// One entry per version: version 2's header is version 1's plus an
/// appended `u32` (the number of flow sections), which v1 readers skip.
const fn entry(version: u32) -> VersionEntry<V1Header> {
    VersionEntry {
        version,
        fields: V1_FIELDS,
        max_body_len: V1_MAX_BODY_LEN,
        decode: V1Header::decode,
        encode: V1Header::encode,
    }
}
static V1_AND_V2: VersionTable<V1Header> = VersionTable::new(&[entry(1), entry(2)]);
static V1_ONLY: VersionTable<V1Header> = VersionTable::new(&[entry(1)]);
static V3_ONLY: VersionTable<V1Header> = VersionTable::new(&[entry(3)]);

/// The whole format.
const MIGRATE: NativeFormat = NativeFormat {
    name: "migrate",
    fixed: FixedHeaderFormat::native(b"PASSTMIG"),
    versions: &V1_AND_V2,
    profile: Profile {
        crc: CrcVariant::Standard,
        max_payload_len: 16 << 20,
        unbounded_data_attr: Some(PAGES),
        end_cmd: END,
    },
    split: Some(DataSplit {
        cmd: MEMORY,
        offset_attr: ADDR,
        data_attr: PAGES,
        path_attr: Some(REGION),
    }),
    known_features: 0,
};

/// A v2 stream: two devices, two memory regions of 160 KiB, one flow.
fn write_v2() -> Result<Vec<u8>, Error> {
    let header = V1Header {
        byte_order: Endian::Little,
        features_supported: 0,
        features_required: 0,
        stream_id: *b"vm-42-migration!",
        contexts: vec![Context {
            id: 1,
            name: "guest".into(),
        }],
    };
    let flows = 1u32.to_be_bytes();
    let v2 = V1_AND_V2.entry(2)?;
    let mut w = Writer::with_body(&MIGRATE, Vec::new(), v2, 1, &header, &flows)?;
    let device = |name: &'static [u8], state: &'static [u8]| {
        [
            AttrValue::new(NAME, Value::Bytes(name)),
            AttrValue::new(STATE, Value::Bytes(state)),
        ]
    };
    w.write_command(DEVICE, &device(b"virtio-net", b"rx=3 tx=5"))?;
    for (i, region) in [&b"ram-low"[..], b"ram-high"].into_iter().enumerate() {
        let pages: Vec<u8> = (0..160 * 1024u32)
            .map(|b| (b % 251) as u8 ^ i as u8)
            .collect();
        w.write_command(
            MEMORY,
            &[
                AttrValue::new(REGION, Value::Bytes(region)),
                AttrValue::new(ADDR, Value::U64((i as u64) << 32)),
                AttrValue::new(PAGES, Value::Bytes(&pages)),
            ],
        )?;
    }
    w.write_command(FLOWS, &device(b"tcp:10.0.0.2:22", b"seq=1000 ack=77"))?;
    w.write_command(DEVICE, &device(b"virtio-blk", b"queue=0"))?;
    w.finish()
}

/// Reads `bytes` with `versions`: the version chosen, what the header
/// appended, and the section types.
fn read(
    versions: &'static VersionTable<V1Header>,
    bytes: &[u8],
) -> Result<(u32, Vec<u8>, Vec<u16>), Error> {
    let format = NativeFormat {
        versions,
        ..MIGRATE
    };
    let mut r = Reader::open(&format, bytes, ReadOptions::default())?;
    let mut types = Vec::new();
    while let Some(c) = r.next_command()? {
        types.push(c.cmd());
    }
    Ok((r.version(), r.header_extension().to_vec(), types))
}

/// Chunks `stream` through 4 KiB buffers, "crashes" after `crash` chunks
/// keeping only the last token's text, resumes, and returns the chunks.
fn chunk_crash_resume(
    stream: &[u8],
    crash: usize,
) -> Result<Vec<Vec<u8>>, Box<dyn std::error::Error>> {
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut e = Emitter::new(MIGRATE.producer(stream, 4)?, MIGRATE.split())?;
    let mut saved = String::new();
    for _ in 0..crash {
        let f = e.fill(&mut buf)?;
        chunks.push(buf[..f.written].to_vec());
        saved = e.token().to_text()?;
    }
    drop(e); // the crash
    let token: Token = saved.parse()?;
    let mut e = Emitter::resume(MIGRATE.producer(stream, 1)?, MIGRATE.split(), &token)?;
    loop {
        let f = e.fill(&mut buf)?;
        chunks.push(buf[..f.written].to_vec());
        if f.ended {
            return Ok(chunks);
        }
    }
}

/// Sends `stream` over loopback TCP, the sender dropping every connection
/// after 250 000 bytes: the receiver's output and its reconnects.
fn send(stream: Vec<u8>) -> Result<(Vec<u8>, u64), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let timeout = Some(Duration::from_secs(10));
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let mut server = Server::with_format(MIGRATE, stream, ServerConfig::default())
            .map_err(|e| e.to_string())?;
        for _ in 0..50 {
            let (conn, _) = listener.accept().map_err(|e| e.to_string())?;
            let _ = (
                conn.set_read_timeout(timeout),
                conn.set_write_timeout(timeout),
            );
            match server.serve(DropEvery::new(&conn, 250_000)) {
                Ok(_) => return Ok(()),
                Err(e) if e.retryable() => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("no transfer in 50 connections".into())
    });
    let mut fetcher = Fetcher::with_format(MIGRATE, Vec::new(), FetchConfig::default());
    for _ in 0..50 {
        let conn = TcpStream::connect(addr)?;
        conn.set_read_timeout(timeout)?;
        match fetcher.fetch(&conn) {
            Ok(()) => break,
            Err(e) if e.retryable() => {}
            Err(e) => return Err(e.into()),
        }
    }
    sender.join().map_err(|_| "the sender panicked")??;
    let reconnects = fetcher.stats().reconnects;
    Ok((fetcher.into_inner(), reconnects))
}

fn main() -> ExitCode {
    let mut failed = 0;
    let mut check = |ok: bool, what: &str| {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        failed += usize::from(!ok);
    };
    let stream = match write_v2() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("migration: writing the stream: {e}");
            return ExitCode::FAILURE;
        }
    };
    check(
        MIGRATE.recognises(&stream),
        "the stream starts with its own magic",
    );

    // A v2 reader reads v2 and its appended field; a v1-only reader reads
    // the same bytes as v1 (compat_version 1), the appended field skipped,
    // the v2 section seen as a section type it may ignore.
    let all = vec![DEVICE, MEMORY, MEMORY, FLOWS, DEVICE, END];
    let v2 = read(&V1_AND_V2, &stream);
    check(
        matches!(&v2, Ok((2, ext, t)) if ext[..] == 1u32.to_be_bytes() && *t == all),
        "a v2 reader reads version 2 and its appended header field",
    );
    let v1 = read(&V1_ONLY, &stream);
    check(
        matches!(&v1, Ok((1, _, t)) if *t == all),
        "a v1-only reader reads it as version 1 (within compat)",
    );
    // A reader that needs v3 is refused, naming both ranges.
    match read(&V3_ONLY, &stream) {
        Err(e @ Error::Header(Unsupported { .. })) => {
            println!("     the refusal: {e}");
            let Error::Header(Unsupported { offered, supported }) = e else {
                unreachable!()
            };
            check(
                offered == VersionRange { min: 1, max: 2 } && supported == [3],
                "a v3-only reader is refused: offered 1..=2, supports {3}",
            );
        }
        other => check(
            false,
            &format!("a v3-only reader is refused (got {other:?})"),
        ),
    }

    // Chunked through 4 KiB buffers, crashed after 30 chunks, resumed from
    // the token's text alone: the memory images were split into valid
    // sections, and the result carries the same sections.
    match chunk_crash_resume(&stream, 30) {
        Ok(chunks) => {
            let joined = chunks.concat();
            check(
                chunks.iter().all(|c| c.len() <= 4096),
                "every chunk fits 4 KiB",
            );
            check(joined != stream, "the memory sections were split");
            check(
                read(&V1_AND_V2, &joined).is_ok(),
                "the resumed stream reads (every CRC)",
            );
            let (mut a, mut b) = (
                MIGRATE.producer(&stream[..], 1),
                MIGRATE.producer(&joined[..], 1),
            );
            let same = match (&mut a, &mut b) {
                (Ok(a), Ok(b)) => {
                    matches!(compare(a, b, &MIGRATE.split()), Ok(Outcome::Equal { .. }))
                }
                _ => false,
            };
            check(
                same,
                "crash + resume from a token: the same sections as the original",
            );
        }
        Err(e) => check(false, &format!("chunk, crash, resume: {e}")),
    }

    // Over a session whose connections drop every 250 000 bytes.
    match send(stream.clone()) {
        Ok((out, reconnects)) => {
            check(
                out == stream,
                "sent over dropped connections: byte-identical",
            );
            check(
                reconnects > 0,
                &format!("the receiver reconnected ({reconnects} times)"),
            );
        }
        Err(e) => check(false, &format!("session: {e}")),
    }

    if failed == 0 {
        println!("migration: every check holds");
        ExitCode::SUCCESS
    } else {
        println!("migration: {failed} check(s) failed");
        ExitCode::FAILURE
    }
}
