//! `apply STREAM DIR` against the real `btrfs receive`: every real kernel
//! stream set (`testdata/btrfs/small/`, and `../shared/fixtures/btrfs/`
//! when present) applied into tmpfs and into ext4 gives the tree `btrfs
//! receive` makes on btrfs (contents, type, mode, owner, size, symlink
//! target, hard links, user xattrs, mtimes); and killed after any command
//! (`--crash-after N`, SIGKILL), then run again, it ends with the identical
//! tree.
//!
//! Needs root, loop devices and btrfs-progs (`scripts/test` installs it);
//! without them it says SKIPPED, loudly.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../../tests/support/receive.rs"]
mod support;

mod common;
use common::TempDir;
use support::{fixtures, tree, Kind, Scratch, Tree};

const BIN: &str = env!("CARGO_BIN_EXE_proto-stream");

/// `proto-stream ARGS` with `stdin`, waited for at most a minute.
fn cli(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&data);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("proto-stream {args:?}: still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.wait_with_output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[track_caller]
fn apply_ok(args: &[&str], stdin: Option<&[u8]>) {
    let out = cli(args, stdin);
    assert!(
        out.status.success(),
        "apply {args:?}: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A filesystem mounted for one test, unmounted and removed when dropped.
struct Mounted {
    _dir: TempDir,
    mnt: PathBuf,
}

impl Mounted {
    fn tmpfs() -> Mounted {
        let dir = TempDir::new("apply-tmpfs");
        let mnt = dir.path("mnt");
        std::fs::create_dir(&mnt).unwrap();
        support::run_ok(
            "mount",
            &["-t", "tmpfs", "-o", "size=1g", "tmpfs", s(&mnt)],
            None,
        )
        .unwrap();
        Mounted { _dir: dir, mnt }
    }

    fn ext4() -> Mounted {
        let dir = TempDir::new("apply-ext4");
        let img = dir.path("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        support::run_ok("mkfs.ext4", &["-q", "-F", s(&img)], None).unwrap();
        let mnt = dir.path("mnt");
        std::fs::create_dir(&mnt).unwrap();
        support::run_ok("mount", &["-o", "loop", s(&img), s(&mnt)], None).unwrap();
        Mounted { _dir: dir, mnt }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let m = s(&self.mnt).to_string();
        if support::run_ok("umount", &[&m], None).is_err() {
            let _ = support::run_ok("umount", &["-l", &m], None);
        }
    }
}

/// What must be equal across filesystems: directory sizes and link counts
/// are each filesystem's own, and only user xattrs travel in streams
/// (`security.*` labels are the target's).
fn comparable(mut t: Tree) -> Tree {
    for e in &mut t.entries {
        if e.kind == Kind::Dir {
            e.size = 0;
            e.nlink = 0;
        }
        e.xattrs.retain(|k, _| k.0.starts_with(b"user."));
    }
    t
}

#[track_caller]
fn assert_same(want: &Tree, got: &Tree, what: &str) {
    if let Some(d) = want.diff(got) {
        panic!("{what}: trees differ (left: btrfs receive / uninterrupted, right: apply): {d}");
    }
    assert_eq!(want, got, "{what}: diff found nothing but the trees differ");
}

/// The received trees in `dir` (every entry but apply's records), by name.
fn trees(dir: &Path) -> Vec<(String, Tree)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".proto-stream" && n != "lost+found")
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = comparable(tree(&dir.join(&n)).unwrap());
            (n, t)
        })
        .collect()
}

/// The stream sequences of a set, each applied into a fresh directory.
const SEQUENCES: &[&[&str]] = &[
    &["full-v1", "incr-v1"],
    &["full-v2", "incr-v2"],
    &["compressed-v2"],
    &["nodata-v2"],
];

fn read(set: &Path, name: &str) -> Vec<u8> {
    std::fs::read(set.join(format!("{name}.stream"))).unwrap()
}

