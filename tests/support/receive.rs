//! Test support: receive btrfs send streams with the REAL `btrfs receive` into a
//! fresh loop-mounted btrfs filesystem, and capture a comparable listing of the
//! received tree.
//!
//! # Use
//!
//! From an integration test of the top crate (`tests/*.rs`):
//!
//! ```ignore
//! #[path = "support/receive.rs"]
//! mod receive;
//!
//! #[test]
//! fn my_test() {
//!     if !receive::require_or_skip("my_test") {
//!         return;
//!     }
//!     let fs = receive::Scratch::new().unwrap();
//!     fs.receive(&stream_bytes).unwrap();
//!     let t = receive::tree(&fs.path().join("snap1")).unwrap();
//! }
//! ```
//!
//! (`#[path]` rather than `mod support;` so that a test pulls in only this file (and
//! `fixtures.rs`, which it includes) and `tests/support/` needs no `mod.rs`.)  Every function here may be unused by some
//! test binary, hence the `dead_code` allowance below.
//!
//! # API
//!
//! - `availability() -> Result<(), String>`: Ok when we are root, `btrfs`,
//!   `mkfs.btrfs`, `mount`, `umount` and `timeout` run, and a loop mount of a fresh
//!   btrfs image works (probed once per process, cached).
//! - `fixtures_for(test: &str) -> Vec<PathBuf>`: `require_or_skip`, then
//!   the sets of real kernel streams to receive (`fixtures::sets()`: the
//!   shipped `testdata/btrfs/small/`, and `../shared/fixtures/btrfs/` when
//!   present); empty after a loud skip.
//! - `fixtures`: `tests/support/fixtures.rs` (where the streams are).
//! - `skipped(what: &str)`: prints `SKIPPED: <what>` past the test
//!   harness's output capture.
//! - `require_or_skip(test: &str) -> bool`: true = go ahead.  Otherwise prints
//!   `SKIPPED: <test>: <reason>` to stderr and returns false, or panics when
//!   `PROTO_STREAM_REQUIRE_BTRFS=1` and the reason is anything but missing loop
//!   device support.
//! - `Scratch::new() -> Result<Scratch, String>`: sparse 512 MiB image in a fresh
//!   temporary directory, `mkfs.btrfs -q`, `mount -o loop`.  `Drop` unmounts
//!   (`umount`, falling back to `umount -l`) and deletes the directory, also while
//!   unwinding from a panic.
//!   - `path(&self) -> &Path`: the mount point.
//!   - `receive(&self, stream: &[u8]) -> Result<(), String>`: `btrfs receive MNT`
//!     with `stream` on stdin (no `-e`, so concatenated streams work); the error
//!     carries the exit status, stderr and stdout.
//!   - `receive_with(&self, args: &[&str], stream: &[u8]) -> Result<Output, String>`:
//!     extra arguments before the directory; returns the output whatever the exit
//!     status (for tests that expect receive to fail).  `Err` only if it could not run.
//!   - `set_writable(&self, subvol: &str) -> Result<(), String>`: clears the
//!     read-only property of a received subvolume so a test can mutate it.
//! - `run(program, args, stdin) -> Result<Output, String>` / `run_ok(..) ->
//!   Result<Output, String>`: any external command, under `timeout`.
//! - `tree(root: &Path) -> Result<Tree, String>`: the listing (see `Entry`).
//!   `Tree` is `Debug + PartialEq + Eq + Clone`; `Tree::diff(&self, &Tree) ->
//!   Option<String>` names the first differing path and field;
//!   `Tree::diffs(&self, &Tree) -> Vec<String>` lists every difference;
//!   `Tree::get(&self, path) -> Option<&Entry>`;
//!   `Tree::check_find_listing(&self, text: &str) -> Result<(), String>` checks
//!   the tree against `find -printf '%y %m %s %p\n'` output (the fixtures'
//!   `snap*.tree`).
//!
//! # What the listing holds
//!
//! Per entry, sorted by relative path (component order; the root itself is `.`):
//! file type, full `st_mode`, uid, gid, size, nlink, mtime (s + ns), rdev (char and
//! block devices only), SHA-256 of the content (regular files; holes read as zeros),
//! symlink target, every xattr name and value the kernel lists to root (all
//! namespaces: `user.*`, `trusted.*`, `security.*`, `system.posix_acl_*`; nothing is
//! filtered), and a hard-link group: entries sharing an inode get the same group id,
//! namely the first of their paths in path order (`None` for an inode seen once), so
//! raw inode numbers never enter the comparison and breaking one link does not
//! renumber every later entry.
//!
//! mtime is kept: `btrfs receive` sets it with utimes from the stream, and it was
//! found identical across filesystems, protocol 1 vs 2, and full+incremental
//! (tests/receive_fixtures.rs).  It is compared last, so a real change (which also
//! bumps mtime) is reported by its own field first.
//!
//! Left out, on purpose:
//! - atime: reading a file to hash it (or a directory to list it) may update atime
//!   (relatime updates it when it is older than ctime, and ctime is the receive time),
//!   so it is not stable.
//! - ctime, birth time, inode numbers, st_dev, st_blocks: properties of the receiving
//!   filesystem and the moment of receiving, not of the stream.
//! - inode flags (`chattr`/`lsattr`, e.g. NOCOW, which protocol 2 `fileattr` carries),
//!   subvolume UUIDs / received UUID / ro flag: not readable through std; look at
//!   them with `btrfs` commands in a test that needs them.
//!
//! Directory sizes are compared: on btrfs a directory's size is twice the sum of its
//! entries' name lengths, so it is the same on any btrfs that holds the same entries.
//! (Comparing against a tree on another filesystem type would need that dropped.)
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

