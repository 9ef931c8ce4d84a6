//! Input for the stream commands: a reader thread fills large buffers while
//! the main thread decodes the previous one (reading and CRC checking
//! overlap), and every stream event is handed to a visitor. A large regular
//! file (see [`PARALLEL_FROM`]) is read by positional reads shared between
//! a helper thread and the main thread, which reads chunks ahead itself
//! instead of waiting for the helper: the kernel's copy out of the page
//! cache is most of the work there, one thread's copy cannot keep up with
//! the decoder, and the two threads balance it between them
//! ([`Positional`]).

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;

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

/// Regular files from this size on are read by positional reads shared
/// between a helper thread and the consumer ([`Positional`]), smaller ones
/// and other input by one reader thread. On the 31 MiB stream of
/// `benches/whole.sh` the shared reads made no difference (13.4 against
/// 12.3–13.4 ms for `verify`); on the 512 MiB one they take `verify` from
/// 77.6 to 60.0 ms.
pub const PARALLEL_FROM: u64 = 64 << 20;
/// The consumer's own buffers for positional reads: it reads ahead into
/// them while the helper reads the chunk it wants.
const OWN: usize = 3;

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

/// Chunk number, what was read of it, and the error that cut it short.
type ChunkRead = (u64, Filled, Option<io::Error>);

/// The chunks of the input, in order, from fixed pools of buffers (no
/// allocation after the start while each chunk's buffer is given back
/// before the next is asked for, bounded memory): from one reader thread
/// ([`Chunks::spawn`]), or, for a regular file, from a reader thread and
/// the consumer's own positional reads ([`Chunks::spawn_positional`]).
enum Chunks {
    Stream(Stream),
    Positional(Positional),
}

/// One reader thread's chunks, through a channel; their buffers go back
/// through another.
struct Stream {
    rx: Receiver<Chunk>,
    back: SyncSender<Vec<u8>>,
    /// The last chunk came, or an error.
    ended: bool,
}

