//! Cross-protocol attacks on the RESP port: a browser page or a server-side
//! request forger cannot speak RESP, but it can make an HTTP client send
//! `POST / HTTP/1.1`, headers and a body of Redis commands to port 6379,
//! and a lenient inline parser would run the body's lines. Like Redis (which
//! closes a connection on a `POST` or `Host:` command and logs "Possible
//! SECURITY ATTACK"), the server drops a connection as soon as a command
//! looks like HTTP, before it runs.

use bytes::Bytes;

/// Why a command looks like HTTP, or `None` when it is an ordinary command.
/// `inline` tells whether it came as a telnet-style line (every HTTP request
/// does) rather than a RESP array.
pub fn looks_like_http(args: &[Bytes], inline: bool) -> Option<&'static str> {
    let name = args.first()?;
    // Redis's own check, for RESP arrays too: no command is named POST, and
    // none ends in ':' as an HTTP header name (`Host:`, `User-Agent:`) does.
    if name.eq_ignore_ascii_case(b"post") {
        return Some("a POST request");
    }
    if name.len() > 1 && name.ends_with(b":") && is_token(&name[..name.len() - 1]) {
        return Some("an HTTP header");
    }
    // A request line, `METHOD target HTTP/1.1`: an HTTP method (none is a
    // Redis command but GET, and GET takes one argument) and an HTTP version.
    if args.len() == 3 && is_http_version(&args[2]) && is_method(name) {
        return Some("an HTTP request line");
    }
    // An inline `GET /path` (HTTP/0.9) or any other method with a path:
    // telnet users do not start keys with '/' in the first line they type.
    if inline && args.len() == 2 && args[1].first() == Some(&b'/') && is_method(name) {
        return Some("an HTTP request line");
    }
    None
}

/// The HTTP methods, and HTTP/2's connection preface `PRI * HTTP/2.0`.
const HTTP_METHODS: [&[u8]; 10] = [
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE", b"PRI",
];

fn is_method(word: &[u8]) -> bool {
    HTTP_METHODS.iter().any(|m| word.eq_ignore_ascii_case(m))
}

/// `HTTP/` and a digit: `HTTP/1.1`, `HTTP/1.0`, `HTTP/2.0`.
fn is_http_version(word: &[u8]) -> bool {
    word.len() > 5 && word[..5].eq_ignore_ascii_case(b"HTTP/") && word[5].is_ascii_digit()
}

/// An HTTP token (RFC 9110): what method and header names are made of.
fn is_token(word: &[u8]) -> bool {
    !word.is_empty()
        && word
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn http_request_lines_and_headers_are_recognised() {
        for (line, inline) in [
            (&["POST", "/", "HTTP/1.1"][..], true),
            (&["GET", "/", "HTTP/1.1"], true),
            (&["PUT", "/v1/x", "HTTP/1.0"], true),
            (&["DELETE", "/", "HTTP/1.1"], true),
            (&["OPTIONS", "*", "HTTP/1.1"], true),
            (&["PRI", "*", "HTTP/2.0"], true),
            (&["get", "http://example/", "http/1.1"], true),
            (&["GET", "/"], true),
            (&["HEAD", "/index.html"], true),
            (&["Host:", "127.0.0.1:6379"], true),
            (&["host:", "x"], false),
            (&["User-Agent:", "curl/7.88.1"], true),
            (
                &["Content-Type:", "application/x-www-form-urlencoded"],
                true,
            ),
            (&["post"], false),
            (&["POST", "FLUSHALL"], false),
        ] {
            assert!(
                looks_like_http(&args(line), inline).is_some(),
                "{line:?} (inline {inline})"
            );
        }
    }

    #[test]
    fn ordinary_commands_pass() {
        for (line, inline) in [
            (&["GET", "/"][..], false),
            (&["GET", "/users/1"], false),
            (&["GET", "k"], true),
            (&["SET", "/", "HTTP/1.1x"], false),
            (&["SET", "k", "HTTP/1.1"], false),
            (&["MSET", "a", "b", "c", "d"], true),
            (&["PING"], true),
            (&["ECHO", "Host:"], true),
            (&[":"], true),
            (&["FLUSHALL"], true),
        ] {
            assert_eq!(
                looks_like_http(&args(line), inline),
                None,
                "{line:?} (inline {inline})"
            );
        }
        assert_eq!(looks_like_http(&[], true), None);
    }
}
