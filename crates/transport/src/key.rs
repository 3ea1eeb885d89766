//! The cluster key file: 32 random bytes as 64 hex digits and a newline, mode 0600.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::TryRngCore;
use rand::rngs::OsRng;

/// Bytes in a key (Noise's PSK length).
const KEY_LEN: usize = 32;

/// Bytes in a well-formed key file: two hex digits a byte, then a newline.
const FILE_LEN: usize = 2 * KEY_LEN + 1;

/// Mode bits that would let users other than the owner read the key, or replace it with one
/// they know.
const OPEN_TO_OTHERS: u32 = 0o066;

/// The secret every node of a cluster shares. Whoever holds it can start processes on every
/// node as any user, so it is as precious as root's password.
#[derive(Clone)]
pub struct ClusterKey([u8; KEY_LEN]);

/// Why a key file could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The new key file could not be created (it may already exist).
    #[error("{}: cannot create the cluster key", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The operating system gave no random bytes.
    #[error("cannot get random bytes for a cluster key")]
    Random(#[source] io::Error),
    /// The key file could not be opened or read.
    #[error("{}: cannot read the cluster key", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The key file may be read or written by users other than its owner.
    #[error("{}: mode {mode:04o} lets other users read or change the cluster key; chmod 600 it", path.display())]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is a symbolic link, which whoever owns it could point anywhere.
    #[error("{}: is a symbolic link; give the path of the key file itself", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The path is not a regular file (a FIFO would block the reader forever).
    #[error("{}: is a {kind}, not a regular file holding the cluster key", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead: `FIFO`, `socket`, `character device`, ...
        kind: &'static str,
    },
    /// The key file belongs to a user who is neither root nor the one loading it, and who
    /// could therefore change it or read it back.
    #[error("{}: owned by uid {owner}; the cluster key must belong to root or to uid {user}, who loads it", path.display())]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of the process loading it.
        user: u32,
    },
    /// The key file does not hold 64 hex digits.
    #[error("{}: not a cluster key (expected 64 hex digits and a newline, as `mosctl keygen` writes)", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

