//! A receiver's output that survives the receiver: `OUT.part` and a state
//! file beside it (`OUT.part.state`), as ZFS's `receive -s` keeps its
//! resume token with the data it describes.
//!
//! Every [`commit`](Output::commit) (the fetcher commits before it
//! acknowledges anything) flushes the units written, `fsync`s `OUT.part`,
//! then writes the state naming them (the length of `OUT.part`, the last
//! seq, the sender instance, the latest checkpoint token, the stream id and
//! the selection) to a temporary file, `fsync`s it, renames it into place
//! and `fsync`s the directory. A receiver killed at any moment finds on
//! restart a state that names only bytes that were durable before it was
//! written; bytes of `OUT.part` past the length it names are cut off, and
//! the sender sends them again. [`DurableFile::finish`] renames `OUT.part`
//! to `OUT` once the stream is complete and verified, then removes the
//! state.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

use proto_checkpoint::FileSource;
use proto_checkpoint::ValidatorState;
use proto_session::offer::{detect_source, BoxSource, SessionFormat};
use proto_session::receive::{Check, Position, Units};

use super::client::{Kept, Output};

const MAGIC: &[u8; 8] = b"PSRECV\0\x02";
/// The longest token kept (a token is at most 4160 bytes).
const MAX_TOKEN: usize = 8192;
/// The most contexts kept.
const MAX_SELECTION: usize = 4096;

/// Why a kept transfer cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// Reading or writing the files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The state file is not one this program wrote (or is damaged).
    #[error("{path}: not a receive state file ({why}); `proto-stream receive --abort` drops it")]
    BadState {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `OUT.part` is shorter than the state says was made durable.
    #[error("{path}: {len} bytes, but its state names {kept} durable bytes; `proto-stream receive --abort` drops it")]
    PartShort {
        /// `OUT.part`.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The length the state names.
        kept: u64,
    },
    /// The kept bytes do not check as the start of a stream.
    #[error("{path}: the kept bytes do not check: {source}")]
    Revalidate {
        /// `OUT.part`.
        path: PathBuf,
        /// The format's error.
        source: proto_session::BoxError,
    },
    /// Another receiver holds `OUT`'s lock (it did not let go in time).
    #[error("{0}: another receiver of this output is running (its lock is held)")]
    Busy(PathBuf),
    /// `OUT` exists already.
    #[error("{0}: exists (a finished transfer); remove it first")]
    Exists(PathBuf),
}

