//! Authorization codes: stored with their grant, consumed exactly once, kept after use.

use crate::helpers::{CODE_TTL, NOW, REFRESH_TTL, TestDb, code_hash, refresh_token, token_hash};

async fn an_inserted_authorization_is_found_by_its_code_hash(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    let a = t.add_authorization("g1", "app", "alice").await;

    let code =
        t.db.find_code(&a.code_hash)
            .await
            .expect("find code")
            .expect("the code exists");
    assert_eq!(code.grant_id, "g1");
    assert_eq!(code.client_id, "app");
    assert_eq!(
        code.user_id.as_deref(),
        Some("alice"),
        "the user comes from the grant"
    );
    assert_eq!(code.redirect_uri, a.redirect_uri);
    assert_eq!(
        code.redirect_uri_explicit, 1,
        "explicit redirect_uri is stored as 1"
    );
    assert_eq!(code.code_challenge, a.code_challenge);
    assert_eq!(code.scope, a.scope);
    assert_eq!(code.resource, a.resource);
    assert_eq!((code.created_at, code.expires_at), (NOW, NOW + CODE_TTL));
    assert_eq!(code.consumed_at, None, "a new code is unconsumed");
    assert_eq!(code.grant_revoked_at, None, "a new grant is live");
    assert!(
        t.db.grant_is_active("g1", NOW).await.expect("grant state"),
        "the grant is live until the code expires"
    );

    assert!(
        t.db.find_code("no-such-hash")
            .await
            .expect("find code")
            .is_none(),
        "an unknown hash finds nothing"
    );
}

async fn concurrent_redemptions_of_one_code_succeed_exactly_once(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    t.add_authorization("g1", "app", "alice").await;

    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let db = t.db.clone();
            tokio::spawn(async move {
                let rt = refresh_token(&format!("rt-{i}"), "g1", None);
                db.redeem_code(&code_hash("g1"), NOW + 1, Some(&rt), rt.expires_at)
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for attempt in attempts {
        if attempt.await.expect("task").expect("redeem_code") {
            winners += 1;
        }
    }
    assert_eq!(
        winners, 1,
        "exactly one of 8 concurrent redemptions consumes the code"
    );

    let mut stored = 0;
    for i in 0..8 {
        if t.db
            .find_refresh_token(&token_hash(&format!("rt-{i}")))
            .await
            .expect("find")
            .is_some()
        {
            stored += 1;
        }
    }
    assert_eq!(stored, 1, "only the winner's refresh token is stored");
}

async fn a_second_redemption_returns_false_and_writes_no_refresh_token(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    let a = t.add_authorization("g1", "app", "alice").await;
    let first = refresh_token("rt-first", "g1", None);
    let replay = refresh_token("rt-replay", "g1", None);

    assert!(
        t.db.redeem_code(&a.code_hash, NOW + 1, Some(&first), first.expires_at)
            .await
            .expect("redeem")
    );
    let again =
        t.db.redeem_code(&a.code_hash, NOW + 2, Some(&replay), replay.expires_at)
            .await
            .expect("redeem");

    assert!(!again, "a consumed code does not redeem again");
    assert!(
        t.db.find_refresh_token(&replay.token_hash)
            .await
            .expect("find")
            .is_none(),
        "the failed redemption stored no refresh token"
    );
    let code =
        t.db.find_code(&a.code_hash)
            .await
            .expect("find")
            .expect("a used code is kept");
    assert_eq!(
        code.consumed_at,
        Some(NOW + 1),
        "the first redemption's time stays"
    );
    assert_eq!(
        code.grant_id, "g1",
        "a replayed code still finds its grant, so the grant can be revoked"
    );
}

async fn redeeming_an_unknown_code_returns_false(t: TestDb) {
    let rt = refresh_token("rt", "g-none", None);
    let redeemed =
        t.db.redeem_code("no-such-hash", NOW, Some(&rt), rt.expires_at)
            .await
            .expect("redeem");
    assert!(!redeemed, "an unknown code is not redeemed");
}

async fn redeeming_extends_the_grant_to_the_refresh_token_lifetime(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    let a = t.add_authorization("g1", "app", "alice").await;
    assert!(
        !t.db
            .grant_is_active("g1", NOW + CODE_TTL + 1)
            .await
            .expect("grant state"),
        "an unredeemed grant lapses with its code"
    );

    let rt = refresh_token("rt", "g1", None);
    assert!(
        t.db.redeem_code(&a.code_hash, NOW + 1, Some(&rt), rt.expires_at)
            .await
            .expect("redeem")
    );

    assert!(
        t.db.grant_is_active("g1", NOW + REFRESH_TTL - 1)
            .await
            .expect("grant state"),
        "live until the refresh token expires"
    );
    assert!(
        !t.db
            .grant_is_active("g1", NOW + REFRESH_TTL)
            .await
            .expect("grant state"),
        "expired with it"
    );
}

async fn redeeming_without_a_refresh_token_stores_none(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    let a = t.add_authorization("g1", "app", "alice").await;

    assert!(
        t.db.redeem_code(&a.code_hash, NOW + 1, None, NOW + 3_600)
            .await
            .expect("redeem")
    );

    assert_eq!(
        t.count("refresh_tokens", "grant_id", "g1").await,
        0,
        "no refresh token was asked for"
    );
    assert!(
        t.db.grant_is_active("g1", NOW + 3_599)
            .await
            .expect("grant state"),
        "the grant lives as long as asked"
    );
}

backend_tests!(
    an_inserted_authorization_is_found_by_its_code_hash,
    concurrent_redemptions_of_one_code_succeed_exactly_once,
    a_second_redemption_returns_false_and_writes_no_refresh_token,
    redeeming_an_unknown_code_returns_false,
    redeeming_extends_the_grant_to_the_refresh_token_lifetime,
    redeeming_without_a_refresh_token_stores_none,
);
