//! Typed denials: every refusal Portcullis makes, with a stable reason code,
//! the HTTP status it is answered with and who caused it.
//!
//! A defence never writes an error response itself. It returns a [`Denied`];
//! the reject layer turns that into the JSON error body and the security event,
//! in one place, so every refusal looks the same to clients, logs and metrics.
//!
//! Reason codes are part of the public interface (responses, events, metric
//! labels, alert rules): never rename one, only add new ones. A few codes
//! record what was granted rather than refused (`account.login`: a 2xx
//! status, action `allow` through `refusal::record`); they are never a
//! refusal's reason.

use std::borrow::Cow;

use http::{HeaderName, HeaderValue, StatusCode};
use serde::Serialize;

/// Who caused a failure (Pingora's `ErrorSource`): triage of security events
/// and 5xx answers starts with this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Attribution {
    /// The client sent something refused by policy or malformed.
    Client,
    /// The upstream was unreachable, slow or answered badly.
    Upstream,
    /// Portcullis itself failed (a bug or an exhausted resource).
    Gateway,
}

impl Attribution {
    /// The lowercase name used in events and metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
            Self::Gateway => "gateway",
        }
    }
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident => ($code:literal, $status:expr, $attr:ident), )*) => {
        /// Every reason Portcullis can refuse a request for.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
        }

        impl Reason {
            /// All reasons, for documentation and metric pre-registration.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The stable reason code, `defence.detail`.
            #[must_use]
            pub const fn code(self) -> &'static str {
                match self { $( Self::$variant => $code, )* }
            }

            /// The status the client receives.
            #[must_use]
            pub const fn status(self) -> StatusCode {
                match self { $( Self::$variant => $status, )* }
            }

            /// Who caused it.
            #[must_use]
            pub const fn attribution(self) -> Attribution {
                match self { $( Self::$variant => Attribution::$attr, )* }
            }
        }
    };
}

