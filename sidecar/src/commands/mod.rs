//! The command table and how a command is dispatched: arity, the metrics, and
//! the helpers every handler shares. The handlers live in one module per
//! section of Redis's command list (strings, keys, connection, server); each
//! parses its arguments, calls the engine and writes the reply, with Redis
//! 7.0's reply shapes and error texts, which clients match on. The sidecar speaks RESP2 only (`HELLO 3` is
//! refused with `NOPROTO`), has one database, and no authentication.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mapchaos_storm::app_traffic::AppOp;
use mapchaos_storm::client::Response;
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{Histogram, IntCounter};

mod connection;
mod keys;
mod server;
mod strings;
#[cfg(test)]
mod test_client;
mod transactions;

use connection::{
    auth, client_getname, client_id, client_info, client_kill, client_list, client_no_evict,
    client_reply, client_setinfo, client_setname, echo, hello, ping, quit, select,
};
use keys::{
    copy, dbsize, del, exists, expire, expireat, expiretime, flush, key_type, keys, persist,
    pexpire, pexpireat, pexpiretime, pttl, randomkey, rename, renamenx, scan, touch, ttl,
};
use server::{
    command_all, command_count, command_docs, command_info, command_list, config_get, config_set,
    info,
};
use strings::{
    append, decr, decrby, get, getdel, getex, getset, incr, incrby, mget, mset, psetex, set, setex,
    setnx, strlen,
};
use transactions::{Multi, WatchState, discard, exec, multi, reset, unwatch, watch};

use crate::app_probe::{KeyAccess, StormTap};
use crate::audit;

use crate::engine::{
    ExpireCondition, Footprint, KeyExpiry, Keyspace, MapEngine, Millis, Pattern, SetCondition,
    SetExpiry, SetOptions, Ttl,
};
use crate::memory;
use crate::metrics::SidecarMetrics;
use crate::resp::{self, parse_i64};
use crate::server::{ClientRecord, ServerConfig, ServerStats};

/// The Redis version the sidecar answers as. Clients gate features on it; 7.0
/// is the command set and reply shapes implemented here.
pub(crate) const REDIS_VERSION: &str = "7.0.0";

/// `SCAN … COUNT` is a hint; past this the engine is asked for no more per call,
/// so a client cannot make one call walk or buffer an unbounded amount.
const SCAN_COUNT_MAX: usize = 1 << 20;

/// An error reply. The text starts with the error code (`ERR`, `NOPROTO`,
/// `WRONGPASS`), as on the wire without the leading `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandError(Cow<'static, str>);

impl CommandError {
    fn new(text: impl Into<Cow<'static, str>>) -> Self {
        CommandError(text.into())
    }

    pub(crate) fn text(&self) -> &str {
        &self.0
    }
}

const SYNTAX_ERROR: CommandError = CommandError(Cow::Borrowed("ERR syntax error"));
const NOT_AN_INTEGER: CommandError =
    CommandError(Cow::Borrowed("ERR value is not an integer or out of range"));
const WRONG_PASS: CommandError = CommandError(Cow::Borrowed(
    "WRONGPASS invalid username-password pair or user is disabled.",
));

type Handler = fn(&mut Call<'_>) -> Result<(), CommandError>;

/// One command (or subcommand) of the table.
struct CommandSpec {
    /// Lowercase, as Redis reports it.
    name: &'static str,
    /// Redis's convention: `n` exactly n arguments with the name, `-n` at least n.
    arity: i32,
    /// For `COMMAND`'s replies.
    flags: &'static [&'static str],
    /// First key, last key, step (for `COMMAND`'s replies).
    keys: (i64, i64, i64),
    run: Run,
}

enum Run {
    Handler(Handler),
    /// A command with subcommands; `own` runs when it is given alone.
    Container {
        own: Option<Handler>,
        subcommands: &'static [CommandSpec],
    },
}

