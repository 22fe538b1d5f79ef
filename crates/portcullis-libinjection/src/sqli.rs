//! SQL injection detection: libinjection 3.9.2's tokenizer, folding and
//! fingerprint check, byte for byte.
//!
//! An input is read as the start of an SQL fragment in up to five ways, each
//! giving a fingerprint (the types of its first five folded tokens, `s&1c`):
//! as it is (ANSI comments, then MySQL comments if it has `--x` or `#`),
//! then, if it contains `'`, as if it followed a `'` (ANSI, then MySQL), and,
//! if it contains `"`, as if it followed a `"` (MySQL). The first fingerprint
//! that is in the table of ~8,400 known injections and that survives the
//! false-positive rules of `not_whitelist` is the answer.
//!
//! Decision rules kept from the C code, including its quirks (they decide
//! real inputs):
//! - Token values are cut at 31 bytes; only words shorter than 32 bytes are
//!   looked up as keywords, case-insensitively (ASCII `a`-`z` only).
//! - `1e`, `1.e`, `1.5E+` are barewords, not numbers.
//! - `[` starts a bracketed word (`[col]`) in every mode; `/*!` and nested
//!   `/*` comments make the whole input "evil" (`X`).
//! - NUL and `\xa0` are white space; bytes above `\x7f` are word characters.

use std::fmt;

use crate::data::{FINGERPRINTS, KEYWORDS};

/// Token types (the characters of a fingerprint).
mod kind {
    pub(super) const NONE: u8 = 0;
    pub(super) const KEYWORD: u8 = b'k';
    pub(super) const UNION: u8 = b'U';
    pub(super) const GROUP: u8 = b'B';
    pub(super) const EXPRESSION: u8 = b'E';
    pub(super) const SQLTYPE: u8 = b't';
    pub(super) const FUNCTION: u8 = b'f';
    pub(super) const BAREWORD: u8 = b'n';
    pub(super) const NUMBER: u8 = b'1';
    pub(super) const VARIABLE: u8 = b'v';
    pub(super) const STRING: u8 = b's';
    pub(super) const OPERATOR: u8 = b'o';
    pub(super) const LOGIC_OPERATOR: u8 = b'&';
    pub(super) const COMMENT: u8 = b'c';
    pub(super) const COLLATE: u8 = b'A';
    pub(super) const LEFTPARENS: u8 = b'(';
    pub(super) const RIGHTPARENS: u8 = b')';
    pub(super) const LEFTBRACE: u8 = b'{';
    pub(super) const RIGHTBRACE: u8 = b'}';
    pub(super) const DOT: u8 = b'.';
    pub(super) const COMMA: u8 = b',';
    pub(super) const COLON: u8 = b':';
    pub(super) const SEMICOLON: u8 = b';';
    pub(super) const TSQL: u8 = b'T';
    pub(super) const UNKNOWN: u8 = b'?';
    pub(super) const EVIL: u8 = b'X';
    pub(super) const FINGERPRINT: u8 = b'F';
    pub(super) const BACKSLASH: u8 = b'\\';
}

/// Bytes a token value keeps (C: `char val[32]`, NUL included).
const TOKEN_SIZE: usize = 32;
/// Tokens in a fingerprint.
const MAX_TOKENS: usize = 5;

const CHAR_SINGLE: u8 = b'\'';
const CHAR_DOUBLE: u8 = b'"';
const CHAR_TICK: u8 = b'`';

/// How the tokenizer reads an input: where it starts (plain, or inside a
/// `'` or `"` string) and which comment syntax it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(u32);

impl Flags {
    /// Read the input as it is.
    pub const QUOTE_NONE: Self = Self(1);
    /// Read the input as if it followed a `'`.
    pub const QUOTE_SINGLE: Self = Self(2);
    /// Read the input as if it followed a `"`.
    pub const QUOTE_DOUBLE: Self = Self(4);
    /// ANSI SQL: `--x` is a comment, `#` an operator.
    pub const SQL_ANSI: Self = Self(8);
    /// MySQL: `--x` is two operators, `#` starts a comment.
    pub const SQL_MYSQL: Self = Self(16);

    /// The C library's bit value (`FLAG_*`).
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Both sets of flags.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    const fn has(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

/// One SQL token (C: `stoken_t`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pos: usize,
    len: usize,
    count: i32,
    kind: u8,
    str_open: u8,
    str_close: u8,
    val: [u8; TOKEN_SIZE],
}

const EMPTY: Token = Token { pos: 0, len: 0, count: 0, kind: 0, str_open: 0, str_close: 0, val: [0; TOKEN_SIZE] };

impl Token {
    /// The token type: one fingerprint character (`s`, `1`, `n`, `k`, `(`...).
    #[must_use]
    pub fn kind(&self) -> u8 {
        self.kind
    }

    /// Offset of the token's value in the input.
    #[must_use]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Length of the token's value (at most 31: longer values are cut).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the value is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// For a variable, the number of `@` before its name (1 or 2).
    #[must_use]
    pub fn count(&self) -> i32 {
        self.count
    }

    /// The quote that opened a string (`'`, `"`, `` ` ``, `q`, `u`, `$`), or 0.
    #[must_use]
    pub fn str_open(&self) -> u8 {
        self.str_open
    }

    /// The quote that closed a string, or 0 if it ran to the end of the input.
    #[must_use]
    pub fn str_close(&self) -> u8 {
        self.str_close
    }

    /// The value as the C library's NUL-terminated `val` reads: up to 31
    /// bytes, ending at the first NUL.
    #[must_use]
    pub fn value(&self) -> &[u8] {
        let end = self.val.iter().position(|b| *b == 0).unwrap_or(TOKEN_SIZE);
        &self.val[..end]
    }

    /// C `st_assign`: the value is cut to 31 bytes.
    fn assign(&mut self, kind: u8, pos: usize, len: usize, value: &[u8]) {
        let last = len.min(TOKEN_SIZE - 1).min(value.len());
        self.kind = kind;
        self.pos = pos;
        self.len = last;
        self.val[..last].copy_from_slice(&value[..last]);
        self.val[last] = 0;
    }

    fn assign_char(&mut self, kind: u8, pos: usize, value: u8) {
        self.kind = kind;
        self.pos = pos;
        self.len = 1;
        self.val[0] = value;
        self.val[1] = 0;
    }

    /// `val` compared with an upper-case word, C `cstrcasecmp(word, val, len) == 0`.
    fn is(&self, word: &[u8]) -> bool {
        let value = &self.val[..self.len.min(TOKEN_SIZE)];
        value.len() == word.len() && value.iter().zip(word).all(|(v, w)| upper(*v) == *w)
    }

