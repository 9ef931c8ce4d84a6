//! Copies: a byte range between files (`clone`), and a whole received tree
//! (`snapshot` into a directory that is not a btrfs subvolume).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{
    chmodat, chownat, copy_file_range, fstat, linkat, mkdirat, mknodat, openat, readlinkat,
    renameat, statat, symlinkat, utimensat, AtFlags, FallocateFlags, FileType, Mode, OFlags,
    SeekFrom, Stat, Timestamps, XattrFlags,
};
use rustix::io::Errno;

use super::path;
use super::records::{open_dir, remove_tree};

const CHUNK: usize = 1 << 20;

/// Copies `len` bytes from `src` at `src_off` to `dst` at `dst_off` (all of
/// `src` from `src_off` on when `len` is 0, as a btrfs clone range of 0
/// means), as a clone would: holes of the source become holes (a range of
/// terabytes of holes costs nothing), its data is copied with
/// `copy_file_range` (on btrfs and XFS the extents are shared, a reflink;
/// elsewhere the kernel copies), or read and written where that cannot be
/// used (overlapping ranges of one file). Returns the bytes of the range.
pub(super) fn range(
    src: &File,
    src_off: u64,
    dst: &File,
    dst_off: u64,
    len: u64,
) -> io::Result<u64> {
    let size = src.metadata()?.len();
    let len = if len == 0 {
        size.saturating_sub(src_off)
    } else {
        len
    };
    let end = src_off
        .checked_add(len)
        .filter(|&e| e <= size)
        .ok_or_else(short)?;
    dst_off.checked_add(len).ok_or_else(short)?;
    let mut at = src_off;
    while at < end {
        let (data, hole) = segment(src, at, end)?;
        if data > at {
            zero(dst, dst_off + (at - src_off), data - at)?;
        }
        if hole > data {
            copy(src, data, dst, dst_off + (data - src_off), hole - data)?;
        }
        at = hole;
    }
    if dst.metadata()?.len() < dst_off + len {
        dst.set_len(dst_off + len)?;
    }
    Ok(len)
}

/// From `at` (before `end`): where the next data starts and where the hole
/// after it starts (both at most `end`). Without `SEEK_DATA`, all data.
fn segment(src: &File, at: u64, end: u64) -> io::Result<(u64, u64)> {
    let data = match rustix::fs::seek(src, SeekFrom::Data(at)) {
        Ok(d) => d.min(end),
        Err(Errno::NXIO) => return Ok((end, end)),
        Err(Errno::INVAL | Errno::OPNOTSUPP) => return Ok((at, end)),
        Err(e) => return Err(e.into()),
    };
    if data == end {
        return Ok((end, end));
    }
    let hole = rustix::fs::seek(src, SeekFrom::Hole(data))?.min(end);
    Ok((data, hole))
}

