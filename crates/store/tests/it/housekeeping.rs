//! `delete_expired`: what has expired goes, what is live stays, and a second run finds nothing.

use mcp_oauth_store::{CleanupPolicy, ClientRow, SigningKeyRow, ThrottleRow};

use crate::helpers::{CODE_TTL, NOW, REVOCATION_TTL, TestDb, client, code_hash, refresh_token};

const DAY: i64 = 86_400;
const POLICY: CleanupPolicy = CleanupPolicy {
    code_retention: DAY,
    revoked_retention: 7 * DAY,
    stale_client_after: 30 * DAY,
};

async fn expired_sessions_are_deleted_and_live_ones_kept(t: TestDb) {
    t.add_user("alice").await;
    t.db.insert_session("expired", "alice", NOW - 7_200, NOW - 1)
        .await
        .expect("session");
    t.db.insert_session("live", "alice", NOW, NOW + 3_600)
        .await
        .expect("session");

    let report = t.db.delete_expired(NOW, &POLICY).await.expect("cleanup");

    assert_eq!(report.sessions, 1, "one session expired: {report:?}");
    assert_eq!(
        t.count("sessions", "id_hash", "expired").await,
        0,
        "the expired session is deleted"
    );
    assert!(
        t.db.find_session("live", NOW)
            .await
            .expect("find")
            .is_some(),
        "the live session is kept"
    );
}

async fn codes_and_their_grants_are_kept_for_the_retention_period(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    t.add_authorization("g1", "app", "alice").await;
    let code_expiry = NOW + CODE_TTL;

    let early =
        t.db.delete_expired(code_expiry + POLICY.code_retention - 1, &POLICY)
            .await
            .expect("cleanup");
    assert_eq!(
        (early.codes, early.grants),
        (0, 0),
        "within retention nothing goes: {early:?}"
    );
    let code = t.db.find_code(&code_hash("g1")).await.expect("find");
    assert!(
        code.is_some(),
        "an expired code is kept, so a late replay is recognised"
    );

    let late =
        t.db.delete_expired(code_expiry + POLICY.code_retention + 1, &POLICY)
            .await
            .expect("cleanup");
    assert_eq!(
        (late.codes, late.grants),
        (1, 1),
        "past retention the code and its lapsed grant go: {late:?}"
    );
    assert!(
        t.db.find_code(&code_hash("g1"))
            .await
            .expect("find")
            .is_none(),
        "the code is deleted"
    );
    assert_eq!(
        t.count("grants", "id", "g1").await,
        0,
        "the grant is deleted"
    );
}

async fn expired_and_long_revoked_refresh_tokens_are_deleted_and_live_ones_kept(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    let live = t.add_redeemed_grant("g-live", "app", "alice").await;
    let revoked = t.add_redeemed_grant("g-revoked", "app", "alice").await;
    t.db.revoke_grant("g-revoked", NOW + 1, "test", REVOCATION_TTL)
        .await
        .expect("revoke");
    let short_code = t.add_authorization("g-short", "app", "alice").await;
    let short = refresh_token("short", "g-short", None);
    let short = mcp_oauth_store::NewRefreshToken {
        expires_at: NOW + 100,
        ..short
    };
    assert!(
        t.db.redeem_code(
            &short_code.code_hash,
            NOW + 1,
            Some(&short),
            short.expires_at
        )
        .await
        .expect("redeem")
    );

    let report =
        t.db.delete_expired(NOW + 200, &POLICY)
            .await
            .expect("cleanup");
    assert_eq!(
        report.refresh_tokens, 1,
        "only the expired token goes: {report:?}"
    );
    assert!(
        t.db.find_refresh_token(&short.token_hash)
            .await
            .expect("find")
            .is_none(),
        "the expired token is deleted"
    );
    assert!(
        t.db.find_refresh_token(&live.token_hash)
            .await
            .expect("find")
            .is_some(),
        "the live token is kept"
    );
    assert!(
        t.db.find_refresh_token(&revoked.token_hash)
            .await
            .expect("find")
            .is_some(),
        "a recently revoked token is kept for the account page"
    );

    let later = NOW + 1 + POLICY.revoked_retention + 1;
    let report = t.db.delete_expired(later, &POLICY).await.expect("cleanup");
    assert_eq!(
        report.refresh_tokens, 1,
        "the long-revoked token goes: {report:?}"
    );
    assert_eq!(
        report.grants, 2,
        "with the revoked and the lapsed grant, their codes gone: {report:?}"
    );
    assert!(
        t.db.find_refresh_token(&revoked.token_hash)
            .await
            .expect("find")
            .is_none(),
        "the revoked token is deleted"
    );
    assert!(
        t.db.find_refresh_token(&live.token_hash)
            .await
            .expect("find")
            .is_some(),
        "the live token is still kept"
    );
    assert!(
        t.db.grant_is_active("g-live", later)
            .await
            .expect("grant state"),
        "and its grant"
    );
}

