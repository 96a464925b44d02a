//! What one command seen in `MONITOR` did to keys, for the restore: the
//! value a plain `SET`/`GETSET`/`MSET` left, a delete (`DEL`, `UNLINK`,
//! `GETDEL`, `RENAME`'s source, `FLUSHDB`, `FLUSHALL`), or "written, value
//! unknown" for everything else that may write — and any command this module
//! does not know counts as writing every argument it names, so nothing the
//! application does to a stormed key can go unseen. Commands inside
//! `MULTI`/`EXEC` and a script's commands (`lua` lines) show up one by one
//! as they run, so they need nothing of their own here.

use crate::restore::AppWrite;

/// One effect of a command. Keys are candidates: the caller keeps only the
/// stormed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect<'a> {
    Write(&'a [u8], AppWrite),
    /// Every key of the database deleted.
    Flush,
    /// Every key of the database replaced by unknown contents (`SWAPDB`).
    EverythingUnknown,
}

/// Commands that write no key (their arguments may still name keys).
const READS: &[&str] = &[
    "asking",
    "auth",
    "bitcount",
    "bitpos",
    "client",
    "cluster",
    "command",
    "config",
    "dbsize",
    "discard",
    "dump",
    "echo",
    "eval_ro",
    "evalsha_ro",
    "exec",
    "exists",
    "expiretime",
    "fcall_ro",
    "get",
    "getbit",
    "getrange",
    "hello",
    "hexists",
    "hget",
    "hgetall",
    "hkeys",
    "hlen",
    "hmget",
    "hrandfield",
    "hscan",
    "hstrlen",
    "hvals",
    "info",
    "keys",
    "lastsave",
    "latency",
    "lcs",
    "lindex",
    "llen",
    "lpos",
    "lrange",
    "memory",
    "mget",
    "monitor",
    "multi",
    "object",
    "pexpiretime",
    "ping",
    "psubscribe",
    "pttl",
    "publish",
    "pubsub",
    "punsubscribe",
    "quit",
    "randomkey",
    "readonly",
    "readwrite",
    "reset",
    "role",
    "scan",
    "scard",
    "select",
    "sismember",
    "slowlog",
    "smembers",
    "smismember",
    "sort_ro",
    "srandmember",
    "sscan",
    "strlen",
    "subscribe",
    "substr",
    "time",
    "touch",
    "ttl",
    "type",
    "unsubscribe",
    "unwatch",
    "wait",
    "waitaof",
    "watch",
    "xinfo",
    "xlen",
    "xpending",
    "xrange",
    "xread",
    "xrevrange",
    "zcard",
    "zcount",
    "zlexcount",
    "zmscore",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrank",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore",
];

