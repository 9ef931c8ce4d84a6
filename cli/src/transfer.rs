//! `send` and `receive`: a transfer between two processes that survives
//! disconnects and restarts of either side. The receiver keeps its
//! position durably (`OUT.part` and its state); a restarted receiver
//! resumes where its last acknowledgement stood, and `OUT` appears only
//! once the stream is complete and verified.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use proto_stream::apply::{ApplyOptions, ApplyOutput};
use proto_stream::btrfs::Btrfs;
use proto_stream::checkpoint::{FileSource, UnitKind};
use proto_stream::session::auth::{authenticate, Role};
use proto_stream::session::offer::{detect, BoxSource};
use proto_stream::session::{BoxError, Kept, Offer, Output, SessionFormat, Units};
use proto_stream::session::{
    DurableFile, FetchConfig, FetchError, Fetcher, RateLimit, RetryPolicy, Server, ServerConfig,
    SessionError, KIT_FORMATS,
};
use proto_stream::tlv::ReadBuf;

use crate::session::{bind, connect, served_json, setup};
use crate::Failure;

/// Where the peer is.
pub enum Peer<'a> {
    /// Connect to `tcp://HOST:PORT`.
    To(&'a str),
    /// Listen on `ADDR` (`HOST:PORT`).
    Listen(&'a str),
    /// Standard input and output (under ssh, say).
    Stdio,
}

/// What `send` and `receive` share.
pub struct Common<'a> {
    pub peer: Peer<'a>,
    /// The pre-shared key of TCP connections (`--key FILE`, read).
    pub key: Option<Vec<u8>>,
    /// The ssh command (`-e`), split at whitespace.
    pub rsh: &'a str,
    /// The program on the remote host (`--remote-path`).
    pub remote_path: &'a str,
    pub insecure: bool,
    pub retry_for: f64,
    pub io_timeout: f64,
    pub json: bool,
}

/// Why an address is refused.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("{0}: expected tcp://HOST:PORT, [user@]host:PATH or ssh://[user@]host[:port]/PATH")]
    NotTcp(String),
    #[error("{addr}: resolves to {ip}, not a loopback address: plain TCP is unauthenticated (whoever connects gets the stream); give --insecure to allow it")]
    NotLoopback { addr: String, ip: std::net::IpAddr },
    #[error("{0}: {1}")]
    Resolve(String, io::Error),
}

/// Resolves `addr` (`HOST:PORT`), refusing addresses beyond this machine
/// unless `insecure`.
fn resolve(addr: &str, insecure: bool) -> Result<Vec<SocketAddr>, AddressError> {
    let all: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| AddressError::Resolve(addr.to_owned(), e))?
        .collect();
    if !insecure {
        if let Some(a) = all.iter().find(|a| !a.ip().is_loopback()) {
            return Err(AddressError::NotLoopback {
                addr: addr.to_owned(),
                ip: a.ip(),
            });
        }
    }
    Ok(all)
}

/// A peer to connect to.
enum Dest<'a> {
    /// `tcp://HOST:PORT`.
    Tcp(&'a str),
    /// `[user@]host:PATH` or `ssh://[user@]host[:port]/PATH`.
    Ssh {
        host: &'a str,
        port: Option<&'a str>,
        path: String,
    },
}

fn parse_dest(dest: &str) -> Result<Dest<'_>, AddressError> {
    if let Some(a) = dest.strip_prefix("tcp://") {
        return Ok(Dest::Tcp(a.trim_end_matches('/')));
    }
    if let Some(rest) = dest.strip_prefix("ssh://") {
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| AddressError::NotTcp(dest.to_owned()))?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
            _ => (authority, None),
        };
        if host.is_empty() || path.is_empty() {
            return Err(AddressError::NotTcp(dest.to_owned()));
        }
        return Ok(Dest::Ssh {
            host,
            port,
            path: format!("/{path}"),
        });
    }
    match dest.split_once(':') {
        Some((host, path)) if !dest.contains("://") && !host.is_empty() && !path.is_empty() => {
            Ok(Dest::Ssh {
                host,
                port: None,
                path: path.to_owned(),
            })
        }
        _ => Err(AddressError::NotTcp(dest.to_owned())),
    }
}

