//! The accounts' pages: login, second factor, registration, the account
//! page and the TOTP enrolment and recovery-code pages.
//!
//! Rules: no external asset, no inline script or style (they work under the
//! gateway's own CSP, `script-src 'self'`); one `<h1>`, a `lang`, a label
//! for every field, the error announced in a `role="alert"` region and the
//! first field focused, so the pages are usable by keyboard and by screen
//! readers. Every value shown is HTML-escaped; an error is shown by its
//! reason code's message from a fixed table, never from the query string.

use axum::body::Body;
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};

use super::{AccountService, LOGIN_PATH, PREFIX};
use crate::config::accounts::{Passkeys, Registration};
use crate::store::accounts::Account;

/// The pages' style sheet.
pub const CSS: &str = include_str!("assets/account.css");
/// The pages' script (passkeys; the pages work without it otherwise).
pub const JS: &str = include_str!("assets/account.js");
/// The WebAuthn conversions the page script uses.
pub const PASSKEYS_JS: &str = include_str!("assets/passkeys.js");

/// `text` with `& < > " '` escaped.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The message shown for an error code in a page's query.
fn message(code: &str) -> Option<&'static str> {
    Some(match code {
        "login.failed" => "The username or password is wrong.",
        "login.backoff" => "Too many failed attempts. Wait a moment and try again.",
        "login.unavailable" | "account.unavailable" | "session.unavailable" => {
            "The service is unavailable. Try again in a moment."
        }
        "account.busy" => "Too many logins at once. Try again in a moment.",
        "account.invalid" => "Fill in every field (and keep them shorter).",
        "account.mfa_failed" => "The code is wrong, or the login took too long. Try again.",
        "account.totp_replay" => "That code was already used. Wait for the next one.",
        "account.password_rejected" => "Choose another password: 12 to 128 characters, and not a common one.",
        "account.registration_refused" => "Registration is closed, or the invite code is invalid.",
        "account.taken" => "That username or email is taken.",
        "account.unauthenticated" | "session.invalid" | "session.expired" | "session.revoked" => {
            "Your session has ended. Log in again."
        }
        "account.passkey_failed" => "The passkey was not accepted.",
        _ => return None,
    })
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"{PREFIX}/assets/account.css\">\
         <script src=\"{PREFIX}/assets/passkeys.js\" defer></script><script src=\"{PREFIX}/assets/account.js\" defer></script></head>\n\
         <body><main>{body}</main></body></html>\n",
        title = escape(title),
    );
    let mut response = Response::new(Body::from(page));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The alert region: the error's message, or nothing.
fn alert(error: Option<&str>) -> String {
    match error.and_then(message) {
        Some(text) => format!("<p class=\"error\" role=\"alert\" id=\"error\">{}</p>", escape(text)),
        None => String::new(),
    }
}

/// Where the first field's `aria-describedby` points when there is an error.
fn described(error: Option<&str>) -> &'static str {
    if error.and_then(message).is_some() { " aria-describedby=\"error\" aria-invalid=\"true\"" } else { "" }
}

/// The login page.
pub fn login(service: &AccountService, rd: &str, error: Option<&str>) -> Response {
    let settings = service.settings();
    let register = if settings.registration == Registration::Closed {
        String::new()
    } else {
        format!("<p><a href=\"{PREFIX}/register\">Create an account</a></p>")
    };
    let passkey = if settings.passkeys == Passkeys::Passwordless {
        "<p><button type=\"button\" id=\"passkey-login\" class=\"secondary\" hidden>Log in with a passkey</button></p>"
    } else {
        ""
    };
    let action = format!("{LOGIN_PATH}?rd={}", form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>());
    let body = format!(
        "<h1>Log in</h1>{alert}\
         <form method=\"post\" action=\"{action}\">\
         <label for=\"username\">Username or email</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username webauthn\" required autofocus maxlength=\"254\"{described}>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required maxlength=\"1024\">\
         <button type=\"submit\">Log in</button></form>{passkey}{register}",
        alert = alert(error),
        action = escape(&action),
        described = described(error),
    );
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    html(status, "Log in", &body)
}

