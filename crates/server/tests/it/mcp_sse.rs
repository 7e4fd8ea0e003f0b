//! The legacy HTTP+SSE transport (MCP 2024-11-05): `GET /sse` announces a message endpoint,
//! JSON-RPC is POSTed there and answered on the stream. Both routes are protected as `/mcp`
//! is, with their own resource (`/sse`) and metadata.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    McpReply, TestApp, Tokens, bearer_challenge, initialize, initialized, rpc, spawn_app,
    spawn_app_with, tool_call,
};

const REDIRECT: &str = "http://127.0.0.1:7777/callback";

/// How long to wait for the next event before failing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A user's tokens for the `/sse` resource.
async fn sse_tokens(app: &TestApp, email: &str) -> Tokens {
    app.tokens_for_client_at(email, REDIRECT, &[("resource", &app.sse_resource())])
        .await
}

/// An open event stream, read incrementally.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn open(app: &TestApp, token: &str) -> Self {
        let response = app
            .http
            .get(app.mcp_url("/sse"))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's name and data, skipping keep-alive comments.
    async fn next(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data) = (String::from("message"), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return (event, data.join("\n"));
            }
            let chunk = tokio::time::timeout(EVENT_TIMEOUT, self.response.chunk())
                .await
                .expect("an event within the timeout")
                .expect("the stream stays readable")
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The announced message endpoint (the first event).
    async fn endpoint(&mut self) -> String {
        let (event, data) = self.next().await;
        assert_eq!(event, "endpoint");
        data
    }

    /// The next JSON-RPC message from the server.
    async fn message(&mut self) -> Value {
        let (event, data) = self.next().await;
        assert_eq!(event, "message", "{data}");
        serde_json::from_str(&data).unwrap()
    }
}

