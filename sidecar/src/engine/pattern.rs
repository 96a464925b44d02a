//! Redis glob patterns (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes) for `SCAN MATCH` and `KEYS`.
//!
//! The answers are Redis's (`stringmatchlen` in `util.c`, case-sensitive),
//! quirks included, but the matcher is not its recursion: the pattern is
//! parsed once into tokens, and matching is the iterative two-pointer glob
//! that backtracks only to the last `*`, so `a*a*a*…b` costs O(pattern × key)
//! instead of exponential time.

/// A set of bytes, one bit each, so a bracket class is tested in O(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn insert(&mut self, byte: u8) {
        self.0[usize::from(byte >> 6)] |= 1 << (byte & 63);
    }

    fn insert_range(&mut self, from: u8, to: u8) {
        // Redis accepts `[z-a]` as `[a-z]`.
        let (low, high) = if from <= to { (from, to) } else { (to, from) };
        for byte in low..=high {
            self.insert(byte);
        }
    }

    fn contains(&self, byte: u8) -> bool {
        self.0[usize::from(byte >> 6)] & (1 << (byte & 63)) != 0
    }

    fn complement(self) -> ByteSet {
        ByteSet(self.0.map(|word| !word))
    }
}

/// One unit of a parsed pattern; each matches exactly one key byte except `Star`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Byte(u8),
    AnyByte,
    Class(ByteSet),
    /// A run of one or more `*`: Redis collapses them too.
    Star,
}

/// Redis's recursion gives up (answers "no match") when it nests deeper than
/// this many `*`; reproducing the limit keeps `KEYS` answers identical.
const REDIS_STAR_NESTING_LIMIT: usize = 1000;

/// A compiled Redis glob pattern over raw bytes (keys need not be UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: Box<[u8]>,
    tokens: Box<[Token]>,
    /// Redis cannot match at all once the pattern has more `*` runs followed
    /// by something than its nesting limit allows.
    unmatchable: bool,
    /// The exact key matched, when the pattern has no metacharacters.
    literal: Option<Box<[u8]>>,
}

impl Pattern {
    /// Parse a pattern. Every byte string is a valid pattern, as in Redis: an
    /// unclosed `[` takes the rest of the pattern as its set, a trailing `\`
    /// is a literal backslash.
    pub fn new(source: &[u8]) -> Pattern {
        let tokens = parse(source);
        let stars_followed = tokens
            .iter()
            .enumerate()
            .filter(|&(i, t)| *t == Token::Star && i + 1 < tokens.len())
            .count();
        let literal = tokens
            .iter()
            .map(|t| match t {
                Token::Byte(b) => Some(*b),
                _ => None,
            })
            .collect::<Option<Box<[u8]>>>();
        Pattern {
            source: source.into(),
            tokens: tokens.into(),
            unmatchable: stars_followed > REDIS_STAR_NESTING_LIMIT,
            literal,
        }
    }

    /// The pattern as given.
    pub fn as_bytes(&self) -> &[u8] {
        &self.source
    }

    /// Whether this is the pattern `*`, which `KEYS` and `SCAN` treat as "no
    /// filter" (so it also matches the empty key, which `stringmatchlen` would
    /// not). Callers may skip matching altogether.
    pub fn matches_everything(&self) -> bool {
        &*self.source == b"*"
    }

    /// The one key this pattern matches, when it has no metacharacters
    /// (escapes resolved): `KEYS` can then look the key up instead of walking.
    pub fn literal(&self) -> Option<&[u8]> {
        self.literal.as_deref()
    }

    /// Whether `key` matches, as `KEYS`/`SCAN MATCH` would decide in Redis.
    pub fn matches(&self, key: &[u8]) -> bool {
        if self.matches_everything() {
            return true;
        }
        if key.is_empty() {
            // stringmatchlen's loop never runs on an empty string, so only the
            // empty pattern matches it.
            return self.tokens.is_empty();
        }
        if self.unmatchable {
            return false;
        }
        glob(&self.tokens, key)
    }
}

/// Tokenize exactly as `stringmatchlen` walks the pattern. How many pattern
/// bytes a construct consumes never depends on the key, so parsing once
/// up front gives the same tokens the recursion would see.
fn parse(pattern: &[u8]) -> Vec<Token> {
    let len = pattern.len();
    let mut tokens = Vec::with_capacity(len);
    let mut i = 0;
    while i < len {
        match pattern[i] {
            b'*' => {
                if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
            }
            b'?' => tokens.push(Token::AnyByte),
            b'[' => {
                i += 1;
                let negated = pattern.get(i) == Some(&b'^');
                if negated {
                    i += 1;
                }
                let mut set = ByteSet::default();
                loop {
                    if i >= len {
                        // Unclosed: Redis steps back so its shared "advance one"
                        // lands exactly at the end of the pattern.
                        i -= 1;
                        break;
                    }
                    if pattern[i] == b'\\' && len - i >= 2 {
                        i += 1;
                        set.insert(pattern[i]);
                    } else if pattern[i] == b']' {
                        break;
                    } else if len - i >= 3 && pattern[i + 1] == b'-' {
                        // Redis checks for a range before `]`, so `[a-]` is the
                        // range from `]` to `a` and the class goes on.
                        set.insert_range(pattern[i], pattern[i + 2]);
                        i += 2;
                    } else {
                        set.insert(pattern[i]);
                    }
                    i += 1;
                }
                tokens.push(Token::Class(if negated { set.complement() } else { set }));
            }
            b'\\' if len - i >= 2 => {
                i += 1;
                tokens.push(Token::Byte(pattern[i]));
            }
            byte => tokens.push(Token::Byte(byte)),
        }
        i += 1;
    }
    tokens
}

