//! Transactions: `MULTI` queues commands, `EXEC` runs them as one atomic step
//! on the engine (see `engine::transaction`), `DISCARD` drops them, `WATCH`
//! makes `EXEC` run only if no watched key changed, `RESET` ends it all.
//!
//! Redis's rules, which clients retry by: a command that cannot be queued
//! (unknown, wrong arity) is answered with its error and makes `EXEC` answer
//! `EXECABORT` without running anything; a command that fails while `EXEC`
//! runs answers its error in its place and the others still run; a changed
//! watched key makes `EXEC` answer a null array.

use std::collections::HashSet;

use super::*;
use crate::engine::Watcher;

/// Per queued argument, what the queue costs beyond the argument's bytes.
const QUEUED_ARGUMENT_OVERHEAD: usize = 32;

/// The commands `MULTI` runs at once instead of queueing.
const RUN_AT_ONCE: &[&str] = &["exec", "discard", "multi", "watch", "quit", "reset"];

/// Between `MULTI` and `EXEC`.
#[derive(Default)]
pub(super) struct Multi {
    queued: Vec<Vec<Bytes>>,
    /// What the queue holds, bounded like the query buffer it came from.
    bytes: usize,
    /// A command could not be queued: `EXEC` will abort.
    failed: bool,
}

/// One connection's watched keys, registered with the engine until `EXEC`,
/// `DISCARD`, `UNWATCH`, `RESET` or the connection's end.
pub(super) struct WatchState {
    engine: Arc<dyn MapEngine>,
    watcher: Arc<Watcher>,
    keys: Vec<Bytes>,
    seen: HashSet<Bytes>,
    bytes: usize,
    /// The engine has already dropped the registrations (at `EXEC`).
    ended: bool,
}

impl Drop for WatchState {
    fn drop(&mut self) {
        if !self.ended {
            self.engine.unwatch(&self.watcher, &self.keys);
        }
    }
}

/// In `MULTI`: queue the command, or answer why it cannot be, and tell
/// whether it was consumed (`false` for the commands that run at once).
pub(super) fn queue(
    server: &Dispatcher,
    session: &mut Session,
    resolved: &Result<(usize, Handler), (usize, CommandError)>,
    args: &[Bytes],
    out: &mut BytesMut,
    started: Instant,
) -> bool {
    let written = out.len();
    let Some(multi) = session.multi.as_mut() else {
        return false;
    };
    let (slot, ok) = match resolved {
        Ok((slot, _)) if RUN_AT_ONCE.contains(&TABLE[*slot].name) => return false,
        Ok((slot, _)) => {
            let bytes: usize = args
                .iter()
                .map(|arg| arg.len() + QUEUED_ARGUMENT_OVERHEAD)
                .sum();
            let limit = server.config.limits.max_query_bytes;
            if multi.bytes + bytes > limit {
                multi.failed = true;
                resp::write_error(
                    out,
                    &format!(
                        "ERR transaction discarded: the queued commands would exceed \
                         client-query-buffer-limit ({limit} bytes)"
                    ),
                );
                (*slot, false)
            } else {
                multi.bytes += bytes;
                multi.queued.push(args.to_vec());
                resp::write_simple(out, "QUEUED");
                (*slot, true)
            }
        }
        Err((slot, error)) => {
            multi.failed = true;
            resp::write_error(out, error.text());
            (*slot, false)
        }
    };
    session.drop_reply_if_off(out, written);
    server.record(session, slot, ok, started.elapsed());
    true
}

/// Redis's execCommandAbort: an `EXEC` that cannot run (wrong arity), inside
/// `MULTI` or not, ends any transaction with its own reason.
pub(super) fn abort_exec(session: &mut Session, error: &CommandError, out: &mut BytesMut) {
    let written = out.len();
    session.multi = None;
    session.watch = None;
    let reason = error.text().strip_prefix("ERR ").unwrap_or(error.text());
    resp::write_error(
        out,
        &format!("EXECABORT Transaction discarded because of: {reason}"),
    );
    session.drop_reply_if_off(out, written);
}

