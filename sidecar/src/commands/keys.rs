//! Keyspace commands: DEL, EXISTS, TOUCH, the expiry family, TYPE, RENAME,
//! COPY, SCAN, KEYS, RANDOMKEY, DBSIZE and the flushes.

use super::*;

pub(super) fn del(call: &mut Call<'_>) -> Result<(), CommandError> {
    let removed = call.engine().del(&call.args[1..]);
    if call.observed {
        call.reply = Some(Response::Count(removed));
    }
    integer(call.out, count(removed))
}

pub(super) fn exists(call: &mut Call<'_>) -> Result<(), CommandError> {
    let found = call.engine().exists(&call.args[1..]);
    if call.observed {
        call.reply = Some(Response::Count(found));
    }
    integer(call.out, count(found))
}

/// Redis's `expireGenericCommand`: options first, then the time, with overflow
/// of the unit conversion or of the base time reported as an invalid time.
fn expire_generic(
    call: &mut Call<'_>,
    name: &'static str,
    seconds: bool,
    absolute: bool,
) -> Result<(), CommandError> {
    let (condition, needs_ttl) = expire_condition(&call.args[3..])?;
    let mut when = integer_arg(&call.args[2])?;
    if seconds {
        when = when
            .checked_mul(1000)
            .ok_or_else(|| invalid_expire_time(name))?;
    }
    let base = if absolute { 0 } else { now(call) };
    let deadline = when
        .checked_add(base)
        .ok_or_else(|| invalid_expire_time(name))?;
    // A deadline before the epoch is simply in the past: the key goes.
    let deadline = deadline.max(0) as Millis;
    let key = &call.args[1];
    // `XX LT` has no engine condition of its own (LT alone treats a persistent
    // key as infinitely far, so it would set one); the TTL check before it is
    // not atomic with the update.
    if needs_ttl && !matches!(call.engine().ttl(key), Ttl::Remaining(_)) {
        return integer(call.out, 0);
    }
    let set = call.engine().expire_at(key, deadline, condition);
    integer(call.out, i64::from(set))
}

