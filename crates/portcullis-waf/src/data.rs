//! What a request is made of, as ModSecurity v3's variables see it: the
//! request line split into `REQUEST_URI`, `REQUEST_FILENAME`,
//! `QUERY_STRING` …, arguments, headers and cookies, and what the body
//! processors extract.
//!
//! Decision rules (each as libmodsecurity 3 does it):
//! - `REQUEST_URI` and `REQUEST_FILENAME` are percent-decoded (`%XX` only,
//!   `+` stays); the path ends at the first `?` of the decoded URI;
//!   `QUERY_STRING` is the raw text after the first raw `?`.
//! - Arguments split at `&`, then at the first `=`; names and values are
//!   URL-decoded (`+` is a space, a malformed `%` is kept).
//! - Cookies split at `;`, names trimmed on the left, nothing decoded; a
//!   cookie without a name is dropped.
//! - Bodies: URL-encoded and multipart by content type, JSON and XML when
//!   a rule selects the processor (`ctl:requestBodyProcessor`). A body its
//!   processor cannot read sets `REQBODY_ERROR`.

use std::net::IpAddr;

use crate::transform::{hex_value, url_decode};

/// One request, as the embedding server hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The request target as sent: path and query.
    pub uri: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: &'a str,
    /// Headers in order, names as received.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body (or the part of it inspected).
    pub body: &'a [u8],
    /// Whether `body` is all of it: a prefix is not parsed as a JSON or XML
    /// document (it cannot be one), only inspected as raw `REQUEST_BODY`
    /// and, when URL-encoded or multipart, for the arguments it holds.
    pub body_complete: bool,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The client's port.
    pub client_port: u16,
}

/// A response, as the upstream sent it.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// Its status code.
    pub status: u16,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: &'a str,
    /// Headers in order, names as received.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body inspected as `RESPONSE_BODY` (or the first part of it);
    /// `None` when the body is not inspected (ModSecurity's
    /// `SecResponseBodyMimeType` leaves it out), so phase 4 sees no body.
    pub body: Option<&'a [u8]>,
}

/// A named value of a collection.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key (argument, header or cookie name).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The value's id: what the engine works out about a value (its
    /// transformations, which regex-set members match) is kept by id, and
    /// short values with the same bytes share one.
    pub id: u32,
    /// The key's id, likewise.
    pub key_id: u32,
}

/// Values up to this long share an id with every value of the same bytes
/// in the transaction (longer ones are rarely repeated, and not copied).
const SHARED_LONGEST: usize = 256;

/// Which body processor reads the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProcessor {
    /// `application/x-www-form-urlencoded`
    UrlEncoded,
    /// `multipart/form-data`
    Multipart,
    /// JSON (selected by a rule)
    Json,
    /// XML (selected by a rule)
    Xml,
}

impl BodyProcessor {
    /// The name `REQBODY_PROCESSOR` shows.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::UrlEncoded => "URLENCODED",
            Self::Multipart => "MULTIPART",
            Self::Json => "JSON",
            Self::Xml => "XML",
        }
    }

    /// From `ctl:requestBodyProcessor=…`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "URLENCODED" => Self::UrlEncoded,
            "MULTIPART" => Self::Multipart,
            "JSON" => Self::Json,
            "XML" => Self::Xml,
            _ => return None,
        })
    }
}

/// Longest nesting a JSON body may have before it is a body error.
pub const JSON_MAX_DEPTH: usize = 64;
/// Most values a JSON or XML body may yield before it is a body error.
pub const MAX_VALUES: usize = 4096;