/// `EXEC` inside `MULTI`: run the queue atomically. Whether it ran.
pub(super) fn run_exec(
    server: &Dispatcher,
    session: &mut Session,
    mut storm: Option<&mut StormTap>,
    out: &mut BytesMut,
) -> bool {
    let multi = session
        .multi
        .take()
        .expect("EXEC is intercepted only inside MULTI");
    let mut watch = session.watch.take();
    let written = out.len();
    if multi.failed {
        resp::write_error(
            out,
            "EXECABORT Transaction discarded because of previous errors.",
        );
        session.drop_reply_if_off(out, written);
        return false;
    }
    let watched = watch
        .as_ref()
        .map(|watch| (&watch.watcher, watch.keys.as_slice()));
    let ran = server
        .engine
        .transaction(footprint(&multi.queued), watched, &mut |keyspace| {
            // As in Redis, the array's length is sent even when a command
            // inside turns replies off.
            resp::write_array_len(out, multi.queued.len());
            session.drop_reply_if_off(out, written);
            for args in &multi.queued {
                server.run(
                    session,
                    storm.as_deref_mut(),
                    keyspace,
                    true,
                    resolve(args),
                    args,
                    out,
                    Instant::now(),
                );
            }
        });
    if let Some(watch) = &mut watch {
        watch.ended = true;
    }
    if !ran {
        resp::write_null_array(out);
        session.drop_reply_if_off(out, written);
    }
    true
}

/// The keys the queued commands name, or everything when one reaches every key.
fn footprint(queued: &[Vec<Bytes>]) -> Footprint<'_> {
    let mut keys = Vec::new();
    for args in queued {
        let Some(index) = lookup(TABLE, &args[0]) else {
            continue;
        };
        let spec = &TABLE[index];
        if WHOLE_KEYSPACE.contains(&spec.name) {
            return Footprint::Everything;
        }
        if let Some((first, last, step)) = key_range(spec, args) {
            keys.extend(
                args[first..=last]
                    .iter()
                    .step_by(step)
                    .map(|key| key.as_ref()),
            );
        }
    }
    Footprint::Keys(keys)
}

pub(super) fn multi(call: &mut Call<'_>) -> Result<(), CommandError> {
    if call.session.multi.is_some() {
        return Err(CommandError::new("ERR MULTI calls can not be nested"));
    }
    call.session.multi = Some(Multi::default());
    ok(call.out)
}

/// Outside `MULTI` (inside, the dispatcher runs the queue instead).
pub(super) fn exec(_call: &mut Call<'_>) -> Result<(), CommandError> {
    Err(CommandError::new("ERR EXEC without MULTI"))
}

pub(super) fn discard(call: &mut Call<'_>) -> Result<(), CommandError> {
    if call.session.multi.take().is_none() {
        return Err(CommandError::new("ERR DISCARD without MULTI"));
    }
    call.session.watch = None;
    ok(call.out)
}

pub(super) fn watch(call: &mut Call<'_>) -> Result<(), CommandError> {
    if call.session.multi.is_some() {
        return Err(CommandError::new("ERR WATCH inside MULTI is not allowed"));
    }
    let engine = &call.server.engine;
    let limit = call.server.config.limits.max_query_bytes;
    let state = call.session.watch.get_or_insert_with(|| WatchState {
        engine: engine.clone(),
        watcher: Watcher::new(),
        keys: Vec::new(),
        seen: HashSet::new(),
        bytes: 0,
        ended: false,
    });
    for key in &call.args[1..] {
        if state.seen.contains(key) {
            continue;
        }
        let bytes = key.len() + QUEUED_ARGUMENT_OVERHEAD;
        if state.bytes + bytes > limit {
            return Err(CommandError::new(format!(
                "ERR WATCH would hold more than client-query-buffer-limit ({limit} bytes) of keys"
            )));
        }
        // Copied: the arguments are slices of the connection's read buffer.
        let key = Bytes::copy_from_slice(key);
        engine.watch(&state.watcher, &key);
        state.bytes += bytes;
        state.seen.insert(key.clone());
        state.keys.push(key);
    }
    ok(call.out)
}

pub(super) fn unwatch(call: &mut Call<'_>) -> Result<(), CommandError> {
    call.session.watch = None;
    ok(call.out)
}

