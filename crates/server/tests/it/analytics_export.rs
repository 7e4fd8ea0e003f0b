//! Analytics exports over real HTTP: a known set of events comes out exactly (every field, in
//! time order, across page boundaries) as JSON, NDJSON and CSV; CSV cells that clients choose
//! are quoted and defused; rollups come out per period; only admins may download.

use reqwest::StatusCode;
use serde_json::Value;

use mcp_oauth_core::analytics::summary::rfc3339;
use mcp_oauth_core::analytics::{Event, McpResult, OAuthEvent};

use crate::helpers::{Browser, PASSWORD, TestApp, spawn_app_with};

const ADMIN: &str = "admin@example.com";
const MINUTE: i64 = 60_000;

async fn spawn() -> TestApp {
    spawn_app_with(|s| s.analytics.flush_interval_ms = 20).await
}

async fn admin_browser(app: &TestApp) -> Browser {
    app.create_user(ADMIN, true).await;
    let b = Browser::new(app);
    assert_eq!(
        b.login(ADMIN, PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    b
}

/// GET the export of `[from, to)` with `params`; returns the response's status, headers and
/// body.
async fn export(
    app: &TestApp,
    browser: &Browser,
    from: i64,
    to: i64,
    params: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let url = format!(
        "{}/analytics/api/export?from={}&to={}&{params}",
        app.url,
        rfc3339(from),
        rfc3339(to)
    );
    let r = browser.get(&url).await;
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

/// A base time two hours ago, on the app's clock: away from the events the test's own
/// requests record.
fn base(app: &TestApp) -> i64 {
    (app.clock.now() - 7_200) * 1000
}

/// The known events: seven of different kinds in `[t, t + 3 min)`, one just before and one
/// at the end (both outside).
fn known_events(t: i64) -> Vec<Event> {
    vec![
        Event::http(t - 1, "/token", "POST", 200, 10).client(Some("before")),
        Event::http(t, "/token", "POST", 400, 1_500)
            .client(Some("c1"))
            .request(Some("192.0.2.7".into()), Some("curl/8.0"), Some("req-1")),
        Event::mcp(
            t + 10,
            "tools/call",
            Some("add_numbers"),
            McpResult::Success,
            2_000,
        )
        .user(Some("u1"))
        .client(Some("c1"))
        .mcp_context(
            Some("it/1.0"),
            Some("2025-06-18"),
            Some(mcp_oauth_core::analytics::Transport::StreamableHttp),
        ),
        Event::mcp(
            t + 20,
            "tools/call",
            Some("no_such_tool"),
            McpResult::ProtocolError(-32602),
            300,
        )
        .user(Some("u1"))
        .client(Some("c1")),
        Event::mcp(
            t + 20,
            "tools/call",
            Some("calculate_circle_area"),
            McpResult::ToolError,
            400,
        )
        .user(Some("u2"))
        .client(Some("c2")),
        Event::oauth(
            t + MINUTE,
            OAuthEvent::SignInFailed {
                reason: "invalid_credentials",
            },
        )
        .user(Some("u2")),
        Event::oauth(
            t + MINUTE + 5,
            OAuthEvent::CodeExchanged {
                pkce_method: "S256",
            },
        )
        .user(Some("u1"))
        .client(Some("c1")),
        Event::dropped(t + 2 * MINUTE, 3),
        Event::http(t + 3 * MINUTE, "/token", "POST", 200, 10).client(Some("after")),
    ]
}

#[tokio::test]
async fn a_known_set_of_events_comes_out_exactly_as_json_ndjson_and_csv() {
    let app = spawn().await;
    let admin = admin_browser(&app).await;
    let t = base(&app);
    let events = known_events(t);
    app.state.db.record_events(&events).await.unwrap();
    let inside: Vec<&Event> = events
        .iter()
        .filter(|e| t <= e.at && e.at < t + 3 * MINUTE)
        .collect();
    assert_eq!(inside.len(), 7);

    let (status, headers, body) = export(&app, &admin, t, t + 3 * MINUTE, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"mcp-oauth-events-")
            && disposition.ends_with(".json\""),
        "{disposition}"
    );
    let rows: Vec<Value> = serde_json::from_str(&body).expect("one JSON array");
    assert_eq!(rows.len(), inside.len(), "{body}");
    for (row, e) in rows.iter().zip(&inside) {
        assert_eq!(row["at"], rfc3339(e.at), "{row}");
        for (field, value) in [
            ("kind", &e.dims.kind),
            ("name", &e.dims.name),
            ("detail", &e.dims.detail),
            ("outcome", &e.dims.outcome),
            ("code", &e.dims.code),
            ("user_id", &e.dims.user_id),
            ("client_id", &e.dims.client_id),
            ("software", &e.dims.software),
            ("protocol_version", &e.dims.protocol_version),
            ("transport", &e.dims.transport),
        ] {
            assert_eq!(row[field], value.as_str(), "{field} of {row}");
        }
        assert_eq!(row["count"], e.count, "{row}");
        assert_eq!(row["latency_us"].as_u64(), e.latency_us, "{row}");
        assert_eq!(row["ip"].as_str(), e.ip.as_deref(), "{row}");
        assert_eq!(row["user_agent"].as_str(), e.user_agent.as_deref(), "{row}");
        assert_eq!(row["request_id"].as_str(), e.request_id.as_deref(), "{row}");
    }
    assert_eq!(rows[6]["kind"], "pipeline");
    assert_eq!(rows[6]["count"], 3);

    let (status, headers, body) = export(&app, &admin, t, t + 3 * MINUTE, "format=ndjson").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines, rows, "NDJSON has the same rows");

    let (status, headers, body) = export(&app, &admin, t, t + 3 * MINUTE, "format=csv").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let records = parse_csv(&body);
    assert_eq!(
        records[0].join(","),
        "at,kind,name,detail,outcome,code,user_id,client_id,software,protocol_version,\
         transport,country,latency_us,count,ip,user_agent,request_id"
    );
    assert_eq!(records.len(), 1 + inside.len());
    let at = rfc3339(t);
    let expected = [
        at.as_str(),
        "http",
        "/token",
        "POST",
        "error",
        "400",
        "",
        "c1",
        "",
        "",
        "",
        "",
        "1500",
        "1",
        "192.0.2.7",
        "curl/8.0",
        "req-1",
    ];
    assert_eq!(records[1], expected, "the first event of the range");
    // A JSON-RPC error code is a number, not a formula: kept as it is.
    assert_eq!(records[3][5], "-32602");
    assert!(body.contains(",-32602,"), "{body}");
    assert!(body.ends_with("\r\n"));

    // An empty range is an empty array, or just the header.
    let (_, _, body) = export(&app, &admin, t - 60 * MINUTE, t - 30 * MINUTE, "").await;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&body).unwrap().len(), 0);
    let (_, _, body) = export(&app, &admin, t - 60 * MINUTE, t - 30 * MINUTE, "format=csv").await;
    assert_eq!(parse_csv(&body).len(), 1);
}