/// The engine condition for `NX|XX|GT|LT`, and whether the key must have a TTL
/// beyond what that condition checks (`XX LT`).
fn expire_condition(options: &[Bytes]) -> Result<(ExpireCondition, bool), CommandError> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in options {
        if is(option, "nx") {
            nx = true;
        } else if is(option, "xx") {
            xx = true;
        } else if is(option, "gt") {
            gt = true;
        } else if is(option, "lt") {
            lt = true;
        } else {
            return Err(CommandError::new(format!(
                "ERR Unsupported option {}",
                quoted_prefix(option, usize::MAX)
            )));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::new(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(CommandError::new(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    // A persistent key counts as infinitely far: GT already refuses it, so
    // `XX GT` is GT; LT accepts it, so `XX LT` needs the extra check.
    Ok(if nx {
        (ExpireCondition::IfNoTtl, false)
    } else if gt {
        (ExpireCondition::IfGreater, false)
    } else if lt {
        (ExpireCondition::IfLess, xx)
    } else if xx {
        (ExpireCondition::IfTtl, false)
    } else {
        (ExpireCondition::Always, false)
    })
}

pub(super) fn expire(call: &mut Call<'_>) -> Result<(), CommandError> {
    expire_generic(call, "expire", true, false)
}

pub(super) fn pexpire(call: &mut Call<'_>) -> Result<(), CommandError> {
    expire_generic(call, "pexpire", false, false)
}

pub(super) fn expireat(call: &mut Call<'_>) -> Result<(), CommandError> {
    expire_generic(call, "expireat", true, true)
}

pub(super) fn pexpireat(call: &mut Call<'_>) -> Result<(), CommandError> {
    expire_generic(call, "pexpireat", false, true)
}

fn ttl_generic(call: &mut Call<'_>, millis: bool) -> Result<(), CommandError> {
    let reply = match call.engine().ttl(&call.args[1]) {
        Ttl::Missing => -2,
        Ttl::Persistent => -1,
        Ttl::Remaining(left) => {
            let left = count(left);
            // Redis rounds to the nearest second.
            if millis {
                left
            } else {
                left.saturating_add(500) / 1000
            }
        }
    };
    integer(call.out, reply)
}

pub(super) fn ttl(call: &mut Call<'_>) -> Result<(), CommandError> {
    ttl_generic(call, false)
}

pub(super) fn pttl(call: &mut Call<'_>) -> Result<(), CommandError> {
    ttl_generic(call, true)
}

pub(super) fn persist(call: &mut Call<'_>) -> Result<(), CommandError> {
    let removed = call.engine().persist(&call.args[1]);
    integer(call.out, i64::from(removed))
}

pub(super) fn key_type(call: &mut Call<'_>) -> Result<(), CommandError> {
    let present = call.engine().exists(&call.args[1..2]) > 0;
    resp::write_simple(call.out, if present { "string" } else { "none" });
    Ok(())
}

/// `TOUCH`: how many of the keys exist (there is no access time to update).
pub(super) fn touch(call: &mut Call<'_>) -> Result<(), CommandError> {
    let found = call.engine().exists(&call.args[1..]);
    integer(call.out, count(found))
}

fn expiretime_generic(call: &mut Call<'_>, millis: bool) -> Result<(), CommandError> {
    let reply = match call.engine().expiry(&call.args[1]) {
        KeyExpiry::Missing => -2,
        KeyExpiry::Persistent => -1,
        KeyExpiry::At(deadline) => {
            let deadline = count(deadline);
            // Rounded to the nearest second, as Redis's ttlGenericCommand does.
            if millis {
                deadline
            } else {
                deadline.saturating_add(500) / 1000
            }
        }
    };
    integer(call.out, reply)
}

pub(super) fn expiretime(call: &mut Call<'_>) -> Result<(), CommandError> {
    expiretime_generic(call, false)
}

pub(super) fn pexpiretime(call: &mut Call<'_>) -> Result<(), CommandError> {
    expiretime_generic(call, true)
}

/// The TTL a key moved or copied to another name keeps.
fn kept_expiry(expiry: KeyExpiry) -> SetExpiry {
    match expiry {
        KeyExpiry::At(deadline) => SetExpiry::At(deadline),
        KeyExpiry::Missing | KeyExpiry::Persistent => SetExpiry::Persist,
    }
}

/// Redis's `renameGenericCommand`: the source must exist; renaming a key to
/// itself changes nothing; the TTL moves with the value.
fn rename_generic(call: &mut Call<'_>, only_if_absent: bool) -> Result<(), CommandError> {
    let (from, to) = (&call.args[1], &call.args[2]);
    let renamed = call.atomically(&[from, to], |keyspace| {
        let value = keyspace
            .get(from)
            .ok_or(CommandError::new("ERR no such key"))?;
        if from == to {
            return Ok(!only_if_absent);
        }
        if only_if_absent && keyspace.exists(std::slice::from_ref(to)) > 0 {
            return Ok(false);
        }
        let expiry = kept_expiry(keyspace.expiry(from));
        keyspace.del(std::slice::from_ref(from));
        let options = SetOptions {
            condition: SetCondition::Always,
            expiry,
        };
        keyspace.set(to.clone(), value, options);
        Ok(true)
    })?;
    if only_if_absent {
        integer(call.out, i64::from(renamed))
    } else {
        ok(call.out)
    }
}

pub(super) fn rename(call: &mut Call<'_>) -> Result<(), CommandError> {
    rename_generic(call, false)
}

pub(super) fn renamenx(call: &mut Call<'_>) -> Result<(), CommandError> {
    rename_generic(call, true)
}

/// `COPY source destination [DB index] [REPLACE]`: 1 when copied. There is
/// one database, so only `DB 0` is in range.
pub(super) fn copy(call: &mut Call<'_>) -> Result<(), CommandError> {
    let args = call.args;
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        if is(&args[i], "replace") {
            replace = true;
        } else if is(&args[i], "db") && i + 1 < args.len() {
            // Redis's getIntFromObjectOrReply.
            let index = integer_arg(&args[i + 1])?;
            if i32::try_from(index).is_err() {
                return Err(CommandError::new(
                    "ERR value is out of range, value must between -2147483648 and 2147483647",
                ));
            }
            if index != 0 {
                return Err(CommandError::new("ERR DB index is out of range"));
            }
            i += 1;
        } else {
            return Err(SYNTAX_ERROR);
        }
        i += 1;
    }
    let (from, to) = (&args[1], &args[2]);
    if from == to {
        return Err(CommandError::new(
            "ERR source and destination objects are the same",
        ));
    }
    let copied = call.atomically(&[from, to], |keyspace| {
        let Some(value) = keyspace.get(from) else {
            return false;
        };
        let expiry = kept_expiry(keyspace.expiry(from));
        let condition = if replace {
            SetCondition::Always
        } else {
            SetCondition::IfAbsent
        };
        keyspace
            .set(to.clone(), value, SetOptions { condition, expiry })
            .written
    });
    integer(call.out, i64::from(copied))
}

/// `RANDOMKEY`: a key from a random place in the keyspace, or nil when empty.
pub(super) fn randomkey(call: &mut Call<'_>) -> Result<(), CommandError> {
    let start = random_u64();
    let keyspace = call.engine();
    let mut cursor = start;
    let mut wrapped = false;
    let key = loop {
        let page = keyspace.scan(cursor, None, 16);
        if let Some(key) = page.keys.get((start as usize) % page.keys.len().max(1)) {
            break Some(key.clone());
        }
        if page.cursor == 0 {
            if wrapped {
                break None;
            }
            wrapped = true;
        }
        cursor = page.cursor;
    };
    resp::write_optional_bulk(call.out, key.as_deref());
    Ok(())
}

/// A fresh random number: std's hasher is seeded randomly per instance.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

/// Redis's `parseScanCursorOrReply`, which is C's `strtoul`: an optional
/// sign (a minus negates modulo 2^64), decimal digits (leading zeros allowed;
/// none at all reads as 0), nothing else, no overflow.
fn scan_cursor(text: &[u8]) -> Option<u64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        // strtoul consumed nothing: only the empty string passes.
        return text.is_empty().then_some(0);
    }
    let mut value: u64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

pub(super) fn scan(call: &mut Call<'_>) -> Result<(), CommandError> {
    let args = call.args;
    let cursor = scan_cursor(&args[1]).ok_or(CommandError::new("ERR invalid cursor"))?;
    let mut pattern = None;
    let mut count_hint = 10usize;
    let mut strings_wanted = true;
    let mut i = 2;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            return Err(SYNTAX_ERROR);
        };
        if is(&args[i], "count") {
            let n = parse_i64(value).ok_or(NOT_AN_INTEGER)?;
            if n < 1 {
                return Err(SYNTAX_ERROR);
            }
            count_hint = usize::try_from(n).unwrap_or(usize::MAX).min(SCAN_COUNT_MAX);
        } else if is(&args[i], "match") {
            let compiled = Pattern::new(value);
            pattern = (!compiled.matches_everything()).then_some(compiled);
        } else if is(&args[i], "type") {
            // Every key is a string; asking for another type finds nothing,
            // but the iteration still advances.
            strings_wanted = is(value, "string");
        } else {
            return Err(SYNTAX_ERROR);
        }
        i += 2;
    }
    let page = call.engine().scan(cursor, pattern.as_ref(), count_hint);
    let keys: &[Bytes] = if strings_wanted { &page.keys } else { &[] };
    resp::write_array_len(call.out, 2);
    resp::write_bulk(call.out, page.cursor.to_string().as_bytes());
    write_bulk_array(call.out, keys);
    Ok(())
}

