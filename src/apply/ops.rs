//! The commands of a btrfs send stream, carried out with system calls in a
//! directory (through rustix), as `btrfs receive` carries them out in a
//! btrfs filesystem (btrfs-progs `cmds/receive.c`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use proto_btrfs::BtrfsCommand;
use proto_tlv::Timespec;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{
    chmodat, chownat, linkat, mkdirat, mknodat, renameat, statat, symlinkat, unlinkat, utimensat,
    AtFlags, FallocateFlags, FileType, Mode, OFlags, Timestamps, XattrFlags,
};
use rustix::io::Errno;

use super::path::{self, Dirs};
use super::records::{Records, Subvolume};
use super::{copy, encoded};

/// What went wrong with one command (the driver adds where: command index
/// and byte offset).
#[derive(Debug)]
pub(super) enum Fail {
    /// A path the stream gave is refused.
    Path { path: Vec<u8>, why: &'static str },
    /// A system call failed.
    Io {
        op: &'static str,
        path: Vec<u8>,
        source: io::Error,
    },
    /// The command cannot be carried out here.
    Refused(String),
}

type Result<T> = std::result::Result<T, Fail>;

fn io_fail<'a>(op: &'static str, path: &'a [u8]) -> impl FnOnce(io::Error) -> Fail + 'a {
    move |source| Fail::Io {
        op,
        path: path.to_vec(),
        source,
    }
}

fn errno<'a>(op: &'static str, path: &'a [u8]) -> impl FnOnce(Errno) -> Fail + 'a {
    move |e| Fail::Io {
        op,
        path: path.to_vec(),
        source: e.into(),
    }
}

/// What a command did, for the counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Carried out.
    Applied,
    /// Found already done (the command in doubt after a crash).
    AlreadyDone,
    /// Nothing to do here, as for `btrfs receive` (`update_extent`, `fileattr`).
    Ignored,
}

/// The tree being received.
#[derive(Debug)]
struct Current {
    sub: Subvolume,
    dirs: Dirs,
}

/// Carries out commands in the directory `DIR` it was made for.
#[derive(Debug)]
pub(super) struct Applier {
    dir: OwnedFd,
    records: Records,
    cur: Option<Current>,
    /// The file last written to, by its path in the current tree.
    write: Option<(Vec<u8>, File)>,
    /// The entry this run made last (mkfile, mkdir, ...), by its path
    /// (followed through renames), and its type: no need to look at it
    /// again before opening it or changing its mode.
    made: Option<(Vec<u8>, FileType)>,
    /// Data bytes written (write, clone, encoded_write).
    pub(super) data_bytes: u64,
    /// The largest file size a command may ask for, if limited.
    pub(super) max_file_size: Option<u64>,
    /// `DIR`'s path, and whether received trees are made as btrfs
    /// subvolumes and snapshots (`btrfs subvolume ...`) rather than
    /// directories.
    pub(super) subvolumes: Option<std::path::PathBuf>,
    scratch: Vec<u8>,
}

/// True for the commands whose effect depends on what the tree holds when
/// they run, so that running them again after later commands could differ
/// (renames, creations, removals, clones). The driver records its position
/// before each of them; every other command may run again in order.
pub(super) fn needs_record(cmd: &BtrfsCommand<'_>) -> bool {
    matches!(
        cmd,
        BtrfsCommand::Subvol { .. }
            | BtrfsCommand::Snapshot { .. }
            | BtrfsCommand::Mkfile { .. }
            | BtrfsCommand::Mkdir { .. }
            | BtrfsCommand::Mknod { .. }
            | BtrfsCommand::Mkfifo { .. }
            | BtrfsCommand::Mksock { .. }
            | BtrfsCommand::Symlink { .. }
            | BtrfsCommand::Rename { .. }
            | BtrfsCommand::Link { .. }
            | BtrfsCommand::Unlink { .. }
            | BtrfsCommand::Rmdir { .. }
            | BtrfsCommand::Clone { .. }
            // A tree made read-only (--subvolumes) takes no command again.
            | BtrfsCommand::End
    )
}