#[test]
fn apply_gives_the_tree_btrfs_receive_makes_on_tmpfs_and_ext4() {
    for set in support::fixtures_for("apply_gives_the_tree_btrfs_receive_makes_on_tmpfs_and_ext4") {
        for seq in SEQUENCES {
            let what = format!("{} {seq:?}", fixtures::label(&set));
            let scratch = Scratch::new().unwrap();
            for name in *seq {
                scratch
                    .receive(&read(&set, name))
                    .unwrap_or_else(|e| panic!("{what}: btrfs receive {name}: {e}"));
            }
            let want = trees(scratch.path());
            assert!(!want.is_empty(), "{what}: btrfs receive made nothing");
            for (fs, target) in [("tmpfs", Mounted::tmpfs()), ("ext4", Mounted::ext4())] {
                for name in *seq {
                    let stream = set.join(format!("{name}.stream"));
                    apply_ok(&["apply", s(&stream), s(&target.mnt)], None);
                }
                let got = trees(&target.mnt);
                let names =
                    |t: &[(String, Tree)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
                assert_eq!(names(&want), names(&got), "{what} on {fs}: received trees");
                for ((n, w), (_, g)) in want.iter().zip(&got) {
                    assert_same(w, g, &format!("{what} on {fs}: {n}"));
                }
                // Nothing but the trees and the records; the journal is gone.
                assert!(!target.mnt.join(".proto-stream/apply.journal").exists());
            }
        }
    }
}

/// Every set's v2 streams concatenated (one input, two streams).
fn both_v2(set: &Path) -> Vec<u8> {
    let mut input = read(set, "full-v2");
    input.extend(read(set, "incr-v2"));
    input
}

fn command_count(input: &[u8]) -> u64 {
    let out = cli(&["verify", "--json", "-"], Some(input));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["commands"]
        .as_u64()
        .expect("verify --json gives commands")
}

#[test]
fn a_crash_after_any_command_then_a_rerun_gives_the_identical_tree() {
    for set in
        support::fixtures_for("a_crash_after_any_command_then_a_rerun_gives_the_identical_tree")
    {
        let label = fixtures::label(&set);
        let input = both_v2(&set);
        let n = command_count(&input);
        let fs = Mounted::tmpfs();
        let reference = fs.mnt.join("reference");
        std::fs::create_dir(&reference).unwrap();
        apply_ok(&["apply", "-", s(&reference)], Some(&input));
        let want = trees(&reference);
        assert_eq!(want.len(), 2, "{label}: snap1 and snap2");
        for sync_every in ["0", "3"] {
            for k in 1..n {
                let what = format!("{label}: crash after {k} of {n}, --sync-every {sync_every}");
                let dir = fs.mnt.join(format!("k{k}-s{sync_every}"));
                std::fs::create_dir(&dir).unwrap();
                let crash = k.to_string();
                let args = ["apply", "-", s(&dir), "--sync-every", sync_every];
                let mut with_crash = args.to_vec();
                with_crash.extend(["--crash-after", &crash]);
                let out = cli(&with_crash, Some(&input));
                assert_eq!(
                    out.status.signal(),
                    Some(9),
                    "{what}: killed as asked; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let out = cli(&[&args[..], &["--json"]].concat(), Some(&input));
                assert!(
                    out.status.success(),
                    "{what}: rerun: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(v["commands"], n, "{what}");
                let resumed = v["resumed_at"]["command"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{what}: resumed: {v}"));
                // It continued from a point at or before the crash (the
                // commands after the last recorded point run again).
                assert!(resumed <= k, "{what}: resumed at {resumed}");
                assert_eq!(v["skipped"], resumed, "{what}");
                assert_same_trees(&want, &trees(&dir), &what);
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
        // Crashing again and again, every 17 commands, until it finishes:
        // the position is recorded at least every 16.
        let dir = fs.mnt.join("repeated");
        std::fs::create_dir(&dir).unwrap();
        let mut runs = 0;
        loop {
            runs += 1;
            assert!(runs <= n, "{label}: no end after {runs} runs");
            let out = cli(
                &["apply", "-", s(&dir), "--crash-after", "17"],
                Some(&input),
            );
            if out.status.success() {
                break;
            }
            assert_eq!(
                out.status.signal(),
                Some(9),
                "{label}: run {runs}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(runs > n / 17, "{label}: {runs} runs for {n} commands");
        assert_same_trees(
            &want,
            &trees(&dir),
            &format!("{label}: crashed every 17 commands"),
        );
    }
}

#[track_caller]
fn assert_same_trees(want: &[(String, Tree)], got: &[(String, Tree)], what: &str) {
    let names = |t: &[(String, Tree)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(want), names(got), "{what}: received trees");
    for ((n, w), (_, g)) in want.iter().zip(got) {
        assert_same(w, g, &format!("{what}: {n}"));
    }
}

#[test]
fn another_stream_into_an_unfinished_apply_is_refused() {
    if !support::require_or_skip("another_stream_into_an_unfinished_apply_is_refused") {
        return;
    }
    let set = fixtures::shipped_set();
    let dir = TempDir::new("apply-other");
    let out = cli(
        &[
            "apply",
            s(&set.join("full-v2.stream")),
            s(&dir.0),
            "--crash-after",
            "20",
        ],
        None,
    );
    assert_eq!(out.status.signal(), Some(9));
    let out = cli(&["apply", s(&set.join("full-v1.stream")), s(&dir.0)], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("an unfinished apply of another stream") && err.contains("apply.journal"),
        "{err}"
    );
    // The right stream finishes it.
    apply_ok(&["apply", s(&set.join("full-v2.stream")), s(&dir.0)], None);
    // Applied once more, the subvolume exists, as for btrfs receive.
    let out = cli(&["apply", s(&set.join("full-v2.stream")), s(&dir.0)], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("command 0 (subvol)") && err.contains("exists"),
        "{err}"
    );
}