fn write_bulk_array(out: &mut BytesMut, items: &[Bytes]) {
    resp::write_array_len(out, items.len());
    for item in items {
        resp::write_bulk(out, item);
    }
}

pub(super) fn keys(call: &mut Call<'_>) -> Result<(), CommandError> {
    let found = call.engine().keys(&Pattern::new(&call.args[1]));
    write_bulk_array(call.out, &found);
    Ok(())
}

pub(super) fn dbsize(call: &mut Call<'_>) -> Result<(), CommandError> {
    let keys = call.engine().len();
    integer(call.out, count(keys))
}

pub(super) fn flush(call: &mut Call<'_>) -> Result<(), CommandError> {
    match call.args {
        [_] => {}
        [_, mode] if is(mode, "async") || is(mode, "sync") => {}
        _ => return Err(SYNTAX_ERROR),
    }
    call.engine().clear();
    ok(call.out)
}

#[cfg(test)]
mod tests {
    use crate::commands::test_client::*;

    #[test]
    fn type_reports_string_or_none() {
        let mut c = Client::new();
        c.run("SET k v");
        assert_eq!(c.run("TYPE k"), "+string\r\n");
        assert_eq!(c.run("TYPE nope"), "+none\r\n");
    }

    #[test]
    fn expire_family_sets_deadlines() {
        let mut c = Client::new();
        c.run("SET k v");
        assert_eq!(c.run("EXPIRE nope 10"), ":0\r\n");
        assert_eq!(c.run("EXPIRE k 10"), ":1\r\n");
        assert_eq!(c.run("PTTL k"), ":10000\r\n");
        assert_eq!(c.run("PEXPIRE k 2500"), ":1\r\n");
        assert_eq!(c.run("PTTL k"), ":2500\r\n");
        assert_eq!(c.run(&format!("EXPIREAT k {}", START / 1000 + 7)), ":1\r\n");
        assert_eq!(c.run("PTTL k"), ":7000\r\n");
        assert_eq!(c.run(&format!("PEXPIREAT k {}", START + 1499)), ":1\r\n");
        assert_eq!(c.run("TTL k"), ":1\r\n", "1499 ms rounds to 1 s");
        assert_eq!(c.run("PEXPIRE k 1500"), ":1\r\n");
        assert_eq!(c.run("TTL k"), ":2\r\n", "1500 ms rounds to 2 s");
        assert_eq!(c.run("PERSIST k"), ":1\r\n");
        assert_eq!(c.run("PERSIST k"), ":0\r\n");
        assert_eq!(c.run("TTL k"), ":-1\r\n");
        assert_eq!(c.run("TTL nope"), ":-2\r\n");
        assert_eq!(c.run("EXPIRE k -1"), ":1\r\n", "a past deadline deletes");
        assert_eq!(c.run("EXISTS k"), ":0\r\n");
    }