#[path = "fixtures.rs"]
pub mod fixtures;

/// Seconds any one external command may run before `timeout` kills it.
pub const COMMAND_TIMEOUT_SECS: u32 = 120;

/// Size of the sparse image behind each [`Scratch`] (btrfs needs ~115 MiB at least).
pub const IMAGE_SIZE: u64 = 512 << 20;

/// Environment variable that turns "skip" into "fail" (CI sets it to `1`).
pub const REQUIRE_ENV: &str = "PROTO_STREAM_REQUIRE_BTRFS";

/// Why receiving with the real tool is not possible here.
#[derive(Clone, Debug)]
enum Unavailable {
    /// No loop device support (no `/dev/loop-control`, or setting one up failed).
    /// The only reason a CI run with [`REQUIRE_ENV`] tolerates.
    NoLoop(String),
    /// Anything else (not root, tools missing, no btrfs in the kernel, ...).
    Other(String),
}

impl Unavailable {
    fn reason(&self) -> String {
        match self {
            Unavailable::NoLoop(r) => format!("no loop device support: {r}"),
            Unavailable::Other(r) => r.clone(),
        }
    }
}

fn probe() -> &'static Result<(), Unavailable> {
    static PROBE: OnceLock<Result<(), Unavailable>> = OnceLock::new();
    PROBE.get_or_init(|| {
        if !is_root()? {
            return Err(Unavailable::Other(
                "not running as root (mounting needs it)".into(),
            ));
        }
        for (tool, arg) in [
            ("btrfs", "--version"),
            ("mkfs.btrfs", "--version"),
            ("mount", "--version"),
            ("umount", "--version"),
        ] {
            run_ok(tool, &[arg], None)
                .map_err(|e| Unavailable::Other(format!("`{tool}` unusable: {e}")))?;
        }
        if !Path::new("/dev/loop-control").exists() {
            return Err(Unavailable::NoLoop("/dev/loop-control is missing".into()));
        }
        Scratch::create().map(drop)
    })
}

fn is_root() -> Result<bool, Unavailable> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| Unavailable::Other(format!("cannot read /proc/self/status: {e}")))?;
    // "Uid:\treal\teffective\tsaved\tfs"
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or_else(|| Unavailable::Other("no Uid line in /proc/self/status".into()))?;
    Ok(euid == "0")
}

/// Ok when streams can be received here with the real `btrfs receive`; otherwise
/// the reason.  Probed once per process (including one real loop mount).
pub fn availability() -> Result<(), String> {
    probe().as_ref().map(|_| ()).map_err(Unavailable::reason)
}

/// Whether a test that needs [`Scratch`] should go ahead.
///
/// On `false` a loud `SKIPPED:` line went to stderr and the test should return.
/// Panics instead of skipping when [`REQUIRE_ENV`]`=1`, unless the only problem is
/// missing loop device support.
pub fn require_or_skip(test: &str) -> bool {
    match probe() {
        Ok(()) => true,
        Err(why) => {
            let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
            if required && !matches!(why, Unavailable::NoLoop(_)) {
                panic!(
                    "{test}: real btrfs receive required ({REQUIRE_ENV}=1) but unavailable: {}",
                    why.reason()
                );
            }
            skipped(&format!("{test}: {}", why.reason()));
            false
        }
    }
}

