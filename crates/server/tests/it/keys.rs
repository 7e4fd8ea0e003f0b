//! Signing key rotation: the new key signs, the old one stays published and trusted until
//! every token it signed has expired, and other instances pick the new key up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};

use mcp_oauth::resource::VerifiedToken;
use mcp_oauth_core::oauth::access_token::AccessTokenClaims;

use crate::helpers::{
    TEST_ENCRYPTION_KEY, TestApp, initialize, jwt_header, spawn_app, spawn_app_with,
    spawn_second_instance, try_second_instance_with,
};

/// Rotate as `mcp-oauth keys rotate` does, then reload this instance's key set.
async fn rotate(app: &TestApp) -> String {
    let now = app.clock.now();
    let settings = &app.state.settings.tokens;
    let kid = mcp_oauth::keys::rotate(
        &app.state.db,
        app.state.keys.keyring(),
        settings.signing_alg,
        now,
        settings.access_ttl,
    )
    .await
    .unwrap();
    app.state.keys.reload(now).await.unwrap();
    kid
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app
        .http
        .get(format!("{}/jwks.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn kid(token: &str) -> String {
    jwt_header(token)["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn after_rotation_the_jwks_lists_the_new_and_the_old_key() {
    let app = spawn_app().await;
    let old = jwks_kids(&app).await;
    assert_eq!(old.len(), 1);
    let new = rotate(&app).await;
    let kids = jwks_kids(&app).await;
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(kids.contains(&new) && kids.contains(&old[0]));
}

#[tokio::test]
async fn a_token_signed_before_rotation_stays_valid_and_new_tokens_use_the_new_key() {
    let app = spawn_app().await;
    let before = app.tokens_for_new_client("kim@example.com").await;
    let new = rotate(&app).await;
    assert_ne!(kid(&before.access_token), new);
    assert_eq!(app.introspect(&before.access_token).await["active"], true);

    let after = app
        .refresh_as(&before.auth, &before.refresh_token, &[])
        .await;
    let after: Value = crate::helpers::ok_json(after).await;
    let token = after["access_token"].as_str().unwrap();
    assert_eq!(kid(token), new, "the new key signs");
    assert_eq!(app.introspect(token).await["active"], true);
}

#[tokio::test]
async fn the_old_key_is_dropped_once_its_tokens_have_expired() {
    let app = spawn_app().await;
    let old = jwks_kids(&app).await;
    rotate(&app).await;
    // Published for access_ttl plus 300 s of slack after the rotation.
    app.clock
        .advance(app.state.settings.tokens.access_ttl + 301);
    app.state.keys.reload(app.clock.now()).await.unwrap();
    let kids = jwks_kids(&app).await;
    assert_eq!(kids.len(), 1);
    assert!(!kids.contains(&old[0]));
}

#[tokio::test]
async fn an_instance_that_has_not_reloaded_verifies_tokens_signed_with_a_key_rotated_elsewhere() {
    let a = spawn_app().await;
    let b = spawn_second_instance(&a).await;
    let new = rotate(&a).await;
    let t = a.tokens_for_new_client("kim@example.com").await;
    assert_eq!(kid(&t.access_token), new);
    // B last loaded its keys before the rotation; an unknown kid makes it reload once.
    assert_eq!(b.introspect(&t.access_token).await["active"], true);
}

/// A JWT that names `kid` in a well-formed `at+jwt` header, with a meaningless signature:
/// what anyone can send without knowing a key.
fn forged_token(kid: &str) -> String {
    let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid})),
        part(json!({"sub": "mallory", "exp": 4_000_000_000_i64})),
        URL_SAFE_NO_PAD.encode([7u8; 64])
    )
}

async fn refused_as_invalid_token(app: &TestApp, token: &str) {
    let r = app.mcp_send(Some(token), None, &initialize(1)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.contains("error=\"invalid_token\"")),
        "{:?}",
        r.header("www-authenticate")
    );
}

