//! Access-token signing keys: generated, stored in the database (so every instance signs and
//! verifies with the same set) with the private keys sealed (`encryption`), rotated by
//! `mcp-oauth keys rotate`, published at `jwks_uri`.

pub mod encryption;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use mcp_oauth_core::oauth::access_token::{ACCESS_TOKEN_TYP, AccessTokenClaims};
use mcp_oauth_store::{Db, SigningKeyRow};

use crate::config::SigningAlg;
use encryption::KeyRing;

/// Generate a key pair as a row ready to store, its private key sealed with `keyring`.
pub fn generate(alg: SigningAlg, now: i64, keyring: &KeyRing) -> anyhow::Result<SigningKeyRow> {
    let kid = crate::random::id();
    let (pkcs8, jwk) = match alg {
        SigningAlg::EdDSA => {
            let pair =
                Ed25519KeyPair::generate().map_err(|_| anyhow!("Ed25519 key generation failed"))?;
            let pkcs8 = pair
                .to_pkcs8()
                .map_err(|_| anyhow!("Ed25519 key encoding failed"))?;
            let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            (
                secrecy::zeroize::Zeroizing::new(pkcs8.as_ref().to_vec()),
                json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
            )
        }
        SigningAlg::ES256 => {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(|_| anyhow!("P-256 key generation failed"))?;
            let pkcs8 = pair
                .to_pkcs8v1()
                .map_err(|_| anyhow!("P-256 key encoding failed"))?;
            // Uncompressed point: 0x04 || X || Y.
            let point = pair.public_key().as_ref();
            anyhow::ensure!(point.len() == 65, "unexpected P-256 public key encoding");
            let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
            let y = URL_SAFE_NO_PAD.encode(&point[33..]);
            (
                secrecy::zeroize::Zeroizing::new(pkcs8.as_ref().to_vec()),
                json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
            )
        }
    };
    let mut jwk = jwk;
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!(alg.as_str());
    jwk["use"] = json!("sig");
    Ok(SigningKeyRow {
        private_key: keyring.seal(&kid, &pkcs8)?,
        kid,
        alg: alg.as_str().to_owned(),
        public_jwk: jwk.to_string(),
        created_at: now,
        retired_at: None,
        expires_at: None,
    })
}

struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
}

struct KeySet {
    signer: Signer,
    verifiers: HashMap<String, (Algorithm, DecodingKey)>,
    jwks: Value,
}

/// How often a token naming a key we do not know may make us reload the keys. Anyone can
/// send such a token, so each one must not cost a database query; a key rotated on another
/// instance is still found within this long of its first token.
const UNKNOWN_KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The keys in use. Cheap to read on every request; reloaded from the database periodically
/// and when a token names a key we have not seen (another instance rotated).
pub struct KeyStore {
    db: Db,
    keyring: Arc<KeyRing>,
    set: RwLock<Arc<KeySet>>,
    /// Single flight for reloads caused by unknown key ids, holding when the last one started:
    /// requests that arrive while one runs wait for it instead of starting their own.
    unknown_key_reload: tokio::sync::Mutex<Option<Instant>>,
    /// Reloads from the database so far (for tests and metrics).
    reloads: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not a JWT signed by us")]
    Invalid,
    /// A key id we do not have (nor had, once reloaded): a forged token, or one of another
    /// server's.
    #[error("signed with an unknown key")]
    UnknownKey(String),
    /// One of our key ids with a signature that does not verify, or with another
    /// algorithm than the key's (algorithm confusion): a forged token.
    #[error("the signature does not verify")]
    BadSignature,
}

fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "EdDSA" => Some(Algorithm::EdDSA),
        "ES256" => Some(Algorithm::ES256),
        _ => None,
    }
}

