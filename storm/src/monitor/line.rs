//! One line of Redis's `MONITOR` feed, as Redis and Valkey print it:
//! `1339518083.107412 [0 127.0.0.1:60866] "set" "k" "v\x01"` — the server's
//! time, the database and the client's address (`lua` for a script's
//! commands, `unix:/path` on a socket, `[::1]:6000` for IPv6), then every
//! argument quoted the way `sdscatrepr` quotes it.

/// The database and client of a line, and its quoted arguments unparsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header<'a> {
    /// The server's time of the command, Unix milliseconds.
    pub at_ms: Option<u64>,
    pub db: i64,
    pub client: &'a [u8],
    /// `"set" "k" "v"`: hand to [`arguments`].
    pub rest: &'a [u8],
}

/// Split a line (without its `+` and line end) into its header and the rest.
pub(crate) fn header(line: &[u8]) -> Option<Header<'_>> {
    let open = line.iter().position(|&b| b == b'[')?;
    let at_ms = std::str::from_utf8(&line[..open])
        .ok()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map(|t| (t * 1000.0) as u64);
    let after = &line[open + 1..];
    let space = after.iter().position(|&b| b == b' ')?;
    let db = std::str::from_utf8(&after[..space]).ok()?.parse().ok()?;
    let after = &after[space + 1..];
    // The address ends at the first `] "`: an IPv6 address holds `]` but
    // never a quote.
    let close = after.windows(3).position(|w| w == b"] \"")?;
    Some(Header {
        at_ms,
        db,
        client: &after[..close],
        rest: &after[close + 2..],
    })
}

/// The arguments of `"set" "k" "v\x01"`, unquoted; `None` when the text is
/// not quoted as `sdscatrepr` quotes.
pub(crate) fn arguments(rest: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while rest.get(i) == Some(&b' ') {
            i += 1;
        }
        if i >= rest.len() {
            return Some(args);
        }
        if rest[i] != b'"' {
            return None;
        }
        i += 1;
        let mut arg = Vec::new();
        loop {
            match *rest.get(i)? {
                b'"' => {
                    i += 1;
                    break;
                }
                b'\\' => {
                    let escaped = *rest.get(i + 1)?;
                    i += 2;
                    arg.push(match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'a' => 0x07,
                        b'b' => 0x08,
                        b'x' => {
                            let hex = std::str::from_utf8(rest.get(i..i + 2)?).ok()?;
                            i += 2;
                            u8::from_str_radix(hex, 16).ok()?
                        }
                        other => other,
                    });
                }
                byte => {
                    arg.push(byte);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_header_of_every_client_kind() {
        let h = header(br#"1339518083.107412 [0 127.0.0.1:60866] "set" "k" "v""#).unwrap();
        assert_eq!((h.db, h.client), (0, &b"127.0.0.1:60866"[..]));
        assert_eq!(h.at_ms, Some(1_339_518_083_107));
        assert_eq!(h.rest, br#""set" "k" "v""#);
        let h = header(br#"1.5 [12 lua] "del" "k""#).unwrap();
        assert_eq!((h.db, h.client), (12, &b"lua"[..]));
        let h = header(br#"1.5 [0 [::1]:6000] "get" "k""#).unwrap();
        assert_eq!(h.client, b"[::1]:6000");
        let h = header(br#"1.5 [0 unix:/tmp/r.sock] "get" "k""#).unwrap();
        assert_eq!(h.client, b"unix:/tmp/r.sock");
        assert_eq!(header(b"OK"), None);
        assert_eq!(header(b"1.5 [x 1.2.3.4:5] \"get\""), None);
    }

    #[test]
    fn unquotes_what_sdscatrepr_quoted() {
        let args = arguments(br#""set" "a\"b\\c\nd" "\x01\xff\r\t\a\b" """#).unwrap();
        assert_eq!(
            args,
            [
                b"set".to_vec(),
                b"a\"b\\c\nd".to_vec(),
                vec![0x01, 0xff, b'\r', b'\t', 0x07, 0x08],
                Vec::new(),
            ]
        );
        assert_eq!(arguments(br#""set" "unterminated"#), None);
        assert_eq!(arguments(br#""bad" "\x1""#), None);
        assert_eq!(arguments(b"bare"), None);
    }
}