/// `OUT.part` and its state: an [`Output`] for a [`Fetcher`](super::Fetcher)
/// that a restarted receiver continues.
#[derive(Debug)]
pub struct DurableFile {
    /// `OUT.part.lock`, flock'd while this receiver runs.
    lock: File,
    lock_path: PathBuf,
    out: PathBuf,
    part_path: PathBuf,
    state_path: PathBuf,
    part: BufWriter<File>,
    len: u64,
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl DurableFile {
    /// Opens the output `out`: a new `OUT.part`, or the one a receiver
    /// before this one kept, cut to what its state names (returned: the
    /// fetcher resumes from there).
    ///
    /// One receiver at a time: the lock file `OUT.part.lock` is held while
    /// it runs (a receiver whose connection broke may still be exiting when
    /// the next starts: this one waits up to `wait` for it).
    pub fn open(out: &Path, wait: Duration) -> Result<(DurableFile, Option<Kept>), DurableError> {
        let part_path = with_suffix(out, ".part");
        let state_path = with_suffix(out, ".part.state");
        let lock_path = with_suffix(out, ".part.lock");
        let io_at = |path: &Path| {
            let path = path.to_owned();
            move |source| DurableError::Io { path, source }
        };
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        let deadline = Instant::now() + wait;
        loop {
            match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    return Err(DurableError::Busy(out.to_owned()))
                }
                Err(e) => return Err(io_at(&lock_path)(e.into())),
            }
        }
        // Checked under the lock: a receiver that held it may have finished.
        if out.exists() {
            return Err(DurableError::Exists(out.to_owned()));
        }
        let kept = match fs::read(&state_path) {
            Ok(bytes) => Some(decode(&bytes).map_err(|why| DurableError::BadState {
                path: state_path.clone(),
                why,
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at(&state_path)(e)),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part_path)
            .map_err(io_at(&part_path))?;
        let len = kept.as_ref().map_or(0, |k| k.len);
        let have = file.metadata().map_err(io_at(&part_path))?.len();
        if have < len {
            return Err(DurableError::PartShort {
                path: part_path,
                len: have,
                kept: len,
            });
        }
        // Bytes past the state's length were never acknowledged.
        file.set_len(len).map_err(io_at(&part_path))?;
        let mut part = BufWriter::with_capacity(1 << 20, file);
        io::Seek::seek(part.get_mut(), io::SeekFrom::Start(len)).map_err(io_at(&part_path))?;
        Ok((
            DurableFile {
                lock,
                lock_path,
                out: out.to_owned(),
                part_path,
                state_path,
                part,
                len,
            },
            kept,
        ))
    }

    /// A check that has seen the kept bytes, in the first of `formats`
    /// their start names: each unit is checked again, so that damage to
    /// what was kept is an error and not part of the output.
    pub fn revalidate(
        &self,
        formats: &[&dyn SessionFormat],
        len: u64,
    ) -> Result<Box<dyn Check>, DurableError> {
        let (format, src) = self.kept_format(formats)?;
        format.revalidate(src, len).map_err(|e| self.kept_error(e))
    }

    /// The format of the kept bytes (told by their magic) and a source over
    /// them.
    fn kept_format<'a>(
        &self,
        formats: &[&'a dyn SessionFormat],
    ) -> Result<(&'a dyn SessionFormat, BoxSource), DurableError> {
        let mut src: BoxSource =
            FileSource::new(File::open(&self.part_path).map_err(|e| self.kept_error(e.into()))?)
                .map(|s| Box::new(s) as BoxSource)
                .map_err(|e| self.kept_error(e.into()))?;
        let format = detect_source(formats, &mut *src).map_err(|e| self.kept_error(e))?;
        Ok((format, src))
    }

    fn kept_error(&self, source: proto_session::BoxError) -> DurableError {
        DurableError::Revalidate {
            path: self.part_path.clone(),
            source,
        }
    }

    /// The check to go on with: resumed from the state `kept` carries
    /// (only the current stream's header is read again), or, when it
    /// carries none, made by checking the kept bytes again
    /// ([`revalidate`](DurableFile::revalidate)).
    pub fn resume_check(
        &self,
        formats: &[&dyn SessionFormat],
        kept: &Kept,
    ) -> Result<Box<dyn Check>, DurableError> {
        let Some(state) = kept.check.filter(|c| c.offset == kept.len) else {
            return self.revalidate(formats, kept.len);
        };
        let (format, src) = self.kept_format(formats)?;
        format
            .resume_check(state, src)
            .map_err(|e| self.kept_error(e))
    }

    /// `OUT.part`.
    pub fn part_path(&self) -> &Path {
        &self.part_path
    }

    /// The state file.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// Bytes written to `OUT.part` (durable or not yet).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The stream is complete and verified: `OUT.part` becomes `OUT`
    /// (fsync'd, renamed, the directory fsync'd), and the state goes.
    pub fn finish(mut self) -> Result<PathBuf, DurableError> {
        let io_at = |path: &Path| {
            let path = path.to_owned();
            move |source| DurableError::Io { path, source }
        };
        self.part.flush().map_err(io_at(&self.part_path))?;
        self.part
            .get_ref()
            .sync_all()
            .map_err(io_at(&self.part_path))?;
        fs::rename(&self.part_path, &self.out).map_err(io_at(&self.out))?;
        sync_dir(&self.out).map_err(io_at(&self.out))?;
        match fs::remove_file(&self.state_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&self.state_path)(e)),
        }
        // The lock file goes last; the lock goes with the file handle.
        let _ = fs::remove_file(&self.lock_path);
        sync_dir(&self.out).map_err(io_at(&self.out))?;
        drop(self.lock);
        Ok(self.out)
    }

    /// Drops a partial transfer of `out`: its `OUT.part` and state (not
    /// while a receiver of it runs). Returns whether there was one.
    pub fn abort(out: &Path) -> Result<bool, DurableError> {
        let lock_path = with_suffix(out, ".part.lock");
        if let Ok(lock) = File::open(&lock_path) {
            if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
                return Err(DurableError::Busy(out.to_owned()));
            }
        }
        let mut any = false;
        for p in [
            with_suffix(out, ".part.state"),
            with_suffix(out, ".part"),
            lock_path,
        ] {
            match fs::remove_file(&p) {
                Ok(()) => any = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(DurableError::Io { path: p, source }),
            }
        }
        if any {
            sync_dir(out).map_err(|source| DurableError::Io {
                path: out.to_owned(),
                source,
            })?;
        }
        Ok(any)
    }
}