/// The effects of `args` (command name first) run in database `db` at
/// server time `at_ms` (Unix ms, for relative TTLs), for a restore of
/// database `ours`, pushed onto `out`.
pub(crate) fn effects<'a>(
    args: &'a [Vec<u8>],
    db: i64,
    ours: i64,
    at_ms: Option<u64>,
    out: &mut Vec<Effect<'a>>,
) {
    let Some(name) = args.first() else {
        return;
    };
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let unknown = |key: &'a Vec<u8>| Effect::Write(key, AppWrite::Unknown);
    let number =
        |arg: Option<&Vec<u8>>| -> Option<i64> { std::str::from_utf8(arg?).ok()?.parse().ok() };
    if db != ours {
        // Only what reaches into our database from another one.
        match name.as_str() {
            "flushall" => out.push(Effect::Flush),
            "swapdb" if number(args.get(1)) == Some(ours) || number(args.get(2)) == Some(ours) => {
                out.push(Effect::EverythingUnknown)
            }
            "move" if number(args.get(2)) == Some(ours) => out.extend(args.get(1).map(unknown)),
            "copy" => {
                let into_ours = args
                    .iter()
                    .skip(3)
                    .position(|a| a.eq_ignore_ascii_case(b"db"))
                    .is_some_and(|at| number(args.get(3 + at + 1)) == Some(ours));
                if into_ours {
                    out.extend(args.get(2).map(unknown));
                }
            }
            _ => {}
        }
        return;
    }
    match name.as_str() {
        "set" if args.len() >= 3 => {
            out.push(Effect::Write(
                &args[1],
                set_write(&args[2], &args[3..], at_ms),
            ));
        }
        "setex" | "psetex" if args.len() == 4 => {
            let unit: &[u8] = if name == "setex" { b"EX" } else { b"PX" };
            let options = [unit.to_vec(), args[2].clone()];
            out.push(Effect::Write(
                &args[1],
                set_write(&args[3], &options, at_ms),
            ));
        }
        "getset" if args.len() == 3 => {
            out.push(Effect::Write(
                &args[1],
                AppWrite::Set(args[2].clone().into()),
            ));
        }
        "mset" if args.len() % 2 == 1 => {
            for pair in args[1..].chunks(2) {
                out.push(Effect::Write(
                    &pair[0],
                    AppWrite::Set(pair[1].clone().into()),
                ));
            }
        }
        "del" | "unlink" => {
            out.extend(
                args[1..]
                    .iter()
                    .map(|k| Effect::Write(k, AppWrite::Deleted)),
            );
        }
        "getdel" => out.extend(args.get(1).map(|k| Effect::Write(k, AppWrite::Deleted))),
        "rename" if args.len() == 3 => {
            out.push(Effect::Write(&args[1], AppWrite::Deleted));
            out.push(unknown(&args[2]));
        }
        "flushdb" | "flushall" => out.push(Effect::Flush),
        "swapdb" => {
            if number(args.get(1)) == Some(ours) || number(args.get(2)) == Some(ours) {
                out.push(Effect::EverythingUnknown);
            }
        }
        "getex" if args.len() == 2 => {}
        "eval" | "evalsha" | "fcall" => {
            // The script's own commands follow as `lua` lines; its declared
            // keys count as written in case a server does not show them.
            let keys = number(args.get(2)).unwrap_or(0).max(0) as usize;
            out.extend(args.iter().skip(3).take(keys).map(unknown));
        }
        name if READS.contains(&name) => {}
        // SETEX, SETNX, MSETNX, APPEND, INCR…, EXPIRE…, PERSIST, RENAMENX,
        // COPY, MOVE, RESTORE, list/hash/set writes, and commands unknown
        // here: every argument that is a stormed key.
        _ => out.extend(args[1..].iter().map(unknown)),
    }
}