#[tokio::test]
async fn a_range_of_many_pages_streams_every_event_once_in_order() {
    let app = spawn().await;
    let admin = admin_browser(&app).await;
    let t = base(&app);
    // More than two pages of 5,000, many sharing a millisecond.
    let n = 2 * mcp_oauth::analytics::export::PAGE as usize + 7;
    let events: Vec<Event> = (0..n)
        .map(|i| {
            Event::http(t + (i / 3) as i64, "/token", "POST", 200, i as u64)
                .client(Some(&format!("c{i}")))
        })
        .collect();
    app.state.db.record_events(&events).await.unwrap();
    let (status, _, body) = export(&app, &admin, t, t + 60 * MINUTE, "format=ndjson").await;
    assert_eq!(status, StatusCode::OK);
    let rows: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), n);
    // Stored in order, so time order with ids breaking ties is the order written.
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["latency_us"], i as u64, "row {i}");
    }
    let (_, _, body) = export(&app, &admin, t, t + 60 * MINUTE, "format=json").await;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&body).unwrap().len(), n);
}

/// RFC 4180 records: quoted cells may hold commas, doubled quotes and line breaks.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut cell)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                record.push(std::mem::take(&mut cell));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => cell.push(c),
        }
    }
    assert!(
        cell.is_empty() && record.is_empty(),
        "the text ends a record"
    );
    records
}