const fn command(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    handler: Handler,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys,
        run: Run::Handler(handler),
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const ALL_KEYS: (i64, i64, i64) = (1, -1, 1);
const READ: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write", "denyoom"];
const WRITE_FAST: &[&str] = &["write", "fast"];
const WRITE_FAST_DENYOOM: &[&str] = &["write", "denyoom", "fast"];
/// Redis's flags for the commands a client may send before authenticating.
const CONNECTION: &[&str] = &[
    "noscript",
    "loading",
    "stale",
    "fast",
    "no_auth",
    "allow_busy",
];
const CLIENT_SUBCOMMAND: &[&str] = &["noscript", "loading", "stale"];
const TRANSACTION: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];

/// The commands that reach every key though they name none: inside a
/// transaction they need every shard.
const WHOLE_KEYSPACE: &[&str] = &[
    "scan",
    "keys",
    "dbsize",
    "flushdb",
    "flushall",
    "info",
    "randomkey",
];

/// Every command, the most frequent first (lookup walks the table).
static TABLE: &[CommandSpec] = &[
    command("get", 2, READ, ONE_KEY, get),
    command("set", -3, WRITE, ONE_KEY, set),
    command("del", -2, &["write"], ALL_KEYS, del),
    command("mget", -2, READ, ALL_KEYS, mget),
    command("mset", -3, WRITE, (1, -1, 2), mset),
    command("exists", -2, READ, ALL_KEYS, exists),
    command("incr", 2, &["write", "denyoom", "fast"], ONE_KEY, incr),
    command("incrby", 3, &["write", "denyoom", "fast"], ONE_KEY, incrby),
    command("decr", 2, &["write", "denyoom", "fast"], ONE_KEY, decr),
    command("decrby", 3, &["write", "denyoom", "fast"], ONE_KEY, decrby),
    command("setnx", 3, WRITE_FAST_DENYOOM, ONE_KEY, setnx),
    command("setex", 4, WRITE, ONE_KEY, setex),
    command("psetex", 4, WRITE, ONE_KEY, psetex),
    command("getset", 3, WRITE_FAST_DENYOOM, ONE_KEY, getset),
    command("getdel", 2, WRITE_FAST, ONE_KEY, getdel),
    command("getex", -2, WRITE_FAST, ONE_KEY, getex),
    command("append", 3, WRITE_FAST_DENYOOM, ONE_KEY, append),
    command("strlen", 2, READ, ONE_KEY, strlen),
    command("unlink", -2, WRITE_FAST, ALL_KEYS, del),
    command("expire", -3, WRITE_FAST, ONE_KEY, expire),
    command("pexpire", -3, WRITE_FAST, ONE_KEY, pexpire),
    command("expireat", -3, WRITE_FAST, ONE_KEY, expireat),
    command("pexpireat", -3, WRITE_FAST, ONE_KEY, pexpireat),
    command("ttl", 2, READ, ONE_KEY, ttl),
    command("pttl", 2, READ, ONE_KEY, pttl),
    command("persist", 2, WRITE_FAST, ONE_KEY, persist),
    command("expiretime", 2, READ, ONE_KEY, expiretime),
    command("pexpiretime", 2, READ, ONE_KEY, pexpiretime),
    command("type", 2, READ, ONE_KEY, key_type),
    command("touch", -2, READ, ALL_KEYS, touch),
    command("rename", 3, &["write"], (1, 2, 1), rename),
    command("renamenx", 3, WRITE_FAST, (1, 2, 1), renamenx),
    command("copy", -3, WRITE, (1, 2, 1), copy),
    command("randomkey", 1, &["readonly"], NO_KEYS, randomkey),
    command("scan", -2, &["readonly"], NO_KEYS, scan),
    command("keys", 2, &["readonly"], NO_KEYS, keys),
    command("dbsize", 1, READ, NO_KEYS, dbsize),
    command("ping", -1, &["fast"], NO_KEYS, ping),
    command("echo", 2, &["loading", "stale", "fast"], NO_KEYS, echo),
    command("flushdb", -1, &["write"], NO_KEYS, flush),
    command("flushall", -1, &["write"], NO_KEYS, flush),
    command("info", -1, &["loading", "stale"], NO_KEYS, info),
    command("select", 2, &["loading", "stale", "fast"], NO_KEYS, select),
    command("quit", -1, CONNECTION, NO_KEYS, quit),
    command("hello", -1, CONNECTION, NO_KEYS, hello),
    command("auth", -2, CONNECTION, NO_KEYS, auth),
    command("reset", 1, CONNECTION, NO_KEYS, reset),
    command("multi", 1, TRANSACTION, NO_KEYS, multi),
    command(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        NO_KEYS,
        exec,
    ),
    command("discard", 1, TRANSACTION, NO_KEYS, discard),
    command("watch", -2, TRANSACTION, ALL_KEYS, watch),
    command("unwatch", 1, TRANSACTION, NO_KEYS, unwatch),
    CommandSpec {
        name: "client",
        arity: -2,
        flags: &[],
        keys: NO_KEYS,
        run: Run::Container {
            own: None,
            subcommands: &[
                command("id", 2, CLIENT_SUBCOMMAND, NO_KEYS, client_id),
                command("getname", 2, CLIENT_SUBCOMMAND, NO_KEYS, client_getname),
                command("setname", 3, CLIENT_SUBCOMMAND, NO_KEYS, client_setname),
                command("setinfo", 4, CLIENT_SUBCOMMAND, NO_KEYS, client_setinfo),
                command(
                    "kill",
                    -3,
                    &["admin", "noscript", "loading", "stale"],
                    NO_KEYS,
                    client_kill,
                ),
                command("reply", 3, CLIENT_SUBCOMMAND, NO_KEYS, client_reply),
                command(
                    "no-evict",
                    3,
                    &["admin", "noscript", "loading", "stale"],
                    NO_KEYS,
                    client_no_evict,
                ),
                command("info", 2, CLIENT_SUBCOMMAND, NO_KEYS, client_info),
                command(
                    "list",
                    -2,
                    &["admin", "noscript", "loading", "stale"],
                    NO_KEYS,
                    client_list,
                ),
            ],
        },
    },
    CommandSpec {
        name: "command",
        arity: -1,
        flags: &["loading", "stale"],
        keys: NO_KEYS,
        run: Run::Container {
            own: Some(command_all),
            subcommands: &[
                command("count", 2, &["loading", "stale"], NO_KEYS, command_count),
                command("docs", -2, &["loading", "stale"], NO_KEYS, command_docs),
                command("info", -2, &["loading", "stale"], NO_KEYS, command_info),
                command("list", -2, &["loading", "stale"], NO_KEYS, command_list),
            ],
        },
    },
    CommandSpec {
        name: "config",
        arity: -2,
        flags: &[],
        keys: NO_KEYS,
        run: Run::Container {
            own: None,
            subcommands: &[
                command(
                    "get",
                    -3,
                    &["admin", "noscript", "loading", "stale"],
                    NO_KEYS,
                    config_get,
                ),
                command(
                    "set",
                    -4,
                    &["admin", "noscript", "loading", "stale"],
                    NO_KEYS,
                    config_set,
                ),
            ],
        },
    },
];

