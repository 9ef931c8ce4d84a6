//! `send --btrfs SNAPSHOT`: a live `btrfs send` on a loop-mounted btrfs,
//! streamed as it comes (nothing spooled), the sender killed with SIGKILL
//! mid-stream and started again with the same command: it runs `btrfs
//! send` again and skips what the receiver has, the received stream is
//! byte-identical to a plain `btrfs send` and the real `btrfs receive`
//! makes the identical tree from it. A snapshot replaced under the same
//! name is refused, never spliced.
//!
//! Needs root, loop devices and btrfs-progs (`scripts/test` installs it);
//! without them it says SKIPPED, loudly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../../tests/support/receive.rs"]
mod support;

mod common;
use common::{start, Proc, TempDir};

const DEADLINE: Duration = Duration::from_secs(180);

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A subvolume `vol` with files of `mb` MiB in all (the content depends on
/// `seed`), and a read-only snapshot of it, `snap`.
fn make_snapshot(root: &Path, mb: usize, seed: u8) -> PathBuf {
    let vol = root.join("vol");
    if !vol.exists() {
        sh(&format!("btrfs subvolume create {} >/dev/null", s(&vol)));
    }
    for i in 0..mb {
        let data: Vec<u8> = (0..(1u32 << 20))
            .map(|b| (b.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i as u8 ^ seed)
            .collect();
        std::fs::write(vol.join(format!("file-{i}")), data).unwrap();
    }
    std::fs::create_dir_all(vol.join("dir/sub")).unwrap();
    std::fs::write(vol.join("dir/sub/small"), format!("seed {seed}")).unwrap();
    let snap = root.join("snap");
    sh(&format!(
        "sync; btrfs subvolume snapshot -r {} {} >/dev/null",
        s(&vol),
        s(&snap)
    ));
    snap
}

fn btrfs_send(snap: &Path) -> Vec<u8> {
    let out = Command::new("btrfs")
        .args(["send", "-q", s(snap)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "btrfs send: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", s(p)))
}

/// `receive OUT --listen 127.0.0.1:0`: the process and its address.
fn receiver(out: &Path, deadline: Instant) -> (Proc, String) {
    let p = start(
        "receive",
        &[
            "receive",
            s(out),
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--retry-for",
            "60",
        ],
    );
    let line = p.line(deadline);
    let addr = line.strip_prefix("listening on ").unwrap().to_string();
    (p, addr)
}

fn sender(snap: &Path, addr: &str, rate: &str) -> Proc {
    start(
        "send",
        &[
            "send",
            "--btrfs",
            s(snap),
            "--to",
            &format!("tcp://{addr}"),
            "--rate-limit",
            rate,
            "--json",
        ],
    )
}

/// Kills `p` with SIGKILL once `part` holds `n` bytes.
fn kill_at(p: &mut Proc, part: &Path, n: u64, deadline: Instant) {
    while len(part) < n {
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "{} ended early",
            p.name
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

#[test]
fn a_live_btrfs_send_killed_mid_stream_resumes_and_btrfs_receive_makes_the_same_tree() {
    if !support::require_or_skip("a_live_btrfs_send_killed_mid_stream_resumes") {
        return;
    }
    let src = support::Scratch::new().unwrap();
    let snap = make_snapshot(src.path(), 12, 1);
    let want = btrfs_send(&snap);
    assert!(
        btrfs_send(&snap) == want,
        "btrfs send is not deterministic here"
    );
    let d = TempDir::new("live-btrfs");
    let out = d.path("snap.stream");
    let part = with_suffix(&out, ".part");
    let deadline = Instant::now() + DEADLINE;
    let (mut rcv, addr) = receiver(&out, deadline);
    // 12 MB at 8 MB/s; killed at about 40%.
    let mut snd = sender(&snap, &addr, "8000000");
    kill_at(&mut snd, &part, want.len() as u64 * 2 / 5, deadline);
    // The same command again: btrfs send runs again, and the new sender
    // re-arms from the receiver's token, walking the stream made again to
    // it (the prefix's digest checked).
    let mut snd = sender(&snap, &addr, "0");
    let v = rcv.json(deadline);
    let (status, lines, err) = snd.wait(deadline);
    assert!(status.success(), "send: {err}");
    let sv: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(sv["resumed_by_token"], 1, "{sv}");
    assert!(v["reconnects"].as_u64().unwrap() >= 1, "{v}");
    let got = std::fs::read(&out).unwrap();
    assert!(got == want, "the received stream differs from btrfs send's");

    // The real btrfs receive makes the tree the snapshot holds.
    let dst = support::Scratch::new().unwrap();
    dst.receive(&got).unwrap();
    let a = support::tree(&snap).unwrap();
    let b = support::tree(&dst.path().join("snap")).unwrap();
    assert!(a.diff(&b).is_none(), "{:?}", a.diff(&b));
}

#[test]
fn a_snapshot_replaced_under_the_same_name_is_refused() {
    if !support::require_or_skip("a_snapshot_replaced_under_the_same_name_is_refused") {
        return;
    }
    let src = support::Scratch::new().unwrap();
    let snap = make_snapshot(src.path(), 8, 2);
    let first = btrfs_send(&snap);
    let d = TempDir::new("live-replaced");
    let out = d.path("snap.stream");
    let part = with_suffix(&out, ".part");
    let deadline = Instant::now() + DEADLINE;
    let (mut rcv, addr) = receiver(&out, deadline);
    let mut snd = sender(&snap, &addr, "6000000");
    kill_at(&mut snd, &part, first.len() as u64 / 2, deadline);
    // Another snapshot under the same name (the killed sender's `btrfs
    // send` goes once its next write finds the pipe closed).
    let until = Instant::now() + Duration::from_secs(20);
    while !Command::new("btrfs")
        .args(["subvolume", "delete", s(&snap)])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(Instant::now() < until, "the old snapshot stays busy");
        std::thread::sleep(Duration::from_millis(100));
    }
    let snap = make_snapshot(src.path(), 8, 3);
    let mut snd = sender(&snap, &addr, "0");
    let (status, _, err) = snd.wait(deadline);
    assert_eq!(status.code(), Some(3), "refused by the receiver: {err}");
    assert!(err.contains("holds part of stream"), "{err}");
    // The receiver kept waiting for the right sender; what it holds is a
    // prefix of the first snapshot's stream.
    assert!(rcv.child.try_wait().unwrap().is_none());
    let held = std::fs::read(&part).unwrap();
    assert!(!held.is_empty() && first.starts_with(&held));
    assert!(!out.exists());
}

/// `receive OUT --btrfs-receive DIR`, killed half way and run again: the
/// half-received subvolume is deleted, the kept bytes fed again, and the
/// real `btrfs receive` ends with the snapshot's tree.
#[test]
fn receive_into_btrfs_receive_survives_a_restart() {
    if !support::require_or_skip("receive_into_btrfs_receive_survives_a_restart") {
        return;
    }
    let src = support::Scratch::new().unwrap();
    let snap = make_snapshot(src.path(), 8, 4);
    let want = btrfs_send(&snap);
    let d = TempDir::new("into-btrfs");
    let file = d.path("snap.stream");
    std::fs::write(&file, &want).unwrap();
    let dst = support::Scratch::new().unwrap();
    let out = d.path("out.stream");
    let part = with_suffix(&out, ".part");
    let deadline = Instant::now() + DEADLINE;
    let snd = start(
        "send",
        &[
            "send",
            s(&file),
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "6000000",
        ],
    );
    let addr = snd
        .line(deadline)
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let receive = || {
        start(
            "receive",
            &[
                "receive",
                s(&out),
                "--from",
                &format!("tcp://{addr}"),
                "--btrfs-receive",
                s(dst.path()),
                "--json",
            ],
        )
    };
    let mut r = receive();
    kill_at(&mut r, &part, want.len() as u64 / 2, deadline);
    let mut r = receive();
    let (status, _, err) = r.wait(deadline);
    assert!(status.success(), "{err}");
    assert!(err.contains("deleting the half-received"), "{err}");
    assert!(std::fs::read(&out).unwrap() == want);
    let a = support::tree(&snap).unwrap();
    let b = support::tree(&dst.path().join("snap")).unwrap();
    assert!(a.diff(&b).is_none(), "{:?}", a.diff(&b));
}