/// The second step of a login: a TOTP code or a recovery code; or, for an
/// account that must enrol a second factor first, the way to enrol one.
pub fn mfa(service: &AccountService, enrol: bool, totp: bool, error: Option<&str>) -> Response {
    if enrol {
        let body = format!(
            "<h1>Set up a second factor</h1>{alert}\
             <p>Your account must have a second factor before you can log in. \
             Add one to an authenticator app (a TOTP code).</p>\
             <form method=\"post\" action=\"{PREFIX}/totp/enrol\"><button type=\"submit\" autofocus>Set up an authenticator app</button></form>",
            alert = alert(error),
        );
        return html(StatusCode::OK, "Set up a second factor", &body);
    }
    let passkey = if service.settings().passkeys == Passkeys::Off {
        ""
    } else if totp {
        "<p><button type=\"button\" id=\"passkey-second\" class=\"secondary\" hidden>Use a passkey</button></p>"
    } else {
        "<p><button type=\"button\" id=\"passkey-second\" hidden autofocus>Use your passkey</button></p>"
    };
    if !totp {
        let body =
            format!("<h1>Second factor</h1>{alert}<p>Confirm with your passkey.</p>{passkey}", alert = alert(error));
        let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
        return html(status, "Second factor", &body);
    }
    let body = format!(
        "<h1>Second factor</h1>{alert}\
         <form method=\"post\" action=\"{PREFIX}/login/totp\">\
         <label for=\"code\">Code from your authenticator app</label>\
         <input id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9 ]{{6,7}}\" required autofocus maxlength=\"16\"{described}>\
         <button type=\"submit\">Continue</button></form>{passkey}\
         <details><summary>Use a recovery code</summary>\
         <form method=\"post\" action=\"{PREFIX}/login/recovery\">\
         <label for=\"recovery\">Recovery code</label>\
         <input id=\"recovery\" name=\"code\" autocomplete=\"off\" required maxlength=\"64\">\
         <button type=\"submit\">Continue</button></form></details>",
        alert = alert(error),
        described = described(error),
    );
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    html(status, "Second factor", &body)
}

/// The registration page.
pub fn register(service: &AccountService, error: Option<&str>) -> Response {
    let mode = service.settings().registration;
    if mode == Registration::Closed {
        let body = format!(
            "<h1>Registration is closed</h1><p>Ask an administrator for an account.</p>\
             <p><a href=\"{LOGIN_PATH}\">Log in</a></p>"
        );
        return html(StatusCode::FORBIDDEN, "Registration is closed", &body);
    }
    let invite = if mode == Registration::Invite {
        "<label for=\"invite\">Invite code</label><input id=\"invite\" name=\"invite\" autocomplete=\"off\" required maxlength=\"128\">"
    } else {
        ""
    };
    let body = format!(
        "<h1>Create an account</h1>{alert}\
         <form method=\"post\" action=\"{PREFIX}/register\">{invite}\
         <label for=\"username\">Username</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus maxlength=\"64\"{described}>\
         <label for=\"email\">Email (optional)</label>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" maxlength=\"254\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required minlength=\"12\" maxlength=\"128\" aria-describedby=\"password-rules\">\
         <p id=\"password-rules\" class=\"hint\">12 to 128 characters; common passwords are refused.</p>\
         <button type=\"submit\">Create account</button></form>\
         <p><a href=\"{LOGIN_PATH}\">Log in</a></p>",
        alert = alert(error),
        described = described(error),
    );
    html(StatusCode::OK, "Create an account", &body)
}

