//! `chunk`, `resume` and `compare`: checkpointed re-emission of streams
//! (btrfs send streams and native streams, told apart by magic) through
//! bounded buffers, and segment-independent comparison.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use proto_stream::btrfs::Btrfs;
use proto_stream::checkpoint::native::PRSTREAM;
use proto_stream::checkpoint::{
    compare as compare_streams, CompareError, EmitError, Emitter, FileSource, Format,
    FormatProducer, Outcome, Token,
};

use crate::{progress, Failure};

type Producer<F> = FormatProducer<F, FileSource<File>>;

/// Runs `$body` with `$f` bound to the format of `$file` (by its magic):
/// every command is written once, for any format.
macro_rules! with_format {
    ($file:expr, |$f:ident| $body:expr) => {
        if is_native($file)? {
            let $f = PRSTREAM;
            $body
        } else {
            let $f = Btrfs;
            $body
        }
    };
}

/// Whether `file` starts with the native magic (anything else is read as
/// a btrfs stream, whose errors say what was found).
fn is_native(file: &Path) -> Result<bool, Failure> {
    if file == Path::new("-") {
        // Not read: `open` refuses standard input with a clear message.
        return Ok(false);
    }
    let (head, _) = crate::input::sniff(file, PRSTREAM.fixed.magic.len())?;
    Ok(PRSTREAM.recognises(&head))
}

/// What `chunk` and `resume` were asked to do.
pub struct ChunkArgs<'a> {
    pub file: &'a Path,
    pub buffer_size: usize,
    pub out_dir: &'a Path,
    pub stop_after: Option<u64>,
    pub safe_every: u64,
    pub units_per_fill: Option<u64>,
    pub json: bool,
}

/// `file` as a random-access source (standard input is refused: the
/// commands here re-read and seek).
fn source(file: &Path) -> Result<FileSource<File>, Failure> {
    if file == Path::new("-") {
        return Err(Failure::NeedsSeekableFile);
    }
    let f = File::open(file).map_err(|e| Failure::io(file.display(), e))?;
    FileSource::new(f).map_err(|e| Failure::io(file.display(), e))
}

fn open<F: Format>(format: &F, file: &Path, safe_every: u64) -> Result<Producer<F>, Failure>
where
    Failure: From<F::Error>,
{
    Ok(format.producer(source(file)?, safe_every)?)
}

impl<E> From<EmitError<E>> for Failure
where
    E: std::error::Error + From<proto_stream::tlv::Error> + Send + Sync + 'static,
    Failure: From<E>,
{
    fn from(e: EmitError<E>) -> Self {
        match e {
            EmitError::Producer(e) => Failure::from(e),
            EmitError::Corrupt(t) => Failure::from(E::from(t)),
            EmitError::DoesNotFit { index, offset, .. } => Failure::Emit {
                source: Box::new(e),
                index: Some(index),
                offset: Some(offset),
            },
            EmitError::Token(t) => Failure::Token(t),
            other => Failure::Emit {
                source: Box::new(other),
                index: None,
                offset: None,
            },
        }
    }
}

fn chunk_name(i: u64) -> String {
    format!("chunk-{i:06}.bin")
}

fn token_name(i: u64) -> String {
    format!("token-{i:06}.txt")
}

/// The chunk numbers of `chunk-NNNNNN.bin` files in `dir`.
fn existing_chunks(dir: &Path) -> Result<Vec<u64>, Failure> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Failure::io(dir.display(), e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Failure::io(dir.display(), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("chunk-")
            .and_then(|n| n.strip_suffix(".bin"))
            .and_then(|n| n.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename, so a
/// crash never leaves a partial chunk or token under its final name.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Failure> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let fin = dir.join(name);
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &fin))
        .map_err(|e| Failure::io(format!("writing {}", fin.display()), e))
}

pub fn chunk(a: &ChunkArgs<'_>) -> Result<(), Failure> {
    let existing = existing_chunks(a.out_dir)?;
    if let Some(n) = existing.first() {
        return Err(Failure::ChunksExist {
            dir: a.out_dir.display().to_string(),
            first: chunk_name(*n),
        });
    }
    with_format!(a.file, |f| {
        let emitter = Emitter::new(open(&f, a.file, a.safe_every)?, f.split())?;
        run(a, emitter, 1)
    })
}