/// A connection of either kind.
trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}

/// How to get a new connection to the peer.
enum Connector {
    Tcp {
        addrs: Vec<SocketAddr>,
        io_timeout: f64,
        key: Option<Vec<u8>>,
    },
    /// A program whose standard input and output are the connection
    /// (ssh running `proto-stream ... --stdio` on the remote host).
    Command(Vec<String>),
}

impl Connector {
    /// To `dest`, whose remote side runs `remote ROLE... --stdio PATH` over
    /// ssh (`role`: `receive` (and `--apply`) or `send`).
    fn new(dest: &str, role: &[&str], c: &Common<'_>) -> Result<Connector, AddressError> {
        match parse_dest(dest)? {
            Dest::Tcp(addr) => Ok(Connector::Tcp {
                addrs: resolve(addr, c.insecure || c.key.is_some())?,
                io_timeout: c.io_timeout,
                key: c.key.clone(),
            }),
            Dest::Ssh { host, port, path } => {
                let mut argv: Vec<String> = c.rsh.split_whitespace().map(str::to_owned).collect();
                if argv.is_empty() {
                    return Err(AddressError::NotTcp(format!("-e {:?}", c.rsh)));
                }
                if let Some(p) = port {
                    argv.extend(["-p".to_owned(), p.to_owned()]);
                }
                argv.push(host.to_owned());
                argv.push(remote_command(c.remote_path, role, &path));
                Ok(Connector::Command(argv))
            }
        }
    }

    fn connect(&self) -> io::Result<Box<dyn Duplex>> {
        match self {
            Connector::Tcp {
                addrs,
                io_timeout,
                key,
            } => {
                let mut conn = connect(&addrs[..])?;
                setup(&conn, *io_timeout)?;
                if let Some(k) = key {
                    authenticated(&mut conn, k, Role::Initiator, *io_timeout)?;
                }
                Ok(Box::new(conn))
            }
            Connector::Command(argv) => Ok(Box::new(Piped::spawn(argv)?)),
        }
    }
}

/// Runs the key exchange on `conn` within a few seconds (a peer that says
/// nothing cannot hold a listener for long). A refusal is
/// `PermissionDenied`, which is not retried.
fn authenticated(conn: &mut TcpStream, key: &[u8], role: Role, io_timeout: f64) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let r = authenticate(conn, key, role);
    conn.set_read_timeout((io_timeout > 0.0).then(|| Duration::from_secs_f64(io_timeout)))?;
    r.map_err(|e| {
        if e.retryable() {
            io::Error::new(io::ErrorKind::ConnectionAborted, e)
        } else {
            io::Error::new(io::ErrorKind::PermissionDenied, e)
        }
    })
}

/// The command line run on the remote host: `PROG ROLE... --stdio PATH`,
/// each word single-quoted when it holds anything but
/// `[A-Za-z0-9_./@%+=:,-]` (what an `authorized_keys` `command=` filter
/// sees in `SSH_ORIGINAL_COMMAND`).
pub fn remote_command(prog: &str, role: &[&str], path: &str) -> String {
    std::iter::once(prog)
        .chain(role.iter().copied())
        .chain(["--stdio", path])
        .map(shell_word)
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./@%+=:,-".contains(&b));
    if plain {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// A child process's standard input and output as one connection; the
/// child is killed when it drops. Its stderr is ours (the remote side's
/// messages reach the user).
struct Piped {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::process::ChildStdout,
}

impl Piped {
    fn spawn(argv: &[String]) -> io::Result<Piped> {
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", argv[0])))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(io::Error::other("no pipes to the child"));
        };
        Ok(Piped {
            child,
            stdin,
            stdout,
        })
    }
}

impl Read for Piped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Write for Piped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stdin.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stdin.flush()
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard input and output as one connection.
struct Stdio {
    r: io::Stdin,
    w: io::Stdout,
}

impl Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.r.read(buf)
    }
}

