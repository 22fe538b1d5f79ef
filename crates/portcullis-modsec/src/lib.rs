//! A minimal safe interface to libmodsecurity 3 (ModSecurity v3, C++), for
//! the WAF's `libmodsecurity` engine (`portcullis-policy`, feature
//! `libmodsecurity`). It is the only crate of the workspace that contains
//! unsafe code: the calls into the library's C API.
//!
//! Why not the `modsecurity` crate: its releases that build against Debian
//! 12's libmodsecurity 3.0.9 free the library's `malloc`ed strings (the
//! intervention's log and URL, rule-load errors) through Rust's global
//! allocator, which in the gateway is mimalloc (memory corruption on every
//! blocked request), and abort the process when a log message is not UTF-8
//! (its callback panics across the C boundary).
//!
//! The interface is two calls: [`Rules::load`] and [`Rules::inspect`]. A
//! whole transaction (connection, URI, headers, phase 1, body, phase 2)
//! runs inside `inspect` and is cleaned up before it returns, so no library
//! object outlives the Rust values that own it and the log callback never
//! runs after its buffer is gone.
//!
//! Decision rules for memory and threads:
//! - Strings the library allocates are copied and released with `libc::free`.
//! - Strings passed to the library are `CString`s (a NUL inside is an error,
//!   never truncation), headers and bodies are passed with their lengths.
//! - Loading and freeing rule sets is serialized by a process-wide lock (the
//!   library's rule parser is not re-entrant); transactions on a loaded rule
//!   set run concurrently, as in ModSecurity's multi-threaded connectors.
//!
//! Deployment caveat: libmodsecurity must be present at run time
//! (`libmodsecurity3`); its own limits (`SecRequestBodyLimit`, PCRE match
//! limits) apply on top of the gateway's.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fmt;
use std::ptr::NonNull;
use std::sync::Mutex;

use modsecurity_sys as sys;

pub mod libinjection;

/// Serializes rule parsing and clean-up (not thread-safe in libmodsecurity 3).
static PARSER: Mutex<()> = Mutex::new(());

/// A libmodsecurity instance with one loaded rule set.
pub struct Rules {
    msc: NonNull<sys::ModSecurity>,
    rules: NonNull<sys::RulesSet>,
}

// SAFETY: after loading, the instance and rule set are only read by
// transactions (which copy what they change into the transaction); the
// library is used this way by its multi-threaded connectors. Mutation
// (loading, clean-up) happens only in `load` and `drop`, which own `self`
// exclusively and hold `PARSER`.
#[allow(unsafe_code)]
unsafe impl Send for Rules {}
// SAFETY: as above; `inspect` takes `&self` and creates its own transaction.
#[allow(unsafe_code)]
unsafe impl Sync for Rules {}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules").field("library", &self.version()).finish_non_exhaustive()
    }
}

/// One request, as the WAF inspects it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Client address (text) and port.
    pub client_ip: &'a str,
    /// The client's port.
    pub client_port: u16,
    /// The request target: path and query.
    pub uri: &'a str,
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// `1.1`, `2.0` (without `HTTP/`).
    pub version: &'a str,
    /// Headers in order.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The (inspected part of the) body.
    pub body: &'a [u8],
}

/// One response, inspected after its request (phases 3 and 4).
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// The status code.
    pub status: u16,
    /// `HTTP 1.1` (as ModSecurity's nginx connector spells it).
    pub protocol: &'a str,
    /// Headers in order.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The (inspected part of the) body; the library inspects it only when
    /// `SecResponseBodyAccess` is on and the content type is listed in
    /// `SecResponseBodyMimeType`.
    pub body: &'a [u8],
}

/// What the library said about a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The disruptive action, if a rule took one: its status and log line.
    pub intervention: Option<Intervention>,
    /// Every log message of the transaction (one per rule that matched with `log`).
    pub messages: Vec<String>,
}

/// A disruptive action (`deny`, `drop`, `redirect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intervention {
    /// The HTTP status to answer with.
    pub status: u16,
    /// The deciding rule's log line.
    pub log: Option<String>,
}

/// The library failed (not a detection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn cstring(what: &str, text: &str) -> Result<CString, Error> {
    CString::new(text).map_err(|_| Error(format!("{what} contains a NUL byte")))
}

