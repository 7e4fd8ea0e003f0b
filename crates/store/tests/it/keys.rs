//! Signing keys: one active key, retired keys published until their tokens have expired.

use mcp_oauth_store::SigningKeyRow;

use crate::helpers::{NOW, TestDb};

fn key(kid: &str, created_at: i64) -> SigningKeyRow {
    SigningKeyRow {
        kid: kid.to_owned(),
        alg: "ES256".to_owned(),
        private_key: format!("private-{kid}"),
        public_jwk: format!(r#"{{"kty":"EC","kid":"{kid}"}}"#),
        created_at,
        retired_at: None,
        expires_at: None,
    }
}

fn kids(keys: &[SigningKeyRow]) -> Vec<&str> {
    keys.iter().map(|k| k.kid.as_str()).collect()
}

async fn ensure_signing_key_inserts_only_when_no_key_is_active(t: TestDb) {
    assert!(
        t.db.published_keys(NOW).await.expect("keys").is_empty(),
        "no keys yet"
    );

    t.db.ensure_signing_key(&key("k1", NOW))
        .await
        .expect("ensure");
    t.db.ensure_signing_key(&key("k2", NOW + 1))
        .await
        .expect("ensure again");

    let keys = t.db.published_keys(NOW + 1).await.expect("keys");
    assert_eq!(
        kids(&keys),
        ["k1"],
        "the second ensure found an active key and added nothing"
    );
    let k1 = &keys[0];
    assert_eq!(
        (k1.alg.as_str(), k1.private_key.as_str()),
        ("ES256", "private-k1")
    );
    assert_eq!(
        (k1.created_at, k1.retired_at, k1.expires_at),
        (NOW, None, None)
    );
}

async fn rotating_keeps_the_old_key_published_until_its_expiry(t: TestDb) {
    t.db.ensure_signing_key(&key("k1", NOW))
        .await
        .expect("ensure");

    t.db.rotate_signing_key(&key("k2", NOW + 100), NOW + 100, NOW + 3_700)
        .await
        .expect("rotate");

    let keys = t.db.published_keys(NOW + 100).await.expect("keys");
    assert_eq!(kids(&keys), ["k2", "k1"], "both published, newest first");
    assert_eq!(
        (keys[0].retired_at, keys[0].expires_at),
        (None, None),
        "the new key signs"
    );
    assert_eq!(
        (keys[1].retired_at, keys[1].expires_at),
        (Some(NOW + 100), Some(NOW + 3_700)),
        "the old key is retired"
    );

    let later = t.db.published_keys(NOW + 3_699).await.expect("keys");
    assert_eq!(
        kids(&later),
        ["k2", "k1"],
        "the old key is published until its expiry"
    );
    let after = t.db.published_keys(NOW + 3_700).await.expect("keys");
    assert_eq!(kids(&after), ["k2"], "and no longer from then on");

    t.db.ensure_signing_key(&key("k3", NOW + 200))
        .await
        .expect("ensure");
    assert_eq!(
        kids(&t.db.published_keys(NOW + 200).await.expect("keys")),
        ["k2", "k1"],
        "k2 is active, so no k3"
    );
}

async fn a_stored_private_key_is_replaced_only_if_it_is_still_what_the_caller_read(t: TestDb) {
    t.db.ensure_signing_key(&key("k1", NOW))
        .await
        .expect("ensure");
    let stored = t.db.signing_key_secrets().await.expect("secrets");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].kid.as_str(), stored[0].private_key.as_str()),
        ("k1", "private-k1")
    );

    let replaced =
        t.db.replace_signing_key_secret("k1", "private-k1", "sealed-k1")
            .await
            .expect("replace");
    assert!(replaced);
    let stale =
        t.db.replace_signing_key_secret("k1", "private-k1", "sealed-again")
            .await
            .expect("replace");
    assert!(!stale, "another writer got there first");
    let stored = t.db.signing_key_secrets().await.expect("secrets");
    assert_eq!(stored[0].private_key, "sealed-k1");
}

backend_tests!(
    ensure_signing_key_inserts_only_when_no_key_is_active,
    rotating_keeps_the_old_key_published_until_its_expiry,
    a_stored_private_key_is_replaced_only_if_it_is_still_what_the_caller_read,
);
