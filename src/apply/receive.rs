//! A session's stream applied as it arrives (`receive --apply DIR`): the
//! output of a [`Fetcher`](crate::session::Fetcher) that carries out each
//! unit in `DIR` and, when the receiver commits, makes it durable before
//! the units are acknowledged. No copy of the stream is kept: what a
//! restarted receiver needs (the session's position, where the input
//! stands, the current stream's header and tree) is in
//! `DIR/.proto-stream/receive.state`.

use std::io;
use std::path::{Path, PathBuf};

use proto_btrfs::{parse_header, profile, Btrfs, HEADER_LEN, MAGIC};
use proto_checkpoint::Source;
use proto_session::offer::SessionFormat;
use proto_session::receive::Check;
use proto_tlv::{decode_command, Profile};

use super::{ApplyError, ApplyOptions, ApplyStats, Applying, InputPosition, Tree, META_DIR};
use crate::session::durable::Fields;
use crate::session::{Kept, Output};

const STATE: &str = "receive.state";
const MAGIC_STATE: &[u8; 8] = b"PSAPPRC1";

/// Where the stream stands in its current btrfs stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct InStream {
    /// The stream header's bytes and offset (none between streams).
    header: Option<(Vec<u8>, u64)>,
    /// Index of the next command in the stream.
    index: u64,
}

/// A [`Fetcher`](crate::session::Fetcher)'s output that applies the btrfs
/// stream it receives into a directory; see the module documentation.
pub struct ApplyOutput {
    job: Option<Applying>,
    state_path: PathBuf,
    profile: Option<Profile>,
    stream: InStream,
    /// Offset of the next unit.
    offset: u64,
}

/// A source that holds only the current stream's header, for
/// [`SessionFormat::resume_check`] (which reads nothing else).
struct HeaderOnly {
    header: Vec<u8>,
    at: u64,
    len: u64,
}

impl Source for HeaderOnly {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        if offset == self.at && len == self.header.len() {
            Ok(&self.header)
        } else {
            Err(io::Error::other(format!(
                "only the stream header at {} is kept, not {len} bytes at {offset}",
                self.at
            )))
        }
    }
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    b.extend_from_slice(v);
}

/// What `receive.state` holds besides the session's [`Kept`].
#[derive(Debug, PartialEq, Eq)]
struct Saved {
    kept: Kept,
    at: InputPosition,
    tree: Option<Tree>,
    stream: InStream,
}

fn encode(s: &Saved) -> io::Result<Vec<u8>> {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(MAGIC_STATE);
    put_bytes(&mut b, &crate::session::durable::encode(&s.kept)?);
    b.extend_from_slice(&s.at.commands.to_le_bytes());
    b.extend_from_slice(&s.at.offset.to_le_bytes());
    b.extend_from_slice(&s.at.chain.to_le_bytes());
    match &s.tree {
        Some(t) => {
            b.push(1);
            b.extend_from_slice(&t.uuid);
            b.extend_from_slice(&t.ctransid.to_le_bytes());
            put_bytes(&mut b, &t.name);
        }
        None => b.push(0),
    }
    match &s.stream.header {
        Some((h, at)) => {
            b.push(1);
            b.extend_from_slice(&at.to_le_bytes());
            put_bytes(&mut b, h);
        }
        None => b.push(0),
    }
    b.extend_from_slice(&s.stream.index.to_le_bytes());
    let crc = proto_crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    Ok(b)
}

fn decode(b: &[u8]) -> Result<Saved, &'static str> {
    let mut r = Fields::framed(b, MAGIC_STATE)?;
    let n = r.u32()? as usize;
    let kept = crate::session::durable::decode(r.take(n)?)?;
    let at = InputPosition {
        commands: r.u64()?,
        offset: r.u64()?,
        chain: r.u32()?,
    };
    let tree = match r.u8()? {
        0 => None,
        1 => {
            let uuid = r.array()?;
            let ctransid = r.u64()?;
            let n = r.u32()? as usize;
            Some(Tree {
                name: r.take(n)?.to_vec(),
                uuid,
                ctransid,
            })
        }
        _ => return Err("bad tree flag"),
    };
    let header = match r.u8()? {
        0 => None,
        1 => {
            let at = r.u64()?;
            let n = r.u32()? as usize;
            Some((r.take(n)?.to_vec(), at))
        }
        _ => return Err("bad header flag"),
    };
    let index = r.u64()?;
    if !r.is_empty() {
        return Err("trailing bytes");
    }
    Ok(Saved {
        kept,
        at,
        tree,
        stream: InStream { header, index },
    })
}