    #[test]
    fn expire_conditions() {
        let mut c = Client::new();
        c.run("SET k v");
        assert_eq!(c.run("EXPIRE k 100 XX"), ":0\r\n");
        assert_eq!(
            c.run("EXPIRE k 100 GT"),
            ":0\r\n",
            "persistent counts as infinite"
        );
        assert_eq!(
            c.run("EXPIRE k 100 XX LT"),
            ":0\r\n",
            "XX still wants a TTL"
        );
        assert_eq!(c.run("EXPIRE k 100 NX"), ":1\r\n");
        assert_eq!(c.run("EXPIRE k 50 NX"), ":0\r\n");
        assert_eq!(c.run("EXPIRE k 50 GT"), ":0\r\n");
        assert_eq!(c.run("EXPIRE k 200 gt"), ":1\r\n");
        assert_eq!(c.run("EXPIRE k 300 LT"), ":0\r\n");
        assert_eq!(c.run("EXPIRE k 150 XX LT"), ":1\r\n");
        assert_eq!(c.run("TTL k"), ":150\r\n");
        c.run("SET p v");
        assert_eq!(
            c.run("EXPIRE p 100 LT"),
            ":1\r\n",
            "LT accepts a persistent key"
        );
    }

    #[test]
    fn expire_errors_match_redis() {
        let mut c = Client::new();
        c.run("SET k v");
        assert_eq!(
            c.run("EXPIRE k 10 NX XX"),
            "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
        );
        assert_eq!(
            c.run("EXPIRE k 10 GT LT"),
            "-ERR GT and LT options at the same time are not compatible\r\n"
        );
        assert_eq!(c.run("EXPIRE k 10 FOO"), "-ERR Unsupported option FOO\r\n");
        assert_eq!(
            c.run("EXPIRE k ten"),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(
            c.run("EXPIRE k 9223372036854775807"),
            "-ERR invalid expire time in 'expire' command\r\n"
        );
        assert_eq!(
            c.run("PEXPIRE k 9223372036854775807"),
            "-ERR invalid expire time in 'pexpire' command\r\n"
        );
        assert_eq!(
            c.run("EXPIREAT k 9223372036854775807"),
            "-ERR invalid expire time in 'expireat' command\r\n"
        );
        assert_eq!(c.run("TTL k"), ":-1\r\n", "no error changed the key");
    }

    /// Parse a SCAN reply: the next cursor and the keys.
    fn scan_reply(reply: &str) -> (u64, Vec<String>) {
        let lines: Vec<&str> = reply.split("\r\n").collect();
        assert_eq!(lines[0], "*2");
        let cursor = lines[2].parse().unwrap();
        let count: usize = lines[3][1..].parse().unwrap();
        let keys = (0..count).map(|i| lines[5 + 2 * i].to_string()).collect();
        (cursor, keys)
    }

    #[test]
    fn scan_iterates_every_key_once_through_cursors() {
        let mut c = Client::new();
        for i in 0..50 {
            c.run(&format!("SET key:{i} v"));
        }
        c.run("SET other v");
        let mut seen = Vec::new();
        let mut cursor = 0;
        let mut calls = 0;
        loop {
            let (next, keys) = scan_reply(&c.run(&format!("SCAN {cursor} MATCH key:* COUNT 7")));
            seen.extend(keys);
            calls += 1;
            cursor = next;
            if cursor == 0 {
                break;
            }
            assert!(calls < 1000, "the iteration ends");
        }
        seen.sort();
        seen.dedup();
        let mut expected: Vec<String> = (0..50).map(|i| format!("key:{i}")).collect();
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn scan_type_other_than_string_finds_nothing() {
        let mut c = Client::new();
        c.run("SET k v");
        let (_, keys) = scan_reply(&c.run("SCAN 0 TYPE hash COUNT 1000"));
        assert!(keys.is_empty());
        let (_, keys) = scan_reply(&c.run("SCAN 0 type STRING count 1000"));
        assert_eq!(keys, vec!["k".to_string()]);
    }

    #[test]
    fn scan_argument_errors() {
        let mut c = Client::new();
        assert_eq!(c.run("SCAN x"), "-ERR invalid cursor\r\n");
        assert_eq!(c.run("SCAN 1.5"), "-ERR invalid cursor\r\n");
        assert_eq!(c.run("SCAN +"), "-ERR invalid cursor\r\n");
        assert_eq!(
            c.run("SCAN 18446744073709551616"),
            "-ERR invalid cursor\r\n"
        );
        assert_eq!(c.call(&[b"SCAN", b" 1"]), "-ERR invalid cursor\r\n");
        assert_eq!(c.run("SCAN 0 COUNT 0"), "-ERR syntax error\r\n");
        assert_eq!(
            c.run("SCAN 0 COUNT x"),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(c.run("SCAN 0 MATCH"), "-ERR syntax error\r\n");
        assert_eq!(c.run("SCAN 0 FOO bar"), "-ERR syntax error\r\n");
    }

    #[test]
    fn keys_dbsize_and_flush() {
        let mut c = Client::new();
        c.run("MSET a 1 ab 2 b 3");
        let reply = c.run("KEYS a*");
        assert!(reply.starts_with("*2\r\n"), "{reply}");
        assert!(reply.contains(&bulk("a")) && reply.contains(&bulk("ab")));
        assert_eq!(c.run("DBSIZE"), ":3\r\n");
        assert_eq!(c.run("FLUSHDB"), "+OK\r\n");
        assert_eq!(c.run("DBSIZE"), ":0\r\n");
        c.run("SET a 1");
        assert_eq!(c.run("FLUSHALL foo"), "-ERR syntax error\r\n");
        assert_eq!(c.run("FLUSHALL ASYNC"), "+OK\r\n");
        assert_eq!(c.run("FLUSHDB sync"), "+OK\r\n");
        assert_eq!(c.run("DBSIZE"), ":0\r\n");
    }
}