/// POST `body` to the message endpoint (a path from the `endpoint` event).
async fn post(app: &TestApp, endpoint: &str, token: Option<&str>, body: &Value) -> McpReply {
    let mut req = app
        .http
        .post(format!("{}{endpoint}", app.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    McpReply::read(req.send().await.unwrap()).await
}

/// Open a stream and initialise it; returns the stream and its message endpoint.
async fn initialized_stream(app: &TestApp, token: &str) -> (EventStream, String) {
    let mut stream = EventStream::open(app, token).await;
    let endpoint = stream.endpoint().await;
    assert_eq!(
        post(app, &endpoint, Some(token), &initialize(1))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let init = stream.message().await;
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-oauth");
    let ack = post(app, &endpoint, Some(token), &initialized()).await;
    assert_eq!(ack.status, StatusCode::ACCEPTED);
    (stream, endpoint)
}

#[tokio::test]
async fn the_stream_without_a_token_is_challenged_with_the_sse_metadata() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(app.mcp_url("/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    McpReply::read(r).await.assert_refused(
        StatusCode::UNAUTHORIZED,
        &format!(
            "Bearer scope=\"mcp\", resource_metadata=\"{}/.well-known/oauth-protected-resource/sse\"",
            app.url
        ),
        "unauthorized",
    );
}

#[tokio::test]
async fn the_stream_announces_the_message_endpoint_first() {
    let app = spawn_app().await;
    let t = sse_tokens(&app, "a@example.com").await;
    let mut stream = EventStream::open(&app, &t.access_token).await;
    let endpoint = stream.endpoint().await;
    let id = endpoint
        .strip_prefix("/message?sessionId=")
        .unwrap_or_else(|| panic!("{endpoint}"));
    assert!(id.len() >= 16, "an unguessable session id: {id}");
}

#[tokio::test]
async fn with_an_issuer_path_the_message_endpoint_is_under_it() {
    let app = spawn_app_with(|r| r.public_url = format!("{}/tenant", r.public_url)).await;
    // The helpers' authorization flow assumes no issuer path: mint the token instead.
    let token = app.mint_access_token(|c| c.aud = app.sse_resource());
    let mut stream = EventStream::open(&app, &token).await;
    let endpoint = stream.endpoint().await;
    assert!(
        endpoint.starts_with("/tenant/message?sessionId="),
        "{endpoint}"
    );
    let r = post(&app, &endpoint, Some(&token), &initialize(1)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(stream.message().await["id"], 1);
}

#[tokio::test]
async fn messages_are_accepted_and_answered_on_the_stream() {
    let app = spawn_app().await;
    let t = sse_tokens(&app, "a@example.com").await;
    let (mut stream, endpoint) = initialized_stream(&app, &t.access_token).await;

    let r = post(
        &app,
        &endpoint,
        Some(&t.access_token),
        &rpc(2, "tools/list", json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let list = stream.message().await;
    assert_eq!(list["id"], 2);
    assert_eq!(list["result"]["tools"].as_array().unwrap().len(), 6);

    let call = tool_call(3, "add_numbers", json!({"a": 2, "b": 40}));
    assert_eq!(
        post(&app, &endpoint, Some(&t.access_token), &call)
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let answer = stream.message().await;
    assert_eq!(answer["id"], 3);
    assert_eq!(
        answer["result"]["content"][0]["text"],
        "The sum of 2 and 40 is 42."
    );
}

#[tokio::test]
async fn whoami_over_sse_sees_the_caller() {
    let app = spawn_app().await;
    let t = sse_tokens(&app, "who@example.com").await;
    let user = app
        .state
        .db
        .find_user_by_email("who@example.com")
        .await
        .unwrap()
        .unwrap();
    let (mut stream, endpoint) = initialized_stream(&app, &t.access_token).await;
    let call = tool_call(2, "whoami", json!({}));
    post(&app, &endpoint, Some(&t.access_token), &call).await;
    let answer = stream.message().await;
    let who: Value =
        serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(who["subject"], user.id);
    assert_eq!(who["client_id"], t.client_id);
}

#[tokio::test]
async fn a_message_without_a_token_is_challenged() {
    let app = spawn_app().await;
    let t = sse_tokens(&app, "a@example.com").await;
    let mut stream = EventStream::open(&app, &t.access_token).await;
    let endpoint = stream.endpoint().await;
    let r = post(&app, &endpoint, None, &initialize(1)).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &bearer_challenge(None, Some("mcp"), &app.prm_url("/sse")),
        "unauthorized",
    );
}

#[tokio::test]
async fn another_users_token_cannot_post_to_a_session() {
    let app = spawn_app().await;
    let a = sse_tokens(&app, "a@example.com").await;
    let b = app
        .tokens_for_client_at(
            "b@example.com",
            REDIRECT,
            &[("resource", &app.sse_resource())],
        )
        .await;
    let (mut stream, endpoint) = initialized_stream(&app, &a.access_token).await;
    let hijack = post(
        &app,
        &endpoint,
        Some(&b.access_token),
        &rpc(2, "tools/list", json!({})),
    )
    .await;
    let unknown = post(
        &app,
        "/message?sessionId=no-such-session",
        Some(&b.access_token),
        &rpc(2, "tools/list", json!({})),
    )
    .await;
    assert_eq!(hijack.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (hijack.status, &hijack.body),
        (unknown.status, &unknown.body),
        "the same answer as for an unknown session"
    );
    // The owner's session is untouched, and nothing was answered on it for B.
    post(
        &app,
        &endpoint,
        Some(&a.access_token),
        &rpc(3, "tools/list", json!({})),
    )
    .await;
    assert_eq!(stream.message().await["id"], 3);
}

#[tokio::test]
async fn a_token_for_mcp_is_refused_at_the_stream() {
    // RFC 8707: the /mcp resource's token is not good for /sse.
    let app = spawn_app().await;
    let t = app.tokens_for_new_client("a@example.com").await;
    let r = app
        .http
        .get(app.mcp_url("/sse"))
        .bearer_auth(&t.access_token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    McpReply::read(r).await.assert_refused(
        StatusCode::UNAUTHORIZED,
        &bearer_challenge(
            Some((
                "invalid_token",
                "the access token was issued for another resource",
            )),
            None,
            &app.prm_url("/sse"),
        ),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_token_for_mcp_is_refused_at_the_message_endpoint() {
    let app = spawn_app().await;
    let sse = sse_tokens(&app, "a@example.com").await;
    let mcp = app.tokens_for(&sse.auth, &sse.browser, REDIRECT, &[]).await;
    let mut stream = EventStream::open(&app, &sse.access_token).await;
    let endpoint = stream.endpoint().await;
    let r = post(&app, &endpoint, Some(&mcp.access_token), &initialize(1)).await;
    r.assert_refused(
        StatusCode::UNAUTHORIZED,
        &bearer_challenge(
            Some((
                "invalid_token",
                "the access token was issued for another resource",
            )),
            None,
            &app.prm_url("/sse"),
        ),
        "invalid_token",
    );
}

#[tokio::test]
async fn a_restricted_tool_over_sse_needs_its_scope() {
    let app = spawn_app_with(|r| {
        r.scopes.supported.push("tools:format".into());
        r.mcp.tool_scopes = [("format_text".to_owned(), vec!["tools:format".to_owned()])].into();
    })
    .await;
    let t = sse_tokens(&app, "a@example.com").await;
    let (_stream, endpoint) = initialized_stream(&app, &t.access_token).await;
    let call = tool_call(
        2,
        "format_text",
        json!({"text": "x", "format": "uppercase"}),
    );
    let r = post(&app, &endpoint, Some(&t.access_token), &call).await;
    r.assert_refused(
        StatusCode::FORBIDDEN,
        &bearer_challenge(
            Some((
                "insufficient_scope",
                "the access token lacks a scope this operation needs",
            )),
            Some("mcp tools:format"),
            &app.prm_url("/sse"),
        ),
        "insufficient_scope",
    );
}

#[tokio::test]
async fn a_foreign_host_is_forbidden_at_the_stream() {
    let app = spawn_app().await;
    let t = sse_tokens(&app, "a@example.com").await;
    let r = app
        .http
        .get(app.mcp_url("/sse"))
        .bearer_auth(&t.access_token)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_foreign_host_is_forbidden_at_the_message_endpoint() {
    let app = spawn_app().await;
    let t = sse_tokens(&app, "a@example.com").await;
    let mut stream = EventStream::open(&app, &t.access_token).await;
    let endpoint = stream.endpoint().await;
    let r = app
        .http
        .post(format!("{}{endpoint}", app.url))
        .bearer_auth(&t.access_token)
        .header("host", "evil.example")
        .header("content-type", "application/json")
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_origin_off_the_allowed_list_is_forbidden_at_the_stream() {
    let app = spawn_app_with(|r| r.cors.allowed_origins = vec!["https://app.example".into()]).await;
    let t = sse_tokens(&app, "a@example.com").await;
    let send = |origin: String| {
        app.http
            .get(app.mcp_url("/sse"))
            .bearer_auth(&t.access_token)
            .header("origin", origin)
            .send()
    };
    let r = send("https://evil.example".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    for allowed in ["https://app.example".to_owned(), app.url.clone()] {
        let r = send(allowed.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{allowed}");
    }
}

#[tokio::test]
async fn an_origin_off_the_allowed_list_is_forbidden_at_the_message_endpoint() {
    let app = spawn_app_with(|r| r.cors.allowed_origins = vec!["https://app.example".into()]).await;
    let t = sse_tokens(&app, "a@example.com").await;
    let mut stream = EventStream::open(&app, &t.access_token).await;
    let endpoint = stream.endpoint().await;
    let r = app
        .http
        .post(format!("{}{endpoint}", app.url))
        .bearer_auth(&t.access_token)
        .header("origin", "https://evil.example")
        .header("content-type", "application/json")
        .body(initialize(1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}