reasons! {
    /// No route matches the request's host and path.
    RouteNone => ("route.none", StatusCode::NOT_FOUND, Client),
    /// A route matches the host and path but not the method.
    RouteMethod => ("route.method", StatusCode::METHOD_NOT_ALLOWED, Client),
    /// The request is malformed in a way hyper accepted but Portcullis does not
    /// (an invalid `Host`, an unparsable `Content-Length`, …).
    RequestMalformed => ("request.malformed", StatusCode::BAD_REQUEST, Client),
    /// A header or cookie that carries a credential or decides identity
    /// (`Authorization`, `Host`, the API-key header, the session cookie, …)
    /// appears more than once; `rule` names it.
    RequestDuplicate => ("request.duplicate", StatusCode::BAD_REQUEST, Client),
    /// A header some backends read to change the method or path
    /// (`X-HTTP-Method-Override`, `X-Original-URL`, …); `rule` names it.
    RequestOverride => ("request.override", StatusCode::BAD_REQUEST, Client),
    /// A body the gateway inspects (WAF, OpenAPI) sent compressed or in a
    /// charset it cannot read as the upstream does; `rule` says which.
    RequestEncoding => ("request.encoding", StatusCode::UNSUPPORTED_MEDIA_TYPE, Client),
    /// An `Upgrade` to anything but WebSocket (`h2c`, `TLS/1.0`, a list).
    UpgradeProtocol => ("upgrade.protocol", StatusCode::BAD_REQUEST, Client),
    /// A WebSocket upgrade not in RFC 6455's shape (not a body-less HTTP/1.1
    /// GET, no 16-byte `Sec-WebSocket-Key`, a version other than 13).
    UpgradeWebSocket => ("upgrade.websocket", StatusCode::BAD_REQUEST, Client),
    /// A WebSocket upgrade on a route without `websocket = true`.
    UpgradeNotAllowed => ("upgrade.not_allowed", StatusCode::BAD_REQUEST, Client),
    /// The client's body stream failed before it was complete.
    RequestBody => ("request.body", StatusCode::BAD_REQUEST, Client),
    /// The client sent its body too slowly: it kept the gateway waiting
    /// beyond `[server] body_timeout` without keeping up `min_body_rate`
    /// (slow POST).
    RequestBodyTimeout => ("request.body_timeout", StatusCode::REQUEST_TIMEOUT, Client),
    /// The request body is larger than the configured limit.
    LimitBody => ("limit.body", StatusCode::PAYLOAD_TOO_LARGE, Client),
    /// The request target is longer than the configured limit.
    LimitUri => ("limit.uri", StatusCode::URI_TOO_LONG, Client),
    /// Too many request headers, or too many header bytes.
    LimitHeaders => ("limit.headers", StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Client),
    /// No connection to any target of the upstream could be opened in time.
    UpstreamConnect => ("upstream.connect", StatusCode::BAD_GATEWAY, Upstream),
    /// The upstream did not answer within the response timeout.
    UpstreamTimeout => ("upstream.timeout", StatusCode::GATEWAY_TIMEOUT, Upstream),
    /// The upstream closed the connection or answered with invalid HTTP.
    UpstreamProtocol => ("upstream.protocol", StatusCode::BAD_GATEWAY, Upstream),
    /// The client did not send a complete request head within the header read
    /// timeout (slowloris); the connection was closed before any request.
    ConnHeaderTimeout => ("conn.header_timeout", StatusCode::REQUEST_TIMEOUT, Client),
    /// The connection carried bytes that are not HTTP (refused by the parser).
    ConnMalformed => ("conn.malformed", StatusCode::BAD_REQUEST, Client),
    /// A request head larger than the parser's buffer (far above the limits).
    ConnHeadTooLarge => ("conn.head_too_large", StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Client),
    /// An HTTP/2 client crossed a protocol bound (streams reset before
    /// their answer, before acceptance or for protocol errors, CONTINUATION
    /// frames): the connection got GOAWAY (rapid reset, CONTINUATION flood).
    ConnFlood => ("conn.flood", StatusCode::TOO_MANY_REQUESTS, Client),
    /// The client address already holds `max_connections_per_ip` open
    /// connections; the new one was closed at once.
    ConnPerIp => ("conn.per_ip", StatusCode::TOO_MANY_REQUESTS, Client),
    /// The client did not read the response: writes to it kept the gateway
    /// waiting beyond `[server] send_timeout` without keeping up
    /// `min_send_rate` (slow read); the connection was closed.
    ConnSendTimeout => ("conn.send_timeout", StatusCode::REQUEST_TIMEOUT, Client),
    /// The client's address is banned (`[[ban]]` or `portcullis ban add`):
    /// refused at accept, or per request when it came through a trusted proxy.
    BanActive => ("ban.active", StatusCode::FORBIDDEN, Client),
    /// This request's refusal made its client reach a `[[ban]]` rule's count:
    /// the event (action `ban`) records the new ban.
    BanIssued => ("ban.issued", StatusCode::FORBIDDEN, Client),
    /// A request to the admin listener without the right bearer token.
    AdminUnauthorized => ("admin.unauthorized", StatusCode::UNAUTHORIZED, Client),
    /// A dashboard request that changes something, authenticated by the
    /// session cookie, without the session's CSRF token.
    AdminCsrf => ("admin.csrf", StatusCode::FORBIDDEN, Client),
    /// The TLS handshake failed or did not finish in time (old protocol
    /// version, no shared cipher suite, not TLS at all, a scanner).
    TlsHandshake => ("tls.handshake", StatusCode::BAD_REQUEST, Client),
    /// A CORS preflight from an origin that is not allowed.
    CorsOrigin => ("cors.origin", StatusCode::FORBIDDEN, Client),
    /// A CORS preflight asking for a method that is not allowed.
    CorsMethod => ("cors.method", StatusCode::FORBIDDEN, Client),
    /// A CORS preflight asking for a request header that is not allowed.
    CorsHeader => ("cors.header", StatusCode::FORBIDDEN, Client),
    /// The path has malformed percent-encoding or is not origin-form.
    PathEncoding => ("path.encoding", StatusCode::BAD_REQUEST, Client),
    /// The path holds NUL or another control character, raw or escaped.
    PathControl => ("path.control", StatusCode::BAD_REQUEST, Client),
    /// The path's escapes decode to invalid UTF-8 (overlong forms included).
    PathUnicode => ("path.unicode", StatusCode::BAD_REQUEST, Client),
    /// An encoded slash or backslash (`%2F`, `%5C`), refused by configuration.
    PathEncodedSlash => ("path.encoded_slash", StatusCode::BAD_REQUEST, Client),
    /// A raw backslash, refused by configuration.
    PathBackslash => ("path.backslash", StatusCode::BAD_REQUEST, Client),
    /// A `;` path parameter, refused by configuration.
    PathSemicolon => ("path.semicolon", StatusCode::BAD_REQUEST, Client),
    /// An escaped `%` followed by two hex digits (`%252e`): a backend that
    /// decodes twice would read another path. Refused unless configured.
    PathDoubleEncoding => ("path.double_encoding", StatusCode::BAD_REQUEST, Client),
    /// A segment some backend treats as `..` or `.` although it is neither
    /// (`.. `, `..%20`, `...`, `%E2%80%A5`).
    PathDotSegment => ("path.dot_segment", StatusCode::BAD_REQUEST, Client),
    /// The route requires authentication and the request carries no
    /// credential the route accepts.
    AuthMissing => ("auth.missing", StatusCode::UNAUTHORIZED, Client),
    /// The bearer token is not a well-formed compact JWS (three base64url
    /// parts, a JSON header naming an algorithm, JSON claims).
    JwtMalformed => ("jwt.malformed", StatusCode::UNAUTHORIZED, Client),
    /// The token is larger than the configured maximum.
    JwtTooLarge => ("jwt.too_large", StatusCode::UNAUTHORIZED, Client),
    /// The header's `alg` is not one the selected key may be used with
    /// (`none`, HMAC against a public key, a family mismatch).
    JwtAlgNotAllowed => ("jwt.alg_not_allowed", StatusCode::UNAUTHORIZED, Client),
    /// No configured or published key has the token's `kid`, even after a
    /// JWKS refresh.
    JwtUnknownKid => ("jwt.unknown_kid", StatusCode::UNAUTHORIZED, Client),
    /// The signature does not verify with the selected key.
    JwtBadSignature => ("jwt.bad_signature", StatusCode::UNAUTHORIZED, Client),
    /// `exp` is in the past (beyond the leeway).
    JwtExpired => ("jwt.expired", StatusCode::UNAUTHORIZED, Client),
    /// `nbf` (or `iat`) is in the future (beyond the leeway).
    JwtNotYetValid => ("jwt.not_yet_valid", StatusCode::UNAUTHORIZED, Client),
    /// `iss` is not a configured issuer.
    JwtWrongIssuer => ("jwt.wrong_issuer", StatusCode::UNAUTHORIZED, Client),
    /// `aud` does not contain the configured audience.
    JwtWrongAudience => ("jwt.wrong_audience", StatusCode::UNAUTHORIZED, Client),
    /// A required claim is absent or has the wrong type.
    JwtMissingClaim => ("jwt.missing_claim", StatusCode::UNAUTHORIZED, Client),
    /// The header lists critical extensions (`crit`) Portcullis does not
    /// implement (RFC 7515 §4.1.11 requires rejecting the token).
    JwtCrit => ("jwt.crit", StatusCode::UNAUTHORIZED, Client),
    /// The issuer's keys could not be fetched and none are cached.
    JwtKeysUnavailable => ("jwt.keys_unavailable", StatusCode::SERVICE_UNAVAILABLE, Upstream),
    /// The API key does not have the configured prefix and shape.
    ApiKeyMalformed => ("apikey.malformed", StatusCode::UNAUTHORIZED, Client),
    /// No stored key matches.
    ApiKeyUnknown => ("apikey.unknown", StatusCode::UNAUTHORIZED, Client),
    /// The key was revoked.
    ApiKeyRevoked => ("apikey.revoked", StatusCode::UNAUTHORIZED, Client),
    /// The key is past its expiry.
    ApiKeyExpired => ("apikey.expired", StatusCode::UNAUTHORIZED, Client),
    /// The key store could not be queried.
    ApiKeyStoreUnavailable => ("apikey.store_unavailable", StatusCode::SERVICE_UNAVAILABLE, Gateway),
    /// The session cookie does not open with the gateway's key (tampered,
    /// forged, or sealed with a retired key).
    SessionInvalid => ("session.invalid", StatusCode::UNAUTHORIZED, Client),
    /// The session is past its lifetime and could not be refreshed.
    SessionExpired => ("session.expired", StatusCode::UNAUTHORIZED, Client),
    /// The session was ended by logout or an administrator.
    SessionRevoked => ("session.revoked", StatusCode::UNAUTHORIZED, Client),
    /// The shared revocation list (Redis) could not be asked whether the
    /// session was ended; the session fails closed.
    SessionUnavailable => ("session.unavailable", StatusCode::SERVICE_UNAVAILABLE, Gateway),
    /// An OIDC callback whose `state` does not match the login in progress
    /// (forged, replayed or expired).
    OidcState => ("oidc.state", StatusCode::BAD_REQUEST, Client),
    /// An OIDC callback the provider marked as failed, or whose ID token does
    /// not verify (signature, nonce, audience, expiry).
    OidcCallback => ("oidc.callback", StatusCode::BAD_REQUEST, Client),
    /// The OIDC provider could not be reached or answered badly.
    OidcProvider => ("oidc.provider", StatusCode::BAD_GATEWAY, Upstream),
    /// The caller has none of the roles the route requires.
    AuthzRole => ("authz.role", StatusCode::FORBIDDEN, Client),
    /// The caller's roles do not grant every permission the route requires.
    AuthzPermission => ("authz.permission", StatusCode::FORBIDDEN, Client),
    /// The credential lacks a scope the route requires.
    AuthzScope => ("authz.scope", StatusCode::FORBIDDEN, Client),
    /// The caller's subject is not one the route lists.
    AuthzSubject => ("authz.subject", StatusCode::FORBIDDEN, Client),
    /// The path names an object the caller does not own.
    AuthzOwner => ("authz.owner", StatusCode::FORBIDDEN, Client),
    /// The client address is on a deny list.
    IpDenied => ("ip.denied", StatusCode::FORBIDDEN, Client),
    /// The client address is not on the allow list.
    IpNotAllowed => ("ip.not_allowed", StatusCode::FORBIDDEN, Client),
    /// A rate limit of the route is exceeded (`rule` names it).
    RateLimitExceeded => ("ratelimit.exceeded", StatusCode::TOO_MANY_REQUESTS, Client),
    /// The shared limit store is unreachable and the limit fails closed.
    RateLimitUnavailable => ("ratelimit.unavailable", StatusCode::SERVICE_UNAVAILABLE, Gateway),
    /// A login attempt during the backoff after repeated failures for its
    /// account name or client address (`rule` names the `[login.NAME]`).
    LoginBackoff => ("login.backoff", StatusCode::TOO_MANY_REQUESTS, Client),
    /// A login request whose account name the gateway cannot read the way
    /// the upstream would (a compressed body, a charset other than UTF-8 or
    /// ISO-8859-1, JSON that does not parse, the field twice or not a
    /// string): it could not be counted.
    LoginUnreadable => ("login.unreadable", StatusCode::BAD_REQUEST, Client),
    /// A login request whose body is larger than the login's `max_body`: the
    /// account in it could not be counted.
    LoginTooLarge => ("login.too_large", StatusCode::PAYLOAD_TOO_LARGE, Client),
    /// The login-protection store is unreachable and the protection fails
    /// closed (also logged, action `log`, when it fails open).
    LoginUnavailable => ("login.unavailable", StatusCode::SERVICE_UNAVAILABLE, Gateway),
    /// The upstream refused a login (a counted failure; logged, not a refusal
    /// by the gateway).
    LoginFailed => ("login.failed", StatusCode::UNAUTHORIZED, Client),
    /// A built-in account logged in (action `allow`; `detail` names the
    /// account id and the factors used).
    AccountLogin => ("account.login", StatusCode::OK, Client),
    /// A request to an account endpoint that is not well formed: a field
    /// missing, too long, not UTF-8, or a body that is not the JSON or form
    /// the endpoint takes.
    AccountInvalid => ("account.invalid", StatusCode::BAD_REQUEST, Client),
    /// A state-changing request to an account endpoint from another origin
    /// (`Origin` or `Sec-Fetch-Site` says so).
    AccountOrigin => ("account.origin", StatusCode::FORBIDDEN, Client),
    /// An account endpoint that needs a logged-in account got none, or one
    /// whose session has ended.
    AccountUnauthenticated => ("account.unauthenticated", StatusCode::UNAUTHORIZED, Client),
    /// A second factor was refused: a wrong TOTP or recovery code, or a
    /// second-factor step without a login in progress.
    AccountMfaFailed => ("account.mfa_failed", StatusCode::UNAUTHORIZED, Client),
    /// A TOTP code of a time step already used was presented again.
    AccountTotpReplay => ("account.totp_replay", StatusCode::UNAUTHORIZED, Client),
    /// A second factor was enrolled or replaced (action `allow`).
    AccountMfaEnrolled => ("account.mfa_enrolled", StatusCode::OK, Client),
    /// A recovery code was used to log in (action `allow`).
    AccountRecoveryUsed => ("account.recovery_code_used", StatusCode::OK, Client),
    /// A passkey was registered (action `allow`).
    AccountPasskeyRegistered => ("account.passkey_registered", StatusCode::OK, Client),
    /// A passkey ceremony failed: a response that does not verify, a
    /// credential the account does not have, or no ceremony in progress.
    AccountPasskeyFailed => ("account.passkey_failed", StatusCode::UNAUTHORIZED, Client),
    /// A refresh token that is unknown, expired, revoked, or replaced moments
    /// ago by a concurrent refresh.
    AccountRefreshInvalid => ("account.refresh_invalid", StatusCode::UNAUTHORIZED, Client),
    /// A refresh token replaced earlier was presented again: its whole
    /// session is revoked.
    AccountRefreshReuse => ("account.refresh_reuse", StatusCode::UNAUTHORIZED, Client),
    /// An account's access token that does not verify (signature, audience,
    /// issuer, shape) or whose session was revoked.
    AccountTokenInvalid => ("account.token_invalid", StatusCode::UNAUTHORIZED, Client),
    /// An account's access token past its expiry: refresh it.
    AccountTokenExpired => ("account.token_expired", StatusCode::UNAUTHORIZED, Client),
    /// A session was ended by its owner (action `allow`; `detail` says one
    /// or all).
    AccountLogout => ("account.logout", StatusCode::OK, Client),
    /// A password was changed and the account's other sessions revoked
    /// (action `allow`).
    AccountPasswordChanged => ("account.password_changed", StatusCode::OK, Client),
    /// A new password breaks the policy (length, a common password).
    AccountPasswordRejected => ("account.password_rejected", StatusCode::BAD_REQUEST, Client),
    /// An account was registered through the endpoint (action `allow`).
    AccountRegistered => ("account.registered", StatusCode::CREATED, Client),
    /// Registration is closed, or the invite code is unknown, used or expired.
    AccountRegistrationRefused => ("account.registration_refused", StatusCode::FORBIDDEN, Client),
    /// The username or email is taken by another account.
    AccountTaken => ("account.taken", StatusCode::CONFLICT, Client),
    /// Every password-hashing slot stayed busy past `hash_queue_timeout`
    /// (a login flood); the client is told to retry.
    AccountBusy => ("account.busy", StatusCode::SERVICE_UNAVAILABLE, Gateway),
    /// The account store could not be reached.
    AccountUnavailable => ("account.unavailable", StatusCode::SERVICE_UNAVAILABLE, Gateway),
    /// The route's in-flight limit is reached (`rule` names the route).
    ConcurrencyRoute => ("concurrency.route", StatusCode::SERVICE_UNAVAILABLE, Gateway),
    /// The upstream's in-flight limit is reached (`rule` names the upstream).
    ConcurrencyUpstream => ("concurrency.upstream", StatusCode::SERVICE_UNAVAILABLE, Upstream),
    /// An unsafe request on a CSRF-protected route that is not same-origin:
    /// `Sec-Fetch-Site: cross-site` (or `same-site`), an `Origin` that is
    /// neither the site's nor trusted, `Origin: null`, or no origin at all.
    CsrfOrigin => ("csrf.origin", StatusCode::FORBIDDEN, Client),
    /// An unsafe request without the CSRF token header or cookie.
    CsrfTokenMissing => ("csrf.token_missing", StatusCode::FORBIDDEN, Client),
    /// The CSRF token header does not match the cookie, or the token is not
    /// the gateway's for this session (forged, tampered, another session's).
    CsrfTokenInvalid => ("csrf.token_invalid", StatusCode::FORBIDDEN, Client),
    /// The route requires a client certificate and none was presented.
    MtlsMissing => ("mtls.missing", StatusCode::UNAUTHORIZED, Client),
    /// The WAF found SQL injection (CRS 942xxx).
    WafSqli => ("waf.sqli", StatusCode::FORBIDDEN, Client),
    /// The WAF found cross-site scripting (CRS 941xxx).
    WafXss => ("waf.xss", StatusCode::FORBIDDEN, Client),
    /// The WAF found local file inclusion or path traversal (CRS 930xxx).
    WafLfi => ("waf.lfi", StatusCode::FORBIDDEN, Client),
    /// The WAF found remote file inclusion (CRS 931xxx).
    WafRfi => ("waf.rfi", StatusCode::FORBIDDEN, Client),
    /// The WAF found remote command execution (CRS 932xxx).
    WafRce => ("waf.rce", StatusCode::FORBIDDEN, Client),
    /// The WAF found PHP injection (CRS 933xxx).
    WafPhp => ("waf.php", StatusCode::FORBIDDEN, Client),
    /// The WAF found generic code injection (Node.js, SSRF, …; CRS 934xxx).
    WafGeneric => ("waf.generic", StatusCode::FORBIDDEN, Client),
    /// The WAF found session fixation (CRS 943xxx).
    WafSessionFixation => ("waf.session_fixation", StatusCode::FORBIDDEN, Client),
    /// The WAF found Java injection (CRS 944xxx).
    WafJava => ("waf.java", StatusCode::FORBIDDEN, Client),
    /// The WAF found protocol violations (CRS 920xxx–922xxx).
    WafProtocol => ("waf.protocol", StatusCode::FORBIDDEN, Client),
    /// The WAF found a security scanner (CRS 913xxx).
    WafScanner => ("waf.scanner", StatusCode::FORBIDDEN, Client),
    /// The WAF refused the method (CRS 911xxx).
    WafMethod => ("waf.method", StatusCode::FORBIDDEN, Client),
    /// The upstream's response leaks what it should not (CRS 950xxx–956xxx:
    /// SQL, Java, PHP, IIS or Ruby errors, source code, directory listings,
    /// web shells) and its outbound anomaly score reached the threshold; in
    /// block mode the response is withheld.
    WafLeak => ("waf.leak", StatusCode::BAD_GATEWAY, Upstream),
    /// The WAF's anomaly score crossed the threshold with no attack class.
    WafAnomaly => ("waf.anomaly", StatusCode::FORBIDDEN, Client),
    /// The body is larger than the WAF inspects, and such bodies are refused.
    WafBodyTooLarge => ("waf.body_too_large", StatusCode::PAYLOAD_TOO_LARGE, Client),
    /// A JSON body the WAF's engine could not read whole (it does not parse,
    /// or nests or holds more than the engine inspects).
    WafBodyUnparsable => ("waf.body_unparsable", StatusCode::BAD_REQUEST, Client),
    /// The WAF's inspection queue is full (or its engine failed) and it fails closed.
    WafOverloaded => ("waf.overloaded", StatusCode::SERVICE_UNAVAILABLE, Gateway),
    /// The path is not in the route's OpenAPI document (`deny_unknown`).
    OpenapiUnknownPath => ("openapi.unknown_path", StatusCode::NOT_FOUND, Client),
    /// The path is in the OpenAPI document but not with this method
    /// (`deny_unknown`); answered with `Allow`.
    OpenapiMethod => ("openapi.method", StatusCode::METHOD_NOT_ALLOWED, Client),
    /// A parameter or the JSON body does not match the OpenAPI document; the
    /// answer names the field and says why.
    OpenapiInvalid => ("openapi.invalid", StatusCode::BAD_REQUEST, Client),
    /// The JSON body is nested too deeply, has too many keys or too long a
    /// string (`max_depth`, `max_keys`, `max_string`).
    OpenapiJsonLimits => ("openapi.json_limits", StatusCode::BAD_REQUEST, Client),
    /// The body says it is JSON but does not parse.
    OpenapiMalformedJson => ("openapi.malformed_json", StatusCode::BAD_REQUEST, Client),
    /// The body is larger than the OpenAPI document's `max_body`, so it
    /// cannot be validated.
    OpenapiBodyTooLarge => ("openapi.body_too_large", StatusCode::PAYLOAD_TOO_LARGE, Client),
    /// The body's `Content-Type` is not one the operation accepts.
    OpenapiContentType => ("openapi.content_type", StatusCode::UNSUPPORTED_MEDIA_TYPE, Client),
    /// Portcullis failed internally; details are only in the gateway's log.
    GatewayInternal => ("gateway.internal", StatusCode::INTERNAL_SERVER_ERROR, Gateway),
}

