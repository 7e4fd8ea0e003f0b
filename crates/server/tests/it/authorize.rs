//! The authorization endpoint in a browser: which errors stay on a local page and which go
//! back to the client (OAuth 2.1 §4.1.2.1, RFC 9207), loopback redirects (RFC 8252 §7.3),
//! sign-in, `prompt`, and the consent page with its CSRF protection (MCP security best
//! practices: per-client consent, show the client and the redirect host).

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, ORIGIN};
use serde_json::json;

use crate::helpers::{
    Browser, ConsentForm, PASSWORD, Pkce, TestApp, assert_error_redirect, element_text, error_page,
    location, redirect_params, spawn_app, spawn_app_with, with_param,
};

const REDIRECT: &str = "http://127.0.0.1:7777/callback";

/// A public client the operator registered (so errors may go back to it by redirect, and
/// consent is remembered for it) and a signed-in browser.
async fn client_and_browser(app: &TestApp) -> (String, Browser) {
    let client_id = app
        .preregistered_public_client("Desktop App", REDIRECT)
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    (client_id, browser)
}

/// GET an authorization for the standard client with `extra` parameters.
async fn authorize_with(app: &TestApp, extra: &[(&str, &str)]) -> reqwest::Response {
    let (client_id, browser) = client_and_browser(app).await;
    let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), extra);
    browser.get(&url).await
}

#[tokio::test]
async fn an_unknown_client_gets_an_error_page_and_no_redirect() {
    let app = spawn_app().await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url("no-such-client", REDIRECT, &Pkce::new(), &[]);
    let detail = error_page(browser.get(&url).await, StatusCode::BAD_REQUEST).await;
    assert!(detail.contains("unknown client_id"), "{detail}");
}

#[tokio::test]
async fn an_unregistered_redirect_uri_gets_an_error_page_that_does_not_list_the_registered_ones() {
    let app = spawn_app().await;
    let client_id = app
        .register_client(json!({
            "client_name": "Web App", "token_endpoint_auth_method": "none",
            "redirect_uris": ["https://app.example/secret-callback"],
        }))
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url(
        &client_id,
        "https://evil.example/callback",
        &Pkce::new(),
        &[],
    );
    let r = browser.get(&url).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none(), "never a redirect");
    let html = r.text().await.unwrap();
    assert!(html.contains("not registered"), "{html}");
    assert!(
        !html.contains("app.example"),
        "the page must not reveal the registered redirect URIs"
    );
}

#[tokio::test]
async fn a_missing_redirect_uri_for_a_loopback_client_gets_an_error_page() {
    let app = spawn_app().await;
    let (client_id, browser) = client_and_browser(&app).await;
    let url = with_param(
        &app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]),
        "redirect_uri",
        None,
    );
    error_page(browser.get(&url).await, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_duplicated_parameter_gets_an_error_page() {
    let app = spawn_app().await;
    let r = authorize_with(&app, &[("state", "second")]).await;
    let detail = error_page(r, StatusCode::BAD_REQUEST).await;
    assert!(detail.contains("state"), "{detail}");
}

#[tokio::test]
async fn a_missing_code_challenge_redirects_invalid_request() {
    let app = spawn_app().await;
    let (client_id, browser) = client_and_browser(&app).await;
    let url = with_param(
        &app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]),
        "code_challenge",
        None,
    );
    let r = browser.get(&url).await;
    assert_error_redirect(&app, &r, REDIRECT, "invalid_request");
}

#[tokio::test]
async fn the_plain_pkce_method_redirects_invalid_request() {
    let app = spawn_app().await;
    let (client_id, browser) = client_and_browser(&app).await;
    let url = with_param(
        &app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]),
        "code_challenge_method",
        Some("plain"),
    );
    let r = browser.get(&url).await;
    assert_error_redirect(&app, &r, REDIRECT, "invalid_request");
}