/// A regular file read by positional reads in chunks numbered from 0,
/// each claimed once (`claim`: the next not yet claimed) by a helper
/// thread or by the consumer. The helper claims the next chunk whenever it
/// has a buffer; the consumer reads the chunk it wants itself when nobody
/// has claimed it yet, and, while the helper is still reading the one it
/// wants, claims the next free one and reads it ahead into a buffer of its
/// own instead of waiting. So the two share the kernel's copy out of the
/// page cache (most of the work for a large file) in whatever proportion
/// the consumer's own work leaves, on any machine: with two fixed readers
/// taking every other chunk, the consumer's thread waited while they read.
struct Positional {
    file: Arc<dyn ReadAt>,
    claim: Arc<AtomicU64>,
    /// The helper's chunks, in the order it claimed them.
    rx: Receiver<ChunkRead>,
    back: SyncSender<Vec<u8>>,
    /// A chunk received from the helper, not yet handed out.
    helper_next: Option<ChunkRead>,
    /// Chunks the consumer read ahead (each after the one it wants).
    ahead: Vec<ChunkRead>,
    /// The consumer's spare buffers.
    spare: Vec<Vec<u8>>,
    /// The chunk to hand out next.
    want: u64,
    /// An error to hand out after the bytes read before it.
    error_next: Option<io::Error>,
    /// The chunk handed out last is the helper's (its buffer goes back).
    lent_by_helper: bool,
    /// The last chunk came, or an error.
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

/// Chunk `k` of `file` read into `buf`: the filled chunk, and the error
/// that cut it short.
fn read_chunk(file: &dyn ReadAt, k: u64, buf: Vec<u8>) -> (Filled, Option<io::Error>) {
    let at = k * CHUNK as u64;
    read_into(buf, |w, n| file.read_at(w, at + n as u64))
}

/// `buf`'s page-aligned window filled by `read` ([`fill`]): the filled
/// chunk, and the error that cut it short.
fn read_into(
    mut buf: Vec<u8>,
    read: impl FnMut(&mut [u8], usize) -> io::Result<usize>,
) -> (Filled, Option<io::Error>) {
    let (start, window) = window(&mut buf);
    let (len, r) = fill(window, read);
    let (last, error) = match r {
        Ok(last) => (last, None),
        Err(e) => (false, Some(e)),
    };
    let filled = Filled {
        buf,
        start,
        len,
        last,
    };
    (filled, error)
}

/// Positional reads: a regular file's (`pread`), or a test's.
trait ReadAt: Send + Sync {
    /// Reads into `buf` from byte `offset` on; 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

/// A new buffer for one chunk (with room to start it on a page boundary).
fn buffer() -> Vec<u8> {
    vec![0; CHUNK + PAGE]
}

/// The channels between a reader thread and the consumer, and `depth + 1`
/// buffers: the reader takes buffers from `spare` and sends them filled
/// through `tx`; the consumer receives them from `rx` and hands them back
/// through `back`.
struct Pool<T> {
    tx: SyncSender<T>,
    rx: Receiver<T>,
    back: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
}

fn pool<T>(depth: usize) -> Pool<T> {
    let (tx, rx) = sync_channel(depth);
    let (back, spare) = sync_channel::<Vec<u8>>(depth + 1);
    for _ in 0..depth + 1 {
        let _ = back.try_send(buffer());
    }
    Pool {
        tx,
        rx,
        back,
        spare,
    }
}

/// The error of a reader thread that stopped before saying the input
/// ended (a panic): never taken for the end.
fn vanished() -> io::Error {
    io::Error::other("a reader thread stopped before the end of input")
}

impl Chunks {
    /// One reader thread over `input`, read from where it stands: it takes
    /// a spare buffer, fills it and sends it, until the input ends, a read
    /// fails (the bytes before the error go first, then the error) or the
    /// consumer is gone.
    fn spawn(mut input: Box<dyn Read + Send>) -> Chunks {
        let Pool {
            tx,
            rx,
            back,
            spare,
        } = pool::<Chunk>(DEPTH);
        std::thread::spawn(move || {
            while let Ok(buf) = spare.recv() {
                let (filled, error) = read_into(buf, |w, _| input.read(w));
                let last = filled.last;
                if (filled.len > 0 || last) && tx.send(Ok(filled)).is_err() {
                    return;
                }
                if let Some(e) = error {
                    let _ = tx.send(Err(e));
                    return;
                }
                if last {
                    return;
                }
            }
        });
        Chunks::Stream(Stream {
            rx,
            back,
            ended: false,
        })
    }

    /// `file` from byte 0, by positional reads shared between a helper
    /// thread and the consumer ([`Positional`]). A short chunk (or an
    /// empty one) is the last.
    fn spawn_positional(file: File) -> Chunks {
        Chunks::positional(Arc::new(file))
    }

    /// [`Chunks::spawn_positional`] over any positional reads.
    fn positional(file: Arc<dyn ReadAt>) -> Chunks {
        let claim = Arc::new(AtomicU64::new(0));
        let Pool {
            tx,
            rx,
            back,
            spare,
        } = pool::<ChunkRead>(DEPTH);
        let (f, c) = (file.clone(), claim.clone());
        std::thread::spawn(move || {
            // A chunk is claimed only with a buffer to read it into: the
            // consumer, waiting for a chunk the helper claimed, never
            // waits for a buffer it holds.
            while let Ok(buf) = spare.recv() {
                let k = c.fetch_add(1, Ordering::Relaxed);
                let (filled, error) = read_chunk(&*f, k, buf);
                let end = filled.last || error.is_some();
                if tx.send((k, filled, error)).is_err() || end {
                    return;
                }
            }
        });
        Chunks::Positional(Positional {
            file,
            claim,
            rx,
            back,
            helper_next: None,
            ahead: Vec::with_capacity(OWN),
            spare: (0..OWN).map(|_| buffer()).collect(),
            want: 0,
            error_next: None,
            lent_by_helper: false,
            ended: false,
        })
    }

