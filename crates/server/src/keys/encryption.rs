//! Signing keys at rest: the private keys in the database are sealed with AES-256-GCM under a
//! key the database does not hold (`keys.encryption_key`), so that a backup or a read of the
//! `signing_keys` table is not enough to sign tokens.
//!
//! Stored form: `v1:` + base64(nonce ‖ ciphertext ‖ tag). The nonce is random (96 bits; a few
//! keys are sealed per rotation, far below the 2^32 messages NIST SP 800-38D §8.3 allows per
//! key). The key id is the additional authenticated data, so a ciphertext copied onto another
//! row does not open. Rows written before encryption (plain base64 PKCS#8, which never
//! contains `:`) are recognised and sealed in place at start.
//!
//! Where the key comes from, in order: `keys.encryption_key` (base64 of 32 bytes), or
//! `keys.encryption_key_file` (a file holding that); for SQLite without either, a key
//! generated on first run into `<database file>.key` (mode 0600) and reused after; for an
//! in-memory SQLite database, an ephemeral key. PostgreSQL requires one of the settings
//! (checked with the configuration). `keys.previous_encryption_keys` open keys sealed before
//! a rotation of the encryption key; `mcp-oauth keys rewrap` seals them all under the current.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::ExposeSecret;
use secrecy::zeroize::Zeroizing;

use crate::config::KeysSettings;

/// Bytes in an encryption key (AES-256).
pub const ENCRYPTION_KEY_LEN: usize = 32;
const PREFIX: &str = "v1:";
/// AES-GCM's tag.
const TAG_LEN: usize = 16;

/// Parse a configured key: base64 (standard alphabet, surrounding whitespace ignored) of
/// exactly 32 bytes.
pub fn decode_key(value: &str) -> Option<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(STANDARD.decode(value.trim()).ok()?);
    (bytes.len() == ENCRYPTION_KEY_LEN).then_some(bytes)
}

/// A fresh random key, base64-encoded as a key file holds it.
fn generate_key() -> anyhow::Result<Zeroizing<String>> {
    let mut key = Zeroizing::new([0u8; ENCRYPTION_KEY_LEN]);
    aws_lc_rs::rand::fill(&mut key[..]).map_err(|_| anyhow!("no randomness for a new key"))?;
    Ok(Zeroizing::new(STANDARD.encode(&key[..])))
}

/// Where the current encryption key came from, for messages (never the key itself).
#[derive(Debug, Clone)]
pub enum KeySource {
    Setting,
    File(PathBuf),
    Generated(PathBuf),
    Ephemeral,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Setting => write!(f, "`keys.encryption_key`"),
            Self::File(p) => write!(f, "`keys.encryption_key_file` ({})", p.display()),
            Self::Generated(p) => write!(
                f,
                "the key generated for this database in {} (or set `keys.encryption_key`)",
                p.display()
            ),
            Self::Ephemeral => write!(f, "the ephemeral key of this in-memory database"),
        }
    }
}

/// A stored private key, opened.
pub struct Opened {
    pub pkcs8: Zeroizing<Vec<u8>>,
    /// Sealed under the current key (false: a previous key, or not sealed at all).
    pub current: bool,
    /// Stored in plaintext, as before encryption at rest.
    pub plaintext: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "{key_source} does not match the stored signing keys: key {kid} cannot be decrypted with it \
         (nor with `keys.previous_encryption_keys`). Configure the key they were encrypted with; \
         after changing it, list the old one in `keys.previous_encryption_keys` and run \
         `mcp-oauth keys rewrap`"
    )]
    WrongKey { kid: String, key_source: KeySource },
    #[error("the stored private key of {0} is malformed")]
    Malformed(String),
}

/// The current encryption key and the previous ones still accepted for opening.
pub struct KeyRing {
    current: RandomizedNonceKey,
    previous: Vec<RandomizedNonceKey>,
    source: KeySource,
}

fn aead_key(bytes: &[u8]) -> anyhow::Result<RandomizedNonceKey> {
    RandomizedNonceKey::new(&AES_256_GCM, bytes).map_err(|_| anyhow!("not an AES-256 key"))
}

impl KeyRing {
    pub fn new(current: &[u8], previous: &[&[u8]], source: KeySource) -> anyhow::Result<Self> {
        Ok(Self {
            current: aead_key(current)?,
            previous: previous
                .iter()
                .map(|k| aead_key(k))
                .collect::<anyhow::Result<_>>()?,
            source,
        })
    }

