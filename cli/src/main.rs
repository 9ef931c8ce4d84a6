//! `proto-stream`: dump, verify and inspect btrfs send streams and native
//! proto-stream streams; re-emit either through bounded buffers with
//! checkpoint tokens, resume from one, compare streams however their data
//! commands were split, and serve/fetch them across reconnects.
#![forbid(unsafe_code)]

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use proto_stream::btrfs::{CommandChecker, CommandType, Dumper, Error};

mod apply;
mod checkpoint;
mod input;
mod inspect;
mod native;
mod session;
mod transfer;
use input::Visit;
use proto_stream::native::NATIVE_MAGIC;

#[derive(Parser)]
#[command(
    name = "proto-stream",
    version,
    about = "Versioned, checkpointable, resumable binary streams"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print one line per command: for btrfs streams as `btrfs receive
    /// --dump` (btrfs-progs 6.2, TZ=UTC) does; for native streams
    /// `index=I offset=O cmd=0xCCCC len=N attrs=0xTTTT:LEN,...` (`attrs=-`
    /// when none), END included.
    Dump {
        /// Stream file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Check the header, every CRC, every command's attributes and the END;
    /// print a summary (btrfs or native streams).
    Verify {
        /// Stream file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
        /// Print the summary (or the error) as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Apply btrfs send streams to a directory on any filesystem, as `btrfs
    /// receive` builds them in btrfs: DIR/NAME for each stream's subvolume.
    /// Resumable: run again after a crash, it continues from its journal
    /// (in DIR/.proto-stream/). Never writes outside DIR.
    Apply {
        /// Stream file, or `-` for standard input (several streams
        /// concatenated are applied in turn).
        stream: PathBuf,
        /// The directory to apply into (it must exist).
        dir: PathBuf,
        /// Make what is applied durable (syncfs) and record it every N
        /// commands (0: only at the end).
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        sync_every: u64,
        /// Refuse commands that would make a file larger than this many
        /// bytes (a bound for untrusted streams).
        #[arg(long, value_name = "BYTES")]
        max_file_size: Option<u64>,
        /// DIR is on btrfs: make each tree a subvolume, or a snapshot of its
        /// parent, read-only once received, as btrfs receive does.
        #[arg(long)]
        subvolumes: bool,
        /// Testing: stop the process abruptly (SIGKILL, no cleanup) after it
        /// carried out N commands.
        #[arg(long, value_name = "N")]
        crash_after: Option<u64>,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the fixed header, the chosen version and the version-specific
    /// header (features, contexts) of a native or btrfs stream.
    Inspect {
        /// Stream file, or `-` for standard input.
        file: PathBuf,
        /// Print as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Re-emit a stream (btrfs or native) through buffers of at most N bytes:
    /// D/chunk-000001.bin, ... each followed by D/token-000001.txt, the
    /// checkpoint token to resume after it. Commands go whole; a data
    /// command (btrfs WRITE, native 0xFFFE) that does not fit is split into
    /// valid ones.
    Chunk {
        /// The stream file (btrfs or native, told apart by magic).
        file: PathBuf,
        /// A safe point every K units (stream headers and commands), as a
        /// producer that cannot checkpoint anywhere would have: re-arming
        /// skips the units since. Each token carries it, so `resume` needs
        /// only the token.
        #[arg(long, value_name = "K", default_value_t = 1)]
        safe_every: u64,
        #[command(flatten)]
        opts: ChunkOpts,
    },
    /// Continue an interrupted `chunk` from a token: the chunks up to that
    /// token followed by these concatenate to a valid stream that compares
    /// equal to FILE.
    Resume {
        /// The stream file (the same one).
        file: PathBuf,
        /// The token: its text (`pstoken:...`) or a token file. With a
        /// `token-NNNNNN.txt` file, chunks are numbered from NNNNNN + 1.
        #[arg(long)]
        token: String,
        /// Number of the first chunk written (default: after the token
        /// file's, else 1).
        #[arg(long)]
        start_index: Option<u64>,
        #[command(flatten)]
        opts: ChunkOpts,
    },
    /// Compare two streams of one format: exit 0 when they carry the same
    /// commands however their data commands were split, 1 and the first divergence
    /// (command, path, file offset, byte offset) when not, 2 on an error.
    Compare {
        /// The first stream file.
        a: PathBuf,
        /// The second stream file.
        b: PathBuf,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Serve a stream file (btrfs or native) over TCP to one `fetch`, across as
    /// many connections as it takes: after a reconnect only what the
    /// receiver lacks is sent again (seq exchange), and a sender that lost
    /// its window resumes from the receiver's checkpoint token. Each stream
    /// of the file is a context. Exits 0 once the transfer is acknowledged.
    Serve {
        /// The stream file (btrfs or native, told apart by magic).
        file: PathBuf,
        #[command(flatten)]
        opts: ServeOpts,
    },
    /// Send a stream file (btrfs or native) to a `receive` that keeps its
    /// position durably, over as many connections as it takes (the
    /// low-level pair `serve`/`fetch` keeps nothing on disk). Exactly one of
    /// --to, --listen, --stdio.
    #[command(after_help = EXIT_CODES, group(clap::ArgGroup::new("peer").required(true).args(["to", "listen", "stdio"])))]
    Send {
        /// The stream file (btrfs or native, told apart by magic), `-` for
        /// standard input (read once: resumable only within the sender's
        /// window), or with --btrfs a read-only snapshot.
        source: PathBuf,
        /// SOURCE is a read-only btrfs snapshot: run `btrfs send` on it and
        /// stream its output as it comes (nothing spooled); to re-arm after
        /// a restart or a lost window, run it again and skip what the
        /// receiver has (a snapshot that changed is refused).
        #[arg(long)]
        btrfs: bool,
        /// With --btrfs: an incremental send from this parent snapshot
        /// (`btrfs send -p`).
        #[arg(long, value_name = "SNAPSHOT", requires = "btrfs")]
        parent: Option<PathBuf>,
        /// With --btrfs: the send protocol version (`btrfs send --proto`).
        #[arg(long, value_name = "N", requires = "btrfs")]
        proto: Option<u32>,
        /// Where the receiver is: [user@]host:OUT or
        /// ssh://[user@]host[:port]/OUT (runs `proto-stream receive --stdio
        /// OUT` there through ssh, again after every broken connection), or
        /// tcp://HOST:PORT of a `receive --listen`.
        #[arg(long, value_name = "DEST")]
        to: Option<String>,
        /// Listen for the receiver on HOST:PORT (printed first on stdout).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Speak the session on standard input and output (under ssh).
        #[arg(long)]
        stdio: bool,
        /// Hold what is sent to this many bytes per second.
        #[arg(long, value_name = "BYTES_PER_S", default_value_t = 0)]
        rate_limit: u64,
        /// Compress DATA frames with zstd when the receiver can decompress
        /// them (it says so in the handshake; an older one gets plain
        /// frames): the receiver writes the original bytes.
        #[arg(long)]
        compress: bool,
        /// With --to over ssh: the remote side applies the btrfs stream
        /// into the directory named (`receive --apply`) instead of keeping
        /// it as a file.
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        opts: TransferOpts,
    },
    /// Receive a stream from `send` into OUT: units are written to
    /// OUT.part and acknowledged once fsync'd with a state file beside it
    /// (OUT.part.state); run again after a crash or kill, it resumes there.
    /// OUT appears once the stream is complete and verified.
    #[command(after_help = EXIT_CODES, group(clap::ArgGroup::new("peer").args(["from", "listen", "stdio"])))]
    Receive {
        /// The file to make (with --apply: the directory to apply into).
        out: PathBuf,
        /// Where the sender is: [user@]host:SOURCE or
        /// ssh://[user@]host[:port]/SOURCE (runs `proto-stream send --stdio
        /// SOURCE` there through ssh), or tcp://HOST:PORT of a
        /// `send --listen`.
        #[arg(long, value_name = "SRC", required_unless_present_any = ["listen", "stdio", "abort"])]
        from: Option<String>,
        /// Listen for the sender on HOST:PORT (printed first on stdout).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Speak the session on standard input and output (under ssh).
        #[arg(long)]
        stdio: bool,
        /// Drop the partial transfer of OUT (OUT.part and its state).
        #[arg(long, conflicts_with = "peer")]
        abort: bool,
        /// The contexts to receive, by name or id, comma-separated.
        #[arg(long, value_name = "A,B")]
        contexts: Option<String>,
        /// Feed the verified stream to `btrfs receive DIR` as it arrives
        /// (OUT is kept too). After a restart, a subvolume the previous
        /// run left half received is deleted and OUT.part fed again: btrfs
        /// receive cannot continue a subvolume. One snapshot per stream.
        #[arg(long, value_name = "DIR")]
        btrfs_receive: Option<PathBuf>,
        /// Apply the btrfs stream into the directory OUT as it arrives
        /// (as `apply` does), keeping no copy of it: a unit is acknowledged
        /// once it is applied and durable, and a restarted receiver goes on
        /// from what it applied.
        #[arg(long, conflicts_with = "btrfs_receive")]
        apply: bool,
        #[command(flatten)]
        opts: TransferOpts,
    },
    /// Fetch a stream from `serve` into a file, reconnecting after
    /// failures. Every unit is checked before it is written. Prints the
    /// bytes received, the bytes resent and the reconnects.
    Fetch {
        /// Address of the server (HOST:PORT).
        addr: String,
        #[command(flatten)]
        opts: FetchOpts,
    },
}

/// Options of `serve`.
#[derive(clap::Args)]
struct ServeOpts {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the address
    /// is printed first on stdout).
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Fault injection: drop each connection after it carried this many
    /// bytes (written by the sender).
    #[arg(long, value_name = "BYTES")]
    drop_every: Option<u64>,
    /// Fault injection: after sending this many payload bytes, drop the
    /// connection and forget the transfer (window and position), as a
    /// restarted sender would; the receiver resumes from its checkpoint
    /// token. Once.
    #[arg(long, value_name = "BYTES")]
    kill_sender_after: Option<u64>,
    /// Window of unacknowledged bytes kept for resending.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    window: usize,
    /// Window of unacknowledged units kept for resending.
    #[arg(long, value_name = "N", default_value_t = 16 * 1024)]
    window_units: usize,
    /// A checkpoint token goes to the receiver every this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    token_every: u64,
    /// A safe point every K units (see `chunk`).
    #[arg(long, value_name = "K", default_value_t = 1)]
    safe_every: u64,
    /// Give up (exit 1) when no transfer completed within this many
    /// seconds; 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    timeout: f64,
    /// A connection that stays silent this long is dropped; 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    io_timeout: f64,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Exit codes of `send` and `receive`.
const EXIT_CODES: &str = "Exit status: 0 done; 1 bad input or another failure; 2 usage; 3 refused by the peer; 4 gave up reconnecting; 5 local I/O error.";

/// Options shared by `send` and `receive`.
#[derive(clap::Args)]
struct TransferOpts {
    /// Allow plain TCP beyond loopback without --key (unauthenticated:
    /// whoever connects gets or gives the stream).
    #[arg(long)]
    insecure: bool,
    /// A file holding a pre-shared key (at least 16 bytes; a trailing
    /// newline is dropped): TCP connections are authenticated both ways
    /// (HMAC-SHA-256 challenge-response over fresh nonces) before a byte of
    /// the stream moves, and then allowed beyond loopback. A peer without
    /// the key is refused; a listener goes on waiting for the right one.
    /// Authenticated, not encrypted: use ssh on paths you do not trust.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Keep reconnecting (or waiting for the peer) this many seconds
    /// without progress.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    retry_for: f64,
    /// A connection that stays silent this long is dropped; 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    io_timeout: f64,
    /// Print the summary as JSON (on stderr with --stdio).
    #[arg(long)]
    json: bool,
    /// The ssh command for [user@]host:PATH and ssh:// peers, split at
    /// whitespace (as rsync's -e).
    #[arg(short = 'e', long = "rsh", value_name = "CMD", default_value = "ssh")]
    rsh: String,
    /// The proto-stream program on the remote host (as rsync's
    /// --rsync-path). The remote command is exactly
    /// `PROG receive --stdio PATH` (for send) or `PROG send --stdio PATH`
    /// (for receive), words with other characters than
    /// [A-Za-z0-9_./@%+=:,-] single-quoted: what an authorized_keys
    /// command= filter can allow.
    #[arg(long, value_name = "PROG", default_value = "proto-stream")]
    remote_path: String,
}

impl TransferOpts {
    fn common<'a>(
        &'a self,
        to: &'a Option<String>,
        listen: &'a Option<String>,
    ) -> Result<transfer::Common<'a>, Failure> {
        let key = match &self.key {
            None => None,
            Some(p) => {
                let mut k = std::fs::read(p).map_err(|e| Failure::io(p.display(), e))?;
                while k.last().is_some_and(|b| b.is_ascii_whitespace()) {
                    k.pop();
                }
                if k.len() < proto_stream::session::auth::MIN_KEY_LEN {
                    return Err(Failure::ShortKey(p.display().to_string(), k.len()));
                }
                Some(k)
            }
        };
        Ok(transfer::Common {
            key,
            peer: match (to, listen) {
                (Some(t), _) => transfer::Peer::To(t),
                (None, Some(l)) => transfer::Peer::Listen(l),
                (None, None) => transfer::Peer::Stdio,
            },
            rsh: &self.rsh,
            remote_path: &self.remote_path,
            insecure: self.insecure,
            retry_for: self.retry_for,
            io_timeout: self.io_timeout,
            json: self.json,
        })
    }
}

/// Options of `fetch`.
#[derive(clap::Args)]
struct FetchOpts {
    /// The file to write (created or truncated).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The contexts to fetch, by name or id, comma-separated (default:
    /// all; `serve` prints them). Streams come in the file's order.
    #[arg(long, value_name = "A,B")]
    contexts: Option<String>,
    /// Fault injection: drop each connection after it carried this many
    /// bytes (read by the receiver).
    #[arg(long, value_name = "BYTES")]
    drop_every: Option<u64>,
    /// Keep trying to connect for this many seconds without progress.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    retry_for: f64,
    /// A connection that stays silent this long is dropped; 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    io_timeout: f64,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Options shared by `chunk` and `resume`.
#[derive(clap::Args)]
struct ChunkOpts {
    /// Largest chunk, in bytes. Two buffers of this size are in memory
    /// (one is written while the next is filled); one above 64 MiB.
    #[arg(long, value_name = "N")]
    buffer_size: usize,
    /// Directory for the chunks and tokens (made if missing).
    #[arg(long, value_name = "D")]
    out_dir: PathBuf,
    /// Stop after M chunks, as a crash would.
    #[arg(long, value_name = "M")]
    stop_after: Option<u64>,
    /// At most this many units (or pieces) per chunk, whatever the buffer
    /// size: 1 gives a token at every possible point (for tests).
    #[arg(long, value_name = "N")]
    units_per_chunk: Option<u64>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl ChunkOpts {
    fn args<'a>(&'a self, file: &'a Path, safe_every: u64) -> checkpoint::ChunkArgs<'a> {
        checkpoint::ChunkArgs {
            file,
            buffer_size: self.buffer_size,
            out_dir: &self.out_dir,
            stop_after: self.stop_after,
            safe_every,
            units_per_fill: self.units_per_chunk,
            json: self.json,
        }
    }
}

/// Length of `file` for a progress bar (0 when unknown).
pub(crate) fn file_len(file: &Path) -> u64 {
    std::fs::metadata(file).map_or(0, |m| m.len())
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub(crate) fn progress(len: Option<u64>) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    // With a length: bytes of it, rate, ETA, a bar; without: bytes and rate.
    let template = if len.is_some() {
        "{bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {wide_bar}"
    } else {
        "{bytes} {bytes_per_sec} {elapsed}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb
}

/// Why a command failed: the lower layers' own errors, kept with their
/// types and positions, plus what the command itself refuses.
pub(crate) enum Failure {
    Stream(Error),
    Native(proto_stream::native::Error),
    Header(proto_stream::header::Error),
    /// I/O on a named place (a file, a directory, an address, standard
    /// output), at a byte offset when a read failed part way.
    Io {
        place: String,
        offset: Option<u64>,
        source: io::Error,
    },
    /// A checkpoint token that does not decode or encode.
    Token(proto_stream::checkpoint::TokenError),
    /// A checkpoint or emission error of the stream's format, with its
    /// command index and byte offset where it names them.
    Emit {
        source: Box<dyn std::error::Error + Send + Sync>,
        index: Option<u64>,
        offset: Option<u64>,
    },
    /// A session ended (`serve`), or a fetch stopped short (`fetch`; the
    /// output holds `units` valid units).
    Session(proto_stream::session::SessionError),
    Fetch {
        from: String,
        error: proto_stream::session::FetchError,
        out: String,
        units: u64,
    },
    /// Standard input where the command needs a file it can seek in.
    NeedsSeekableFile,
    /// `--buffer-size 0`.
    ZeroBufferSize,
    /// `chunk` into a directory that already holds chunks.
    ChunksExist {
        dir: String,
        first: String,
    },
    /// `resume` into a directory whose chunks would mix with the resumed.
    ChunksWouldMix {
        dir: String,
        found: String,
        first: u64,
    },
    /// `compare` of streams of two formats.
    FormatsDiffer {
        a: String,
        a_native: bool,
        b: String,
        b_native: bool,
    },
    /// A peer address refused or unusable (`send`, `receive`).
    Address(transfer::AddressError),
    /// The receiver's kept transfer (`receive`).
    Durable(proto_stream::session::DurableError),
    /// `send - --stdio`: standard input cannot be the stream and the
    /// connection.
    StdinTwice,
    /// `--key FILE` holds fewer than 16 bytes.
    ShortKey(String, usize),
    /// The peer refused the connection before any session (a key that
    /// does not match).
    Refused(io::Error),
    /// No progress for `--retry-for` seconds (`send`, `receive --listen`).
    GaveUp {
        waited: f64,
        last: Box<proto_stream::session::SessionError>,
    },
    /// `apply` stopped.
    Apply(proto_stream::apply::ApplyError),
    /// A failure in one of two streams (`compare`).
    Side(&'static str, Box<Failure>),
}

impl Failure {
    /// An I/O error on `place`.
    pub(crate) fn io(place: impl std::fmt::Display, source: io::Error) -> Failure {
        Failure::Io {
            place: place.to_string(),
            offset: None,
            source,
        }
    }

    /// (command index, byte offset) of the fault, where known.
    fn position(&self) -> (Option<u64>, Option<u64>) {
        match self {
            Failure::Stream(e) => (e.command_index(), e.offset()),
            Failure::Native(e) => (e.command_index(), e.offset()),
            Failure::Header(e) => (None, e.offset()),
            Failure::Emit { index, offset, .. } => (*index, *offset),
            Failure::Io { offset, .. } => (None, *offset),
            Failure::Session(e) => (None, e.offset()),
            Failure::Side(_, f) => f.position(),
            _ => (None, None),
        }
    }
}

/// Adds `error`, `command_index` and `byte_offset` to a `--json` summary.
pub(crate) fn add_error(v: &mut serde_json::Value, r: &Result<(), Failure>) {
    let Err(e) = r else { return };
    v["error"] = e.to_string().into();
    let (index, offset) = e.position();
    if let Some(i) = index {
        v["command_index"] = i.into();
    }
    if let Some(o) = offset {
        v["byte_offset"] = o.into();
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Stream(e) => e.fmt(f),
            Failure::Native(e) => e.fmt(f),
            Failure::Header(e) => write!(f, "stream header: {e}"),
            Failure::Io {
                place,
                offset: Some(o),
                source,
            } => write!(f, "{place}: read failed at byte offset {o}: {source}"),
            Failure::Io { place, source, .. } => write!(f, "{place}: {source}"),
            Failure::Token(e) => write!(f, "token: {e}"),
            Failure::Emit { source, .. } => source.fmt(f),
            Failure::Session(e) => e.fmt(f),
            Failure::Fetch {
                from,
                error,
                out,
                units,
            } => {
                let hint = match error {
                    proto_stream::session::FetchError::Stalled { .. } => {
                        " (is --drop-every smaller than a unit?)"
                    }
                    _ => "",
                };
                write!(
                    f,
                    "fetch from {from}: {error}{hint}; {out} holds the {units} valid units received before"
                )
            }
            Failure::NeedsSeekableFile => f.write_str(
                "this command needs a stream file it can seek in, not standard input",
            ),
            Failure::ZeroBufferSize => f.write_str("--buffer-size must be at least 1"),
            Failure::ChunksExist { dir, first } => write!(
                f,
                "{dir} already holds chunks ({first} first): use an empty directory, or `resume` to continue a run"
            ),
            Failure::ChunksWouldMix { dir, found, first } => write!(
                f,
                "{dir} already holds {found}: it would mix with the resumed chunks (numbered from {first}); remove the chunks after the token's, or use another --out-dir"
            ),
            Failure::FormatsDiffer {
                a,
                a_native,
                b,
                b_native,
            } => {
                let name = |n: bool| {
                    if n {
                        "a native stream"
                    } else {
                        "a btrfs send stream"
                    }
                };
                write!(
                    f,
                    "A ({a}) is {} and B ({b}) is {}: streams of different formats never carry the same commands",
                    name(*a_native),
                    name(*b_native)
                )
            }
            Failure::Side(side, e) => write!(f, "stream {side}: {e}"),
            Failure::Apply(e) => e.fmt(f),
            Failure::Address(e) => e.fmt(f),
            Failure::ShortKey(p, n) => write!(
                f,
                "{p}: a key of {n} bytes; at least {} are needed",
                proto_stream::session::auth::MIN_KEY_LEN
            ),
            Failure::Refused(e) => write!(f, "refused: {e}"),
            Failure::StdinTwice => f.write_str(
                "`send - --stdio`: standard input cannot be both the stream and the connection",
            ),
            Failure::Durable(e) => e.fmt(f),
            Failure::GaveUp { waited, last } => write!(
                f,
                "gave up after {waited} s without progress (--retry-for); last: {last}"
            ),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Stream(e)
    }
}

/// The exit status of `send` and `receive` ([`EXIT_CODES`]), the error
/// printed first.
fn exit_code(r: Result<(), Failure>) -> ExitCode {
    use proto_stream::session::{FetchError, SessionError};
    let Err(e) = r else {
        return ExitCode::SUCCESS;
    };
    eprintln!("proto-stream: error: {e}");
    let session = |s: &SessionError| match s {
        SessionError::Refused { .. } => 3,
        SessionError::Output(_) => 5,
        _ => 1,
    };
    ExitCode::from(match &e {
        Failure::Session(s) => session(s),
        Failure::Fetch { error, .. } => match error {
            FetchError::Unreachable { .. } | FetchError::Stalled { .. } => 4,
            FetchError::Session(s) => session(s),
            FetchError::Refused(_) => 3,
            _ => 1,
        },
        Failure::GaveUp { .. } => 4,
        Failure::Refused(_) => 3,
        Failure::Io { .. } => 5,
        Failure::Durable(proto_stream::session::DurableError::Io { .. }) => 5,
        _ => 1,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Dump { file } => dump(file),
        Cmd::Verify { file, json } => verify(file, *json),
        Cmd::Inspect { file, json } => inspect::inspect(file, *json),
        Cmd::Apply {
            stream,
            dir,
            sync_every,
            max_file_size,
            subvolumes,
            crash_after,
            json,
        } => apply::apply(
            stream,
            dir,
            &proto_stream::apply::ApplyOptions {
                sync_every: *sync_every,
                max_file_size: *max_file_size,
                subvolumes: *subvolumes,
            },
            *crash_after,
            *json,
        ),
        Cmd::Chunk {
            file,
            safe_every,
            opts,
        } => checkpoint::chunk(&opts.args(file, *safe_every)),
        Cmd::Resume {
            file,
            token,
            start_index,
            opts,
        } => checkpoint::resume(&opts.args(file, 1), token, *start_index),
        Cmd::Serve { file, opts: o } => session::serve(&session::ServeArgs {
            file,
            listen: &o.listen,
            drop_every: o.drop_every,
            kill_sender_after: o.kill_sender_after,
            window_bytes: o.window,
            window_messages: o.window_units,
            token_every: o.token_every,
            safe_every: o.safe_every,
            timeout: o.timeout,
            io_timeout: o.io_timeout,
            json: o.json,
        }),
        Cmd::Send {
            source,
            btrfs,
            parent,
            proto,
            to,
            listen,
            stdio: _,
            rate_limit,
            compress,
            apply,
            opts,
        } => {
            let r = opts.common(to, listen).and_then(|common| {
                transfer::send(&transfer::SendArgs {
                    source,
                    common,
                    rate_limit: *rate_limit,
                    compress: *compress,
                    apply: *apply,
                    btrfs: *btrfs,
                    parent: parent.as_deref(),
                    proto: *proto,
                })
            });
            return exit_code(r);
        }
        Cmd::Receive {
            out,
            from,
            listen,
            stdio: _,
            abort,
            contexts,
            btrfs_receive,
            apply,
            opts,
        } => {
            let r = if *abort {
                transfer::abort(out)
            } else {
                opts.common(from, listen).and_then(|common| {
                    transfer::receive(&transfer::ReceiveArgs {
                        out,
                        common,
                        contexts: contexts.as_deref(),
                        btrfs_receive: btrfs_receive.as_deref(),
                        apply: *apply,
                    })
                })
            };
            return exit_code(r);
        }
        Cmd::Fetch { addr, opts: o } => session::fetch(&session::FetchArgs {
            addr,
            out: &o.out,
            contexts: o.contexts.as_deref(),
            drop_every: o.drop_every,
            retry_for: o.retry_for,
            io_timeout: o.io_timeout,
            json: o.json,
        }),
        Cmd::Compare { a, b, json } => {
            // Like cmp(1): 0 equal, 1 different, 2 trouble.
            return match checkpoint::compare(a, b, *json) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("proto-stream: error: {e}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proto-stream: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens `file` and tells whether it is a native stream (by its magic);
/// the input returned still starts at byte 0.
fn open_sniffed(file: &Path) -> Result<(bool, input::Opened), Failure> {
    let (head, input) = input::sniff(file, NATIVE_MAGIC.len())?;
    Ok((head == NATIVE_MAGIC, input))
}

/// Writes `buf` to stdout; a closed pipe ends the program quietly.
pub(crate) fn flush_out(out: &mut impl Write, buf: &mut Vec<u8>) -> Result<(), Failure> {
    match out.write_all(buf) {
        Ok(()) => {
            buf.clear();
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Failure::io("writing standard output", e)),
    }
}

fn dump(file: &Path) -> Result<(), Failure> {
    let (is_native, input) = open_sniffed(file)?;
    if is_native {
        return native::dump(input);
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut dumper = Dumper::new();
    let r = input::each_event(file, input, |v| {
        match v {
            Visit::Stream { .. } => {}
            // Like btrfs receive --dump, nothing after the first END is read.
            Visit::Command(cmd) if cmd.is_end() => return Ok(false),
            Visit::Command(cmd) => match dumper.dump(cmd, &mut buf)? {
                true => {}
                false => eprintln!(
                    "proto-stream: warning: command {} at byte offset {}: unknown command type {} skipped (as btrfs receive --dump does)",
                    cmd.index(),
                    cmd.offset(),
                    CommandType(cmd.cmd())
                ),
            },
        }
        if buf.len() >= 256 * 1024 {
            flush_out(&mut out, &mut buf)?;
        }
        Ok(true)
    });
    flush_out(&mut out, &mut buf)?;
    if let input::End::Stopped {
        offset,
        more_input: true,
    } = r?
    {
        eprintln!(
            "proto-stream: note: input continues after the END at byte offset {offset}; only the first stream is dumped (as btrfs receive --dump does)"
        );
    }
    Ok(())
}

#[derive(Default)]
struct Summary {
    version: u32,
    streams: u64,
    commands: u64,
    data_bytes: u64,
    by_type: TypeCounts,
}

fn verify(file: &Path, json: bool) -> Result<(), Failure> {
    let (is_native, input) = open_sniffed(file)?;
    if is_native {
        return native::verify(input, json);
    }
    let mut s = Summary::default();
    let mut bytes = 0;
    let r = verify_into(file, input, &mut s, &mut bytes);
    if json {
        let mut v = serde_json::json!({
            "ok": r.is_ok(),
            "format": "btrfs",
            "version": s.version,
            "streams": s.streams,
            "commands": s.commands,
            "bytes": bytes,
            "data_bytes": s.data_bytes,
            "commands_by_type": s.by_type.named(|t| CommandType(t).to_string()),
        });
        add_error(&mut v, &r);
        // A closed stdout is not worth a panic; the exit status still tells.
        let _ = writeln!(io::stdout(), "{v}");
    } else if r.is_ok() {
        let _ = writeln!(
            io::stdout(),
            "ok: btrfs send stream v{}, {} stream(s), {} commands, {} bytes ({} data bytes)",
            s.version,
            s.streams,
            s.commands,
            bytes,
            s.data_bytes
        );
    }
    r
}

fn verify_into(
    file: &Path,
    input: input::Opened,
    s: &mut Summary,
    bytes: &mut u64,
) -> Result<(), Failure> {
    let mut checker = CommandChecker::new();
    let end = input::each_event(file, input, |v| {
        match v {
            Visit::Stream { version, .. } => {
                s.streams += 1;
                s.version = s.version.max(version);
            }
            Visit::Command(cmd) => {
                if CommandType(cmd.cmd()) == CommandType::UNSPEC {
                    return Err(Error::UnspecCommand {
                        index: cmd.index(),
                        offset: cmd.offset(),
                    }
                    .into());
                }
                if let Some(data) = checker.check(cmd).map_err(Error::Tlv)? {
                    s.data_bytes += data.len() as u64;
                }
                s.commands += 1;
                s.by_type.add(cmd.cmd());
            }
        }
        Ok(true)
    })?;
    if let input::End::Eof { bytes: n } = end {
        *bytes = n;
    }
    Ok(())
}

/// Commands counted by type into a fixed table (one slot per possible
/// type, allocated once): nothing allocated per command; named only when
/// the summary is printed.
pub(crate) struct TypeCounts(Vec<u64>);

impl Default for TypeCounts {
    fn default() -> Self {
        TypeCounts(vec![0; 1 << 16])
    }
}

impl TypeCounts {
    /// One more command of type `cmd`.
    #[inline]
    pub(crate) fn add(&mut self, cmd: u16) {
        self.0[usize::from(cmd)] += 1;
    }

    /// The types seen, named by `name`, with their counts.
    pub(crate) fn named(
        &self,
        name: impl Fn(u16) -> String,
    ) -> std::collections::BTreeMap<String, u64> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| (name(t as u16), *n))
            .collect()
    }
}
