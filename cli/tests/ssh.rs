//! `send --to host:OUT` and `receive --from host:SOURCE` through a real
//! sshd on 127.0.0.1, started by the test with host and user keys it
//! makes: the ssh client is killed several times mid-transfer (and the
//! remote side with it, or on its own), the transfer resumes on a new ssh
//! each time, and the file that arrives is byte-identical.
//!
//! Needs root (sshd, root login by key), `ssh`, `ssh-keygen` and
//! `/usr/sbin/sshd` (`scripts/test` installs openssh-server); without them
//! it says SKIPPED, loudly. Every wait has a deadline.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{skipped, start, stream, TempDir};

const DEADLINE: Duration = Duration::from_secs(120);
const SSHD: &str = "/usr/sbin/sshd";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An sshd on 127.0.0.1 that lets root in with the test's key; killed
/// when dropped.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// The `-e` command for `proto-stream`.
    fn rsh(&self) -> String {
        format!(
            "ssh -i {} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=10",
            s(&self.key),
            self.port
        )
    }
}

fn which(p: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {p}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts sshd, or says why not (SKIPPED).
fn sshd(d: &TempDir) -> Option<Sshd> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        skipped("ssh transfers: not root (sshd and a root login by key are needed)");
        return None;
    }
    if !Path::new(SSHD).exists() || !which("ssh") || !which("ssh-keygen") {
        skipped(
            "ssh transfers: openssh-server or openssh-client missing (scripts/test installs them)",
        );
        return None;
    }
    for k in ["host_key", "user_key"] {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f", s(&d.path(k))])
            .status()
            .unwrap();
        assert!(st.success(), "ssh-keygen");
    }
    std::fs::copy(d.path("user_key.pub"), d.path("authorized_keys")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nLogLevel ERROR\n",
        s(&d.path("host_key")),
        s(&d.path("authorized_keys"))
    );
    std::fs::write(d.path("sshd_config"), config).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f", s(&d.path("sshd_config"))])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let sshd = Sshd {
        child,
        port,
        key: d.path("user_key"),
    };
    // Ready once a login runs a command.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut argv = sshd.rsh();
        argv.push_str(" root@127.0.0.1 true");
        let ok = Command::new("sh")
            .args(["-c", &argv])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(sshd);
        }
        assert!(Instant::now() < deadline, "sshd did not let the test in");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGKILLs the processes whose command line matches `pattern`