    fn is_unary_op(&self) -> bool {
        if self.kind != kind::OPERATOR {
            return false;
        }
        match self.len {
            1 => matches!(self.val[0], b'+' | b'-' | b'!' | b'~'),
            2 => self.val[0] == b'!' && self.val[1] == b'!',
            3 => self.is(b"NOT"),
            _ => false,
        }
    }

    fn is_arithmetic_op(&self) -> bool {
        self.kind == kind::OPERATOR && self.len == 1 && matches!(self.val[0], b'*' | b'/' | b'-' | b'+' | b'%')
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("kind", &char::from(self.kind))
            .field("pos", &self.pos)
            .field("len", &self.len)
            .field("value", &String::from_utf8_lossy(self.value()))
            .finish_non_exhaustive()
    }
}

/// A SQL injection fingerprint: the types of up to five folded tokens.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    bytes: [u8; 8],
    len: u8,
}

impl Fingerprint {
    /// The fingerprint, e.g. `s&sos` (token types are ASCII).
    #[must_use]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The fingerprint's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.as_str())
    }
}

fn upper(b: u8) -> u8 {
    if b.is_ascii_lowercase() { b - 0x20 } else { b }
}

/// The keyword table's type for `word` (C `libinjection_sqli_lookup_word`
/// with `LOOKUP_WORD`): ASCII case-insensitive, `0` + a fingerprint gives
/// `F`, anything else 0.
#[must_use]
pub fn lookup_word(word: &[u8]) -> u8 {
    let mut buf = [0u8; TOKEN_SIZE + 8];
    let Some(key) = buf.get_mut(..word.len()) else {
        return kind::NONE;
    };
    for (k, w) in key.iter_mut().zip(word) {
        *k = upper(*w);
    }
    if let Some(kind) = keyword(key) {
        return kind;
    }
    match key.split_first() {
        Some((b'0', fingerprint)) if is_fingerprint(fingerprint) => kind::FINGERPRINT,
        _ => kind::NONE,
    }
}

/// FNV-1a, for the tables' open addressing.
const fn hash(bytes: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    h as usize
}

const KEYWORD_SLOTS: usize = 4096;
const FINGERPRINT_SLOTS: usize = 32768;

/// Hash tables over the sorted `data` tables, built at compile time: slot
/// = 1 + the entry's index, 0 = empty (linear probing). A look-up is one
/// hash and, almost always, one comparison.
static KEYWORD_INDEX: [u16; KEYWORD_SLOTS] = {
    let mut table = [0u16; KEYWORD_SLOTS];
    let mut i = 0;
    while i < KEYWORDS.len() {
        let mut slot = hash(KEYWORDS[i].0) % KEYWORD_SLOTS;
        while table[slot] != 0 {
            slot = (slot + 1) % KEYWORD_SLOTS;
        }
        table[slot] = (i + 1) as u16;
        i += 1;
    }
    table
};

static FINGERPRINT_INDEX: [u16; FINGERPRINT_SLOTS] = {
    let mut table = [0u16; FINGERPRINT_SLOTS];
    let mut i = 0;
    while i < FINGERPRINTS.len() {
        let mut slot = hash(FINGERPRINTS[i]) % FINGERPRINT_SLOTS;
        while table[slot] != 0 {
            slot = (slot + 1) % FINGERPRINT_SLOTS;
        }
        table[slot] = (i + 1) as u16;
        i += 1;
    }
    table
};

/// The type of an upper-case keyword.
fn keyword(key: &[u8]) -> Option<u8> {
    let mut slot = hash(key) % KEYWORD_SLOTS;
    loop {
        let (word, kind) = KEYWORDS.get(usize::from(KEYWORD_INDEX[slot]).checked_sub(1)?)?;
        if *word == key {
            return Some(*kind);
        }
        slot = (slot + 1) % KEYWORD_SLOTS;
    }
}

/// Whether an upper-case fingerprint is a known injection.
fn is_fingerprint(key: &[u8]) -> bool {
    let mut slot = hash(key) % FINGERPRINT_SLOTS;
    loop {
        let Some(fingerprint) = usize::from(FINGERPRINT_INDEX[slot]).checked_sub(1).and_then(|i| FINGERPRINTS.get(i))
        else {
            return false;
        };
        if *fingerprint == key {
            return true;
        }
        slot = (slot + 1) % FINGERPRINT_SLOTS;
    }
}

/// The input byte at `i`, or 0 past the end (where the C code reads a
/// byte past its input only after checking, this mirrors its NUL).
fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

/// C `char_is_white`: `strchr(" \t\n\v\f\r\240", ch)`, which also finds NUL.
fn is_white(ch: u8) -> bool {
    matches!(ch, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0 | 0)
}

/// Bytes that end a word (C `parse_word`'s `strlencspn` set, NUL included).
fn ends_word(ch: u8) -> bool {
    matches!(
        ch,
        b' ' | b'['
            | b']'
            | b'{'
            | b'}'
            | b'<'
            | b'>'
            | b':'
            | b'\\'
            | b'?'
            | b'='
            | b'@'
            | b'!'
            | b'#'
            | b'~'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'&'
            | b'|'
            | b'^'
            | b'%'
            | b'('
            | b')'
            | b','
            | b'\''
            | b';'
            | b'\t'
            | b'\n'
            | 0x0b
            | 0x0c
            | b'\r'
            | b'"'
            | 0xa0
            | 0
    )
}

/// Bytes that end a variable name (C `parse_var`'s set, NUL included).
fn ends_var(ch: u8) -> bool {
    matches!(
        ch,
        b' ' | b'<'
            | b'>'
            | b':'
            | b'\\'
            | b'?'
            | b'='
            | b'@'
            | b'!'
            | b'#'
            | b'~'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'&'
            | b'|'
            | b'^'
            | b'%'
            | b'('
            | b')'
            | b','
            | b'\''
            | b';'
            | b'\t'
            | b'\n'
            | 0x0b
            | 0x0c
            | b'\r'
            | b'`'
            | b'"'
            | 0
    )
}

/// C `strlenspn(s, len, accept)`: the run of accepted bytes (C's `strchr`
/// also accepts NUL).
fn span(s: &[u8], accept: impl Fn(u8) -> bool) -> usize {
    s.iter().position(|b| !(accept(*b) || *b == 0)).unwrap_or(s.len())
}

/// C `memchr2`: the first `c0 c1` pair.
fn find_pair(s: &[u8], c0: u8, c1: u8) -> Option<usize> {
    s.windows(2).position(|w| w[0] == c0 && w[1] == c1)
}

fn find(s: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || s.len() < needle.len() {
        return None;
    }
    s.windows(needle.len()).position(|w| w == needle)
}

