//! String commands: GET, SET and its options and its older forms (SETNX,
//! SETEX, PSETEX, GETSET), GETDEL, GETEX, APPEND, STRLEN, MGET, MSET, and the
//! counters.

use super::*;

pub(super) fn get(call: &mut Call<'_>) -> Result<(), CommandError> {
    let value = call.engine().get(&call.args[1]);
    resp::write_optional_bulk(call.out, value.as_deref());
    if call.observed {
        call.reply = Some(Response::Value(value));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ExpiryOption {
    Ex,
    Px,
    ExAt,
    PxAt,
}

const EXPIRY_OPTIONS: [(&str, ExpiryOption); 4] = [
    ("ex", ExpiryOption::Ex),
    ("px", ExpiryOption::Px),
    ("exat", ExpiryOption::ExAt),
    ("pxat", ExpiryOption::PxAt),
];

/// Redis's `getExpireMillisecondsOrReply`: the deadline `value` means for
/// `kind`, with a zero or negative time and any overflow reported as an
/// invalid expire time of `command`.
fn expiry_deadline(
    call: &Call<'_>,
    command: &str,
    kind: ExpiryOption,
    value: &[u8],
) -> Result<Millis, CommandError> {
    let invalid = || invalid_expire_time(command);
    let amount = integer_arg(value)?;
    let seconds = matches!(kind, ExpiryOption::Ex | ExpiryOption::ExAt);
    if amount <= 0 || (seconds && amount > i64::MAX / 1000) {
        return Err(invalid());
    }
    let millis = if seconds { amount * 1000 } else { amount };
    let deadline = match kind {
        ExpiryOption::Ex | ExpiryOption::Px => millis.checked_add(now(call)).ok_or_else(invalid)?,
        ExpiryOption::ExAt | ExpiryOption::PxAt => millis,
    };
    Ok(deadline as Millis)
}

pub(super) fn set(call: &mut Call<'_>) -> Result<(), CommandError> {
    let args = call.args;
    let mut condition = SetCondition::Always;
    let mut reply_previous = false;
    let mut keep_ttl = false;
    let mut expiry: Option<(ExpiryOption, &Bytes)> = None;
    // Redis's parseExtendedStringArgumentsOrReply: an option may repeat, but
    // NX/XX and the expiry forms exclude each other.
    let mut i = 3;
    while i < args.len() {
        let option = &args[i];
        let next = args.get(i + 1);
        let expiry_option = EXPIRY_OPTIONS
            .into_iter()
            .find(|(word, _)| is(option, word))
            .map(|(_, kind)| kind);
        if is(option, "nx") && condition != SetCondition::IfPresent {
            condition = SetCondition::IfAbsent;
        } else if is(option, "xx") && condition != SetCondition::IfAbsent {
            condition = SetCondition::IfPresent;
        } else if is(option, "get") {
            reply_previous = true;
        } else if is(option, "keepttl") && expiry.is_none() {
            keep_ttl = true;
        } else if let (Some(kind), Some(value)) = (expiry_option, next)
            && !keep_ttl
            && expiry.is_none_or(|(given, _)| given == kind)
        {
            expiry = Some((kind, value));
            i += 1;
        } else {
            return Err(SYNTAX_ERROR);
        }
        i += 1;
    }
    let expiry = match expiry {
        None if keep_ttl => SetExpiry::Keep,
        None => SetExpiry::Persist,
        Some((kind, value)) => SetExpiry::At(expiry_deadline(call, "set", kind, value)?),
    };
    // Key and value are slices of the connection's read buffer; the engine
    // copies what it keeps, so storing them pins no buffer.
    let outcome = call.engine().set(
        args[1].clone(),
        args[2].clone(),
        SetOptions { condition, expiry },
    );
    if reply_previous {
        resp::write_optional_bulk(call.out, outcome.previous.as_deref());
    } else if outcome.written {
        resp::write_simple(call.out, "OK");
        if call.observed {
            call.reply = Some(Response::Ok);
        }
    } else {
        resp::write_null_bulk(call.out);
    }
    Ok(())
}

pub(super) fn mget(call: &mut Call<'_>) -> Result<(), CommandError> {
    let values = call.engine().mget(&call.args[1..]);
    resp::write_array_len(call.out, values.len());
    for value in &values {
        resp::write_optional_bulk(call.out, value.as_deref());
    }
    Ok(())
}

pub(super) fn mset(call: &mut Call<'_>) -> Result<(), CommandError> {
    let args = &call.args[1..];
    if !args.len().is_multiple_of(2) {
        return Err(wrong_arity("mset"));
    }
    let pairs = args
        .chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    call.engine().mset(pairs);
    ok(call.out)
}

/// `SETNX key value`: `SET … NX` answering 1 or 0.
pub(super) fn setnx(call: &mut Call<'_>) -> Result<(), CommandError> {
    let options = SetOptions {
        condition: SetCondition::IfAbsent,
        expiry: SetExpiry::Persist,
    };
    let outcome = call
        .engine()
        .set(call.args[1].clone(), call.args[2].clone(), options);
    integer(call.out, i64::from(outcome.written))
}

fn set_expiring(
    call: &mut Call<'_>,
    command: &str,
    kind: ExpiryOption,
) -> Result<(), CommandError> {
    let deadline = expiry_deadline(call, command, kind, &call.args[2])?;
    let options = SetOptions {
        condition: SetCondition::Always,
        expiry: SetExpiry::At(deadline),
    };
    call.engine()
        .set(call.args[1].clone(), call.args[3].clone(), options);
    ok(call.out)
}

/// `SETEX key seconds value`.
pub(super) fn setex(call: &mut Call<'_>) -> Result<(), CommandError> {
    set_expiring(call, "setex", ExpiryOption::Ex)
}

/// `PSETEX key milliseconds value`.
pub(super) fn psetex(call: &mut Call<'_>) -> Result<(), CommandError> {
    set_expiring(call, "psetex", ExpiryOption::Px)
}

/// `GETSET key value`: `SET … GET`, which also clears the TTL.
pub(super) fn getset(call: &mut Call<'_>) -> Result<(), CommandError> {
    let outcome = call.engine().set(
        call.args[1].clone(),
        call.args[2].clone(),
        SetOptions::default(),
    );
    resp::write_optional_bulk(call.out, outcome.previous.as_deref());
    Ok(())
}

pub(super) fn getdel(call: &mut Call<'_>) -> Result<(), CommandError> {
    let key = &call.args[1];
    let value = call.atomically(&[key], |keyspace| {
        let value = keyspace.get(key);
        if value.is_some() {
            keyspace.del(std::slice::from_ref(key));
        }
        value
    });
    resp::write_optional_bulk(call.out, value.as_deref());
    Ok(())
}

/// `GETEX key [EX|PX|EXAT|PXAT time | PERSIST]`: the value, and the TTL
/// changed as asked (a deadline already past deletes the key).
pub(super) fn getex(call: &mut Call<'_>) -> Result<(), CommandError> {
    let args = call.args;
    let mut persist = false;
    let mut expiry: Option<(ExpiryOption, &Bytes)> = None;
    let mut i = 2;
    while i < args.len() {
        let option = &args[i];
        let kind = EXPIRY_OPTIONS
            .into_iter()
            .find(|(word, _)| is(option, word))
            .map(|(_, kind)| kind);
        if is(option, "persist") && expiry.is_none() {
            persist = true;
        } else if let (Some(kind), Some(value)) = (kind, args.get(i + 1))
            && !persist
            && expiry.is_none_or(|(given, _)| given == kind)
        {
            expiry = Some((kind, value));
            i += 1;
        } else {
            return Err(SYNTAX_ERROR);
        }
        i += 1;
    }
    let deadline = match expiry {
        Some((kind, value)) => Some(expiry_deadline(call, "getex", kind, value)?),
        None => None,
    };
    let key = &args[1];
    let value = call.atomically(&[key], |keyspace| {
        let value = keyspace.get(key)?;
        if let Some(deadline) = deadline {
            keyspace.expire_at(key, deadline, ExpireCondition::Always);
        } else if persist {
            keyspace.persist(key);
        }
        Some(value)
    });
    resp::write_optional_bulk(call.out, value.as_deref());
    Ok(())
}

/// `APPEND key tail`: the new length; the key keeps its TTL.
pub(super) fn append(call: &mut Call<'_>) -> Result<(), CommandError> {
    let (key, tail) = (&call.args[1], &call.args[2]);
    let max = call.server.config.limits.max_bulk_len;
    let length = call.atomically(&[key], |keyspace| {
        let mut value = keyspace.get(key).map(BytesMut::from).unwrap_or_default();
        // Redis's checkStringLength, against the sidecar's own bulk limit.
        if value.len() + tail.len() > max {
            return Err(CommandError::new(
                "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
            ));
        }
        value.extend_from_slice(tail);
        let length = value.len();
        let options = SetOptions {
            condition: SetCondition::Always,
            expiry: SetExpiry::Keep,
        };
        keyspace.set(key.clone(), value.freeze(), options);
        Ok(length)
    })?;
    integer(call.out, count(length as u64))
}

pub(super) fn strlen(call: &mut Call<'_>) -> Result<(), CommandError> {
    let length = call
        .engine()
        .get(&call.args[1])
        .map_or(0, |value| value.len());
    integer(call.out, count(length as u64))
}

fn incr_by(call: &mut Call<'_>, delta: i64) -> Result<(), CommandError> {
    match call.engine().incr_by(&call.args[1], delta) {
        Ok(value) => integer(call.out, value),
        Err(error) => Err(CommandError::new(format!("ERR {error}"))),
    }
}

pub(super) fn incr(call: &mut Call<'_>) -> Result<(), CommandError> {
    incr_by(call, 1)
}

pub(super) fn decr(call: &mut Call<'_>) -> Result<(), CommandError> {
    incr_by(call, -1)
}

pub(super) fn incrby(call: &mut Call<'_>) -> Result<(), CommandError> {
    let delta = integer_arg(&call.args[2])?;
    incr_by(call, delta)
}

pub(super) fn decrby(call: &mut Call<'_>) -> Result<(), CommandError> {
    let delta = integer_arg(&call.args[2])?;
    // Negating i64::MIN overflows before the engine sees it.
    let delta = delta
        .checked_neg()
        .ok_or(CommandError::new("ERR decrement would overflow"))?;
    incr_by(call, delta)
}

#[cfg(test)]
mod tests {
    use crate::commands::test_client::*;

    #[test]
    fn get_and_set_round_trip_binary_values() {
        let mut c = Client::new();
        assert_eq!(c.run("GET k"), "$-1\r\n");
        assert_eq!(c.call(&[b"SET", b"k", b"a\r\nb"]), "+OK\r\n");
        assert_eq!(c.run("GET k"), "$4\r\na\r\nb\r\n");
    }

    #[test]
    fn set_conditions_and_get_option() {
        let mut c = Client::new();
        assert_eq!(c.run("SET k v1 XX"), "$-1\r\n");
        assert_eq!(c.run("SET k v1 NX"), "+OK\r\n");
        assert_eq!(c.run("SET k v2 NX"), "$-1\r\n");
        assert_eq!(
            c.run("SET k v2 NX GET"),
            bulk("v1"),
            "GET answers the old value"
        );
        assert_eq!(c.run("GET k"), bulk("v1"), "NX refused the write");
        assert_eq!(c.run("SET k v3 XX GET"), bulk("v1"));
        assert_eq!(c.run("SET new v GET"), "$-1\r\n");
        assert_eq!(
            c.run("SET k v4 nx nx"),
            "$-1\r\n",
            "repeating an option is allowed"
        );
    }

    #[test]
    fn set_expiry_options_use_the_engine_clock() {
        let mut c = Client::new();
        assert_eq!(c.run("SET a v EX 10"), "+OK\r\n");
        assert_eq!(c.run("PTTL a"), ":10000\r\n");
        assert_eq!(c.run("SET b v PX 1500"), "+OK\r\n");
        assert_eq!(c.run("PTTL b"), ":1500\r\n");
        assert_eq!(
            c.run(&format!("SET c v EXAT {}", START / 1000 + 20)),
            "+OK\r\n"
        );
        assert_eq!(c.run("PTTL c"), ":20000\r\n");
        assert_eq!(c.run(&format!("SET d v PXAT {}", START + 250)), "+OK\r\n");
        assert_eq!(c.run("PTTL d"), ":250\r\n");
        assert_eq!(c.run("SET a v2 KEEPTTL"), "+OK\r\n");
        assert_eq!(c.run("PTTL a"), ":10000\r\n");
        assert_eq!(c.run("SET a v3"), "+OK\r\n");
        assert_eq!(c.run("PTTL a"), ":-1\r\n", "a plain SET clears the TTL");
        c.clock.advance(1500);
        assert_eq!(c.run("GET b"), "$-1\r\n");
        assert_eq!(
            c.run("SET e v EX 1 EX 2"),
            "+OK\r\n",
            "the same expiry twice: the last wins"
        );
        assert_eq!(c.run("PTTL e"), ":2000\r\n");
    }

    #[test]
    fn set_rejects_bad_options_with_redis_texts() {
        let mut c = Client::new();
        for line in [
            "SET k v NX XX",
            "SET k v EX 10 PX 10",
            "SET k v KEEPTTL EX 10",
            "SET k v EX 10 KEEPTTL",
            "SET k v EX",
            "SET k v FOO",
        ] {
            assert_eq!(c.run(line), "-ERR syntax error\r\n", "{line}");
        }
        for line in [
            "SET k v EX 0",
            "SET k v PX -5",
            "SET k v EX 9223372036854776",
            "SET k v PX 9223372036854775807",
        ] {
            assert_eq!(
                c.run(line),
                "-ERR invalid expire time in 'set' command\r\n",
                "{line}"
            );
        }
        assert_eq!(
            c.run("SET k v EX ten"),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(c.run("EXISTS k"), ":0\r\n", "nothing was written");
    }

    #[test]
    fn multi_key_commands() {
        let mut c = Client::new();
        assert_eq!(c.run("MSET a 1 b 2 a 3"), "+OK\r\n");
        assert_eq!(
            c.run("MGET a b c"),
            format!("*3\r\n{}{}$-1\r\n", bulk("3"), bulk("2"))
        );
        assert_eq!(c.run("EXISTS a a c"), ":2\r\n");
        assert_eq!(c.run("DEL a c"), ":1\r\n");
        assert_eq!(c.run("UNLINK b"), ":1\r\n");
        assert_eq!(c.run("DBSIZE"), ":0\r\n");
    }

    #[test]
    fn counters_and_their_errors() {
        let mut c = Client::new();
        assert_eq!(c.run("INCR n"), ":1\r\n");
        assert_eq!(c.run("INCRBY n 10"), ":11\r\n");
        assert_eq!(c.run("DECR n"), ":10\r\n");
        assert_eq!(c.run("DECRBY n -5"), ":15\r\n");
        let not_integer = "-ERR value is not an integer or out of range\r\n";
        assert_eq!(c.run("INCRBY n 1.5"), not_integer);
        assert_eq!(c.run("INCRBY n 01"), not_integer);
        assert_eq!(c.run("SET s abc"), "+OK\r\n");
        assert_eq!(c.run("INCR s"), not_integer);
        assert_eq!(c.run(&format!("SET m {}", i64::MAX)), "+OK\r\n");
        assert_eq!(
            c.run("INCR m"),
            "-ERR increment or decrement would overflow\r\n"
        );
        assert_eq!(
            c.run("DECRBY n -9223372036854775808"),
            "-ERR decrement would overflow\r\n"
        );
        assert_eq!(c.run("GET n"), bulk("15"));
    }
}
