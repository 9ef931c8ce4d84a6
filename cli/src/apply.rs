//! `apply`: btrfs send streams applied to a directory (`proto_stream::apply`).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use proto_stream::apply::{apply as run, ApplyOptions, ApplyStats};

use crate::Failure;

pub(crate) fn apply(
    stream: &Path,
    dir: &Path,
    opts: &ApplyOptions,
    crash_after: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    let input: Box<dyn Read> = if stream == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(stream).map_err(|e| Failure::io(stream.display(), e))?)
    };
    let stats = run(input, dir, opts, |step| {
        if crash_after == Some(step.done_this_run) {
            crash();
        }
    })
    .map_err(Failure::Apply)?;
    if json {
        println!("{}", summary(&stats));
    } else {
        if let Some(r) = &stats.resumed {
            eprintln!(
                "resumed at command {} (byte offset {}), where an earlier run stopped",
                r.command, r.offset
            );
        }
        eprintln!(
            "applied {} stream{} into {}: {} commands carried out, {} found done, {} with nothing to do, {} data bytes",
            stats.streams,
            if stats.streams == 1 { "" } else { "s" },
            dir.display(),
            stats.applied,
            stats.already_done,
            stats.ignored,
            stats.data_bytes
        );
    }
    Ok(())
}

fn summary(s: &ApplyStats) -> serde_json::Value {
    serde_json::json!({
        "streams": s.streams,
        "commands": s.commands,
        "applied": s.applied,
        "already_done": s.already_done,
        "ignored": s.ignored,
        "skipped": s.skipped,
        "data_bytes": s.data_bytes,
        "syncs": s.syncs,
        "resumed_at": s.resumed.map(|r| serde_json::json!({
            "command": r.command,
            "offset": r.offset,
            "same_boot": r.same_boot,
        })),
    })
}

/// `--crash-after`: ends the process as SIGKILL would, with no cleanup.
fn crash() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort()
}