fn build(rows: &[SigningKeyRow], keyring: &KeyRing) -> anyhow::Result<KeySet> {
    let mut verifiers = HashMap::new();
    let mut published = Vec::new();
    let mut signer = None;
    // Rows come newest first: the first active one signs.
    for row in rows {
        let alg = algorithm(&row.alg)
            .with_context(|| format!("key {} has unknown alg {}", row.kid, row.alg))?;
        let jwk: Value = serde_json::from_str(&row.public_jwk).context("stored JWK is not JSON")?;
        let decoding = match alg {
            Algorithm::EdDSA => {
                DecodingKey::from_ed_components(jwk["x"].as_str().unwrap_or_default())
            }
            _ => DecodingKey::from_ec_components(
                jwk["x"].as_str().unwrap_or_default(),
                jwk["y"].as_str().unwrap_or_default(),
            ),
        }
        .with_context(|| format!("stored JWK {} is invalid", row.kid))?;
        verifiers.insert(row.kid.clone(), (alg, decoding));
        published.push(jwk);
        if signer.is_none() && row.retired_at.is_none() {
            let der = keyring.open(&row.kid, &row.private_key)?.pkcs8;
            let key = match alg {
                Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
                _ => EncodingKey::from_ec_der(&der),
            };
            signer = Some(Signer {
                kid: row.kid.clone(),
                alg,
                key,
            });
        }
    }
    let signer = signer.ok_or_else(|| anyhow!("no active signing key in the database"))?;
    Ok(KeySet {
        signer,
        verifiers,
        jwks: json!({ "keys": published }),
    })
}

impl KeyStore {
    /// Load the keys, sealing any stored in plaintext (from before encryption at rest) and
    /// creating the first one if there is none. Fails when `keyring` cannot open the key that
    /// signs.
    pub async fn load(
        db: Db,
        keyring: Arc<KeyRing>,
        alg: SigningAlg,
        now: i64,
    ) -> anyhow::Result<Self> {
        let sealed = seal_plaintext_keys(&db, &keyring).await?;
        if sealed > 0 {
            tracing::info!(count = sealed, "stored signing keys encrypted at rest");
        }
        if db
            .published_keys(now)
            .await?
            .iter()
            .all(|k| k.retired_at.is_some())
        {
            db.ensure_signing_key(&generate(alg, now, &keyring)?)
                .await?;
        }
        let set = build(&db.published_keys(now).await?, &keyring)?;
        Ok(Self {
            db,
            keyring,
            set: RwLock::new(Arc::new(set)),
            unknown_key_reload: tokio::sync::Mutex::new(None),
            reloads: AtomicU64::new(0),
        })
    }

    fn current(&self) -> Arc<KeySet> {
        match self.set.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub async fn reload(&self, now: i64) -> anyhow::Result<()> {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let set = build(&self.db.published_keys(now).await?, &self.keyring)?;
        match self.set.write() {
            Ok(mut g) => *g = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    /// The encryption keys the stored private keys are sealed with.
    pub fn keyring(&self) -> &KeyRing {
        &self.keyring
    }

    /// How many times the keys have been reloaded from the database since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    pub fn jwks(&self) -> Value {
        self.current().jwks.clone()
    }

    pub fn signing_alg(&self) -> &'static str {
        match self.current().signer.alg {
            Algorithm::EdDSA => "EdDSA",
            _ => "ES256",
        }
    }

    /// Sign access token claims as an RFC 9068 JWT (`typ: at+jwt`).
    pub fn sign(&self, claims: &AccessTokenClaims) -> anyhow::Result<String> {
        let set = self.current();
        let mut header = Header::new(set.signer.alg);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(set.signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &set.signer.key)
            .context("signing the access token failed")
    }

    /// Verify signature and `typ`; the claims themselves are checked by the caller
    /// (`validate_claims`), with its own clock.
    pub fn verify(&self, token: &str) -> Result<AccessTokenClaims, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Invalid)?;
        if header
            .typ
            .as_deref()
            .is_none_or(|t| !t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP))
        {
            return Err(VerifyError::Invalid);
        }
        let kid = header.kid.ok_or(VerifyError::Invalid)?;
        let set = self.current();
        let Some((alg, key)) = set.verifiers.get(&kid) else {
            return Err(VerifyError::UnknownKey(kid));
        };
        if *alg != header.alg {
            return Err(VerifyError::BadSignature);
        }
        let mut validation = Validation::new(*alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<AccessTokenClaims>(token, key, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => VerifyError::BadSignature,
                _ => VerifyError::Invalid,
            })
    }

    /// Verify, reloading once when the key is unknown (rotated on another instance).
    ///
    /// ```text
    ///   known kid ──────────────────────────────────────────> verify
    ///   unknown kid ─ wait for the reload in flight, if any ─┬─ now known ──> verify
    ///                                                        ├─ last reload < 1 s ago ─> UnknownKey
    ///                                                        └─ reload (others wait) ──> verify
    /// ```
    pub async fn verify_or_reload(
        &self,
        token: &str,
        now: i64,
    ) -> Result<AccessTokenClaims, VerifyError> {
        let unknown = match self.verify(token) {
            Err(VerifyError::UnknownKey(kid)) => kid,
            other => return other,
        };
        let mut last = self.unknown_key_reload.lock().await;
        // The reload we may have waited for can have brought the key.
        match self.verify(token) {
            Err(VerifyError::UnknownKey(_)) => {}
            other => return other,
        }
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KEY_RELOAD_INTERVAL) {
            return Err(VerifyError::UnknownKey(unknown));
        }
        *last = Some(Instant::now());
        if let Err(e) = self.reload(now).await {
            tracing::warn!(error = ?e, "reloading signing keys for an unknown key id failed");
            return Err(VerifyError::UnknownKey(unknown));
        }
        drop(last);
        self.verify(token)
    }
}

