//! RESP2 framing, with no I/O: the incremental command parser that turns a
//! connection's read buffer into argument vectors, and the encoder that writes
//! replies into its output buffer.
//!
//! The parser follows Redis 7's `processMultibulkBuffer` and
//! `processInlineBuffer` closely, error texts included, because clients and
//! people compare what they see with what Redis says.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bounds on what one client may make the server hold. Every length a client
/// announces is checked against these before anything is reserved for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest unparsed input one connection may buffer (Redis:
    /// `client-query-buffer-limit`, 1 GiB there; a sidecar shares its pod's
    /// memory with the application, hence far less).
    pub max_query_bytes: usize,
    /// Largest bulk argument (Redis: `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Most arguments in one multibulk command.
    pub max_multibulk_len: usize,
    /// Longest inline command, and longest `*N`/`$N` header line while its
    /// end is not yet in sight (Redis: `PROTO_INLINE_MAX_SIZE`).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_query_bytes: 64 * 1024 * 1024,
            max_bulk_len: 32 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A frame the server cannot parse. The connection that sent it is closed
/// after the error is written (the rest of its input cannot be framed).
///
/// `Display` is the text Redis 7 replies with, after `-ERR `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// The byte found where a `$` should start the next bulk argument.
    #[error("Protocol error: expected '$', got '{}'", printable(*.0))]
    ExpectedBulk(u8),
    #[error("Protocol error: too big inline request")]
    TooBigInlineRequest,
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCountString,
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCountString,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// Redis closes such a client without a reply and logs "closing client
    /// that reached max query buffer length"; telling the client is kinder.
    #[error("Protocol error: client reached max query buffer length")]
    QueryBufferFull,
}

/// Redis writes the offending byte as is, except that no reply may contain a
/// line break.
fn printable(byte: u8) -> char {
    match byte {
        b'\r' | b'\n' => ' ',
        other => char::from(other),
    }
}

/// Parses commands out of one connection's read buffer, one at a time.
///
/// A command is consumed from the buffer only once it is complete. Between
/// calls the parser remembers how far it got into an incomplete multibulk
/// command, so a long command arriving in many reads is scanned once, not once
/// per read; the caller must therefore only ever append to the buffer between
/// calls (which is what reading from a socket does).
#[derive(Debug, Default)]
pub struct Parser {
    pending: Option<Multibulk>,
}

/// How far an incomplete multibulk command has been framed. Offsets are from
/// the start of the read buffer, which still holds the whole command.
#[derive(Debug)]
struct Multibulk {
    /// Arguments not yet located.
    remaining: usize,
    /// The first byte not yet framed.
    pos: usize,
    /// The length announced by the `$N` line just read, if its data has not
    /// arrived in full yet.
    bulk_len: Option<usize>,
    /// `(start, len)` of each argument located so far.
    spans: Vec<(usize, usize)>,
}

/// Parse one command from the front of `buf` with a fresh [`Parser`].
///
/// `Ok(None)` means more bytes are needed (nothing is consumed). On
/// `Ok(Some(args))` exactly that command's bytes are removed from `buf`, along
/// with any empty commands before it, which Redis skips too.
pub fn parse_command(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    Parser::default().next_command(buf, limits)
}

impl Parser {
    /// Whether the next command in `buf` is a telnet-style inline line (no
    /// RESP array half-read, and the buffer does not start one).
    pub fn next_is_inline(&self, buf: &[u8]) -> bool {
        self.pending.is_none() && buf.first().is_some_and(|b| *b != b'*')
    }

