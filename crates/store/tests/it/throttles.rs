//! Sign-in throttle counters: read-decide-write under the rows' locks.

use mcp_oauth_store::{ThrottleRow, ThrottleWrite};

use crate::helpers::{NOW, TestDb};

fn summary(row: Option<ThrottleRow>) -> Option<(i64, i64, Option<i64>)> {
    row.map(|r| (r.failures, r.window_start, r.locked_until))
}

/// Store `row` under `key`, as a caller deciding "put" would.
pub async fn put(t: &TestDb, key: &str, row: ThrottleRow) {
    t.db.update_throttles(&[key.to_owned()], NOW, |_| {
        (vec![ThrottleWrite::Put(row)], ())
    })
    .await
    .expect("put");
}

async fn decisions_see_the_rows_and_their_writes_apply(t: TestDb) {
    let keys = ["ip:1".to_owned(), "account:a".to_owned()];
    let seen =
        t.db.update_throttles(&keys, NOW, |rows| {
            (
                vec![
                    ThrottleWrite::Put(ThrottleRow {
                        failures: 3,
                        window_start: NOW,
                        locked_until: Some(NOW + 60),
                        last_failure_ms: None,
                    }),
                    ThrottleWrite::Keep,
                ],
                rows.to_vec(),
            )
        })
        .await
        .expect("update");
    assert_eq!(seen, vec![None, None], "no history yet");
    assert_eq!(
        summary(t.db.get_throttle("ip:1").await.expect("get")),
        Some((3, NOW, Some(NOW + 60)))
    );
    let seen =
        t.db.update_throttles(&keys, NOW + 1, |rows| {
            (
                vec![ThrottleWrite::Delete, ThrottleWrite::Keep],
                rows.to_vec(),
            )
        })
        .await
        .expect("update");
    assert_eq!(summary(seen[0]), Some((3, NOW, Some(NOW + 60))));
    assert_eq!(seen[1], None, "kept means nothing was recorded");
    assert!(
        t.db.get_throttle("ip:1").await.expect("get").is_none(),
        "deleted"
    );
}

async fn concurrent_updates_of_one_key_apply_one_after_another(t: TestDb) {
    // Sixty parallel increments, each deciding from what it read: none may be lost.
    const N: i64 = 60;
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let db = t.db.clone();
            tokio::spawn(async move {
                db.update_throttles(&["account:a".to_owned(), "ip:1".to_owned()], NOW, |rows| {
                    let bump = |r: Option<ThrottleRow>| {
                        ThrottleWrite::Put(ThrottleRow {
                            failures: r.map_or(0, |r| r.failures) + 1,
                            window_start: NOW,
                            locked_until: None,
                            last_failure_ms: None,
                        })
                    };
                    (vec![bump(rows[0]), bump(rows[1])], ())
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("update");
    }
    for key in ["account:a", "ip:1"] {
        assert_eq!(
            t.db.get_throttle(key)
                .await
                .expect("get")
                .map(|r| r.failures),
            Some(N),
            "{key}"
        );
    }
}

backend_tests!(
    decisions_see_the_rows_and_their_writes_apply,
    concurrent_updates_of_one_key_apply_one_after_another,
);
