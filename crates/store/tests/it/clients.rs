//! Clients: registration, lookups, the metadata-document cache, and deletion with everything
//! that hangs off a client.

use mcp_oauth_store::{ClientRow, RevocationKind, StoreError};

use crate::helpers::{NOW, REVOCATION_TTL, TestDb, client, code_hash};

async fn an_inserted_client_is_found_by_id(t: TestDb) {
    let mut c = client("app");
    c.kind = "preregistered".to_owned();
    c.secret_hash = Some("secret-hash".to_owned());
    c.last_used_at = Some(NOW + 5);
    t.db.insert_client(&c).await.expect("insert client");

    let found =
        t.db.find_client("app")
            .await
            .expect("find")
            .expect("the client exists");
    assert_eq!(found.id, c.id);
    assert_eq!(found.kind, c.kind);
    assert_eq!(found.metadata, c.metadata);
    assert_eq!(found.secret_hash, c.secret_hash);
    assert_eq!(found.metadata_hash, None);
    assert_eq!(
        (found.created_at, found.last_used_at, found.refresh_after),
        (NOW, Some(NOW + 5), None)
    );
    assert!(
        t.db.find_client("other").await.expect("find").is_none(),
        "an unknown id finds nothing"
    );
}

async fn a_duplicate_id_or_metadata_hash_is_a_conflict(t: TestDb) {
    let mut first = client("app");
    first.metadata_hash = Some("meta-1".to_owned());
    t.db.insert_client(&first).await.expect("insert client");

    let same_id = ClientRow {
        metadata_hash: Some("meta-2".to_owned()),
        ..client("app")
    };
    let same_hash = ClientRow {
        metadata_hash: Some("meta-1".to_owned()),
        ..client("app2")
    };
    for (rejected, why) in [
        (same_id, "the same client id"),
        (same_hash, "the same metadata hash"),
    ] {
        let err = t.db.insert_client(&rejected).await.expect_err(why);
        assert!(
            matches!(err, StoreError::Conflict),
            "{why}: expected Conflict, got {err:?}"
        );
    }
    assert_eq!(
        t.db.list_clients().await.expect("list").len(),
        1,
        "nothing was added"
    );
}

async fn clients_without_a_metadata_hash_do_not_conflict(t: TestDb) {
    t.add_client("a").await;
    t.add_client("b").await;
    let ids: Vec<String> =
        t.db.list_clients()
            .await
            .expect("list")
            .into_iter()
            .map(|c| c.id)
            .collect();
    assert_eq!(ids, ["a", "b"], "NULL metadata hashes are not duplicates");
}

async fn a_registration_is_found_by_its_metadata_hash(t: TestDb) {
    let mut c = client("app");
    c.metadata_hash = Some("meta-1".to_owned());
    t.db.insert_client(&c).await.expect("insert client");

    let found =
        t.db.find_client_by_metadata_hash("meta-1")
            .await
            .expect("find")
            .expect("found by hash");
    assert_eq!(found.id, "app");
    assert!(
        t.db.find_client_by_metadata_hash("meta-2")
            .await
            .expect("find")
            .is_none(),
        "another hash finds nothing"
    );
}

async fn deleting_a_client_removes_its_grants_codes_tokens_and_consents(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    t.add_client("other").await;
    let rt = t.add_redeemed_grant("g-redeemed", "app", "alice").await;
    t.add_authorization("g-pending", "app", "alice").await;
    t.db.upsert_consent("alice", "app", "https://mcp.example/mcp", "mcp:tools", NOW)
        .await
        .expect("consent");
    let other_rt = t.add_redeemed_grant("g-other", "other", "alice").await;
    t.db.upsert_consent(
        "alice",
        "other",
        "https://mcp.example/mcp",
        "mcp:tools",
        NOW,
    )
    .await
    .expect("consent");

    assert!(
        t.db.delete_client("app", NOW + 10, REVOCATION_TTL)
            .await
            .expect("delete"),
        "the client existed"
    );

    assert!(
        t.db.find_client("app").await.expect("find").is_none(),
        "the client is gone"
    );
    for grant in ["g-redeemed", "g-pending"] {
        assert_eq!(
            t.count("grants", "id", grant).await,
            0,
            "grant {grant} is deleted"
        );
        assert!(
            t.db.find_code(&code_hash(grant))
                .await
                .expect("find")
                .is_none(),
            "the code of {grant} is deleted"
        );
    }
    assert!(
        t.db.find_refresh_token(&rt.token_hash)
            .await
            .expect("find")
            .is_none(),
        "its refresh token is deleted"
    );
    let consent =
        t.db.find_consent("alice", "app", "https://mcp.example/mcp")
            .await
            .expect("find");
    assert!(consent.is_none(), "its consent is deleted");

    assert!(
        t.db.find_client("other").await.expect("find").is_some(),
        "another client stays"
    );
    assert!(
        t.db.find_refresh_token(&other_rt.token_hash)
            .await
            .expect("find")
            .is_some(),
        "and its tokens"
    );
    let consent =
        t.db.find_consent("alice", "other", "https://mcp.example/mcp")
            .await
            .expect("find");
    assert!(consent.is_some(), "and its consent");
}

