//! `apply`: carries out the commands of btrfs send streams in a directory
//! on any Linux filesystem, resumable after a crash at any command, never
//! writing outside that directory.
//!
//! [`apply`] reads one stream or several concatenated (as `btrfs receive`
//! does), checks each command (framing, CRC) before it is carried out, and
//! makes `DIR/NAME` hold what `btrfs receive` would put in the subvolume
//! `NAME`: the same types, data, modes, owners, xattrs, hard links, symlink
//! targets and times. A `snapshot` (an incremental stream) starts from a
//! copy of its parent, found by the UUID the parent was received with.
//! What apply keeps for itself lies beside the trees, in
//! `DIR/.proto-stream/` ([`META_DIR`]): a record per received tree and the
//! journal.
//!
//! **Crash safety.** The journal holds the position before every command
//! whose effect depends on the tree's state (renames, creations, removals,
//! clones) and, every [`ApplyOptions::sync_every`] commands and at the end,
//! a durable position made after `syncfs`. Run again on the same stream,
//! `apply` reads past what is applied (checking that it is the same stream)
//! and continues: the one command that may have been in flight is found done
//! or carried out, and the commands after it run again in order, which gives
//! the same tree.
//!
//! **Hostile streams.** Paths are resolved beneath the tree with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): absolute paths, `..` and paths
//! through a symlink are refused, whatever the stream's symlinks point to;
//! only regular files are opened to be written or cloned from.
//!
//! ```
//! use proto_stream::apply::{apply, ApplyOptions};
//! use proto_stream::btrfs::{BtrfsCommand, StreamWriter};
//!
//! // A small stream: subvolume `snap` with one file.
//! let mut stream = Vec::new();
//! let w = StreamWriter::new(2, &mut stream)?;
//! w.write(&BtrfsCommand::Subvol { path: b"snap", uuid: [7; 16], ctransid: 1 }, &mut stream)?;
//! w.write(&BtrfsCommand::Mkfile { path: b"o257-1-0", ino: 257 }, &mut stream)?;
//! w.write(&BtrfsCommand::Rename { path: b"o257-1-0", to: b"hello" }, &mut stream)?;
//! w.write(&BtrfsCommand::Write { path: b"hello", offset: 0, data: b"hi\n" }, &mut stream)?;
//! w.finish(&mut stream)?;
//!
//! let dir = std::env::temp_dir().join(format!("apply-doc-{}", std::process::id()));
//! std::fs::create_dir(&dir)?;
//! let stats = apply(&stream[..], &dir, &ApplyOptions::default(), |_| {})?;
//! assert_eq!((stats.streams, stats.applied), (1, 5));
//! assert_eq!(std::fs::read(dir.join("snap/hello"))?, b"hi\n");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod copy;
mod encoded;
mod journal;
mod ops;
mod path;
mod receive;
mod records;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use proto_btrfs::{quoted, BtrfsCommand, CommandType, StreamReader};
use proto_tlv::Command;
use rustix::fs::{Mode, OFlags};

pub use receive::ApplyOutput;
pub use records::META_DIR;

use journal::{Journal, Position};
use ops::{Applier, Fail, Outcome};
use records::Records;

/// The most commands carried out between two records of the position.
const RECORD_EVERY: u64 = 16;

/// How [`apply`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Make everything applied durable (`syncfs`) and record it in the
    /// journal every this many commands (0: only at the end).
    pub sync_every: u64,
    /// Refuse any command that would make a file larger than this (a write,
    /// truncate, fallocate or clone beyond it): a bound on what an untrusted
    /// stream can make this process write. `None`: no bound.
    pub max_file_size: Option<u64>,
    /// Make each received tree a btrfs subvolume (a `subvol`) or a
    /// snapshot of its parent (a `snapshot`), read-only once complete, as
    /// `btrfs receive` does; `DIR` must be on btrfs. Off: directories (any
    /// filesystem).
    pub subvolumes: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            sync_every: 10_000,
            max_file_size: None,
            subvolumes: false,
        }
    }
}