/// Whole-key glob match. On a mismatch, only the most recent `*` is retried
/// one byte further: earlier stars never need to take more, because anything
/// they could give up the latest star can absorb (the same argument as
/// Redis's `skipLongerMatches`).
fn glob(tokens: &[Token], key: &[u8]) -> bool {
    let mut t = 0;
    let mut k = 0;
    // (token after the last star, key position that star's match ends at)
    let mut resume: Option<(usize, usize)> = None;
    while k < key.len() {
        let step = match tokens.get(t) {
            Some(Token::Star) => {
                resume = Some((t + 1, k));
                t += 1;
                continue;
            }
            Some(Token::Byte(b)) => *b == key[k],
            Some(Token::AnyByte) => true,
            Some(Token::Class(set)) => set.contains(key[k]),
            None => false,
        };
        if step {
            t += 1;
            k += 1;
        } else if let Some((after_star, star_end)) = resume {
            t = after_star;
            k = star_end + 1;
            resume = Some((after_star, star_end + 1));
        } else {
            return false;
        }
    }
    tokens[t..].iter().all(|token| *token == Token::Star)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A line-for-line port of Redis 7's recursive `stringmatchlen_impl`
    /// (case-sensitive), reading a NUL past the end as C does, used as the
    /// oracle the iterative matcher must agree with.
    fn redis_stringmatch(pattern: &[u8], string: &[u8]) -> bool {
        let mut skip_longer = false;
        redis_impl(pattern, 0, string, 0, &mut skip_longer, 0)
    }

    fn redis_impl(
        pat: &[u8],
        mut p: usize,
        s: &[u8],
        mut i: usize,
        skip_longer: &mut bool,
        nesting: usize,
    ) -> bool {
        let at = |j: usize| pat.get(j).copied().unwrap_or(0);
        if nesting > 1000 {
            return false;
        }
        while p < pat.len() && i < s.len() {
            match pat[p] {
                b'*' => {
                    while p < pat.len() && at(p + 1) == b'*' {
                        p += 1;
                    }
                    if pat.len() - p == 1 {
                        return true;
                    }
                    while i < s.len() {
                        if redis_impl(pat, p + 1, s, i, skip_longer, nesting + 1) {
                            return true;
                        }
                        if *skip_longer {
                            return false;
                        }
                        i += 1;
                    }
                    *skip_longer = true;
                    return false;
                }
                b'?' => i += 1,
                b'[' => {
                    p += 1;
                    let not = at(p) == b'^';
                    if not {
                        p += 1;
                    }
                    let mut matched = false;
                    loop {
                        let remaining = pat.len() - p;
                        if at(p) == b'\\' && remaining >= 2 {
                            p += 1;
                            if at(p) == s[i] {
                                matched = true;
                            }
                        } else if at(p) == b']' {
                            break;
                        } else if remaining == 0 {
                            p -= 1;
                            break;
                        } else if remaining >= 3 && at(p + 1) == b'-' {
                            let (mut start, mut end) = (at(p), at(p + 2));
                            if start > end {
                                std::mem::swap(&mut start, &mut end);
                            }
                            p += 2;
                            if s[i] >= start && s[i] <= end {
                                matched = true;
                            }
                        } else if at(p) == s[i] {
                            matched = true;
                        }
                        p += 1;
                    }
                    if not {
                        matched = !matched;
                    }
                    if !matched {
                        return false;
                    }
                    i += 1;
                }
                first => {
                    if first == b'\\' && pat.len() - p >= 2 {
                        p += 1;
                    }
                    if at(p) != s[i] {
                        return false;
                    }
                    i += 1;
                }
            }
            p += 1;
            if i == s.len() {
                while at(p) == b'*' {
                    p += 1;
                }
                break;
            }
        }
        p >= pat.len() && i == s.len()
    }

    fn matches(pattern: &str, key: &str) -> bool {
        Pattern::new(pattern.as_bytes()).matches(key.as_bytes())
    }

    #[test]
    fn redis_documented_examples_match() {
        for key in ["hello", "hallo", "hxllo"] {
            assert!(matches("h?llo", key), "{key}");
        }
        for key in ["hllo", "heeeello"] {
            assert!(matches("h*llo", key), "{key}");
        }
        assert!(matches("h[ae]llo", "hello"));
        assert!(matches("h[ae]llo", "hallo"));
        assert!(!matches("h[ae]llo", "hillo"));
        assert!(matches("h[^e]llo", "hallo"));
        assert!(matches("h[^e]llo", "hbllo"));
        assert!(!matches("h[^e]llo", "hello"));
        assert!(matches("h[a-b]llo", "hallo"));
        assert!(matches("h[a-b]llo", "hbllo"));
        assert!(!matches("h[a-b]llo", "hcllo"));
    }

    #[test]
    fn keyspace_suite_patterns_select_the_same_keys() {
        let keys = ["key_x", "key_y", "key_z", "foo_a", "foo_b", "foo_c"];
        let foo: Vec<_> = keys.iter().filter(|k| matches("foo*", k)).collect();
        assert_eq!(foo, [&"foo_a", &"foo_b", &"foo_c"]);
        assert!(keys.iter().all(|k| matches("*", k)));
    }

    #[test]
    fn long_nested_star_pattern_answers_quickly_and_correctly() {
        // Redis's "Regression for pattern matching long nested loops".
        let key = "a".repeat(117);
        let pattern = "a*".repeat(32) + "b";
        assert!(!matches(&pattern, &key));
        assert!(matches(&("a*".repeat(32) + "a"), &key));
    }

    #[test]
    fn star_nesting_beyond_redis_limit_never_matches() {
        // Redis's "Regression for pattern matching very long nested loops":
        // the key would match as a glob, but Redis gives up past 1000 stars.
        let key = "a".repeat(50_000);
        assert!(!matches(&"*?".repeat(50_000), &key));
        assert!(matches(&"*?".repeat(1000), &key));
        assert_eq!(
            matches(&"*?".repeat(1001), &key),
            redis_stringmatch("*?".repeat(1001).as_bytes(), key.as_bytes())
        );
        assert!(!matches(&"*?".repeat(1001), &key));
        // Only stars followed by something count: a final star is no nesting.
        assert!(matches(&("?*".repeat(1000) + "*"), &key));
    }

    #[test]
    fn reversed_range_is_the_same_range() {
        assert!(matches("[z-a]", "m"));
        assert!(!matches("[z-a]", "A"));
    }

    #[test]
    fn escapes_make_metacharacters_literal() {
        assert!(matches(r"a\*b", "a*b"));
        assert!(!matches(r"a\*b", "axb"));
        assert!(matches(r"\?", "?"));
        assert!(!matches(r"\?", "x"));
        assert!(matches(r"[\]]", "]"));
        assert!(matches(r"[\-a]", "-"));
        // A trailing backslash is a literal backslash.
        assert!(matches("a\\", "a\\"));
    }

    #[test]
    fn unclosed_bracket_takes_the_rest_as_its_set() {
        assert!(matches("[abc", "b"));
        assert!(!matches("[abc", "d"));
        assert!(!matches("x[", "x"));
        assert!(matches("[^", "q"));
    }

    #[test]
    fn dash_before_closing_bracket_is_a_range_to_it() {
        // `[a-]` is the range `]`..`a`, and the class continues past the `]`.
        assert!(matches("[a-]x]", "_"));
        assert!(matches("[a-]x]", "x"));
        assert!(!matches("[a-]x]", "b"));
    }

    #[test]
    fn non_utf8_bytes_match_by_value() {
        let pattern = Pattern::new(b"\xff*\x80[\x90-\xa0]");
        assert!(pattern.matches(b"\xff\x00\x01\x80\x95"));
        assert!(!pattern.matches(b"\xff\x80\xb0"));
    }

    #[test]
    fn empty_key_matches_only_empty_pattern_or_lone_star() {
        assert!(matches("", ""));
        assert!(matches("*", ""));
        assert!(!matches("**", ""));
        assert!(!matches("?", ""));
        assert!(!matches("", "a"));
    }

    #[test]
    fn literal_is_reported_only_without_metacharacters() {
        assert_eq!(Pattern::new(b"user:42").literal(), Some(&b"user:42"[..]));
        assert_eq!(Pattern::new(br"a\*").literal(), Some(&b"a*"[..]));
        assert_eq!(Pattern::new(b"user:*").literal(), None);
        assert_eq!(Pattern::new(b"[a]").literal(), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn agrees_with_redis_recursion(
            pattern in proptest::collection::vec(
                prop::sample::select(b"ab*?[]^-\\".to_vec()), 0..10),
            key in proptest::collection::vec(
                prop::sample::select(b"ab-]^*\\".to_vec()), 0..10),
        ) {
            let compiled = Pattern::new(&pattern);
            let expected = compiled.matches_everything() || redis_stringmatch(&pattern, &key);
            prop_assert_eq!(compiled.matches(&key), expected);
        }

        #[test]
        fn pattern_without_metacharacters_matches_only_itself(
            literal in proptest::collection::vec(
                any::<u8>().prop_filter("no metacharacter", |b| !b"*?[\\".contains(b)), 0..12),
            other in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let pattern = Pattern::new(&literal);
            prop_assert!(pattern.matches(&literal));
            prop_assert_eq!(pattern.matches(&other), other == literal);
            prop_assert_eq!(pattern.literal(), Some(&literal[..]));
        }
    }
}