async fn deleting_a_client_publishes_revocations_for_its_live_grants(t: TestDb) {
    t.add_user("alice").await;
    t.add_client("app").await;
    t.add_redeemed_grant("g1", "app", "alice").await;
    t.add_redeemed_grant("g2", "app", "alice").await;
    t.add_redeemed_grant("g-old", "app", "alice").await;
    t.db.revoke_grant("g-old", NOW + 5, "test", REVOCATION_TTL)
        .await
        .expect("revoke");

    assert!(
        t.db.delete_client("app", NOW + 10, REVOCATION_TTL)
            .await
            .expect("delete")
    );

    let mut published: Vec<(String, Option<RevocationKind>, i64)> =
        t.db.revocations_since(NOW + 10, NOW + 10)
            .await
            .expect("revocations")
            .into_iter()
            .map(|r| (r.subject.clone(), r.kind(), r.expires_at))
            .collect();
    published.sort_by(|a, b| a.0.cmp(&b.0));
    let expected: Vec<_> = ["g1", "g2"]
        .into_iter()
        .map(|g| {
            (
                g.to_owned(),
                Some(RevocationKind::Grant),
                NOW + 10 + REVOCATION_TTL,
            )
        })
        .collect();
    assert_eq!(
        published, expected,
        "each live grant is published as revoked; the revoked one was already"
    );
}

async fn deleting_an_unknown_client_returns_false(t: TestDb) {
    assert!(
        !t.db
            .delete_client("nobody", NOW, REVOCATION_TTL)
            .await
            .expect("delete"),
        "nothing to delete"
    );
}

async fn upserting_a_document_client_updates_its_metadata(t: TestDb) {
    let url = "https://app.example/client.json";
    let mut doc = ClientRow {
        kind: "metadata_document".to_owned(),
        metadata: r#"{"client_name":"v1"}"#.to_owned(),
        refresh_after: Some(NOW + 3_600),
        ..client(url)
    };
    t.db.upsert_document_client(&doc)
        .await
        .expect("insert document client");

    doc.metadata = r#"{"client_name":"v2"}"#.to_owned();
    doc.created_at = NOW + 4_000;
    doc.refresh_after = Some(NOW + 7_600);
    t.db.upsert_document_client(&doc)
        .await
        .expect("update document client");

    let found =
        t.db.find_client(url)
            .await
            .expect("find")
            .expect("the client exists");
    assert_eq!(
        found.metadata, r#"{"client_name":"v2"}"#,
        "the metadata is replaced"
    );
    assert_eq!(
        found.refresh_after,
        Some(NOW + 7_600),
        "the refresh time is replaced"
    );
    assert_eq!(found.created_at, NOW, "the registration time stays");
    assert_eq!(found.kind, "metadata_document");
    assert_eq!(
        t.db.list_clients().await.expect("list").len(),
        1,
        "still one client"
    );
}

async fn touching_a_client_records_its_last_use(t: TestDb) {
    t.add_client("app").await;
    t.db.touch_client("app", NOW + 99).await.expect("touch");
    let found =
        t.db.find_client("app")
            .await
            .expect("find")
            .expect("exists");
    assert_eq!(found.last_used_at, Some(NOW + 99));
}

backend_tests!(
    an_inserted_client_is_found_by_id,
    a_duplicate_id_or_metadata_hash_is_a_conflict,
    clients_without_a_metadata_hash_do_not_conflict,
    a_registration_is_found_by_its_metadata_hash,
    deleting_a_client_removes_its_grants_codes_tokens_and_consents,
    deleting_a_client_publishes_revocations_for_its_live_grants,
    deleting_an_unknown_client_returns_false,
    upserting_a_document_client_updates_its_metadata,
    touching_a_client_records_its_last_use,
);