    /// The next chunk in order; `None` after the last one or an error.
    fn recv(&mut self) -> Option<Chunk> {
        let (c, ended) = match self {
            Chunks::Stream(s) => {
                if s.ended {
                    return None;
                }
                (
                    s.rx.recv().unwrap_or_else(|_| Err(vanished())),
                    &mut s.ended,
                )
            }
            Chunks::Positional(p) => {
                if p.ended {
                    return None;
                }
                (p.next(), &mut p.ended)
            }
        };
        *ended = c.as_ref().map_or(true, |f| f.last);
        Some(c)
    }

    /// Hands the buffer of the chunk [`Chunks::recv`] gave last back.
    fn give_back(&mut self, buf: Vec<u8>) {
        match self {
            Chunks::Stream(s) => {
                let _ = s.back.send(buf);
            }
            Chunks::Positional(p) if p.lent_by_helper => {
                let _ = p.back.send(buf);
            }
            Chunks::Positional(p) => p.spare.push(buf),
        }
    }
}

impl Positional {
    /// Chunk `want`: read ahead by the consumer, received from the helper,
    /// or read now; while the helper still reads it, the consumer reads
    /// the next free chunk ahead (while it has a buffer), then waits.
    fn next(&mut self) -> Chunk {
        if let Some(e) = self.error_next.take() {
            return Err(e);
        }
        loop {
            if let Some(i) = self.ahead.iter().position(|(k, ..)| *k == self.want) {
                let (_, filled, error) = self.ahead.swap_remove(i);
                return self.hand_out(filled, error, false);
            }
            if let Some((k, filled, error)) = self.helper_next.take() {
                if k != self.want {
                    // The helper claims in order and every chunk before
                    // `want` was handed out: this cannot be.
                    return Err(io::Error::other(format!(
                        "the reader thread gave chunk {k} where chunk {} was due",
                        self.want
                    )));
                }
                return self.hand_out(filled, error, true);
            }
            let unclaimed = self
                .claim
                .compare_exchange(
                    self.want,
                    self.want + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
            if unclaimed {
                // Nobody has it: no chunk from `want` on is claimed, so
                // none is ahead and every buffer of ours is spare.
                let buf = self.spare.pop().unwrap_or_else(buffer);
                let (filled, error) = read_chunk(&*self.file, self.want, buf);
                return self.hand_out(filled, error, false);
            }
            // The helper has claimed it: it arrives next on the channel.
            match self.rx.try_recv() {
                Ok(next) => self.helper_next = Some(next),
                Err(TryRecvError::Disconnected) => return Err(vanished()),
                Err(TryRecvError::Empty) if !self.spare.is_empty() => {
                    let k = self.claim.fetch_add(1, Ordering::Relaxed);
                    let buf = self.spare.pop().unwrap_or_else(buffer);
                    let (filled, error) = read_chunk(&*self.file, k, buf);
                    self.ahead.push((k, filled, error));
                }
                Err(TryRecvError::Empty) => match self.rx.recv() {
                    Ok(next) => self.helper_next = Some(next),
                    Err(_) => return Err(vanished()),
                },
            }
        }
    }

    /// Chunk `want`, read by the helper (`lent`: its buffer goes back to
    /// it) or by the consumer, handed out: the error that cut it short
    /// comes after it, or at once when nothing was read before it.
    fn hand_out(&mut self, filled: Filled, error: Option<io::Error>, lent: bool) -> Chunk {
        self.lent_by_helper = lent;
        self.want += 1;
        match error {
            Some(e) if filled.len == 0 => {
                if lent {
                    let _ = self.back.send(filled.buf);
                } else {
                    self.spare.push(filled.buf);
                }
                Err(e)
            }
            e => {
                self.error_next = e;
                Ok(filled)
            }
        }
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
        let mut c = Chunks::Stream(Stream {
            rx,
            back,
            ended: false,
        });
        drop(tx);
        assert!(matches!(c.recv(), Some(Err(_))));
        assert!(c.recv().is_none(), "nothing after the error");
    }

    /// A file of `len` bytes in a new directory, and its bytes.
    fn file_of(len: usize, name: &str) -> (std::path::PathBuf, Vec<u8>) {
        let dir =
            std::env::temp_dir().join(format!("proto-stream-input-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes: Vec<u8> = (0..len as u64).map(|i| (i * 7 + i / 4093) as u8).collect();
        let path = dir.join("f");
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }

    /// Positional reads of `source` whose helper is the test: it holds the
    /// helper's sender, and chunk 0 is already claimed when `claimed`.
    fn positional_without_helper(
        source: Arc<dyn ReadAt>,
        claimed: bool,
    ) -> (Positional, SyncSender<ChunkRead>) {
        let Pool { tx, rx, back, .. } = pool::<ChunkRead>(DEPTH);
        let p = Positional {
            file: source,
            claim: Arc::new(AtomicU64::new(u64::from(claimed))),
            rx,
            back,
            helper_next: None,
            ahead: Vec::new(),
            spare: (0..OWN).map(|_| buffer()).collect(),
            want: 0,
            error_next: None,
            lent_by_helper: false,
            ended: false,
        };
        (p, tx)
    }

    fn opened(path: &Path) -> Arc<dyn ReadAt> {
        Arc::new(File::open(path).unwrap())
    }

    /// The test's helper for a consumer that finds chunk 0 claimed: once
    /// the consumer has claimed all it can read ahead (it then waits for
    /// chunk 0), sends chunk 0, or, unless `send`, goes away without it.
    /// Returns the claims it saw and whether its wait (at most 10 s) ran
    /// out.
    fn slow_helper(
        p: &Positional,
        tx: SyncSender<ChunkRead>,
        send: bool,
    ) -> std::thread::JoinHandle<(u64, bool)> {
        let (file, claim) = (p.file.clone(), p.claim.clone());
        std::thread::spawn(move || {
            let t = std::time::Instant::now();
            let mut timed_out = false;
            while claim.load(Ordering::Relaxed) < 1 + OWN as u64 && !timed_out {
                timed_out = t.elapsed() > std::time::Duration::from_secs(10);
                std::thread::yield_now();
            }
            let claimed = claim.load(Ordering::Relaxed);
            if send {
                let (filled, error) = read_chunk(&*file, 0, buffer());
                tx.send((0, filled, error)).unwrap();
            }
            (claimed, timed_out)
        })
    }

    /// Bytes read by position that fail from byte `fail_at` on: a read that
    /// reaches it gives the bytes before it, the next one the error.
    struct Flaky {
        bytes: Vec<u8>,
        fail_at: u64,
    }

    impl ReadAt for Flaky {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            if offset >= self.fail_at {
                return Err(io::Error::other("injected read error"));
            }
            let end = (self.bytes.len() as u64).min(self.fail_at);
            let n = buf.len().min(end.saturating_sub(offset) as usize);
            let at = offset as usize;
            buf[..n].copy_from_slice(&self.bytes[at..at + n]);
            Ok(n)
        }
    }

    /// Every chunk's bytes, in order, and the error that ended them; and
    /// that nothing comes after.
    fn drain_to_error(mut c: Chunks) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        while let Some(chunk) = c.recv() {
            match chunk {
                Ok(f) => {
                    out.extend_from_slice(&f.buf[f.start..f.start + f.len]);
                    c.give_back(f.buf);
                }
                Err(e) => {
                    assert!(c.recv().is_none(), "a chunk after the error");
                    return (out, Some(e));
                }
            }
        }
        (out, None)
    }

    fn sample_bytes(len: usize) -> Vec<u8> {
        (0..len as u64).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    /// Positional reads hand every byte over once, in order, for a file
    /// that ends inside a chunk, on a chunk boundary (an empty last chunk
    /// follows) or is empty, whoever read which chunk.
    #[test]
    fn positional_reads_give_the_file_in_order() {
        for len in [
            0,
            100,
            CHUNK,
            CHUNK + 1,
            2 * CHUNK,
            2 * CHUNK + 77,
            5 * CHUNK - 3,
        ] {
            let (path, bytes) = file_of(len, "any");
            let c = Chunks::spawn_positional(File::open(&path).unwrap());
            let got = drain(c).unwrap();
            assert!(got == bytes, "length {len}: got {} bytes", got.len());
            std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        }
    }

    /// A helper that reads nothing: the consumer reads every chunk itself.
    #[test]
    fn the_consumer_reads_what_nobody_claimed() {
        let (path, bytes) = file_of(3 * CHUNK + 5, "alone");
        let (p, tx) = positional_without_helper(opened(&path), false);
        assert!(drain(Chunks::Positional(p)).unwrap() == bytes);
        drop(tx);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// While the helper holds the chunk the consumer wants, the consumer
    /// reads the next free ones ahead into its own buffers (as many as it
    /// has), then waits; everything still comes out once, in order.
    #[test]
    fn the_consumer_reads_ahead_while_the_helper_reads() {
        let (path, bytes) = file_of(7 * CHUNK + 11, "ahead");
        let (p, tx) = positional_without_helper(opened(&path), true);
        let helper = slow_helper(&p, tx, true);
        assert!(drain(Chunks::Positional(p)).unwrap() == bytes);
        assert_eq!(helper.join().unwrap(), (1 + OWN as u64, false));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A helper that stops with a chunk claimed and not sent is an error,
    /// found at once or while the consumer waits for it.
    #[test]
    fn a_helper_that_vanishes_is_an_error() {
        let (path, _) = file_of(7 * CHUNK, "vanish");
        let (p, tx) = positional_without_helper(opened(&path), true);
        drop(tx);
        let (got, e) = drain_to_error(Chunks::Positional(p));
        assert!(got.is_empty());
        assert!(e.unwrap().to_string().contains("stopped"));

        let (p, tx) = positional_without_helper(opened(&path), true);
        let helper = slow_helper(&p, tx, false);
        let (got, e) = drain_to_error(Chunks::Positional(p));
        assert!(got.is_empty());
        assert!(e.unwrap().to_string().contains("stopped"));
        assert_eq!(helper.join().unwrap(), (1 + OWN as u64, false));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A read error comes after the bytes read before it (inside a chunk,
    /// at a chunk's start, at byte 0), whichever thread read them, and
    /// nothing after it.
    #[test]
    fn positional_read_errors_come_after_the_bytes_before_them() {
        let bytes = sample_bytes(4 * CHUNK + 9);
        for fail_at in [CHUNK + 100, 2 * CHUNK, 0] {
            let source = || {
                Arc::new(Flaky {
                    bytes: bytes.clone(),
                    fail_at: fail_at as u64,
                })
            };
            // With the helper, and with the consumer reading every chunk.
            let (p, tx) = positional_without_helper(source(), false);
            for c in [Chunks::positional(source()), Chunks::Positional(p)] {
                let (got, e) = drain_to_error(c);
                assert!(got == bytes[..fail_at], "error at {fail_at}: {}", got.len());
                assert_eq!(e.unwrap().to_string(), "injected read error");
            }
            drop(tx);
        }
    }

    /// An error in a chunk the consumer read ahead comes in its place,
    /// after the chunks before it (the helper's among them); an error past
    /// the chunk where the input ends never shows.
    #[test]
    fn errors_read_ahead_come_in_order_and_not_past_the_end() {
        let bytes = sample_bytes(6 * CHUNK);
        let (p, tx) = positional_without_helper(
            Arc::new(Flaky {
                bytes: bytes.clone(),
                fail_at: 2 * CHUNK as u64 + 5,
            }),
            true,
        );
        let helper = slow_helper(&p, tx, true);
        let (got, e) = drain_to_error(Chunks::Positional(p));
        assert!(got == bytes[..2 * CHUNK + 5], "{} bytes", got.len());
        assert_eq!(e.unwrap().to_string(), "injected read error");
        assert_eq!(helper.join().unwrap(), (1 + OWN as u64, false));

        // Ends in chunk 2; chunk 3, read ahead, fails.
        let bytes = sample_bytes(2 * CHUNK + 7);
        let (p, tx) = positional_without_helper(
            Arc::new(Flaky {
                bytes: bytes.clone(),
                fail_at: 3 * CHUNK as u64,
            }),
            true,
        );
        let helper = slow_helper(&p, tx, true);
        let (got, e) = drain_to_error(Chunks::Positional(p));
        assert!(e.is_none(), "{e:?}");
        assert!(got == bytes);
        assert_eq!(helper.join().unwrap(), (1 + OWN as u64, false));
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