/// The account page of a signed-in account.
pub fn home(
    service: &AccountService,
    account: &Account,
    totp: bool,
    recovery_codes: u64,
    error: Option<&str>,
    done: Option<&str>,
) -> Response {
    let done = match done {
        Some("password") => "<p class=\"done\" role=\"status\">Password changed; your other sessions have ended.</p>",
        _ => "",
    };
    let second = if totp {
        format!(
            "<p>Authenticator app: set up. Recovery codes left: {recovery_codes}.</p>\
             <form method=\"post\" action=\"{PREFIX}/recovery-codes\"><button type=\"submit\" class=\"secondary\">New recovery codes</button></form>"
        )
    } else {
        format!(
            "<p>Authenticator app: not set up.</p>\
             <form method=\"post\" action=\"{PREFIX}/totp/enrol\"><button type=\"submit\">Set up an authenticator app</button></form>"
        )
    };
    let passkeys = if service.settings().passkeys == Passkeys::Off {
        String::new()
    } else {
        "<h2>Passkeys</h2><p><button type=\"button\" id=\"passkey-register\" hidden>Add a passkey</button></p>\
         <p id=\"passkey-status\" role=\"status\"></p>"
            .to_owned()
    };
    let body = format!(
        "<h1>Your account</h1>{alert}{done}\
         <p>Signed in as <strong>{username}</strong>{email}.</p>\
         <h2>Second factor</h2>{second}{passkeys}\
         <h2>Password</h2>\
         <form method=\"post\" action=\"{PREFIX}/password\">\
         <label for=\"current_password\">Current password</label>\
         <input id=\"current_password\" name=\"current_password\" type=\"password\" autocomplete=\"current-password\" required maxlength=\"1024\">\
         <label for=\"new_password\">New password</label>\
         <input id=\"new_password\" name=\"new_password\" type=\"password\" autocomplete=\"new-password\" required minlength=\"12\" maxlength=\"128\">\
         <button type=\"submit\">Change password</button></form>\
         <h2>Sessions</h2>\
         <form method=\"post\" action=\"{PREFIX}/logout\"><button type=\"submit\">Log out</button></form>\
         <form method=\"post\" action=\"{PREFIX}/logout-all\"><button type=\"submit\" class=\"secondary\">Log out everywhere</button></form>",
        alert = alert(error),
        username = escape(&account.username),
        email = account.email.as_deref().map(|e| format!(" ({})", escape(e))).unwrap_or_default(),
    );
    html(StatusCode::OK, "Your account", &body)
}

/// The TOTP enrolment page: the secret to type or the URI to open, and the
/// code to confirm it with.
pub fn totp_enrol(base32: &str, uri: &str) -> Response {
    let grouped: Vec<String> = base32.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    let body = format!(
        "<h1>Set up an authenticator app</h1>\
         <p>Add this key to your authenticator app (or open the link on this device), then enter the code it shows.</p>\
         <p class=\"secret\" aria-label=\"Key\"><code>{key}</code></p>\
         <p><a href=\"{uri}\">Open in an authenticator app</a></p>\
         <form method=\"post\" action=\"{PREFIX}/totp/confirm\">\
         <label for=\"code\">Code from the app</label>\
         <input id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required autofocus maxlength=\"16\">\
         <button type=\"submit\">Confirm</button></form>",
        key = escape(&grouped.join(" ")),
        uri = escape(uri),
    );
    html(StatusCode::OK, "Set up an authenticator app", &body)
}

/// The recovery codes, shown once.
pub fn recovery_codes(codes: &[String], logged_in: bool) -> Response {
    let items: String = codes.iter().map(|c| format!("<li><code>{}</code></li>", escape(c))).collect();
    let next = if logged_in { "/" } else { "/.portcullis/account/" };
    let body = format!(
        "<h1>Recovery codes</h1>\
         <p>Keep these codes somewhere safe. Each logs you in once if you lose your authenticator. \
         They are shown only now.</p><ul class=\"codes\">{items}</ul>\
         <p><a href=\"{next}\" autofocus>Continue</a></p>"
    );
    html(StatusCode::OK, "Recovery codes", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn unknown_error_codes_show_nothing() {
        assert_eq!(alert(Some("<script>alert(1)</script>")), "");
        assert!(alert(Some("login.failed")).contains("role=\"alert\""));
    }
}