/// The sets of real kernel streams a receive check runs on (see
/// [`fixtures`]: the set shipped in `testdata/btrfs/small/`, then
/// `../shared/fixtures/btrfs/` when it exists), when the real `btrfs
/// receive` can run here: empty after a loud `SKIPPED:` line otherwise (a
/// panic instead when [`REQUIRE_ENV`]`=1`, unless only loop devices are
/// missing).  A missing `../shared` skips nothing.
pub fn fixtures_for(test: &str) -> Vec<PathBuf> {
    if !require_or_skip(test) {
        return Vec::new();
    }
    fixtures::sets()
}

/// Prints `SKIPPED: <what>` on stderr past the test harness's output capture
/// (which takes `eprintln!`, not direct writes), so that a skip shows in the
/// log of a passing run.
pub fn skipped(what: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

fn describe(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs `program args...` under `timeout` (so a hang becomes an error), feeding
/// `stdin` if given.  Returns the output whatever the exit status; `Err` only if it
/// could not be run at all.
pub fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<Output, String> {
    let what = describe(program, args);
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=10")
        .arg(COMMAND_TIMEOUT_SECS.to_string())
        .arg(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("`{what}`: cannot run it under `timeout` (coreutils): {e}"))?;
    let output = std::thread::scope(|s| {
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A separate thread, so a child that writes a lot before reading all of
            // stdin cannot deadlock us.  EPIPE (child stopped reading) is not our
            // error: the exit status tells what happened.
            s.spawn(move || {
                let _ = pipe.write_all(data);
            });
        }
        child.wait_with_output()
    })
    .map_err(|e| format!("`{what}`: {e}"))?;
    if output.status.code() == Some(124) || output.status.code() == Some(137) {
        return Err(format!(
            "`{what}`: timed out after {COMMAND_TIMEOUT_SECS} s ({}); stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    // `timeout` itself failing to start the program.
    if output.status.code() == Some(126) || output.status.code() == Some(127) {
        return Err(format!(
            "`{what}`: cannot run ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output)
}

/// [`run`], and an error (with status, stderr and stdout) unless it exits 0.
pub fn run_ok(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<Output, String> {
    let output = run(program, args, stdin)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "`{}` failed ({}); stderr: {}; stdout: {}",
            describe(program, args),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    }
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("non-UTF-8 path {}", p.display()))
}

/// Serialises mounting and unmounting within this process: concurrent
/// `mount -o loop` calls can race for the same free loop device.
static MOUNT_LOCK: Mutex<()> = Mutex::new(());

fn mount_lock() -> std::sync::MutexGuard<'static, ()> {
    // A panic while holding it poisons it; the lock protects no data, so go on.
    MOUNT_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh btrfs filesystem on a sparse image, loop-mounted in a temporary
/// directory.  Dropping it unmounts and deletes everything.
pub struct Scratch {
    dir: PathBuf,
    mnt: PathBuf,
    mounted: bool,
}

impl Scratch {
    /// Makes and mounts a fresh filesystem.
    pub fn new() -> Result<Scratch, String> {
        Self::create().map_err(|e| e.reason())
    }

    fn create() -> Result<Scratch, Unavailable> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "proto-stream-receive-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let other = |e: String| Unavailable::Other(e);
        fs::create_dir(&dir).map_err(|e| other(format!("mkdir {}: {e}", dir.display())))?;
        // From here on Drop cleans up whatever exists.
        let mut scratch = Scratch {
            mnt: dir.join("mnt"),
            dir,
            mounted: false,
        };
        let img = scratch.dir.join("fs.img");
        fs::create_dir(&scratch.mnt).map_err(|e| other(format!("mkdir: {e}")))?;
        fs::File::create(&img)
            .and_then(|f| f.set_len(IMAGE_SIZE))
            .map_err(|e| other(format!("creating {}: {e}", img.display())))?;
        let img_s = path_str(&img).map_err(other)?.to_string();
        let mnt_s = path_str(&scratch.mnt).map_err(other)?.to_string();
        run_ok("mkfs.btrfs", &["-q", &img_s], None).map_err(other)?;

        let _guard = mount_lock();
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            match run_ok("mount", &["-o", "loop", &img_s, &mnt_s], None) {
                Ok(_) => {
                    scratch.mounted = true;
                    return Ok(scratch);
                }
                Err(e) => last = e,
            }
        }
        // util-linux says e.g. "failed to setup loop device for ...".
        if last.to_lowercase().contains("loop device") {
            Err(Unavailable::NoLoop(last))
        } else {
            Err(Unavailable::Other(last))
        }
    }

    /// The mount point (the top-level subvolume); received subvolumes appear in it.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// `btrfs receive MNT` with `stream` on stdin.  Reads to end of input (no `-e`),
    /// so several concatenated streams are received in turn.
    pub fn receive(&self, stream: &[u8]) -> Result<(), String> {
        let output = self.receive_with(&[], stream)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "btrfs receive failed ({}); stderr: {}; stdout: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim()
            ))
        }
    }

    /// `btrfs receive ARGS... MNT` with `stream` on stdin; the output whatever the
    /// exit status (`Err` only if it could not run or timed out).
    pub fn receive_with(&self, args: &[&str], stream: &[u8]) -> Result<Output, String> {
        let mnt = path_str(&self.mnt)?;
        let mut all = vec!["receive"];
        all.extend_from_slice(args);
        all.push(mnt);
        run("btrfs", &all, Some(stream))
    }

    /// Makes the received (read-only) subvolume `subvol` (relative to the mount
    /// point) writable, so a test can change it.  Needs `-f`: btrfs-progs refuses
    /// to flip ro -> rw on a subvolume with a received UUID otherwise.
    pub fn set_writable(&self, subvol: &str) -> Result<(), String> {
        let p = self.mnt.join(subvol);
        run_ok(
            "btrfs",
            &["property", "set", "-f", "-ts", path_str(&p)?, "ro", "false"],
            None,
        )
        .map(drop)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            let _guard = mount_lock();
            let mnt = self.mnt.to_string_lossy().into_owned();
            let ok = run_ok("umount", &[&mnt], None).is_ok()
                || run_ok("umount", &["-l", &mnt], None).is_ok();
            if !ok {
                // Never delete below a live mount point: that would delete inside the
                // mounted filesystem rather than the image.
                eprintln!("receive support: could not unmount {mnt}; leaving it");
                return;
            }
        }
        // After `umount -l` the loop device lets go of the (deleted) image once the
        // filesystem is no longer busy.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What kind of file an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
}

impl Kind {
    fn of(ft: fs::FileType) -> Kind {
        if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else if ft.is_char_device() {
            Kind::CharDev
        } else {
            Kind::BlockDev
        }
    }

    /// The letter `find -printf %y` uses.
    pub fn find_letter(self) -> char {
        match self {
            Kind::Dir => 'd',
            Kind::File => 'f',
            Kind::Symlink => 'l',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
            Kind::CharDev => 'c',
            Kind::BlockDev => 'b',
        }
    }
}

/// Bytes shown as text where printable, hex otherwise.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) if !s.chars().any(char::is_control) => write!(f, "{s:?}"),
            _ => {
                f.write_str("0x")?;
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// SHA-256 of a regular file's content.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sha256Digest(pub [u8; 32]);

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// One entry of a [`Tree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the tree's root; `.` is the root itself.
    pub path: PathBuf,
    /// File type.
    pub kind: Kind,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `st_size`.
    pub size: u64,
    /// `st_nlink`.
    pub nlink: u64,
    /// Modification time, seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// `st_rdev`, for character and block devices only.
    pub rdev: Option<u64>,
    /// Content digest, for regular files only.
    pub content: Option<Sha256Digest>,
    /// Link target, for symlinks only.
    pub target: Option<Bytes>,
    /// Every xattr, name to value.
    pub xattrs: BTreeMap<Bytes, Bytes>,
    /// Hard-link group, for an inode that appears under more than one path in the
    /// tree: the first of those paths (in path order), the same for all of them.
    /// `None` for an inode seen once.  (Raw inode numbers are never compared.)
    pub link_group: Option<PathBuf>,
}

/// Deterministic listing of a directory tree; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    /// Entries sorted by path.
    pub entries: Vec<Entry>,
}