/// The metrics slot of commands that are not in the table: one `unknown` op
/// label for all of them, so a client cannot grow the label set.
const UNKNOWN: usize = usize::MAX;

fn lookup(table: &'static [CommandSpec], name: &[u8]) -> Option<usize> {
    table
        .iter()
        .position(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

fn arity_allows(arity: i32, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    let arity = i64::from(arity);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// The client-side metrics of one command kind, resolved on first use (so only
/// commands that were used show up) and then shared by every connection.
struct CommandMeter {
    ok: IntCounter,
    error: IntCounter,
    duration: Histogram,
}

impl CommandMeter {
    fn new(metrics: &SidecarMetrics, op: &str) -> Self {
        CommandMeter {
            ok: metrics.ops.with_label_values(&[op, "client", "ok"]),
            error: metrics.ops.with_label_values(&[op, "client", "error"]),
            duration: metrics.op_duration.with_label_values(&[op, "client"]),
        }
    }
}

/// A connection's unflushed share of one [`CommandMeter`]: counting locally
/// keeps pipelined commands from contending on the shared atomics; the server
/// flushes after every batch of commands.
struct LocalMeter {
    ok: LocalIntCounter,
    error: LocalIntCounter,
    duration: LocalHistogram,
}

impl LocalMeter {
    fn flush(&self) {
        self.ok.flush();
        self.error.flush();
        self.duration.flush();
    }
}

impl Drop for LocalMeter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// What the server knows about one connection while running its commands.
pub(crate) struct Session {
    pub(crate) id: u64,
    /// For logs.
    pub(crate) peer: SocketAddr,
    /// Set by `QUIT`: the server closes once this command's reply is written.
    pub(crate) quit: bool,
    /// Indexed like [`TABLE`], plus one slot for unknown commands.
    meters: Vec<Option<LocalMeter>>,
    /// Commands run since the last flush, for `total_commands_processed`.
    unflushed_commands: u64,
    /// Between `MULTI` and `EXEC`/`DISCARD`: the queued commands.
    multi: Option<Multi>,
    /// The keys `WATCH`ed since the last `EXEC`, `DISCARD` or `UNWATCH`.
    watch: Option<WatchState>,
    /// `CLIENT REPLY OFF`: no replies until `CLIENT REPLY ON`.
    reply_off: bool,
    /// `CLIENT REPLY SKIP`: no reply to the next command.
    skip_next_reply: bool,
    /// This command follows a `CLIENT REPLY SKIP`.
    skip_reply: bool,
}

impl Session {
    pub(crate) fn new(id: u64, peer: SocketAddr) -> Self {
        Session {
            id,
            peer,
            quit: false,
            meters: (0..=TABLE.len()).map(|_| None).collect(),
            unflushed_commands: 0,
            multi: None,
            watch: None,
            reply_off: false,
            skip_next_reply: false,
            skip_reply: false,
        }
    }

    /// Redis's CLIENT REPLY: a reply is dropped when, once it is written,
    /// replies are off or this command is skipped, so `CLIENT REPLY ON` is
    /// answered. Inside `EXEC` each command's reply is judged on its own.
    fn drop_reply_if_off(&self, out: &mut BytesMut, written: usize) {
        if self.reply_off || self.skip_reply {
            out.truncate(written);
        }
    }
}

/// Runs commands against the engine and keeps the per-command metrics handles.
/// One per server, shared by every connection.
pub(crate) struct Dispatcher {
    engine: Arc<dyn MapEngine>,
    metrics: Arc<SidecarMetrics>,
    stats: Arc<ServerStats>,
    config: ServerConfig,
    /// Indexed like [`TABLE`], plus one slot for unknown commands.
    meters: Vec<OnceLock<CommandMeter>>,
}

/// The state a handler works with.
struct Call<'a> {
    args: &'a [Bytes],
    out: &'a mut BytesMut,
    session: &'a mut Session,
    server: &'a Dispatcher,
    /// The engine, or inside `EXEC` the shards the transaction holds.
    keyspace: &'a dyn Keyspace,
    /// Whether `keyspace` is a transaction's.
    in_transaction: bool,
    /// Whether a storm records this command: the handlers of the modelled
    /// commands (GET, plain SET, DEL/UNLINK and EXISTS of one key) then leave
    /// their result in `reply`.
    observed: bool,
    reply: Option<Response>,
}

impl Call<'_> {
    /// Where the command's data operations go. Handlers reach the engine
    /// only through this (or [`Call::atomically`]): inside `EXEC` the engine's
    /// shards are locked by this very thread.
    fn engine(&self) -> &dyn Keyspace {
        self.keyspace
    }

    /// Run `body` as one atomic step over the shards of `keys`, for the
    /// commands made of several engine operations (`GETDEL`, `RENAME`…).
    fn atomically<R>(&self, keys: &[&[u8]], body: impl FnOnce(&dyn Keyspace) -> R) -> R {
        if self.in_transaction {
            return body(self.keyspace);
        }
        let mut body = Some(body);
        let mut result = None;
        self.server
            .engine
            .transaction(Footprint::Keys(keys.to_vec()), None, &mut |keyspace| {
                if let Some(body) = body.take() {
                    result = Some(body(keyspace));
                }
            });
        result.expect("a transaction without a watch always runs")
    }
}

impl Dispatcher {
    pub(crate) fn new(
        engine: Arc<dyn MapEngine>,
        metrics: Arc<SidecarMetrics>,
        stats: Arc<ServerStats>,
        config: ServerConfig,
    ) -> Self {
        Dispatcher {
            engine,
            metrics,
            stats,
            config,
            meters: (0..=TABLE.len()).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Run one command and append its reply to `out`. `args` is never empty
    /// (the parser skips empty commands).
    #[cfg(test)]
    pub(crate) fn execute(&self, session: &mut Session, args: &[Bytes], out: &mut BytesMut) {
        self.execute_observed(session, None, args, out);
    }

    /// [`Dispatcher::execute`], with the running storm (if any) told what the
    /// command did to its keys and how long it took.
    pub(crate) fn execute_observed(
        &self,
        session: &mut Session,
        storm: Option<&mut StormTap>,
        args: &[Bytes],
        out: &mut BytesMut,
    ) {
        let started = Instant::now();
        session.skip_reply = std::mem::take(&mut session.skip_next_reply);
        let resolved = resolve(args);
        let is_exec = |slot: usize| slot != UNKNOWN && TABLE[slot].name == "exec";
        match resolved {
            Err((slot, error)) if is_exec(slot) => {
                transactions::abort_exec(session, &error, out);
                self.record(session, slot, false, started.elapsed());
            }
            _ if session.multi.is_some()
                && transactions::queue(self, session, &resolved, args, out, started) => {}
            Ok((slot, _)) if is_exec(slot) && session.multi.is_some() => {
                let ok = transactions::run_exec(self, session, storm, out);
                self.record(session, slot, ok, started.elapsed());
            }
            resolved => {
                let keyspace: &dyn Keyspace = &self.engine;
                self.run(
                    session, storm, keyspace, false, resolved, args, out, started,
                );
            }
        }
        session.skip_reply = false;
    }

    /// Run one resolved command on `keyspace` and write its reply.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        session: &mut Session,
        mut storm: Option<&mut StormTap>,
        keyspace: &dyn Keyspace,
        in_transaction: bool,
        resolved: Result<(usize, Handler), (usize, CommandError)>,
        args: &[Bytes],
        out: &mut BytesMut,
        started: Instant,
    ) -> bool {
        let written = out.len();
        let (slot, result, pending, reply) = match resolved {
            Ok((slot, handler)) => {
                let pending = storm
                    .as_deref_mut()
                    .and_then(|storm| storm.before(key_access(&TABLE[slot], args), started));
                let mut call = Call {
                    args,
                    out: &mut *out,
                    session: &mut *session,
                    server: self,
                    keyspace,
                    in_transaction,
                    observed: pending.is_some(),
                    reply: None,
                };
                // Every key the command removes is attributed to this client.
                let acting = audit::as_app(&self.stats, call.session.id, TABLE[slot].name);
                let result = handler(&mut call);
                drop(acting);
                let reply = call.reply.take();
                (slot, result, pending, reply)
            }
            Err((slot, error)) => (slot, Err(error), None, None),
        };
        let elapsed = started.elapsed();
        if let Some(storm) = storm {
            let reply = reply.as_ref().filter(|_| result.is_ok());
            storm.after(pending, reply, started, elapsed);
        }
        if let Err(error) = &result {
            resp::write_error(out, error.text());
        }
        session.drop_reply_if_off(out, written);
        self.record(session, slot, result.is_ok(), elapsed);
        result.is_ok()
    }

    fn record(&self, session: &mut Session, slot: usize, ok: bool, elapsed: Duration) {
        let index = if slot == UNKNOWN { TABLE.len() } else { slot };
        let local = session.meters[index].get_or_insert_with(|| {
            let shared = self.meters[index].get_or_init(|| {
                let op = TABLE.get(index).map_or("unknown", |spec| spec.name);
                CommandMeter::new(&self.metrics, op)
            });
            LocalMeter {
                ok: shared.ok.local(),
                error: shared.error.local(),
                duration: shared.duration.local(),
            }
        });
        if ok {
            local.ok.inc();
        } else {
            local.error.inc();
        }
        local.duration.observe(elapsed.as_secs_f64());
        session.unflushed_commands += 1;
    }

    pub(crate) fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Publish what the session counted since the last flush.
    pub(crate) fn flush(&self, session: &mut Session) {
        for meter in session.meters.iter().flatten() {
            meter.flush();
        }
        self.stats
            .add_commands_processed(std::mem::take(&mut session.unflushed_commands));
    }
}

/// What a command with valid arity does to the keys it names, for a storm's
/// history: the modelled single-key forms, or which keys it writes otherwise.
fn key_access<'a>(spec: &CommandSpec, args: &'a [Bytes]) -> KeyAccess<'a> {
    match (spec.name, args.len()) {
        ("get", 2) => return KeyAccess::Modelled(AppOp::Get(&args[1])),
        ("set", 3) => return KeyAccess::Modelled(AppOp::Set(&args[1], &args[2])),
        ("del" | "unlink", 2) => return KeyAccess::Modelled(AppOp::Del(&args[1])),
        ("exists", 2) => return KeyAccess::Modelled(AppOp::Exists(&args[1])),
        _ => {}
    }
    if !spec.flags.contains(&"write") {
        return KeyAccess::Untouched;
    }
    if spec.keys == NO_KEYS {
        return KeyAccess::Everything;
    }
    match key_range(spec, args) {
        Some((first, last, step)) => KeyAccess::Unmodelled {
            keys: &args[first..=last],
            step,
        },
        None => KeyAccess::Untouched,
    }
}