#[tokio::test]
async fn an_omitted_pkce_method_redirects_invalid_request() {
    // RFC 7636 §4.3: an omitted method means `plain`, which OAuth 2.1 clients must not use.
    let app = spawn_app().await;
    let (client_id, browser) = client_and_browser(&app).await;
    let url = with_param(
        &app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]),
        "code_challenge_method",
        None,
    );
    let r = browser.get(&url).await;
    assert_error_redirect(&app, &r, REDIRECT, "invalid_request");
}

#[tokio::test]
async fn an_unsupported_response_type_redirects_unsupported_response_type() {
    let app = spawn_app().await;
    let (client_id, browser) = client_and_browser(&app).await;
    let url = with_param(
        &app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]),
        "response_type",
        Some("token"),
    );
    let r = browser.get(&url).await;
    assert_error_redirect(&app, &r, REDIRECT, "unsupported_response_type");
}

#[tokio::test]
async fn an_unknown_scope_redirects_invalid_scope() {
    let app = spawn_app().await;
    let r = authorize_with(&app, &[("scope", "mcp admin")]).await;
    assert_error_redirect(&app, &r, REDIRECT, "invalid_scope");
}

#[tokio::test]
async fn a_scope_outside_the_clients_registration_redirects_invalid_scope() {
    let app = spawn_app_with(|raw| {
        raw.scopes.supported = vec!["mcp".into(), "offline_access".into(), "tools:write".into()];
    })
    .await;
    let client_id = app
        .preregistered_client(json!({
            "client_name": "Read Only", "token_endpoint_auth_method": "none",
            "redirect_uris": [REDIRECT], "scope": "mcp",
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        }))
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url(
        &client_id,
        REDIRECT,
        &Pkce::new(),
        &[("scope", "tools:write")],
    );
    let r = browser.get(&url).await;
    assert_error_redirect(&app, &r, REDIRECT, "invalid_scope");
}

#[tokio::test]
async fn a_resource_of_another_server_redirects_invalid_target() {
    let app = spawn_app().await;
    let r = authorize_with(&app, &[("resource", "https://other.example/mcp")]).await;
    assert_error_redirect(&app, &r, REDIRECT, "invalid_target");
}

#[tokio::test]
async fn a_resource_with_a_fragment_redirects_invalid_target() {
    let app = spawn_app().await;
    let resource = format!("{}#frag", app.mcp_resource());
    let r = authorize_with(&app, &[("resource", &resource)]).await;
    assert_error_redirect(&app, &r, REDIRECT, "invalid_target");
}

#[tokio::test]
async fn a_loopback_redirect_registered_without_a_port_matches_any_port() {
    let app = spawn_app().await;
    let client_id = app
        .register_client(json!({
            "client_name": "Native App", "token_endpoint_auth_method": "none",
            "redirect_uris": [
                "http://127.0.0.1/callback", "http://localhost/callback", "http://[::1]/callback",
            ],
        }))
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    for requested in [
        "http://127.0.0.1:5555/callback",
        "http://127.0.0.1:61000/callback",
        "http://localhost:6000/callback",
        "http://[::1]:7000/callback",
    ] {
        let pkce = Pkce::new();
        let code = app
            .get_code(&browser, &client_id, requested, &pkce, &[])
            .await;
        let t = app.exchange(&client_id, &code, requested, &pkce).await;
        assert_eq!(t.status(), StatusCode::OK, "{requested}");
    }
}