/// A token given on the command line: its text, or a file holding it. For
/// a `token-NNNNNN.txt` file, the chunk number it follows.
fn read_token(t: &str) -> Result<(Token, Option<u64>), Failure> {
    let (text, after) = if t
        .trim_start()
        .starts_with(proto_stream::checkpoint::token::TEXT_PREFIX)
    {
        (t.to_string(), None)
    } else {
        let p = PathBuf::from(t);
        let text = std::fs::read_to_string(&p)
            .map_err(|e| Failure::io(format!("token file {}", p.display()), e))?;
        let after = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("token-"))
            .and_then(|n| n.strip_suffix(".txt"))
            .and_then(|n| n.parse().ok());
        (text, after)
    };
    let token = Token::from_text(&text).map_err(Failure::Token)?;
    Ok((token, after))
}

pub fn resume(a: &ChunkArgs<'_>, token: &str, start_index: Option<u64>) -> Result<(), Failure> {
    let (token, after) = read_token(token)?;
    let first = start_index.or(after.map(|n| n + 1)).unwrap_or(1);
    if let Some(n) = existing_chunks(a.out_dir)?
        .into_iter()
        .find(|n| *n >= first)
    {
        return Err(Failure::ChunksWouldMix {
            dir: a.out_dir.display().to_string(),
            found: chunk_name(n),
            first,
        });
    }
    with_format!(a.file, |f| {
        let emitter = Emitter::resume(open(&f, a.file, a.safe_every)?, f.split(), &token)?;
        run(a, emitter, first)
    })
}

/// Buffers at most this large are filled while the previous one is
/// written (two in memory); a larger one is written before the next fill.
const PIPELINE_MAX: usize = 64 << 20;

/// A filled buffer on its way to the writer thread: chunk `index` is
/// `buf[..len]`, followed by the token `token`.
struct Job {
    index: u64,
    buf: Vec<u8>,
    len: usize,
    token: String,
}

/// Fills buffers until the end (or `--stop-after`). A thread of its own
/// writes each chunk and then its token, in order, while the emitter fills
/// the next buffer: the checking and framing overlap the copies into the
/// file system.
fn run<F: Format>(
    a: &ChunkArgs<'_>,
    mut e: Emitter<Producer<F>, F::Split>,
    first: u64,
) -> Result<(), Failure>
where
    Failure: From<F::Error>,
{
    if a.buffer_size == 0 {
        return Err(Failure::ZeroBufferSize);
    }
    std::fs::create_dir_all(a.out_dir).map_err(|err| Failure::io(a.out_dir.display(), err))?;
    if let Some(n) = a.units_per_fill {
        e.set_units_per_fill(n);
    }
    let start_offset = e.offset();
    let pb = progress(Some(crate::file_len(a.file)));
    let (mut chunks, mut units, mut pieces) = (0u64, 0u64, 0u64);
    let mut last_token = None;
    let mut ended = e.ended();
    let mut stopped = false;
    let depth = if a.buffer_size <= PIPELINE_MAX { 2 } else { 1 };
    std::thread::scope(|s| -> Result<(), Failure> {
        let (jobs, todo) = sync_channel::<Job>(depth);
        let (back, spare) = sync_channel::<Vec<u8>>(depth);
        let dir = a.out_dir;
        let writer = s.spawn(move || -> Result<(), Failure> {
            for job in todo {
                write_atomic(dir, &chunk_name(job.index), &job.buf[..job.len])?;
                write_atomic(dir, &token_name(job.index), job.token.as_bytes())?;
                // The emitter may have stopped; the buffer is then dropped.
                let _ = back.send(job.buf);
            }
            Ok(())
        });
        let mut allocated = 0;
        let emitted = (|| -> Result<(), Failure> {
            while !ended {
                if a.stop_after.is_some_and(|m| chunks >= m) {
                    stopped = true;
                    break;
                }
                let mut buf = if allocated < depth {
                    allocated += 1;
                    vec![0u8; a.buffer_size]
                } else {
                    match spare.recv() {
                        Ok(b) => b,
                        // The writer stopped: its error is the one to report.
                        Err(_) => return Ok(()),
                    }
                };
                let f = e.fill(&mut buf)?;
                ended = f.ended;
                units += f.units;
                pieces += f.pieces;
                if f.written == 0 {
                    break;
                }
                let index = first + chunks;
                let mut token = e.token().to_text().map_err(Failure::Token)?;
                token.push('\n');
                let job = Job {
                    index,
                    buf,
                    len: f.written,
                    token,
                };
                if jobs.send(job).is_err() {
                    return Ok(());
                }
                last_token = Some(a.out_dir.join(token_name(index)));
                chunks += 1;
                pb.set_position(e.producer().offset());
            }
            Ok(())
        })();
        // Everything handed over is written (or the writer failed) before
        // the command reports or fails.
        drop(jobs);
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        written.and(emitted)
    })?;
    pb.finish_and_clear();
    let bytes = e.offset() - start_offset;
    let last = last_token.as_ref().map(|p| p.display().to_string());
    if a.json {
        let v = serde_json::json!({
            "ok": true,
            "chunks": chunks,
            "first_chunk": first,
            "bytes": bytes,
            "stream_offset": e.offset(),
            "units": units,
            "pieces": pieces,
            "ended": ended,
            "stopped": stopped,
            "last_token": last,
        });
        let _ = writeln!(io::stdout(), "{v}");
    } else {
        let _ = writeln!(
            io::stdout(),
            "{} {chunks} chunks ({} to {}) of at most {} bytes into {}: {bytes} bytes, {units} units, {pieces} pieces of split writes",
            if ended { "done:" } else { "stopped:" },
            chunk_name(first),
            chunk_name(first + chunks.saturating_sub(1)),
            a.buffer_size,
            a.out_dir.display()
        );
        if !ended {
            if let Some(t) = &last {
                let _ = writeln!(
                    io::stdout(),
                    "resume with: proto-stream resume {} --token {t} --buffer-size {} --out-dir {}",
                    a.file.display(),
                    a.buffer_size,
                    a.out_dir.display()
                );
            }
        }
    }
    Ok(())
}