/// Tokenizer and folding state (C `struct libinjection_sqli_state`), kept on
/// the stack: tokens are copied in place, nothing is allocated.
struct State<'a> {
    s: &'a [u8],
    flags: Flags,
    pos: usize,
    tokens: [Token; 8],
    current: usize,
    fingerprint: [u8; 8],
    stats_comment_ddx: u32,
    stats_comment_hash: u32,
    stats_tokens: u32,
}

impl<'a> State<'a> {
    fn new(s: &'a [u8], flags: Flags) -> Self {
        let flags = if flags.0 == 0 { Flags::QUOTE_NONE | Flags::SQL_ANSI } else { flags };
        Self {
            s,
            flags,
            pos: 0,
            tokens: [EMPTY; 8],
            current: 0,
            fingerprint: [0; 8],
            stats_comment_ddx: 0,
            stats_comment_hash: 0,
            stats_tokens: 0,
        }
    }

    fn cur(&mut self) -> &mut Token {
        &mut self.tokens[self.current]
    }

    /// C `libinjection_sqli_tokenize`: the next token into `tokens[current]`.
    fn tokenize(&mut self) -> bool {
        if self.s.is_empty() {
            return false;
        }
        *self.cur() = EMPTY;
        if self.pos == 0 && self.flags.has(Flags::QUOTE_SINGLE.union(Flags::QUOTE_DOUBLE)) {
            let delim = if self.flags.has(Flags::QUOTE_SINGLE) {
                CHAR_SINGLE
            } else if self.flags.has(Flags::QUOTE_DOUBLE) {
                CHAR_DOUBLE
            } else {
                0
            };
            self.pos = self.parse_string_core(0, delim, 0);
            self.stats_tokens += 1;
            return true;
        }
        while self.pos < self.s.len() {
            self.pos = self.parse_at(self.s[self.pos]);
            if self.tokens[self.current].kind != kind::NONE {
                self.stats_tokens += 1;
                return true;
            }
        }
        false
    }

    /// C `char_parse_map`.
    fn parse_at(&mut self, ch: u8) -> usize {
        match ch {
            0..=32 | 127 | 0xa0 => self.pos + 1,
            b'!' | b'&' | b'*' | b':' | b'<' | b'=' | b'>' | b'|' => self.parse_operator2(),
            b'"' | b'\'' => self.parse_string(),
            b'#' => self.parse_hash(),
            b'$' => self.parse_money(),
            b'%' | b'+' | b'^' | b'~' => self.parse_operator1(),
            b'(' | b')' | b',' | b';' | b'{' | b'}' => {
                let pos = self.pos;
                self.cur().assign_char(ch, pos, ch);
                pos + 1
            }
            b'-' => self.parse_dash(),
            b'.' | b'0'..=b'9' => self.parse_number(),
            b'/' => self.parse_slash(),
            b'?' | b']' => {
                let pos = self.pos;
                self.cur().assign_char(kind::UNKNOWN, pos, ch);
                pos + 1
            }
            b'@' => self.parse_var(),
            b'B' | b'b' => self.parse_bstring(),
            b'E' | b'e' => self.parse_estring(),
            b'N' | b'n' => self.parse_nqstring(),
            b'Q' | b'q' => self.parse_qstring_core(0),
            b'U' | b'u' => self.parse_ustring(),
            b'X' | b'x' => self.parse_xstring(),
            b'[' => self.parse_bword(),
            b'\\' => self.parse_backslash(),
            b'`' => self.parse_tick(),
            _ => self.parse_word(),
        }
    }

    fn parse_operator1(&mut self) -> usize {
        let pos = self.pos;
        let ch = self.s[pos];
        self.cur().assign_char(kind::OPERATOR, pos, ch);
        pos + 1
    }

    fn parse_eol_comment(&mut self) -> usize {
        let (s, pos) = (self.s, self.pos);
        match s[pos..].iter().position(|b| *b == b'\n') {
            None => {
                self.cur().assign(kind::COMMENT, pos, s.len() - pos, &s[pos..]);
                s.len()
            }
            Some(n) => {
                self.cur().assign(kind::COMMENT, pos, n, &s[pos..]);
                pos + n + 1
            }
        }
    }

    fn parse_hash(&mut self) -> usize {
        self.stats_comment_hash += 1;
        if self.flags.has(Flags::SQL_MYSQL) {
            self.stats_comment_hash += 1;
            self.parse_eol_comment()
        } else {
            let pos = self.pos;
            self.cur().assign_char(kind::OPERATOR, pos, b'#');
            pos + 1
        }
    }

    fn parse_dash(&mut self) -> usize {
        let (s, pos) = (self.s, self.pos);
        let slen = s.len();
        // `--` then white space or the end: a comment in every dialect.
        if (pos + 2 < slen && s[pos + 1] == b'-' && is_white(s[pos + 2])) || (pos + 2 == slen && s[pos + 1] == b'-') {
            self.parse_eol_comment()
        } else if pos + 1 < slen && s[pos + 1] == b'-' && self.flags.has(Flags::SQL_ANSI) {
            self.stats_comment_ddx += 1;
            self.parse_eol_comment()
        } else {
            self.cur().assign_char(kind::OPERATOR, pos, b'-');
            pos + 1
        }
    }

    fn parse_slash(&mut self) -> usize {
        let (s, pos) = (self.s, self.pos);
        let slen = s.len();
        if pos + 1 == slen || s[pos + 1] != b'*' {
            return self.parse_operator1();
        }
        let end = find_pair(&s[pos + 2..], b'*', b'/');
        let clen = end.map_or(slen - pos, |n| n + 4);
        // A `/*` inside the comment (PostgreSQL nests them) or a MySQL
        // `/*!` conditional comment: unparsable, so evil.
        let nested = end.is_some_and(|n| find_pair(&s[pos + 2..pos + 3 + n], b'/', b'*').is_some());
        let mysql = pos + 2 < slen && s[pos + 2] == b'!';
        let ctype = if nested || mysql { kind::EVIL } else { kind::COMMENT };
        self.cur().assign(ctype, pos, clen, &s[pos..]);
        pos + clen
    }

    fn parse_backslash(&mut self) -> usize {
        let (s, pos) = (self.s, self.pos);
        if pos + 1 < s.len() && s[pos + 1] == b'N' {
            // MySQL's `\N`, an alias of NULL.
            self.cur().assign(kind::NUMBER, pos, 2, &s[pos..]);
            pos + 2
        } else {
            self.cur().assign_char(kind::BACKSLASH, pos, s[pos]);
            pos + 1
        }
    }

