//! Login throttle state.

use mcp_oauth_store::ThrottleRow;

use crate::helpers::{NOW, TestDb};

fn summary(row: Option<ThrottleRow>) -> Option<(i64, i64, Option<i64>)> {
    row.map(|r| (r.failures, r.window_start, r.locked_until))
}

async fn a_throttle_round_trips_and_clears(t: TestDb) {
    assert!(
        t.db.get_throttle("ip:1").await.expect("get").is_none(),
        "no state yet"
    );

    let row = ThrottleRow {
        failures: 3,
        window_start: NOW,
        locked_until: Some(NOW + 60),
    };
    t.db.put_throttle("ip:1", row).await.expect("put");
    t.db.put_throttle(
        "ip:2",
        ThrottleRow {
            failures: 1,
            window_start: NOW,
            locked_until: None,
        },
    )
    .await
    .expect("put");
    assert_eq!(
        summary(t.db.get_throttle("ip:1").await.expect("get")),
        Some((3, NOW, Some(NOW + 60)))
    );

    t.db.clear_throttle("ip:1").await.expect("clear");
    assert!(
        t.db.get_throttle("ip:1").await.expect("get").is_none(),
        "cleared"
    );
    assert_eq!(
        summary(t.db.get_throttle("ip:2").await.expect("get")),
        Some((1, NOW, None)),
        "another key stays"
    );
    t.db.clear_throttle("ip:1")
        .await
        .expect("clearing an absent key is harmless");
}

async fn putting_a_throttle_again_overwrites_it(t: TestDb) {
    t.db.put_throttle(
        "ip:1",
        ThrottleRow {
            failures: 5,
            window_start: NOW,
            locked_until: Some(NOW + 60),
        },
    )
    .await
    .expect("put");
    t.db.put_throttle(
        "ip:1",
        ThrottleRow {
            failures: 1,
            window_start: NOW + 100,
            locked_until: None,
        },
    )
    .await
    .expect("put again");

    assert_eq!(
        summary(t.db.get_throttle("ip:1").await.expect("get")),
        Some((1, NOW + 100, None)),
        "every column is replaced, including a lock set back to NULL"
    );
}

backend_tests!(
    a_throttle_round_trips_and_clears,
    putting_a_throttle_again_overwrites_it
);
