//! Paths from a stream, resolved beneath the tree being received.
//!
//! A stream names files by paths relative to its subvolume. Every path is
//! checked first (relative, no `.`/`..`/empty component, no NUL byte), and
//! its directory part is opened with `openat2` and `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV` from the
//! tree's root: no symlink is followed on the way, whatever the stream's
//! symlinks point to. The last component is then used with the `*at` system
//! calls that do not follow it (or after checking that it is not a symlink).

use std::io;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};

/// How every directory part is resolved: beneath the root, through no symlink.
pub(super) const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Why a path is refused, or `Ok` (the empty path is the tree's root).
pub(super) fn check(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Ok(());
    }
    if path[0] == b'/' {
        return Err("an absolute path");
    }
    if path.contains(&0) {
        return Err("a NUL byte in the path");
    }
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" => return Err("an empty component (// or a trailing /)"),
            b"." => return Err("a . component"),
            b".." => return Err("a .. component"),
            _ => {}
        }
    }
    Ok(())
}

/// Splits a checked, non-empty path into its directory part (empty for the
/// root) and its last component.
pub(super) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// True when `path` is `prefix` or lies below it.
pub(super) fn is_under(path: &[u8], prefix: &[u8]) -> bool {
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

/// `/proc/self/fd/N` of an `O_PATH` descriptor: the path that reaches the
/// very inode it holds, for the calls that take no descriptor of one
/// (xattrs of symlinks and special files).
pub(super) fn proc_path(fd: BorrowedFd<'_>) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens a directory beneath `root` (an `O_PATH` descriptor).
pub(super) fn open_dir(root: BorrowedFd<'_>, dir: &[u8]) -> io::Result<OwnedFd> {
    Ok(openat2(
        root,
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )?)
}

/// Opens the last component `name` in `parent`, never following it when it
/// is a symlink.
pub(super) fn open_in(parent: BorrowedFd<'_>, name: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    Ok(openat2(
        parent,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )?)
}

/// The directories of one tree: its root, and the last directory part
/// looked up (most commands of a stream touch one directory after another).
#[derive(Debug)]
pub(super) struct Dirs {
    root: OwnedFd,
    last: Option<(Vec<u8>, OwnedFd)>,
}

impl Dirs {
    pub(super) fn new(root: OwnedFd) -> Dirs {
        Dirs { root, last: None }
    }

    /// Looks directory `dir` up (relative to the root; empty is the root)
    /// and keeps it for the next lookup.
    pub(super) fn load(&mut self, dir: &[u8]) -> io::Result<()> {
        let hit = dir.is_empty() || matches!(&self.last, Some((p, _)) if p.as_slice() == dir);
        if !hit {
            let fd = open_dir(self.root.as_fd(), dir)?;
            self.last = Some((dir.to_vec(), fd));
        }
        Ok(())
    }

    /// The descriptor of directory `dir`, kept for the next lookup.
    pub(super) fn get(&mut self, dir: &[u8]) -> io::Result<BorrowedFd<'_>> {
        self.load(dir)?;
        Ok(match &self.last {
            Some((p, fd)) if !dir.is_empty() && p.as_slice() == dir => fd.as_fd(),
            _ => self.root.as_fd(),
        })
    }

    /// A second directory while the first is borrowed (rename, link): the
    /// kept one when it is that directory, else opened for this use only.
    pub(super) fn other(&self, dir: &[u8]) -> io::Result<Other<'_>> {
        if dir.is_empty() {
            return Ok(Other::Kept(self.root.as_fd()));
        }
        match &self.last {
            Some((p, fd)) if p.as_slice() == dir => Ok(Other::Kept(fd.as_fd())),
            _ => Ok(Other::Opened(open_dir(self.root.as_fd(), dir)?)),
        }
    }

    /// Forgets the kept directory if `path` is it or one of its ancestors
    /// (it was renamed or removed).
    pub(super) fn forget_under(&mut self, path: &[u8]) {
        if matches!(&self.last, Some((p, _)) if is_under(p, path)) {
            self.last = None;
        }
    }
}

/// A directory descriptor borrowed from [`Dirs`] or opened for one use.
pub(super) enum Other<'a> {
    Kept(BorrowedFd<'a>),
    Opened(OwnedFd),
}

impl Other<'_> {
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Other::Kept(fd) => *fd,
            Other::Opened(fd) => fd.as_fd(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert_eq!(check(b""), Ok(()));
        assert_eq!(check(b"a/b c/o257-7-0"), Ok(()));
        assert_eq!(check(b"/etc/passwd"), Err("an absolute path"));
        assert_eq!(check(b"a/../../x"), Err("a .. component"));
        assert_eq!(check(b".."), Err("a .. component"));
        assert_eq!(check(b"a/./b"), Err("a . component"));
        assert_eq!(
            check(b"a//b"),
            Err("an empty component (// or a trailing /)")
        );
        assert_eq!(check(b"a/"), Err("an empty component (// or a trailing /)"));
        assert_eq!(check(b"a\0b"), Err("a NUL byte in the path"));
    }

    #[test]
    fn split_and_prefix() {
        assert_eq!(split(b"a"), (&b""[..], &b"a"[..]));
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert!(is_under(b"a/b", b"a"));
        assert!(is_under(b"a", b"a"));
        assert!(!is_under(b"ab", b"a"));
        assert!(!is_under(b"a", b"a/b"));
    }
}
