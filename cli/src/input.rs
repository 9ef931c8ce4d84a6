//! Input for the stream commands: reader threads fill large buffers while
//! the main thread decodes the previous one (reading and CRC checking
//! overlap), and every stream event is handed to a visitor. A large regular
//! file is read by two threads at once, each taking every other chunk by
//! positional reads: the kernel's copy out of the page cache is most of the
//! work there, and one thread's copy is slower than the file system can
//! give (see [`PARALLEL_FROM`]).

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::os::unix::fs::FileExt;
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

/// Files from this size on are read by [`READERS`] threads. Measured on a
/// 512 MiB stream (`benches/whole.sh`): `verify` takes 57–59 ms with two
/// readers against 69–75 ms with one (and `cat` 60–70 ms); on a 31 MiB
/// stream a second reader costs more (its buffers, its thread) than it
/// saves.
pub const PARALLEL_FROM: u64 = 64 << 20;
/// Reader threads of a large regular file.
const READERS: usize = 2;

/// A read chunk: (buffer, start of the page-aligned window, bytes read into
/// it).
type Chunk = io::Result<(Vec<u8>, usize, usize)>;

/// Fixed pools of buffers, filled by reader threads and handed back through
/// return channels: no allocation after the start, bounded memory. Reader
/// `i` of `n` fills chunks `i`, `i + n`, ...; chunks come out in order.
struct Chunks {
    rx: Vec<Receiver<Chunk>>,
    back: Vec<SyncSender<Vec<u8>>>,
    /// The reader of the next chunk.
    next: usize,
    /// A short chunk came: the end of input (a file that grew since is
    /// not read further, as one reader would not have).
    ended: bool,
}

/// The page-aligned window of `buf` a read goes into, and where it starts.
fn window(buf: &mut [u8]) -> (usize, &mut [u8]) {
    let start = (PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
    (start, &mut buf[start..start + CHUNK])
}

/// A reader's channels and its `depth + 1` buffers: it takes buffers
/// from `spare` and sends them filled through `tx`; the consumer receives
/// them from `rx` and hands them back through `back`.
struct Pool {
    tx: SyncSender<Chunk>,
    rx: Receiver<Chunk>,
    back: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
}

fn pool(depth: usize) -> Pool {
    let (tx, rx) = sync_channel(depth);
    let (back, spare) = sync_channel::<Vec<u8>>(depth + 1);
    for _ in 0..depth + 1 {
        let _ = back.try_send(vec![0; CHUNK + PAGE]);
    }
    Pool {
        tx,
        rx,
        back,
        spare,
    }
}

impl Chunks {
    /// One reader thread over `input`, read from where it stands.
    fn spawn(mut input: Box<dyn Read + Send>) -> Chunks {
        let Pool {
            tx,
            rx,
            back,
            spare,
        } = pool(DEPTH);
        std::thread::spawn(move || {
            while let Ok(mut buf) = spare.recv() {
                let (start, window) = window(&mut buf);
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
        Chunks {
            rx: vec![rx],
            back: vec![back],
            next: 0,
            ended: false,
        }
    }

    /// [`READERS`] threads reading `file` from byte 0 by positional reads,
    /// each every `READERS`-th chunk. A reader stops after a short chunk
    /// (the end of the file) and sends nothing for an empty one.
    fn spawn_positional(file: File) -> Chunks {
        let file = std::sync::Arc::new(file);
        let mut chunks = Chunks {
            rx: Vec::new(),
            back: Vec::new(),
            next: 0,
            ended: false,
        };
        for i in 0..READERS {
            // Two buffers in flight per reader besides the one it fills.
            let Pool {
                tx,
                rx,
                back,
                spare,
            } = pool(DEPTH - 1);
            let file = file.clone();
            std::thread::spawn(move || {
                let mut offset = (i * CHUNK) as u64;
                while let Ok(mut buf) = spare.recv() {
                    let (start, window) = window(&mut buf);
                    let mut n = 0;
                    let r = loop {
                        match file.read_at(&mut window[n..], offset + n as u64) {
                            Ok(0) => break Ok(()),
                            Ok(k) => {
                                n += k;
                                if n == window.len() {
                                    break Ok(());
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    if let Err(e) = r {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    if n == 0 || tx.send(Ok((buf, start, n))).is_err() || n < CHUNK {
                        return;
                    }
                    offset += (READERS * CHUNK) as u64;
                }
            });
            chunks.rx.push(rx);
            chunks.back.push(back);
        }
        chunks
    }

    /// The next chunk in order; `None` at the end of input.
    fn recv(&mut self) -> Option<Chunk> {
        if self.ended {
            return None;
        }
        let c = self.rx[self.next].recv().ok()?;
        self.ended = matches!(c, Ok((_, _, n)) if n < CHUNK);
        Some(c)
    }

    /// Hands the buffer of the chunk [`Chunks::recv`] gave last back to its
    /// reader, and moves on to the next reader.
    fn give_back(&mut self, buf: Vec<u8>) {
        let _ = self.back[self.next].send(buf);
        self.next = (self.next + 1) % self.rx.len();
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

/// An opened input.
pub struct Opened {
    /// Its bytes from the start.
    pub reader: Box<dyn Read + Send>,
    /// For a file, its length.
    pub len: Option<u64>,
    /// For a regular file, the file again, for positional reads from byte 0
    /// (whatever `reader` has read).
    pub file: Option<File>,
}

/// Opens `path` (`-`: standard input).
pub fn open(path: &Path) -> Result<Opened, Failure> {
    Ok(if path.as_os_str() == "-" {
        Opened {
            reader: Box::new(io::stdin()),
            len: None,
            file: None,
        }
    } else {
        let f = File::open(path).map_err(|e| Failure::io(path.display(), e))?;
        let meta = f.metadata().ok();
        let file = match &meta {
            Some(m) if m.is_file() => f.try_clone().ok(),
            _ => None,
        };
        Opened {
            reader: Box::new(f),
            len: meta.map(|m| m.len()),
            file,
        }
    })
}

/// Opens `path` and reads its first bytes (up to `n`, fewer only at end of
/// input) to tell the format; the returned reader still yields them.
pub fn sniff(path: &Path, n: usize) -> Result<(Vec<u8>, Opened), Failure> {
    let Opened {
        reader: mut input,
        len,
        file,
    } = open(path)?;
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
    let reader: Box<dyn Read + Send> = Box::new(io::Cursor::new(read).chain(input));
    Ok((head, Opened { reader, len, file }))
}

/// Hands every event of the btrfs stream(s) in `input` (read from `path`)
/// to `visit`, which returns `false` to stop early. At the end of input,
/// checks that the last stream ended with END.
pub fn each_event(
    path: &Path,
    Opened { reader, len, file }: Opened,
    mut visit: impl FnMut(Visit<'_, '_>) -> Result<bool, Failure>,
) -> Result<End, Failure> {
    // No progress bar over output going to the same terminal.
    let pb: ProgressBar = if io::stdout().is_terminal() {
        ProgressBar::hidden()
    } else {
        progress(len)
    };
    let mut chunks = match file {
        Some(f) if len.is_some_and(|l| l >= PARALLEL_FROM) => Chunks::spawn_positional(f),
        _ => Chunks::spawn(reader),
    };
    let mut dec = StreamDecoder::new();
    let mut offset = 0u64;
    while let Some(chunk) = chunks.recv() {
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
        chunks.give_back(chunk);
    }
    pb.finish_and_clear();
    dec.finish()?;
    Ok(End::Eof { bytes: offset })
}