impl Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

fn stdio() -> Stdio {
    Stdio {
        r: io::stdin(),
        w: io::stdout(),
    }
}

/// Prints `listening on ADDR` first on stdout (tests and scripts read it).
fn listen(addr: &str, insecure: bool) -> Result<TcpListener, Failure> {
    let addrs = resolve(addr, insecure).map_err(Failure::Address)?;
    let listener = bind(&addrs[..]).map_err(|e| Failure::io(addr, e))?;
    let local = listener.local_addr().map_err(|e| Failure::io(addr, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Failure::io(addr, e))?;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening on {local}");
    let _ = out.flush();
    Ok(listener)
}

/// The next connection on `listener`, or `None` once `deadline` passed.
fn accept(listener: &TcpListener, deadline: Instant) -> Result<Option<TcpStream>, Failure> {
    loop {
        match listener.accept() {
            Ok((c, _)) => {
                c.set_nonblocking(false)
                    .map_err(|e| Failure::io("accept", e))?;
                return Ok(Some(c));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::io("accept", e)),
        }
    }
}

/// What `send` was asked.
pub struct SendArgs<'a> {
    pub source: &'a Path,
    pub common: Common<'a>,
    pub rate_limit: u64,
    /// `--compress`: zstd DATA frames where the receiver takes them.
    pub compress: bool,
    /// `--apply`: the remote receiver (over ssh) applies into a directory.
    pub apply: bool,
    /// `--btrfs`: SOURCE is a read-only snapshot; `btrfs send` runs here.
    pub btrfs: bool,
    pub parent: Option<&'a Path>,
    pub proto: Option<u32>,
}

/// The stdout of a running program as a stream: the program is killed
/// when it drops; a failed exit is an error at the end, not a short stream.
struct ChildStream {
    what: String,
    child: std::process::Child,
    stdout: std::process::ChildStdout,
}

impl ChildStream {
    fn spawn(argv: &[String]) -> io::Result<ChildStream> {
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", argv[0])))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(io::Error::other("no pipe from the child"));
        };
        Ok(ChildStream {
            what: argv.join(" "),
            child,
            stdout,
        })
    }
}

impl Read for ChildStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let status = self.child.wait()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "`{}` failed: {status}",
                    self.what
                )));
            }
        }
        Ok(n)
    }
}

impl Drop for ChildStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `send` offers: a file (re-read by seeking), a live `btrfs send`
/// (made again to re-arm), or standard input (read once).
fn offer(a: &SendArgs<'_>) -> Result<Offer, Failure> {
    if a.btrfs {
        let mut argv = vec!["btrfs".to_owned(), "send".to_owned()];
        if let Some(p) = a.parent {
            argv.extend(["-p".to_owned(), p.display().to_string()]);
        }
        if let Some(n) = a.proto {
            argv.extend(["--proto".to_owned(), n.to_string()]);
        }
        argv.push(a.source.display().to_string());
        let make = Box::new(move || -> Result<Box<dyn Read + Send>, BoxError> {
            Ok(Box::new(ChildStream::spawn(&argv)?))
        });
        return Btrfs.live(make).map_err(Failure::Session);
    }
    if a.source == Path::new("-") {
        if matches!(a.common.peer, Peer::Stdio) {
            return Err(Failure::StdinTwice);
        }
        let mut stdin = io::stdin();
        let mut head = ReadBuf::new();
        head.fill_from(&mut stdin, 8, 8)
            .map_err(|e| Failure::io("standard input", e))?;
        let first = head.available().to_vec();
        let format = detect(&KIT_FORMATS, &first).unwrap_or(&Btrfs);
        let mut once: Option<Box<dyn Read + Send>> =
            Some(Box::new(io::Cursor::new(first).chain(stdin)));
        let make = Box::new(move || -> Result<Box<dyn Read + Send>, BoxError> {
            once.take().ok_or_else(|| {
                "standard input was read once already: a receiver whose position is outside the sender's window cannot be served from it (send a file, or --btrfs, to resume from anywhere)".into()
            })
        });
        return format.live(make).map_err(Failure::Session);
    }
    let path = a.source.to_owned();
    let open = Box::new(move || -> Result<BoxSource, BoxError> {
        Ok(Box::new(FileSource::new(std::fs::File::open(&path)?)?))
    });
    Offer::detect(&KIT_FORMATS, open, 1).map_err(Failure::Session)
}

