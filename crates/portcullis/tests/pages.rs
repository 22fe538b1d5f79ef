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

/// A port free right now, for a configuration that must name its own
/// origin (`public_url`, which passkeys are bound to) before it starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A virtual platform authenticator (CTAP2, resident keys, user
/// verification that succeeds), as Chromium's DevTools provide for tests.
async fn virtual_authenticator(
    page: &chromiumoxide::Page,
) -> chromiumoxide::cdp::browser_protocol::web_authn::AuthenticatorId {
    use chromiumoxide::cdp::browser_protocol::web_authn::{
        AddVirtualAuthenticatorParams, AuthenticatorProtocol, AuthenticatorTransport, EnableParams,
        VirtualAuthenticatorOptions,
    };
    page.execute(EnableParams::builder().enable_ui(false).build()).await.unwrap();
    let options = VirtualAuthenticatorOptions::builder()
        .protocol(AuthenticatorProtocol::Ctap2)
        .transport(AuthenticatorTransport::Internal)
        .has_resident_key(true)
        .has_user_verification(true)
        .is_user_verified(true)
        .automatic_presence_simulation(true)
        .build()
        .unwrap();
    page.execute(AddVirtualAuthenticatorParams::new(options)).await.unwrap().result.authenticator_id
}

/// Waits until `script` evaluates to `true` in the page.
async fn wait_for(page: &chromiumoxide::Page, what: &str, script: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let done: bool = page.evaluate(script).await.ok().and_then(|v| v.into_value().ok()).unwrap_or(false);
        if done {
            return;
        }
        if std::time::Instant::now() > deadline {
            let url = page.url().await.ok().flatten().unwrap_or_default();
            let body: String = page
                .evaluate("document.body ? document.body.innerHTML : ''")
                .await
                .ok()
                .and_then(|v| v.into_value().ok())
                .unwrap_or_default();
            panic!("timed out waiting for {what} at {url}: {body}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn text_of(page: &chromiumoxide::Page, script: &str) -> String {
    page.evaluate(script).await.unwrap().into_value().unwrap()
}

#[tokio::test]
async fn the_account_pages_log_in_by_keyboard_and_with_a_passkey_under_the_gateway_csp() {
    use chromiumoxide::cdp::browser_protocol::web_authn::{
        AddCredentialParams, Credential, RemoveVirtualAuthenticatorParams,
    };
    let (app, _) = named_upstream("app").await;
    let data = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", data.path().join("accounts.db").display());
    let port = free_port();
    let origin = format!("http://localhost:{port}");
    let toml = format!(
        r#"
[server]
data_dir = "{data}"

[[listener]]
name = "test"
bind = "127.0.0.1:{port}"

[[upstream]]
name = "app"
targets = ["http://{app}"]

[[route]]
match = {{ path = "/**" }}
upstream = "app"
auth = ["account"]

[state]
store = "{store_url}"

[auth.accounts]
public_url = "{origin}"
passkeys = "passwordless"
"#,
        data = data.path().display(),
    );
    let gw = gateway(&toml).await;
    let store = portcullis::store::Store::open(&store_url).await.unwrap();
    let hasher = portcullis::auth::password::PasswordHasher::new(
        portcullis_policy::password::HashParams::OWASP,
        1,
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    let hash = hasher.hash_new("correct horse battery staple").await.unwrap();
    let alice = store
        .create_account(
            &portcullis::store::accounts::NewAccount {
                username: "alice",
                email: None,
                password_hash: Some(&hash),
                roles: &["editor".to_owned()],
            },
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();

    let browser = Chromium::launch().await;
    let page = browser.open("about:blank").await;
    let authenticator = virtual_authenticator(&page).await;

    // An account route sends the browser to the login page.
    page.goto(format!("{origin}/orders")).await.unwrap();
    wait_for_url(&page, &format!("{origin}/.portcullis/account/login?rd=%2Forders")).await;
    assert_eq!(page.get_title().await.unwrap().as_deref(), Some("Log in"));
    let outline = text_of(
        &page,
        "[document.documentElement.lang, document.querySelector('h1').textContent, \
         [...document.querySelectorAll('input')].map(i => document.querySelector('label[for=' + i.id + ']').textContent).join('/'), \
         document.activeElement.id, String(document.getElementById('passkey-login').hidden)].join('|')",
    )
    .await;
    assert_eq!(outline, "en|Log in|Username or email/Password|username|false");
    screenshot(&page, "account-login-page").await;

    // A wrong password by keyboard: back to the page with the alert.
    page.find_element("#username").await.unwrap().type_str("alice").await.unwrap();
    press(&page, "Tab").await;
    page.find_element("#password").await.unwrap().type_str("not the right password").await.unwrap();
    press(&page, "Enter").await;
    wait_for(&page, "the error", "document.querySelector('[role=alert]') !== null").await;
    assert!(text_of(&page, "document.querySelector('[role=alert]').textContent").await.contains("wrong"));
    screenshot(&page, "account-login-error").await;

    // The right one: the account route it asked for.
    page.find_element("#username").await.unwrap().type_str("alice").await.unwrap();
    press(&page, "Tab").await;
    page.find_element("#password").await.unwrap().type_str("correct horse battery staple").await.unwrap();
    press(&page, "Enter").await;
    wait_for_url(&page, &format!("{origin}/orders")).await;
    assert_eq!(text_of(&page, "document.body.textContent").await, "app /orders");

    // The account page adds a passkey with the virtual authenticator.
    page.goto(format!("{origin}/.portcullis/account/")).await.unwrap();
    wait_for(
        &page,
        "the account page",
        "document.getElementById('passkey-register') && !document.getElementById('passkey-register').hidden",
    )
    .await;
    screenshot(&page, "account-page").await;
    page.find_element("#passkey-register").await.unwrap().click().await.unwrap();
    wait_for(&page, "the passkey", "document.getElementById('passkey-status').textContent.length > 0").await;
    assert_eq!(text_of(&page, "document.getElementById('passkey-status').textContent").await, "Passkey added.");
    assert_eq!(store.passkeys(&alice.id).await.unwrap().len(), 1);
    assert!(gw.events.reasons().contains(&"account.passkey_registered"));

    // Log out; the password alone now opens the second step, the passkey.
    page.find_element("form[action$='/logout'] button").await.unwrap().click().await.unwrap();
    wait_for_url(&page, &format!("{origin}/.portcullis/account/login")).await;
    page.goto(format!("{origin}/.portcullis/account/login?rd=%2Forders")).await.unwrap();
    page.find_element("#username").await.unwrap().type_str("alice").await.unwrap();
    press(&page, "Tab").await;
    page.find_element("#password").await.unwrap().type_str("correct horse battery staple").await.unwrap();
    press(&page, "Enter").await;
    wait_for_url(&page, &format!("{origin}/.portcullis/account/login/mfa")).await;
    wait_for(&page, "the passkey step", "!document.getElementById('passkey-second').hidden").await;
    screenshot(&page, "account-second-factor").await;
    page.find_element("#passkey-second").await.unwrap().click().await.unwrap();
    wait_for_url(&page, &format!("{origin}/orders")).await;
    page.goto(format!("{origin}/.portcullis/account/")).await.unwrap();
    page.find_element("form[action$='/logout'] button").await.unwrap().click().await.unwrap();
    wait_for_url(&page, &format!("{origin}/.portcullis/account/login")).await;

    // In again with the passkey alone.
    page.goto(format!("{origin}/.portcullis/account/login?rd=%2Forders")).await.unwrap();
    wait_for(&page, "the passkey button", "!document.getElementById('passkey-login').hidden").await;
    page.find_element("#passkey-login").await.unwrap().click().await.unwrap();
    wait_for_url(&page, &format!("{origin}/orders")).await;
    let logins = gw
        .events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.reason == "account.login")
        .map(|e| e.detail.clone().unwrap())
        .collect::<Vec<_>>();
    assert!(logins.iter().any(|d| d.contains("factors: hwk")), "{logins:?}");
    assert!(logins.iter().any(|d| d.contains("factors: pwd+hwk")), "{logins:?}");

    // Another authenticator, holding a passkey for this site that the
    // account never registered (a credential claiming alice's handle): refused.
    page.find_element("body").await.unwrap();
    page.goto(format!("{origin}/.portcullis/account/login")).await.unwrap();
    page.execute(RemoveVirtualAuthenticatorParams::new(authenticator)).await.unwrap();
    let other = virtual_authenticator(&page).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let b64 = |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    let user_handle = (0..16).map(|i| u8::from_str_radix(&alice.id[2 * i..2 * i + 2], 16).unwrap()).collect::<Vec<_>>();
    let credential = Credential::builder()
        .credential_id(chromiumoxide::Binary::from(b64(b"an unregistered credential id")))
        .is_resident_credential(true)
        .rp_id("localhost")
        .private_key(chromiumoxide::Binary::from(b64(&key.serialize_der())))
        .user_handle(chromiumoxide::Binary::from(b64(&user_handle)))
        .sign_count(0)
        .build()
        .unwrap();
    page.execute(AddCredentialParams::new(other, credential)).await.unwrap();
    // The cookie of the passkey login is still there: clear it first.
    page.delete_cookies(vec![
        chromiumoxide::cdp::browser_protocol::network::DeleteCookiesParams::builder()
            .name("__Host-portcullis-account")
            .url(origin.clone())
            .build()
            .unwrap(),
    ])
    .await
    .unwrap();
    page.goto(format!("{origin}/.portcullis/account/login")).await.unwrap();
    wait_for(&page, "the passkey button", "!document.getElementById('passkey-login').hidden").await;
    page.find_element("#passkey-login").await.unwrap().click().await.unwrap();
    wait_for(&page, "the refusal", "document.querySelector('[role=alert]') !== null").await;
    assert_eq!(
        text_of(&page, "document.querySelector('[role=alert]').textContent").await,
        "The passkey was not accepted."
    );
    assert!(gw.events.reasons().contains(&"account.passkey_failed"));
    screenshot(&page, "account-passkey-refused").await;

    assert_eq!(csp_violations(&page).await, Vec::<String>::new());
    browser.close().await;
}

#[tokio::test]
async fn the_dashboard_signs_in_streams_events_live_and_lifts_a_ban_by_keyboard_under_its_csp() {
    use crate::dashboard::{TOKEN, config, denied_from};
    let (app, _) = named_upstream("app").await;
    let gw = gateway(&config(app, "")).await;
    let admin = format!("http://{}/", gw.server.addr("admin").unwrap());

    let browser = Chromium::launch().await;
    let page = browser.open(&admin).await;
    assert_eq!(page.get_title().await.unwrap().as_deref(), Some("Sign in · Portcullis"));
    // The token field has the focus and a label; a wrong token says so.
    let focused =
        text_of(&page, "document.activeElement.id + '|' + document.querySelector('label[for=token]').textContent")
            .await;
    assert_eq!(focused, "token|Admin token");
    page.find_element("#token").await.unwrap().type_str("not-the-token").await.unwrap();
    press(&page, "Enter").await;
    wait_for(&page, "the sign-in error", "document.querySelector('[role=alert]') !== null").await;
    screenshot(&page, "dashboard-sign-in").await;
    page.find_element("#token").await.unwrap().type_str(TOKEN).await.unwrap();
    press(&page, "Enter").await;
    wait_for(&page, "the dashboard", "document.title === 'Portcullis dashboard'").await;
    wait_for(&page, "the live stream", "document.getElementById('stream-status').textContent === 'Live'").await;
    // The session cookie is HttpOnly: the page's script cannot read it.
    assert_eq!(text_of(&page, "document.cookie").await, "");

    // Denials made now appear in the live table without a reload.
    for _ in 0..3 {
        denied_from(&gw, "203.0.113.50").await;
    }
    wait_for(
        &page,
        "three live events",
        "[...document.querySelectorAll('#events tbody tr')].filter(r => r.textContent.includes('203.0.113.50') && r.textContent.includes('path.double_encoding')).length === 3",
    )
    .await;
    wait_for(
        &page,
        "the top client",
        "document.querySelector('#top-clients tbody').textContent.includes('203.0.113.50')",
    )
    .await;

    // A banned client is refused; the Lift button (reached by keyboard) admits it again.
    gw.server
        .bans()
        .add(portcullis_layers::ban::Ban::new(
            "203.0.113.77".parse().unwrap(),
            "manual",
            portcullis_layers::ban::unix_millis(),
            std::time::Duration::from_secs(3600),
        ))
        .await
        .unwrap();
    let hello = gw.url("/hello");
    let banned = || get_with(&hello, &[("x-forwarded-for", "203.0.113.77")]);
    assert_eq!(banned().await.0.status, 403);
    wait_for(
        &page,
        "the ban in the table",
        "document.querySelector('#bans tbody').textContent.includes('203.0.113.77')",
    )
    .await;
    wait_for(&page, "the denial chart", "document.querySelectorAll('#denials-chart rect').length > 0").await;
    screenshot(&page, "dashboard").await;
    page.evaluate("document.querySelector('#bans button').focus()").await.unwrap();
    let label = text_of(&page, "document.activeElement.getAttribute('aria-label')").await;
    assert_eq!(label, "Lift the ban on 203.0.113.77");
    press(&page, "Enter").await;
    wait_for(&page, "the lift confirmed", "document.getElementById('bans-status').textContent.startsWith('Lifted')")
        .await;
    assert_eq!(banned().await.0.status, 200, "the client is admitted again");
    assert!(gw.server.bans().list().await.unwrap().is_empty());
    // The lift is in the audit trail, by the dashboard, and the page shows it.
    wait_for(
        &page,
        "the audit row",
        "[...document.querySelectorAll('#audit tbody tr')].some(r => r.textContent.includes('ban.lift') && r.textContent.includes('dashboard:127.0.0.1'))",
    )
    .await;

    // Signing out by keyboard ends the session.
    page.evaluate("document.querySelector('#logout button').focus()").await.unwrap();
    press(&page, "Enter").await;
    wait_for(&page, "the sign-in page", "document.title === 'Sign in · Portcullis'").await;
    assert_eq!(csp_violations(&page).await, Vec::<String>::new());
    browser.close().await;
}
