//! Refresh tokens: rotation is a compare-and-set that keeps the successor sealed beside the
//! rotated token until the successor is used.

use mcp_oauth_store::RotateOutcome;

use crate::helpers::{NOW, REVOCATION_TTL, TestDb, refresh_token, token_hash};

/// A user, a client and a redeemed grant `g1` whose first refresh token is `rt-g1`.
async fn grant_with_refresh_token(t: &TestDb) -> String {
    t.add_user("alice").await;
    t.add_client("app").await;
    t.add_redeemed_grant("g1", "app", "alice").await.id
}

async fn a_refresh_token_is_found_with_its_grant(t: TestDb) {
    let rt = grant_with_refresh_token(&t).await;

    let row =
        t.db.find_refresh_token(&token_hash(&rt))
            .await
            .expect("find")
            .expect("the token exists");
    assert_eq!(row.id, rt);
    assert_eq!(row.grant_id, "g1");
    assert_eq!(row.client_id, "app");
    assert_eq!(row.user_id.as_deref(), Some("alice"));
    assert_eq!(row.scope, "mcp:tools");
    assert_eq!(row.resource, "https://mcp.example/mcp");
    assert_eq!(
        (row.used_at, row.revoked_at, row.grant_revoked_at),
        (None, None, None),
        "a new token is live"
    );
    assert_eq!(row.used_children, 0);
    assert!(
        t.db.find_refresh_token("no-such-hash")
            .await
            .expect("find")
            .is_none(),
        "an unknown hash finds nothing"
    );
}

