//! String commands: GET, SET and its options, MGET, MSET, and the counters.

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
        let expiry_option = [
            ("ex", ExpiryOption::Ex),
            ("px", ExpiryOption::Px),
            ("exat", ExpiryOption::ExAt),
            ("pxat", ExpiryOption::PxAt),
        ]
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
        Some((kind, value)) => {
            let invalid = || invalid_expire_time("set");
            let amount = integer_arg(value)?;
            let seconds = matches!(kind, ExpiryOption::Ex | ExpiryOption::ExAt);
            if amount <= 0 || (seconds && amount > i64::MAX / 1000) {
                return Err(invalid());
            }
            let millis = if seconds { amount * 1000 } else { amount };
            let deadline = match kind {
                ExpiryOption::Ex | ExpiryOption::Px => {
                    millis.checked_add(now(call)).ok_or_else(invalid)?
                }
                ExpiryOption::ExAt | ExpiryOption::PxAt => millis,
            };
            SetExpiry::At(deadline as Millis)
        }
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