/// Lists everything under `root` (which is included, as `.`).
pub fn tree(root: &Path) -> Result<Tree, String> {
    let mut paths = Vec::new();
    walk(root, Path::new("."), &mut paths)?;
    paths.sort();
    // (st_dev, st_ino) per entry, to find hard links.
    let mut inodes = Vec::with_capacity(paths.len());
    let mut entries = Vec::with_capacity(paths.len());
    for rel in paths {
        let full = if rel == Path::new(".") {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let md =
            fs::symlink_metadata(&full).map_err(|e| format!("stat {}: {e}", full.display()))?;
        let kind = Kind::of(md.file_type());
        inodes.push((md.dev(), md.ino()));
        let content = match kind {
            Kind::File => Some(digest(&full)?),
            _ => None,
        };
        let target = match kind {
            Kind::Symlink => Some(Bytes(
                fs::read_link(&full)
                    .map_err(|e| format!("readlink {}: {e}", full.display()))?
                    .into_os_string()
                    .as_bytes()
                    .to_vec(),
            )),
            _ => None,
        };
        let rdev = matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| md.rdev());
        entries.push(Entry {
            kind,
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            nlink: md.nlink(),
            mtime: (md.mtime(), md.mtime_nsec()),
            rdev,
            content,
            target,
            xattrs: xattrs(&full)?,
            link_group: None,
            path: rel,
        });
    }
    // inode -> (index of its first entry, number of entries)
    let mut seen: HashMap<(u64, u64), (usize, usize)> = HashMap::new();
    for (i, key) in inodes.iter().enumerate() {
        seen.entry(*key).or_insert((i, 0)).1 += 1;
    }
    for (i, key) in inodes.iter().enumerate() {
        let (first, count) = seen[key];
        if count > 1 {
            entries[i].link_group = Some(entries[first].path.clone());
        }
    }
    Ok(Tree { entries })
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    out.push(rel.to_path_buf());
    let full = root.join(rel);
    let md = fs::symlink_metadata(&full).map_err(|e| format!("stat {}: {e}", full.display()))?;
    if md.is_dir() {
        for item in fs::read_dir(&full).map_err(|e| format!("readdir {}: {e}", full.display()))? {
            let item = item.map_err(|e| format!("readdir {}: {e}", full.display()))?;
            let child = if rel == Path::new(".") {
                PathBuf::from(item.file_name())
            } else {
                rel.join(item.file_name())
            };
            walk(root, &child, out)?;
        }
    }
    Ok(())
}