/// `RESET`: the connection as it was when it connected (no transaction, no
/// watches, replies on, no name), as Redis 7 does.
pub(super) fn reset(call: &mut Call<'_>) -> Result<(), CommandError> {
    let session = &mut *call.session;
    session.multi = None;
    session.watch = None;
    session.reply_off = false;
    session.skip_next_reply = false;
    call.server
        .stats
        .update_client(session.id, |record| record.name = None);
    resp::write_simple(call.out, "RESET");
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::commands::test_client::*;

    #[test]
    fn multi_queues_and_exec_answers_every_reply_in_order() {
        let mut c = Client::new();
        assert_eq!(c.run("MULTI"), "+OK\r\n");
        assert_eq!(c.run("SET a 1"), "+QUEUED\r\n");
        assert_eq!(c.run("INCR a"), "+QUEUED\r\n");
        assert_eq!(c.run("GET a"), "+QUEUED\r\n");
        assert_eq!(c.run("GET nope"), "+QUEUED\r\n");
        assert_eq!(
            c.run("EXEC"),
            format!("*4\r\n+OK\r\n:2\r\n{}$-1\r\n", bulk("2"))
        );
        assert_eq!(
            c.run("GET a"),
            bulk("2"),
            "the transaction took effect once"
        );
    }

    #[test]
    fn a_queueing_error_aborts_exec_and_runs_nothing() {
        let mut c = Client::new();
        for bad in ["NOSUCH x", "GET", "SET k"] {
            c.run("MULTI");
            assert_eq!(c.run("SET k v"), "+QUEUED\r\n");
            assert!(c.run(bad).starts_with("-ERR "), "{bad}");
            assert_eq!(
                c.run("EXEC"),
                "-EXECABORT Transaction discarded because of previous errors.\r\n"
            );
            assert_eq!(c.run("EXISTS k"), ":0\r\n", "{bad}: nothing ran");
            assert_eq!(c.run("EXEC"), "-ERR EXEC without MULTI\r\n");
        }
    }

    #[test]
    fn errors_inside_exec_answer_in_place_and_the_rest_still_runs() {
        let mut c = Client::new();
        c.run("SET s text");
        c.run("MULTI");
        c.run("INCR s");
        c.run("SET t 1");
        c.run("EXPIRE t ten");
        assert_eq!(
            c.run("EXEC"),
            "*3\r\n-ERR value is not an integer or out of range\r\n+OK\r\n\
             -ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(c.run("GET t"), bulk("1"));
    }

    #[test]
    fn transaction_state_errors_use_redis_texts() {
        let mut c = Client::new();
        assert_eq!(c.run("EXEC"), "-ERR EXEC without MULTI\r\n");
        assert_eq!(c.run("DISCARD"), "-ERR DISCARD without MULTI\r\n");
        c.run("MULTI");
        assert_eq!(c.run("MULTI"), "-ERR MULTI calls can not be nested\r\n");
        assert_eq!(
            c.run("WATCH k"),
            "-ERR WATCH inside MULTI is not allowed\r\n"
        );
        c.run("SET k v");
        assert_eq!(
            c.run("EXEC"),
            "*1\r\n+OK\r\n",
            "neither error aborts the transaction"
        );
        c.run("MULTI");
        assert_eq!(
            c.run("EXEC x"),
            "-EXECABORT Transaction discarded because of: \
             wrong number of arguments for 'exec' command\r\n"
        );
        assert_eq!(c.run("DISCARD"), "-ERR DISCARD without MULTI\r\n");
        c.run("MULTI");
        c.run("SET k w");
        assert_eq!(c.run("DISCARD"), "+OK\r\n");
        assert_eq!(c.run("GET k"), bulk("v"));
    }

    /// Something done to the watched key, by the watching client or another.
    type Change = dyn Fn(&mut Client, &mut Client);

    #[test]
    fn watch_aborts_exec_when_a_watched_key_changes() {
        let mut c = Client::new();
        let mut other = c.other();
        c.run("SET k 1");
        // A write by another client, by this one, a delete, an expiry and a
        // flush each count as a change.
        let changes: [&Change; 6] = [
            &|_, o| {
                o.run("SET k 2");
            },
            &|c, _| {
                c.run("INCR k");
            },
            &|_, o| {
                o.run("DEL k");
            },
            &|_, o| {
                o.run("PEXPIRE k 10");
                o.clock.advance(10);
            },
            &|_, o| {
                o.run("FLUSHALL");
            },
            &|_, o| {
                o.run("EXPIRE k 100");
            },
        ];
        for (i, change) in changes.iter().enumerate() {
            c.run("SET k 1");
            assert_eq!(c.run("WATCH k"), "+OK\r\n");
            change(&mut c, &mut other);
            c.run("MULTI");
            c.run("SET k mine");
            assert_eq!(c.run("EXEC"), "*-1\r\n", "change {i}");
            assert_ne!(c.run("GET k"), bulk("mine"), "change {i}");
        }
        // Unchanged, and refused writes do not count.
        c.run("SET k 1");
        c.run("WATCH k nope");
        other.run("SET k x NX");
        other.run("DEL nope");
        other.run("GET k");
        c.run("MULTI");
        c.run("SET k mine");
        assert_eq!(c.run("EXEC"), "*1\r\n+OK\r\n");
        // The watch ended with EXEC.
        other.run("SET k theirs");
        c.run("MULTI");
        c.run("SET k again");
        assert_eq!(c.run("EXEC"), "*1\r\n+OK\r\n");
    }

    #[test]
    fn unwatch_discard_and_reset_end_the_watch() {
        let mut c = Client::new();
        let mut other = c.other();
        for end in ["UNWATCH", "DISCARD", "RESET"] {
            c.run("WATCH k");
            if end == "DISCARD" {
                c.run("MULTI");
            }
            c.run(end);
            other.run("SET k changed");
            c.run("MULTI");
            c.run("SET k mine");
            assert_eq!(c.run("EXEC"), "*1\r\n+OK\r\n", "{end}");
        }
    }

    #[test]
    fn reset_leaves_multi_and_clears_the_name() {
        let mut c = Client::new();
        c.run("CLIENT SETNAME app");
        c.run("MULTI");
        c.run("SET k v");
        assert_eq!(c.run("RESET"), "+RESET\r\n");
        assert_eq!(c.run("EXEC"), "-ERR EXEC without MULTI\r\n");
        assert_eq!(c.run("EXISTS k"), ":0\r\n");
        assert_eq!(c.run("CLIENT GETNAME"), "$-1\r\n");
    }

    #[test]
    fn every_command_runs_inside_exec_within_its_footprint() {
        // 64 shards, so a key outside the footprint would very likely land on
        // a shard the transaction does not hold (which panics).
        let mut c = Client::with_shards(64);
        c.run("MSET a 1 b 2 c 3");
        let lines = [
            "GET a",
            "SET d 1 EX 100",
            "MGET a b c d e f",
            "MSET e 1 f 2 g 3",
            "DEL a x y",
            "UNLINK q r s",
            "EXISTS a b c d",
            "INCR n",
            "INCRBY n 2",
            "DECR n",
            "DECRBY n 2",
            "SETNX h 1",
            "SETEX i 10 v",
            "PSETEX j 100 v",
            "GETSET k v",
            "GETDEL b",
            "GETEX c EX 10",
            "APPEND l tail",
            "STRLEN l",
            "EXPIRE e 10",
            "PEXPIRE f 100",
            "EXPIREAT g 9999999999",
            "PEXPIREAT g 9999999999999",
            "TTL g",
            "PTTL g",
            "PERSIST g",
            "EXPIRETIME e",
            "PEXPIRETIME e",
            "TYPE e",
            "TOUCH e f g h",
            "RENAME e renamed",
            "RENAMENX f renamed2",
            "COPY g copied",
            "SCAN 0",
            "KEYS *",
            "DBSIZE",
            "RANDOMKEY",
            "PING",
            "ECHO x",
            "INFO keyspace",
            "CLIENT ID",
            "COMMAND COUNT",
            "CONFIG GET save",
            "UNWATCH",
            "FLUSHDB",
            "SET z 1",
            "FLUSHALL",
        ];
        c.run("MULTI");
        for line in lines {
            assert_eq!(c.run(line), "+QUEUED\r\n", "{line}");
        }
        let reply = c.run("EXEC");
        assert!(
            reply.starts_with(&format!("*{}\r\n", lines.len())),
            "{reply}"
        );
        for line in lines
            .iter()
            .filter(|l| !WHOLE.iter().any(|w| l.starts_with(w)))
        {
            // Each command alone, so no whole-keyspace command widens the footprint.
            c.run("MULTI");
            c.run(line);
            assert!(c.run("EXEC").starts_with("*1\r\n"), "{line}");
        }
    }

    const WHOLE: [&str; 6] = ["SCAN", "KEYS", "DBSIZE", "RANDOMKEY", "INFO", "FLUSH"];

    #[test]
    fn the_queue_is_bounded_by_the_query_buffer_limit() {
        let mut c = Client::with_query_limit(1000);
        c.run("MULTI");
        let big = "x".repeat(600);
        assert_eq!(c.run(&format!("SET a {big}")), "+QUEUED\r\n");
        let refused = c.run(&format!("SET b {big}"));
        assert!(
            refused.starts_with("-ERR transaction discarded") && refused.contains("1000 bytes"),
            "{refused}"
        );
        assert_eq!(
            c.run("EXEC"),
            "-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
        assert_eq!(c.run("DBSIZE"), ":0\r\n");
    }
}