pub fn send(a: &SendArgs<'_>) -> Result<(), Failure> {
    let c = &a.common;
    let config = ServerConfig {
        compress: a.compress,
        ..ServerConfig::default()
    };
    let mut server = Server::with_offer(offer(a)?, config);
    // On a terminal: bytes sent (frames included), rate, and the ETA when
    // the stream's length is known (a file; not a live btrfs send).
    // (Compressed, the bytes on the wire say nothing of the length left.)
    let total = (!a.btrfs && !a.compress && a.source != Path::new("-"))
        .then(|| std::fs::metadata(a.source).ok().map(|m| m.len()))
        .flatten();
    let pb = crate::progress(total);
    let retry_for = Duration::from_secs_f64(c.retry_for.max(0.0));
    let outcome = match c.peer {
        Peer::Stdio => server
            .serve(Shown::new(RateLimit::new(stdio(), a.rate_limit), &pb))
            .map_err(Failure::Session)?,
        Peer::To(dest) => {
            let role: &[&str] = if a.apply {
                &["receive", "--apply"]
            } else {
                &["receive"]
            };
            let connector = Connector::new(dest, role, c).map_err(Failure::Address)?;
            let mut last_progress = Instant::now();
            let mut backoff = Duration::from_millis(100);
            loop {
                let acked = server.stats().send.units_sent - server.stats().send.units_resent;
                let r = match connector.connect() {
                    Ok(conn) => server.serve(Shown::new(RateLimit::new(conn, a.rate_limit), &pb)),
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                        return Err(Failure::Refused(e))
                    }
                    Err(e) => Err(SessionError::Io(e)),
                };
                match r {
                    Ok(served) => break served,
                    // A broken connection: connect again. A refusal by the
                    // receiver is its answer.
                    Err(e) if e.retryable() => {
                        let s = server.stats().send;
                        if s.units_sent - s.units_resent > acked {
                            last_progress = Instant::now();
                            backoff = Duration::from_millis(100);
                        }
                        if last_progress.elapsed() >= retry_for {
                            return Err(Failure::GaveUp {
                                waited: retry_for.as_secs_f64(),
                                last: Box::new(e),
                            });
                        }
                        eprintln!("proto-stream: send: to {dest}: {e}; connecting again");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => return Err(Failure::Session(e)),
                }
            }
        }
        Peer::Listen(addr) => {
            let listener = listen(addr, c.insecure || c.key.is_some())?;
            let mut deadline = Instant::now() + retry_for;
            loop {
                let Some(conn) = accept(&listener, deadline)? else {
                    return Err(Failure::GaveUp {
                        waited: retry_for.as_secs_f64(),
                        last: Box::new(SessionError::Io(io::ErrorKind::TimedOut.into())),
                    });
                };
                if let Err(e) = setup(&conn, c.io_timeout) {
                    eprintln!("proto-stream: send: a connection: {e}");
                    continue;
                }
                let mut conn = conn;
                if let Some(k) = &c.key {
                    if let Err(e) = authenticated(&mut conn, k, Role::Responder, c.io_timeout) {
                        eprintln!("proto-stream: send: a connection was not authenticated: {e}");
                        continue;
                    }
                }
                let before = server.stats().send.units_sent;
                match server.serve(Shown::new(RateLimit::new(conn, a.rate_limit), &pb)) {
                    Ok(served) => break served,
                    Err(e) if sender_goes_on(&e) => {
                        if server.stats().send.units_sent > before {
                            deadline = Instant::now() + retry_for;
                        }
                        eprintln!("proto-stream: send: a connection ended: {e}");
                    }
                    Err(e) => return Err(Failure::Session(e)),
                }
            }
        }
    };
    let s = server.stats();
    if c.json {
        let v = served_json(outcome.units, &s);
        summary(&c.peer, &v.to_string());
    } else {
        let zipped = if s.send.units_compressed > 0 {
            format!(" ({} on the wire, compressed)", s.send.payload_wire_bytes)
        } else {
            String::new()
        };
        summary(
            &c.peer,
            &format!(
                "sent {} units over {} connections: {} bytes{zipped}, {} resent",
                outcome.units, s.connections, s.send.bytes_sent, s.send.bytes_resent
            ),
        );
    }
    Ok(())
}