/// Copies and frees a string the library allocated with `malloc`.
#[allow(unsafe_code)]
fn take_c_string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the library returns NUL-terminated strings it `strdup`ed; we
    // read it once, then release it with the C library's `free`, the
    // allocator that made it.
    unsafe {
        let text = CStr::from_ptr(ptr).to_string_lossy().into_owned();
        libc::free(ptr.cast_mut().cast::<c_void>());
        Some(text)
    }
}

/// The library's log callback: appends the message to the transaction's buffer.
#[allow(unsafe_code)]
unsafe extern "C" fn on_log(data: *mut c_void, message: *const c_void) {
    if data.is_null() || message.is_null() {
        return;
    }
    // SAFETY: `data` is the `Vec<String>` that `inspect` passed to
    // `msc_new_transaction`; it outlives the transaction (cleaned up before
    // `inspect` returns), and the library calls back on the thread running
    // the transaction, while `inspect` is inside a library call and holds no
    // other reference to it. `message` is a NUL-terminated string valid
    // during the call. Nothing here panics (lossy conversion), so no unwind
    // crosses the C boundary.
    unsafe {
        let messages = &mut *data.cast::<Vec<String>>();
        let text = CStr::from_ptr(message.cast::<c_char>()).to_string_lossy().into_owned();
        messages.push(text);
    }
}

impl Rules {
    /// A new library instance with `text` (SecLang) loaded.
    ///
    /// # Errors
    /// The library refuses the text: its parser's message (file, line, reason).
    #[allow(unsafe_code)]
    pub fn load(text: &str) -> Result<Self, Error> {
        let text = cstring("the rule text", text)?;
        let connector = cstring("connector", concat!("portcullis ", env!("CARGO_PKG_VERSION")))?;
        let parser = PARSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: plain constructors; null results are checked below.
        let (msc, rules) = unsafe { (sys::msc_init(), sys::msc_create_rules_set()) };
        let (Some(msc), Some(rules)) = (NonNull::new(msc), NonNull::new(rules)) else {
            drop(parser);
            return Err(Error("libmodsecurity could not allocate an instance".into()));
        };
        let loaded = Self { msc, rules };
        let mut error: *const c_char = std::ptr::null();
        // SAFETY: valid instance and rule set; the strings outlive the calls;
        // `error` receives a `malloc`ed message or stays null.
        let added = unsafe {
            sys::msc_set_connector_info(msc.as_ptr(), connector.as_ptr());
            sys::msc_set_log_cb(msc.as_ptr(), Some(on_log));
            sys::msc_rules_add(rules.as_ptr(), text.as_ptr(), &raw mut error)
        };
        let message = take_c_string(error);
        // Unlocked before `loaded` can drop: its clean-up takes the lock too.
        drop(parser);
        if added < 0 {
            return Err(Error(message.unwrap_or_else(|| "the rule text does not load".into()).trim().to_owned()));
        }
        Ok(loaded)
    }

    /// The library's name and version (`ModSecurity v3.0.9 (Linux)`).
    #[must_use]
    #[allow(unsafe_code)]
    pub fn version(&self) -> String {
        // SAFETY: a static string owned by the library instance.
        unsafe {
            let ptr = sys::msc_who_am_i(self.msc.as_ptr());
            if ptr.is_null() { String::new() } else { CStr::from_ptr(ptr).to_string_lossy().into_owned() }
        }
    }

    /// Runs `request` through request phases 1 and 2.
    ///
    /// # Errors
    /// A string argument contains a NUL byte, or the library fails a step.
    pub fn inspect(&self, request: &Request<'_>) -> Result<Outcome, Error> {
        self.transact(request, None).map(|(outcome, _)| outcome)
    }

    /// Runs `request` through phases 1 and 2 and, in the same transaction,
    /// `response` through phases 3 and 4 (unless the request was
    /// intervened): the request's outcome and the response's (the messages
    /// logged during the response phases).
    ///
    /// # Errors
    /// A string argument contains a NUL byte, or the library fails a step.
    pub fn inspect_exchange(
        &self,
        request: &Request<'_>,
        response: &Response<'_>,
    ) -> Result<(Outcome, Outcome), Error> {
        self.transact(request, Some(response)).map(|(request, response)| (request, response.unwrap_or_default()))
    }

