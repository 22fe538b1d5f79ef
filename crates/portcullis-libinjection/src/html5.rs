//! libinjection 3.9.2's HTML5 tokenizer: a small subset of the HTML5
//! tokenization state machine, enough to find tags, attributes, their values
//! and comments in an input that may start inside a tag.
//!
//! Decision rules kept from the C code:
//! - Tokenizing can start in data (text) or inside an attribute value
//!   (unquoted, `'`, `"` or `` ` ``), which is how XSS detection reads an
//!   input in every context it may be pasted into.
//! - NUL bytes are skipped inside tag names and as white space between
//!   attributes (old IE did); `<%...%>` and `<?...>` are comments; `` ` `` quotes
//!   attribute values (IE).
//! - A `\xff` byte where an attribute may start ends the input (the C code
//!   reads it as a signed -1, its end-of-input marker).

use std::fmt;

/// The kind of an HTML5 token (C `enum html5_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Html5Kind {
    /// Text between tags.
    DataText,
    /// A start tag's name (`<name`).
    TagNameOpen,
    /// The `>` that ends a start tag.
    TagNameClose,
    /// The `/>` that ends a self-closing tag.
    TagNameSelfClose,
    /// Not produced by libinjection 3.9.2.
    TagData,
    /// An end tag's name (`</name>`).
    TagClose,
    /// An attribute name.
    AttrName,
    /// An attribute value, without its quotes.
    AttrValue,
    /// A comment (`<!-- -->`, `<!x>`, `<?x>`, `<%x%>`).
    TagComment,
    /// `<!DOCTYPE ...>`.
    Doctype,
}

impl Html5Kind {
    /// The C enum's name (`DATA_TEXT`, `TAG_NAME_OPEN`...), as libinjection's
    /// test files print it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataText => "DATA_TEXT",
            Self::TagNameOpen => "TAG_NAME_OPEN",
            Self::TagNameClose => "TAG_NAME_CLOSE",
            Self::TagNameSelfClose => "TAG_NAME_SELFCLOSE",
            Self::TagData => "TAG_DATA",
            Self::TagClose => "TAG_CLOSE",
            Self::AttrName => "ATTR_NAME",
            Self::AttrValue => "ATTR_VALUE",
            Self::TagComment => "TAG_COMMENT",
            Self::Doctype => "DOCTYPE",
        }
    }

    /// The C enum's value.
    #[must_use]
    pub fn code(self) -> i32 {
        match self {
            Self::DataText => 0,
            Self::TagNameOpen => 1,
            Self::TagNameClose => 2,
            Self::TagNameSelfClose => 3,
            Self::TagData => 4,
            Self::TagClose => 5,
            Self::AttrName => 6,
            Self::AttrValue => 7,
            Self::TagComment => 8,
            Self::Doctype => 9,
        }
    }
}

/// Where tokenizing starts (C `enum html5_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Html5Start {
    /// In text.
    Data,
    /// Inside a tag, after an unquoted attribute value.
    ValueNoQuote,
    /// Inside a `'`-quoted attribute value.
    ValueSingleQuote,
    /// Inside a `"`-quoted attribute value.
    ValueDoubleQuote,
    /// Inside a `` ` ``-quoted attribute value.
    ValueBackQuote,
}

/// One HTML5 token: its kind and where it is in the input.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Html5Token<'a> {
    /// The token's kind.
    pub kind: Html5Kind,
    /// Offset of the token in the input.
    pub pos: usize,
    /// The token's bytes.
    pub value: &'a [u8],
}

impl fmt::Debug for Html5Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.kind.as_str(), self.value.len(), String::from_utf8_lossy(self.value))
    }
}

/// The state machine's states that are kept between tokens (the C code's
/// `hs->state` function pointers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Eof,
    Data,
    TagOpen,
    TagNameClose,
    BeforeAttributeName,
    AfterAttributeName,
    BeforeAttributeValue,
    AttributeValue(u8),
    AfterAttributeValueQuoted,
    SelfClosingStartTag,
}

/// The HTML5 tokens of `input` starting in `start` (C `libinjection_h5_init`
/// and `libinjection_h5_next`).
#[must_use]
pub fn html5_tokenize(input: &[u8], start: Html5Start) -> Html5Tokens<'_> {
    let state = match start {
        Html5Start::Data => State::Data,
        Html5Start::ValueNoQuote => State::BeforeAttributeName,
        Html5Start::ValueSingleQuote => State::AttributeValue(b'\''),
        Html5Start::ValueDoubleQuote => State::AttributeValue(b'"'),
        Html5Start::ValueBackQuote => State::AttributeValue(b'`'),
    };
    Html5Tokens { s: input, pos: 0, is_close: false, state, token: (Html5Kind::DataText, 0, 0) }
}

