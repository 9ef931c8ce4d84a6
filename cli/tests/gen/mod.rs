//! Stream generators the differential tests share (`progs_diff.rs`: dump
//! against `btrfs receive --dump`; `apply.rs`: apply against `btrfs
//! receive`): typed and raw commands into a stream, and seeded random
//! streams of every command type with awkward paths and values.

#![allow(dead_code)]

use proto_stream::btrfs::{profile, BtrfsCommand as B, StreamWriter};
use proto_stream::tlv::{encode_command, AttrValue, Timespec};

pub fn ts(sec: i64) -> Timespec {
    Timespec {
        sec: sec as u64,
        nsec: 123,
    }
}

/// Builds a stream of `version` from typed commands and raw extras.
pub enum Item<'a> {
    Typed(B<'a>),
    Raw(u16, Vec<AttrValue<'a>>),
}

pub fn stream(version: u32, items: &[Item<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let w = StreamWriter::new(version, &mut out).unwrap();
    let p = profile(version).unwrap();
    for it in items {
        match it {
            Item::Typed(c) => {
                w.write(c, &mut out).unwrap();
            }
            Item::Raw(cmd, attrs) => {
                encode_command(&p, *cmd, attrs, &mut out).unwrap();
            }
        }
    }
    w.finish(&mut out).unwrap();
    out
}

/// Small deterministic generator (xorshift), so failures reproduce.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bytes(&mut self, max: u64, alphabet: &[u8]) -> Vec<u8> {
        (0..self.below(max + 1))
            .map(|_| alphabet[self.below(alphabet.len() as u64) as usize])
            .collect()
    }
    pub fn num(&mut self) -> u64 {
        match self.below(4) {
            0 => self.below(10),
            1 => self.below(1 << 20),
            2 => self.next(),
            _ => u64::MAX - self.below(3),
        }
    }
}

pub const PATHCHARS: &[u8] = b"ab/ .\\\n\t\x01\x07\x1b\x7f\xe9\xff-_0\x00\"'%";

pub fn random_stream(seed: u64) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let version = 1 + r.below(2) as u32;
    let mut paths: Vec<Vec<u8>> = Vec::new();
    for _ in 0..40 {
        paths.push(r.bytes(24, PATHCHARS));
    }
    let data: Vec<u8> = (0..3000).map(|i| (i * 7 % 251) as u8).collect();
    let mut items = Vec::new();
    let p = |r: &mut Rng| paths[r.below(paths.len() as u64) as usize].as_slice();
    if r.below(2) == 0 {
        items.push(Item::Typed(B::Subvol {
            path: p(&mut r),
            uuid: [r.below(256) as u8; 16],
            ctransid: r.num(),
        }));
    } else {
        items.push(Item::Typed(B::Snapshot {
            path: p(&mut r),
            uuid: [7; 16],
            ctransid: r.num(),
            clone_uuid: [0xab; 16],
            clone_ctransid: r.num(),
        }));
    }
    for _ in 0..60 {
        let c = match r.below(22) {
            0 => B::Mkfile {
                path: p(&mut r),
                ino: r.num(),
            },
            1 => B::Mkdir {
                path: p(&mut r),
                ino: r.num(),
            },
            2 => B::Mknod {
                path: p(&mut r),
                ino: r.num(),
                rdev: r.num(),
                mode: r.num(),
            },
            3 => B::Mkfifo {
                path: p(&mut r),
                ino: r.num(),
                rdev: Some(0),
                mode: Some(0o10644),
            },
            4 => B::Mksock {
                path: p(&mut r),
                ino: r.num(),
                rdev: None,
                mode: None,
            },
            5 => B::Symlink {
                path: p(&mut r),
                ino: r.num(),
                link: p(&mut r),
            },
            6 => B::Rename {
                path: p(&mut r),
                to: p(&mut r),
            },
            7 => B::Link {
                path: p(&mut r),
                link: p(&mut r),
            },
            8 => B::Unlink { path: p(&mut r) },
            9 => B::Rmdir { path: p(&mut r) },
            10 => B::SetXattr {
                path: p(&mut r),
                name: p(&mut r),
                data: p(&mut r),
            },
            11 => B::RemoveXattr {
                path: p(&mut r),
                name: p(&mut r),
            },
            12 => B::Write {
                path: p(&mut r),
                offset: r.num(),
                data: &data[..r.below(3000) as usize],
            },
            13 => B::Clone {
                path: p(&mut r),
                offset: r.num(),
                len: r.below(1 << 31),
                clone_uuid: [1; 16],
                clone_ctransid: r.num(),
                clone_path: p(&mut r),
                clone_offset: r.num(),
            },
            14 => B::Truncate {
                path: p(&mut r),
                size: r.num(),
            },
            15 => B::Chmod {
                path: p(&mut r),
                mode: r.num(),
            },
            16 => B::Chown {
                path: p(&mut r),
                uid: r.num(),
                gid: r.num(),
            },
            17 => {
                let mut t = || ts(r.below(1 << 40) as i64 - (1 << 39));
                B::Utimes {
                    path: paths[3].as_slice(),
                    atime: t(),
                    mtime: t(),
                    ctime: t(),
                    otime: None,
                }
            }
            18 => B::UpdateExtent {
                path: p(&mut r),
                offset: r.num(),
                size: r.num(),
            },
            19 if version >= 2 => B::Fallocate {
                path: p(&mut r),
                mode: r.next() as u32,
                offset: r.num(),
                size: r.num(),
            },
            20 if version >= 2 => B::Fileattr {
                path: p(&mut r),
                attr: r.num(),
            },
            21 if version >= 2 => B::EncodedWrite {
                path: p(&mut r),
                offset: r.num(),
                unencoded_file_len: r.num(),
                unencoded_len: r.num(),
                unencoded_offset: r.num(),
                compression: (r.below(2) == 0).then(|| r.next() as u32),
                encryption: (r.below(2) == 0).then_some(0),
                data: &data[..r.below(3000) as usize],
            },
            _ => B::Unlink { path: p(&mut r) },
        };
        items.push(Item::Typed(c));
    }
    stream(version, &items)
}