impl Output for DurableFile {
    fn write_unit(&mut self, unit: &[u8]) -> io::Result<()> {
        self.part.write_all(unit)?;
        self.len += unit.len() as u64;
        Ok(())
    }

    fn write_units(&mut self, units: Units<'_>) -> io::Result<()> {
        self.write_unit(units.bytes())
    }

    fn commit(&mut self, kept: &Kept) -> io::Result<()> {
        if kept.len != self.len || kept.check.is_some_and(|c| c.offset != kept.len) {
            return Err(io::Error::other(format!(
                "the receiver names {} bytes (checked to {:?}), {} were written",
                kept.len,
                kept.check.map(|c| c.offset),
                self.len
            )));
        }
        self.part.flush()?;
        self.part.get_ref().sync_data()?;
        if kept.position.received == 0 {
            return Ok(());
        }
        let tmp = with_suffix(&self.state_path, ".tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&encode(kept)?)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.state_path)?;
        sync_dir(&self.state_path)
    }
}

/// fsyncs the directory `p` is in (a rename or removal in it is then
/// durable).
fn sync_dir(p: &Path) -> io::Result<()> {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// The state's bytes: magic, then little-endian fields, then a CRC-32C of
/// everything before it.
pub(crate) fn encode(k: &Kept) -> io::Result<Vec<u8>> {
    let too_big = |what| io::Error::other(format!("{what} too large to keep"));
    let mut b = Vec::with_capacity(128);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&k.len.to_le_bytes());
    b.extend_from_slice(&k.position.received.to_le_bytes());
    b.extend_from_slice(&k.position.instance);
    b.extend_from_slice(&k.stream_id);
    let (tseq, token) = match &k.position.token {
        Some((s, t)) => (*s, &t[..]),
        None => (0, &[][..]),
    };
    if token.len() > MAX_TOKEN {
        return Err(too_big("token"));
    }
    if k.selection.len() > MAX_SELECTION {
        return Err(too_big("selection"));
    }
    b.extend_from_slice(&k.position.last.unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&tseq.to_le_bytes());
    b.extend_from_slice(&(token.len() as u32).to_le_bytes());
    b.extend_from_slice(token);
    b.extend_from_slice(&(k.selection.len() as u32).to_le_bytes());
    for id in &k.selection {
        b.extend_from_slice(&id.to_le_bytes());
    }
    match &k.check {
        None => b.push(0),
        Some(c) => {
            b.push(1);
            b.extend_from_slice(&c.streams.to_le_bytes());
            b.extend_from_slice(&c.index.to_le_bytes());
            b.extend_from_slice(&c.offset.to_le_bytes());
            b.push(u8::from(c.closed));
            let (at, len) = c.head.unwrap_or((u64::MAX, 0));
            b.extend_from_slice(&at.to_le_bytes());
            b.extend_from_slice(&len.to_le_bytes());
        }
    }
    let crc = proto_crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    Ok(b)
}

/// The fields of a state file: its magic and trailing CRC-32C checked,
/// then read in order (little-endian), each read refused past the end.
pub(crate) struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    /// The body of `b` after `magic`, once the CRC-32C over everything
    /// before its last four bytes matches them.
    pub(crate) fn framed(b: &'a [u8], magic: &[u8]) -> Result<Fields<'a>, &'static str> {
        if b.len() < magic.len() + 4 || &b[..magic.len()] != magic {
            return Err("bad magic");
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if proto_crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("CRC mismatch");
        }
        Ok(Fields(&body[magic.len()..]))
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated");
        }
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    /// Whether every byte was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub(crate) fn decode(b: &[u8]) -> Result<Kept, &'static str> {
    let mut r = Fields::framed(b, MAGIC)?;
    let len = r.u64()?;
    let received = r.u64()?;
    let instance: [u8; 16] = r.array()?;
    let stream_id: [u8; 16] = r.array()?;
    let last = r.u64()?;
    let tseq = r.u64()?;
    let tlen = r.u32()? as usize;
    if tlen > MAX_TOKEN {
        return Err("token too long");
    }
    let token = r.take(tlen)?.to_vec();
    let n = r.u32()? as usize;
    if n > MAX_SELECTION {
        return Err("selection too long");
    }
    let mut selection = Vec::with_capacity(n);
    for _ in 0..n {
        selection.push(r.u32()?);
    }
    let check = match r.u8()? {
        0 => None,
        1 => {
            let streams = r.u64()?;
            let index = r.u64()?;
            let offset = r.u64()?;
            let closed = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err("bad flag"),
            };
            let at = r.u64()?;
            let hlen = r.u32()?;
            let head = (at != u64::MAX).then_some((at, hlen));
            if offset != len || head.is_some_and(|(a, l)| a.saturating_add(u64::from(l)) > len) {
                return Err("inconsistent check state");
            }
            Some(ValidatorState {
                streams,
                index,
                offset,
                closed,
                head,
            })
        }
        _ => return Err("bad flag"),
    };
    if !r.is_empty() {
        return Err("trailing bytes");
    }
    if tseq > received || received == 0 || (last != 0 && last != received) {
        return Err("inconsistent positions");
    }
    Ok(Kept {
        position: Position {
            received,
            instance,
            token: (!token.is_empty()).then_some((tseq, token)),
            last: (last != 0).then_some(last),
        },
        stream_id,
        selection,
        len,
        check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> Kept {
        Kept {
            position: Position {
                received: 42,
                instance: [7; 16],
                token: Some((40, vec![1, 2, 3])),
                last: None,
            },
            stream_id: [9; 16],
            selection: vec![1, 3],
            len: 123_456,
            check: Some(ValidatorState {
                streams: 1,
                index: 41,
                offset: 123_456,
                closed: false,
                head: Some((0, 17)),
            }),
        }
    }

    #[test]
    fn state_round_trips_and_damage_is_refused() {
        let b = encode(&kept()).unwrap();
        assert_eq!(decode(&b).unwrap(), kept());
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(decode(&d).is_err(), "byte {i}");
        }
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "cut at {n}");
        }
        let no_token = Kept {
            position: Position {
                token: None,
                ..kept().position
            },
            ..kept()
        };
        assert_eq!(decode(&encode(&no_token).unwrap()).unwrap(), no_token);
        let finished = Kept {
            position: Position {
                last: Some(42),
                ..kept().position
            },
            ..kept()
        };
        assert_eq!(decode(&encode(&finished).unwrap()).unwrap(), finished);
        let unchecked = Kept {
            check: None,
            ..kept()
        };
        assert_eq!(decode(&encode(&unchecked).unwrap()).unwrap(), unchecked);
        // A check state that does not cover exactly the kept bytes is not
        // one to resume from.
        let off = Kept {
            check: Some(ValidatorState {
                offset: 99,
                ..kept().check.unwrap()
            }),
            ..kept()
        };
        assert!(decode(&encode(&off).unwrap()).is_err());
    }
}