impl Reason {
    /// The defence that owns the reason: the part of the code before the dot.
    #[must_use]
    pub fn defence(self) -> &'static str {
        let code = self.code();
        code.split_once('.').map_or(code, |(defence, _)| defence)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// What a client may be told about its refusal beyond the reason code: the
/// request field at fault (`body.quantity`, `query.limit`) and why, in a
/// short message (`expected integer`).
///
/// Safe to show the client: it is built by the defence from the rules it
/// enforces (schema keywords, limits), never from secrets or upstream
/// internals. A field name may carry a client-supplied property name, so
/// [`ClientDetail::new`] keeps printable ASCII only and truncates both parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientDetail {
    /// The field at fault.
    pub field: String,
    /// Why, in a few words.
    pub message: String,
}

impl ClientDetail {
    /// Longest field name sent, in bytes.
    pub const MAX_FIELD: usize = 128;
    /// Longest message sent, in bytes.
    pub const MAX_MESSAGE: usize = 160;

    /// A detail with both parts cleaned: characters outside printable ASCII
    /// become `?`, and each part is cut (with `…`) at its maximum.
    #[must_use]
    pub fn new(field: &str, message: &str) -> Self {
        Self { field: clean(field, Self::MAX_FIELD), message: clean(message, Self::MAX_MESSAGE) }
    }
}