/// The path a creation command makes.
pub(super) fn made_path<'a>(cmd: &BtrfsCommand<'a>) -> Option<&'a [u8]> {
    match *cmd {
        BtrfsCommand::Mkfile { path, .. }
        | BtrfsCommand::Mkdir { path, .. }
        | BtrfsCommand::Mknod { path, .. }
        | BtrfsCommand::Mkfifo { path, .. }
        | BtrfsCommand::Mksock { path, .. }
        | BtrfsCommand::Symlink { path, .. } => Some(path),
        _ => None,
    }
}

fn ts(t: Timespec) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: t.sec as i64,
        tv_nsec: t.nsec.into(),
    }
}

impl Applier {
    pub(super) fn new(dir: OwnedFd, records: Records) -> Applier {
        Applier {
            dir,
            records,
            cur: None,
            write: None,
            made: None,
            data_bytes: 0,
            max_file_size: None,
            subvolumes: None,
            scratch: Vec::new(),
        }
    }

    /// `DIR`.
    pub(super) fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The tree being received, if a stream has started.
    pub(super) fn current(&self) -> Option<&Subvolume> {
        self.cur.as_ref().map(|c| &c.sub)
    }

    /// The records in `DIR/.proto-stream/`.
    pub(super) fn records(&self) -> &Records {
        &self.records
    }

