//! Mutual authentication of a connection with a pre-shared key, before a
//! session runs on it: each side proves it holds the key without sending
//! it, over fresh nonces, so a recorded exchange replayed later fails.
//!
//! Both sides send `PSAUTH01` and a 32-byte random nonce; then each sends
//! HMAC-SHA-256(key, label || role || the peer's nonce || its own nonce),
//! the role being `I` for the side that connected and `R` for the side
//! that accepted (so that a side's proof cannot be reflected back to it),
//! and checks the peer's in constant time. Nothing of the stream moves
//! before both proofs hold. The connection is authenticated, not
//! encrypted: use ssh where the path is not trusted.

use std::io::{self, Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

const MAGIC: &[u8; 8] = b"PSAUTH01";
const NONCE: usize = 32;
const LABEL: &[u8] = b"proto-stream session authentication v1";
/// The shortest key taken.
pub const MIN_KEY_LEN: usize = 16;

/// Which end of the connection this side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It connected.
    Initiator,
    /// It accepted.
    Responder,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Initiator => b'I',
            Role::Responder => b'R',
        }
    }
    fn peer(self) -> Role {
        match self {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        }
    }
}

/// Why a connection was not authenticated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The key is too short to be one.
    #[error("the key is {len} bytes; at least {MIN_KEY_LEN} are needed")]
    ShortKey {
        /// Its length.
        len: usize,
    },
    /// The peer does not speak this authentication (no key on its side).
    #[error("the peer did not start an authenticated connection (is --key given on both sides?)")]
    NotAuthenticating,
    /// The peer's proof does not hold: it has another key, or replays an
    /// old exchange.
    #[error("the peer's proof of the key does not hold (another key, or a replay)")]
    WrongKey,
    /// The connection failed during the exchange.
    #[error("during authentication: {0}")]
    Io(#[from] io::Error),
}

impl AuthError {
    /// Whether connecting again may succeed (the connection broke).
    pub fn retryable(&self) -> bool {
        matches!(self, AuthError::Io(_))
    }
}

fn proof(
    key: &[u8],
    role: Role,
    peer_nonce: &[u8],
    own_nonce: &[u8],
) -> Result<Hmac<Sha256>, AuthError> {
    // HMAC takes keys of any length; the error cannot happen.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .map_err(|_| AuthError::ShortKey { len: key.len() })?;
    m.update(LABEL);
    m.update(&[role.byte()]);
    m.update(peer_nonce);
    m.update(own_nonce);
    Ok(m)
}

/// Authenticates `conn` as `role` with `key` (both sides must call this
/// first thing on the connection). `Ok` only when the peer proved it holds
/// the same key in this exchange.
pub fn authenticate<S: Read + Write>(
    conn: &mut S,
    key: &[u8],
    role: Role,
) -> Result<(), AuthError> {
    if key.len() < MIN_KEY_LEN {
        return Err(AuthError::ShortKey { len: key.len() });
    }
    let mut nonce = [0u8; NONCE];
    rustix::rand::getrandom(&mut nonce, rustix::rand::GetRandomFlags::empty())
        .map_err(io::Error::from)?;
    let mut hello = [0u8; 8 + NONCE];
    hello[..8].copy_from_slice(MAGIC);
    hello[8..].copy_from_slice(&nonce);
    conn.write_all(&hello)?;
    conn.flush()?;
    let mut peer = [0u8; 8 + NONCE];
    conn.read_exact(&mut peer)?;
    if &peer[..8] != MAGIC {
        return Err(AuthError::NotAuthenticating);
    }
    let peer_nonce = &peer[8..];
    let ours = proof(key, role, peer_nonce, &nonce)?
        .finalize()
        .into_bytes();
    conn.write_all(&ours)?;
    conn.flush()?;
    let mut theirs = [0u8; 32];
    conn.read_exact(&mut theirs)?;
    proof(key, role.peer(), &nonce, peer_nonce)?
        .verify_slice(&theirs)
        .map_err(|_| AuthError::WrongKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// Runs both sides over loopback TCP: their results.
    fn pair(a: &'static [u8], b: &'static [u8]) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            authenticate(&mut c, b, Role::Responder)
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = authenticate(&mut c, a, Role::Initiator);
        drop(c);
        (r, t.join().unwrap())
    }

    #[test]
    fn the_same_key_authenticates_both_ways_and_another_fails_both() {
        let (a, b) = pair(b"0123456789abcdef-key", b"0123456789abcdef-key");
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        let (a, b) = pair(b"0123456789abcdef-key", b"0123456789abcdef-KEY");
        assert!(matches!(a, Err(AuthError::WrongKey)), "{a:?}");
        assert!(matches!(b, Err(AuthError::WrongKey)), "{b:?}");
        assert!(matches!(
            pair(b"short", b"short").0,
            Err(AuthError::ShortKey { len: 5 })
        ));
    }

    /// A recorded exchange replayed to a new responder fails: its nonce is
    /// new, the old proof is not for it.
    #[test]
    fn a_replayed_exchange_is_refused() {
        let key: &[u8] = b"a key of twenty bytes";
        // Record what an honest initiator sent.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let r = authenticate(&mut c, b"a key of twenty bytes", Role::Responder);
            (r, l)
        });
        struct Tap<S>(S, Vec<u8>);
        impl<S: Read> Read for Tap<S> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.0.read(b)
            }
        }
        impl<S: Write> Write for Tap<S> {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let n = self.0.write(b)?;
                self.1.extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.0.flush()
            }
        }
        let mut tap = Tap(TcpStream::connect(addr).unwrap(), Vec::new());
        authenticate(&mut tap, key, Role::Initiator).unwrap();
        let (r, l) = t.join().unwrap();
        r.unwrap();
        let recorded = tap.1;
        // Replay it to the same listener.
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            authenticate(&mut c, b"a key of twenty bytes", Role::Responder)
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&recorded).unwrap();
        let r = t.join().unwrap();
        assert!(matches!(r, Err(AuthError::WrongKey)), "{r:?}");
    }

    #[test]
    fn a_peer_without_the_key_is_not_authenticating() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            authenticate(&mut c, b"0123456789abcdef", Role::Responder)
        });
        let mut c = TcpStream::connect(addr).unwrap();
        // A session's fixed header, as a sender without --key starts.
        c.write_all(b"PSESSION\x00\x01\x00\x01\x00\x00\x00\x00PSESSIONPSESSIONPSESSION")
            .unwrap();
        assert!(matches!(
            t.join().unwrap(),
            Err(AuthError::NotAuthenticating)
        ));
    }
}
