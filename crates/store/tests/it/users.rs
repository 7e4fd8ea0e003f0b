//! Users and their browser sessions.

use mcp_oauth_store::{RevocationKind, StoreError};

use crate::helpers::{NOW, REVOCATION_TTL, TestDb, user};

async fn an_inserted_user_is_found_by_id_and_by_email(t: TestDb) {
    let alice = t.add_user("alice").await;

    let by_id =
        t.db.find_user("alice")
            .await
            .expect("find")
            .expect("found by id");
    let by_email =
        t.db.find_user_by_email(&alice.email)
            .await
            .expect("find")
            .expect("found by email");
    for found in [&by_id, &by_email] {
        assert_eq!(found.id, alice.id);
        assert_eq!(found.email, alice.email);
        assert_eq!(found.password_hash, alice.password_hash);
        assert_eq!(
            (found.is_admin(), found.is_disabled(), found.created_at),
            (false, false, NOW)
        );
    }
    assert!(
        t.db.find_user("bob").await.expect("find").is_none(),
        "an unknown id finds nothing"
    );
    assert_eq!(t.db.count_users().await.expect("count"), 1);
}

async fn a_duplicate_email_is_a_conflict(t: TestDb) {
    let alice = t.add_user("alice").await;
    let mut impostor = user("impostor");
    impostor.email = alice.email.clone();

    let err =
        t.db.insert_user(&impostor)
            .await
            .expect_err("a taken email is refused");
    assert!(
        matches!(err, StoreError::Conflict),
        "expected Conflict, got {err:?}"
    );
    assert_eq!(
        t.db.count_users().await.expect("count"),
        1,
        "nothing was added"
    );
}

async fn the_first_user_is_inserted_only_into_an_empty_table(t: TestDb) {
    let mut admin = user("admin");
    admin.is_admin = 1;
    assert!(
        t.db.insert_first_user(&admin).await.expect("first user"),
        "an empty table takes the first user"
    );
    assert!(
        t.db.find_user("admin")
            .await
            .expect("find")
            .expect("stored")
            .is_admin()
    );

    assert!(
        !t.db
            .insert_first_user(&user("second"))
            .await
            .expect("second user"),
        "a second first user is refused"
    );
    assert!(
        t.db.find_user("second").await.expect("find").is_none(),
        "and not stored"
    );
    assert_eq!(t.db.count_users().await.expect("count"), 1);
}

async fn concurrent_first_user_setups_insert_exactly_one_user(t: TestDb) {
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let db = t.db.clone();
            tokio::spawn(async move { db.insert_first_user(&user(&format!("admin{i}"))).await })
        })
        .collect();
    let mut inserted = 0;
    for attempt in attempts {
        if attempt.await.expect("task").expect("insert_first_user") {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1, "exactly one concurrent setup wins");
    assert_eq!(
        t.db.count_users().await.expect("count"),
        1,
        "a leaked setup link cannot add a second user"
    );
}

async fn disabling_a_user_ends_sessions_and_revokes_grants(t: TestDb) {
    t.add_user("alice").await;
    t.add_user("bob").await;
    t.add_client("app").await;
    let alice_rt = t.add_redeemed_grant("g-alice", "app", "alice").await;
    t.add_redeemed_grant("g-bob", "app", "bob").await;
    t.db.insert_session("s-alice", "alice", NOW, NOW + 3_600)
        .await
        .expect("session");
    t.db.insert_session("s-bob", "bob", NOW, NOW + 3_600)
        .await
        .expect("session");

    assert!(
        t.db.disable_user("alice", NOW + 10, REVOCATION_TTL)
            .await
            .expect("disable"),
        "alice exists"
    );

    assert!(
        t.db.find_user("alice")
            .await
            .expect("find")
            .expect("kept")
            .is_disabled()
    );
    assert_eq!(
        t.count("sessions", "user_id", "alice").await,
        0,
        "alice's sessions are deleted"
    );
    assert!(
        !t.db
            .grant_is_active("g-alice", NOW + 10)
            .await
            .expect("grant state"),
        "alice's grant is revoked"
    );
    let rt =
        t.db.find_refresh_token(&alice_rt.token_hash)
            .await
            .expect("find")
            .expect("kept");
    assert_eq!(
        rt.revoked_at,
        Some(NOW + 10),
        "alice's refresh token is revoked"
    );
    let published =
        t.db.revocations_since(NOW + 10, NOW + 10)
            .await
            .expect("revocations");
    assert!(
        published
            .iter()
            .any(|r| r.kind() == Some(RevocationKind::Grant) && r.subject == "g-alice"),
        "alice's grant revocation is published: {published:?}"
    );

    assert!(
        t.db.find_session("s-bob", NOW + 10)
            .await
            .expect("find")
            .is_some(),
        "bob keeps his session"
    );
    assert!(
        t.db.grant_is_active("g-bob", NOW + 10)
            .await
            .expect("grant state"),
        "bob keeps his grant"
    );

    assert!(
        !t.db
            .disable_user("alice", NOW + 20, REVOCATION_TTL)
            .await
            .expect("disable"),
        "already disabled"
    );
    assert!(
        !t.db
            .disable_user("nobody", NOW + 20, REVOCATION_TTL)
            .await
            .expect("disable"),
        "unknown user"
    );
}