    /// Carries out one command. `doubt`: the command may already have been
    /// carried out (the one in flight when an earlier run stopped), so
    /// "already exists" / "does not exist" mean done.
    pub(super) fn apply(&mut self, cmd: &BtrfsCommand<'_>, doubt: bool) -> Result<Outcome> {
        use BtrfsCommand as C;
        // Every path first: nothing happens for a command with a bad path.
        for p in paths(cmd) {
            path::check(p).map_err(|why| Fail::Path {
                path: p.to_vec(),
                why,
            })?;
        }
        match *cmd {
            C::Subvol {
                path,
                uuid,
                ctransid,
            } => self.subvol(path, uuid, ctransid, None, doubt),
            C::Snapshot {
                path,
                uuid,
                ctransid,
                clone_uuid,
                clone_ctransid,
            } => self.subvol(
                path,
                uuid,
                ctransid,
                Some((clone_uuid, clone_ctransid)),
                doubt,
            ),
            C::Mkfile { path, .. } => self.make(path, Make::File, doubt),
            C::Mkdir { path, .. } => self.make(path, Make::Dir, doubt),
            C::Mknod {
                path, mode, rdev, ..
            } => self.make(path, Make::Node { mode, rdev }, doubt),
            C::Mkfifo { path, .. } => self.make(path, Make::Fifo, doubt),
            C::Mksock { path, .. } => self.make(path, Make::Socket, doubt),
            C::Symlink { path, link, .. } => self.make(path, Make::Symlink(link), doubt),
            C::Rename { path, to } => self.rename(path, to, doubt),
            C::Link { path, link } => self.link(path, link, doubt),
            C::Unlink { path } => self.remove(path, false, doubt),
            C::Rmdir { path } => self.remove(path, true, doubt),
            C::Write { path, offset, data } => {
                self.check_size("write", offset, data.len() as u64)?;
                let f = self.open_write(path)?;
                f.write_all_at(data, offset)
                    .map_err(io_fail("write", path))?;
                self.data_bytes += data.len() as u64;
                Ok(Outcome::Applied)
            }
            C::Clone {
                path,
                offset,
                len,
                clone_uuid,
                clone_path,
                clone_offset,
                ..
            } => self.clone_range(path, offset, len, clone_uuid, clone_path, clone_offset),
            C::Truncate { path, size } => {
                self.check_size("truncate", size, 0)?;
                let f = self.open_write(path)?;
                f.set_len(size).map_err(io_fail("truncate", path))?;
                Ok(Outcome::Applied)
            }
            C::Chmod { path, mode } => self.chmod(path, mode),
            C::Chown { path, uid, gid } => {
                let uid = u32::try_from(uid)
                    .map_err(|_| Fail::Refused(format!("chown: uid {uid} is out of range")))?;
                let gid = u32::try_from(gid)
                    .map_err(|_| Fail::Refused(format!("chown: gid {gid} is out of range")))?;
                let (parent, name) = self.at(path)?;
                chownat(
                    parent,
                    name,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(errno("chown", path))?;
                Ok(Outcome::Applied)
            }
            C::Utimes {
                path, atime, mtime, ..
            } => {
                let (parent, name) = self.at(path)?;
                let times = Timestamps {
                    last_access: ts(atime),
                    last_modification: ts(mtime),
                };
                utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(errno("utimes", path))?;
                Ok(Outcome::Applied)
            }
            C::SetXattr { path, name, data } if self.writes_to(path) => {
                let f = self.open_write(path)?;
                rustix::fs::fsetxattr(f, name, data, XattrFlags::empty())
                    .map_err(errno("set_xattr", path))?;
                Ok(Outcome::Applied)
            }
            C::SetXattr { path, name, data } => {
                let (parent, last) = self.at(path)?;
                let fd = path::open_in(parent, last, OFlags::PATH)
                    .map_err(io_fail("set_xattr", path))?;
                rustix::fs::setxattr(path::proc_path(fd.as_fd()), name, data, XattrFlags::empty())
                    .map_err(errno("set_xattr", path))?;
                Ok(Outcome::Applied)
            }
            C::RemoveXattr { path, name } => {
                let (parent, last) = self.at(path)?;
                let fd = path::open_in(parent, last, OFlags::PATH)
                    .map_err(io_fail("remove_xattr", path))?;
                match rustix::fs::removexattr(path::proc_path(fd.as_fd()), name) {
                    // Run again, it may be gone already.
                    Err(Errno::NODATA) if doubt => Ok(Outcome::AlreadyDone),
                    r => r
                        .map(|()| Outcome::Applied)
                        .map_err(errno("remove_xattr", path)),
                }
            }
            C::Fallocate {
                path,
                mode,
                offset,
                size,
            } => {
                self.check_size("fallocate", offset, size)?;
                let f = self.open_write(path)?;
                let flags = FallocateFlags::from_bits(mode).ok_or_else(|| {
                    Fail::Refused(format!("fallocate: unknown mode bits {mode:#x}"))
                })?;
                rustix::fs::fallocate(f.as_fd(), flags, offset, size)
                    .map_err(errno("fallocate", path))?;
                Ok(Outcome::Applied)
            }
            C::EncodedWrite {
                path,
                offset,
                unencoded_file_len,
                unencoded_len,
                unencoded_offset,
                compression,
                encryption,
                data,
            } => {
                if encryption.unwrap_or(0) != 0 {
                    return Err(Fail::Refused(format!(
                        "encoded_write: encryption {} is not supported",
                        encryption.unwrap_or(0)
                    )));
                }
                let mut buf = std::mem::take(&mut self.scratch);
                let r = encoded::decode(
                    compression.unwrap_or(0),
                    data,
                    unencoded_len,
                    unencoded_offset,
                    unencoded_file_len,
                    &mut buf,
                )
                .map_err(|why| Fail::Refused(format!("encoded_write: {why}")))
                .and_then(|plain| {
                    self.check_size("encoded_write", offset, plain.len() as u64)?;
                    let f = self.open_write(path)?;
                    f.write_all_at(plain, offset)
                        .map_err(io_fail("encoded_write", path))?;
                    Ok(plain.len() as u64)
                });
                self.scratch = buf;
                self.data_bytes += r?;
                Ok(Outcome::Applied)
            }
            // With --no-data, `btrfs receive` writes nothing either.
            C::UpdateExtent { .. } => Ok(Outcome::Ignored),
            // btrfs-progs does not apply these flags (its process_fileattr is
            // `#if 0`: BTRFS_INODE_* flags are not FS_* flags).
            C::Fileattr { .. } => Ok(Outcome::Ignored),
            C::EnableVerity { .. } => Err(Fail::Refused(
                "enable_verity is not supported: it needs the FS_IOC_ENABLE_VERITY ioctl".into(),
            )),
            C::End => {
                self.finish()?;
                Ok(Outcome::Applied)
            }
            C::Unknown { cmd, .. } => Err(Fail::Refused(format!("unknown command type {cmd}"))),
            _ => Err(Fail::Refused("a command this version cannot apply".into())),
        }
    }

    /// The directory holding `path`'s last component, and that component.
    /// The empty path (the tree's root) is the tree's name in `DIR`.
    fn at<'s>(&'s mut self, path: &'s [u8]) -> Result<(BorrowedFd<'s>, &'s [u8])> {
        let cur = self.cur.as_mut().ok_or_else(no_subvol)?;
        if path.is_empty() {
            return Ok((self.dir.as_fd(), cur.sub.name.as_slice()));
        }
        let (dir, name) = path::split(path);
        let fd = cur.dirs.get(dir).map_err(io_fail("open directory", dir))?;
        Ok((fd, name))
    }