async fn expired_revocations_are_deleted_and_live_ones_kept(t: TestDb) {
    t.db.revoke_access_token("expired", NOW, NOW + 10)
        .await
        .expect("revoke");
    t.db.revoke_access_token("live", NOW, NOW + 1_000)
        .await
        .expect("revoke");

    let report =
        t.db.delete_expired(NOW + 100, &POLICY)
            .await
            .expect("cleanup");

    assert_eq!(report.revocations, 1, "one revocation expired: {report:?}");
    // `now = 0` so that revocations_since filters nothing out: this lists every stored row.
    let stored: Vec<String> =
        t.db.revocations_since(NOW - 1, 0)
            .await
            .expect("revocations")
            .into_iter()
            .map(|r| r.subject)
            .collect();
    assert_eq!(
        stored,
        ["live"],
        "the expired revocation is deleted, the live one kept"
    );
}

async fn stale_dynamic_clients_without_grants_are_deleted(t: TestDb) {
    let at = NOW + 31 * DAY;
    // (client, kind, last used, has a live grant, kept)
    let cases = [
        ("stale-dynamic", "dynamic", None, false, false),
        ("stale-document", "metadata_document", None, false, false),
        ("recently-used", "dynamic", Some(at - DAY), false, true),
        ("stale-with-grant", "dynamic", None, true, true),
        ("preregistered", "preregistered", None, false, true),
    ];
    for (id, kind, last_used_at, has_grant, _) in cases {
        let c = ClientRow {
            kind: kind.to_owned(),
            last_used_at,
            ..client(id)
        };
        t.db.insert_client(&c).await.expect("insert client");
        if has_grant {
            t.db.insert_bare_grant(
                &format!("g-{id}"),
                id,
                "mcp:tools",
                "https://mcp.example/mcp",
                NOW,
                at + DAY,
            )
            .await
            .expect("grant");
        }
    }

    let report = t.db.delete_expired(at, &POLICY).await.expect("cleanup");

    assert_eq!(report.clients, 2, "two stale clients: {report:?}");
    for (id, kind, _, _, kept) in cases {
        let found = t.db.find_client(id).await.expect("find").is_some();
        assert_eq!(found, kept, "{kind} client {id}");
    }
}

async fn stale_throttles_and_expired_keys_are_deleted(t: TestDb) {
    let old = ThrottleRow {
        failures: 3,
        window_start: NOW - 2 * DAY,
        locked_until: None,
        last_failure_ms: None,
    };
    let locked = ThrottleRow {
        failures: 9,
        window_start: NOW - 2 * DAY,
        locked_until: Some(NOW + 60),
        last_failure_ms: None,
    };
    let recent = ThrottleRow {
        failures: 1,
        window_start: NOW - 60,
        locked_until: None,
        last_failure_ms: None,
    };
    for (key, row) in [("old", old), ("locked", locked), ("recent", recent)] {
        crate::throttles::put(&t, key, row).await;
    }
    let key = |kid: &str| SigningKeyRow {
        kid: kid.to_owned(),
        alg: "ES256".to_owned(),
        private_key: "p".to_owned(),
        public_jwk: "{}".to_owned(),
        created_at: NOW - DAY,
        retired_at: None,
        expires_at: None,
    };
    t.db.ensure_signing_key(&key("old")).await.expect("ensure");
    t.db.rotate_signing_key(&key("new"), NOW - 100, NOW - 1)
        .await
        .expect("rotate");

    let report = t.db.delete_expired(NOW, &POLICY).await.expect("cleanup");

    assert_eq!((report.throttles, report.keys), (1, 1), "{report:?}");
    for (key, kept) in [("old", false), ("locked", true), ("recent", true)] {
        assert_eq!(
            t.db.get_throttle(key).await.expect("get").is_some(),
            kept,
            "throttle {key}"
        );
    }
    assert_eq!(
        t.count("signing_keys", "kid", "old").await,
        0,
        "the expired key is deleted"
    );
    assert_eq!(
        t.count("signing_keys", "kid", "new").await,
        1,
        "the active key is kept"
    );
}

async fn a_second_cleanup_finds_nothing_more(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    t.add_redeemed_grant("g1", "app", "alice").await;
    t.db.insert_session("expired", "alice", NOW - 10, NOW - 1)
        .await
        .expect("session");
    t.db.revoke_access_token("jti", NOW - 100, NOW - 1)
        .await
        .expect("revoke");

    let first = t.db.delete_expired(NOW, &POLICY).await.expect("cleanup");
    let second =
        t.db.delete_expired(NOW, &POLICY)
            .await
            .expect("cleanup again");

    assert!(
        first.total() >= 2,
        "the first run deleted something: {first:?}"
    );
    assert_eq!(
        second.total(),
        0,
        "the second run deleted nothing: {second:?}"
    );
    assert!(
        t.db.grant_is_active("g1", NOW).await.expect("grant state"),
        "the live grant survives both runs"
    );
}

backend_tests!(
    expired_sessions_are_deleted_and_live_ones_kept,
    codes_and_their_grants_are_kept_for_the_retention_period,
    expired_and_long_revoked_refresh_tokens_are_deleted_and_live_ones_kept,
    expired_revocations_are_deleted_and_live_ones_kept,
    stale_dynamic_clients_without_grants_are_deleted,
    stale_throttles_and_expired_keys_are_deleted,
    a_second_cleanup_finds_nothing_more,
);