/// Where a run continued from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// Commands of the input applied by earlier runs (over every stream).
    pub command: u64,
    /// Byte offset of the input there.
    pub offset: u64,
    /// True when the position is the one the previous run left in this
    /// boot; false when it is the last durable one (after a reboot).
    pub same_boot: bool,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Streams of the input, to their END.
    pub streams: u64,
    /// Commands of the input, over every stream.
    pub commands: u64,
    /// Commands carried out by this run.
    pub applied: u64,
    /// Commands found already done (the one in flight when a run stopped).
    pub already_done: u64,
    /// Commands with nothing to do, as for `btrfs receive` (`update_extent`
    /// of a `--no-data` stream, `fileattr`).
    pub ignored: u64,
    /// Commands read past because earlier runs applied them.
    pub skipped: u64,
    /// Bytes of file data written or cloned.
    pub data_bytes: u64,
    /// Durable points made (`syncfs` and the journal fsync'd).
    pub syncs: u64,
    /// Where this run continued from, if an earlier one stopped.
    pub resumed: Option<Resumed>,
}

/// One command done, for progress and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Its index in the input (over every stream).
    pub command: u64,
    /// Its byte offset in the input.
    pub offset: u64,
    /// Commands carried out (or found done) by this run so far.
    pub done_this_run: u64,
}

/// Why an apply stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The target directory cannot be used.
    #[error("{}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another process is applying into the directory.
    #[error("{}: another apply into it is running", dir.display())]
    Busy {
        /// The directory.
        dir: PathBuf,
    },
    /// The input is not a valid stream: nothing from the failing command on
    /// was applied. The error names the command index and byte offset.
    #[error("the stream does not verify: {0}")]
    Stream(#[source] proto_btrfs::Error),
    /// A command could not be carried out, or was refused.
    #[error("command {index} ({command}) at byte offset {offset}: {what}")]
    Command {
        /// Index of the command in its stream.
        index: u64,
        /// Byte offset of the command in the input.
        offset: u64,
        /// Its type.
        command: CommandType,
        /// What went wrong.
        what: String,
        /// The system call's error, if one failed.
        #[source]
        source: Option<io::Error>,
    },
    /// The directory's journal is for another stream.
    #[error(
        "{}: an unfinished apply of another stream is recorded there (at command {at}, byte offset {offset}, this stream differs); run it again with that stream, or remove {} to give it up",
        dir.display(), journal.display()
    )]
    OtherStream {
        /// The directory.
        dir: PathBuf,
        /// The journal.
        journal: PathBuf,
        /// Commands the journal says were applied.
        at: u64,
        /// Its byte offset.
        offset: u64,
    },
    /// Reading or writing the journal or the records failed.
    #[error("{}: {source}", path.display())]
    Journal {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn command_error(f: Fail, index: u64, offset: u64, command: CommandType) -> ApplyError {
    let (what, source) = match f {
        Fail::Path { path, why } => (format!("refused path {}: {why}", quoted(&path)), None),
        Fail::Io { op, path, source } => {
            (format!("{op} {}: {source}", quoted(&path)), Some(source))
        }
        Fail::Refused(what) => (what, None),
    };
    ApplyError::Command {
        index,
        offset,
        command,
        what,
        source,
    }
}

/// Applies the btrfs send streams read from `input` into the directory
/// `dir` (which must exist), continuing an earlier run that stopped.
/// `each` is called after every command carried out.
pub fn apply<R: Read>(
    input: R,
    dir: &Path,
    opts: &ApplyOptions,
    mut each: impl FnMut(&Step),
) -> Result<ApplyStats, ApplyError> {
    let mut job = Applying::open(dir, opts)?;
    let mut reader = StreamReader::new(input).map_err(ApplyError::Stream)?;
    loop {
        while let Some(cmd) = reader.next_command().map_err(ApplyError::Stream)? {
            if let Some(step) = job.command(&cmd)? {
                each(&step);
            }
        }
        match reader.next_stream() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return Err(ApplyError::Stream(e)),
        }
    }
    job.finish()
}

/// The tree a stream is received into: its name in `DIR`, and the UUID
/// and ctransid its `subvol` or `snapshot` command gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    /// Its name in `DIR`.
    pub name: Vec<u8>,
    /// The sender's UUID of it.
    pub uuid: [u8; 16],
    /// Its ctransid.
    pub ctransid: u64,
}