    fn make(&mut self, path: &[u8], what: Make<'_>, doubt: bool) -> Result<Outcome> {
        if path.is_empty() {
            return Err(Fail::Path {
                path: Vec::new(),
                why: "the tree's root cannot be made again",
            });
        }
        let (fd, name) = self.at(path)?;
        let r = match what {
            // As btrfs receive: creat(path, 0600).
            Make::File => rustix::fs::openat2(
                fd,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
                path::RESOLVE,
            )
            .map(drop),

            Make::Dir => mkdirat(fd, name, Mode::from_raw_mode(0o700)),
            Make::Node { mode, rdev } => mknodat(
                fd,
                name,
                FileType::from_raw_mode(mode as u32),
                Mode::empty(),
                rdev,
            ),
            Make::Fifo => mknodat(fd, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0),
            Make::Socket => mknodat(fd, name, FileType::Socket, Mode::from_raw_mode(0o600), 0),
            Make::Symlink(target) => symlinkat(target, fd, name),
        };
        match r {
            Ok(()) => {
                let kind = match what {
                    Make::File => FileType::RegularFile,
                    Make::Dir => FileType::Directory,
                    Make::Node { mode, .. } => FileType::from_raw_mode(mode as u32),
                    Make::Fifo => FileType::Fifo,
                    Make::Socket => FileType::Socket,
                    Make::Symlink(_) => FileType::Symlink,
                };
                self.made = Some((path.to_vec(), kind));
                Ok(Outcome::Applied)
            }
            Err(Errno::EXIST) if doubt => Ok(Outcome::AlreadyDone),
            Err(e) => Err(errno(what.op(), path)(e)),
        }
    }

    /// The type of `path` when this run made it (and it was only renamed
    /// since).
    pub(super) fn made_as(&self, path: &[u8]) -> Option<FileType> {
        match &self.made {
            Some((p, kind)) if p.as_slice() == path => Some(*kind),
            _ => None,
        }
    }
}

fn no_subvol() -> Fail {
    Fail::Refused("a command before the stream's subvol or snapshot command".into())
}

/// What `make` makes.
#[derive(Clone, Copy)]
enum Make<'a> {
    File,
    Dir,
    Node { mode: u64, rdev: u64 },
    Fifo,
    Socket,
    Symlink(&'a [u8]),
}

impl Make<'_> {
    fn op(&self) -> &'static str {
        match self {
            Make::File => "mkfile",
            Make::Dir => "mkdir",
            Make::Node { .. } => "mknod",
            Make::Fifo => "mkfifo",
            Make::Socket => "mksock",
            Make::Symlink(_) => "symlink",
        }
    }
}

/// Every path a command names (in its own tree).
fn paths<'a>(cmd: &BtrfsCommand<'a>) -> impl Iterator<Item = &'a [u8]> {
    use BtrfsCommand as C;
    let (a, b): (Option<&'a [u8]>, Option<&'a [u8]>) = match *cmd {
        C::Subvol { path, .. } | C::Snapshot { path, .. } => (Some(path), None),
        C::Rename { path, to } => (Some(path), Some(to)),
        C::Link { path, link } => (Some(path), Some(link)),
        C::Clone {
            path, clone_path, ..
        } => (Some(path), Some(clone_path)),
        C::Mkfile { path, .. }
        | C::Mkdir { path, .. }
        | C::Mknod { path, .. }
        | C::Mkfifo { path, .. }
        | C::Mksock { path, .. }
        | C::Symlink { path, .. }
        | C::Unlink { path }
        | C::Rmdir { path }
        | C::SetXattr { path, .. }
        | C::RemoveXattr { path, .. }
        | C::Write { path, .. }
        | C::Truncate { path, .. }
        | C::Chmod { path, .. }
        | C::Chown { path, .. }
        | C::Utimes { path, .. }
        | C::UpdateExtent { path, .. }
        | C::Fallocate { path, .. }
        | C::Fileattr { path, .. }
        | C::EncodedWrite { path, .. }
        | C::EnableVerity { path, .. } => (Some(path), None),
        _ => (None, None),
    };
    a.into_iter().chain(b)
}