    /// The key ring `settings` describe for the database at `database_url`: reads the key
    /// file, or generates the SQLite one on first run.
    pub fn load(settings: &KeysSettings, database_url: &str) -> anyhow::Result<Self> {
        let (current, source) = current_key(settings, database_url)?;
        let previous = settings
            .previous_encryption_keys
            .iter()
            .map(|k| {
                decode_key(k.expose_secret()).ok_or_else(|| {
                    anyhow!(
                        "`keys.previous_encryption_keys`: each must be base64 of 32 bytes \
                         (generate keys with `openssl rand -base64 32`)"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let previous: Vec<&[u8]> = previous.iter().map(|k| k.as_slice()).collect();
        Self::new(&current, &previous, source)
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Seal a PKCS#8 document for the row of `kid`.
    pub fn seal(&self, kid: &str, pkcs8: &[u8]) -> anyhow::Result<String> {
        let mut in_out = Zeroizing::new(pkcs8.to_vec());
        let nonce = self
            .current
            .seal_in_place_append_tag(Aad::from(kid.as_bytes()), &mut *in_out)
            .map_err(|_| anyhow!("sealing the signing key failed"))?;
        let mut stored = Vec::with_capacity(NONCE_LEN + in_out.len());
        stored.extend_from_slice(nonce.as_ref());
        stored.extend_from_slice(&in_out);
        Ok(format!("{PREFIX}{}", STANDARD.encode(stored)))
    }

    /// Open the stored private key of `kid`, with the current key or a previous one; a row
    /// from before encryption at rest is returned as it is, marked `plaintext`.
    pub fn open(&self, kid: &str, stored: &str) -> Result<Opened, OpenError> {
        let malformed = || OpenError::Malformed(kid.to_owned());
        let Some(sealed) = stored.strip_prefix(PREFIX) else {
            if stored.contains(':') {
                return Err(malformed()); // a version we do not know
            }
            let pkcs8 = Zeroizing::new(STANDARD.decode(stored).map_err(|_| malformed())?);
            return Ok(Opened {
                pkcs8,
                current: false,
                plaintext: true,
            });
        };
        let sealed = STANDARD.decode(sealed).map_err(|_| malformed())?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(malformed());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let keys = std::iter::once(&self.current).chain(&self.previous);
        for (i, key) in keys.enumerate() {
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| malformed())?;
            let mut in_out = Zeroizing::new(ciphertext.to_vec());
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(kid.as_bytes()), &mut in_out) {
                let pkcs8 = Zeroizing::new(plain.to_vec());
                return Ok(Opened {
                    pkcs8,
                    current: i == 0,
                    plaintext: false,
                });
            }
        }
        Err(OpenError::WrongKey {
            kid: kid.to_owned(),
            key_source: self.source.clone(),
        })
    }
}

/// Where the SQLite database file is, unless the database is in memory.
fn sqlite_file(database_url: &str) -> Option<PathBuf> {
    let rest = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory = path.is_empty()
        || path.contains(":memory:")
        || query.split('&').any(|p| p == "mode=memory");
    (!in_memory).then(|| PathBuf::from(path))
}

/// `data/mcp-oauth.db` → `data/mcp-oauth.db.key`.
pub fn generated_key_path(database_file: &Path) -> PathBuf {
    let mut name = database_file.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

fn current_key(
    settings: &KeysSettings,
    database_url: &str,
) -> anyhow::Result<(Zeroizing<Vec<u8>>, KeySource)> {
    let invalid = |key: &str| {
        anyhow!(
            "`{key}`: must be base64 of 32 random bytes (generate one with `openssl rand -base64 32`)"
        )
    };
    if let Some(key) = &settings.encryption_key {
        let bytes =
            decode_key(key.expose_secret()).ok_or_else(|| invalid("keys.encryption_key"))?;
        return Ok((bytes, KeySource::Setting));
    }
    if let Some(path) = &settings.encryption_key_file {
        let bytes = read_key_file(path).with_context(|| {
            format!(
                "`keys.encryption_key_file`: cannot use {} as the encryption key",
                path.display()
            )
        })?;
        return Ok((bytes, KeySource::File(path.clone())));
    }
    match mcp_oauth_store::Backend::from_url(database_url) {
        Some(mcp_oauth_store::Backend::Sqlite) => match sqlite_file(database_url) {
            Some(db) => {
                let path = generated_key_path(&db);
                let bytes = read_or_generate(&path).with_context(|| {
                    format!(
                        "cannot read or create the encryption key file {} (set \
                         `keys.encryption_key` or `keys.encryption_key_file` instead)",
                        path.display()
                    )
                })?;
                Ok((bytes, KeySource::Generated(path)))
            }
            None => {
                let key = generate_key()?;
                let bytes = decode_key(&key).ok_or_else(|| anyhow!("generated key is invalid"))?;
                Ok((bytes, KeySource::Ephemeral))
            }
        },
        _ => Err(anyhow!(
            "`keys.encryption_key`: PostgreSQL needs a key to encrypt the signing keys at rest; \
             generate one with `openssl rand -base64 32` and set it as `keys.encryption_key` \
             (MCP_OAUTH_KEYS__ENCRYPTION_KEY) or in a file named by `keys.encryption_key_file`"
        )),
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let text = Zeroizing::new(std::fs::read_to_string(path)?);
    warn_if_readable_by_others(path);
    decode_key(&text).ok_or_else(|| {
        anyhow!("the file must hold base64 of 32 bytes (`openssl rand -base64 32 > file`)")
    })
}

/// Read the generated key file, or create it: `create_new` with mode 0600 set at creation,
/// so there is no moment when another user could open it, and no race between two processes
/// starting on the same database (the loser reads the winner's key).
fn read_or_generate(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            let key = generate_key()?;
            file.write_all(key.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            tracing::info!(path = ?path, "generated the signing-key encryption key");
            decode_key(&key).ok_or_else(|| anyhow!("generated key is invalid"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another process may have created it an instant ago and be writing it.
            for _ in 0..20 {
                if std::fs::metadata(path)?.len() > 0 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            read_key_file(path)
        }
        Err(e) => Err(e.into()),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = ?path,
                "the encryption key file is readable by other users; chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(key: u8, previous: &[u8]) -> KeyRing {
        let previous: Vec<[u8; 32]> = previous.iter().map(|k| [*k; 32]).collect();
        let previous: Vec<&[u8]> = previous.iter().map(|k| &k[..]).collect();
        KeyRing::new(&[key; 32], &previous, KeySource::Setting).unwrap()
    }

    #[test]
    fn a_sealed_key_opens_with_its_key_and_kid_only() {
        let sealed = ring(1, &[]).seal("kid-a", b"pkcs8 bytes").unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains(&STANDARD.encode(b"pkcs8 bytes")));
        let opened = ring(1, &[]).open("kid-a", &sealed).unwrap();
        assert_eq!(&opened.pkcs8[..], b"pkcs8 bytes");
        assert!(opened.current && !opened.plaintext);

        assert!(
            matches!(
                ring(1, &[]).open("kid-b", &sealed),
                Err(OpenError::WrongKey { .. })
            ),
            "moved to another row"
        );
        assert!(
            matches!(
                ring(2, &[]).open("kid-a", &sealed),
                Err(OpenError::WrongKey { .. })
            ),
            "another key"
        );
        let rotated = ring(2, &[1]).open("kid-a", &sealed).unwrap();
        assert!(!rotated.current, "opened with a previous key");
    }

    #[test]
    fn nonces_are_fresh_for_every_seal() {
        let r = ring(1, &[]);
        assert_ne!(r.seal("k", b"x").unwrap(), r.seal("k", b"x").unwrap());
    }

    #[test]
    fn plaintext_rows_from_before_encryption_are_recognised() {
        let opened = ring(1, &[]).open("k", &STANDARD.encode(b"old")).unwrap();
        assert!(opened.plaintext && !opened.current);
        assert_eq!(&opened.pkcs8[..], b"old");
        for bad in ["v2:abcd", "v1:!!", "v1:AAAA"] {
            assert!(
                matches!(ring(1, &[]).open("k", bad), Err(OpenError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn sqlite_urls_name_their_file_unless_in_memory() {
        assert_eq!(
            sqlite_file("sqlite://data/a.db?mode=rwc"),
            Some(PathBuf::from("data/a.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:/tmp/a.db"),
            Some(PathBuf::from("/tmp/a.db"))
        );
        for memory in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://a.db?mode=memory",
        ] {
            assert_eq!(sqlite_file(memory), None, "{memory}");
        }
        assert_eq!(
            generated_key_path(Path::new("data/a.db")),
            PathBuf::from("data/a.db.key")
        );
    }

    #[test]
    fn configured_keys_must_be_32_bytes_of_base64() {
        assert!(decode_key(&STANDARD.encode([0u8; 32])).is_some());
        assert!(decode_key(&format!(" {}\n", STANDARD.encode([0u8; 32]))).is_some());
        assert!(decode_key(&STANDARD.encode([0u8; 16])).is_none());
        assert!(decode_key("not base64").is_none());
    }
}