#[tokio::test]
async fn a_loopback_redirect_on_another_path_gets_an_error_page() {
    let app = spawn_app().await;
    let client_id = app
        .register_public_client("http://127.0.0.1/callback")
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url(&client_id, "http://127.0.0.1:5555/other", &Pkce::new(), &[]);
    error_page(browser.get(&url).await, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_loopback_redirect_on_another_host_gets_an_error_page() {
    let app = spawn_app().await;
    let client_id = app
        .register_public_client("http://127.0.0.1/callback")
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    for other in [
        "http://localhost:5555/callback",
        "http://127.0.0.2:5555/callback",
        "http://[::1]:5555/callback",
    ] {
        let url = app.authorize_url(&client_id, other, &Pkce::new(), &[]);
        error_page(browser.get(&url).await, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn a_user_who_is_not_signed_in_is_sent_to_login_and_the_flow_continues_after() {
    let app = spawn_app().await;
    let client_id = app.register_public_client(REDIRECT).await;
    app.create_user("alice@example.com", false).await;
    let browser = Browser::new(&app);
    let pkce = Pkce::new();
    let url = app.authorize_url(&client_id, REDIRECT, &pkce, &[]);

    let r = browser.get(&url).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to_login = url::Url::parse(&format!("{}{}", app.url, location(&r))).unwrap();
    assert_eq!(to_login.path(), "/login");
    let return_to = to_login
        .query_pairs()
        .find(|(k, _)| k == "return_to")
        .map(|(_, v)| v.into_owned())
        .expect("return_to");
    assert!(return_to.starts_with("/authorize?"), "{return_to}");

    let r = browser
        .login_to("alice@example.com", PASSWORD, &return_to)
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), return_to, "back to the authorization");
    let form = ConsentForm::from_page(&browser.consent_page(&return_to).await);
    let r = browser.decide(&form, "allow").await;
    let params = redirect_params(&r);
    assert_eq!(params["state"], "st-123");
    let t = app
        .exchange(&client_id, &params["code"], REDIRECT, &pkce)
        .await;
    assert_eq!(t.status(), StatusCode::OK);
}

#[tokio::test]
async fn prompt_none_without_a_session_redirects_login_required() {
    let app = spawn_app().await;
    let client_id = app
        .preregistered_public_client("Desktop App", REDIRECT)
        .await;
    let browser = Browser::new(&app);
    let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[("prompt", "none")]);
    let r = browser.get(&url).await;
    assert_error_redirect(&app, &r, REDIRECT, "login_required");
}

#[tokio::test]
async fn prompt_none_without_prior_consent_redirects_consent_required() {
    let app = spawn_app().await;
    let r = authorize_with(&app, &[("prompt", "none")]).await;
    assert_error_redirect(&app, &r, REDIRECT, "consent_required");
}

#[tokio::test]
async fn prompt_none_with_prior_consent_redirects_with_a_code() {
    let app = spawn_app().await;
    let (client_id, browser) = client_and_browser(&app).await;
    app.get_code(&browser, &client_id, REDIRECT, &Pkce::new(), &[])
        .await;
    let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[("prompt", "none")]);
    let r = browser.get(&url).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(redirect_params(&r).contains_key("code"));
}

#[tokio::test]
async fn denying_consent_redirects_access_denied_with_iss_and_state() {
    let app = spawn_app().await;
    let (client_id, browser) = client_and_browser(&app).await;
    let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]);
    let form = ConsentForm::from_page(&browser.consent_page(&url).await);
    let r = browser.decide(&form, "deny").await;
    assert_error_redirect(&app, &r, REDIRECT, "access_denied");
}

#[tokio::test]
async fn consent_is_remembered_so_a_second_authorization_redirects_straight_back() {
    let app = spawn_app().await;
    let (client_id, browser) = client_and_browser(&app).await;
    app.get_code(&browser, &client_id, REDIRECT, &Pkce::new(), &[])
        .await;
    let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]);
    let r = browser.get(&url).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "no consent page");
    let params = redirect_params(&r);
    assert!(params.contains_key("code"), "{params:?}");
    assert_eq!(params["iss"], app.url);
}

#[tokio::test]
async fn a_new_scope_asks_for_consent_again() {
    let app = spawn_app().await;
    let (client_id, browser) = client_and_browser(&app).await;
    app.get_code(
        &browser,
        &client_id,
        REDIRECT,
        &Pkce::new(),
        &[("scope", "mcp")],
    )
    .await;
    let url = app.authorize_url(
        &client_id,
        REDIRECT,
        &Pkce::new(),
        &[("scope", "mcp offline_access")],
    );
    let page = browser.consent_page(&url).await;
    assert!(page.contains("offline_access"));
}