/// Printable ASCII only, at most `max` bytes (`...` marks a cut).
fn clean(text: &str, max: usize) -> String {
    let mut out: String =
        text.chars().take(max + 1).map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect();
    if out.len() > max {
        out.truncate(max.saturating_sub(3));
        out.push_str("...");
    }
    out
}

/// A refusal, produced by a defence and rendered by the reject layer.
#[derive(Debug, Clone)]
pub struct Denied {
    /// Why.
    pub reason: Reason,
    /// Internal detail for the security event (never sent to the client).
    /// Must not contain secrets: say "token expired 30s ago", not the token.
    pub detail: Option<Cow<'static, str>>,
    /// The configured rule that decided, if any (for events).
    pub rule: Option<String>,
    /// Headers the client needs with this answer (`Allow`, `Retry-After`,
    /// `WWW-Authenticate`, …).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What the WAF matched, for the event (never sent to the client).
    pub waf: Option<Box<crate::waf::WafReport>>,
    /// What the client is told beyond the reason code (field and message),
    /// if anything; unlike `detail`, this reaches the client. Boxed: most
    /// denials have none, and `Denied` travels in every `Result`.
    pub client: Option<Box<ClientDetail>>,
}

impl Denied {
    /// A denial with no detail.
    #[must_use]
    pub const fn new(reason: Reason) -> Self {
        Self { reason, detail: None, rule: None, headers: Vec::new(), waf: None, client: None }
    }