/// Whether a sender waits for the receiver to come back after `e`: a
/// broken connection, or a refusal a stray or restarted peer caused. Only
/// a broken source ends it.
fn sender_goes_on(e: &SessionError) -> bool {
    !matches!(e, SessionError::Source(_))
}

/// What `receive` was asked.
pub struct ReceiveArgs<'a> {
    pub out: &'a Path,
    pub common: Common<'a>,
    pub contexts: Option<&'a str>,
    /// `--btrfs-receive DIR`: feed the verified units to `btrfs receive DIR`.
    pub btrfs_receive: Option<&'a Path>,
    /// `--apply`: apply the stream into the directory `out`.
    pub apply: bool,
}

/// `btrfs receive DIR` fed the verified units as they arrive.
struct IntoBtrfs {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl IntoBtrfs {
    /// Starts `btrfs receive DIR` and feeds it the first `kept` bytes of
    /// `part` (what a receiver before this one kept). A subvolume a
    /// receive before this one left half made (no received UUID yet) is
    /// deleted first: `btrfs receive` cannot continue one. When the
    /// stream's subvolume is there complete (received UUID set), nothing
    /// is fed: `None`.
    fn start(dir: &Path, part: &Path, kept: u64) -> Result<Option<IntoBtrfs>, Failure> {
        if kept > 0 {
            if let Some(name) = first_subvolume(part)? {
                let sub = dir.join(&name);
                if sub.exists() {
                    let show = std::process::Command::new("btrfs")
                        .args(["subvolume", "show"])
                        .arg(&sub)
                        .output()
                        .map_err(|e| Failure::io("btrfs subvolume show", e))?;
                    let text = String::from_utf8_lossy(&show.stdout);
                    let received = text.lines().any(|l| {
                        let l = l.trim();
                        l.starts_with("Received UUID:") && !l.ends_with('-')
                    });
                    if received {
                        eprintln!(
                            "proto-stream: receive: {} is complete already; not fed again",
                            sub.display()
                        );
                        return Ok(None);
                    }
                    eprintln!(
                        "proto-stream: receive: deleting the half-received {} (btrfs receive cannot continue it); feeding the kept bytes again",
                        sub.display()
                    );
                    let st = std::process::Command::new("btrfs")
                        .args(["subvolume", "delete"])
                        .arg(&sub)
                        .stdout(std::process::Stdio::null())
                        .status()
                        .map_err(|e| Failure::io("btrfs subvolume delete", e))?;
                    if !st.success() {
                        return Err(Failure::io(
                            sub.display(),
                            io::Error::other(format!("btrfs subvolume delete: {st}")),
                        ));
                    }
                }
            }
        }
        let mut child = std::process::Command::new("btrfs")
            .arg("receive")
            .arg(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| Failure::io("btrfs receive", e))?;
        let mut stdin = child.stdin.take();
        if kept > 0 {
            if let Some(w) = stdin.as_mut() {
                let f = std::fs::File::open(part).map_err(|e| Failure::io(part.display(), e))?;
                io::copy(&mut f.take(kept), w).map_err(|e| Failure::io("btrfs receive", e))?;
            }
        }
        Ok(Some(IntoBtrfs { child, stdin }))
    }

