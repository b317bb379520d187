//! The key file: a small TOML file holding one ed25519 key pair.
//!
//! ```toml
//! # ordo key file: keep it secret, it holds an ed25519 secret key.
//! public_key = "<64 hex digits>"
//! secret_key = "<64 hex digits>"
//! ```
//!
//! Files are created with mode 0600, and a file that group or others may read is refused,
//! as ssh does, so a key that leaked through permissions is noticed before it is used.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Keypair, PublicKey};

/// Largest key file read, so a wrong path cannot make the node read a huge file.
const KEY_FILE_BYTES_MAX: u64 = 4096;

/// Problems reading or writing a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file exists and overwriting was not requested.
    #[error("key file {0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// Group or others may access the file.
    #[error(
        "key file {path} has mode {mode:04o}: group and others must have no access (run: chmod 600 {path})"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not a valid key file.
    #[error("key file {path} is malformed: {reason}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileToml {
    public_key: PublicKey,
    secret_key: String,
}

/// Writes `key` to `path` with mode 0600, synced to disk.
///
/// # Errors
/// [`KeyFileError::Exists`] when the file exists and `overwrite` is false, or
/// [`KeyFileError::Io`].
pub fn write_key_file(path: &Path, key: &Keypair, overwrite: bool) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    if !overwrite && path.exists() {
        return Err(KeyFileError::Exists(path.to_owned()));
    }
    let text = Zeroizing::new(format!(
        "# ordo key file: keep it secret, it holds an ed25519 secret key.\n\
         public_key = \"{}\"\nsecret_key = \"{}\"\n",
        key.public(),
        hex::encode(key.secret_bytes())
    ));
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path).map_err(io)?;
    // An existing file keeps its old mode on open; force 0600 either way.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads a key pair from `path`, refusing files others can read.
///
/// # Errors
/// [`KeyFileError::Permissions`] for a file with group/other access bits,
/// [`KeyFileError::Malformed`] when it does not parse or the public key does not match the
/// secret, [`KeyFileError::Io`] otherwise.
pub fn load_key_file(path: &Path) -> Result<Keypair, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let malformed = |reason: String| KeyFileError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    if meta.len() > KEY_FILE_BYTES_MAX {
        return Err(malformed(format!("larger than {KEY_FILE_BYTES_MAX} bytes")));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
    parse_key_file(&text, path)
}

/// The key pair in `text`, the content of the key file at `path` (which is not read; it
/// names the file in errors).
///
/// # Errors
/// [`KeyFileError::Malformed`] when `text` does not parse or the public key does not match
/// the secret.
pub fn parse_key_file(text: &str, path: &Path) -> Result<Keypair, KeyFileError> {
    let malformed = |reason: String| KeyFileError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let parsed: KeyFileToml =
        toml::from_str(text).map_err(|e| malformed(e.message().to_owned()))?;
    let secret_text = Zeroizing::new(parsed.secret_key);
    let mut secret = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(secret_text.trim(), secret.as_mut())
        .map_err(|e| malformed(format!("secret_key must be 64 hex digits: {e}")))?;
    let key = Keypair::from_secret(&secret);
    if key.public() != parsed.public_key {
        return Err(malformed(format!(
            "public_key {} does not belong to the secret key (which gives {})",
            parsed.public_key,
            key.public()
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.toml");
        let key = Keypair::generate();
        write_key_file(&path, &key, false).expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_key_file(&path).expect("load").public(), key.public());
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.toml");
        write_key_file(&path, &Keypair::generate(), false).expect("write");
        assert!(matches!(
            write_key_file(&path, &Keypair::generate(), false),
            Err(KeyFileError::Exists(_))
        ));
    }

    #[test]
    fn refuses_world_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.toml");
        write_key_file(&path, &Keypair::generate(), false).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_key_file(&path).expect_err("must refuse");
        assert!(matches!(err, KeyFileError::Permissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn refuses_mismatched_public_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.toml");
        let text = format!(
            "public_key = \"{}\"\nsecret_key = \"{}\"\n",
            Keypair::generate().public(),
            hex::encode(Keypair::generate().secret_bytes())
        );
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            load_key_file(&path),
            Err(KeyFileError::Malformed { .. })
        ));
    }

    #[test]
    fn refuses_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "\u{0}\u{1} not toml").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            load_key_file(&path),
            Err(KeyFileError::Malformed { .. })
        ));
    }
}