/// Every request variable of one transaction.
#[derive(Debug, Default)]
pub struct Data {
    pub(crate) args_get: Vec<Entry>,
    pub(crate) args_post: Vec<Entry>,
    pub(crate) headers: Vec<Entry>,
    pub(crate) cookies: Vec<Entry>,
    /// `FILES`: part name → file name.
    pub(crate) files: Vec<Entry>,
    /// `FILES_SIZES`: part name → size.
    pub(crate) files_sizes: Vec<Entry>,
    /// `MULTIPART_PART_HEADERS`: part name → header line.
    pub(crate) part_headers: Vec<Entry>,
    /// `MULTIPART_*` flags by name (`MULTIPART_STRICT_ERROR`, …).
    pub(crate) multipart_flags: Vec<(&'static str, bool)>,
    pub(crate) xml_text: Option<Entry>,
    pub(crate) xml_attributes: Vec<Entry>,
    pub(crate) scalars: Vec<(Scalar, Entry)>,
    pub(crate) body_processor: Option<BodyProcessor>,
    pub(crate) body_error: Option<String>,
    /// `RESPONSE_HEADERS`
    pub(crate) response_headers: Vec<Entry>,
    /// `RESPONSE_STATUS`, `RESPONSE_PROTOCOL`, `RESPONSE_BODY`, …
    pub(crate) response_scalars: Vec<(ResponseScalar, Entry)>,
    next_id: u32,
    /// Ids of the short byte strings seen so far.
    ids: hashbrown::HashMap<Vec<u8>, u32>,
}

/// Single-valued response variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseScalar {
    /// `RESPONSE_STATUS`
    Status,
    /// `RESPONSE_PROTOCOL`
    Protocol,
    /// `RESPONSE_BODY`
    Body,
    /// `RESPONSE_CONTENT_TYPE`
    ContentType,
    /// `RESPONSE_CONTENT_LENGTH`
    ContentLength,
}

/// Single-valued request variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    /// `REQUEST_METHOD`
    Method,
    /// `REQUEST_PROTOCOL`
    Protocol,
    /// `REQUEST_LINE`
    Line,
    /// `REQUEST_URI`
    Uri,
    /// `REQUEST_URI_RAW`
    UriRaw,
    /// `REQUEST_FILENAME`
    Filename,
    /// `REQUEST_BASENAME`
    Basename,
    /// `QUERY_STRING`
    QueryString,
    /// `REQUEST_BODY`
    Body,
    /// `REQUEST_BODY_LENGTH`
    BodyLength,
    /// `REMOTE_ADDR`
    RemoteAddr,
    /// `REMOTE_PORT`
    RemotePort,
}

impl Data {
    fn entry(&mut self, key: Vec<u8>, value: Vec<u8>) -> Entry {
        let id = self.id_of(&value);
        let key_id = self.id_of(&key);
        Entry { key, value, id, key_id }
    }

    /// The id of `bytes`: a short string seen before keeps its id.
    fn id_of(&mut self, bytes: &[u8]) -> u32 {
        if bytes.len() > SHARED_LONGEST {
            self.next_id += 1;
            return self.next_id;
        }
        let next = self.next_id + 1;
        let id = *self.ids.entry_ref(bytes).or_insert(next);
        self.next_id = self.next_id.max(id);
        id
    }

    fn scalar(&mut self, which: Scalar, value: Vec<u8>) {
        let entry = self.entry(Vec::new(), value);
        self.scalars.retain(|(s, _)| *s != which);
        self.scalars.push((which, entry));
    }

    /// A single-valued variable, if set.
    #[must_use]
    pub fn get(&self, which: Scalar) -> Option<&Entry> {
        self.scalars.iter().find(|(s, _)| *s == which).map(|(_, e)| e)
    }

