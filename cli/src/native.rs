//! `dump` and `verify` of native proto-stream streams.
//!
//! The CLI interprets no feature bit: it reads any native stream's framing,
//! whatever features it requires.

use crate::TypeCounts;
use std::io::{self, IsTerminal, Read, Write};

use proto_stream::header::ReadOptions;
use proto_stream::native::{self, Reader};
use proto_stream::tlv::Command;

use crate::input::Opened;
use crate::{add_error, flush_out, progress, Failure};

/// Feature bits the CLI accepts: all (it only reads the framing).
pub const CLI_OPTIONS: ReadOptions = ReadOptions {
    known_features: u64::MAX,
};

/// One dump line: `index=I offset=O cmd=0xCCCC len=N attrs=0xTTTT:LEN,...`
/// (`attrs=-` without attributes).
fn dump_line(c: &Command<'_>, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "index={} offset={} cmd={:#06x} len={} attrs=",
        c.index(),
        c.offset(),
        c.cmd(),
        c.payload().len()
    );
    let mut any = false;
    for a in c.attrs() {
        if any {
            out.push(b',');
        }
        any = true;
        let _ = write!(out, "{:#06x}:{}", a.ty(), a.value().len());
    }
    if !any {
        out.push(b'-');
    }
    out.push(b'\n');
}

/// The input with a progress bar on stderr (drawn only when stderr is a
/// terminal and stdout is not).
fn with_progress(
    Opened {
        reader: input, len, ..
    }: Opened,
) -> (impl Read, indicatif::ProgressBar) {
    let pb = if io::stdout().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        progress(len)
    };
    (pb.wrap_read(input), pb)
}

/// Prints one line per command, END included.
pub fn dump(input: Opened) -> Result<(), Failure> {
    let (input, pb) = with_progress(input);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut buf = Vec::with_capacity(1 << 16);
    let r = (|| {
        let mut r = Reader::new(input, CLI_OPTIONS)?;
        while let Some(c) = r.next_command()? {
            dump_line(&c, &mut buf);
            if buf.len() >= 64 * 1024 {
                flush_out(&mut out, &mut buf)?;
            }
        }
        Ok(())
    })();
    pb.finish_and_clear();
    flush_out(&mut out, &mut buf)?;
    r
}

#[derive(Default)]
struct Summary {
    version: Option<(u32, u32, u32)>,
    commands: u64,
    bytes: u64,
    by_type: TypeCounts,
}

fn verify_into(input: Opened, s: &mut Summary) -> Result<(), Failure> {
    let (input, pb) = with_progress(input);
    let r = verify_reader(input, s);
    pb.finish_and_clear();
    r
}

fn verify_reader(input: impl Read, s: &mut Summary) -> Result<(), Failure> {
    let mut r = Reader::new(input, CLI_OPTIONS)?;
    s.version = Some((r.version(), r.fixed().version, r.fixed().compat_version));
    while let Some(c) = r.next_command()? {
        // Attributes were checked when the command was decoded.
        s.commands += 1;
        s.by_type.add(c.cmd());
    }
    s.bytes = r.offset();
    Ok(())
}

/// Checks the headers, every CRC and the END; prints a summary.
pub fn verify(input: Opened, json: bool) -> Result<(), Failure> {
    let mut s = Summary::default();
    let r = verify_into(input, &mut s);
    let (chosen, version, compat) = s.version.unwrap_or_default();
    if json {
        let mut v = serde_json::json!({
            "ok": r.is_ok(),
            "format": "native",
            "version": chosen,
            "stream_version": version,
            "compat_version": compat,
            "commands": s.commands,
            "bytes": s.bytes,
            "commands_by_type": s.by_type.named(|t| format!("{t:#06x}")),
        });
        add_error(&mut v, &r);
        let _ = writeln!(io::stdout(), "{v}");
    } else if r.is_ok() {
        let _ = writeln!(
            io::stdout(),
            "ok: native stream v{chosen} (version {version}, compat_version {compat}), {} commands, {} bytes",
            s.commands,
            s.bytes
        );
    }
    r
}

impl From<native::Error> for Failure {
    fn from(e: native::Error) -> Self {
        Failure::Native(e)
    }
}
