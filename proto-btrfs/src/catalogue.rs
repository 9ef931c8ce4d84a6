//! The command and attribute numbers of btrfs send protocol versions 1, 2
//! and 3, as open enums: an unknown number is a value (kept, printed in hex),
//! not an error.

use core::fmt;

macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $konst:ident = $val:expr, $text:literal, since $since:literal; )* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u16);

        impl $name {
            $( $(#[$vmeta])* pub const $konst: $name = $name($val); )*

            /// Every known value, in numeric order.
            pub const ALL: &'static [$name] = &[ $( $name($val), )* ];

            /// The name btrfs-progs uses, or `None` for an unknown value.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some($text), )*
                    _ => None,
                }
            }

            /// The protocol version that introduced it, or `None` if unknown.
            pub const fn since_version(self) -> Option<u32> {
                match self.0 {
                    $( $val => Some($since), )*
                    _ => None,
                }
            }

            /// Whether the value is known to protocol `version`.
            pub const fn known_in(self, version: u32) -> bool {
                match self.since_version() {
                    Some(v) => v <= version,
                    None => false,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{:#06x}", self.0),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{}({})", stringify!($name), n),
                    None => write!(f, "{}({:#06x})", stringify!($name), self.0),
                }
            }
        }

        impl From<u16> for $name {
            fn from(v: u16) -> Self { $name(v) }
        }
        impl From<$name> for u16 {
            fn from(v: $name) -> u16 { v.0 }
        }
    };
}

open_enum! {
    /// A btrfs send command type (`BTRFS_SEND_C_*`).
    CommandType {
        /// Placeholder 0; never valid on the wire.
        UNSPEC = 0, "unspec", since 1;
        /// Start of a full send: the new subvolume.
        SUBVOL = 1, "subvol", since 1;
        /// Start of an incremental send: a snapshot of the parent.
        SNAPSHOT = 2, "snapshot", since 1;
        /// Create a regular file.
        MKFILE = 3, "mkfile", since 1;
        /// Create a directory.
        MKDIR = 4, "mkdir", since 1;
        /// Create a device node.
        MKNOD = 5, "mknod", since 1;
        /// Create a FIFO.
        MKFIFO = 6, "mkfifo", since 1;
        /// Create a socket.
        MKSOCK = 7, "mksock", since 1;
        /// Create a symlink.
        SYMLINK = 8, "symlink", since 1;
        /// Rename.
        RENAME = 9, "rename", since 1;
        /// Hard link.
        LINK = 10, "link", since 1;
        /// Unlink a file.
        UNLINK = 11, "unlink", since 1;
        /// Remove a directory.
        RMDIR = 12, "rmdir", since 1;
        /// Set an extended attribute.
        SET_XATTR = 13, "set_xattr", since 1;
        /// Remove an extended attribute.
        REMOVE_XATTR = 14, "remove_xattr", since 1;
        /// Write file data.
        WRITE = 15, "write", since 1;
        /// Clone a range from another file.
        CLONE = 16, "clone", since 1;
        /// Truncate a file.
        TRUNCATE = 17, "truncate", since 1;
        /// Change mode.
        CHMOD = 18, "chmod", since 1;
        /// Change owner.
        CHOWN = 19, "chown", since 1;
        /// Set timestamps.
        UTIMES = 20, "utimes", since 1;
        /// End of stream.
        END = 21, "end", since 1;
        /// Metadata-only extent update (`--no-data`).
        UPDATE_EXTENT = 22, "update_extent", since 1;
        /// Preallocate or punch a hole.
        FALLOCATE = 23, "fallocate", since 2;
        /// Set inode flags.
        FILEATTR = 24, "fileattr", since 2;
        /// Write compressed (encoded) data as is.
        ENCODED_WRITE = 25, "encoded_write", since 2;
        /// Enable fs-verity.
        ENABLE_VERITY = 26, "enable_verity", since 3;
    }
}