    /// Attaches what the WAF matched, for the event.
    #[must_use]
    pub fn with_waf(mut self, report: crate::waf::WafReport) -> Self {
        self.waf = Some(Box::new(report));
        self
    }

    /// Adds internal detail for the event.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Names the rule that decided.
    #[must_use]
    pub fn with_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    /// Adds a header to the client's answer.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Tells the client which field is at fault and why (see [`ClientDetail`]).
    #[must_use]
    pub fn with_client(mut self, field: &str, message: &str) -> Self {
        self.client = Some(Box::new(ClientDetail::new(field, message)));
        self
    }

    /// The status the client receives.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        self.reason.status()
    }

    /// The JSON error body: the reason code and the request id, plus the
    /// [`ClientDetail`] (`field`, `message`) when the defence set one; nothing else.
    #[must_use]
    pub fn body(&self, request_id: &str) -> String {
        match &self.client {
            None => serde_json::json!({ "error": self.reason.code(), "request_id": request_id }).to_string(),
            Some(c) => serde_json::json!({
                "error": self.reason.code(),
                "request_id": request_id,
                "field": c.field,
                "message": c.message,
            })
            .to_string(),
        }
    }
}

impl From<Reason> for Denied {
    fn from(reason: Reason) -> Self {
        Self::new(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let code = reason.code();
            assert!(seen.insert(code), "duplicate code {code}");
            let (defence, detail) = code.split_once('.').expect("code has a dot");
            assert!(!defence.is_empty() && !detail.is_empty());
            assert!(code.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'));
            // Refusals are 4xx/5xx; the few records of granted requests
            // (`account.login`, action `allow`) carry the 2xx they are sent with.
            let granted = reason.status().is_success() && code.starts_with("account.");
            assert!(reason.status().is_client_error() || reason.status().is_server_error() || granted, "{code}");
        }
    }

    #[test]
    fn every_reason_is_documented_with_its_status_and_attribution() {
        let doc = include_str!("../../../docs/events.md");
        for reason in Reason::ALL {
            let row =
                format!("| `{}` | {} | {} |", reason.code(), reason.status().as_u16(), reason.attribution().as_str());
            assert!(doc.contains(&row), "docs/events.md lacks the row {row}");
        }
    }

    #[test]
    fn attribution_matches_status_class() {
        for reason in Reason::ALL {
            match reason.attribution() {
                Attribution::Client => {
                    assert!(reason.status().is_client_error() || reason.status().is_success(), "{reason}");
                }
                Attribution::Upstream | Attribution::Gateway => {
                    assert!(reason.status().is_server_error(), "{reason}");
                }
            }
        }
    }

    #[test]
    fn body_carries_only_code_and_request_id() {
        let denied = Denied::new(Reason::UpstreamTimeout).with_detail("10.0.0.7:3000 took 31s");
        let body: serde_json::Value = serde_json::from_str(&denied.body("abc")).unwrap();
        assert_eq!(body, serde_json::json!({"error": "upstream.timeout", "request_id": "abc"}));
        assert_eq!(denied.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(Reason::LimitBody.defence(), "limit");
    }

    #[test]
    fn client_detail_is_added_cleaned_and_truncated() {
        let denied = Denied::new(Reason::OpenapiInvalid).with_client("body.quantity", "expected integer");
        let body: serde_json::Value = serde_json::from_str(&denied.body("abc")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "openapi.invalid", "request_id": "abc", "field": "body.quantity", "message": "expected integer"})
        );
        let long = "x".repeat(1000);
        let detail = ClientDetail::new(&format!("body.{long}\u{7}\n<é>"), &long);
        assert!(detail.field.len() <= ClientDetail::MAX_FIELD && detail.field.ends_with("..."), "{}", detail.field);
        assert!(detail.message.len() <= ClientDetail::MAX_MESSAGE);
        assert_eq!(ClientDetail::new("body.a\u{7}\n<é>", "ok").field, "body.a??<?>");
    }
}