impl Applier {
    /// `subvol` / `snapshot`: makes `DIR/NAME`, empty or as a copy of the
    /// parent tree received earlier, and makes it the current tree.
    fn subvol(
        &mut self,
        name: &[u8],
        uuid: [u8; 16],
        ctransid: u64,
        parent: Option<([u8; 16], u64)>,
        doubt: bool,
    ) -> Result<Outcome> {
        self.finish()?;
        check_subvol_name(name)?;
        let op = if parent.is_some() {
            "snapshot"
        } else {
            "subvol"
        };
        if let Some(dir) = self.subvolumes.clone() {
            let done = self.btrfs_subvolume(&dir, name, parent, doubt)?;
            self.attach(name, uuid, ctransid)?;
            return Ok(done);
        }
        let done = match parent {
            // A new subvolume's root is 0755 (whatever the umask), as btrfs
            // makes it; full streams send its mode, incremental ones may not.
            None => {
                let done = match mkdirat(&self.dir, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => Outcome::Applied,
                    Err(Errno::EXIST) if doubt => Outcome::AlreadyDone,
                    Err(e) => return Err(errno(op, name)(e)),
                };
                // Also when in doubt: the run before may have stopped
                // between the two (commands after it set the mode again).
                chmodat(
                    &self.dir,
                    name,
                    Mode::from_raw_mode(0o755),
                    AtFlags::empty(),
                )
                .map_err(errno(op, name))?;
                done
            }
            Some((parent_uuid, _)) => {
                let parent = self.parent_tree(&parent_uuid)?;
                let exists = match statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(_) => true,
                    Err(Errno::NOENT) => false,
                    Err(e) => return Err(errno(op, name)(e)),
                };
                if exists && !doubt {
                    return Err(errno(op, name)(Errno::EXIST));
                }
                let staging = self.records.staging().map_err(|e| Fail::Io {
                    op,
                    path: name.to_vec(),
                    source: e,
                })?;
                copy::snapshot(self.dir.as_fd(), &parent.name, name, staging, !exists).map_err(
                    |e| Fail::Io {
                        op,
                        path: name.to_vec(),
                        source: e,
                    },
                )?;
                if exists {
                    Outcome::AlreadyDone
                } else {
                    Outcome::Applied
                }
            }
        };
        self.attach(name, uuid, ctransid)?;
        Ok(done)
    }

    /// `subvol` / `snapshot` with `--subvolumes`: a real btrfs subvolume,
    /// or a writable snapshot of the parent tree (itself a subvolume), by
    /// `btrfs subvolume create|snapshot` (their ioctls would need `unsafe`).
    fn btrfs_subvolume(
        &mut self,
        dir: &std::path::Path,
        name: &[u8],
        parent: Option<([u8; 16], u64)>,
        doubt: bool,
    ) -> Result<Outcome> {
        use std::os::unix::ffi::OsStrExt;
        let op = if parent.is_some() {
            "snapshot"
        } else {
            "subvol"
        };
        let target = dir.join(std::ffi::OsStr::from_bytes(name));
        match statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) if doubt => return Ok(Outcome::AlreadyDone),
            Ok(_) => return Err(errno(op, name)(Errno::EXIST)),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(errno(op, name)(e)),
        }
        let mut args: Vec<std::ffi::OsString> = vec!["subvolume".into()];
        match parent {
            None => args.extend(["create".into(), target.into_os_string()]),
            Some((parent_uuid, _)) => {
                let parent = self.parent_tree(&parent_uuid)?;
                args.extend([
                    "snapshot".into(),
                    dir.join(std::ffi::OsStr::from_bytes(&parent.name))
                        .into_os_string(),
                    target.into_os_string(),
                ]);
            }
        }
        run_btrfs(&args).map_err(|e| Fail::Refused(format!("{op}: {e}")))?;
        Ok(Outcome::Applied)
    }

    /// The tree received earlier with `uuid`, a snapshot's parent.
    fn parent_tree(&self, uuid: &[u8; 16]) -> Result<Subvolume> {
        self.records
            .find(uuid)
            .map_err(|e| Fail::Refused(format!("snapshot: {e}")))?
            .ok_or_else(|| {
                Fail::Refused(format!(
                    "snapshot: cannot find parent subvolume {}: no tree received with that UUID in this directory",
                    proto_btrfs::uuid_text(uuid)
                ))
            })
    }

    /// Makes the existing `DIR/NAME` the current tree (a run that resumes
    /// after its subvol or snapshot command).
    pub(super) fn attach(&mut self, name: &[u8], uuid: [u8; 16], ctransid: u64) -> Result<()> {
        check_subvol_name(name)?;
        self.write = None;
        self.made = None;
        let root = path::open_in(self.dir.as_fd(), name, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(io_fail("open the received tree", name))?;
        self.cur = Some(Current {
            sub: Subvolume {
                name: name.to_vec(),
                uuid,
                ctransid,
            },
            dirs: Dirs::new(root),
        });
        Ok(())
    }

    /// Ends the current tree: records it (by its UUID) so that later
    /// incremental streams find it as their parent or clone source.
    pub(super) fn finish(&mut self) -> Result<()> {
        self.write = None;
        if let (Some(dir), Some(cur)) = (&self.subvolumes, &self.cur) {
            // Read-only, as btrfs receive leaves a received subvolume.
            use std::os::unix::ffi::OsStrExt;
            let path = dir.join(std::ffi::OsStr::from_bytes(&cur.sub.name));
            let args = [
                "property".into(),
                "set".into(),
                "-ts".into(),
                path.into_os_string(),
                "ro".into(),
                "true".into(),
            ];
            run_btrfs(&args).map_err(|e| Fail::Refused(format!("end: {e}")))?;
        }
        if let Some(cur) = self.cur.take() {
            self.records.save(&cur.sub).map_err(|e| Fail::Io {
                op: "record the received tree",
                path: cur.sub.name.clone(),
                source: e,
            })?;
        }
        Ok(())
    }

    fn forget_under(&mut self, path: &[u8]) {
        if matches!(&self.write, Some((p, _)) if path::is_under(p, path)) {
            self.write = None;
        }
        if matches!(&self.made, Some((p, _)) if path::is_under(p, path)) {
            self.made = None;
        }
        if let Some(cur) = &mut self.cur {
            cur.dirs.forget_under(path);
        }
    }

    fn rename(&mut self, from: &[u8], to: &[u8], doubt: bool) -> Result<Outcome> {
        if from.is_empty() || to.is_empty() {
            let path = if from.is_empty() { from } else { to };
            return Err(Fail::Path {
                path: path.to_vec(),
                why: "the tree's root cannot be renamed",
            });
        }
        let cur = self.cur.as_mut().ok_or_else(no_subvol)?;
        let ((fdir, fname), (tdir, tname)) = (path::split(from), path::split(to));
        let (a, b) = two_dirs(&mut cur.dirs, fdir, tdir)?;
        let r = match renameat(a.fd(), fname, b.fd(), tname) {
            Ok(()) => Ok(Outcome::Applied),
            // In doubt, done when the source is gone and the target is there.
            Err(Errno::NOENT)
                if doubt
                    && matches!(
                        statat(a.fd(), fname, AtFlags::SYMLINK_NOFOLLOW),
                        Err(Errno::NOENT)
                    )
                    && statat(b.fd(), tname, AtFlags::SYMLINK_NOFOLLOW).is_ok() =>
            {
                Ok(Outcome::AlreadyDone)
            }
            Err(e) => Err(errno("rename", from)(e)),
        };
        drop((a, b));
        let moved = self.made_as(from);
        self.forget_under(from);
        self.forget_under(to);
        if let (Some(kind), Ok(_)) = (moved, &r) {
            self.made = Some((to.to_vec(), kind));
        }
        r
    }

    fn link(&mut self, new: &[u8], existing: &[u8], doubt: bool) -> Result<Outcome> {
        if new.is_empty() || existing.is_empty() {
            return Err(Fail::Path {
                path: Vec::new(),
                why: "the tree's root cannot be linked",
            });
        }
        let cur = self.cur.as_mut().ok_or_else(no_subvol)?;
        let ((edir, ename), (ndir, nname)) = (path::split(existing), path::split(new));
        let (n, e) = two_dirs(&mut cur.dirs, ndir, edir)?;
        match linkat(e.fd(), ename, n.fd(), nname, AtFlags::empty()) {
            Ok(()) => Ok(Outcome::Applied),
            Err(Errno::EXIST) if doubt => Ok(Outcome::AlreadyDone),
            Err(err) => Err(errno("link", new)(err)),
        }
    }

    fn remove(&mut self, path: &[u8], dir: bool, doubt: bool) -> Result<Outcome> {
        let op = if dir { "rmdir" } else { "unlink" };
        if path.is_empty() {
            return Err(Fail::Path {
                path: Vec::new(),
                why: "the tree's root cannot be removed",
            });
        }
        let flags = if dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        let (fd, name) = self.at(path)?;
        let r = match unlinkat(fd, name, flags) {
            Ok(()) => Ok(Outcome::Applied),
            Err(Errno::NOENT) if doubt => Ok(Outcome::AlreadyDone),
            Err(e) => Err(errno(op, path)(e)),
        };
        self.forget_under(path);
        r
    }

    fn chmod(&mut self, path: &[u8], mode: u64) -> Result<Outcome> {
        let made = self.made_as(path);
        let (fd, name) = self.at(path)?;
        let kind = match made {
            Some(kind) => kind,
            None => FileType::from_raw_mode(
                statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(errno("chmod", path))?
                    .st_mode,
            ),
        };
        // chmod follows a symlink: never through one (the kernel sends no
        // chmod for symlinks).
        if kind == FileType::Symlink {
            return Err(Fail::Refused(
                "chmod of a symlink (it would change the file it points to)".into(),
            ));
        }
        chmodat(
            fd,
            name,
            Mode::from_raw_mode(mode as u32 & 0o7777),
            AtFlags::empty(),
        )
        .map_err(errno("chmod", path))?;
        Ok(Outcome::Applied)
    }

    /// Whether `path` is a regular file open for writing, or one this run
    /// made (its xattrs are then set through that descriptor).
    fn writes_to(&self, path: &[u8]) -> bool {
        matches!(&self.write, Some((p, _)) if p.as_slice() == path)
            || self.made_as(path) == Some(FileType::RegularFile)
    }

    /// Refuses a command that would make a file larger than allowed.
    fn check_size(&self, op: &str, offset: u64, len: u64) -> Result<()> {
        let Some(max) = self.max_file_size else {
            return Ok(());
        };
        match offset.checked_add(len) {
            Some(end) if end <= max => Ok(()),
            _ => Err(Fail::Refused(format!(
                "{op} of {len} bytes at offset {offset}: beyond the largest file size allowed ({max} bytes)"
            ))),
        }
    }

    /// The regular file at `path`, open for writing (kept for the next
    /// command on the same path). Anything but a regular file is refused
    /// before it is opened: opening a device node can have effects.
    fn open_write(&mut self, path: &[u8]) -> Result<&File> {
        if !matches!(&self.write, Some((p, _)) if p.as_slice() == path) {
            self.write = None;
            let known = self.made_as(path) == Some(FileType::RegularFile);
            let (fd, name) = self.at(path)?;
            let file = if known {
                File::from(
                    path::open_in(fd, name, OFlags::WRONLY | OFlags::NONBLOCK)
                        .map_err(io_fail("open", path))?,
                )
            } else {
                open_regular(fd, name, OFlags::WRONLY, path)?
            };
            self.write = Some((path.to_vec(), file));
        }
        Ok(&self.write.as_ref().expect("just opened").1)
    }

    #[allow(clippy::too_many_arguments)]
    fn clone_range(
        &mut self,
        path: &[u8],
        offset: u64,
        len: u64,
        clone_uuid: [u8; 16],
        clone_path: &[u8],
        clone_offset: u64,
    ) -> Result<Outcome> {
        if clone_path.is_empty() {
            return Err(Fail::Path {
                path: Vec::new(),
                why: "a clone source must be a file, not the tree's root",
            });
        }
        let (sdir, sname) = path::split(clone_path);
        let cur = self.cur.as_mut().ok_or_else(no_subvol)?;
        let src = if clone_uuid == cur.sub.uuid {
            let d = cur
                .dirs
                .other(sdir)
                .map_err(io_fail("open directory", sdir))?;
            open_regular(d.fd(), sname, OFlags::RDONLY, clone_path)?
        } else {
            let rec = self
                .records
                .find(&clone_uuid)
                .map_err(|e| Fail::Refused(format!("clone: {e}")))?
                .ok_or_else(|| {
                    Fail::Refused(format!(
                        "clone: cannot find source subvolume {}",
                        proto_btrfs::uuid_text(&clone_uuid)
                    ))
                })?;
            let root = path::open_in(
                self.dir.as_fd(),
                &rec.name,
                OFlags::PATH | OFlags::DIRECTORY,
            )
            .map_err(io_fail("open the clone source's tree", &rec.name))?;
            let d = if sdir.is_empty() {
                root
            } else {
                path::open_dir(root.as_fd(), sdir).map_err(io_fail("open directory", sdir))?
            };
            open_regular(d.as_fd(), sname, OFlags::RDONLY, clone_path)?
        };
        let len = if len == 0 {
            let size = src.metadata().map_err(io_fail("clone", clone_path))?.len();
            size.saturating_sub(clone_offset)
        } else {
            len
        };
        self.check_size("clone", offset, len)?;
        let dst = self.open_write(path)?;
        let n =
            copy::range(&src, clone_offset, dst, offset, len).map_err(io_fail("clone", path))?;
        self.data_bytes += n;
        Ok(Outcome::Applied)
    }
}