open_enum! {
    /// A btrfs send attribute type (`BTRFS_SEND_A_*`).
    AttrType {
        /// Placeholder 0; never valid on the wire.
        UNSPEC = 0, "unspec", since 1;
        /// Subvolume UUID (16 bytes).
        UUID = 1, "uuid", since 1;
        /// Subvolume ctransid (u64).
        CTRANSID = 2, "ctransid", since 1;
        /// Inode number (u64).
        INO = 3, "ino", since 1;
        /// Size (u64).
        SIZE = 4, "size", since 1;
        /// Mode bits (u64).
        MODE = 5, "mode", since 1;
        /// Owner uid (u64).
        UID = 6, "uid", since 1;
        /// Owner gid (u64).
        GID = 7, "gid", since 1;
        /// Device number (u64).
        RDEV = 8, "rdev", since 1;
        /// Change time (timespec).
        CTIME = 9, "ctime", since 1;
        /// Modification time (timespec).
        MTIME = 10, "mtime", since 1;
        /// Access time (timespec).
        ATIME = 11, "atime", since 1;
        /// Creation time (timespec).
        OTIME = 12, "otime", since 1;
        /// Extended attribute name.
        XATTR_NAME = 13, "xattr_name", since 1;
        /// Extended attribute value.
        XATTR_DATA = 14, "xattr_data", since 1;
        /// Path the command applies to.
        PATH = 15, "path", since 1;
        /// Rename target.
        PATH_TO = 16, "path_to", since 1;
        /// Link or symlink target.
        PATH_LINK = 17, "path_link", since 1;
        /// File offset (u64).
        FILE_OFFSET = 18, "file_offset", since 1;
        /// File data; from v2 on, unbounded and last.
        DATA = 19, "data", since 1;
        /// Clone source subvolume UUID.
        CLONE_UUID = 20, "clone_uuid", since 1;
        /// Clone source ctransid.
        CLONE_CTRANSID = 21, "clone_ctransid", since 1;
        /// Clone source path.
        CLONE_PATH = 22, "clone_path", since 1;
        /// Clone source offset.
        CLONE_OFFSET = 23, "clone_offset", since 1;
        /// Clone length.
        CLONE_LEN = 24, "clone_len", since 1;
        /// fallocate mode (u32).
        FALLOCATE_MODE = 25, "fallocate_mode", since 2;
        /// Inode flags (u64).
        FILEATTR = 26, "fileattr", since 2;
        /// Encoded write: length of the file range (u64).
        UNENCODED_FILE_LEN = 27, "unencoded_file_len", since 2;
        /// Encoded write: decoded length (u64).
        UNENCODED_LEN = 28, "unencoded_len", since 2;
        /// Encoded write: offset into the decoded data (u64).
        UNENCODED_OFFSET = 29, "unencoded_offset", since 2;
        /// Encoded write: compression (u32, default none).
        COMPRESSION = 30, "compression", since 2;
        /// Encoded write: encryption (u32, default none).
        ENCRYPTION = 31, "encryption", since 2;
        /// fs-verity hash algorithm (u8).
        VERITY_ALGORITHM = 32, "verity_algorithm", since 3;
        /// fs-verity block size (u32).
        VERITY_BLOCK_SIZE = 33, "verity_block_size", since 3;
        /// fs-verity salt.
        VERITY_SALT_DATA = 34, "verity_salt_data", since 3;
        /// fs-verity signature.
        VERITY_SIG_DATA = 35, "verity_sig_data", since 3;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_dense_and_versioned() {
        assert_eq!(CommandType::ALL.len(), 27);
        assert_eq!(AttrType::ALL.len(), 36);
        for (i, c) in CommandType::ALL.iter().enumerate() {
            assert_eq!(usize::from(c.0), i);
        }
        for (i, a) in AttrType::ALL.iter().enumerate() {
            assert_eq!(usize::from(a.0), i);
        }
        assert!(CommandType::UPDATE_EXTENT.known_in(1));
        assert!(!CommandType::ENCODED_WRITE.known_in(1));
        assert!(CommandType::ENCODED_WRITE.known_in(2));
        assert!(!CommandType::ENABLE_VERITY.known_in(2));
        assert!(AttrType::VERITY_SIG_DATA.known_in(3));
    }

    #[test]
    fn unknown_values_are_kept_and_printed_in_hex() {
        let c = CommandType(0x1234);
        assert_eq!(c.name(), None);
        assert_eq!(c.to_string(), "0x1234");
        assert_eq!(format!("{c:?}"), "CommandType(0x1234)");
        assert_eq!(AttrType(99).to_string(), "0x0063");
        assert_eq!(CommandType::WRITE.to_string(), "write");
    }
}