#[tokio::test]
async fn prompt_consent_shows_the_page_even_after_consent() {
    let app = spawn_app().await;
    let (client_id, browser) = client_and_browser(&app).await;
    app.get_code(&browser, &client_id, REDIRECT, &Pkce::new(), &[])
        .await;
    let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[("prompt", "consent")]);
    browser.consent_page(&url).await;
}

#[tokio::test]
async fn the_consent_page_shows_the_client_redirect_host_resource_and_scopes() {
    let app = spawn_app().await;
    let client_id = app
        .register_client(json!({
            "client_name": "Acme Agent", "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": ["https://agent.acme.example/oauth/callback"],
        }))
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url(
        &client_id,
        "https://agent.acme.example/oauth/callback",
        &Pkce::new(),
        &[
            ("scope", "mcp offline_access"),
            ("resource", &app.mcp_resource()),
        ],
    );
    let page = browser.consent_page(&url).await;
    assert_eq!(element_text(&page, "client-name").unwrap(), "Acme Agent");
    assert!(
        element_text(&page, "redirect-host")
            .unwrap()
            .contains("agent.acme.example"),
        "MCP: the redirect hostname is shown"
    );
    assert!(
        element_text(&page, "resource")
            .unwrap()
            .contains(&app.mcp_resource())
    );
    let scopes = page.split("id=\"scopes\"").nth(1).unwrap();
    assert!(scopes.contains("<code>mcp</code>"));
    assert!(scopes.contains("<code>offline_access</code>"));
    assert!(
        page.contains("id=\"warning-unverified\""),
        "a dynamically registered client is flagged unverified"
    );
    assert!(
        !page.contains("id=\"warning-loopback\""),
        "no loopback warning for an https redirect"
    );
    assert_eq!(
        page.matches("id=\"document-host\"").count(),
        0,
        "not a metadata document client"
    );
}

#[tokio::test]
async fn the_consent_page_warns_about_a_loopback_redirect() {
    let app = spawn_app().await;
    let (client_id, browser) = client_and_browser(&app).await;
    let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]);
    let page = browser.consent_page(&url).await;
    assert!(page.contains("id=\"warning-loopback\""));
    assert!(
        element_text(&page, "redirect-host")
            .unwrap()
            .contains("127.0.0.1")
    );
}

#[tokio::test]
async fn the_consent_page_does_not_flag_a_preregistered_client_as_unverified() {
    let app = spawn_app().await;
    let client_id = app
        .preregistered_public_client("Company Tool", "https://tool.example/cb")
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url(&client_id, "https://tool.example/cb", &Pkce::new(), &[]);
    let page = browser.consent_page(&url).await;
    assert!(!page.contains("id=\"warning-unverified\""));
}

#[tokio::test]
async fn the_consent_page_escapes_a_hostile_client_name() {
    let app = spawn_app().await;
    let client_id = app
        .register_client(json!({
            "client_name": "<script>alert(1)</script>", "token_endpoint_auth_method": "none",
            "redirect_uris": [REDIRECT],
        }))
        .await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]);
    let page = browser.consent_page(&url).await;
    assert!(!page.contains("<script>"), "{page}");
    assert_eq!(
        element_text(&page, "client-name").unwrap(),
        "<script>alert(1)</script>",
        "shown as text"
    );
}

/// Open the consent page and return the browser, its form and the app.
async fn consent_form(app: &TestApp) -> (Browser, ConsentForm) {
    let (client_id, browser) = client_and_browser(app).await;
    let url = app.authorize_url(&client_id, REDIRECT, &Pkce::new(), &[]);
    let form = ConsentForm::from_page(&browser.consent_page(&url).await);
    (browser, form)
}