fn digest(path: &Path) -> Result<Sha256Digest, String> {
    let mut f = fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Sha256Digest(h.finalize().into()))
}

fn xattrs(path: &Path) -> Result<BTreeMap<Bytes, Bytes>, String> {
    // `xattr::list`/`get` do not follow symlinks (llistxattr/lgetxattr), so a
    // symlink's own xattrs are listed, and fifos are never opened.
    let mut out = BTreeMap::new();
    let names = xattr::list(path).map_err(|e| format!("listxattr {}: {e}", path.display()))?;
    for name in names {
        let value = xattr::get(path, &name)
            .map_err(|e| format!("getxattr {} {:?}: {e}", path.display(), name))?
            .unwrap_or_default();
        out.insert(Bytes(name.as_bytes().to_vec()), Bytes(value));
    }
    Ok(out)
}

impl Tree {
    /// The entry at `path` (relative; `.` for the root).
    pub fn get(&self, path: impl AsRef<Path>) -> Option<&Entry> {
        let p = path.as_ref();
        self.entries.iter().find(|e| e.path == p)
    }

    /// The first difference between `self` (left) and `other` (right), naming the
    /// path and the field; `None` when equal.
    pub fn diff(&self, other: &Tree) -> Option<String> {
        self.diffs(other).into_iter().next()
    }