    fn parse_operator2(&mut self) -> usize {
        let (s, pos) = (self.s, self.pos);
        let slen = s.len();
        if pos + 1 >= slen {
            return self.parse_operator1();
        }
        if pos + 2 < slen && s[pos] == b'<' && s[pos + 1] == b'=' && s[pos + 2] == b'>' {
            self.cur().assign(kind::OPERATOR, pos, 3, &s[pos..]);
            return pos + 3;
        }
        let ch = lookup_word(&s[pos..pos + 2]);
        if ch != kind::NONE {
            self.cur().assign(ch, pos, 2, &s[pos..]);
            return pos + 2;
        }
        if s[pos] == b':' {
            self.cur().assign(kind::COLON, pos, 1, &s[pos..]);
            pos + 1
        } else {
            self.parse_operator1()
        }
    }

    /// C `parse_string_core`: a string from `pos + offset` to the first
    /// `delim` not escaped by an odd run of backslashes or doubled.
    fn parse_string_core(&mut self, pos: usize, delim: u8, offset: usize) -> usize {
        let s = self.s;
        let start = pos + offset;
        let token = &mut self.tokens[self.current];
        token.str_open = if offset > 0 { delim } else { 0 };
        let mut search = start;
        loop {
            let Some(q) = s.get(search..).and_then(|rest| rest.iter().position(|b| *b == delim)).map(|n| search + n)
            else {
                token.assign(kind::STRING, start, s.len().saturating_sub(start), s.get(start..).unwrap_or(&[]));
                token.str_close = 0;
                return s.len();
            };
            let backslashes = s[start..q].iter().rev().take_while(|b| **b == b'\\').count();
            if backslashes % 2 == 1 {
                search = q + 1;
            } else if q + 1 < s.len() && s[q + 1] == s[q] {
                search = q + 2;
            } else {
                token.assign(kind::STRING, start, q - start, &s[start..]);
                token.str_close = delim;
                return q + 1;
            }
        }
    }

    fn parse_string(&mut self) -> usize {
        let pos = self.pos;
        self.parse_string_core(pos, self.s[pos], 1)
    }

    /// `E'...'` (PostgreSQL) and `N'...'` (MySQL national).
    fn parse_estring(&mut self) -> usize {
        let (s, pos) = (self.s, self.pos);
        if pos + 2 >= s.len() || s[pos + 1] != CHAR_SINGLE {
            return self.parse_word();
        }
        self.parse_string_core(pos, CHAR_SINGLE, 2)
    }

    /// `U&'...'` (unicode strings).
    fn parse_ustring(&mut self) -> usize {
        let (s, pos) = (self.s, self.pos);
        if pos + 2 < s.len() && s[pos + 1] == b'&' && s[pos + 2] == b'\'' {
            self.pos += 2;
            let end = self.parse_string();
            let token = self.cur();
            token.str_open = b'u';
            if token.str_close == b'\'' {
                token.str_close = b'u';
            }
            end
        } else {
            self.parse_word()
        }
    }

    /// Oracle's `q'(...)'` (and `nq'...'`).
    fn parse_qstring_core(&mut self, offset: usize) -> usize {
        let s = self.s;
        let slen = s.len();
        let pos = self.pos + offset;
        if pos >= slen || (s[pos] != b'q' && s[pos] != b'Q') || pos + 2 >= slen || s[pos + 1] != b'\'' {
            return self.parse_word();
        }
        let mut ch = s[pos + 2];
        // C compares a signed char: bytes above 127 are below 33 too.
        if !(33..=127).contains(&ch) {
            return self.parse_word();
        }
        ch = match ch {
            b'(' => b')',
            b'[' => b']',
            b'{' => b'}',
            b'<' => b'>',
            other => other,
        };
        let body = pos + 3;
        let token = &mut self.tokens[self.current];
        match find_pair(&s[body..], ch, b'\'') {
            None => {
                token.assign(kind::STRING, body, slen - body, &s[body..]);
                token.str_open = b'q';
                token.str_close = 0;
                slen
            }
            Some(n) => {
                token.assign(kind::STRING, body, n, &s[body..]);
                token.str_open = b'q';
                token.str_close = b'q';
                body + n + 2
            }
        }
    }

    fn parse_nqstring(&mut self) -> usize {
        let (s, pos) = (self.s, self.pos);
        if pos + 2 < s.len() && s[pos + 1] == CHAR_SINGLE {
            return self.parse_estring();
        }
        self.parse_qstring_core(1)
    }

    /// `b'0101'` and `x'1f'` literals.
    fn parse_radix_string(&mut self, digit: fn(u8) -> bool) -> usize {
        let (s, pos) = (self.s, self.pos);
        let slen = s.len();
        if pos + 2 >= slen || s[pos + 1] != b'\'' {
            return self.parse_word();
        }
        let wlen = span(&s[pos + 2..], digit);
        if pos + 2 + wlen >= slen || s[pos + 2 + wlen] != b'\'' {
            return self.parse_word();
        }
        self.cur().assign(kind::NUMBER, pos, wlen + 3, &s[pos..]);
        pos + 2 + wlen + 1
    }

    fn parse_bstring(&mut self) -> usize {
        self.parse_radix_string(|b| b == b'0' || b == b'1')
    }

    fn parse_xstring(&mut self) -> usize {
        self.parse_radix_string(|b| b.is_ascii_hexdigit())
    }

    /// SQL Server's `[bracketed words]`.
    fn parse_bword(&mut self) -> usize {
        let (s, pos) = (self.s, self.pos);
        match s[pos..].iter().position(|b| *b == b']') {
            None => {
                self.cur().assign(kind::BAREWORD, pos, s.len() - pos, &s[pos..]);
                s.len()
            }
            Some(n) => {
                self.cur().assign(kind::BAREWORD, pos, n + 1, &s[pos..]);
                pos + n + 1
            }
        }
    }

    fn parse_word(&mut self) -> usize {
        let (s, pos) = (self.s, self.pos);
        let wlen = s[pos..].iter().position(|b| ends_word(*b)).unwrap_or(s.len() - pos);
        let token = &mut self.tokens[self.current];
        token.assign(kind::BAREWORD, pos, wlen, &s[pos..]);
        // `SELECT.1`, SELECT`col`: a keyword before `.` or a backtick ends the word.
        for i in 0..token.len {
            if token.val[i] == b'.' || token.val[i] == b'`' {
                let ch = lookup_word(&token.val[..i]);
                if ch != kind::NONE && ch != kind::BAREWORD {
                    *token = EMPTY;
                    token.assign(ch, pos, i, &s[pos..]);
                    return pos + i;
                }
            }
        }
        if wlen < TOKEN_SIZE {
            let ch = lookup_word(&token.val[..wlen]);
            token.kind = if ch == kind::NONE { kind::BAREWORD } else { ch };
        }
        pos + wlen
    }