    fn feed(&mut self, unit: &[u8]) -> io::Result<()> {
        match self.stdin.as_mut() {
            Some(w) => w.write_all(unit),
            None => Ok(()),
        }
    }

    /// Ends its input and waits for it.
    fn finish(mut self) -> Result<(), Failure> {
        drop(self.stdin.take());
        let st = self
            .child
            .wait()
            .map_err(|e| Failure::io("btrfs receive", e))?;
        if st.success() {
            Ok(())
        } else {
            Err(Failure::io(
                "btrfs receive",
                io::Error::other(format!("exited with {st}")),
            ))
        }
    }
}

impl Drop for IntoBtrfs {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The subvolume the first stream of `part` makes (its first command's
/// path), if it names one.
fn first_subvolume(part: &Path) -> Result<Option<String>, Failure> {
    use proto_stream::checkpoint::{Format, Units};
    let f = std::fs::File::open(part).map_err(|e| Failure::io(part.display(), e))?;
    let src = FileSource::new(f).map_err(|e| Failure::io(part.display(), e))?;
    let mut units = Btrfs.units(src);
    let bad = |e: proto_stream::btrfs::Error| Failure::Stream(e);
    // The header, then the first command.
    if units.current().map_err(bad)?.is_none() {
        return Ok(None);
    }
    units.advance().map_err(bad)?;
    let Some(u) = units.current().map_err(bad)? else {
        return Ok(None);
    };
    let UnitKind::Command(profile) = u.kind else {
        return Ok(None);
    };
    let (cmd, _) = proto_stream::tlv::decode_command(u.bytes, &profile, 0, u.offset)
        .map_err(|e| Failure::Stream(e.into()))?;
    let name = Btrfs.context_name(1, Some(&cmd));
    Ok(name
        .split_once(':')
        .filter(|(k, _)| *k == "subvol" || *k == "snapshot")
        .map(|(_, p)| p.to_owned()))
}

pub fn abort(out: &Path) -> Result<(), Failure> {
    let had = DurableFile::abort(out).map_err(Failure::Durable)?;
    eprintln!(
        "proto-stream: receive: {}",
        if had {
            "the partial transfer was dropped"
        } else {
            "no partial transfer to drop"
        }
    );
    Ok(())
}

pub fn receive(a: &ReceiveArgs<'_>) -> Result<(), Failure> {
    let c = &a.common;
    let (file, kept) = if a.apply {
        let (out, kept) =
            ApplyOutput::open(a.out, &ApplyOptions::default()).map_err(Failure::Apply)?;
        (Sink::Apply(Box::new(out), a.out.to_path_buf()), kept)
    } else {
        let (file, kept) =
            DurableFile::open(a.out, Duration::from_secs(10)).map_err(Failure::Durable)?;
        (Sink::File(file), kept)
    };
    let config = FetchConfig {
        contexts: a
            .contexts
            .map(|s| s.split(',').map(|c| c.trim().to_owned()).collect())
            .unwrap_or_default(),
        ..FetchConfig::default()
    };
    // On a terminal: the bytes kept and received, and the rate (the
    // receiver is not told the stream's length).
    let pb = crate::progress(None);
    pb.set_position(kept.as_ref().map_or(0, |k| k.len));
    // (--btrfs-receive and --apply exclude each other.)
    let btrfs = match (a.btrfs_receive, &file) {
        (Some(dir), Sink::File(file)) => {
            IntoBtrfs::start(dir, file.part_path(), kept.as_ref().map_or(0, |k| k.len))?
        }
        _ => None,
    };
    let file = ShownOut {
        inner: file,
        pb: pb.clone(),
        btrfs,
    };
    let mut f = match kept {
        Some(kept) => {
            let check = match &file.inner {
                Sink::File(f) => f
                    .resume_check(&KIT_FORMATS, &kept)
                    .map_err(Failure::Durable)?,
                Sink::Apply(o, _) => o.resume_check(&kept).map_err(Failure::Apply)?,
            };
            eprintln!(
                "proto-stream: receive: resuming {} at byte {} (seq {})",
                file.inner.name().display(),
                kept.len,
                kept.position.received
            );
            Fetcher::restore(check, file, config, kept)
        }
        None => Fetcher::new(file, config),
    };
    let retry_for = Duration::from_secs_f64(c.retry_for.max(0.0));
    let from = match c.peer {
        Peer::To(s) => s.to_owned(),
        Peer::Listen(s) => s.to_owned(),
        Peer::Stdio => "standard input".to_owned(),
    };
    let fetch_failure = |f: &Fetcher<ShownOut>, error| Failure::Fetch {
        from: from.clone(),
        error,
        out: f.output().inner.name().display().to_string(),
        units: f.kept().position.received,
    };
    // A receiver killed after the last unit was durable but before the
    // rename has nothing to fetch: it still tells a sender that waits for
    // the last acknowledgement, but a sender that is gone is no failure.
    let bye = match c.peer {
        Peer::Stdio => match f.fetch(stdio()) {
            Ok(()) => true,
            Err(_) if f.finished() => false,
            Err(e) => return Err(fetch_failure(&f, FetchError::Session(e))),
        },
        Peer::To(src) => {
            let connector = Connector::new(src, &["send"], c).map_err(Failure::Address)?;
            let policy = RetryPolicy {
                retry_for,
                max_stalls: 50,
            };
            let connect = || connector.connect();
            match f.fetch_retrying(connect, policy) {
                Ok(bye) => bye,
                Err(error) => return Err(fetch_failure(&f, error)),
            }
        }
        Peer::Listen(addr) => {
            let listener = listen(addr, c.insecure || c.key.is_some())?;
            let wait = if f.finished() {
                retry_for.min(Duration::from_secs(5))
            } else {
                retry_for
            };
            let mut deadline = Instant::now() + wait;
            loop {
                let Some(conn) = accept(&listener, deadline)? else {
                    if f.finished() {
                        break false;
                    }
                    return Err(Failure::GaveUp {
                        waited: retry_for.as_secs_f64(),
                        last: Box::new(SessionError::Io(io::ErrorKind::TimedOut.into())),
                    });
                };
                if let Err(e) = setup(&conn, c.io_timeout) {
                    eprintln!("proto-stream: receive: a connection: {e}");
                    continue;
                }
                let mut conn = conn;
                if let Some(k) = &c.key {
                    if let Err(e) = authenticated(&mut conn, k, Role::Responder, c.io_timeout) {
                        eprintln!("proto-stream: receive: a connection was not authenticated: {e}");
                        continue;
                    }
                }
                let before = f.received();
                match f.fetch(conn) {
                    Ok(()) => break true,
                    // A broken connection, a stray or hostile peer (another
                    // stream, garbage, a refusal): it was told why, and
                    // the receiver waits for the right sender (for
                    // --retry-for without progress). Only its own output
                    // failing ends it.
                    Err(_) if f.finished() => break false,
                    Err(e) if !matches!(e, SessionError::Output(_)) => {
                        if f.received() > before {
                            deadline = Instant::now() + retry_for;
                        }
                        eprintln!("proto-stream: receive: a connection ended: {e}");
                    }
                    Err(e) => return Err(fetch_failure(&f, FetchError::Session(e))),
                }
            }
        }
    };
    let stats = f.stats();
    let resumed_from = f.resumed_from();
    let units = f.kept().position.received;
    pb.finish_and_clear();
    let ShownOut {
        inner: out, btrfs, ..
    } = f.into_inner();
    if let Some(b) = btrfs {
        b.finish()?;
    }
    let path = match out {
        Sink::File(out) => out.finish().map_err(Failure::Durable)?,
        Sink::Apply(out, dir) => {
            out.finish().map_err(Failure::Apply)?;
            dir
        }
    };
    if c.json {
        let v = serde_json::json!({
            "ok": true,
            "out": path.display().to_string(),
            "units": units,
            "bytes_received": stats.receive.bytes_delivered,
            "bytes_resent": stats.receive.bytes_resent,
            "duplicates": stats.receive.duplicates,
            "reconnects": stats.reconnects,
            "resumed_from": resumed_from,
            "resumed_by_token": stats.receive.resumed_by_token,
            "wire_bytes": stats.wire_bytes,
            "payload_wire_bytes": stats.receive.payload_wire_bytes,
            "units_compressed": stats.receive.units_compressed,
            "goodbye": bye,
        });
        summary(&c.peer, &v.to_string());
    } else {
        summary(
            &c.peer,
            &format!(
                "received {} ({} units): {} bytes this run (resumed from byte {}), {} resent, {} reconnects",
                path.display(),
                units,
                stats.receive.bytes_delivered,
                resumed_from,
                stats.receive.bytes_resent,
                stats.reconnects
            ),
        );
    }
    Ok(())
}

/// A connection or an output whose bytes move a progress bar (hidden off
/// a terminal).
struct Shown<T> {
    inner: T,
    pb: indicatif::ProgressBar,
}

impl<T> Shown<T> {
    fn new(inner: T, pb: &indicatif::ProgressBar) -> Self {
        Shown {
            inner,
            pb: pb.clone(),
        }
    }
}

impl<T: Read> Read for Shown<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<T: Write> Write for Shown<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pb.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Where a receiver puts the stream: a durable file, or applied into a
/// directory (`--apply`).
enum Sink {
    File(DurableFile),
    Apply(Box<ApplyOutput>, std::path::PathBuf),
}

impl Sink {
    /// What it writes: `OUT.part`, or the directory.
    fn name(&self) -> &Path {
        match self {
            Sink::File(f) => f.part_path(),
            Sink::Apply(_, dir) => dir,
        }
    }
}

impl Output for Sink {
    fn write_unit(&mut self, unit: &[u8]) -> io::Result<()> {
        match self {
            Sink::File(f) => f.write_unit(unit),
            Sink::Apply(a, _) => a.write_unit(unit),
        }
    }
    fn write_units(&mut self, units: Units<'_>) -> io::Result<()> {
        match self {
            Sink::File(f) => f.write_units(units),
            Sink::Apply(a, _) => a.write_units(units),
        }
    }
    fn commit(&mut self, kept: &Kept) -> io::Result<()> {
        match self {
            Sink::File(f) => f.commit(kept),
            Sink::Apply(a, _) => a.commit(kept),
        }
    }
}

/// The receiver's output, its bytes moving a progress bar (and fed to
/// `btrfs receive` with --btrfs-receive).
struct ShownOut {
    inner: Sink,
    pb: indicatif::ProgressBar,
    btrfs: Option<IntoBtrfs>,
}

impl Output for ShownOut {
    fn write_unit(&mut self, unit: &[u8]) -> io::Result<()> {
        self.inner.write_unit(unit)?;
        if let Some(b) = self.btrfs.as_mut() {
            b.feed(unit)?;
        }
        self.pb.inc(unit.len() as u64);
        Ok(())
    }
    fn write_units(&mut self, units: Units<'_>) -> io::Result<()> {
        self.inner.write_units(units)?;
        if let Some(b) = self.btrfs.as_mut() {
            // A pipe into `btrfs receive`: bytes, whatever their units.
            b.feed(units.bytes())?;
        }
        self.pb.inc(units.bytes().len() as u64);
        Ok(())
    }
    fn commit(&mut self, kept: &Kept) -> io::Result<()> {
        self.inner.commit(kept)
    }
}

/// The summary goes to stdout, or to stderr when stdout is the transport.
fn summary(peer: &Peer<'_>, line: &str) {
    let _ = match peer {
        Peer::Stdio => writeln!(io::stderr(), "{line}"),
        _ => writeln!(io::stdout(), "{line}"),
    };
}