#[tokio::test]
async fn forged_tokens_naming_unknown_keys_reload_the_keys_at_most_once_a_second() {
    let a = spawn_app().await;
    let b = spawn_second_instance(&a).await;
    let before = b.state.keys.reloads();
    let started = Instant::now();

    for _ in 0..150 {
        refused_as_invalid_token(&b, &forged_token(&mcp_oauth::random::id())).await;
    }
    let concurrent = (0..150).map(|_| {
        let token = forged_token(&mcp_oauth::random::id());
        let b = &b;
        async move { refused_as_invalid_token(b, &token).await }
    });
    futures::future::join_all(concurrent).await;

    let reloads = b.state.keys.reloads() - before;
    let bound = started.elapsed().as_secs() + 1;
    assert!(
        reloads <= bound,
        "300 forged tokens in {:?} caused {reloads} reloads (at most {bound})",
        started.elapsed()
    );

    // A key rotated elsewhere is still found, once the interval since the last reload is over.
    let new = rotate(&a).await;
    let t = a.tokens_for_new_client("kim@example.com").await;
    assert_eq!(kid(&t.access_token), new);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b.mcp_send(Some(&t.access_token), None, &initialize(1))
        .await
        .result();
}

#[tokio::test]
async fn the_verified_token_cache_stays_bounded_and_keeps_a_token_in_use() {
    let app = spawn_app().await;
    let hot = app
        .tokens_for_new_client("kim@example.com")
        .await
        .access_token;
    app.mcp_send(Some(&hot), None, &initialize(1))
        .await
        .result();
    let cache = &app.state.verified_tokens;
    assert!(cache.contains(&hot));

    // Other tokens verified once each, many more than fit, while the hot one keeps being used.
    let capacity = cache.capacity();
    let one_off = Arc::new(VerifiedToken::new(jwt_claims_of(&app)));
    let batch = capacity / 4;
    for round in 0..12 {
        for i in 0..batch {
            cache.insert(&format!("one-off-{round}-{i}"), one_off.clone());
        }
        assert!(
            cache.len() <= capacity,
            "round {round}: {} entries, capacity {capacity}",
            cache.len()
        );
        assert!(
            cache.contains(&hot),
            "round {round}: the token in use was evicted"
        );
        app.mcp_send(Some(&hot), None, &initialize(1))
            .await
            .result();
    }
}