    /// MySQL's `` `quoted names` ``: a bareword, or a function if the name is one.
    fn parse_tick(&mut self) -> usize {
        let pos = self.pos;
        let end = self.parse_string_core(pos, CHAR_TICK, 1);
        let token = self.cur();
        let ch = lookup_word(&token.val[..token.len]);
        token.kind = if ch == kind::FUNCTION { kind::FUNCTION } else { kind::BAREWORD };
        end
    }

    fn parse_var(&mut self) -> usize {
        let s = self.s;
        let slen = s.len();
        let mut pos = self.pos + 1;
        if pos < slen && s[pos] == b'@' {
            pos += 1;
            self.cur().count = 2;
        } else {
            self.cur().count = 1;
        }
        if pos < slen {
            if s[pos] == b'`' {
                self.pos = pos;
                let end = self.parse_tick();
                self.cur().kind = kind::VARIABLE;
                return end;
            } else if s[pos] == CHAR_SINGLE || s[pos] == CHAR_DOUBLE {
                self.pos = pos;
                let end = self.parse_string();
                self.cur().kind = kind::VARIABLE;
                return end;
            }
        }
        let xlen = s[pos.min(slen)..].iter().position(|b| ends_var(*b)).unwrap_or(slen.saturating_sub(pos));
        self.cur().assign(kind::VARIABLE, pos, xlen, s.get(pos..).unwrap_or(&[]));
        pos + xlen
    }

    /// `$1,000.00` money, PostgreSQL's `$$strings$$` and `$tag$strings$tag$`.
    fn parse_money(&mut self) -> usize {
        let (s, pos) = (self.s, self.pos);
        let slen = s.len();
        if pos + 1 == slen {
            self.cur().assign_char(kind::BAREWORD, pos, b'$');
            return slen;
        }
        let xlen = span(&s[pos + 1..], |b| b.is_ascii_digit() || b == b'.' || b == b',');
        if xlen == 0 {
            if s[pos + 1] == b'$' {
                let body = pos + 2;
                let token = &mut self.tokens[self.current];
                return match find_pair(&s[body..], b'$', b'$') {
                    None => {
                        token.assign(kind::STRING, body, slen - body, &s[body..]);
                        token.str_open = b'$';
                        token.str_close = 0;
                        slen
                    }
                    Some(n) => {
                        token.assign(kind::STRING, body, n, &s[body..]);
                        token.str_open = b'$';
                        token.str_close = b'$';
                        body + n + 2
                    }
                };
            }
            let xlen = span(&s[pos + 1..], |b| b.is_ascii_alphabetic());
            if xlen == 0 || pos + xlen + 1 == slen || s[pos + xlen + 1] != b'$' {
                self.cur().assign_char(kind::BAREWORD, pos, b'$');
                return pos + 1;
            }
            let tag = &s[pos..pos + xlen + 2];
            let body = pos + xlen + 2;
            let token = &mut self.tokens[self.current];
            match find(&s[body..], tag) {
                None => {
                    token.assign(kind::STRING, body, slen - body, &s[body..]);
                    token.str_open = b'$';
                    token.str_close = 0;
                    slen
                }
                Some(n) => {
                    token.assign(kind::STRING, body, n, &s[body..]);
                    token.str_open = b'$';
                    token.str_close = b'$';
                    body + n + xlen + 2
                }
            }
        } else if xlen == 1 && s[pos + 1] == b'.' {
            self.parse_word()
        } else {
            self.cur().assign(kind::NUMBER, pos, 1 + xlen, &s[pos..]);
            pos + 1 + xlen
        }
    }