    #[allow(unsafe_code)]
    fn transact(
        &self,
        request: &Request<'_>,
        response: Option<&Response<'_>>,
    ) -> Result<(Outcome, Option<Outcome>), Error> {
        let client = cstring("the client address", request.client_ip)?;
        let server = cstring("the server address", "127.0.0.1")?;
        let uri = cstring("the URI", request.uri)?;
        let method = cstring("the method", request.method)?;
        let version = cstring("the HTTP version", request.version)?;
        let mut messages: Box<Vec<String>> = Box::default();
        let data: *mut Vec<String> = &raw mut *messages;
        // SAFETY: valid instance and rule set (owned by `self`); `data`
        // points into the box, which lives until after the clean-up below.
        let tx = unsafe { sys::msc_new_transaction(self.msc.as_ptr(), self.rules.as_ptr(), data.cast::<c_void>()) };
        let Some(tx) = NonNull::new(tx) else {
            return Err(Error("libmodsecurity could not start a transaction".into()));
        };
        let tx = Transaction(tx);
        let t = tx.0.as_ptr();
        let step = |what: &str, result: c_int| {
            if result == 1 { Ok(()) } else { Err(Error(format!("libmodsecurity failed {what}"))) }
        };
        // SAFETY: `t` is a live transaction until `tx`
        // drops at the end of this function; every pointer argument is
        // valid for the call and its length is passed where it has one.
        unsafe {
            step(
                "the connection",
                sys::msc_process_connection(t, client.as_ptr(), c_int::from(request.client_port), server.as_ptr(), 80),
            )?;
            step("the URI", sys::msc_process_uri(t, uri.as_ptr(), method.as_ptr(), version.as_ptr()))?;
            for (name, value) in request.headers {
                step(
                    "a header",
                    sys::msc_add_n_request_header(t, name.as_ptr(), name.len(), value.as_ptr(), value.len()),
                )?;
            }
            step("the request headers", sys::msc_process_request_headers(t))?;
        }
        let mut intervention = tx.intervention();
        if intervention.is_none() {
            // SAFETY: as above.
            unsafe {
                if !request.body.is_empty() {
                    step("the body", sys::msc_append_request_body(t, request.body.as_ptr(), request.body.len()))?;
                }
                step("the request body", sys::msc_process_request_body(t))?;
            }
            intervention = tx.intervention();
        }
        let mut answered = None;
        let request_messages = messages.len();
        if let (None, Some(response)) = (&intervention, response) {
            let protocol = cstring("the response protocol", response.protocol)?;
            // SAFETY: as above.
            unsafe {
                for (name, value) in response.headers {
                    step(
                        "a response header",
                        sys::msc_add_n_response_header(t, name.as_ptr(), name.len(), value.as_ptr(), value.len()),
                    )?;
                }
                step(
                    "the response headers",
                    sys::msc_process_response_headers(t, c_int::from(response.status), protocol.as_ptr()),
                )?;
            }
            let mut response_intervention = tx.intervention();
            if response_intervention.is_none() {
                // SAFETY: as above.
                unsafe {
                    if !response.body.is_empty() {
                        step(
                            "the response body",
                            sys::msc_append_response_body(t, response.body.as_ptr(), response.body.len()),
                        )?;
                    }
                    step("the response body", sys::msc_process_response_body(t))?;
                }
                response_intervention = tx.intervention();
            }
            answered = Some(response_intervention);
        }
        drop(tx);
        let mut messages = *messages;
        let answered =
            answered.map(|intervention| Outcome { intervention, messages: messages.split_off(request_messages) });
        Ok((Outcome { intervention, messages }, answered))
    }
}

/// A live transaction, cleaned up when dropped.
struct Transaction(NonNull<sys::Transaction>);

impl Transaction {
    /// The pending disruptive action, if any (the library then clears it).
    #[allow(unsafe_code)]
    fn intervention(&self) -> Option<Intervention> {
        let mut it = sys::ModSecurityIntervention {
            status: 200,
            pause: 0,
            url: std::ptr::null_mut(),
            log: std::ptr::null_mut(),
            disruptive: 0,
        };
        // SAFETY: a live transaction and a valid out-parameter; the library
        // `strdup`s `url` and `log`, which `take_c_string` frees.
        let disruptive = unsafe { sys::msc_intervention(self.0.as_ptr(), &raw mut it) };
        let log = take_c_string(it.log);
        let _url = take_c_string(it.url);
        (disruptive != 0).then(|| Intervention { status: u16::try_from(it.status).unwrap_or(403), log })
    }
}