    /// Phase 1's view: request line, URI, query arguments, headers, cookies.
    #[must_use]
    pub fn from_request(request: &Request<'_>) -> Self {
        // Sized for an ordinary request's distinct short strings (line,
        // headers, cookies, arguments, their names), so the map does not
        // grow value by value.
        let mut data = Self { ids: hashbrown::HashMap::with_capacity(96), ..Self::default() };
        let uri = request.uri.as_bytes();
        let decoded = uri_decode(uri);
        data.scalar(Scalar::Method, request.method.as_bytes().to_vec());
        data.scalar(Scalar::Protocol, request.protocol.as_bytes().to_vec());
        data.scalar(Scalar::Line, format!("{} {} {}", request.method, request.uri, request.protocol).into_bytes());
        data.scalar(Scalar::UriRaw, uri.to_vec());
        let path_end = memchr::memchr(b'?', &decoded).unwrap_or(decoded.len());
        let path = decoded[..path_end].to_vec();
        if let Some(at) = path.iter().rposition(|&b| b == b'/' || b == b'\\')
            && at + 1 < path.len()
        {
            data.scalar(Scalar::Basename, path[at + 1..].to_vec());
        }
        data.scalar(Scalar::Filename, path);
        data.scalar(Scalar::Uri, strip_authority(decoded));
        if let Some(at) = memchr::memchr(b'?', uri) {
            let query = uri[at + 1..].to_vec();
            data.args_get = data.arguments(&query);
            data.scalar(Scalar::QueryString, query);
        }
        data.scalar(Scalar::RemoteAddr, request.client_ip.to_string().into_bytes());
        data.scalar(Scalar::RemotePort, request.client_port.to_string().into_bytes());
        for (name, value) in request.headers {
            let entry = data.entry(name.as_bytes().to_vec(), value.to_vec());
            data.headers.push(entry);
            if name.eq_ignore_ascii_case("cookie") {
                data.add_cookies(value);
            }
        }
        data
    }

    /// Phases 3 and 4's view: status, headers and the body inspected.
    /// `RESPONSE_CONTENT_LENGTH` is the body's length when it is
    /// inspected, else the `Content-Length` header's.
    pub fn add_response(&mut self, response: &Response<'_>) {
        let add = |data: &mut Self, which: ResponseScalar, value: Vec<u8>| {
            let entry = data.entry(Vec::new(), value);
            data.response_scalars.push((which, entry));
        };
        add(self, ResponseScalar::Status, response.status.to_string().into_bytes());
        add(self, ResponseScalar::Protocol, response.protocol.as_bytes().to_vec());
        let mut content_type = None;
        let mut content_length = None;
        for (name, value) in response.headers {
            if name.eq_ignore_ascii_case("content-type") && content_type.is_none() {
                content_type = Some(value.to_vec());
            }
            if name.eq_ignore_ascii_case("content-length") && content_length.is_none() {
                content_length = Some(value.to_vec());
            }
            let entry = self.entry(name.as_bytes().to_vec(), value.to_vec());
            self.response_headers.push(entry);
        }
        if let Some(value) = content_type {
            add(self, ResponseScalar::ContentType, value);
        }
        if let Some(body) = response.body {
            add(self, ResponseScalar::Body, body.to_vec());
            content_length = Some(body.len().to_string().into_bytes());
        }
        if let Some(value) = content_length {
            add(self, ResponseScalar::ContentLength, value);
        }
    }

    /// A single-valued response variable, if set.
    #[must_use]
    pub fn response(&self, which: ResponseScalar) -> Option<&Entry> {
        self.response_scalars.iter().find(|(s, _)| *s == which).map(|(_, e)| e)
    }