    fn parse_number(&mut self) -> usize {
        let s = self.s;
        let slen = s.len();
        let mut pos = self.pos;
        if s[pos] == b'0' && pos + 1 < slen {
            let digits: Option<fn(u8) -> bool> = match s[pos + 1] {
                b'X' | b'x' => Some(|b: u8| b.is_ascii_hexdigit()),
                b'B' | b'b' => Some(|b: u8| b == b'0' || b == b'1'),
                _ => None,
            };
            if let Some(digits) = digits {
                let xlen = span(&s[pos + 2..], digits);
                if xlen == 0 {
                    self.cur().assign(kind::BAREWORD, pos, 2, &s[pos..]);
                    return pos + 2;
                }
                self.cur().assign(kind::NUMBER, pos, 2 + xlen, &s[pos..]);
                return pos + 2 + xlen;
            }
        }
        let start = pos;
        while pos < slen && s[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos < slen && s[pos] == b'.' {
            pos += 1;
            while pos < slen && s[pos].is_ascii_digit() {
                pos += 1;
            }
            if pos - start == 1 {
                self.cur().assign_char(kind::DOT, start, b'.');
                return pos;
            }
        }
        let (mut have_e, mut have_exp) = (false, false);
        if pos < slen && (s[pos] == b'E' || s[pos] == b'e') {
            have_e = true;
            pos += 1;
            if pos < slen && (s[pos] == b'+' || s[pos] == b'-') {
                pos += 1;
            }
            while pos < slen && s[pos].is_ascii_digit() {
                have_exp = true;
                pos += 1;
            }
        }
        // Oracle's float/double suffixes: `1.2f`, `1d;`, and `1fUNION`.
        if pos < slen
            && matches!(s[pos], b'd' | b'D' | b'f' | b'F')
            && (pos + 1 == slen || is_white(s[pos + 1]) || matches!(s[pos + 1], b';' | b'u' | b'U'))
        {
            pos += 1;
        }
        // `1e`, `1.e`, `10.10E+`: an exponent without digits is a word.
        let kind = if have_e && !have_exp { kind::BAREWORD } else { kind::NUMBER };
        self.cur().assign(kind, start, pos - start, &s[start..]);
        pos
    }

    /// C `syntax_merge_words`: `UNION` + `ALL` is the one token `UNION ALL`
    /// when the table knows the phrase.
    fn merge_words(&mut self, left: usize) -> bool {
        let (a, b) = (&self.tokens[left], &self.tokens[left + 1]);
        let word_like = |k: u8| {
            matches!(
                k,
                kind::KEYWORD
                    | kind::BAREWORD
                    | kind::OPERATOR
                    | kind::UNION
                    | kind::FUNCTION
                    | kind::EXPRESSION
                    | kind::TSQL
                    | kind::SQLTYPE
            )
        };
        if !word_like(a.kind) || !(word_like(b.kind) || b.kind == kind::LOGIC_OPERATOR) {
            return false;
        }
        let (sz1, sz2) = (a.len, b.len);
        let sz3 = sz1 + sz2 + 1;
        if sz3 >= TOKEN_SIZE {
            return false;
        }
        let mut tmp = [0u8; TOKEN_SIZE];
        tmp[..sz1].copy_from_slice(&a.val[..sz1]);
        tmp[sz1] = b' ';
        tmp[sz1 + 1..sz3].copy_from_slice(&b.val[..sz2]);
        let ch = lookup_word(&tmp[..sz3]);
        if ch == kind::NONE {
            return false;
        }
        let a = &mut self.tokens[left];
        let pos = a.pos;
        a.assign(ch, pos, sz3, &tmp);
        true
    }

    /// Reads the next token into `tokens[*pos]`: comments are kept aside
    /// (the last one comes back at the end), others advance `pos`.
    fn fold_next(&mut self, pos: &mut usize, last_comment: &mut Token) -> bool {
        self.current = *pos;
        let more = self.tokenize();
        if more {
            if self.tokens[*pos].kind == kind::COMMENT {
                *last_comment = self.tokens[*pos];
            } else {
                last_comment.kind = kind::NONE;
                *pos += 1;
            }
        }
        more
    }

    /// C `libinjection_sqli_fold`: tokenizes and folds into at most five
    /// tokens; returns how many.
    fn fold(&mut self) -> usize {
        let mut last_comment = EMPTY;
        let mut pos: usize = 0;
        let mut left: usize = 0;
        let mut more = true;

        // Skip leading comments, `(`, SQL types and unary operators.
        self.current = 0;
        while more {
            more = self.tokenize();
            let t = &self.tokens[0];
            if !(t.kind == kind::COMMENT || t.kind == kind::LEFTPARENS || t.kind == kind::SQLTYPE || t.is_unary_op()) {
                break;
            }
        }
        if !more {
            return 0;
        }
        pos += 1;

        loop {
            if pos >= MAX_TOKENS {
                let t: [u8; 5] = std::array::from_fn(|i| self.tokens[i].kind);
                use kind::{BAREWORD, COMMA, LEFTPARENS, NUMBER, OPERATOR, RIGHTPARENS};
                let restart = (t[0] == NUMBER
                    && (t[1] == OPERATOR || t[1] == COMMA)
                    && t[2] == LEFTPARENS
                    && t[3] == NUMBER
                    && t[4] == RIGHTPARENS)
                    || (t[0] == BAREWORD
                        && t[1] == OPERATOR
                        && t[2] == LEFTPARENS
                        && (t[3] == BAREWORD || t[3] == NUMBER)
                        && t[4] == RIGHTPARENS)
                    || (t[0] == NUMBER && t[1] == RIGHTPARENS && t[2] == COMMA && t[3] == LEFTPARENS && t[4] == NUMBER)
                    || (t[0] == BAREWORD
                        && t[1] == RIGHTPARENS
                        && t[2] == OPERATOR
                        && t[3] == LEFTPARENS
                        && t[4] == BAREWORD);
                if restart {
                    if pos > MAX_TOKENS {
                        self.tokens[1] = self.tokens[MAX_TOKENS];
                        pos = 2;
                    } else {
                        pos = 1;
                    }
                    left = 0;
                }
            }

            if !more || left >= MAX_TOKENS {
                left = pos;
                break;
            }

            // Two tokens.
            while more && pos <= MAX_TOKENS && pos - left < 2 {
                more = self.fold_next(&mut pos, &mut last_comment);
            }
            if pos - left < 2 {
                left = pos;
                continue;
            }

            let (a, b) = (self.tokens[left], self.tokens[left + 1]);
            if (a.kind == kind::STRING && b.kind == kind::STRING)
                || (a.kind == kind::SEMICOLON && b.kind == kind::SEMICOLON)
            {
                // `'a' 'b'` is one string; repeated `;` are one.
                pos -= 1;
                continue;
            } else if (a.kind == kind::OPERATOR || a.kind == kind::LOGIC_OPERATOR)
                && (b.is_unary_op() || b.kind == kind::SQLTYPE)
            {
                pos -= 1;
                left = 0;
                continue;
            } else if (a.kind == kind::LEFTPARENS && b.is_unary_op()) || self.merge_words(left) {
                // `(-` folds to `(`; `UNION` `ALL` to `UNION ALL`.
                pos -= 1;
                left = left.saturating_sub(1);
                continue;
            } else if a.kind == kind::SEMICOLON
                && b.kind == kind::FUNCTION
                && (b.val[0] == b'I' || b.val[0] == b'i')
                && (b.val[1] == b'F' || b.val[1] == b'f')
            {
                // T-SQL's `; IF ...` statement, not the IF() function.
                self.tokens[left + 1].kind = kind::TSQL;
                continue;
            } else if (a.kind == kind::BAREWORD || a.kind == kind::VARIABLE)
                && b.kind == kind::LEFTPARENS
                && (a.is(b"USER_ID")
                    || a.is(b"USER_NAME")
                    || a.is(b"DATABASE")
                    || a.is(b"PASSWORD")
                    || a.is(b"USER")
                    || a.is(b"CURRENT_USER")
                    || a.is(b"CURRENT_DATE")
                    || a.is(b"CURRENT_TIME")
                    || a.is(b"CURRENT_TIMESTAMP")
                    || a.is(b"LOCALTIME")
                    || a.is(b"LOCALTIMESTAMP"))
            {
                // Column names that are functions when called.
                self.tokens[left].kind = kind::FUNCTION;
                continue;
            } else if a.kind == kind::KEYWORD && (a.is(b"IN") || a.is(b"NOT IN")) {
                // `IN (` is a comparison; `IN BOOLEAN MODE` merges later.
                self.tokens[left].kind = if b.kind == kind::LEFTPARENS { kind::OPERATOR } else { kind::BAREWORD };
                continue;
            } else if a.kind == kind::OPERATOR && (a.is(b"LIKE") || a.is(b"NOT LIKE")) {
                if b.kind == kind::LEFTPARENS {
                    self.tokens[left].kind = kind::FUNCTION;
                }
            } else if a.kind == kind::SQLTYPE
                && matches!(
                    b.kind,
                    kind::BAREWORD
                        | kind::NUMBER
                        | kind::SQLTYPE
                        | kind::LEFTPARENS
                        | kind::FUNCTION
                        | kind::VARIABLE
                        | kind::STRING
                )
            {
                self.tokens[left] = b;
                pos -= 1;
                left = 0;
                continue;
            } else if a.kind == kind::COLLATE && b.kind == kind::BAREWORD {
                // Collation names with `_` are types.
                if b.value().contains(&b'_') {
                    self.tokens[left + 1].kind = kind::SQLTYPE;
                    left = 0;
                }
            } else if a.kind == kind::BACKSLASH {
                if b.is_arithmetic_op() {
                    // T-SQL reads `\%1` as `0 % 1`.
                    self.tokens[left].kind = kind::NUMBER;
                } else {
                    self.tokens[left] = b;
                    pos -= 1;
                }
                left = 0;
                continue;
            } else if (a.kind == kind::LEFTPARENS && b.kind == kind::LEFTPARENS)
                || (a.kind == kind::RIGHTPARENS && b.kind == kind::RIGHTPARENS)
            {
                pos -= 1;
                left = 0;
                continue;
            } else if a.kind == kind::LEFTBRACE && b.kind == kind::BAREWORD {
                // MySQL's `{ ``.``.id }` is blacklisted; ODBC's `{foo expr}` is `expr`.
                if b.len == 0 {
                    self.tokens[left + 1].kind = kind::EVIL;
                    return left + 2;
                }
                left = 0;
                pos -= 2;
                continue;
            } else if b.kind == kind::RIGHTBRACE {
                pos -= 1;
                left = 0;
                continue;
            }

            // Three tokens.
            while more && pos <= MAX_TOKENS && pos - left < 3 {
                more = self.fold_next(&mut pos, &mut last_comment);
            }
            if pos - left < 3 {
                left = pos;
                continue;
            }

            let (a, b, c) = (self.tokens[left], self.tokens[left + 1], self.tokens[left + 2]);
            let value = |k: u8| matches!(k, kind::NUMBER | kind::BAREWORD | kind::VARIABLE | kind::STRING);
            // Expressions that fold to their first token: `1+1`, `a=b`, `@x:=1`,
            // `x::int`, `1,2`, `+ x -` and `& x &`.
            let collapses = (a.kind == kind::NUMBER && b.kind == kind::OPERATOR && c.kind == kind::NUMBER)
                || (a.kind == kind::OPERATOR && b.kind != kind::LEFTPARENS && c.kind == kind::OPERATOR)
                || (a.kind == kind::LOGIC_OPERATOR && c.kind == kind::LOGIC_OPERATOR)
                || (a.kind == kind::VARIABLE
                    && b.kind == kind::OPERATOR
                    && matches!(c.kind, kind::VARIABLE | kind::NUMBER | kind::BAREWORD))
                || (matches!(a.kind, kind::BAREWORD | kind::NUMBER)
                    && b.kind == kind::OPERATOR
                    && matches!(c.kind, kind::NUMBER | kind::BAREWORD))
                || (value(a.kind) && b.kind == kind::OPERATOR && b.value() == b"::" && c.kind == kind::SQLTYPE)
                || (value(a.kind) && b.kind == kind::COMMA && value(c.kind));
            if collapses {
                pos -= 2;
                left = 0;
                continue;
            } else if matches!(a.kind, kind::EXPRESSION | kind::GROUP | kind::COMMA)
                && b.is_unary_op()
                && c.kind == kind::LEFTPARENS
            {
                // `SELECT + (`: drop the unary operator.
                self.tokens[left + 1] = c;
                pos -= 1;
                left = 0;
                continue;
            } else if matches!(a.kind, kind::KEYWORD | kind::EXPRESSION | kind::GROUP)
                && b.is_unary_op()
                && (value(c.kind) || c.kind == kind::FUNCTION)
            {
                self.tokens[left + 1] = c;
                pos -= 1;
                left = 0;
                continue;
            } else if a.kind == kind::COMMA && b.is_unary_op() && value(c.kind) {
                // `1,-1` folds to `1`: back up to fold again.
                self.tokens[left + 1] = c;
                left = 0;
                pos = pos.saturating_sub(3);
                continue;
            } else if a.kind == kind::COMMA && b.is_unary_op() && c.kind == kind::FUNCTION {
                self.tokens[left + 1] = c;
                pos -= 1;
                left = 0;
                continue;
            } else if a.kind == kind::BAREWORD && b.kind == kind::DOT && c.kind == kind::BAREWORD {
                // `database.table`.
                pos -= 2;
                left = 0;
                continue;
            } else if a.kind == kind::EXPRESSION && b.kind == kind::DOT && c.kind == kind::BAREWORD {
                self.tokens[left + 1] = c;
                pos -= 1;
                left = 0;
                continue;
            } else if a.kind == kind::FUNCTION && b.kind == kind::LEFTPARENS && c.kind != kind::RIGHTPARENS {
                // `USER(foo)` is not the argument-less USER() function.
                if a.is(b"USER") {
                    self.tokens[left].kind = kind::BAREWORD;
                }
            }

            left += 1;
        }

        if left < MAX_TOKENS && last_comment.kind == kind::COMMENT {
            self.tokens[left] = last_comment;
            left += 1;
        }
        left.min(MAX_TOKENS)
    }

    /// C `libinjection_sqli_fingerprint`: resets, folds and records the
    /// fingerprint; returns its length.
    fn fingerprint(&mut self, flags: Flags) -> usize {
        let s = self.s;
        *self = Self::new(s, flags);
        let tlen = self.fold();
        // PHP's magic backquote comment: an empty, unclosed `` ` `` at the end.
        if tlen > 2 {
            let last = &mut self.tokens[tlen - 1];
            if last.kind == kind::BAREWORD && last.str_open == CHAR_TICK && last.len == 0 && last.str_close == 0 {
                last.kind = kind::COMMENT;
            }
        }
        self.fingerprint = [0; 8];
        for i in 0..tlen {
            self.fingerprint[i] = self.tokens[i].kind;
        }
        let len = self.fingerprint.iter().position(|b| *b == 0).unwrap_or(tlen);
        if self.fingerprint[..len].contains(&kind::EVIL) {
            self.fingerprint = [0; 8];
            self.fingerprint[0] = kind::EVIL;
            self.tokens[0].val = [0; TOKEN_SIZE];
            self.tokens[0].kind = kind::EVIL;
            self.tokens[0].val[0] = kind::EVIL;
            self.tokens[1].kind = kind::NONE;
            return 1;
        }
        len
    }

    fn fingerprint_len(&self) -> usize {
        self.fingerprint.iter().position(|b| *b == 0).unwrap_or(self.fingerprint.len())
    }

    /// C `libinjection_sqli_blacklist`: the fingerprint is a known injection.
    fn blacklisted(&self) -> bool {
        let len = self.fingerprint_len();
        if len < 1 {
            return false;
        }
        let mut key = [0u8; 8];
        for (k, f) in key.iter_mut().zip(&self.fingerprint[..len]) {
            *k = upper(*f);
        }
        is_fingerprint(&key[..len])
    }

    /// C `libinjection_sqli_not_whitelist`: false-positive rules for short
    /// fingerprints; true if the input stays SQL injection.
    fn not_whitelisted(&self) -> bool {
        let fp = &self.fingerprint[..self.fingerprint_len()];
        let t = &self.tokens;
        // `sp_password` in a trailing comment hides the query from SQL Server's audit log.
        if fp.len() > 1 && fp[fp.len() - 1] == kind::COMMENT && find(self.s, b"sp_password").is_some() {
            return true;
        }
        match fp.len() {
            2 => {
                if fp[1] == kind::UNION {
                    // `1 union` alone is common text; with folding it is not.
                    return self.stats_tokens != 2;
                }
                if t[1].val[0] == b'#' {
                    return false;
                }
                if t[0].kind == kind::BAREWORD && t[1].kind == kind::COMMENT && t[1].val[0] != b'/' {
                    return false;
                }
                if t[0].kind == kind::NUMBER && t[1].kind == kind::COMMENT && t[1].val[0] == b'/' {
                    return true;
                }
                if t[0].kind == kind::NUMBER && t[1].kind == kind::COMMENT {
                    if self.stats_tokens > 2 {
                        return true;
                    }
                    // `1234 --`, `1/*`, `1--`: the number really ends there.
                    let ch = at(self.s, t[0].len);
                    // C compares a signed char: bytes above 127 count as <= 32.
                    if ch <= 32 || ch > 127 {
                        return true;
                    }
                    if ch == b'/' && at(self.s, t[0].len + 1) == b'*' {
                        return true;
                    }
                    if ch == b'-' && at(self.s, t[0].len + 1) == b'-' {
                        return true;
                    }
                    return false;
                }
                // `1-- foo` is text; only a trailing `--` is a scan.
                if t[1].len > 2 && t[1].val[0] == b'-' {
                    return false;
                }
            }
            3 => {
                if fp == b"sos" || fp == b"s&s" {
                    // `...foo" + "bar...`: no quotes outside, one inside.
                    return t[0].str_open == 0 && t[2].str_close == 0 && t[0].str_close == t[2].str_open;
                } else if fp == b"s&n" || fp == b"n&1" || fp == b"1&1" || fp == b"1&v" || fp == b"1&s" {
                    // `sexy and 17` is text, `sexy and 17<18` is not.
                    if self.stats_tokens == 3 {
                        return false;
                    }
                } else if t[1].kind == kind::KEYWORD && (t[1].len < 5 || !t[1].val[..4].eq_ignore_ascii_case(b"INTO")) {
                    // Only `INTO OUTFILE` / `INTO DUMPFILE` are SQL injection.
                    return false;
                }
            }
            _ => {}
        }
        true
    }

    fn check_fingerprint(&self) -> bool {
        self.blacklisted() && self.not_whitelisted()
    }

    fn found(&mut self, flags: Flags) -> bool {
        self.fingerprint(flags);
        self.check_fingerprint()
    }

    /// C `libinjection_is_sqli`.
    fn is_sqli(&mut self) -> bool {
        let s = self.s;
        if s.is_empty() {
            return false;
        }
        let reparse_as_mysql = |state: &Self| state.stats_comment_ddx > 0 || state.stats_comment_hash > 0;
        if self.found(Flags::QUOTE_NONE | Flags::SQL_ANSI)
            || (reparse_as_mysql(self) && self.found(Flags::QUOTE_NONE | Flags::SQL_MYSQL))
        {
            return true;
        }
        if s.contains(&CHAR_SINGLE)
            && (self.found(Flags::QUOTE_SINGLE | Flags::SQL_ANSI)
                || (reparse_as_mysql(self) && self.found(Flags::QUOTE_SINGLE | Flags::SQL_MYSQL)))
        {
            return true;
        }
        s.contains(&CHAR_DOUBLE) && self.found(Flags::QUOTE_DOUBLE | Flags::SQL_MYSQL)
    }
}

/// The SQL injection fingerprint of `input` (C `libinjection_sqli`), or
/// `None` if libinjection does not read it as SQL injection.
#[must_use]
pub fn sqli(input: &[u8]) -> Option<Fingerprint> {
    let mut state = State::new(input, Flags::QUOTE_NONE | Flags::SQL_ANSI);
    if !state.is_sqli() {
        return None;
    }
    let len = state.fingerprint_len();
    let mut bytes = [0u8; 8];
    bytes[..len].copy_from_slice(&state.fingerprint[..len]);
    Some(Fingerprint { bytes, len: u8::try_from(len).unwrap_or(0) })
}

/// The tokens of `input` read with `flags`, one by one (C
/// `libinjection_sqli_tokenize`).
#[must_use]
pub fn tokenize(input: &[u8], flags: Flags) -> Tokens<'_> {
    Tokens { state: State::new(input, flags) }
}