/// (`pkill -f`); whether any was.
fn pkill(pattern: &str) -> bool {
    Command::new("pkill")
        .args(["-9", "-f", pattern])
        .status()
        .is_ok_and(|s| s.success())
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Waits until `p` holds at least `n` bytes, or the process is done.
fn wait_for(p: &Path, n: u64, proc_done: &mut dyn FnMut() -> bool, deadline: Instant) -> bool {
    while len(p) < n {
        if proc_done() {
            return false;
        }
        assert!(Instant::now() < deadline, "no progress to {n} bytes");
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn a_push_over_ssh_survives_killed_ssh_clients_and_a_killed_remote_receiver() {
    let d = TempDir::new("ssh-push");
    let Some(sshd) = sshd(&d) else { return };
    let want = stream(4, 1);
    let file = d.path("source.stream");
    std::fs::write(&file, &want).unwrap();
    let out = d.path("remote/out.stream");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let part = PathBuf::from(format!("{}.part", s(&out)));
    let deadline = Instant::now() + DEADLINE;
    let dest = format!("root@127.0.0.1:{}", s(&out));
    let rsh = sshd.rsh();
    let mut snd = start(
        "send",
        &[
            "send",
            s(&file),
            "--to",
            &dest,
            "-e",
            &rsh,
            "--remote-path",
            env!("CARGO_BIN_EXE_proto-stream"),
            "--rate-limit",
            "8000000",
            "--json",
        ],
    );
    let total = want.len() as u64;
    let ssh_client = format!("^ssh -i {}", s(&sshd.key));
    let remote = format!("receive --stdio {}", s(&out));
    let mut kills = 0;
    // The ssh client killed at a fifth, two fifths and three fifths; the
    // remote receiver at four fifths.
    for k in 1..=4u64 {
        let mut done = || snd.child.try_wait().unwrap().is_some();
        if !wait_for(&part, total * k / 5, &mut done, deadline) {
            break;
        }
        if pkill(if k < 4 { &ssh_client } else { &remote }) {
            kills += 1;
        }
    }
    let v = snd.json(deadline);
    assert!(kills >= 3, "only {kills} kills landed");
    assert!(v["connections"].as_u64().unwrap() > 1, "{v}");
    // The remote receiver may still be renaming: wait for the file.
    while !out.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", s(&out));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        std::fs::read(&out).unwrap() == want,
        "the pushed file differs"
    );
}

#[test]
fn a_pull_over_ssh_survives_killed_remote_senders() {
    let d = TempDir::new("ssh-pull");
    let Some(sshd) = sshd(&d) else { return };
    let want = stream(4, 2);
    let file = d.path("remote-source.stream");
    std::fs::write(&file, &want).unwrap();
    let out = d.path("pulled.stream");
    let part = PathBuf::from(format!("{}.part", s(&out)));
    let deadline = Instant::now() + DEADLINE;
    let src = format!("ssh://root@127.0.0.1:{}{}", sshd.port, s(&file));
    // The port is in the URL: the -e command must not give another.
    let rsh = format!(
        "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
        s(&sshd.key)
    );
    // The remote program is a wrapper that holds the sender to 8 MB/s
    // (as a --rsync-path wrapper would), so that the kills land mid-way.
    let wrapper = d.path("slow-proto-stream");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} \"$@\" --rate-limit 8000000\n",
            env!("CARGO_BIN_EXE_proto-stream")
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut rcv = start(
        "receive",
        &[
            "receive",
            s(&out),
            "--from",
            &src,
            "-e",
            &rsh,
            "--remote-path",
            s(&wrapper),
            "--json",
        ],
    );
    let total = want.len() as u64;
    let remote = format!("send --stdio {}", s(&file));
    let mut kills = 0;
    for k in 1..=3u64 {
        let mut done = || rcv.child.try_wait().unwrap().is_some();
        if !wait_for(&part, total * k / 4, &mut done, deadline) {
            break;
        }
        if pkill(&remote) {
            kills += 1;
        }
    }
    let v = rcv.json(deadline);
    assert!(
        std::fs::read(&out).unwrap() == want,
        "the pulled file differs"
    );
    // Each new remote sender re-armed from this receiver's token.
    assert!(v["reconnects"].as_u64().unwrap() >= kills, "{v}");
    let _ = kills;
}

#[test]
fn a_push_over_ssh_with_apply_builds_the_tree_on_the_remote_side() {
    let d = TempDir::new("ssh-apply");
    let Some(sshd) = sshd(&d) else { return };
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/btrfs/small");
    let deadline = Instant::now() + DEADLINE;
    let rsh = sshd.rsh();
    let bin = env!("CARGO_BIN_EXE_proto-stream");
    let remote = d.path("remote");
    let local = d.path("local");
    std::fs::create_dir_all(&remote).unwrap();
    std::fs::create_dir_all(&local).unwrap();
    for name in ["full-v2.stream", "incr-v2.stream"] {
        let file = set.join(name);
        let dest = format!("root@127.0.0.1:{}", s(&remote));
        let mut snd = start(
            "send",
            &[
                "send",
                s(&file),
                "--to",
                &dest,
                "--apply",
                "-e",
                &rsh,
                "--remote-path",
                bin,
                "--json",
            ],
        );
        let v = snd.json(deadline);
        assert_eq!(v["ok"], true, "{name}: {v}");
        let out = Command::new(bin)
            .args(["apply", s(&file), s(&local)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // What the remote side applied is what apply makes here: every entry's
    // type, mode, size, mtime, owner and symlink target, and every regular
    // file's bytes (DIR itself aside).
    let listing = |root: &Path| {
        let out = Command::new("find")
            .arg(root)
            .args([
                "-mindepth",
                "1",
                "-path",
                "*/.proto-stream",
                "-prune",
                "-o",
                "-printf",
                "%P %y %m %s %T@ %U %G %l\\n",
            ])
            .output()
            .unwrap();
        let mut lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let (a, b) = (listing(&remote), listing(&local));
    assert!(a.len() > 20, "{a:?}");
    assert_eq!(a, b);
    for line in &a {
        let mut w = line.split(' ');
        let (path, kind) = (w.next().unwrap(), w.next().unwrap());
        if kind == "f" {
            assert_eq!(
                std::fs::read(remote.join(path)).unwrap(),
                std::fs::read(local.join(path)).unwrap(),
                "{path}"
            );
        }
    }
}