    /// The first header called `name`.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.key.eq_ignore_ascii_case(name.as_bytes())).map(|h| h.value.as_slice())
    }

    fn add_cookies(&mut self, value: &[u8]) {
        let mut pairs: Vec<&[u8]> = value.split(|&b| b == b';').collect();
        if let Some(last) = pairs.last_mut() {
            while let Some((&b, rest)) = last.split_last() {
                if !crate::transform::is_space(b) {
                    break;
                }
                *last = rest;
            }
        }
        for pair in pairs {
            if pair.is_empty() {
                continue;
            }
            let (mut key, value) = match memchr::memchr(b'=', pair) {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            while let Some((&b, rest)) = key.split_first() {
                if !crate::transform::is_space(b) {
                    break;
                }
                key = rest;
            }
            if key.is_empty() {
                continue;
            }
            let entry = self.entry(key.to_vec(), value.to_vec());
            self.cookies.push(entry);
        }
    }

    /// `a=1&b=2`, URL-decoded.
    fn arguments(&mut self, text: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        if text.is_empty() {
            return out;
        }
        let mut pieces: Vec<&[u8]> = text.split(|&b| b == b'&').collect();
        // `std::getline` yields no empty piece after a trailing separator.
        if pieces.last().is_some_and(|p| p.is_empty()) {
            pieces.pop();
        }
        for piece in pieces {
            let (key, value) = match memchr::memchr(b'=', piece) {
                Some(at) => (&piece[..at], &piece[at + 1..]),
                None => (piece, &b""[..]),
            };
            // `+` is a space, `%XX` a byte, a malformed `%` kept.
            let key = url_decode(key, false);
            let value = url_decode(value, false);
            let entry = self.entry(key, value);
            out.push(entry);
        }
        out
    }

    /// Phase 2's view: the body, read by its processor.
    pub fn add_body(&mut self, body: &[u8], processor: Option<BodyProcessor>, content_type: Option<&[u8]>) {
        self.scalar(Scalar::Body, body.to_vec());
        self.scalar(Scalar::BodyLength, body.len().to_string().into_bytes());
        let processor = processor.or_else(|| default_processor(content_type));
        self.body_processor = processor;
        // An empty body has nothing for a processor to read, except that an
        // XML document must have a root element.
        if body.is_empty() && processor != Some(BodyProcessor::Xml) {
            return;
        }
        match processor {
            None => {}
            Some(BodyProcessor::UrlEncoded) => {
                let args = self.arguments(body);
                self.args_post = args;
            }
            Some(BodyProcessor::Json) => match crate::body::json(body) {
                Ok(pairs) => {
                    for (key, value) in pairs {
                        let entry = self.entry(key, value);
                        self.args_post.push(entry);
                    }
                }
                Err(message) => self.body_error = Some(message),
            },
            Some(BodyProcessor::Xml) => match crate::body::xml(body) {
                Ok(doc) => {
                    let text = self.entry(b"/*".to_vec(), doc.text);
                    self.xml_text = Some(text);
                    for value in doc.attributes {
                        let entry = self.entry(b"//@*".to_vec(), value);
                        self.xml_attributes.push(entry);
                    }
                }
                Err(message) => self.body_error = Some(message),
            },
            Some(BodyProcessor::Multipart) => {
                let boundary = content_type.and_then(crate::body::boundary);
                let parsed = crate::body::multipart(body, boundary.as_ref().map(|b| b.value.as_slice()));
                let mut flags = parsed.flags;
                if let Some(b) = &boundary {
                    flags.push(("MULTIPART_BOUNDARY_QUOTED", b.quoted));
                    flags.push(("MULTIPART_BOUNDARY_WHITESPACE", b.whitespace));
                }
                for part in parsed.parts {
                    for line in part.headers {
                        let entry = self.entry(part.name.clone(), line);
                        self.part_headers.push(entry);
                    }
                    match part.filename {
                        Some(filename) => {
                            let entry = self.entry(part.name.clone(), filename);
                            self.files.push(entry);
                            let entry = self.entry(part.name.clone(), part.value.len().to_string().into_bytes());
                            self.files_sizes.push(entry);
                        }
                        None => {
                            let entry = self.entry(part.name, part.value);
                            self.args_post.push(entry);
                        }
                    }
                }
                if let Some(message) = parsed.error {
                    self.body_error = Some(message);
                }
                let strict = flags.iter().any(|(name, set)| *set && STRICT_FLAGS.contains(name));
                flags.push(("MULTIPART_STRICT_ERROR", strict || self.body_error.is_some()));
                self.multipart_flags = flags;
            }
        }
    }

    /// A `MULTIPART_*` flag (0 or 1).
    #[must_use]
    pub fn multipart_flag(&self, name: &str) -> bool {
        self.multipart_flags.iter().any(|(n, set)| *set && n.eq_ignore_ascii_case(name))
    }
}

