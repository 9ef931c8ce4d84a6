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

/// A filled buffer: its page-aligned window starts at `start` and holds
/// `len` bytes; `last`: the input ends after them (`len` may then be 0).
struct Filled {
    buf: Vec<u8>,
    start: usize,
    len: usize,
    last: bool,
}

/// What a reader hands over. Only a reader says where the input ends (a
/// [`Filled`] marked `last`): a read error comes after the bytes read
/// before it, and a reader that stops without either (a panic) is an error
/// too, never taken for the end.
type Chunk = io::Result<Filled>;

/// Fixed pools of buffers, filled by reader threads and handed back through
/// return channels: no allocation after the start, bounded memory. Reader
/// `i` of `n` fills chunks `i`, `i + n`, ...; chunks come out in order.
struct Chunks {
    rx: Vec<Receiver<Chunk>>,
    back: Vec<SyncSender<Vec<u8>>>,
    /// The reader of the next chunk.
    next: usize,
    /// The last chunk came (a file that grew since is not read further, as
    /// one reader would not have), or an error.
    ended: bool,
}

/// The page-aligned window of `buf` a read goes into, and where it starts.
fn window(buf: &mut [u8]) -> (usize, &mut [u8]) {
    let start = (PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
    (start, &mut buf[start..start + CHUNK])
}

/// Fills `window` by `read(window[n..], n)` until it is full or a read
/// gives nothing; returns the bytes read and whether the input ended, or
/// the bytes read before an error and the error.
fn fill(
    window: &mut [u8],
    mut read: impl FnMut(&mut [u8], usize) -> io::Result<usize>,
) -> (usize, io::Result<bool>) {
    let mut n = 0;
    while n < window.len() {
        match read(&mut window[n..], n) {
            Ok(0) => return (n, Ok(true)),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Err(e)),
        }
    }
    (n, Ok(false))
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

/// A reader thread's loop: takes a spare buffer, fills it with
/// `read(window, chunk number)` and sends it, until the input ends, a read
/// fails (the bytes before the error go first, then the error) or the
/// consumer is gone.
fn reader(
    tx: SyncSender<Chunk>,
    spare: Receiver<Vec<u8>>,
    mut read: impl FnMut(&mut [u8], u64) -> (usize, io::Result<bool>) + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut k = 0;
        while let Ok(mut buf) = spare.recv() {
            let (start, window) = window(&mut buf);
            let (len, r) = read(window, k);
            k += 1;
            let last = matches!(r, Ok(true));
            if (len > 0 || last)
                && tx
                    .send(Ok(Filled {
                        buf,
                        start,
                        len,
                        last,
                    }))
                    .is_err()
            {
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
        reader(tx, spare, move |window, _| {
            fill(window, |w, _| input.read(w))
        });
        Chunks {
            rx: vec![rx],
            back: vec![back],
            next: 0,
            ended: false,
        }
    }

    /// [`READERS`] threads reading `file` from byte 0 by positional reads,
    /// each every `READERS`-th chunk. A short chunk (or an empty one) is
    /// the last.
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
            chunks.rx.push(rx);
            chunks.back.push(back);
            let file = file.clone();
            reader(tx, spare, move |window, k| {
                let at = (k * READERS as u64 + i as u64) * CHUNK as u64;
                fill(window, |w, n| file.read_at(w, at + n as u64))
            });
        }
        chunks
    }

    /// The next chunk in order; `None` after the last one or an error.
    fn recv(&mut self) -> Option<Chunk> {
        if self.ended {
            return None;
        }
        let c = self.rx[self.next].recv().unwrap_or_else(|_| {
            Err(io::Error::other(
                "a reader thread stopped before the end of input",
            ))
        });
        self.ended = c.as_ref().map_or(true, |f| f.last);
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
        let Filled {
            buf: chunk,
            start,
            len: n,
            ..
        } = chunk.map_err(|e| Failure::Io {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that fails on every read.
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("injected read error"))
        }
    }

    fn sample() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/btrfs/nodata-v2.stream"
        ))
        .unwrap()
    }

    /// Every chunk's bytes, in order, until the last; the error if one
    /// came instead.
    fn drain(mut c: Chunks) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = c.recv() {
            let f = chunk?;
            out.extend_from_slice(&f.buf[f.start..f.start + f.len]);
            c.give_back(f.buf);
        }
        Ok(out)
    }

    /// A whole stream (it ends with END), then a read error: the error is
    /// reported, not taken for the end of input.
    #[test]
    fn a_read_error_after_a_whole_stream_is_reported() {
        let reader = Box::new(io::Cursor::new(sample()).chain(Failing));
        let opened = Opened {
            reader,
            len: None,
            file: None,
        };
        match each_event(Path::new("input"), opened, |_| Ok(true)) {
            Err(Failure::Io { source, offset, .. }) => {
                assert_eq!(source.to_string(), "injected read error");
                assert_eq!(offset, Some(sample().len() as u64));
            }
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("the read error was taken for the end of input"),
        }
    }

    /// A reader thread that stops without saying the input ended is an
    /// error, not the end.
    #[test]
    fn a_reader_that_vanishes_is_an_error() {
        let (tx, rx) = sync_channel(1);
        let (back, _spare) = sync_channel(1);
        let mut c = Chunks {
            rx: vec![rx],
            back: vec![back],
            next: 0,
            ended: false,
        };
        drop(tx);
        assert!(matches!(c.recv(), Some(Err(_))));
        assert!(c.recv().is_none(), "nothing after the error");
    }

    /// The positional readers hand every byte over once, in order, for a
    /// file that ends inside a chunk of either reader, on a chunk boundary
    /// (the next reader then sends an empty last chunk), or is empty.
    #[test]
    fn positional_readers_give_the_file_in_order() {
        let dir = std::env::temp_dir().join(format!("proto-stream-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for len in [
            0,
            100,
            CHUNK,
            CHUNK + 1,
            2 * CHUNK,
            2 * CHUNK + 77,
            5 * CHUNK - 3,
        ] {
            let bytes: Vec<u8> = (0..len as u64).map(|i| (i * 7 + i / 4093) as u8).collect();
            let path = dir.join("f");
            std::fs::write(&path, &bytes).unwrap();
            let c = Chunks::spawn_positional(File::open(&path).unwrap());
            assert_eq!(c.rx.len(), READERS);
            let got = drain(c).unwrap();
            assert!(got == bytes, "length {len}: got {} bytes", got.len());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The single reader too.
    #[test]
    fn the_stream_reader_gives_its_input_in_order() {
        for len in [0, 1, CHUNK, 3 * CHUNK + 5] {
            let bytes: Vec<u8> = (0..len as u64).map(|i| (i * 13) as u8).collect();
            let c = Chunks::spawn(Box::new(io::Cursor::new(bytes.clone())));
            assert!(drain(c).unwrap() == bytes, "length {len}");
        }
    }
}