/// What a [`valid_stream`] entry is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum K {
    Dir,
    File,
    Link,
    Fifo,
}

/// A seeded random stream that a receiver can carry out (mostly): a model
/// of the tree picks each command among those valid in the current state
/// (new names in existing directories, renames of files and whole
/// directories, never into themselves, over existing files too, hard links,
/// removals, writes, truncates, clones of whole files, modes, owners,
/// xattrs), with now and then one that must fail (a missing path, a
/// directory that is not empty, an xattr that is not there), which ends the
/// stream. Every entry's times are set at the end, deepest first, as the
/// kernel does.
pub fn valid_stream(seed: u64) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let mut tree: Vec<(Vec<u8>, K)> = Vec::new();
    // Inode of each entry (hard links share one), and the xattrs set.
    let mut inos: Vec<u32> = Vec::new();
    let mut xattrs: std::collections::HashSet<(u32, String)> = Default::default();
    // The path btrfs receive keeps open for writing: it reopens it only
    // when a write or clone names another path (btrfs-progs 6.2
    // `open_inode_for_write`), so after a rename over that path it would go
    // on writing to the replaced file. The kernel never sends that; these
    // streams never rename over it either.
    let mut write_open: Option<Vec<u8>> = None;
    let mut names = 0u32;
    let mut fresh = |r: &mut Rng| {
        names += 1;
        let name = match r.below(4) {
            0 => format!("n{names}").into_bytes(),
            1 => format!("é ☃ {names}").into_bytes(),
            2 => {
                let mut v = format!("{names}-").into_bytes();
                v.resize(255, b'x');
                v
            }
            _ => format!("o{}-{}-0", 256 + names, seed % 100).into_bytes(),
        };
        (name, names)
    };
    let join = |d: &[u8], n: &[u8]| {
        if d.is_empty() {
            n.to_vec()
        } else {
            [d, b"/", n].concat()
        }
    };
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 253) as u8).collect();
    let mut out = Vec::new();
    let version = 1 + r.below(2) as u32;
    let w = StreamWriter::new(version, &mut out).unwrap();
    let put = |c: B<'_>, out: &mut Vec<u8>| {
        w.write(&c, out).unwrap();
    };
    put(
        B::Subvol {
            path: b"snap",
            uuid: [(seed % 251) as u8; 16],
            ctransid: seed,
        },
        &mut out,
    );
    let pick = |r: &mut Rng, tree: &[(Vec<u8>, K)], want: &dyn Fn(K) -> bool| -> Option<usize> {
        let idx: Vec<usize> = (0..tree.len()).filter(|&i| want(tree[i].1)).collect();
        (!idx.is_empty()).then(|| idx[r.below(idx.len() as u64) as usize])
    };
    for _ in 0..80 {
        let dirs: Vec<Vec<u8>> = std::iter::once(Vec::new())
            .chain(tree.iter().filter(|e| e.1 == K::Dir).map(|e| e.0.clone()))
            .collect();
        let d = dirs[r.below(dirs.len() as u64) as usize].clone();
        match r.below(20) {
            0..=4 => {
                let (name, ino) = fresh(&mut r);
                let p = join(&d, &name);
                let (k, c) = match r.below(7) {
                    0 | 1 => (K::File, B::Mkfile { path: &p, ino: 0 }),
                    2 | 3 => (K::Dir, B::Mkdir { path: &p, ino: 0 }),
                    4 => (
                        K::Fifo,
                        B::Mkfifo {
                            path: &p,
                            ino: 0,
                            rdev: Some(0),
                            mode: Some(0o10600),
                        },
                    ),
                    _ => (
                        K::Link,
                        B::Symlink {
                            path: &p,
                            ino: 0,
                            link: b"../some/where",
                        },
                    ),
                };
                put(c, &mut out);
                tree.push((p, k));
                inos.push(ino);
            }
            5 | 6 => {
                let Some(i) = pick(&mut r, &tree, &|_| true) else {
                    continue;
                };
                let from = tree[i].0.clone();
                // Not into itself.
                if d == from || d.starts_with(&[&from[..], b"/"].concat()) {
                    continue;
                }
                let over = if tree[i].1 != K::Dir && r.below(3) == 0 {
                    pick(&mut r, &tree, &|k| k == K::File).filter(|&j| {
                        j != i && inos[j] != inos[i] && write_open.as_ref() != Some(&tree[j].0)
                    })
                } else {
                    None
                };
                let to = match over {
                    Some(j) => tree[j].0.clone(),
                    None => join(&d, &fresh(&mut r).0),
                };
                put(
                    B::Rename {
                        path: &from,
                        to: &to,
                    },
                    &mut out,
                );
                if let Some(j) = over {
                    tree.remove(j);
                    inos.remove(j);
                }
                let prefix = [&from[..], b"/"].concat();
                for e in tree.iter_mut() {
                    if e.0 == from {
                        e.0 = to.clone();
                    } else if e.0.starts_with(&prefix) {
                        e.0 = [&to[..], b"/", &e.0[prefix.len()..]].concat();
                    }
                }
            }
            7 => {
                let Some(i) = pick(&mut r, &tree, &|k| k == K::File) else {
                    continue;
                };
                let p = join(&d, &fresh(&mut r).0);
                put(
                    B::Link {
                        path: &p,
                        link: &tree[i].0.clone(),
                    },
                    &mut out,
                );
                tree.push((p, K::File));
                inos.push(inos[i]);
            }
            8 => {
                let Some(i) = pick(&mut r, &tree, &|k| k != K::Dir) else {
                    continue;
                };
                let p = tree.remove(i).0;
                inos.remove(i);
                put(B::Unlink { path: &p }, &mut out);
            }
            9 => {
                let Some(i) = pick(&mut r, &tree, &|k| k == K::Dir) else {
                    continue;
                };
                let p = tree[i].0.clone();
                let prefix = [&p[..], b"/"].concat();
                let empty = !tree.iter().any(|e| e.0.starts_with(&prefix));
                if !empty && r.below(10) != 0 {
                    continue;
                }
                put(B::Rmdir { path: &p }, &mut out);
                if !empty {
                    // Must fail in both: the stream ends here.
                    break;
                }
                tree.remove(i);
                inos.remove(i);
            }
            10..=12 => {
                let Some(i) = pick(&mut r, &tree, &|k| k == K::File) else {
                    continue;
                };
                let len = r.below(3000) as usize;
                write_open = Some(tree[i].0.clone());
                put(
                    B::Write {
                        path: &tree[i].0.clone(),
                        offset: r.below(1 << 16),
                        data: &data[..len],
                    },
                    &mut out,
                );
            }
            13 => {
                let Some(i) = pick(&mut r, &tree, &|k| k == K::File) else {
                    continue;
                };
                put(
                    B::Truncate {
                        path: &tree[i].0.clone(),
                        size: r.below(1 << 17),
                    },
                    &mut out,
                );
            }
            14 => {
                // A whole file cloned into a new one (a range of 0: to the
                // source's end), as btrfs accepts it: its end unaligned only
                // at the end of both files.
                let Some(j) = pick(&mut r, &tree, &|k| k == K::File) else {
                    continue;
                };
                let (name, ino) = fresh(&mut r);
                let p = join(&d, &name);
                put(B::Mkfile { path: &p, ino: 0 }, &mut out);
                write_open = Some(p.clone());
                put(
                    B::Clone {
                        path: &p,
                        offset: 0,
                        len: 0,
                        clone_uuid: [(seed % 251) as u8; 16],
                        clone_ctransid: seed,
                        clone_path: &tree[j].0.clone(),
                        clone_offset: 0,
                    },
                    &mut out,
                );
                tree.push((p, K::File));
                inos.push(ino);
            }
            15 => {
                let Some(i) = pick(&mut r, &tree, &|k| k != K::Link) else {
                    continue;
                };
                put(
                    B::Chmod {
                        path: &tree[i].0.clone(),
                        mode: r.below(0o10000),
                    },
                    &mut out,
                );
            }
            16 => {
                let Some(i) = pick(&mut r, &tree, &|_| true) else {
                    continue;
                };
                put(
                    B::Chown {
                        path: &tree[i].0.clone(),
                        uid: r.below(70_000),
                        gid: r.below(70_000),
                    },
                    &mut out,
                );
            }
            17 => {
                let Some(i) = pick(&mut r, &tree, &|k| k == K::File || k == K::Dir) else {
                    continue;
                };
                let name = format!("user.k{}", r.below(4));
                let len = r.below(200) as usize;
                put(
                    B::SetXattr {
                        path: &tree[i].0.clone(),
                        name: name.as_bytes(),
                        data: &data[..len],
                    },
                    &mut out,
                );
                xattrs.insert((inos[i], name));
            }
            18 => {
                let Some(i) = pick(&mut r, &tree, &|k| k == K::File || k == K::Dir) else {
                    continue;
                };
                let name = format!("user.k{}", r.below(4));
                let there = xattrs.remove(&(inos[i], name.clone()));
                if !there && r.below(10) != 0 {
                    continue;
                }
                put(
                    B::RemoveXattr {
                        path: &tree[i].0.clone(),
                        name: name.as_bytes(),
                    },
                    &mut out,
                );
                if !there {
                    // Fails in both: the end.
                    break;
                }
            }
            _ => {
                // A path that is not there: fails in both.
                if r.below(40) == 0 {
                    put(
                        B::Unlink {
                            path: b"missing/file",
                        },
                        &mut out,
                    );
                    break;
                }
            }
        }
    }
    // Times last, deepest first, the root at the end.
    let t = |s: u64| Timespec {
        sec: 1_000_000_000 + s,
        nsec: 5,
    };
    let mut all: Vec<Vec<u8>> = tree.iter().map(|e| e.0.clone()).collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
    all.push(Vec::new());
    for (i, p) in all.iter().enumerate() {
        put(
            B::Utimes {
                path: p,
                atime: t(i as u64),
                mtime: t(i as u64 + 7),
                ctime: t(0),
                otime: None,
            },
            &mut out,
        );
    }
    w.finish(&mut out).unwrap();
    out
}