/// The processor a content type selects on its own (URL-encoded and
/// multipart; JSON and XML only when a rule asks).
#[must_use]
pub fn default_processor(content_type: Option<&[u8]>) -> Option<BodyProcessor> {
    let ct = content_type?.to_ascii_lowercase();
    if ct.starts_with(b"application/x-www-form-urlencoded") {
        Some(BodyProcessor::UrlEncoded)
    } else if ct.starts_with(b"multipart/form-data") {
        Some(BodyProcessor::Multipart)
    } else {
        None
    }
}

/// The flags `MULTIPART_STRICT_ERROR` sums up.
const STRICT_FLAGS: &[&str] = &[
    "MULTIPART_BOUNDARY_QUOTED",
    "MULTIPART_BOUNDARY_WHITESPACE",
    "MULTIPART_DATA_BEFORE",
    "MULTIPART_DATA_AFTER",
    "MULTIPART_HEADER_FOLDING",
    "MULTIPART_LF_LINE",
    "MULTIPART_MISSING_SEMICOLON",
    "MULTIPART_INVALID_QUOTING",
    "MULTIPART_INVALID_PART",
    "MULTIPART_INVALID_HEADER_FOLDING",
    "MULTIPART_FILE_LIMIT_EXCEEDED",
    "MULTIPART_UNMATCHED_BOUNDARY",
];

/// `%XX` decoding only (ModSecurity's `uri_decode`).
fn uri_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && i + 2 < input.len()
            && let (Some(h), Some(l)) = (hex_value(input[i + 1]), hex_value(input[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// An absolute-form target keeps only its path.
fn strip_authority(decoded: Vec<u8>) -> Vec<u8> {
    if decoded.first().is_none_or(|&b| b == b'/') {
        return decoded;
    }
    let Some(colon) = memchr::memchr(b':', &decoded) else { return decoded };
    let from = colon + 3;
    if from > decoded.len() {
        return decoded;
    }
    match memchr::memchr(b'/', &decoded[from..]) {
        Some(at) => decoded[from + at..].to_vec(),
        None => decoded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(uri: &'a str, headers: &'a [(&'a str, &'a [u8])]) -> Request<'a> {
        Request {
            method: "GET",
            uri,
            protocol: "HTTP/1.1",
            headers,
            body: b"",
            body_complete: true,
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            client_port: 5000,
        }
    }

    #[test]
    fn the_request_line_splits_as_modsecurity_splits_it() {
        let headers: &[(&str, &[u8])] = &[("Cookie", b"a=1; =x;  b = 2 ;c"), ("Host", b"h")];
        let data = Data::from_request(&request("/p%2Fa%3Fth/x.php?q=1+2&r=%zz&s&", headers));
        let get = |s| String::from_utf8_lossy(&data.get(s).unwrap().value).into_owned();
        assert_eq!(get(Scalar::Filename), "/p/a");
        assert_eq!(get(Scalar::Uri), "/p/a?th/x.php?q=1+2&r=%zz&s&");
        assert_eq!(get(Scalar::QueryString), "q=1+2&r=%zz&s&");
        assert_eq!(get(Scalar::Line), "GET /p%2Fa%3Fth/x.php?q=1+2&r=%zz&s& HTTP/1.1");
        let args: Vec<(String, String)> = data
            .args_get
            .iter()
            .map(|e| (String::from_utf8_lossy(&e.key).into_owned(), String::from_utf8_lossy(&e.value).into_owned()))
            .collect();
        assert_eq!(args, [("q".into(), "1 2".into()), ("r".into(), "%zz".into()), ("s".into(), String::new())]);
        let cookies: Vec<(&[u8], &[u8])> = data.cookies.iter().map(|e| (&e.key[..], &e.value[..])).collect();
        assert_eq!(cookies, [(&b"a"[..], &b"1"[..]), (b"b ", b" 2 "), (b"c", b"")]);
        assert_eq!(data.header("host"), Some(&b"h"[..]));
    }
}