/// Iterator over the tokens of an input; see [`tokenize`].
pub struct Tokens<'a> {
    state: State<'a>,
}

impl fmt::Debug for Tokens<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens").field("pos", &self.state.pos).finish_non_exhaustive()
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        self.state.current = 0;
        self.state.tokenize().then(|| self.state.tokens[0])
    }
}

/// The folded tokens of `input` read with `flags` (C
/// `libinjection_sqli_fold`): at most five, the fingerprint's tokens.
#[must_use]
pub fn fold(input: &[u8], flags: Flags) -> Folded {
    let mut state = State::new(input, flags);
    let len = state.fold();
    Folded { tokens: state.tokens, len: len.min(state.tokens.len()) }
}

/// Up to five folded tokens (six when the fold gives up on an evil `{`);
/// see [`fold`].
#[derive(Clone, Copy, Debug)]
pub struct Folded {
    tokens: [Token; 8],
    len: usize,
}

impl Folded {
    /// The tokens.
    #[must_use]
    pub fn tokens(&self) -> &[Token] {
        &self.tokens[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_of_classic_injections() {
        assert_eq!(sqli(b"1' OR '1'='1").map(|f| f.to_string()).as_deref(), Some("s&sos"));
        assert_eq!(sqli(b"-1' and 1=1 union/* foo */select load_file('/etc/passwd')--").unwrap().as_str(), "s&1UE");
        assert_eq!(sqli(b"O'Brien"), None);
        assert_eq!(sqli(b""), None);
    }

    #[test]
    fn hash_tables_find_every_entry() {
        assert!(KEYWORDS.len() < KEYWORD_SLOTS / 2 && FINGERPRINTS.len() < FINGERPRINT_SLOTS / 2);
        assert!(KEYWORDS.windows(2).all(|w| w[0].0 < w[1].0), "KEYWORDS is sorted and unique");
        assert!(FINGERPRINTS.windows(2).all(|w| w[0] < w[1]), "FINGERPRINTS is sorted and unique");
        for (word, kind) in KEYWORDS {
            assert_eq!(keyword(word), Some(*kind));
            assert!(word.len() < TOKEN_SIZE + 8);
        }
        assert!(FINGERPRINTS.iter().all(|f| is_fingerprint(f)));
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(lookup_word(b"union all"), b'U');
        assert_eq!(lookup_word(b"0s&1"), b'F');
        assert_eq!(lookup_word(b"no such word"), 0);
    }
}
