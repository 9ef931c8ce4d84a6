//! Input for the stream commands: a reader thread fills large buffers while
//! the main thread decodes the previous one (reading and CRC checking
//! overlap), and every stream event is handed to a visitor.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use indicatif::ProgressBar;
use proto_stream::btrfs::StreamDecoder;
use proto_stream::tlv::ReadBuf;

use crate::{progress, Failure};

/// Size of each read.
const CHUNK: usize = 1 << 20;
/// Reads land on a page boundary: on some CPUs the kernel's copy into a
/// buffer that starts just past one (where the allocator puts large blocks)
/// is several times slower.
const PAGE: usize = 4096;
/// Buffers in flight between the threads.
const DEPTH: usize = 3;

/// A fixed pool of buffers, filled by a reader thread and handed back
/// through a return channel: no allocation after the start, bounded memory.
struct Chunks {
    /// (buffer, start of the page-aligned window, bytes read into it)
    rx: Receiver<io::Result<(Vec<u8>, usize, usize)>>,
    back: SyncSender<Vec<u8>>,
}

impl Chunks {
    fn spawn(mut input: Box<dyn Read + Send>) -> Chunks {
        let (tx, rx) = sync_channel(DEPTH);
        let (back, spare) = sync_channel::<Vec<u8>>(DEPTH + 1);
        for _ in 0..DEPTH + 1 {
            let _ = back.try_send(vec![0; CHUNK + PAGE]);
        }
        std::thread::spawn(move || {
            while let Ok(mut buf) = spare.recv() {
                let start = (PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
                let window = &mut buf[start..start + CHUNK];
                let mut n = 0;
                let r = loop {
                    match input.read(&mut window[n..]) {
                        Ok(0) => break Ok(true),
                        Ok(k) => {
                            n += k;
                            if n == window.len() {
                                break Ok(false);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                if n > 0 && tx.send(Ok((buf, start, n))).is_err() {
                    return;
                }
                match r {
                    Ok(false) => {}
                    Ok(true) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        Chunks { rx, back }
    }
}

pub use proto_stream::btrfs::Visit;

/// How [`each_event`] ended.
pub enum End {
    /// At the end of input, after this many bytes, every stream complete.
    Eof { bytes: u64 },
    /// The visitor stopped at the event at `offset`; `more_input` when bytes
    /// were already read past it.
    Stopped { offset: u64, more_input: bool },
}

/// An opened input: the reader and, for a file, its length.
pub type Opened = (Box<dyn Read + Send>, Option<u64>);

/// Opens `path` (`-`: standard input).
pub fn open(path: &Path) -> Result<Opened, Failure> {
    Ok(if path.as_os_str() == "-" {
        (Box::new(io::stdin()), None)
    } else {
        let f = File::open(path).map_err(|e| Failure::io(path.display(), e))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    })
}

/// Opens `path` and reads its first bytes (up to `n`, fewer only at end of
/// input) to tell the format; the returned reader still yields them.
pub fn sniff(path: &Path, n: usize) -> Result<(Vec<u8>, Opened), Failure> {
    let (mut input, len) = open(path)?;
    let mut buf = ReadBuf::new();
    let got = buf
        .fill_from(&mut input, n, n)
        .map_err(|source| Failure::Io {
            place: path.display().to_string(),
            offset: Some(buf.available().len() as u64),
            source,
        })?;
    // Everything read (maybe more than `n`) goes back in front of the rest.
    let read = buf.available().to_vec();
    let head = read[..got.min(n)].to_vec();
    let input: Box<dyn Read + Send> = Box::new(io::Cursor::new(read).chain(input));
    Ok((head, (input, len)))
}

/// Hands every event of the btrfs stream(s) in `input` (read from `path`)
/// to `visit`, which returns `false` to stop early. At the end of input,
/// checks that the last stream ended with END.
pub fn each_event(
    path: &Path,
    (input, len): Opened,
    mut visit: impl FnMut(Visit<'_, '_>) -> Result<bool, Failure>,
) -> Result<End, Failure> {
    // No progress bar over output going to the same terminal.
    let pb: ProgressBar = if io::stdout().is_terminal() {
        ProgressBar::hidden()
    } else {
        progress(len)
    };
    let chunks = Chunks::spawn(input);
    let mut dec = StreamDecoder::new();
    let mut offset = 0u64;
    while let Ok(chunk) = chunks.rx.recv() {
        let (chunk, start, n) = chunk.map_err(|e| Failure::Io {
            place: path.display().to_string(),
            offset: Some(offset),
            source: e,
        })?;
        let p = &chunk[start..start + n];
        // Where the event the visitor stops at starts: a command's own
        // offset, or the header just read.
        let mut command_at = None;
        let (used, stopped) = dec.decode_each(p, |v| {
            command_at = match &v {
                Visit::Command(c) => Some(c.offset()),
                Visit::Stream { .. } => None,
            };
            visit(v)
        })?;
        if stopped {
            let stop_at =
                command_at.unwrap_or_else(|| dec.offset() - proto_stream::btrfs::HEADER_LEN as u64);
            pb.finish_and_clear();
            return Ok(End::Stopped {
                offset: stop_at,
                more_input: used < p.len(),
            });
        }
        offset += n as u64;
        pb.set_position(offset);
        let _ = chunks.back.send(chunk);
    }
    pb.finish_and_clear();
    dec.finish()?;
    Ok(End::Eof { bytes: offset })
}