/// An apply into a directory, fed one command at a time ([`apply`] reads a
/// stream and feeds it; a session receiver feeds what arrives). Commands
/// are given in order, from the start of the input or from a point an
/// earlier run made durable ([`Applying::open_at`]); those an earlier run
/// applied are read past (their chain checked), the rest carried out.
pub struct Applying {
    dir: PathBuf,
    journal_path: PathBuf,
    ap: Applier,
    journal: Journal,
    resume: Option<journal::Resume>,
    pos: Position,
    /// While reading past what earlier runs applied: the tree a later
    /// command continues in.
    pending: Option<Tree>,
    reached: bool,
    replaying: bool,
    since_record: u64,
    /// Whether the previous command made an entry (mkfile, mkdir, ...).
    prev_made: bool,
    stats: ApplyStats,
    done_this_run: u64,
    sync_every: u64,
}

/// Where an input stands: commands before it, its byte offset, the CRC
/// chain over the commands' CRCs (see [`Applying::position`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputPosition {
    /// Commands before this point, over every stream.
    pub commands: u64,
    /// Byte offset of the input.
    pub offset: u64,
    /// CRC-32C chain over the CRCs of the commands before it.
    pub chain: u32,
}

impl Applying {
    /// Opens `dir` (which must exist) for an input read from its start.
    pub fn open(dir: &Path, opts: &ApplyOptions) -> Result<Applying, ApplyError> {
        Self::open_at(dir, opts, InputPosition::default(), None)
    }

    /// Opens `dir` for an input that starts at `start` (a point this
    /// directory's apply made durable earlier, see [`Applying::sync`]),
    /// inside the tree `current` (the one being received there, if any).
    pub fn open_at(
        dir: &Path,
        opts: &ApplyOptions,
        start: InputPosition,
        current: Option<Tree>,
    ) -> Result<Applying, ApplyError> {
        let meta_path = dir.join(META_DIR);
        let journal_path = meta_path.join(journal::NAME);
        let dirfd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ApplyError::Dir {
            dir: dir.to_path_buf(),
            source: e.into(),
        })?;
        let records = Records::open(rustix::fd::AsFd::as_fd(&dirfd)).map_err(|source| {
            ApplyError::Journal {
                path: meta_path.clone(),
                source,
            }
        })?;
        let (journal, resume) = match Journal::open(records.meta()) {
            Ok(j) => j,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(ApplyError::Busy {
                    dir: dir.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(ApplyError::Journal {
                    path: journal_path,
                    source,
                })
            }
        };
        let pos = Position {
            next: start.commands,
            offset: start.offset,
            chain: start.chain,
        };
        // The journal must be at or after the start: the start is a point
        // it made durable.
        if let Some(r) = &resume {
            if r.at.next < pos.next {
                return Err(ApplyError::OtherStream {
                    dir: dir.to_path_buf(),
                    journal: journal_path,
                    at: r.at.next,
                    offset: r.at.offset,
                });
            }
        }
        if opts.subvolumes {
            const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
            let fs = rustix::fs::fstatfs(&dirfd).map_err(|e| ApplyError::Dir {
                dir: dir.to_path_buf(),
                source: e.into(),
            })?;
            if fs.f_type as i64 != BTRFS_SUPER_MAGIC {
                return Err(ApplyError::Dir {
                    dir: dir.to_path_buf(),
                    source: io::Error::other("subvolumes need a directory on btrfs"),
                });
            }
        }
        let mut ap = Applier::new(dirfd, records);
        ap.max_file_size = opts.max_file_size;
        ap.subvolumes = opts.subvolumes.then(|| dir.to_path_buf());
        Ok(Applying {
            dir: dir.to_path_buf(),
            journal_path,
            ap,
            journal,
            // Reached at once unless a tree must be attached first.
            reached: resume.is_none() && current.is_none(),
            replaying: resume.is_some(),
            resume,
            pos,
            pending: current,
            since_record: 0,
            prev_made: false,
            stats: ApplyStats::default(),
            done_this_run: 0,
            sync_every: opts.sync_every,
        })
    }

