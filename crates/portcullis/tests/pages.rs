//! Every HTML page the gateway serves, in headless Chromium: it renders under
//! the gateway's own Content-Security-Policy without a violation, works by
//! keyboard alone, and does what it says. Screenshots are saved under
//! `target/test-artifacts/`.

use crate::common;

use chromiumoxide::cdp::browser_protocol::network::CookieParam;
use common::chromium::{Chromium, csp_violations, press, screenshot, wait_for_url};
use common::oidc_stub::{sealed_session, stub_provider};
use common::*;

const COOKIE_SECRET: &str = "a-cookie-secret-of-at-least-32-bytes!!";

#[tokio::test]
async fn the_sign_out_page_signs_out_by_keyboard_under_the_gateway_csp() {
    let idp = stub_provider().await;
    let (app, _) = named_upstream("app").await;
    let key = portcullis_policy::jwt::forge::TestKey::generate(jsonwebtoken::Algorithm::EdDSA, "k");
    let toml = format!(
        "{}\n{}",
        simple_config(app, ""),
        common::oidc_stub::auth_sections(idp, COOKIE_SECRET, "https://issuer.test", key.public_pem.as_deref().unwrap())
    );
    let gw = gateway(&toml).await;

    // The page is served with the gateway's security headers.
    let (parts, body) = get(&gw.url("/.portcullis/logout")).await;
    assert_eq!(parts.status, 200);
    let csp = parts.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("form-action 'self'"), "{csp}");
    assert!(String::from_utf8_lossy(&body).contains("<form method=\"post\""));

    let browser = Chromium::launch().await;
    let page = browser.open("about:blank").await;
    let (name, value) =
        sealed_session(idp, COOKIE_SECRET, "42").split_once('=').map(|(n, v)| (n.to_owned(), v.to_owned())).unwrap();
    let cookie = CookieParam::builder()
        .name(name.clone())
        .value(value)
        .url(gw.url("/"))
        .secure(true)
        .http_only(true)
        .path("/")
        .build()
        .unwrap();
    page.set_cookie(cookie).await.unwrap();
    page.goto(gw.url("/.portcullis/logout")).await.unwrap();
    wait_for_url(&page, &gw.url("/.portcullis/logout")).await;
    assert_eq!(page.get_title().await.unwrap().as_deref(), Some("Sign out"));
    // For screen readers: the page's language, one heading, the button's name.
    let outline: String = page
        .evaluate("[document.documentElement.lang, document.querySelector('h1').textContent, document.querySelector('button').textContent].join('|')")
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(outline, "en|Sign out|Sign out");
    let has_session =
        |cookies: Vec<chromiumoxide::cdp::browser_protocol::network::Cookie>| cookies.iter().any(|c| c.name == name);
    assert!(has_session(page.get_cookies().await.unwrap()), "the session cookie was set");
    screenshot(&page, "sign-out-page").await;

    // Keyboard only: Tab reaches the button, Enter submits the form.
    press(&page, "Tab").await;
    let focused: String = page.evaluate("document.activeElement.textContent").await.unwrap().into_value().unwrap();
    assert_eq!(focused, "Sign out");
    press(&page, "Enter").await;
    wait_for_url(&page, &gw.url("/")).await;
    assert!(!has_session(page.get_cookies().await.unwrap()), "the session cookie is gone");
    assert_eq!(csp_violations(&page).await, Vec::<String>::new());
    browser.close().await;
}