#[tokio::test]
async fn csv_cells_that_clients_choose_are_quoted_and_defused() {
    let app = spawn().await;
    let admin = admin_browser(&app).await;
    let from = app.clock.now_millis() - MINUTE;
    // A user agent is the client's to choose: a formula, with commas and quotes.
    let agent = "=HYPERLINK(\"http://evil.example\",\"click\"), \"quoted\"";
    let r = app
        .http
        .post(format!("{}/token", app.url))
        .header("user-agent", agent)
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let to = app.clock.now_millis() + MINUTE;
    let mut records = Vec::new();
    let mut body = String::new();
    for _ in 0..200 {
        (_, _, body) = export(&app, &admin, from, to, "format=csv").await;
        records = parse_csv(&body);
        if records.iter().any(|r| r[2] == "/token") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let token_request = records
        .iter()
        .find(|r| r[2] == "/token")
        .unwrap_or_else(|| panic!("the /token request in\n{body}"));
    assert_eq!(
        token_request[15],
        format!("'{agent}"),
        "defused, then quoted"
    );
    assert!(
        body.contains("\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"click\"\"), \"\"quoted\"\"\""),
        "{body}"
    );
    for record in &records {
        for cell in record {
            assert!(
                !cell.starts_with(['=', '+', '@']),
                "no cell a spreadsheet would run: {cell}"
            );
        }
    }
}

#[tokio::test]
async fn rollups_come_out_per_period_for_the_buckets_of_the_range() {
    let app = spawn().await;
    let admin = admin_browser(&app).await;
    // A whole hour two hours back, so the events and their buckets are all inside.
    let t = base(&app) / 3_600_000 * 3_600_000;
    let events = known_events(t + MINUTE);
    app.state.db.record_events(&events).await.unwrap();
    let (status, headers, body) =
        export(&app, &admin, t, t + 3_600_000, "data=rollups&format=json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("mcp-oauth-rollups-hour-")
    );
    let rows: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(rows.iter().all(|r| r["period"] == "hour"));
    assert!(rows.iter().all(|r| r["bucket_start"] == rfc3339(t)));
    let total: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    let expected: u64 = events.iter().map(|e| e.count).sum();
    assert_eq!(total, expected);
    let latency: u64 = rows
        .iter()
        .map(|r| r["latency_sum_us"].as_u64().unwrap())
        .sum();
    assert_eq!(
        latency,
        events.iter().filter_map(|e| e.latency_us).sum::<u64>()
    );

    let (_, _, body) = export(
        &app,
        &admin,
        t,
        t + 3_600_000,
        "data=rollups&period=minute&format=csv",
    )
    .await;
    let records = parse_csv(&body);
    assert_eq!(
        records[0].join(","),
        "period,bucket_start,kind,name,detail,outcome,code,user_id,client_id,software,\
         protocol_version,transport,country,count,latency_sum_us"
    );
    let minutes: u64 = records[1..]
        .iter()
        .map(|r| r[13].parse::<u64>().unwrap())
        .sum();
    assert_eq!(minutes, expected);
    assert!(records[1..].iter().all(|r| r[0] == "minute"));
}

#[tokio::test]
async fn exports_are_for_admins_and_bad_parameters_are_invalid_requests() {
    let app = spawn().await;
    let now = app.clock.now_millis();
    let (status, _, _) = export(&app, &Browser::new(&app), now - MINUTE, now, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "anonymous");
    let user = app.signed_in_browser("someone@example.com").await;
    let (status, _, _) = export(&app, &user, now - MINUTE, now, "format=csv").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not an admin");
    let admin = admin_browser(&app).await;
    for params in ["format=xml", "data=tokens", "data=rollups&period=week"] {
        let (status, _, body) = export(&app, &admin, now - MINUTE, now, params).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "invalid_request", "{params}");
    }
    let (status, _, _) = export(&app, &admin, now, now - MINUTE, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an inverted range");
}
