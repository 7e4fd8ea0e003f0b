//! What the server writes to its log, read from a real process's standard error: values a
//! client controls cannot forge a line or a field.

use reqwest::StatusCode;

use crate::helpers::{PASSWORD, ServerProcess, hidden_field};

/// The value of `name` in the response's `Set-Cookie` headers.
fn cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[tokio::test]
async fn a_client_id_with_a_newline_cannot_forge_a_log_line() {
    let server = ServerProcess::start(&[("MCP_OAUTH_LOG_FORMAT", "text")]).await;
    let added = server.admin(
        &["user", "add", "alice@example.com"],
        &format!("{PASSWORD}\n"),
    );
    assert!(added.status.success(), "{added:?}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Sign in.
    let page = http
        .get(format!("{}/login", server.url))
        .send()
        .await
        .unwrap();
    let csrf_cookie = cookie(&page, "__Host-mcp_csrf").expect("a CSRF cookie");
    let csrf = hidden_field(&page.text().await.unwrap(), "csrf").unwrap();
    let r = http
        .post(format!("{}/login", server.url))
        .header("origin", &server.url)
        .header("cookie", format!("__Host-mcp_csrf={csrf_cookie}"))
        .form(&[
            ("email", "alice@example.com"),
            ("password", PASSWORD),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session = cookie(&r, "__Host-mcp_session").expect("signed in");

    // Revoke "a client" whose id carries a forged log line.
    let forged = "2099-01-01T00:00:00.000000Z  INFO forged: admin granted everything";
    let r = http
        .post(format!("{}/account/revoke", server.url))
        .header("origin", &server.url)
        .header(
            "cookie",
            format!("__Host-mcp_csrf={csrf_cookie}; __Host-mcp_session={session}"),
        )
        .form(&[
            ("csrf", csrf.as_str()),
            ("client_id", &format!("x\n{forged}\r\n")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !server.stderr().contains("revoked a client's access") {
        assert!(std::time::Instant::now() < deadline, "{}", server.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = server.stderr();
    assert!(
        !log.lines().any(|l| l.starts_with("2099-01-01")),
        "a forged line made it into the log:\n{log}"
    );
    assert!(
        log.contains("\\n2099-01-01"),
        "the value is logged escaped:\n{log}"
    );
}