/// Makes `len` bytes of `dst` at `off` read as zeros: a hole punched, or
/// zeros written where the file has bytes (beyond its end it reads as zeros
/// already).
fn zero(dst: &File, off: u64, len: u64) -> io::Result<()> {
    let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    match rustix::fs::fallocate(dst, flags, off, len) {
        Ok(()) => Ok(()),
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => {
            let size = dst.metadata()?.len();
            let mut left = size.saturating_sub(off).min(len);
            let zeros = vec![0u8; left.min(CHUNK as u64) as usize];
            let mut at = off;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                dst.write_all_at(&zeros[..n], at)?;
                (at, left) = (at + n as u64, left - n as u64);
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Copies a data segment.
fn copy(src: &File, mut s: u64, dst: &File, mut d: u64, mut left: u64) -> io::Result<()> {
    while left > 0 {
        let want = left.min(1 << 30) as usize;
        match copy_file_range(src, Some(&mut s), dst, Some(&mut d), want) {
            Ok(0) => return Err(short()),
            Ok(n) => left -= n as u64,
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::PERM) => {
                return read_write(src, s, dst, d, left);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the range to copy goes beyond the end of its source",
    )
}

fn read_write(src: &File, mut s: u64, dst: &File, mut d: u64, mut left: u64) -> io::Result<()> {
    let mut buf = vec![0u8; left.min(CHUNK as u64) as usize];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = src.read_at(&mut buf[..want], s)?;
        if n == 0 {
            return Err(short());
        }
        dst.write_all_at(&buf[..n], d)?;
        (s, d, left) = (s + n as u64, d + n as u64, left - n as u64);
    }
    Ok(())
}

/// A whole file's data: shared with a reflink where the filesystem can,
/// else copied as [`range`] copies (holes stay holes).
fn file_data(src: &File, dst: &File, size: u64) -> io::Result<()> {
    if rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(());
    }
    range(src, 0, dst, 0, size).map(drop)
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Every xattr of `src` set on `dst` (both `O_PATH`, symlinks themselves).
fn xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    let (sp, dp) = (path::proc_path(src), path::proc_path(dst));
    let n = match rustix::fs::listxattr_query(&sp) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if n == 0 {
        return Ok(());
    }
    let mut names = vec![0u8; n];
    let n = rustix::fs::listxattr(&sp, &mut names[..])?;
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let len = rustix::fs::getxattr_query(&sp, name)?;
        let mut value = vec![0u8; len];
        let len = rustix::fs::getxattr(&sp, name, &mut value[..])?;
        rustix::fs::setxattr(&dp, name, &value[..len], XattrFlags::empty())?;
    }
    Ok(())
}

/// Owner, mode, xattrs and times of `name` in `dst_dir` as `st` and the
/// source's xattrs say. Times last: the others change ctime only.
fn attributes(
    src_dir: BorrowedFd<'_>,
    dst_dir: BorrowedFd<'_>,
    name: &[u8],
    st: &Stat,
) -> io::Result<()> {
    let kind = FileType::from_raw_mode(st.st_mode);
    chownat(
        dst_dir,
        name,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if kind != FileType::Symlink {
        chmodat(
            dst_dir,
            name,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    let s = path::open_in(src_dir, name, OFlags::PATH)?;
    let d = path::open_in(dst_dir, name, OFlags::PATH)?;
    xattrs(s.as_fd(), d.as_fd())?;
    utimensat(dst_dir, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Copies the contents of directory `src` into the empty directory `dst`
/// (`rel`: `dst`'s path below the copy's root `root`, for hard links).
fn copy_dir(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    root: BorrowedFd<'_>,
    rel: &[u8],
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> io::Result<()> {
    let mut names = Vec::new();
    {
        // Its descriptor closed before going deeper.
        let mut dir = rustix::fs::Dir::read_from(src)?;
        while let Some(e) = dir.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
    }
    names.sort();
    for name in names {
        let st = statat(src, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let child: Vec<u8> = if rel.is_empty() {
            name.clone()
        } else {
            [rel, b"/", &name].concat()
        };
        if kind == FileType::Directory {
            mkdirat(dst, name.as_slice(), Mode::from_raw_mode(0o700))?;
            let s = open_dir(src, &name)?;
            let d = open_dir(dst, &name)?;
            copy_dir(s.as_fd(), d.as_fd(), root, &child, links)?;
            attributes(src, dst, &name, &st)?;
            continue;
        }
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = links.get(&key) {
                linkat(
                    root,
                    first.as_slice(),
                    dst,
                    name.as_slice(),
                    AtFlags::empty(),
                )?;
                continue;
            }
        }
        match kind {
            FileType::RegularFile => {
                let s = File::from(openat(
                    src,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?);
                let d = File::from(openat(
                    dst,
                    name.as_slice(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?);
                file_data(&s, &d, st.st_size as u64)?;
            }
            FileType::Symlink => {
                let target = readlinkat(src, name.as_slice(), Vec::new())?;
                symlinkat(target.as_c_str(), dst, name.as_slice())?;
            }
            _ => mknodat(
                dst,
                name.as_slice(),
                kind,
                Mode::from_raw_mode(0o600),
                st.st_rdev,
            )?,
        }
        attributes(src, dst, &name, &st)?;
        if st.st_nlink > 1 {
            links.insert(key, child);
        }
    }
    Ok(())
}

/// `snapshot` into a plain directory: `DIR/NAME` becomes a copy of the
/// received tree `DIR/PARENT` (types, data, owners, modes, xattrs, hard
/// links and times), made in the staging directory and renamed into place,
/// so that `DIR/NAME` never holds half a copy. `copy`: false when `DIR/NAME`
/// is already there (the command is run again after a crash): only the
/// root's times are set again.
pub(super) fn snapshot(
    dir: BorrowedFd<'_>,
    parent: &[u8],
    name: &[u8],
    (meta, staging): (BorrowedFd<'_>, &str),
    copy: bool,
) -> io::Result<()> {
    let src = path::open_in(dir, parent, OFlags::RDONLY | OFlags::DIRECTORY)?;
    let st = fstat(&src)?;
    if copy {
        remove_tree(meta, staging.as_bytes())?;
        mkdirat(meta, staging, Mode::from_raw_mode(0o700))?;
        let dst = open_dir(meta, staging.as_bytes())?;
        let mut links = HashMap::new();
        copy_dir(src.as_fd(), dst.as_fd(), dst.as_fd(), b"", &mut links)?;
        root_attributes(src.as_fd(), meta, staging, &st)?;
        renameat(meta, staging, dir, name)?;
    }
    // A rename into another directory may touch the moved directory's times.
    utimensat(dir, name, &times(&st), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// The copy's root gets the attributes of the parent tree's root.
fn root_attributes(
    src: BorrowedFd<'_>,
    meta: BorrowedFd<'_>,
    staging: &str,
    st: &Stat,
) -> io::Result<()> {
    chownat(
        meta,
        staging,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    chmodat(
        meta,
        staging,
        Mode::from_raw_mode(st.st_mode & 0o7777),
        AtFlags::empty(),
    )?;
    let d = path::open_in(meta, staging.as_bytes(), OFlags::PATH)?;
    let s = openat(
        src,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    xattrs(s.as_fd(), d.as_fd())?;
    utimensat(meta, staging, &times(st), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}