/// Two directories of the tree at once (rename, link): `keep` is kept for
/// the next lookup, `other` opened for this use when it is another.
fn two_dirs<'d>(
    dirs: &'d mut Dirs,
    keep: &'d [u8],
    other: &'d [u8],
) -> Result<(path::Other<'d>, path::Other<'d>)> {
    dirs.load(keep).map_err(io_fail("open directory", keep))?;
    let dirs: &'d Dirs = dirs;
    let a = dirs.other(keep).map_err(io_fail("open directory", keep))?;
    let b = dirs
        .other(other)
        .map_err(io_fail("open directory", other))?;
    Ok((a, b))
}

/// Runs `btrfs ARGS` (no more than a minute); its stderr on failure.
fn run_btrfs(args: &[std::ffi::OsString]) -> std::result::Result<(), String> {
    let out = std::process::Command::new("timeout")
        .arg("60")
        .arg("btrfs")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            format!("cannot run btrfs (btrfs-progs and timeout are needed for --subvolumes): {e}")
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "btrfs {}: {} ({})",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        ))
    }
}

/// Opens `name` in `dir` if it is a regular file (checked first, without
/// following a symlink).
fn open_regular(dir: BorrowedFd<'_>, name: &[u8], how: OFlags, path: &[u8]) -> Result<File> {
    let st = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno("open", path))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(Fail::Refused(format!(
            "{} is a {kind:?}: only regular files are written or cloned",
            proto_btrfs::quoted(path)
        )));
    }
    let fd = path::open_in(dir, name, how | OFlags::NONBLOCK).map_err(io_fail("open", path))?;
    Ok(File::from(fd))
}

/// A subvolume's name is one component of `DIR`, and not apply's own.
pub(super) fn check_subvol_name(name: &[u8]) -> Result<()> {
    let why = if name.is_empty() {
        Some("an empty subvolume name")
    } else if name.contains(&b'/') {
        Some("a subvolume name must be one path component")
    } else if name == super::records::META_DIR.as_bytes() {
        Some("the name of apply's own records")
    } else {
        path::check(name).err()
    };
    match why {
        Some(why) => Err(Fail::Path {
            path: name.to_vec(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subvolume_names_are_one_plain_component() {
        for bad in [&b""[..], b".", b"..", b"a/b", b".proto-stream", b"a\0b"] {
            assert!(check_subvol_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_subvol_name(b"snap-2026").is_ok());
    }
}
