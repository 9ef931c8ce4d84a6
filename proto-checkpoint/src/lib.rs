//! # proto-checkpoint (not yet implemented)
//!
//! Will hold checkpoint tokens, bounded-buffer emission that can be re-armed
//! from a token, seq/ack replay after a reconnect, and the comparison of two
//! streams however they were segmented (issues #4 and #5). It exports
//! nothing yet.
#![forbid(unsafe_code)]