/// Iterator over HTML5 tokens; see [`html5_tokenize`].
#[derive(Debug)]
pub struct Html5Tokens<'a> {
    s: &'a [u8],
    pos: usize,
    is_close: bool,
    state: State,
    /// The last token: kind, start, length.
    token: (Html5Kind, usize, usize),
}

impl<'a> Iterator for Html5Tokens<'a> {
    type Item = Html5Token<'a>;

    fn next(&mut self) -> Option<Html5Token<'a>> {
        if !self.step(self.state) {
            return None;
        }
        let (kind, start, len) = self.token;
        let value = self.s.get(start..start.saturating_add(len)).unwrap_or(&[]);
        Some(Html5Token { kind, pos: start, value })
    }
}

/// C `h5_is_white` (`strchr(" \t\n\v\f\r", ch)`, which also finds NUL).
fn is_white(ch: u8) -> bool {
    matches!(ch, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0)
}

impl Html5Tokens<'_> {
    fn emit(&mut self, kind: Html5Kind, start: usize, len: usize) -> bool {
        self.token = (kind, start, len);
        true
    }

    fn len(&self) -> usize {
        self.s.len()
    }

    fn step(&mut self, state: State) -> bool {
        match state {
            State::Eof => false,
            State::Data => self.data(),
            State::TagOpen => self.tag_open(),
            State::TagNameClose => self.tag_name_close(),
            State::BeforeAttributeName => self.before_attribute_name(),
            State::AfterAttributeName => self.after_attribute_name(),
            State::BeforeAttributeValue => self.before_attribute_value(),
            State::AttributeValue(quote) => self.attribute_value_quote(quote),
            State::AfterAttributeValueQuoted => self.after_attribute_value_quoted(),
            State::SelfClosingStartTag => self.self_closing_start_tag(),
        }
    }

    /// Skips white space (NUL included); the next byte, if any. Like the C
    /// code, which returns the byte as a signed `char` in an `int` whose -1
    /// means end of input, a `\xff` byte reads as the end of the input.
    fn skip_white(&mut self) -> Option<u8> {
        while self.pos < self.len() {
            let ch = self.s[self.pos];
            if matches!(ch, 0 | b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
                self.pos += 1;
            } else {
                return (ch != 0xff).then_some(ch);
            }
        }
        None
    }

    fn find_from(&self, from: usize, byte: u8) -> Option<usize> {
        self.s.get(from..).and_then(|rest| rest.iter().position(|b| *b == byte)).map(|n| from + n)
    }

    fn data(&mut self) -> bool {
        let start = self.pos;
        match self.find_from(start, b'<') {
            None => {
                self.state = State::Eof;
                let len = self.len().saturating_sub(start);
                len != 0 && self.emit(Html5Kind::DataText, start, len)
            }
            Some(idx) => {
                self.pos = idx + 1;
                self.state = State::TagOpen;
                if idx == start {
                    return self.tag_open();
                }
                self.emit(Html5Kind::DataText, start, idx - start)
            }
        }
    }

    fn tag_open(&mut self) -> bool {
        let Some(&ch) = self.s.get(self.pos) else {
            return false;
        };
        match ch {
            b'!' => {
                self.pos += 1;
                self.markup_declaration_open()
            }
            b'/' => {
                self.pos += 1;
                self.is_close = true;
                self.end_tag_open()
            }
            b'?' => {
                self.pos += 1;
                self.bogus_comment()
            }
            b'%' => {
                // IE <= 9 and Safari < 4.0.3 comments.
                self.pos += 1;
                self.bogus_comment2()
            }
            b'a'..=b'z' | b'A'..=b'Z' | 0 => self.tag_name(),
            _ => {
                if self.pos == 0 {
                    return self.data();
                }
                self.state = State::Data;
                self.emit(Html5Kind::DataText, self.pos - 1, 1)
            }
        }
    }

    fn end_tag_open(&mut self) -> bool {
        let Some(&ch) = self.s.get(self.pos) else {
            return false;
        };
        if ch == b'>' {
            return self.data();
        }
        if ch.is_ascii_alphabetic() {
            return self.tag_name();
        }
        self.is_close = false;
        self.bogus_comment()
    }

    fn tag_name_close(&mut self) -> bool {
        self.is_close = false;
        let start = self.pos;
        self.pos += 1;
        self.state = if self.pos < self.len() { State::Data } else { State::Eof };
        self.emit(Html5Kind::TagNameClose, start, 1)
    }

    fn tag_name(&mut self) -> bool {
        let start = self.pos;
        let mut pos = start;
        while pos < self.len() {
            let ch = self.s[pos];
            if ch == 0 {
                pos += 1;
            } else if is_white(ch) {
                self.pos = pos + 1;
                self.state = State::BeforeAttributeName;
                return self.emit(Html5Kind::TagNameOpen, start, pos - start);
            } else if ch == b'/' {
                self.pos = pos + 1;
                self.state = State::SelfClosingStartTag;
                return self.emit(Html5Kind::TagNameOpen, start, pos - start);
            } else if ch == b'>' {
                if self.is_close {
                    self.pos = pos + 1;
                    self.is_close = false;
                    self.state = State::Data;
                    return self.emit(Html5Kind::TagClose, start, pos - start);
                }
                self.pos = pos;
                self.state = State::TagNameClose;
                return self.emit(Html5Kind::TagNameOpen, start, pos - start);
            } else {
                pos += 1;
            }
        }
        self.state = State::Eof;
        self.emit(Html5Kind::TagNameOpen, start, self.len() - start)
    }

    fn before_attribute_name(&mut self) -> bool {
        match self.skip_white() {
            None => false,
            Some(b'/') => {
                self.pos += 1;
                self.self_closing_start_tag()
            }
            Some(b'>') => {
                self.state = State::Data;
                let start = self.pos;
                self.pos += 1;
                self.emit(Html5Kind::TagNameClose, start, 1)
            }
            Some(_) => self.attribute_name(),
        }
    }

    fn attribute_name(&mut self) -> bool {
        let start = self.pos;
        let mut pos = start + 1;
        while pos < self.len() {
            let ch = self.s[pos];
            let next = if is_white(ch) {
                Some((State::AfterAttributeName, pos + 1))
            } else if ch == b'/' {
                Some((State::SelfClosingStartTag, pos + 1))
            } else if ch == b'=' {
                Some((State::BeforeAttributeValue, pos + 1))
            } else if ch == b'>' {
                Some((State::TagNameClose, pos))
            } else {
                None
            };
            if let Some((state, new_pos)) = next {
                self.state = state;
                self.pos = new_pos;
                return self.emit(Html5Kind::AttrName, start, pos - start);
            }
            pos += 1;
        }
        self.state = State::Eof;
        self.pos = self.len();
        self.emit(Html5Kind::AttrName, start, self.len().saturating_sub(start))
    }

    fn after_attribute_name(&mut self) -> bool {
        match self.skip_white() {
            None => false,
            Some(b'/') => {
                self.pos += 1;
                self.self_closing_start_tag()
            }
            Some(b'=') => {
                self.pos += 1;
                self.before_attribute_value()
            }
            Some(b'>') => self.tag_name_close(),
            Some(_) => self.attribute_name(),
        }
    }

    fn before_attribute_value(&mut self) -> bool {
        match self.skip_white() {
            None => {
                self.state = State::Eof;
                false
            }
            Some(quote @ (b'"' | b'\'' | b'`')) => self.attribute_value_quote(quote),
            Some(_) => self.attribute_value_no_quote(),
        }
    }

    fn attribute_value_quote(&mut self, quote: u8) -> bool {
        // Starting inside a value (pos 0) there is no opening quote to skip.
        if self.pos > 0 {
            self.pos += 1;
        }
        let start = self.pos;
        match self.find_from(start, quote) {
            None => {
                self.state = State::Eof;
                self.emit(Html5Kind::AttrValue, start, self.len().saturating_sub(start))
            }
            Some(idx) => {
                self.state = State::AfterAttributeValueQuoted;
                self.pos = idx + 1;
                self.emit(Html5Kind::AttrValue, start, idx - start)
            }
        }
    }

    fn attribute_value_no_quote(&mut self) -> bool {
        let start = self.pos;
        let mut pos = start;
        while pos < self.len() {
            let ch = self.s[pos];
            if is_white(ch) {
                self.pos = pos + 1;
                self.state = State::BeforeAttributeName;
                return self.emit(Html5Kind::AttrValue, start, pos - start);
            } else if ch == b'>' {
                self.pos = pos;
                self.state = State::TagNameClose;
                return self.emit(Html5Kind::AttrValue, start, pos - start);
            }
            pos += 1;
        }
        self.state = State::Eof;
        self.emit(Html5Kind::AttrValue, start, self.len() - start)
    }

    fn after_attribute_value_quoted(&mut self) -> bool {
        let Some(&ch) = self.s.get(self.pos) else {
            return false;
        };
        if is_white(ch) {
            self.pos += 1;
            self.before_attribute_name()
        } else if ch == b'/' {
            self.pos += 1;
            self.self_closing_start_tag()
        } else if ch == b'>' {
            let start = self.pos;
            self.pos += 1;
            self.state = State::Data;
            self.emit(Html5Kind::TagNameClose, start, 1)
        } else {
            self.before_attribute_name()
        }
    }

    fn self_closing_start_tag(&mut self) -> bool {
        let Some(&ch) = self.s.get(self.pos) else {
            return false;
        };
        if ch == b'>' && self.pos > 0 {
            let start = self.pos - 1;
            self.state = State::Data;
            self.pos += 1;
            return self.emit(Html5Kind::TagNameSelfClose, start, 2);
        }
        if ch == b'>' {
            return false;
        }
        self.before_attribute_name()
    }

    fn bogus_comment(&mut self) -> bool {
        let start = self.pos;
        match self.find_from(start, b'>') {
            None => {
                self.pos = self.len();
                self.state = State::Eof;
                self.emit(Html5Kind::TagComment, start, self.len().saturating_sub(start))
            }
            Some(idx) => {
                self.pos = idx + 1;
                self.state = State::Data;
                self.emit(Html5Kind::TagComment, start, idx - start)
            }
        }
    }

    /// `<%...%>`.
    fn bogus_comment2(&mut self) -> bool {
        let start = self.pos;
        let mut pos = start;
        loop {
            match self.find_from(pos, b'%') {
                Some(idx) if idx + 1 < self.len() => {
                    if self.s[idx + 1] != b'>' {
                        pos = idx + 1;
                        continue;
                    }
                    self.pos = idx + 2;
                    self.state = State::Data;
                    return self.emit(Html5Kind::TagComment, start, idx - start);
                }
                _ => {
                    self.pos = self.len();
                    self.state = State::Eof;
                    return self.emit(Html5Kind::TagComment, start, self.len().saturating_sub(start));
                }
            }
        }
    }

    fn markup_declaration_open(&mut self) -> bool {
        let rest = self.s.get(self.pos..).unwrap_or(&[]);
        if rest.len() >= 7 && rest[..7].eq_ignore_ascii_case(b"DOCTYPE") {
            self.doctype()
        } else if rest.len() >= 7 && &rest[..7] == b"[CDATA[" {
            self.pos += 7;
            self.cdata()
        } else if rest.len() >= 2 && &rest[..2] == b"--" {
            self.pos += 2;
            self.comment()
        } else {
            self.bogus_comment()
        }
    }

    /// `<!-- ... -->`, also ended by `--!>` and `-` NULs `->` (the C code
    /// skips NULs after the first dash).
    fn comment(&mut self) -> bool {
        let start = self.pos;
        let len = self.len();
        let mut pos = start;
        loop {
            let idx = match self.find_from(pos, b'-') {
                Some(idx) if len >= 3 && idx <= len - 3 => idx,
                _ => return self.comment_to_eof(start),
            };
            let mut offset = 1;
            while idx + offset < len && self.s[idx + offset] == 0 {
                offset += 1;
            }
            if idx + offset == len {
                return self.comment_to_eof(start);
            }
            let ch = self.s[idx + offset];
            if ch != b'-' && ch != b'!' {
                pos = idx + 1;
                continue;
            }
            offset += 1;
            if idx + offset == len {
                return self.comment_to_eof(start);
            }
            if self.s[idx + offset] != b'>' {
                pos = idx + 1;
                continue;
            }
            offset += 1;
            self.pos = idx + offset;
            self.state = State::Data;
            return self.emit(Html5Kind::TagComment, start, idx - start);
        }
    }

    fn comment_to_eof(&mut self, start: usize) -> bool {
        self.state = State::Eof;
        self.emit(Html5Kind::TagComment, start, self.len().saturating_sub(start))
    }

    fn cdata(&mut self) -> bool {
        let start = self.pos;
        let len = self.len();
        let mut pos = start;
        loop {
            match self.find_from(pos, b']') {
                Some(idx) if len >= 3 && idx <= len - 3 => {
                    if self.s[idx + 1] == b']' && self.s[idx + 2] == b'>' {
                        self.state = State::Data;
                        self.pos = idx + 3;
                        return self.emit(Html5Kind::DataText, start, idx - start);
                    }
                    pos = idx + 1;
                }
                _ => {
                    self.state = State::Eof;
                    return self.emit(Html5Kind::DataText, start, len.saturating_sub(start));
                }
            }
        }
    }

    fn doctype(&mut self) -> bool {
        let start = self.pos;
        match self.find_from(start, b'>') {
            None => {
                self.state = State::Eof;
                self.emit(Html5Kind::Doctype, start, self.len().saturating_sub(start))
            }
            Some(idx) => {
                self.state = State::Data;
                self.pos = idx + 1;
                self.emit(Html5Kind::Doctype, start, idx - start)
            }
        }
    }
}
