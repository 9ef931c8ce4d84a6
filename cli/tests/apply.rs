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

mod gen;
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
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".proto-stream" && n != "lost+found")
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = comparable(tree(&dir.join(&n)).unwrap());
            (n.to_string_lossy().into_owned(), t)
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

/// Builds, on the btrfs at `$1`, a subvolume through three states that
/// stress what an incremental stream must get right, with a read-only
/// snapshot of each (`s0`, `s1`, `s2`).
const STRESS: &str = r#"
set -eu
cd "$1"
btrfs -q subvolume create vol
cd vol
# s0: a deep tree, unicode and 255-byte names, holes, reflinks, hard links,
# big xattrs, device nodes, a FIFO, a socket, symlinks.
p=.; for i in $(seq 1 40); do p=$p/d$i; done; mkdir -p "$p"; echo deep > "$p/leaf"
mkdir -p 'uni/héllo wörld ☃' swap1 swap2 cyc/a cyc/b gone/sub
echo unicode > 'uni/héllo wörld ☃/файл'
long=$(printf 'n%.0s' $(seq 1 255)); echo long > "uni/$long"
printf 'start' > sparse; dd if=/dev/urandom of=sparse bs=4096 seek=2560 count=3 conv=notrunc status=none
dd if=/dev/urandom of=big bs=64K count=20 status=none
cp --reflink=always big big-clone
echo one > swap1/f; echo two > swap2/f
echo x > cyc/a/x; echo y > cyc/b/y
echo linked > hl; mkdir hd; ln hl hd/hl2
echo file > fdir; mkdir dfile; echo in > dfile/in
echo gone > gone/sub/f; echo keep > gone/keep
setfattr -n user.small -v value hl
setfattr -n user.big -v "0s$(head -c 3000 /dev/urandom | base64 -w0)" big
mknod chr c 1 3; mknod blk b 7 0; mkfifo fifo
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' sock
ln -s 'uni/héllo wörld ☃' to-uni; ln -s /nonexistent/abs dangling
chown 1000:1000 hl; chmod 4755 big; touch -d '2001-02-03 04:05:06.123456789' swap1/f
cd ..; sync; btrfs -q subvolume snapshot -r vol s0; cd vol
# s1: swaps and cycles, a file replaced by a directory and back, hard links
# across renames, an orphaned tree, holes punched, clones from s0's data.
mv swap1 tmp; mv swap2 swap1; mv tmp swap2
mv cyc/a/x cyc/b/x2; mv cyc/a cyc/b/a; mv cyc/b cyc/c; mv cyc/c/a cyc/a
rm fdir; mkdir fdir; echo now-dir > fdir/f
rm -r dfile; echo now-file > dfile
mkdir moved; mv hl moved/hl; ln moved/hl hl-again; rm hd/hl2
mv gone/keep kept; rm -r gone
fallocate -p -o 4096 -l 8192 big; truncate -s 5000 sparse
dd if=/dev/urandom of=sparse bs=4096 seek=5000 count=1 conv=notrunc status=none
cp --reflink=always big-clone big-clone2
setfattr -x user.small moved/hl; setfattr -n user.new -v v2 moved/hl
chmod 700 uni; chown 1234:5678 kept
for i in $(seq 1 30); do echo "$i" > "many-$i"; done
cd ..; sync; btrfs -q subvolume snapshot -r vol s1; cd vol
# s2: the swap again the other way, directories deep inside renamed
# above their parents, many files removed, a name reused for a new inode.
mv swap2 tmp; mv swap1 swap2; mv tmp swap1
mv d1/d2/d3 d3-up; mv d1 d3-up/d1-under
rm many-*; echo reused > many-1
ln -s kept kept-link; rm kept; echo other > kept
cd ..; sync; btrfs -q subvolume snapshot -r vol s2
"#;