/// Where a command's keys sit in `args`: first, last and step, from the
/// table's key specification; `None` when it names none.
fn key_range(spec: &CommandSpec, args: &[Bytes]) -> Option<(usize, usize, usize)> {
    let (first, last, step) = spec.keys;
    if (first, last, step) == NO_KEYS {
        return None;
    }
    let count = args.len() as i64;
    let last = if last < 0 { count + last } else { last }.min(count - 1);
    (first <= last).then_some((first as usize, last as usize, step as usize))
}

/// The handler for `args`, or the error Redis gives before running anything,
/// with the metrics slot either way.
fn resolve(args: &[Bytes]) -> Result<(usize, Handler), (usize, CommandError)> {
    let name = &args[0];
    let Some(index) = lookup(TABLE, name) else {
        return Err((UNKNOWN, unknown_command(args)));
    };
    let spec = &TABLE[index];
    let fail = |error| Err((index, error));
    let (spec, handler, parent) = match &spec.run {
        Run::Handler(handler) => (spec, *handler, None),
        Run::Container { own, subcommands } => match args.get(1) {
            None => match own {
                Some(handler) => (spec, *handler, None),
                None => return fail(wrong_arity(spec.name)),
            },
            Some(sub) => match lookup(subcommands, sub) {
                Some(i) => match &subcommands[i].run {
                    Run::Handler(handler) => (&subcommands[i], *handler, Some(spec.name)),
                    Run::Container { .. } => return fail(SYNTAX_ERROR),
                },
                None => return fail(unknown_subcommand(spec.name, sub)),
            },
        },
    };
    if !arity_allows(spec.arity, args.len()) {
        return match parent {
            Some(parent) => fail(wrong_arity(&format!("{parent}|{}", spec.name))),
            None => fail(wrong_arity(spec.name)),
        };
    }
    Ok((index, handler))
}