impl Drop for Transaction {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the transaction is live and dropped exactly once.
        unsafe { sys::msc_transaction_cleanup(self.0.as_ptr()) }
    }
}

impl Drop for Rules {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let _parser = PARSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: no transaction is alive (each lives inside one `inspect`
        // call, which borrows `self`); both are freed exactly once.
        unsafe {
            sys::msc_rules_cleanup(self.rules.as_ptr());
            sys::msc_cleanup(self.msc.as_ptr());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const RULES: &str = r#"SecRuleEngine On
SecRequestBodyAccess On
SecRule ARGS "@rx attack" "id:1,phase:2,deny,status:403,log,msg:'attack in %{MATCHED_VAR_NAME}'"
SecRule REQUEST_HEADERS:X-Note "@rx note" "id:2,phase:1,pass,log,msg:'noted'"
"#;

    fn request<'a>(uri: &'a str, headers: &'a [(&'a [u8], &'a [u8])], body: &'a [u8]) -> Request<'a> {
        Request { client_ip: "192.0.2.1", client_port: 4000, uri, method: "POST", version: "1.1", headers, body }
    }

    #[test]
    fn interventions_and_messages() {
        let rules = Rules::load(RULES).unwrap();
        assert!(rules.version().starts_with("ModSecurity v3"), "{}", rules.version());
        let headers: &[(&[u8], &[u8])] = &[
            (b"Host", b"x"),
            (b"X-Note", b"a note"),
            (b"Content-Type", b"application/x-www-form-urlencoded"),
            (b"Content-Length", b"8"),
        ];
        let outcome = rules.inspect(&request("/p?q=attack", headers, b"a=b&c=d")).unwrap();
        let it = outcome.intervention.unwrap();
        assert_eq!(it.status, 403);
        assert!(it.log.unwrap().contains("[id \"1\"]"));
        assert!(outcome.messages.iter().any(|m| m.contains("[id \"2\"]")), "{:?}", outcome.messages);
        let outcome = rules.inspect(&request("/p?q=fine", headers, b"a=attack")).unwrap();
        assert_eq!(outcome.intervention.map(|i| i.status), Some(403), "body inspected");
        let outcome = rules.inspect(&request("/p?q=fine", &[(b"Host", b"x")], b"")).unwrap();
        assert_eq!(outcome, Outcome::default());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_logged_lossily() {
        let rules = Rules::load(RULES).unwrap();
        let headers: &[(&[u8], &[u8])] = &[(b"X-Note", b"note \xff\xfe"), (b"X-\xffBad", b"\xc3")];
        let outcome = rules.inspect(&request("/%ff?%ff%c3=attack%ff", headers, b"")).unwrap();
        assert!(outcome.intervention.is_some());
    }

    #[test]
    fn rule_errors_are_reported_and_nul_bytes_refused() {
        let err = Rules::load("SecRule ARGS \"@rx a\" \"id:1,phase:2,nosuchaction\"").unwrap_err();
        assert!(err.0.contains("nosuchaction") || err.0.contains("Expecting an action"), "{err}");
        assert!(Rules::load("SecRuleEngine On\0").is_err());
        let rules = Rules::load(RULES).unwrap();
        assert!(rules.inspect(&request("/a\0b", &[], b"")).is_err());
    }

    #[test]
    fn shared_by_threads() {
        let rules = std::sync::Arc::new(Rules::load(RULES).unwrap());
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let rules = std::sync::Arc::clone(&rules);
                std::thread::spawn(move || {
                    for j in 0..50 {
                        let uri = if (i + j) % 2 == 0 { "/?q=attack" } else { "/?q=fine" };
                        let blocked =
                            rules.inspect(&request(uri, &[(b"Host", b"x")], b"")).unwrap().intervention.is_some();
                        assert_eq!(blocked, uri.contains("attack"));
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    }
}