#[tokio::test]
async fn consent_without_a_csrf_token_is_forbidden() {
    let app = spawn_app().await;
    let (browser, form) = consent_form(&app).await;
    let r = browser
        .post_form(
            "/authorize",
            &[("request", &form.request), ("decision", "allow")],
        )
        .await;
    error_page(r, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn consent_with_a_wrong_csrf_token_is_forbidden() {
    let app = spawn_app().await;
    let (browser, form) = consent_form(&app).await;
    let wrong = "x".repeat(form.csrf.len());
    let r = browser
        .post_form(
            "/authorize",
            &[
                ("csrf", &wrong),
                ("request", &form.request),
                ("decision", "allow"),
            ],
        )
        .await;
    error_page(r, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn consent_from_a_cross_site_origin_is_forbidden() {
    let app = spawn_app().await;
    let (browser, form) = consent_form(&app).await;
    let mut headers = HeaderMap::new();
    headers.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
    let r = browser
        .post_form_with(
            "/authorize",
            &[
                ("csrf", &form.csrf),
                ("request", &form.request),
                ("decision", "allow"),
            ],
            headers,
        )
        .await;
    error_page(r, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn a_tampered_request_in_the_consent_form_is_validated_again() {
    let app = spawn_app().await;
    let (browser, form) = consent_form(&app).await;
    let tampered = with_param(
        &format!("{}/authorize?{}", app.url, form.request),
        "redirect_uri",
        Some("https://evil.example/callback"),
    );
    let tampered = url::Url::parse(&tampered)
        .unwrap()
        .query()
        .unwrap()
        .to_owned();
    let r = browser
        .decide(
            &ConsentForm {
                csrf: form.csrf,
                request: tampered,
            },
            "allow",
        )
        .await;
    error_page(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_tampered_scope_in_the_consent_form_is_validated_again() {
    let app = spawn_app().await;
    let (browser, form) = consent_form(&app).await;
    let tampered = with_param(
        &format!("{}/authorize?{}", app.url, form.request),
        "scope",
        Some("mcp admin"),
    );
    let tampered = url::Url::parse(&tampered)
        .unwrap()
        .query()
        .unwrap()
        .to_owned();
    let r = browser
        .decide(
            &ConsentForm {
                csrf: form.csrf,
                request: tampered,
            },
            "allow",
        )
        .await;
    assert_error_redirect(&app, &r, REDIRECT, "invalid_scope");
}

/// A client anyone could have registered, redirecting to a site of its choosing.
async fn anonymous_web_client(app: &TestApp) -> String {
    app.register_client(json!({
        "client_name": "Anon", "token_endpoint_auth_method": "none",
        "redirect_uris": ["https://anon.example/cb"],
    }))
    .await
}

#[tokio::test]
async fn an_error_for_an_anonymously_registered_client_is_shown_with_a_link_not_redirected() {
    // RFC 9700 §4.11.2: no open redirector. Nobody is signed in and nothing is valid, yet
    // without this rule the browser would be sent to the registrant's site.
    let app = spawn_app().await;
    let client_id = anonymous_web_client(&app).await;
    let browser = Browser::new(&app);
    for (url, error) in [
        (
            with_param(
                &app.authorize_url(&client_id, "https://anon.example/cb", &Pkce::new(), &[]),
                "code_challenge",
                None,
            ),
            "invalid_request",
        ),
        (
            app.authorize_url(
                &client_id,
                "https://anon.example/cb",
                &Pkce::new(),
                &[("prompt", "none")],
            ),
            "login_required",
        ),
    ] {
        let r = browser.get(&url).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{error}");
        assert!(r.headers().get("location").is_none(), "never a redirect");
        let html = r.text().await.unwrap();
        let href = html
            .split("id=\"error-continue\" href=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("a link back: {html}"))
            .replace("&amp;", "&")
            .replace("&#38;", "&");
        let link = url::Url::parse(&href).unwrap();
        assert_eq!(link.host_str(), Some("anon.example"));
        let params: std::collections::HashMap<_, _> = link.query_pairs().into_owned().collect();
        assert_eq!(params["error"], error);
        assert_eq!(params["iss"], app.url, "RFC 9207");
        assert!(html.contains("anon.example"), "the destination is named");
    }
}

#[tokio::test]
async fn an_error_for_a_signed_in_user_of_an_anonymous_client_is_not_redirected_either() {
    let app = spawn_app().await;
    let client_id = anonymous_web_client(&app).await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url(
        &client_id,
        "https://anon.example/cb",
        &Pkce::new(),
        &[("prompt", "none")],
    );
    let r = browser.get(&url).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "consent_required on a page"
    );
    assert!(r.headers().get("location").is_none());
}

#[tokio::test]
async fn a_user_who_denies_an_anonymous_client_is_sent_back_with_access_denied() {
    // The user took part: the redirect is theirs to make.
    let app = spawn_app().await;
    let client_id = anonymous_web_client(&app).await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url(&client_id, "https://anon.example/cb", &Pkce::new(), &[]);
    let form = ConsentForm::from_page(&browser.consent_page(&url).await);
    let r = browser.decide(&form, "deny").await;
    assert_error_redirect(&app, &r, "https://anon.example/cb", "access_denied");
}

#[tokio::test]
async fn a_dynamic_client_on_loopback_or_a_private_use_scheme_is_asked_again_every_time() {
    // RFC 8252 §8.6: any program can claim a loopback port or a scheme, and identical public
    // registrations share one client id, so remembered consent must not be honoured.
    let app = spawn_app().await;
    let browser = app.signed_in_browser("alice@example.com").await;
    for redirect in [REDIRECT, "cursor://anysphere.cursor-mcp/oauth/callback"] {
        let client_id = app.register_public_client(redirect).await;
        app.get_code(&browser, &client_id, redirect, &Pkce::new(), &[])
            .await;
        let url = app.authorize_url(&client_id, redirect, &Pkce::new(), &[]);
        let r = browser.get(&url).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{redirect}: the consent page again"
        );
        let page = r.text().await.unwrap();
        assert!(page.contains("id=\"allow\""), "{redirect}");
        // One click approves it again.
        let form = ConsentForm::from_page(&page);
        let r = browser.decide(&form, "allow").await;
        assert!(redirect_params(&r).contains_key("code"), "{redirect}");
    }
}

#[tokio::test]
async fn consent_is_remembered_for_a_dynamic_client_that_redirects_to_https() {
    let app = spawn_app().await;
    let client_id = anonymous_web_client(&app).await;
    let browser = app.signed_in_browser("alice@example.com").await;
    app.get_code(
        &browser,
        &client_id,
        "https://anon.example/cb",
        &Pkce::new(),
        &[],
    )
    .await;
    let url = app.authorize_url(&client_id, "https://anon.example/cb", &Pkce::new(), &[]);
    let r = browser.get(&url).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "no consent page");
    assert!(redirect_params(&r).contains_key("code"));
}

#[tokio::test]
async fn the_consent_page_names_a_private_use_scheme_as_an_app_not_a_host() {
    let app = spawn_app().await;
    let redirect = "claude-desktop://claude.ai/cb";
    let client_id = app.register_public_client(redirect).await;
    let browser = app.signed_in_browser("alice@example.com").await;
    let url = app.authorize_url(&client_id, redirect, &Pkce::new(), &[]);
    let page = browser.consent_page(&url).await;
    let destination = element_text(&page, "redirect-host").unwrap();
    assert!(destination.contains("claude-desktop:"), "{destination}");
    assert!(destination.contains("app on this device"), "{destination}");
    assert!(
        !destination.contains("claude.ai"),
        "the host part of a private-use URI is not where the browser goes: {destination}"
    );
    assert!(page.contains("id=\"warning-app\""));
}
