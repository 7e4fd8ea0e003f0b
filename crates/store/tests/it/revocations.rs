//! Revoking grants and access tokens, and publishing it to every instance.

use mcp_oauth_store::{RevocationKind, RotateOutcome};

use crate::helpers::{NOW, REVOCATION_TTL, TestDb, refresh_token, token_hash};

async fn revoking_a_grant_revokes_its_refresh_tokens_and_publishes_it(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    let rt = t.add_redeemed_grant("g1", "app", "alice").await;
    let child = refresh_token("child", "g1", Some(&rt.id));
    assert_eq!(
        t.db.rotate_refresh_token(&rt.id, NOW + 10, &child, "sealed")
            .await
            .expect("rotate"),
        RotateOutcome::Rotated
    );
    let other = t.add_redeemed_grant("g2", "app", "alice").await;

    t.db.revoke_grant("g1", NOW + 100, "reuse_detected", REVOCATION_TTL)
        .await
        .expect("revoke");

    assert!(
        !t.db
            .grant_is_active("g1", NOW + 100)
            .await
            .expect("grant state"),
        "the grant is revoked"
    );
    for id in [rt.id.as_str(), "child"] {
        let row =
            t.db.find_refresh_token(&token_hash(id))
                .await
                .expect("find")
                .expect("token kept");
        assert_eq!(
            row.revoked_at,
            Some(NOW + 100),
            "refresh token {id} is revoked"
        );
        assert_eq!(
            row.grant_revoked_at,
            Some(NOW + 100),
            "and sees its grant revoked"
        );
    }
    let unrelated =
        t.db.find_refresh_token(&other.token_hash)
            .await
            .expect("find")
            .expect("token kept");
    assert_eq!(
        unrelated.revoked_at, None,
        "another grant's token is untouched"
    );

    let published =
        t.db.revocations_since(NOW + 100, NOW + 100)
            .await
            .expect("revocations");
    assert_eq!(
        published.len(),
        1,
        "one revocation is published: {published:?}"
    );
    let r = &published[0];
    assert_eq!(r.kind(), Some(RevocationKind::Grant));
    assert_eq!(r.subject, "g1");
    assert_eq!(
        (r.created_at, r.expires_at),
        (NOW + 100, NOW + 100 + REVOCATION_TTL),
        "lives as long as an access token"
    );
}

async fn revoking_an_access_token_publishes_a_token_revocation(t: TestDb) {
    t.db.revoke_access_token("jti-1", NOW, NOW + 300)
        .await
        .expect("revoke token");

    let published = t.db.revocations_since(NOW, NOW).await.expect("revocations");
    assert_eq!(
        published.len(),
        1,
        "one revocation is published: {published:?}"
    );
    let r = &published[0];
    assert_eq!(r.kind(), Some(RevocationKind::Token));
    assert_eq!(
        (r.subject.as_str(), r.created_at, r.expires_at),
        ("jti-1", NOW, NOW + 300)
    );
}

async fn revoking_twice_is_harmless(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    let rt = t.add_redeemed_grant("g1", "app", "alice").await;

    t.db.revoke_grant("g1", NOW + 10, "first", REVOCATION_TTL)
        .await
        .expect("first revoke");
    t.db.revoke_grant("g1", NOW + 20, "second", REVOCATION_TTL)
        .await
        .expect("second revoke succeeds");
    t.db.revoke_access_token("jti-1", NOW + 10, NOW + 300)
        .await
        .expect("first token revoke");
    t.db.revoke_access_token("jti-1", NOW + 20, NOW + 300)
        .await
        .expect("second token revoke succeeds");

    let row =
        t.db.find_refresh_token(&rt.token_hash)
            .await
            .expect("find")
            .expect("token kept");
    assert_eq!(
        row.revoked_at,
        Some(NOW + 10),
        "the first revocation's time stays"
    );
    assert_eq!(
        row.grant_revoked_at,
        Some(NOW + 10),
        "the grant keeps its first revocation"
    );
    let mut published =
        t.db.revocations_since(NOW, NOW + 20)
            .await
            .expect("revocations");
    published.sort_by(|a, b| a.subject.cmp(&b.subject));
    let summary: Vec<_> = published
        .iter()
        .map(|r| (r.kind(), r.subject.as_str(), r.created_at))
        .collect();
    assert_eq!(
        summary,
        [
            (Some(RevocationKind::Grant), "g1", NOW + 10),
            (Some(RevocationKind::Token), "jti-1", NOW + 10)
        ],
        "one row each, from the first revocation"
    );
}

async fn revocations_since_returns_only_new_rows_that_still_matter(t: TestDb) {
    // (jti, created_at, expires_at, expected in revocations_since(NOW, NOW + 50))
    let cases = [
        ("before-window", NOW - 1, NOW + 300, false),
        ("at-window-start", NOW, NOW + 300, true),
        ("inside-window", NOW + 10, NOW + 300, true),
        ("expired", NOW + 10, NOW + 50, false),
    ];
    for (jti, created, expires, _) in cases {
        t.db.revoke_access_token(jti, created, expires)
            .await
            .expect("revoke token");
    }

    let found: Vec<String> =
        t.db.revocations_since(NOW, NOW + 50)
            .await
            .expect("revocations")
            .into_iter()
            .map(|r| r.subject)
            .collect();
    for (jti, _, _, expected) in cases {
        assert_eq!(found.iter().any(|s| s == jti), expected, "revocation {jti}");
    }
}

backend_tests!(
    revoking_a_grant_revokes_its_refresh_tokens_and_publishes_it,
    revoking_an_access_token_publishes_a_token_revocation,
    revoking_twice_is_harmless,
    revocations_since_returns_only_new_rows_that_still_matter,
);
