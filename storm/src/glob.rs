//! Redis's glob patterns (`KEYS`, `SCAN MATCH`) for keys seen outside the
//! map: `*`, `?`, `[abc]`, `[^a-z]` and `\` escapes, case-sensitive, with
//! `stringmatchlen`'s reading of odd patterns (an unclosed class ends at the
//! pattern's end, a reversed range is read in order). Every token but `*`
//! takes exactly one byte, so backtracking to the last `*` is enough: time
//! stays within pattern × key even for `*?*?…` patterns.

/// One pattern token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Byte(u8),
    Class { negated: bool, items: Vec<(u8, u8)> },
}

impl Token {
    fn takes(&self, byte: u8) -> bool {
        match self {
            Token::Star => true,
            Token::Any => true,
            Token::Byte(b) => *b == byte,
            Token::Class { negated, items } => {
                items.iter().any(|&(lo, hi)| lo <= byte && byte <= hi) != *negated
            }
        }
    }
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    pub fn new(pattern: &[u8]) -> Glob {
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            match pattern[i] {
                b'*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                b'?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                b'\\' if i + 1 < pattern.len() => {
                    tokens.push(Token::Byte(pattern[i + 1]));
                    i += 2;
                }
                b'[' => {
                    i += 1;
                    let negated = pattern.get(i) == Some(&b'^');
                    if negated {
                        i += 1;
                    }
                    let mut items = Vec::new();
                    while i < pattern.len() && pattern[i] != b']' {
                        if pattern[i] == b'\\' && i + 1 < pattern.len() {
                            items.push((pattern[i + 1], pattern[i + 1]));
                            i += 2;
                        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' {
                            let (a, b) = (pattern[i], pattern[i + 2]);
                            items.push((a.min(b), a.max(b)));
                            i += 3;
                        } else {
                            items.push((pattern[i], pattern[i]));
                            i += 1;
                        }
                    }
                    // Past the `]` (an unclosed class just ends here).
                    i += 1;
                    tokens.push(Token::Class { negated, items });
                }
                byte => {
                    tokens.push(Token::Byte(byte));
                    i += 1;
                }
            }
        }
        Glob { tokens }
    }

    pub fn matches(&self, key: &[u8]) -> bool {
        let tokens = &self.tokens;
        let (mut t, mut k) = (0, 0);
        // The last `*` seen and the key position it is tried from.
        let mut star: Option<(usize, usize)> = None;
        while k < key.len() {
            match tokens.get(t) {
                Some(Token::Star) => {
                    star = Some((t, k));
                    t += 1;
                }
                Some(token) if token.takes(key[k]) => {
                    t += 1;
                    k += 1;
                }
                _ => match star {
                    // Let the last `*` take one more byte.
                    Some((st, sk)) => {
                        star = Some((st, sk + 1));
                        t = st + 1;
                        k = sk + 1;
                    }
                    None => return false,
                },
            }
        }
        tokens[t..].iter().all(|token| *token == Token::Star)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, key: &str) -> bool {
        Glob::new(pattern.as_bytes()).matches(key.as_bytes())
    }

    #[test]
    fn matches_as_redis_does() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("user:*", "user:1"));
        assert!(!m("user:*", "users:1"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "a reversed range is read in order");
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("[\\]]", "]"));
        assert!(
            m("a[bc", "ab"),
            "an unclosed class ends at the pattern's end"
        );
        assert!(m("*a*b*c", "xxaxxbxxc"));
        assert!(!m("*a*b*c", "xxaxxcxxb"));
        assert!(m("k*", "k"));
        assert!(!m("", "k"));
        assert!(m("", ""));
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let pattern = "*?".repeat(1000) + "x";
        let key = "a".repeat(5000);
        assert!(!m(&pattern, &key));
    }
}