    /// Every difference, in path order, one line each: `PATH: only on the left`,
    /// `PATH: only on the right`, or `PATH: FIELD LEFT vs RIGHT` (one line per
    /// differing field; fields in the order of [`Entry`], mtime last).
    pub fn diffs(&self, other: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        let (mut a, mut b) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
        loop {
            let order = match (a.peek(), b.peek()) {
                (None, None) => return out,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => x.path.cmp(&y.path),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let x = a.next().expect("peeked");
                    out.push(format!("{}: only on the left", x.path.display()));
                }
                std::cmp::Ordering::Greater => {
                    let y = b.next().expect("peeked");
                    out.push(format!("{}: only on the right", y.path.display()));
                }
                std::cmp::Ordering::Equal => {
                    let (x, y) = (a.next().expect("peeked"), b.next().expect("peeked"));
                    for d in entry_diffs(x, y) {
                        out.push(format!("{}: {d}", x.path.display()));
                    }
                }
            }
        }
    }

    /// Checks the tree against `find . -printf '%y %m %s %p\n'` output: the same
    /// paths, and per path the type and permission bits, and the size of regular
    /// files and symlinks.  Directory sizes are not compared: they depend on the
    /// filesystem (and on btrfs, for a subvolume root, on history).
    pub fn check_find_listing(&self, listing: &str) -> Result<(), String> {
        let mut expected = BTreeMap::new();
        for line in listing.lines().filter(|l| !l.trim().is_empty()) {
            let mut it = line.splitn(4, ' ');
            let (Some(y), Some(m), Some(s), Some(p)) = (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(format!("bad listing line {line:?}"));
            };
            let mode = u32::from_str_radix(m, 8).map_err(|e| format!("{line:?}: mode: {e}"))?;
            let size: u64 = s.parse().map_err(|e| format!("{line:?}: size: {e}"))?;
            let path = match p.strip_prefix("./") {
                Some(rest) => PathBuf::from(rest),
                None => PathBuf::from(p),
            };
            expected.insert(path, (y.to_string(), mode, size));
        }
        let actual: BTreeMap<&Path, &Entry> =
            self.entries.iter().map(|e| (e.path.as_path(), e)).collect();
        for p in expected.keys() {
            if !actual.contains_key(p.as_path()) {
                return Err(format!("{}: listed but not in the tree", p.display()));
            }
        }
        for (p, e) in &actual {
            let Some((y, mode, size)) = expected.get(*p) else {
                return Err(format!("{}: in the tree but not listed", p.display()));
            };
            let letter = e.kind.find_letter().to_string();
            if *y != letter {
                return Err(format!("{}: type {letter}, listed {y}", p.display()));
            }
            if e.mode & 0o7777 != *mode {
                return Err(format!(
                    "{}: mode {:o}, listed {mode:o}",
                    p.display(),
                    e.mode & 0o7777
                ));
            }
            if matches!(e.kind, Kind::File | Kind::Symlink) && e.size != *size {
                return Err(format!("{}: size {}, listed {size}", p.display(), e.size));
            }
        }
        Ok(())
    }
}

fn entry_diffs(x: &Entry, y: &Entry) -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! field {
        ($name:ident, $fmt:literal) => {
            if x.$name != y.$name {
                out.push(format!(
                    concat!(stringify!($name), " ", $fmt, " vs ", $fmt),
                    x.$name, y.$name
                ));
            }
        };
    }
    field!(kind, "{:?}");
    field!(mode, "{:o}");
    field!(uid, "{}");
    field!(gid, "{}");
    field!(size, "{}");
    field!(nlink, "{}");
    macro_rules! optional {
        ($name:ident) => {
            if x.$name != y.$name {
                let show =
                    |v: &Option<_>| v.as_ref().map_or("none".to_string(), |v| format!("{v:?}"));
                out.push(format!(
                    concat!(stringify!($name), " {} vs {}"),
                    show(&x.$name),
                    show(&y.$name)
                ));
            }
        };
    }
    optional!(rdev);
    optional!(content);
    optional!(target);
    for (k, v) in &x.xattrs {
        match y.xattrs.get(k) {
            None => out.push(format!("xattr {k:?} only on the left")),
            Some(w) if w != v => out.push(format!("xattr {k:?} {v:?} vs {w:?}")),
            Some(_) => {}
        }
    }
    for k in y.xattrs.keys().filter(|k| !x.xattrs.contains_key(*k)) {
        out.push(format!("xattr {k:?} only on the right"));
    }
    if x.link_group != y.link_group {
        let show = |g: &Option<PathBuf>| {
            g.as_ref().map_or("none".to_string(), |p| {
                format!("{:?}", p.display().to_string())
            })
        };
        out.push(format!(
            "link_group {} vs {}",
            show(&x.link_group),
            show(&y.link_group)
        ));
    }
    field!(mtime, "{:?}");
    out
}