impl ApplyOutput {
    /// Opens `dir` (which must exist) for a session's stream. A receiver
    /// that was stopped gets back what it committed: the session's [`Kept`]
    /// to restore its fetcher with ([`Fetcher::restore`](crate::session::Fetcher::restore),
    /// with [`ApplyOutput::resume_check`]).
    pub fn open(
        dir: &Path,
        opts: &ApplyOptions,
    ) -> Result<(ApplyOutput, Option<Kept>), ApplyError> {
        let state_path = dir.join(META_DIR).join(STATE);
        let saved = match std::fs::read(&state_path) {
            Ok(b) => Some(decode(&b).map_err(|why| ApplyError::Journal {
                path: state_path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, why),
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ApplyError::Journal {
                    path: state_path,
                    source,
                })
            }
        };
        let (at, tree) = saved
            .as_ref()
            .map_or((InputPosition::default(), None), |s| (s.at, s.tree.clone()));
        let job = Applying::open_at(dir, opts, at, tree)?;
        let mut out = ApplyOutput {
            job: Some(job),
            state_path,
            profile: None,
            stream: InStream::default(),
            offset: at.offset,
        };
        let kept = match saved {
            Some(s) => {
                if let Some((h, _)) = &s.stream.header {
                    let version = parse_header(h).map_err(ApplyError::Stream)?;
                    out.profile = Some(profile(version).map_err(ApplyError::Stream)?);
                }
                out.stream = s.stream;
                if s.kept.len != at.offset {
                    return Err(ApplyError::Journal {
                        path: out.state_path,
                        source: io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the session's position and the input's differ",
                        ),
                    });
                }
                Some(s.kept)
            }
            None => None,
        };
        Ok((out, kept))
    }

    /// The receiver's check to go on with, from what was kept (only the
    /// current stream's header is read again: it is in the state).
    pub fn resume_check(&self, kept: &Kept) -> Result<Box<dyn Check>, ApplyError> {
        let bad = |why: String| ApplyError::Journal {
            path: self.state_path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, why),
        };
        let state = kept
            .check
            .filter(|c| c.offset == kept.len)
            .ok_or_else(|| bad("no check state kept".into()))?;
        let (header, at) = self.stream.header.clone().unwrap_or((Vec::new(), 0));
        let src = HeaderOnly {
            header,
            at,
            len: kept.len,
        };
        Btrfs
            .resume_check(state, Box::new(src))
            .map_err(|e| bad(e.to_string()))
    }

    /// The stream is complete: everything made durable, the journal and
    /// the receiver's state removed.
    pub fn finish(mut self) -> Result<ApplyStats, ApplyError> {
        // The state first, durably: a receiver stopped after this reads
        // the whole stream through the journal (nothing to do); the other
        // way round, it would start from the state with no journal and run
        // commands again.
        let meta = self.job().meta();
        let gone = match rustix::fs::unlinkat(meta, STATE, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => rustix::fs::fsync(meta),
            Err(e) => Err(e),
        }
        .map_err(io::Error::from);
        if let Err(source) = gone {
            return Err(ApplyError::Journal {
                path: self.state_path,
                source,
            });
        }
        let job = self.job.take().expect("finish once");
        job.finish()
    }

    fn job(&mut self) -> &mut Applying {
        self.job.as_mut().expect("open until finished")
    }
}

fn other(e: ApplyError) -> io::Error {
    io::Error::other(e)
}

impl Output for ApplyOutput {
    fn write_unit(&mut self, unit: &[u8]) -> io::Result<()> {
        let offset = self.offset;
        match &self.profile {
            None => {
                // Between streams: a stream header.
                if unit.len() != HEADER_LEN || !unit.starts_with(MAGIC) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("byte offset {offset}: a btrfs stream header was expected"),
                    ));
                }
                let version = parse_header(unit).map_err(io::Error::other)?;
                self.profile = Some(profile(version).map_err(io::Error::other)?);
                self.stream = InStream {
                    header: Some((unit.to_vec(), offset)),
                    index: 0,
                };
            }
            Some(p) => {
                let p = *p;
                let index = self.stream.index;
                let (cmd, n) = decode_command(unit, &p, index, offset).map_err(io::Error::other)?;
                if n != unit.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("byte offset {offset}: a unit that is not one command"),
                    ));
                }
                let end = cmd.is_end();
                self.job().command(&cmd).map_err(other)?;
                self.stream.index += 1;
                if end {
                    self.profile = None;
                    self.stream = InStream::default();
                }
            }
        }
        self.offset += unit.len() as u64;
        Ok(())
    }

    fn commit(&mut self, kept: &Kept) -> io::Result<()> {
        if kept.len != self.offset {
            return Err(io::Error::other(format!(
                "the receiver names {} bytes, {} were applied",
                kept.len, self.offset
            )));
        }
        if kept.position.received == 0 {
            // Nothing received yet: nothing to keep.
            return Ok(());
        }
        let job = self.job();
        job.sync().map_err(other)?;
        let saved = Saved {
            kept: kept.clone(),
            at: job.position(),
            tree: job.current(),
            stream: self.stream.clone(),
        };
        if saved.at.offset != self.offset {
            return Err(io::Error::other(format!(
                "the input stands at byte {}, the receiver at {}",
                saved.at.offset, self.offset
            )));
        }
        let meta = self.job().meta();
        super::records::write_atomically(meta, STATE, &encode(&saved)?)?;
        rustix::fs::fsync(meta)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_refuses_damage() {
        let s = Saved {
            kept: Kept {
                position: crate::session::Position {
                    received: 17,
                    ..Default::default()
                },
                len: 1234,
                stream_id: [9; 16],
                selection: vec![1, 2],
                ..Kept::default()
            },
            at: InputPosition {
                commands: 17,
                offset: 1234,
                chain: 0xabcd,
            },
            tree: Some(Tree {
                name: b"snap".to_vec(),
                uuid: [3; 16],
                ctransid: 7,
            }),
            stream: InStream {
                header: Some((b"btrfs-stream\0\x02\0\0\0".to_vec(), 0)),
                index: 16,
            },
        };
        let b = encode(&s).unwrap();
        assert_eq!(decode(&b).unwrap(), s);
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 1;
            assert!(decode(&d).is_err(), "byte {i}");
        }
        assert!(decode(&b[..b.len() - 1]).is_err());
    }
}