async fn a_live_session_is_found_with_its_user(t: TestDb) {
    let mut alice = user("alice");
    alice.is_admin = 1;
    t.db.insert_user(&alice).await.expect("insert user");
    t.db.insert_session("s1", "alice", NOW, NOW + 3_600)
        .await
        .expect("session");

    let s =
        t.db.find_session("s1", NOW + 1)
            .await
            .expect("find")
            .expect("a live session is found");
    assert_eq!(
        (s.user_id.as_str(), s.email.as_str(), s.is_admin),
        ("alice", alice.email.as_str(), 1)
    );
    assert_eq!((s.created_at, s.expires_at), (NOW, NOW + 3_600));
    assert!(
        t.db.find_session("unknown", NOW + 1)
            .await
            .expect("find")
            .is_none(),
        "an unknown id finds nothing"
    );

    t.db.delete_session("s1").await.expect("delete");
    assert!(
        t.db.find_session("s1", NOW + 1)
            .await
            .expect("find")
            .is_none(),
        "a deleted session is gone"
    );
}

async fn find_session_ignores_expired_sessions(t: TestDb) {
    t.add_user("alice").await;
    t.db.insert_session("s1", "alice", NOW, NOW + 3_600)
        .await
        .expect("session");

    assert!(
        t.db.find_session("s1", NOW + 3_599)
            .await
            .expect("find")
            .is_some(),
        "live one second before expiry"
    );
    assert!(
        t.db.find_session("s1", NOW + 3_600)
            .await
            .expect("find")
            .is_none(),
        "expired at expires_at"
    );
}

async fn find_session_ignores_disabled_users(t: TestDb) {
    let mut disabled = user("mallory");
    disabled.disabled_at = Some(NOW - 1);
    t.db.insert_user(&disabled).await.expect("insert user");
    t.db.insert_session("s1", "mallory", NOW, NOW + 3_600)
        .await
        .expect("session");

    assert!(
        t.db.find_session("s1", NOW + 1)
            .await
            .expect("find")
            .is_none(),
        "a disabled user's session is ignored"
    );
}

async fn deleting_a_users_sessions_leaves_others(t: TestDb) {
    t.add_user("alice").await;
    t.add_user("bob").await;
    for (id, user) in [("a1", "alice"), ("a2", "alice"), ("b1", "bob")] {
        t.db.insert_session(id, user, NOW, NOW + 3_600)
            .await
            .expect("session");
    }

    t.db.delete_user_sessions("alice").await.expect("delete");

    for (id, expected) in [("a1", false), ("a2", false), ("b1", true)] {
        assert_eq!(
            t.db.find_session(id, NOW).await.expect("find").is_some(),
            expected,
            "session {id}"
        );
    }
}

backend_tests!(
    an_inserted_user_is_found_by_id_and_by_email,
    a_duplicate_email_is_a_conflict,
    the_first_user_is_inserted_only_into_an_empty_table,
    concurrent_first_user_setups_insert_exactly_one_user,
    disabling_a_user_ends_sessions_and_revokes_grants,
    a_live_session_is_found_with_its_user,
    find_session_ignores_expired_sessions,
    find_session_ignores_disabled_users,
    deleting_a_users_sessions_leaves_others,
);