    fn journal_err(&self, source: io::Error) -> ApplyError {
        ApplyError::Journal {
            path: self.journal_path.clone(),
            source,
        }
    }

    fn other_stream(&self, r: &journal::Resume) -> ApplyError {
        ApplyError::OtherStream {
            dir: self.dir.clone(),
            journal: self.journal_path.clone(),
            at: r.at.next,
            offset: r.at.offset,
        }
    }

    /// `DIR/.proto-stream/`, where a caller keeps its own state beside
    /// the journal.
    pub(crate) fn meta(&self) -> rustix::fd::BorrowedFd<'_> {
        self.ap.records().meta()
    }

    /// Where the input stands (after the commands given so far).
    pub fn position(&self) -> InputPosition {
        InputPosition {
            commands: self.pos.next,
            offset: self.pos.offset,
            chain: self.pos.chain,
        }
    }

    /// The tree being received at this point, if a stream has started.
    pub fn current(&self) -> Option<Tree> {
        if !self.reached {
            return self.pending.clone();
        }
        self.ap.current().map(|s| Tree {
            name: s.name.clone(),
            uuid: s.uuid,
            ctransid: s.ctransid,
        })
    }

    /// Carries out the next command of the input (its CRC checked by the
    /// decoder that made it), or reads past it when an earlier run applied
    /// it. `Some` when carried out here.
    pub fn command(&mut self, cmd: &Command<'_>) -> Result<Option<Step>, ApplyError> {
        let (index, offset, crc) = (cmd.index(), cmd.offset(), cmd.crc());
        let end = offset + cmd.encoded_len() as u64;
        let view = BtrfsCommand::parse(cmd).map_err(|e| ApplyError::Stream(e.into()))?;
        self.stats.commands += 1;
        if let (false, Some(r)) = (self.reached, self.resume) {
            if self.pos.next < r.at.next {
                match view {
                    BtrfsCommand::Subvol {
                        path,
                        uuid,
                        ctransid,
                    }
                    | BtrfsCommand::Snapshot {
                        path,
                        uuid,
                        ctransid,
                        ..
                    } => {
                        self.pending = Some(Tree {
                            name: path.to_vec(),
                            uuid,
                            ctransid,
                        })
                    }
                    BtrfsCommand::End => self.pending = None,
                    _ => {}
                }
                self.pos = advance(self.pos, crc, end);
                self.stats.skipped += 1;
                return Ok(None);
            }
            self.reach(Some(&r), index, offset, view.command_type())?;
        } else if !self.reached {
            self.reach(None, index, offset, view.command_type())?;
        }
        let resume = self.resume;
        // A rename of what the command before it made (the kernel makes
        // every inode under a temporary name, then renames it) needs no
        // record of its own: run again, the pair gives the same result
        // whether the first run got to the rename or not.
        let renames_made = self.prev_made
            && matches!(view, BtrfsCommand::Rename { path, .. } if self.ap.made_as(path).is_some());
        self.prev_made = ops::made_path(&view).is_some();
        let record = ops::needs_record(&view) && !renames_made;
        // Commands an earlier run may have carried out: the one in flight
        // (a command that needs a record), and the others up to the next
        // command that needs one, which run again.
        if record && resume.is_some_and(|r| self.pos.next > r.at.next.max(r.doubt_until)) {
            self.replaying = false;
        }
        let doubt = if record {
            resume.is_some_and(|r| {
                self.pos.next <= r.doubt_until && !(r.failed && self.pos.next == r.at.next)
            })
        } else {
            self.replaying
        };
        if record {
            let at = Position { offset, ..self.pos };
            self.journal.progress(at).map_err(|e| self.journal_err(e))?;
            self.since_record = 0;
        }
        let done = match self.ap.apply(&view, doubt) {
            Ok(done) => done,
            Err(f) => {
                if record {
                    // It failed, so it took no effect: a run after this one
                    // must not find it "already done".
                    let _ = self.journal.failed(Position { offset, ..self.pos });
                }
                return Err(command_error(f, index, offset, view.command_type()));
            }
        };
        match done {
            Outcome::Applied => self.stats.applied += 1,
            Outcome::AlreadyDone => self.stats.already_done += 1,
            Outcome::Ignored => self.stats.ignored += 1,
        }
        if matches!(view, BtrfsCommand::End) {
            self.stats.streams += 1;
        }
        let is_clone = matches!(view, BtrfsCommand::Clone { .. });
        self.pos = advance(self.pos, crc, end);
        self.since_record += 1;
        // After a clone (it reads another file, which later commands may
        // change), and every RECORD_EVERY commands, so that a run that
        // is stopped again and again still gets on.
        if is_clone || self.since_record >= RECORD_EVERY {
            self.journal
                .progress(self.pos)
                .map_err(|e| self.journal_err(e))?;
            self.since_record = 0;
        }
        self.done_this_run += 1;
        if self.sync_every > 0 && self.done_this_run.is_multiple_of(self.sync_every) {
            self.sync()?;
        }
        Ok(Some(Step {
            command: self.pos.next - 1,
            offset,
            done_this_run: self.done_this_run,
        }))
    }

    /// The input reached the point an earlier run left: the same stream
    /// (by the chain), and its tree attached.
    fn reach(
        &mut self,
        r: Option<&journal::Resume>,
        index: u64,
        offset: u64,
        command: CommandType,
    ) -> Result<(), ApplyError> {
        if let Some(r) = r {
            if self.pos.chain != r.at.chain {
                return Err(self.other_stream(r));
            }
            self.stats.resumed = Some(Resumed {
                command: self.pos.next,
                offset: self.pos.offset,
                same_boot: r.same_boot,
            });
        }
        self.reached = true;
        if let Some(t) = self.pending.take() {
            self.ap
                .attach(&t.name, t.uuid, t.ctransid)
                .map_err(|f| command_error(f, index, offset, command))?;
        }
        Ok(())
    }

    /// Makes everything carried out so far durable (`syncfs`), then records
    /// the position as durable: a later run may start its input here
    /// ([`Applying::open_at`]).
    pub fn sync(&mut self) -> Result<(), ApplyError> {
        // While reading past what earlier runs applied, the journal is ahead
        // of this position: it stays where it is.
        let at = match (self.reached, self.resume) {
            (false, Some(r)) => r.at,
            _ => self.pos,
        };
        rustix::fs::syncfs(self.ap.dir())
            .map_err(io::Error::from)
            .and_then(|()| self.journal.durable(at))
            .map_err(|e| self.journal_err(e))?;
        self.stats.syncs += 1;
        Ok(())
    }

    /// The input ended (after its last END): checks that it reached the
    /// point earlier runs left, records the last tree, makes everything
    /// durable and removes the journal.
    pub fn finish(mut self) -> Result<ApplyStats, ApplyError> {
        if let (false, Some(r)) = (self.reached, self.resume) {
            // Everything was applied before, or this is another stream.
            if self.pos.next != r.at.next || self.pos.chain != r.at.chain {
                return Err(self.other_stream(&r));
            }
            self.stats.resumed = Some(Resumed {
                command: self.pos.next,
                offset: self.pos.offset,
                same_boot: r.same_boot,
            });
        }
        self.ap
            .finish()
            .map_err(|f| command_error(f, self.pos.next, self.pos.offset, CommandType::END))?;
        self.sync()?;
        self.stats.data_bytes = self.ap.data_bytes;
        // Done: a new apply into DIR starts afresh. (Should the removal be
        // lost in a crash, running the same stream again reads it through
        // and finds nothing to do.)
        let Applying {
            ap,
            journal,
            journal_path,
            stats,
            ..
        } = self;
        drop(journal);
        match rustix::fs::unlinkat(
            ap.records().meta(),
            journal::NAME,
            rustix::fs::AtFlags::empty(),
        ) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(stats),
            Err(e) => Err(ApplyError::Journal {
                path: journal_path,
                source: e.into(),
            }),
        }
    }
}

fn advance(pos: Position, crc: u32, end: u64) -> Position {
    Position {
        next: pos.next + 1,
        offset: end,
        chain: proto_crc32c::crc32c_append(pos.chain, &crc.to_le_bytes()),
    }
}
