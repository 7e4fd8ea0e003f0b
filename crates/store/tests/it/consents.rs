//! Remembered consent and the user's list of connected apps.

use mcp_oauth_store::RevocationKind;

use crate::helpers::{NOW, REVOCATION_TTL, TestDb};

const RESOURCE: &str = "https://mcp.example/mcp";

async fn a_consent_is_remembered_and_updated(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    assert!(
        t.db.find_consent("alice", "app", RESOURCE)
            .await
            .expect("find")
            .is_none(),
        "no consent yet"
    );

    t.db.upsert_consent("alice", "app", RESOURCE, "mcp:tools", NOW)
        .await
        .expect("consent");
    let c =
        t.db.find_consent("alice", "app", RESOURCE)
            .await
            .expect("find")
            .expect("remembered");
    assert_eq!((c.scope.as_str(), c.updated_at), ("mcp:tools", NOW));

    t.db.upsert_consent("alice", "app", RESOURCE, "mcp:tools mcp:admin", NOW + 10)
        .await
        .expect("consent");
    let c =
        t.db.find_consent("alice", "app", RESOURCE)
            .await
            .expect("find")
            .expect("remembered");
    assert_eq!(
        (c.scope.as_str(), c.updated_at),
        ("mcp:tools mcp:admin", NOW + 10),
        "the second consent replaces the first"
    );

    let other =
        t.db.find_consent("alice", "app", "https://other.example/mcp")
            .await
            .expect("find");
    assert!(other.is_none(), "consent is per resource");
}

async fn connected_apps_lists_every_client_with_something_honoured(t: TestDb) {
    t.add_user("alice").await;
    t.add_user("bob").await;
    // (client, what alice gave it, listed for alice at NOW + 100)
    let cases = [
        ("redeemed", "a redeemed grant", true),
        ("pending", "a code never redeemed, expired since", false),
        ("remembered", "remembered consent, its tokens expired", true),
        ("revoked", "a grant, revoked", false),
        ("lapsed", "a grant without refresh token, expired", false),
        ("bobs", "nothing: bob gave it a grant", false),
    ];
    for (client, _, _) in cases {
        t.add_client(client).await;
    }
    t.add_redeemed_grant("g-redeemed", "redeemed", "alice")
        .await;
    t.add_authorization("g-pending", "pending", "alice").await;
    t.add_redeemed_grant("g-revoked", "revoked", "alice").await;
    t.db.revoke_grant("g-revoked", NOW + 5, "test", REVOCATION_TTL)
        .await
        .expect("revoke");
    let lapsed = t.add_authorization("g-lapsed", "lapsed", "alice").await;
    assert!(
        t.db.redeem_code(&lapsed.code_hash, NOW + 1, None, NOW + 50)
            .await
            .expect("redeem")
    );
    t.add_redeemed_grant("g-bobs", "bobs", "bob").await;
    t.db.upsert_consent("alice", "remembered", RESOURCE, "mcp:tools", NOW - 10)
        .await
        .expect("consent");

    let apps =
        t.db.connected_apps("alice", NOW + 100)
            .await
            .expect("connected apps");
    let listed: Vec<&str> = apps.iter().map(|a| a.client_id.as_str()).collect();
    for (client, how, expected) in cases {
        assert_eq!(
            listed.contains(&client),
            expected,
            "client whose grant was {how}: listed = {listed:?}"
        );
    }
    let redeemed = apps.iter().find(|a| a.client_id == "redeemed").unwrap();
    assert_eq!((redeemed.kind.as_str(), redeemed.grants), ("dynamic", 1));
    assert_eq!(
        (redeemed.first_authorized_at, redeemed.last_authorized_at),
        (NOW, NOW)
    );
    let while_pending =
        t.db.connected_apps("alice", NOW + 1)
            .await
            .expect("connected apps");
    assert!(
        while_pending.iter().any(|a| a.client_id == "pending"),
        "a code not redeemed yet is listed while it can be: {while_pending:?}"
    );
    let remembered = apps.iter().find(|a| a.client_id == "remembered").unwrap();
    assert_eq!(remembered.grants, 0, "no live grant, only the consent");
}

async fn connected_apps_counts_grants_per_client(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    t.add_redeemed_grant("g1", "app", "alice").await;
    t.add_redeemed_grant("g2", "app", "alice").await;

    let apps =
        t.db.connected_apps("alice", NOW + 100)
            .await
            .expect("connected apps");
    assert_eq!(apps.len(), 1, "one row per client: {apps:?}");
    assert_eq!(apps[0].grants, 2, "both grants counted");
}

async fn revoking_client_access_revokes_grants_and_forgets_consent(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    t.add_client("other").await;
    let rt1 = t.add_redeemed_grant("g1", "app", "alice").await;
    t.add_redeemed_grant("g2", "app", "alice").await;
    t.add_redeemed_grant("g-other", "other", "alice").await;
    t.db.upsert_consent("alice", "app", RESOURCE, "mcp:tools", NOW)
        .await
        .expect("consent");
    t.db.upsert_consent("alice", "other", RESOURCE, "mcp:tools", NOW)
        .await
        .expect("consent");

    let revoked =
        t.db.revoke_client_access("alice", "app", NOW + 10, REVOCATION_TTL)
            .await
            .expect("revoke access");

    assert_eq!(revoked, 2, "both of app's grants are revoked");
    for g in ["g1", "g2"] {
        assert!(
            !t.db
                .grant_is_active(g, NOW + 10)
                .await
                .expect("grant state"),
            "{g} is revoked"
        );
    }
    let rt =
        t.db.find_refresh_token(&rt1.token_hash)
            .await
            .expect("find")
            .expect("kept");
    assert_eq!(
        rt.revoked_at,
        Some(NOW + 10),
        "refresh tokens are revoked with the grant"
    );
    assert!(
        t.db.find_consent("alice", "app", RESOURCE)
            .await
            .expect("find")
            .is_none(),
        "the consent is forgotten"
    );
    let published =
        t.db.revocations_since(NOW + 10, NOW + 10)
            .await
            .expect("revocations");
    let subjects: Vec<_> = published
        .iter()
        .filter(|r| r.kind() == Some(RevocationKind::Grant))
        .map(|r| r.subject.as_str())
        .collect();
    assert!(
        subjects.contains(&"g1") && subjects.contains(&"g2"),
        "both revocations are published: {subjects:?}"
    );

    assert!(
        t.db.grant_is_active("g-other", NOW + 10)
            .await
            .expect("grant state"),
        "another client keeps its grant"
    );
    assert!(
        t.db.find_consent("alice", "other", RESOURCE)
            .await
            .expect("find")
            .is_some(),
        "and its consent"
    );
    let apps =
        t.db.connected_apps("alice", NOW + 10)
            .await
            .expect("connected apps");
    let listed: Vec<_> = apps.iter().map(|a| a.client_id.as_str()).collect();
    assert_eq!(listed, ["other"], "app is no longer connected");

    let again =
        t.db.revoke_client_access("alice", "app", NOW + 20, REVOCATION_TTL)
            .await
            .expect("revoke again");
    assert_eq!(again, 0, "nothing left to revoke");
}

backend_tests!(
    a_consent_is_remembered_and_updated,
    connected_apps_lists_every_client_with_something_honoured,
    connected_apps_counts_grants_per_client,
    revoking_client_access_revokes_grants_and_forgets_consent,
);
