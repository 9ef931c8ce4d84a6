//! Test support: where the real kernel btrfs send streams are.  No
//! dependencies, so any member's test can include it:
//!
//! ```ignore
//! #[path = "../../tests/support/fixtures.rs"]
//! mod fixtures;
//! ```
//!
//! (`tests/support/receive.rs` includes it too, and re-exports it.)
//!
//! # The sets
//!
//! A *set* is a directory with `full-v1`, `full-v2` (snap1), `incr-v1`,
//! `incr-v2` (snap1 -> snap2), `nodata-v2` and `compressed-v2` streams of one
//! source tree, each with the `.dump` that `btrfs receive --dump` made of it,
//! and the `snap1.tree` / `snap2.tree` listings (`testdata/btrfs/README.md`):
//!
//! - [`shipped_set`]: `testdata/btrfs/small/`, in the repository, made by
//!   `scripts/mkfixtures.sh`: full streams of about 160 KB.  Always there.
//! - [`shared_set`]: `../shared/fixtures/btrfs/` next to the workspace when
//!   it exists: the same tree with larger files (full streams of 2.3 MB),
//!   an optional extra.  Its incremental and no-data streams are also
//!   shipped, alone, at the top of `testdata/btrfs/` (byte-for-byte
//!   references of the README, CI and several tests; their full parent is
//!   not shipped).
//!
//! [`sets`] is every set there is (the shipped one first); [`stream_dirs`]
//! every directory of streams (`testdata/btrfs/` first).  Neither prints
//! anything when `../shared` is missing: the shipped set has every kind of
//! stream the shared one has, so nothing is skipped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace root, whichever member's test includes this file.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("tests/support/fixtures.rs").is_file())
        .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")))
        .to_path_buf()
}

/// `testdata/btrfs/`: the streams shipped alone (`incr-v1`, `incr-v2`,
/// `nodata-v2` of the shared set).
pub fn testdata() -> PathBuf {
    workspace().join("testdata/btrfs")
}

/// `testdata/btrfs/small/`: the complete small set in the repository.
pub fn shipped_set() -> PathBuf {
    let d = testdata().join("small");
    assert!(
        d.join("full-v2.stream").is_file(),
        "{}: the shipped fixture set is missing",
        d.display()
    );
    d
}

/// `../shared/fixtures/btrfs/` next to the workspace, when it is there.
pub fn shared_set() -> Option<PathBuf> {
    let d = workspace().join("../shared/fixtures/btrfs");
    d.join("full-v2.stream").is_file().then_some(d)
}

/// Every complete set: the shipped one, then the shared one if present.
pub fn sets() -> Vec<PathBuf> {
    let mut out = vec![shipped_set()];
    out.extend(shared_set());
    out
}

/// Every directory of real streams: `testdata/btrfs/`, then [`sets`].
pub fn stream_dirs() -> Vec<PathBuf> {
    let mut out = vec![testdata()];
    out.extend(sets());
    out
}

/// A short name of a set or stream directory for messages: `shipped`,
/// `shared` or `testdata`.
pub fn label(dir: &Path) -> &'static str {
    if dir.ends_with("testdata/btrfs/small") {
        "shipped"
    } else if dir.ends_with("testdata/btrfs") {
        "testdata"
    } else {
        "shared"
    }
}

/// The `.stream` files of `dir`, sorted by name.
pub fn streams_in(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "stream"))
        .collect();
    names.sort();
    names
}