/// Claims for cache entries that are never presented over HTTP.
fn jwt_claims_of(app: &TestApp) -> AccessTokenClaims {
    let now = app.clock.now();
    AccessTokenClaims {
        iss: app.state.settings.issuer.clone(),
        sub: "someone".into(),
        aud: app.mcp_resource(),
        client_id: "some-client".into(),
        scope: "mcp".into(),
        exp: now + 900,
        iat: now,
        nbf: now,
        jti: mcp_oauth::random::id(),
        gid: None,
        auth_time: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Private keys at rest: sealed with the encryption key (`keys.encryption_key`, or on SQLite a
// key generated next to the database), never stored as PKCS#8.
// ---------------------------------------------------------------------------------------------

/// Another valid encryption key (base64 of 32 bytes).
const OTHER_KEY: &str = "T1RIRVJPVEhFUk9USEVST1RIRVJPVEhFUk9USEVST1Q=";

/// Assert that no stored private key is PKCS#8 in any readable form: each is sealed (`v1:`),
/// and neither the DER nor its base64 appears in it.
async fn assert_sealed_at_rest(app: &TestApp) {
    let rows = app.stored_private_keys().await;
    assert!(!rows.is_empty());
    for (kid, stored) in rows {
        assert!(
            stored.starts_with("v1:"),
            "{kid} is stored as {stored:.12}…"
        );
        let pkcs8 = app.state.keys.keyring().open(&kid, &stored).unwrap().pkcs8;
        let sealed = STANDARD.decode(&stored[3..]).unwrap();
        assert!(
            !sealed.windows(pkcs8.len()).any(|w| w == &pkcs8[..]),
            "{kid}: the DER is inside"
        );
        // The Ed25519 PKCS#8 prefix (RFC 8410 §7) and the private key's last 32 bytes.
        assert!(!stored.contains(&STANDARD.encode(&pkcs8[..])));
        assert!(!sealed.windows(16).any(|w| w == &pkcs8[pkcs8.len() - 16..]));
    }
}

#[tokio::test]
async fn private_signing_keys_are_stored_encrypted() {
    let app = spawn_app().await;
    assert_sealed_at_rest(&app).await;
    rotate(&app).await;
    assert_sealed_at_rest(&app).await;
    assert_eq!(app.stored_private_keys().await.len(), 2);
}

#[tokio::test]
async fn an_instance_started_with_the_same_key_signs_and_verifies_tokens_from_before() {
    let a = spawn_app().await;
    let before = a.tokens_for_new_client("kim@example.com").await;
    // B loads and decrypts the stored key, as a restarted server would.
    let b = spawn_second_instance(&a).await;
    b.mcp_send(Some(&before.access_token), None, &initialize(1))
        .await
        .result();
    let after = b.refresh_as(&before.auth, &before.refresh_token, &[]).await;
    let after: Value = crate::helpers::ok_json(after).await;
    let token = after["access_token"].as_str().unwrap();
    assert_eq!(
        kid(token),
        kid(&before.access_token),
        "B signs with the stored key"
    );
    a.mcp_send(Some(token), None, &initialize(1)).await.result();
}

#[tokio::test]
async fn an_instance_with_another_encryption_key_refuses_to_start_saying_so() {
    let a = spawn_app().await;
    let err = match try_second_instance_with(&a, |raw| {
        raw.keys.encryption_key = Some(OTHER_KEY.into());
        raw.keys.encryption_key_file = None;
    })
    .await
    {
        Ok(_) => panic!("started with a key that does not match the stored keys"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("does not match the stored signing keys"),
        "{err}"
    );
    assert!(err.contains("keys.encryption_key"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(!err.contains(OTHER_KEY), "the key is not shown: {err}");
}

#[tokio::test]
async fn plaintext_keys_from_before_encryption_are_encrypted_at_start() {
    let a = spawn_app().await;
    let before = a.tokens_for_new_client("kim@example.com").await;
    let (signing_kid, stored) = a.stored_private_keys().await.remove(0);
    let pkcs8 = a
        .state
        .keys
        .keyring()
        .open(&signing_kid, &stored)
        .unwrap()
        .pkcs8;
    a.overwrite_private_key(&signing_kid, &STANDARD.encode(&pkcs8[..]))
        .await;

    let b = spawn_second_instance(&a).await;
    assert_sealed_at_rest(&b).await;
    let after = b.refresh_as(&before.auth, &before.refresh_token, &[]).await;
    let after: Value = crate::helpers::ok_json(after).await;
    let token = after["access_token"].as_str().unwrap();
    assert_eq!(kid(token), signing_kid, "the old key still signs");
    a.mcp_send(Some(token), None, &initialize(1)).await.result();
}

#[tokio::test]
async fn a_changed_encryption_key_opens_old_keys_as_previous_until_rewrap_moves_them() {
    let a = spawn_app_with(|raw| {
        raw.keys.encryption_key = Some(TEST_ENCRYPTION_KEY.into());
    })
    .await;
    let b = try_second_instance_with(&a, |raw| {
        raw.keys.encryption_key = Some(OTHER_KEY.into());
        raw.keys.previous_encryption_keys = vec![TEST_ENCRYPTION_KEY.into()];
    })
    .await
    .expect("the previous key opens the stored keys");
    let done = mcp_oauth::keys::rewrap(&b.state.db, b.state.keys.keyring())
        .await
        .unwrap();
    assert_eq!((done.resealed, done.current), (1, 0));
    let again = mcp_oauth::keys::rewrap(&b.state.db, b.state.keys.keyring())
        .await
        .unwrap();
    assert_eq!((again.resealed, again.current), (0, 1), "idempotent");

    let only_new = try_second_instance_with(&a, |raw| {
        raw.keys.encryption_key = Some(OTHER_KEY.into());
    })
    .await;
    assert!(only_new.is_ok(), "after rewrap the new key alone suffices");
    let only_old = try_second_instance_with(&a, |raw| {
        raw.keys.encryption_key = Some(TEST_ENCRYPTION_KEY.into());
    })
    .await;
    assert!(only_old.is_err(), "and the old one no longer opens them");
}