/// Redis formats text arguments into errors with `%.128s`: at most 128 bytes,
/// and the C string ends at a NUL.
fn quoted_prefix(arg: &[u8], max: usize) -> Cow<'_, str> {
    let arg = &arg[..arg.len().min(max)];
    let arg = match arg.iter().position(|&b| b == 0) {
        Some(nul) => &arg[..nul],
        None => arg,
    };
    String::from_utf8_lossy(arg)
}

fn unknown_command(args: &[Bytes]) -> CommandError {
    let mut text = format!(
        "ERR unknown command '{}', with args beginning with: ",
        quoted_prefix(&args[0], 128)
    );
    let mut listed = String::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let _ = write!(listed, "'{}' ", quoted_prefix(arg, 128 - listed.len()));
    }
    text.push_str(&listed);
    CommandError::new(text)
}

fn unknown_subcommand(command: &str, sub: &[u8]) -> CommandError {
    CommandError::new(format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        quoted_prefix(sub, 128),
        command.to_ascii_uppercase()
    ))
}

fn wrong_arity(name: &str) -> CommandError {
    CommandError::new(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn invalid_expire_time(command: &str) -> CommandError {
    CommandError::new(format!("ERR invalid expire time in '{command}' command"))
}

fn integer_arg(arg: &[u8]) -> Result<i64, CommandError> {
    parse_i64(arg).ok_or(NOT_AN_INTEGER)
}

fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

fn ok(out: &mut BytesMut) -> Result<(), CommandError> {
    resp::write_simple(out, "OK");
    Ok(())
}

fn integer(out: &mut BytesMut, value: i64) -> Result<(), CommandError> {
    resp::write_integer(out, value);
    Ok(())
}

fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn now(call: &Call<'_>) -> i64 {
    i64::try_from(call.engine().clock().now()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use crate::commands::test_client::*;

    #[test]
    fn unknown_commands_get_redis_7s_text() {
        let mut c = Client::new();
        assert_eq!(
            c.run("foo a b"),
            "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"
        );
        assert_eq!(
            c.run("foo"),
            "-ERR unknown command 'foo', with args beginning with: \r\n"
        );
        let long = "x".repeat(300);
        let reply = c.run(&format!("foo {long} y"));
        let expected_arg = format!("'{}' ", "x".repeat(128));
        assert_eq!(
            reply,
            format!("-ERR unknown command 'foo', with args beginning with: {expected_arg}\r\n"),
            "arguments stop after 128 bytes"
        );
    }

    #[test]
    fn wrong_arity_names_the_lowercase_command() {
        let mut c = Client::new();
        assert_eq!(
            c.run("GET"),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(
            c.run("get a b"),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(
            c.run("MSET a"),
            "-ERR wrong number of arguments for 'mset' command\r\n"
        );
        assert_eq!(
            c.run("MSET a 1 b"),
            "-ERR wrong number of arguments for 'mset' command\r\n"
        );
        assert_eq!(
            c.run("PING a b"),
            "-ERR wrong number of arguments for 'ping' command\r\n"
        );
    }

    #[test]
    fn command_names_ignore_case() {
        let mut c = Client::new();
        assert_eq!(c.run("sEt k v"), "+OK\r\n");
        assert_eq!(c.run("gEt k"), bulk("v"));
    }

    #[test]
    fn metrics_count_per_command_with_bounded_labels() {
        let mut c = Client::new();
        c.run("SET k v");
        c.run("GET k");
        c.run("GET k");
        c.run("GET");
        c.run("nosuch a");
        c.run("othercmd");
        c.dispatcher.flush(&mut c.session);
        let ops = |op: &str, outcome: &str| {
            c.metrics
                .ops
                .with_label_values(&[op, "client", outcome])
                .get()
        };
        assert_eq!(ops("get", "ok"), 2);
        assert_eq!(ops("get", "error"), 1);
        assert_eq!(ops("set", "ok"), 1);
        assert_eq!(ops("unknown", "error"), 2);
        let rendered = c.metrics.render();
        assert!(!rendered.contains("nosuch") && !rendered.contains("othercmd"));
        assert!(
            !rendered.contains("op=\"keys\""),
            "unused commands add no series"
        );
        let histogram = c.metrics.op_duration.with_label_values(&["get", "client"]);
        assert_eq!(histogram.get_sample_count(), 3);
        assert_eq!(c.stats.total_commands_processed(), 6);
    }
}