    /// The next complete command in `buf`; see [`parse_command`].
    ///
    /// Bulk arguments are slices of the frame split off `buf`, not copies.
    pub fn next_command(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            if self.pending.is_none() {
                match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => {
                        if !self.start_multibulk(buf, limits)? {
                            return incomplete(buf, limits);
                        }
                        if self.pending.is_none() {
                            // `*0` or a negative count: an empty command.
                            continue;
                        }
                    }
                    Some(_) => match inline_command(buf, limits)? {
                        None => return incomplete(buf, limits),
                        Some(args) if args.is_empty() => continue,
                        Some(args) => return Ok(Some(args)),
                    },
                }
            }
            return match self.continue_multibulk(buf, limits)? {
                Some(args) => Ok(Some(args)),
                None => incomplete(buf, limits),
            };
        }
    }

    /// Read the `*N\r\n` line. `Ok(false)` when it is not complete yet.
    fn start_multibulk(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<bool, ProtocolError> {
        let Some(cr) = find(buf, b'\r') else {
            if buf.len() > limits.max_inline_len {
                return Err(ProtocolError::TooBigMultibulkCountString);
            }
            return Ok(false);
        };
        // Redis only needs one more byte after the '\r' and does not look at it.
        if cr + 2 > buf.len() {
            return Ok(false);
        }
        let count = parse_i64(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
        if count > 0 && count as u64 > limits.max_multibulk_len as u64 {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        if count <= 0 {
            buf.advance(cr + 2);
            return Ok(true);
        }
        let remaining = count as usize;
        self.pending = Some(Multibulk {
            remaining,
            pos: cr + 2,
            bulk_len: None,
            // The count is the client's claim; the buffer grows with the data.
            spans: Vec::with_capacity(remaining.min(1024)),
        });
        Ok(true)
    }

    /// Frame as many arguments as the buffer holds; the command once all are in.
    fn continue_multibulk(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(mb) = self.pending.as_mut() else {
            return Ok(None);
        };
        while mb.remaining > 0 {
            let len = match mb.bulk_len {
                Some(len) => len,
                None => {
                    let line = &buf[mb.pos..];
                    let Some(cr) = find(line, b'\r') else {
                        if line.len() > limits.max_inline_len {
                            return Err(ProtocolError::TooBigBulkCountString);
                        }
                        return Ok(None);
                    };
                    if cr + 2 > line.len() {
                        return Ok(None);
                    }
                    if line[0] != b'$' {
                        return Err(ProtocolError::ExpectedBulk(line[0]));
                    }
                    let len = parse_i64(&line[1..cr])
                        .filter(|&len| len >= 0 && len as u64 <= limits.max_bulk_len as u64)
                        .ok_or(ProtocolError::InvalidBulkLength)?
                        as usize;
                    mb.pos += cr + 2;
                    mb.bulk_len = Some(len);
                    len
                }
            };
            // The data and its trailing CRLF, which Redis skips without checking.
            if buf.len() - mb.pos < len + 2 {
                return Ok(None);
            }
            mb.spans.push((mb.pos, len));
            mb.pos += len + 2;
            mb.bulk_len = None;
            mb.remaining -= 1;
        }
        let Some(mb) = self.pending.take() else {
            return Ok(None);
        };
        let frame = buf.split_to(mb.pos).freeze();
        Ok(Some(
            mb.spans
                .into_iter()
                .map(|(start, len)| frame.slice(start..start + len))
                .collect(),
        ))
    }
}

/// Not enough bytes for the next command: fine unless the client has sent more
/// than it may without completing one.
fn incomplete(buf: &BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    if buf.len() > limits.max_query_bytes {
        Err(ProtocolError::QueryBufferFull)
    } else {
        Ok(None)
    }
}

fn find(haystack: &[u8], byte: u8) -> Option<usize> {
    haystack.iter().position(|&b| b == byte)
}

/// One inline (telnet-style) command line, consumed with its line ending.
/// `Ok(Some(empty))` for a blank line.
fn inline_command(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(lf) = find(buf, b'\n') else {
        if buf.len() > limits.max_inline_len {
            return Err(ProtocolError::TooBigInlineRequest);
        }
        return Ok(None);
    };
    let end = if lf > 0 && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    let args = split_inline(&buf[..end]).ok_or(ProtocolError::UnbalancedQuotes)?;
    buf.advance(lf + 1);
    Ok(Some(args))
}

/// C's `isspace` in the C locale, which Redis uses to skip blanks.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Redis's `sdssplitargs`: blank-separated words, `"…"` with `\n \r \t \b \a
/// \xHH` escapes, and `'…'` with only `\'`. A closing quote must be followed by
/// a blank or the end. `None` for unbalanced quotes. The line is a C string to
/// Redis, so it ends at the first NUL byte.
fn split_inline(line: &[u8]) -> Option<Vec<Bytes>> {
    let line = match find(line, 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    // Reading past the end gives NUL, as the C code sees it.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let mut word = Vec::new();
        let (mut in_double, mut in_single, mut done) = (false, false, false);
        while !done {
            let c = at(p);
            if in_double {
                if c == b'\\' && at(p + 1) == b'x' {
                    if let (Some(hi), Some(lo)) = (hex_value(at(p + 2)), hex_value(at(p + 3))) {
                        word.push(hi * 16 + lo);
                        p += 3;
                    } else {
                        p += 1;
                        word.push(b'x');
                    }
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    word.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    word.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    word.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    word.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    other => word.push(other),
                }
            }
            if p < line.len() {
                p += 1;
            }
        }
        args.push(Bytes::from(word));
    }
}

/// Redis's `string2ll`, the one integer grammar of the protocol and of integer
/// arguments: an optional `-`, then `0` alone or digits without a leading zero,
/// no `+`, no blanks, within `i64`.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// `+OK`-style status reply. The text must not contain CR or LF.
pub fn write_simple(out: &mut BytesMut, text: &str) {
    out.put_u8(b'+');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Error reply; `text` starts with the error code (`ERR …`, `NOPROTO …`).
/// Line breaks become spaces, as Redis does, so the reply stays one line.
pub fn write_error(out: &mut BytesMut, text: &str) {
    out.put_u8(b'-');
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// `:N` integer reply.
pub fn write_integer(out: &mut BytesMut, value: i64) {
    out.put_u8(b':');
    write_decimal(out, value);
    out.extend_from_slice(b"\r\n");
}

/// `$len` bulk string reply.
pub fn write_bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    out.put_u8(b'$');
    write_length(out, data.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// A bulk string or, for `None`, the null bulk `$-1`.
pub fn write_optional_bulk(out: &mut BytesMut, data: Option<&[u8]>) {
    match data {
        Some(data) => write_bulk(out, data),
        None => write_null_bulk(out),
    }
}

/// The null bulk string `$-1` (a missing key).
pub fn write_null_bulk(out: &mut BytesMut) {
    out.extend_from_slice(b"$-1\r\n");
}

/// The header of an array of `len` replies; the elements follow.
pub fn write_array_len(out: &mut BytesMut, len: usize) {
    out.put_u8(b'*');
    write_length(out, len);
    out.extend_from_slice(b"\r\n");
}

/// The null array `*-1`.
pub fn write_null_array(out: &mut BytesMut) {
    out.extend_from_slice(b"*-1\r\n");
}

fn write_length(out: &mut BytesMut, len: usize) {
    write_unsigned(out, len as u64);
}

fn write_decimal(out: &mut BytesMut, value: i64) {
    if value < 0 {
        out.put_u8(b'-');
    }
    write_unsigned(out, value.unsigned_abs());
}

/// Digits on the stack: replies are written per command, so no allocation.
fn write_unsigned(out: &mut BytesMut, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> (Result<Vec<Vec<Bytes>>, ProtocolError>, BytesMut) {
        let mut buf = BytesMut::from(input);
        let mut parser = Parser::default();
        let mut commands = Vec::new();
        loop {
            match parser.next_command(&mut buf, &Limits::default()) {
                Ok(Some(args)) => commands.push(args),
                Ok(None) => return (Ok(commands), buf),
                Err(e) => return (Err(e), buf),
            }
        }
    }

    fn args(words: &[&[u8]]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::copy_from_slice(w)).collect()
    }

    fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn error_of(input: &[u8]) -> ProtocolError {
        parse_all(input).0.expect_err("input should be rejected")
    }

    #[test]
    fn a_multibulk_command_is_parsed_and_consumed() {
        let (commands, rest) = parse_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n");
        assert_eq!(commands.unwrap(), vec![args(&[b"SET", b"k", b"hello"])]);
        assert!(rest.is_empty());
    }

    #[test]
    fn bulk_arguments_may_hold_crlf_and_binary() {
        let input = multibulk(&[b"SET".to_vec(), b"a\r\nb".to_vec(), vec![0, 255, b'\r']]);
        let (commands, _) = parse_all(&input);
        assert_eq!(
            commands.unwrap(),
            vec![args(&[b"SET", b"a\r\nb", &[0, 255, b'\r']])]
        );
    }

    #[test]
    fn an_incomplete_command_consumes_nothing() {
        let full = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(
                parse_command(&mut buf, &Limits::default()),
                Ok(None),
                "cut at {cut}"
            );
            assert_eq!(&buf[..], &full[..cut]);
        }
    }

    #[test]
    fn the_parser_resumes_where_it_stopped() {
        let full = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n+";
        let mut buf = BytesMut::new();
        let mut parser = Parser::default();
        for &byte in &full[..full.len() - 2] {
            buf.put_u8(byte);
            assert_eq!(parser.next_command(&mut buf, &Limits::default()), Ok(None));
        }
        buf.extend_from_slice(&full[full.len() - 2..]);
        let got = parser.next_command(&mut buf, &Limits::default()).unwrap();
        assert_eq!(got, Some(args(&[b"GET", b"key"])));
        assert_eq!(&buf[..], b"+");
    }

    #[test]
    fn pipelined_commands_come_out_one_at_a_time() {
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\nECHO hi\r\n*1\r\n$4\r\nPI"[..]);
        let limits = Limits::default();
        let mut parser = Parser::default();
        assert_eq!(
            parser.next_command(&mut buf, &limits).unwrap(),
            Some(args(&[b"PING"]))
        );
        assert_eq!(
            parser.next_command(&mut buf, &limits).unwrap(),
            Some(args(&[b"ECHO", b"hi"]))
        );
        assert_eq!(parser.next_command(&mut buf, &limits).unwrap(), None);
        assert_eq!(&buf[..], b"*1\r\n$4\r\nPI");
    }

    #[test]
    fn empty_commands_are_skipped_like_redis() {
        let (commands, rest) = parse_all(b"\r\n\n   \r\n*0\r\n*-1\r\nPING\r\n");
        assert_eq!(commands.unwrap(), vec![args(&[b"PING"])]);
        assert!(rest.is_empty());
    }

    #[test]
    fn inline_commands_follow_redis_quoting() {
        let (commands, _) = parse_all(
            b"SET  k \"a b\\n\\x41\\\"\"\r\nSET k 'it\\'s'\nGET \"\"\r\nX a\\nb \"\\q\"\n",
        );
        assert_eq!(
            commands.unwrap(),
            vec![
                args(&[b"SET", b"k", b"a b\nA\""]),
                args(&[b"SET", b"k", b"it's"]),
                args(&[b"GET", b""]),
                args(&[b"X", b"a\\nb", b"q"]),
            ]
        );
    }

    #[test]
    fn a_quote_inside_a_word_starts_a_quoted_part() {
        let (commands, _) = parse_all(b"SET k ab\"c d\"\r\n");
        assert_eq!(commands.unwrap(), vec![args(&[b"SET", b"k", b"abc d"])]);
    }

    #[test]
    fn an_inline_line_ends_at_a_nul_byte() {
        let (commands, _) = parse_all(b"GET a\0 b\r\n");
        assert_eq!(commands.unwrap(), vec![args(&[b"GET", b"a"])]);
    }

    #[test]
    fn unbalanced_quotes_are_a_protocol_error() {
        for input in [
            &b"ECHO \"a\n"[..],
            b"ECHO 'a\r\n",
            b"ECHO \"a\"x\n",
            b"ECHO 'a'x\n",
            b"ECHO \"a\\\"\n",
        ] {
            assert_eq!(
                error_of(input),
                ProtocolError::UnbalancedQuotes,
                "{input:?}"
            );
        }
        assert_eq!(
            ProtocolError::UnbalancedQuotes.to_string(),
            "Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn bad_multibulk_lengths_get_redis_error_texts() {
        for input in [
            &b"*x\r\n"[..],
            b"*\r\n",
            b"*01\r\n",
            b"*+1\r\n",
            b"*1 \r\n",
            b"*99999999999999999999\r\n",
        ] {
            assert_eq!(
                error_of(input),
                ProtocolError::InvalidMultibulkLength,
                "{input:?}"
            );
        }
        assert_eq!(
            ProtocolError::InvalidMultibulkLength.to_string(),
            "Protocol error: invalid multibulk length"
        );
    }

    #[test]
    fn bad_bulk_lengths_get_redis_error_texts() {
        for input in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$x\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$9223372036854775808\r\n",
        ] {
            assert_eq!(
                error_of(input),
                ProtocolError::InvalidBulkLength,
                "{input:?}"
            );
        }
        assert_eq!(
            ProtocolError::InvalidBulkLength.to_string(),
            "Protocol error: invalid bulk length"
        );
    }

    #[test]
    fn a_missing_dollar_names_the_byte_found() {
        assert_eq!(error_of(b"*1\r\n:1\r\n"), ProtocolError::ExpectedBulk(b':'));
        assert_eq!(
            ProtocolError::ExpectedBulk(b':').to_string(),
            "Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            ProtocolError::ExpectedBulk(b'\r').to_string(),
            "Protocol error: expected '$', got ' '"
        );
    }

    #[test]
    fn claimed_sizes_beyond_the_limits_are_refused_before_any_data() {
        let limits = Limits {
            max_bulk_len: 10,
            max_multibulk_len: 3,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&b"*1\r\n$11\r\n"[..]);
        assert_eq!(
            parse_command(&mut buf, &limits),
            Err(ProtocolError::InvalidBulkLength)
        );
        let mut buf = BytesMut::from(&b"*4\r\n"[..]);
        assert_eq!(
            parse_command(&mut buf, &limits),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        let mut buf = BytesMut::from(&b"*1\r\n$10\r\n"[..]);
        assert_eq!(parse_command(&mut buf, &limits), Ok(None));
    }

    #[test]
    fn a_hostile_count_reserves_nothing_big() {
        let mut buf = BytesMut::from(&b"*1048576\r\n"[..]);
        let mut parser = Parser::default();
        assert_eq!(parser.next_command(&mut buf, &Limits::default()), Ok(None));
        let pending = parser.pending.as_ref().expect("a command is under way");
        assert!(pending.spans.capacity() <= 1024);
    }

    #[test]
    fn header_lines_without_an_end_are_bounded() {
        let limits = Limits::default();
        for (prefix, error) in [
            (&b"*"[..], ProtocolError::TooBigMultibulkCountString),
            (&b"*1\r\n$"[..], ProtocolError::TooBigBulkCountString),
        ] {
            // The header line starts at the prefix's last byte (`*` or `$`).
            let line_start = prefix.len() - 1;
            let mut input = prefix.to_vec();
            input.resize(line_start + limits.max_inline_len, b'0');
            assert_eq!(parse_all(&input).0, Ok(vec![]));
            input.push(b'0');
            assert_eq!(error_of(&input), error);
            assert_eq!(
                error.to_string(),
                if prefix.len() == 1 {
                    "Protocol error: too big mbulk count string"
                } else {
                    "Protocol error: too big bulk count string"
                }
            );
        }
    }

    #[test]
    fn an_endless_inline_line_is_refused() {
        let limits = Limits::default();
        let mut input = vec![b'a'; limits.max_inline_len];
        assert_eq!(parse_all(&input).0, Ok(vec![]));
        input.push(b'a');
        assert_eq!(error_of(&input), ProtocolError::TooBigInlineRequest);
        assert_eq!(
            ProtocolError::TooBigInlineRequest.to_string(),
            "Protocol error: too big inline request"
        );
    }

    #[test]
    fn an_incomplete_command_beyond_the_query_limit_is_refused() {
        let limits = Limits {
            max_query_bytes: 100,
            ..Limits::default()
        };
        let mut input = b"*1\r\n$1000\r\n".to_vec();
        input.resize(101, b'x');
        let mut buf = BytesMut::from(&input[..]);
        assert_eq!(
            parse_command(&mut buf, &limits),
            Err(ProtocolError::QueryBufferFull)
        );
        buf.truncate(100);
        assert_eq!(parse_command(&mut buf, &limits), Ok(None));
    }

    #[test]
    fn arguments_share_the_frame_instead_of_copying() {
        let mut buf =
            BytesMut::from(&multibulk(&[b"SET".to_vec(), b"k".to_vec(), vec![7; 4096]])[..]);
        let start = buf.as_ptr() as usize;
        let end = start + buf.len();
        let args = parse_command(&mut buf, &Limits::default())
            .unwrap()
            .unwrap();
        let value = args[2].as_ptr() as usize;
        assert!(
            (start..end).contains(&value),
            "the value points into the read buffer"
        );
    }

    #[test]
    fn integers_follow_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"9223372036854775808",
            b"0x1",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn replies_are_encoded_as_resp2() {
        let mut out = BytesMut::new();
        write_simple(&mut out, "OK");
        write_error(&mut out, "ERR bad\r\nthing");
        write_integer(&mut out, 0);
        write_integer(&mut out, i64::MIN);
        write_integer(&mut out, 1234567890);
        write_bulk(&mut out, b"a\r\nb");
        write_bulk(&mut out, b"");
        write_null_bulk(&mut out);
        write_array_len(&mut out, 2);
        write_optional_bulk(&mut out, Some(b"x"));
        write_optional_bulk(&mut out, None);
        write_null_array(&mut out);
        assert_eq!(
            &out[..],
            &b"+OK\r\n-ERR bad  thing\r\n:0\r\n:-9223372036854775808\r\n:1234567890\r\n\
               $4\r\na\r\nb\r\n$0\r\n\r\n$-1\r\n*2\r\n$1\r\nx\r\n$-1\r\n*-1\r\n"[..]
        );
    }

    fn arb_command() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let arg = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            Just(b"\r\n".to_vec()),
            Just(b"$3\r\n*1\r\n".to_vec()),
        ];
        proptest::collection::vec(arg, 1..6)
    }

    /// Words inline encoding can carry without quoting.
    fn arb_inline_command() -> impl Strategy<Value = Vec<Vec<u8>>> {
        // A first word starting with `*` would be read as multibulk, as in Redis.
        proptest::collection::vec(
            "[a-zA-Z0-9:_.$-][a-zA-Z0-9:_.*$-]{0,11}".prop_map(String::into_bytes),
            1..6,
        )
    }

    fn feed_in_chunks(stream: &[u8], cuts: &[usize]) -> Vec<Vec<Bytes>> {
        let limits = Limits::default();
        let mut parser = Parser::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut from = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        for cut in cuts {
            buf.extend_from_slice(&stream[from..cut]);
            from = cut;
            while let Some(args) = parser
                .next_command(&mut buf, &limits)
                .expect("valid stream")
            {
                got.push(args);
            }
        }
        assert!(buf.is_empty(), "everything was consumed");
        got
    }

    fn as_bytes(commands: &[Vec<Vec<u8>>]) -> Vec<Vec<Bytes>> {
        commands
            .iter()
            .map(|c| c.iter().map(|a| Bytes::copy_from_slice(a)).collect())
            .collect()
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let limits = Limits { max_inline_len: 64, max_query_bytes: 256, ..Limits::default() };
            let mut buf = BytesMut::from(&input[..]);
            let mut parser = Parser::default();
            while let Ok(Some(_)) = parser.next_command(&mut buf, &limits) {}
        }

        #[test]
        fn protocol_shaped_garbage_never_panics(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(&b"*"[..]), Just(&b"$"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..]),
                    Just(&b"-1"[..]), Just(&b"0"[..]), Just(&b"3"[..]), Just(&b"\""[..]),
                    Just(&b"'"[..]), Just(&b"\\x4"[..]), Just(&b" "[..]), Just(&b"a"[..]),
                ],
                0..64,
            )
        ) {
            let input: Vec<u8> = parts.concat();
            let mut buf = BytesMut::new();
            let mut parser = Parser::default();
            for &byte in &input {
                buf.put_u8(byte);
                match parser.next_command(&mut buf, &Limits::default()) {
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn multibulk_streams_survive_any_split(
            commands in proptest::collection::vec(arb_command(), 1..5),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let stream: Vec<u8> = commands.iter().flat_map(|c| multibulk(c)).collect();
            prop_assert_eq!(feed_in_chunks(&stream, &cuts), as_bytes(&commands));
        }

        #[test]
        fn multibulk_streams_survive_byte_by_byte_feeding(
            commands in proptest::collection::vec(arb_command(), 1..3),
        ) {
            let stream: Vec<u8> = commands.iter().flat_map(|c| multibulk(c)).collect();
            let every_byte: Vec<usize> = (0..stream.len()).collect();
            prop_assert_eq!(feed_in_chunks(&stream, &every_byte), as_bytes(&commands));
        }

        #[test]
        fn inline_streams_survive_any_split(
            commands in proptest::collection::vec(arb_inline_command(), 1..5),
            crlf in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let ending: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let stream: Vec<u8> = commands
                .iter()
                .flat_map(|c| [c.join(&b' '), ending.to_vec()].concat())
                .collect();
            prop_assert_eq!(feed_in_chunks(&stream, &cuts), as_bytes(&commands));
        }

        #[test]
        fn quoted_inline_words_round_trip(word in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut line = b"ECHO \"".to_vec();
            for &b in &word {
                line.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
            line.extend_from_slice(b"\"\r\n");
            let (commands, _) = parse_all(&line);
            prop_assert_eq!(commands.unwrap(), vec![vec![Bytes::from_static(b"ECHO"), Bytes::from(word)]]);
        }

        #[test]
        fn integers_round_trip_through_the_encoder(value in any::<i64>()) {
            let mut out = BytesMut::new();
            write_integer(&mut out, value);
            let expected = format!(":{value}\r\n");
            prop_assert_eq!(&out[..], expected.as_bytes());
            prop_assert_eq!(parse_i64(value.to_string().as_bytes()), Some(value));
        }
    }
}
