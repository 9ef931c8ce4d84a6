//! # proto-header (not yet implemented)
//!
//! Will hold the 16-byte native fixed header (magic, version,
//! compat_version), version negotiation, the version-specific header, features
//! and contexts (issue #3). It exports nothing yet: the btrfs profile still
//! reads its own 17-byte stream header in `proto-btrfs`, and will move here.
#![forbid(unsafe_code)]