#[test]
fn apply_of_kernel_streams_of_hard_cases_gives_btrfs_receives_tree() {
    if !support::require_or_skip("apply_of_kernel_streams_of_hard_cases_gives_btrfs_receives_tree")
    {
        return;
    }
    let src = Scratch::new().unwrap();
    support::run_ok("bash", &["-c", STRESS, "stress", s(src.path())], None).unwrap();
    let send = |args: &[&str]| -> Vec<u8> {
        let mut all = vec!["send", "-q"];
        all.extend_from_slice(args);
        support::run_ok("btrfs", &all, None).unwrap().stdout
    };
    let p = |n: &str| src.path().join(n).to_str().unwrap().to_string();
    for proto in ["1", "2"] {
        let streams = [
            send(&["--proto", proto, &p("s0")]),
            send(&["--proto", proto, "-p", &p("s0"), &p("s1")]),
            send(&["--proto", proto, "-p", &p("s1"), &p("s2")]),
        ];
        let what = format!("proto {proto}");
        let dst = Scratch::new().unwrap();
        for st in &streams {
            dst.receive(st)
                .unwrap_or_else(|e| panic!("{what}: btrfs receive: {e}"));
        }
        let want = trees(dst.path());
        assert_eq!(want.len(), 3, "{what}: s0, s1, s2");
        for (fs, target) in [("tmpfs", Mounted::tmpfs()), ("ext4", Mounted::ext4())] {
            for st in &streams {
                apply_ok(&["apply", "-", s(&target.mnt)], Some(st));
            }
            assert_same_trees(&want, &trees(&target.mnt), &format!("{what} on {fs}"));
        }
        // Killed after any command of the incremental streams, then run
        // again: the same trees (for v2; v1 differs in data commands only).
        if proto == "1" {
            continue;
        }
        let fs = Mounted::tmpfs();
        for (i, st) in streams.iter().enumerate().skip(1) {
            let n = command_count(st);
            let base = fs.mnt.join(format!("base{i}"));
            std::fs::create_dir(&base).unwrap();
            for prev in &streams[..i] {
                apply_ok(&["apply", "-", s(&base)], Some(prev));
            }
            for k in 1..n {
                let what = format!("{what}: stream {i}, crash after {k} of {n}");
                let dir = fs.mnt.join("crash");
                support::run_ok("cp", &["-a", s(&base), s(&dir)], None).unwrap();
                let crash = k.to_string();
                let out = cli(&["apply", "-", s(&dir), "--crash-after", &crash], Some(st));
                assert_eq!(
                    out.status.signal(),
                    Some(9),
                    "{what}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                apply_ok(&["apply", "-", s(&dir)], Some(st));
                let got = trees(&dir);
                let want: Vec<_> = want[..=i].to_vec();
                assert_same_trees(&want, &got, &what);
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    }
}

/// Whether an apply error is one of apply's own refusals, of what `btrfs
/// receive` carries out without a second thought: a path with `.` or `..`,
/// a NUL byte (btrfs-progs cuts the path there), a path through a symlink,
/// a write to what is not a regular file, a chmod through a symlink, a
/// subvolume name that is not one component, an owner that does not fit
/// 32 bits (btrfs-progs cuts it).
fn strict_refusal(err: &str) -> bool {
    [
        "refused path",
        "only regular files",
        "chmod of a symlink",
        "Too many levels of symbolic links",
        "is out of range",
    ]
    .iter()
    .any(|s| err.contains(s))
}

#[test]
fn random_streams_apply_where_btrfs_receive_does() {
    if !support::require_or_skip("random_streams_apply_where_btrfs_receive_does") {
        return;
    }
    let progs = Scratch::new().unwrap();
    let ours = Mounted::tmpfs();
    let (mut both_ok, mut both_fail, mut refused) = (0, 0, Vec::new());
    let mut failures = Vec::new();
    // Random bytes in every field (they fail early, in both), then streams
    // a receiver can mostly carry out.
    for seed in 1..=400u64 {
        let st = if seed <= 100 {
            gen::random_stream(seed)
        } else {
            gen::valid_stream(seed)
        };
        let (a, b) = (
            progs.path().join(format!("r{seed}")),
            ours.mnt.join(format!("r{seed}")),
        );
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let theirs = support::run("btrfs", &["receive", s(&a)], Some(&st)).unwrap();
        let mine = cli(&["apply", "-", s(&b)], Some(&st));
        let err = String::from_utf8_lossy(&mine.stderr).into_owned();
        match (theirs.status.success(), mine.status.success()) {
            (true, true) => {
                both_ok += 1;
                // For some, a crash after every third command, then a rerun.
                if both_ok <= 12 && seed > 100 {
                    crash_and_rerun(&st, &b, &ours.mnt.join(format!("c{seed}")), 3);
                }
                let (ta, tb) = (trees(&a), trees(&b));
                if ta != tb {
                    let kept =
                        std::env::temp_dir().join(format!("apply-differs-seed-{seed}.stream"));
                    std::fs::write(&kept, &st).unwrap();
                    failures.push(format!(
                        "seed {seed}: both applied it, trees differ: {:?} (the stream: {})",
                        ta.iter().zip(&tb).find_map(|((_, x), (_, y))| x.diff(y)),
                        kept.display()
                    ));
                }
            }
            // Apply refused what btrfs receive carries out (see
            // `strict_refusal`), whether btrfs receive failed later or not.
            (_, false) if strict_refusal(&err) => refused.push(seed),
            (false, false) => {
                both_fail += 1;
                // Both stop at the same command: what each made before it
                // is the same (but for times, which the stream sets last).
                let untimed = |t: Vec<(String, Tree)>| {
                    t.into_iter()
                        .map(|(n, mut t)| {
                            t.entries.iter_mut().for_each(|e| e.mtime = (0, 0));
                            (n, t)
                        })
                        .collect::<Vec<_>>()
                };
                let (ta, tb) = (untimed(trees(&a)), untimed(trees(&b)));
                if ta != tb {
                    failures.push(format!(
                        "seed {seed}: both fail, having made different trees: {:?}; apply said {}; btrfs receive said {}",
                        ta.iter().zip(&tb).find_map(|((_, x), (_, y))| x.diff(y)).or(Some(format!("{} vs {} trees", ta.len(), tb.len()))),
                        err.trim(),
                        String::from_utf8_lossy(&theirs.stderr).trim()
                    ));
                }
            }
            (t, m) => failures.push(format!(
                "seed {seed}: btrfs receive {}, apply {}: {}; btrfs receive said {}",
                if t { "succeeds" } else { "fails" },
                if m { "succeeds" } else { "fails" },
                err.trim(),
                String::from_utf8_lossy(&theirs.stderr).trim()
            )),
        }
    }
    eprintln!(
        "random streams: {both_ok} applied by both, {both_fail} refused by both at the same point, {} refused by apply's stricter checks (seeds {refused:?})",
        refused.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Applies `st` into `scratch` killed after command k (every `step`-th),
/// then again: the trees are those of `reference`, the uninterrupted apply.
fn crash_and_rerun(st: &[u8], reference: &Path, scratch: &Path, step: usize) {
    let want = trees(reference);
    let n = command_count(st);
    for k in (1..n).step_by(step) {
        let what = format!("{}: crash after {k} of {n}", scratch.display());
        std::fs::create_dir(scratch).unwrap();
        let crash = k.to_string();
        let out = cli(
            &["apply", "-", s(scratch), "--crash-after", &crash],
            Some(st),
        );
        if out.status.success() {
            // Fewer commands carried out than k (the stream ended first).
            std::fs::remove_dir_all(scratch).unwrap();
            continue;
        }
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        apply_ok(&["apply", "-", s(scratch)], Some(st));
        assert_same_trees(&want, &trees(scratch), &what);
        std::fs::remove_dir_all(scratch).unwrap();
    }
}

#[test]
fn compressed_extents_of_every_algorithm_are_written_decompressed() {
    if !support::require_or_skip("compressed_extents_of_every_algorithm_are_written_decompressed") {
        return;
    }
    // BTRFS_ENCODED_IO_COMPRESSION_*: zlib 1, zstd 2, lzo with 4 KiB sectors 3.
    for (algo, code) in [("zlib", 1), ("zstd", 2), ("lzo", 3)] {
        let dir = TempDir::new(&format!("apply-{algo}"));
        let img = dir.path("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        support::run_ok("mkfs.btrfs", &["-q", s(&img)], None).unwrap();
        let mnt = dir.path("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let opt = format!("loop,compress-force={algo}");
        support::run_ok("mount", &["-o", &opt, s(&img), s(&mnt)], None).unwrap();
        let script = r#"
            set -eu; cd "$1"; btrfs -q subvolume create v
            seq 1 40000 > v/text; head -c 300000 /dev/urandom | base64 > v/b64
            printf 'tail' | dd of=v/text bs=1 seek=1000000 conv=notrunc status=none
            sync; btrfs -q subvolume snapshot -r v s
        "#;
        let made = support::run_ok("bash", &["-c", script, "compressed", s(&mnt)], None);
        let stream = made.and_then(|_| {
            support::run_ok(
                "btrfs",
                &[
                    "send",
                    "-q",
                    "--proto",
                    "2",
                    "--compressed-data",
                    s(&mnt.join("s")),
                ],
                None,
            )
        });
        let _ = support::run_ok("umount", &[s(&mnt)], None);
        let stream = stream.unwrap().stdout;
        let dump = cli(&["dump", "-"], Some(&stream));
        let dump = String::from_utf8_lossy(&dump.stdout);
        assert!(
            dump.contains(&format!("compression={code},")),
            "{algo}: the stream has no encoded_write with compression={code}"
        );
        let scratch = Scratch::new().unwrap();
        scratch.receive(&stream).unwrap();
        let want = trees(scratch.path());
        let fs = Mounted::tmpfs();
        apply_ok(&["apply", "-", s(&fs.mnt)], Some(&stream));
        assert_same_trees(&want, &trees(&fs.mnt), algo);
    }
}

/// A v2 stream of `n` files as the kernel sends them (made under a
/// temporary name, renamed, written, owned, given a mode and times), about
/// 1.3 kB each, in 30 directories.
fn many_files(n: usize) -> Vec<u8> {
    use proto_stream::btrfs::{BtrfsCommand as B, StreamWriter};
    use proto_stream::tlv::Timespec;
    let mut out = Vec::new();
    let w = StreamWriter::new(2, &mut out).unwrap();
    let t = Timespec {
        sec: 1_700_000_000,
        nsec: 7,
    };
    let put = |c: B<'_>, out: &mut Vec<u8>| {
        w.write(&c, out).unwrap();
    };
    put(
        B::Subvol {
            path: b"many",
            uuid: [0x42; 16],
            ctransid: 9,
        },
        &mut out,
    );
    for d in 0..30 {
        let dir = format!("d{d}");
        put(
            B::Mkdir {
                path: dir.as_bytes(),
                ino: 0,
            },
            &mut out,
        );
    }
    let data: Vec<u8> = (0..1200u32).map(|i| (i * 7 % 251) as u8).collect();
    for i in 0..n {
        let tmp = format!("o{}-9-0", 1000 + i);
        let path = format!("d{}/f{i}", i % 30);
        put(
            B::Mkfile {
                path: tmp.as_bytes(),
                ino: 0,
            },
            &mut out,
        );
        put(
            B::Rename {
                path: tmp.as_bytes(),
                to: path.as_bytes(),
            },
            &mut out,
        );
        let p = path.as_bytes();
        put(
            B::Write {
                path: p,
                offset: 0,
                data: &data[..100 + i % 1100],
            },
            &mut out,
        );
        put(
            B::Chown {
                path: p,
                uid: 1000,
                gid: 1000,
            },
            &mut out,
        );
        put(
            B::Chmod {
                path: p,
                mode: 0o640,
            },
            &mut out,
        );
        put(
            B::Utimes {
                path: p,
                atime: t,
                mtime: t,
                ctime: t,
                otime: None,
            },
            &mut out,
        );
    }
    for d in 0..30 {
        let dir = format!("d{d}");
        put(
            B::Utimes {
                path: dir.as_bytes(),
                atime: t,
                mtime: t,
                ctime: t,
                otime: None,
            },
            &mut out,
        );
    }
    put(
        B::Utimes {
            path: b"",
            atime: t,
            mtime: t,
            ctime: t,
            otime: None,
        },
        &mut out,
    );
    w.finish(&mut out).unwrap();
    out
}

/// `receive DIR --apply`: killed with SIGKILL at random points while a
/// sender on 127.0.0.1 sends a stream of many files (rate-limited), run
/// again each time: it goes on from what it applied and made durable, and
/// ends with the tree `apply` makes from the same input; no copy of the
/// stream is kept.
#[test]
fn receive_apply_killed_at_random_points_ends_with_the_same_tree() {
    if !support::require_or_skip("receive_apply_killed_at_random_points_ends_with_the_same_tree") {
        return;
    }
    // The trees on a tmpfs of their own: a commit syncs DIR's whole
    // filesystem (syncfs), which is / for a directory in /tmp.
    let work = Mounted::tmpfs();
    let input = many_files(3000);
    let file = work.mnt.join("many.stream");
    std::fs::write(&file, &input).unwrap();
    let reference = work.mnt.join("reference");
    std::fs::create_dir(&reference).unwrap();
    apply_ok(&["apply", s(&file), s(&reference)], None);
    let want = trees(&reference);
    let deadline = || Instant::now() + Duration::from_secs(120);
    let mut resumed = 0;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for seed in 1..=8 {
        let dir = work.mnt.join(format!("dir-{seed}"));
        std::fs::create_dir(&dir).unwrap();
        // 2 MB/s: about 1.3 s for the 2.6 MB (the receiver acks, and so
        // commits, every quarter of the sender's window: 4096 units).
        let snd = common::start(
            "send",
            &[
                "send",
                s(&file),
                "--listen",
                "127.0.0.1:0",
                "--rate-limit",
                "2000000",
                "--json",
            ],
        );
        let line = snd.line(deadline());
        let addr = line.strip_prefix("listening on ").unwrap().to_string();
        let from = format!("tcp://{addr}");
        let args = [
            "receive",
            s(&dir),
            "--apply",
            "--from",
            &from,
            "--json",
            "--retry-for",
            "20",
        ];
        let mut finished = false;
        for _ in 0..1 + next() % 3 {
            let mut r = common::start("receive", &args);
            std::thread::sleep(Duration::from_millis(150 + next() % 900));
            if r.child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            r.child.kill().unwrap();
            r.child.wait().unwrap();
        }
        if !finished {
            let mut r = common::start("receive", &args);
            let v = r.json(deadline());
            if v["resumed_from"].as_u64().unwrap_or(0) > 0 {
                resumed += 1;
            }
        }
        assert_same_trees(&want, &trees(&dir), &format!("seed {seed}"));
        let meta = dir.join(".proto-stream");
        assert!(!meta.join("receive.state").exists() && !meta.join("apply.journal").exists());
        let mut snd = snd;
        let (status, _, err) = snd.wait(deadline());
        assert!(status.success(), "seed {seed}: send: {err}");
    }
    assert!(
        resumed >= 2,
        "only {resumed} of 8 runs resumed from what was applied"
    );
}

#[test]
fn with_subvolumes_on_btrfs_the_trees_are_read_only_subvolumes_and_snapshots() {
    if !support::require_or_skip(
        "with_subvolumes_on_btrfs_the_trees_are_read_only_subvolumes_and_snapshots",
    ) {
        return;
    }
    let set = fixtures::shipped_set();
    let theirs = Scratch::new().unwrap();
    let ours = Scratch::new().unwrap();
    for name in ["full-v2", "incr-v2"] {
        theirs.receive(&read(&set, name)).unwrap();
        let stream = set.join(format!("{name}.stream"));
        apply_ok(&["apply", s(&stream), s(ours.path()), "--subvolumes"], None);
    }
    assert_same_trees(&trees(theirs.path()), &trees(ours.path()), "--subvolumes");
    for sv in ["snap1", "snap2"] {
        let p = ours.path().join(sv);
        support::run_ok("btrfs", &["subvolume", "show", s(&p)], None)
            .unwrap_or_else(|e| panic!("{sv} is not a subvolume: {e}"));
        let ro = support::run_ok("btrfs", &["property", "get", "-ts", s(&p), "ro"], None).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ro.stdout).trim(),
            "ro=true",
            "{sv}"
        );
    }
    // Killed after every third command of both streams (one input), then
    // run again: the same trees, read-only subvolumes.
    let input = both_v2(&set);
    let n = command_count(&input);
    let want = trees(theirs.path());
    for k in (1..n).step_by(3) {
        let dir = ours.path().join(format!("k{k}"));
        std::fs::create_dir(&dir).unwrap();
        let crash = k.to_string();
        let out = cli(
            &[
                "apply",
                "-",
                s(&dir),
                "--subvolumes",
                "--crash-after",
                &crash,
            ],
            Some(&input),
        );
        assert_eq!(
            out.status.signal(),
            Some(9),
            "k {k}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        apply_ok(&["apply", "-", s(&dir), "--subvolumes"], Some(&input));
        assert_same_trees(
            &want,
            &trees(&dir),
            &format!("--subvolumes, crash after {k}"),
        );
    }
    // Not on btrfs: refused, saying why.
    let fs = Mounted::tmpfs();
    let out = cli(
        &[
            "apply",
            s(&set.join("full-v2.stream")),
            s(&fs.mnt),
            "--subvolumes",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need a directory on btrfs"));
}