impl ClusterKey {
    /// Make a new random key and write it to `path` with mode 0600. Fails if `path` exists:
    /// replacing a cluster's key by accident would cut this node off.
    pub fn generate(path: &Path) -> Result<Self, KeyError> {
        let mut bytes = [0u8; KEY_LEN];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| KeyError::Random(io::Error::other(e)))?;
        let key = ClusterKey(bytes);
        let create = |source| KeyError::Create {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(create)?;
        file.write_all(key.to_hex().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(create)?;
        Ok(key)
    }

    /// Read the key at `path`: a regular file (not a symbolic link) owned by root or by the
    /// effective user calling, that neither group nor others may read or write, holding 64 hex
    /// digits (a trailing newline is optional). Never blocks: a FIFO put at `path` is refused.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        // O_NOFOLLOW: a link's owner could point it at another key whenever it liked.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(path)
        {
            Ok(file) => file,
            Err(e)
                if e.raw_os_error() == Some(libc::ELOOP)
                    && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink()) =>
            {
                return Err(KeyError::Symlink {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(read(e)),
        };
        // Checked on the open file, so a chmod, chown or rename in between cannot fool us.
        let meta = file.metadata().map_err(read)?;
        if !meta.is_file() {
            return Err(KeyError::NotRegular {
                path: path.to_owned(),
                kind: kind_of(meta.file_type()),
            });
        }
        let user = nix::unistd::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != user {
            return Err(KeyError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                user,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & OPEN_TO_OTHERS != 0 {
            return Err(KeyError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = Vec::with_capacity(FILE_LEN + 1);
        file.take(FILE_LEN as u64 + 1)
            .read_to_end(&mut text)
            .map_err(read)?;
        Self::from_hex(text.strip_suffix(b"\n").unwrap_or(&text)).ok_or_else(|| {
            KeyError::Malformed {
                path: path.to_owned(),
            }
        })
    }

    /// The key as Noise's pre-shared key.
    pub(crate) fn psk(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A 32-byte key for one other use of the cluster key (`label` names the use, e.g.
    /// `b"rmosix gossip v1"`), derived with HKDF-SHA256 (RFC 5869) so that no two uses share
    /// key material: whoever learns a derived key learns neither the cluster key nor any other
    /// derived key.
    pub fn derive(&self, label: &[u8]) -> [u8; KEY_LEN] {
        // Extract with a fixed salt naming the project, then expand with the use's label.
        let prk =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"rmosix cluster key").extract(&self.0);
        let mut out = [0u8; KEY_LEN];
        prk.expand(&[label], ring::hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    fn to_hex(&self) -> String {
        let mut s = rmosix_seal::hex::encode(&self.0);
        s.push('\n');
        s
    }

    fn from_hex(digits: &[u8]) -> Option<Self> {
        rmosix_seal::hex::decode(digits).map(ClusterKey)
    }

    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        ClusterKey(bytes)
    }
}

/// What a file that is not a regular one is, for an error message.
fn kind_of(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn derived_keys_differ_by_label_and_from_the_key() {
        let key = ClusterKey::from_bytes([7; KEY_LEN]);
        let gossip = key.derive(b"rmosix gossip v1");
        assert_eq!(gossip, key.derive(b"rmosix gossip v1"));
        assert_ne!(gossip, key.derive(b"rmosix other"));
        assert_ne!(&gossip, key.psk());
        assert_ne!(
            gossip,
            ClusterKey::from_bytes([8; KEY_LEN]).derive(b"rmosix gossip v1")
        );
    }

    #[test]
    fn generated_keys_are_private_random_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = ClusterKey::generate(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), FILE_LEN);
        assert!(text.ends_with('\n'));
        assert_eq!(ClusterKey::load(&path).unwrap().0, key.0);
        let other = ClusterKey::generate(&dir.path().join("key2")).unwrap();
        assert_ne!(key.0, other.0);
    }

    #[test]
    fn generate_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = ClusterKey::generate(&path).unwrap();
        let err = ClusterKey::generate(&path).unwrap_err();
        assert!(
            matches!(&err, KeyError::Create { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
        );
        assert_eq!(ClusterKey::load(&path).unwrap().0, key.0);
    }

    #[test]
    fn keys_others_can_read_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        ClusterKey::generate(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = ClusterKey::load(&path).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{}: mode {mode:04o} lets other users read or change the cluster key; \
                     chmod 600 it",
                    path.display()
                )
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        ClusterKey::load(&path).unwrap();
    }

    #[test]
    fn bad_contents_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let good = "ab".repeat(KEY_LEN);
        for bad in [
            String::new(),
            "ab".repeat(KEY_LEN - 1) + "\n",
            good.clone() + "00\n",
            "zz".repeat(KEY_LEN),
            "+a".repeat(KEY_LEN),
            good.clone() + "\n\n",
            "é".repeat(KEY_LEN),
        ] {
            fs::write(&path, &bad).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = ClusterKey::load(&path).unwrap_err();
            assert!(matches!(err, KeyError::Malformed { .. }), "{bad:?}: {err}");
        }
        fs::write(&path, &good).unwrap();
        assert_eq!(ClusterKey::load(&path).unwrap().0, [0xab; KEY_LEN]);
    }

    #[test]
    fn fifos_directories_and_links_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A blocking open would wait here for a writer that never comes.
        let err = ClusterKey::load(&fifo).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: is a FIFO, not a regular file holding the cluster key",
                fifo.display()
            )
        );
        let err = ClusterKey::load(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                KeyError::NotRegular {
                    kind: "directory",
                    ..
                }
            ),
            "{err}"
        );
        let key = dir.path().join("key");
        ClusterKey::generate(&key).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        let err = ClusterKey::load(&link).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: is a symbolic link; give the path of the key file itself",
                link.display()
            )
        );
    }

    #[test]
    fn a_key_of_another_user_is_refused() {
        let user = nix::unistd::geteuid().as_raw();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        ClusterKey::generate(&path).unwrap();
        if user != 0 {
            // Only root can give a file away; an ordinary user checks her own key loads.
            ClusterKey::load(&path).unwrap();
            return;
        }
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let err = ClusterKey::load(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: owned by uid 65534; the cluster key must belong to root or to uid 0, \
                 who loads it",
                path.display()
            )
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = ClusterKey::load(Path::new("/nonexistent/rmosix/key")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/nonexistent/rmosix/key: cannot read the cluster key"
        );
    }
}