async fn concurrent_rotations_of_one_token_have_exactly_one_winner(t: TestDb) {
    let rt = grant_with_refresh_token(&t).await;
    const N: usize = 8;

    let attempts: Vec<_> = (0..N)
        .map(|i| {
            let db = t.db.clone();
            let parent = rt.clone();
            tokio::spawn(async move {
                let child = refresh_token(&format!("child-{i}"), "g1", Some(&parent));
                db.rotate_refresh_token(&parent, NOW + 10, &child, "sealed")
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for attempt in attempts {
        outcomes.push(attempt.await.expect("task").expect("rotate_refresh_token"));
    }

    let rotated = outcomes
        .iter()
        .filter(|o| **o == RotateOutcome::Rotated)
        .count();
    let lost = outcomes
        .iter()
        .filter(|o| **o == RotateOutcome::LostRace)
        .count();
    assert_eq!(
        (rotated, lost),
        (1, N - 1),
        "one rotation wins, the others lose the race: {outcomes:?}"
    );

    let mut children = 0;
    for i in 0..N {
        if t.db
            .find_refresh_token(&token_hash(&format!("child-{i}")))
            .await
            .expect("find")
            .is_some()
        {
            children += 1;
        }
    }
    assert_eq!(children, 1, "only the winner's child is stored");
    let parent =
        t.db.find_refresh_token(&token_hash(&rt))
            .await
            .expect("find")
            .expect("parent kept");
    assert_eq!(parent.used_at, Some(NOW + 10), "the parent is marked used");
}

async fn a_used_or_revoked_token_does_not_rotate(t: TestDb) {
    let rt = grant_with_refresh_token(&t).await;
    let child = refresh_token("child", "g1", Some(&rt));
    assert_eq!(
        t.db.rotate_refresh_token(&rt, NOW + 10, &child, "sealed")
            .await
            .expect("rotate"),
        RotateOutcome::Rotated
    );

    let again = refresh_token("again", "g1", Some(&rt));
    assert_eq!(
        t.db.rotate_refresh_token(&rt, NOW + 20, &again, "sealed")
            .await
            .expect("rotate"),
        RotateOutcome::LostRace,
        "a used token does not rotate again"
    );

    t.db.revoke_grant("g1", NOW + 30, "test", REVOCATION_TTL)
        .await
        .expect("revoke");
    let grandchild = refresh_token("grandchild", "g1", Some("child"));
    assert_eq!(
        t.db.rotate_refresh_token("child", NOW + 40, &grandchild, "sealed")
            .await
            .expect("rotate"),
        RotateOutcome::LostRace,
        "a revoked token does not rotate"
    );
    for id in ["again", "grandchild"] {
        assert!(
            t.db.find_refresh_token(&token_hash(id))
                .await
                .expect("find")
                .is_none(),
            "{id} was not stored"
        );
    }
}

async fn a_rotation_keeps_the_sealed_successor_until_the_successor_is_used(t: TestDb) {
    let rt = grant_with_refresh_token(&t).await;
    let child = refresh_token("child", "g1", Some(&rt));
    assert_eq!(
        t.db.rotate_refresh_token(&rt, NOW + 10, &child, "sealed-child")
            .await
            .expect("rotate"),
        RotateOutcome::Rotated
    );
    let sealed = |id: &'static str| {
        let db = t.db.clone();
        async move {
            db.find_refresh_token(&token_hash(id))
                .await
                .expect("find")
                .expect("token exists")
                .sealed_successor
        }
    };
    assert_eq!(sealed("rt-g1").await.as_deref(), Some("sealed-child"));
    let found =
        t.db.find_refresh_token(&token_hash("child"))
            .await
            .expect("find")
            .expect("the successor is stored");
    assert_eq!(found.parent_id.as_deref(), Some(rt.as_str()));
    assert_eq!(found.sealed_successor, None, "not rotated yet");

    let grandchild = refresh_token("grandchild", "g1", Some("child"));
    assert_eq!(
        t.db.rotate_refresh_token("child", NOW + 20, &grandchild, "sealed-grandchild")
            .await
            .expect("rotate"),
        RotateOutcome::Rotated
    );
    assert_eq!(
        sealed("rt-g1").await,
        None,
        "once the successor is used, the seal before it is gone"
    );
    assert_eq!(sealed("child").await.as_deref(), Some("sealed-grandchild"));
}

async fn a_lost_rotation_leaves_the_winners_seal(t: TestDb) {
    let rt = grant_with_refresh_token(&t).await;
    let first = refresh_token("first", "g1", Some(&rt));
    t.db.rotate_refresh_token(&rt, NOW + 10, &first, "sealed-first")
        .await
        .expect("rotate");
    let second = refresh_token("second", "g1", Some(&rt));
    assert_eq!(
        t.db.rotate_refresh_token(&rt, NOW + 10, &second, "sealed-second")
            .await
            .expect("rotate"),
        RotateOutcome::LostRace
    );
    let row =
        t.db.find_refresh_token(&token_hash(&rt))
            .await
            .expect("find")
            .expect("exists");
    assert_eq!(row.sealed_successor.as_deref(), Some("sealed-first"));
}

async fn used_children_counts_only_children_that_were_used(t: TestDb) {
    let rt = grant_with_refresh_token(&t).await;
    let used_children = |id: &'static str| {
        let db = t.db.clone();
        async move {
            db.find_refresh_token(&token_hash(id))
                .await
                .expect("find")
                .expect("token exists")
                .used_children
        }
    };
    assert_eq!(used_children("rt-g1").await, 0, "no children yet");

    let a = refresh_token("a", "g1", Some(&rt));
    assert_eq!(
        t.db.rotate_refresh_token(&rt, NOW + 10, &a, "sealed")
            .await
            .expect("rotate"),
        RotateOutcome::Rotated
    );
    assert_eq!(used_children("rt-g1").await, 0, "a child, not used");

    let a2 = refresh_token("a2", "g1", Some("a"));
    assert_eq!(
        t.db.rotate_refresh_token("a", NOW + 20, &a2, "sealed")
            .await
            .expect("rotate"),
        RotateOutcome::Rotated
    );
    assert_eq!(used_children("rt-g1").await, 1, "child a was used");
    assert_eq!(used_children("a").await, 0, "a's own child is unused");
}

backend_tests!(
    a_refresh_token_is_found_with_its_grant,
    concurrent_rotations_of_one_token_have_exactly_one_winner,
    a_used_or_revoked_token_does_not_rotate,
    a_rotation_keeps_the_sealed_successor_until_the_successor_is_used,
    a_lost_rotation_leaves_the_winners_seal,
    used_children_counts_only_children_that_were_used,
);