/// `compare A B`: exit 0 when equal, 1 when they differ; errors are
/// failures (exit 2).
pub fn compare(a: &Path, b: &Path, json: bool) -> Result<bool, Failure> {
    let (na, nb) = (is_native(a)?, is_native(b)?);
    if na != nb {
        return Err(Failure::FormatsDiffer {
            a: a.display().to_string(),
            a_native: na,
            b: b.display().to_string(),
            b_native: nb,
        });
    }
    with_format!(a, |f| compare_as(&f, a, b, json))
}

fn compare_as<F: Format>(f: &F, a: &Path, b: &Path, json: bool) -> Result<bool, Failure>
where
    Failure: From<F::Error>,
{
    let mut pa = f.units(source(a)?);
    let mut pb = f.units(source(b)?);
    let side = |s| {
        if s == proto_stream::checkpoint::Side::A {
            "A"
        } else {
            "B"
        }
    };
    let outcome = compare_streams(&mut pa, &mut pb, &f.split()).map_err(|e| match e {
        CompareError::A(e) => Failure::Side("A", Box::new(Failure::from(e))),
        CompareError::B(e) => Failure::Side("B", Box::new(Failure::from(e))),
        CompareError::Corrupt { side: s, error } => {
            Failure::Side(side(s), Box::new(Failure::from(F::Error::from(error))))
        }
        other => Failure::Emit {
            source: Box::new(other),
            index: None,
            offset: None,
        },
    })?;
    let mut out = io::stdout();
    match outcome {
        Outcome::Equal {
            units_a,
            units_b,
            data_bytes,
        } => {
            if json {
                let v = serde_json::json!({
                    "equal": true, "units_a": units_a, "units_b": units_b, "data_bytes": data_bytes,
                });
                let _ = writeln!(out, "{v}");
            } else {
                let _ = writeln!(
                    out,
                    "equal: the same commands ({units_a} units in A, {units_b} in B; {data_bytes} data bytes aligned by path and file offset)"
                );
            }
            Ok(true)
        }
        Outcome::Differ(d) => {
            if json {
                let at = |x: &Option<proto_stream::checkpoint::At>| {
                    x.map(|at| {
                        serde_json::json!({
                            "command_index": at.index, "unit": at.seq,
                            "command_offset": at.offset, "byte_offset": at.byte,
                        })
                    })
                };
                let v = serde_json::json!({
                    "equal": false,
                    "what": d.to_string(),
                    "a": at(&d.a),
                    "b": at(&d.b),
                    "path": d.path.as_ref().map(|p| String::from_utf8_lossy(p).into_owned()),
                    "file_offset": d.file_offset,
                });
                let _ = writeln!(out, "{v}");
            } else {
                let _ = writeln!(out, "differ: {d}");
            }
            Ok(false)
        }
    }
}