/// Rotate: a new key signs from now on; the old ones stay published until every token they
/// signed has expired. Refused when `keyring` cannot open the key signing now, so that a
/// wrong encryption key is noticed before it seals anything.
pub async fn rotate(
    db: &Db,
    keyring: &KeyRing,
    alg: SigningAlg,
    now: i64,
    access_ttl: i64,
) -> anyhow::Result<String> {
    for row in db.published_keys(now).await? {
        if row.retired_at.is_none() {
            keyring.open(&row.kid, &row.private_key)?;
        }
    }
    let key = generate(alg, now, keyring)?;
    // Slack for clock skew and tokens minted in the instant before other instances reload.
    let old_expires_at = now + access_ttl + 300;
    db.rotate_signing_key(&key, now, old_expires_at).await?;
    Ok(key.kid)
}

/// Seal every private key stored in plaintext. Returns how many were sealed.
async fn seal_plaintext_keys(db: &Db, keyring: &KeyRing) -> anyhow::Result<usize> {
    let mut sealed = 0;
    for stored in db.signing_key_secrets().await? {
        let opened = keyring.open(&stored.kid, &stored.private_key)?;
        if opened.plaintext {
            let replacement = keyring.seal(&stored.kid, &opened.pkcs8)?;
            // Compare-and-set: another instance starting at the same time may seal it first.
            if db
                .replace_signing_key_secret(&stored.kid, &stored.private_key, &replacement)
                .await?
            {
                sealed += 1;
            }
        }
    }
    Ok(sealed)
}

/// What `keys rewrap` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rewrapped {
    /// Keys sealed again under the current encryption key.
    pub resealed: usize,
    /// Keys that already were.
    pub current: usize,
}

/// Seal every stored private key under the current encryption key (after the key was
/// changed, with the old one in `keys.previous_encryption_keys`). Every key is opened before
/// any is rewritten, so a key that cannot be opened changes nothing.
pub async fn rewrap(db: &Db, keyring: &KeyRing) -> anyhow::Result<Rewrapped> {
    let stored = db.signing_key_secrets().await?;
    let mut pending = Vec::new();
    let mut report = Rewrapped::default();
    for row in &stored {
        let opened = keyring.open(&row.kid, &row.private_key)?;
        if opened.current {
            report.current += 1;
        } else {
            pending.push((row, keyring.seal(&row.kid, &opened.pkcs8)?));
        }
    }
    for (row, replacement) in pending {
        if db
            .replace_signing_key_secret(&row.kid, &row.private_key, &replacement)
            .await?
        {
            report.resealed += 1;
        }
    }
    Ok(report)
}