/// What `SET key value OPTIONS` left, run at `at_ms`: `GET` only returns
/// the old value; one expiry (`EX`/`PX` relative to the command's time,
/// `EXAT`/`PXAT` absolute) gives a value expiring then; `NX`, `XX`,
/// `KEEPTTL` or anything else makes the outcome depend on what was there.
fn set_write(value: &[u8], options: &[Vec<u8>], at_ms: Option<u64>) -> AppWrite {
    let mut expiry: Option<u64> = None;
    let mut i = 0;
    while i < options.len() {
        let option = options[i].to_ascii_uppercase();
        if option == b"GET" {
            i += 1;
            continue;
        }
        let amount = options
            .get(i + 1)
            .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok())
            .filter(|n| *n > 0);
        let deadline = match (option.as_slice(), amount, at_ms) {
            (b"EX", Some(n), Some(at)) => n.checked_mul(1000).and_then(|ms| at.checked_add(ms)),
            (b"PX", Some(n), Some(at)) => at.checked_add(n),
            (b"EXAT", Some(n), _) => n.checked_mul(1000),
            (b"PXAT", Some(n), _) => Some(n),
            _ => None,
        };
        match (deadline, expiry) {
            (Some(at), None) => expiry = Some(at),
            _ => return AppWrite::Unknown,
        }
        i += 2;
    }
    match expiry {
        None => AppWrite::Set(value.to_vec().into()),
        Some(at_unix_ms) => AppWrite::SetExpiring {
            value: value.to_vec().into(),
            at_unix_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(command: &str, db: i64) -> Vec<(String, AppWrite)> {
        let args: Vec<Vec<u8>> = command.split(' ').map(|a| a.as_bytes().to_vec()).collect();
        let mut out = Vec::new();
        effects(&args, db, 0, Some(1_000_000), &mut out);
        out.into_iter()
            .map(|e| match e {
                Effect::Write(k, w) => (String::from_utf8_lossy(k).into_owned(), w),
                Effect::Flush => ("*".into(), AppWrite::Deleted),
                Effect::EverythingUnknown => ("*".into(), AppWrite::Unknown),
            })
            .collect()
    }

    fn set(v: &str) -> AppWrite {
        AppWrite::Set(v.as_bytes().to_vec().into())
    }

    #[test]
    fn plain_writes_carry_their_value() {
        assert_eq!(run("SET k v", 0), [("k".into(), set("v"))]);
        assert_eq!(run("set k v get", 0), [("k".into(), set("v"))]);
        assert_eq!(run("GETSET k v", 0), [("k".into(), set("v"))]);
        assert_eq!(
            run("MSET a 1 b 2", 0),
            [("a".into(), set("1")), ("b".into(), set("2"))]
        );
    }

    #[test]
    fn writes_with_a_ttl_carry_their_deadline() {
        let expiring = |v: &str, at_unix_ms: u64| AppWrite::SetExpiring {
            value: v.as_bytes().to_vec().into(),
            at_unix_ms,
        };
        // The command ran at 1,000,000 ms.
        assert_eq!(
            run("SET k v EX 10", 0),
            [("k".into(), expiring("v", 1_010_000))]
        );
        assert_eq!(
            run("set k v px 5 get", 0),
            [("k".into(), expiring("v", 1_000_005))]
        );
        assert_eq!(
            run("SET k v EXAT 2000", 0),
            [("k".into(), expiring("v", 2_000_000))]
        );
        assert_eq!(run("SET k v PXAT 7", 0), [("k".into(), expiring("v", 7))]);
        assert_eq!(
            run("SETEX k 3 v", 0),
            [("k".into(), expiring("v", 1_003_000))]
        );
        assert_eq!(
            run("PSETEX k 3 v", 0),
            [("k".into(), expiring("v", 1_000_003))]
        );
        for command in [
            "SET k v EX 0",
            "SET k v EX 1 PX 1",
            "SET k v EX x",
            "SETEX k -1 v",
        ] {
            assert_eq!(
                run(command, 0),
                [("k".into(), AppWrite::Unknown)],
                "{command}"
            );
        }
    }

    #[test]
    fn deletes_are_deletes() {
        assert_eq!(
            run("DEL a b", 0),
            [
                ("a".into(), AppWrite::Deleted),
                ("b".into(), AppWrite::Deleted)
            ]
        );
        assert_eq!(run("unlink a", 0), [("a".into(), AppWrite::Deleted)]);
        assert_eq!(run("GETDEL a", 0), [("a".into(), AppWrite::Deleted)]);
        assert_eq!(
            run("RENAME a b", 0),
            [
                ("a".into(), AppWrite::Deleted),
                ("b".into(), AppWrite::Unknown)
            ]
        );
        assert_eq!(run("FLUSHDB", 0), [("*".into(), AppWrite::Deleted)]);
        assert_eq!(run("FLUSHALL ASYNC", 3), [("*".into(), AppWrite::Deleted)]);
        assert_eq!(run("FLUSHDB", 3), [], "another database's flush");
    }

    #[test]
    fn everything_else_that_may_write_is_unknown() {
        for command in [
            "SET k v NX",
            "SET k v KEEPTTL",
            "SET k v XX EX 10",
            "SETNX k v",
            "APPEND k v",
            "INCR k",
            "INCRBYFLOAT k 1.5",
            "DECRBY k 2",
            "SETRANGE k 0 v",
            "EXPIRE k 10",
            "PEXPIREAT k 10",
            "PERSIST k",
            "GETEX k PERSIST",
            "LPUSH k v",
            "HSET k f v",
            "RESTORE k 0 payload",
            "SOMEFUTURECOMMAND k",
        ] {
            let out = run(command, 0);
            assert!(
                out.contains(&("k".into(), AppWrite::Unknown)),
                "{command}: {out:?}"
            );
        }
        assert_eq!(
            run("MSETNX a 1 b 2", 0)
                .into_iter()
                .filter(|(_, w)| *w == AppWrite::Unknown)
                .count(),
            4,
            "every argument is a candidate"
        );
        assert_eq!(
            run("EVAL script 2 a b x", 0),
            [
                ("a".into(), AppWrite::Unknown),
                ("b".into(), AppWrite::Unknown)
            ]
        );
        assert_eq!(run("SWAPDB 0 1", 0), [("*".into(), AppWrite::Unknown)]);
        assert_eq!(run("SWAPDB 1 0", 5), [("*".into(), AppWrite::Unknown)]);
        assert_eq!(run("MOVE k 0", 2), [("k".into(), AppWrite::Unknown)]);
        assert_eq!(run("COPY a k DB 0", 2), [("k".into(), AppWrite::Unknown)]);
        assert_eq!(run("SET k v", 1), [], "another database");
    }

    #[test]
    fn reads_write_nothing() {
        for command in [
            "GET k",
            "MGET k j",
            "EXISTS k",
            "PTTL k",
            "TTL k",
            "STRLEN k",
            "GETEX k",
            "SCAN 0 MATCH k",
            "WATCH k",
            "MULTI",
            "EXEC",
            "ECHO k",
            "TYPE k",
        ] {
            assert_eq!(run(command, 0), [], "{command}");
        }
    }
}
