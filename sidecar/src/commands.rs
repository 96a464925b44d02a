//! The command table and what each command does: arity, argument parsing, the
//! engine call and the reply, with Redis 7.0's reply shapes and error texts,
//! which clients match on. The sidecar speaks RESP2 only (`HELLO 3` is
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

use crate::app_probe::{KeyAccess, StormTap};

use crate::engine::{
    ExpireCondition, MapEngine, Millis, Pattern, SetCondition, SetExpiry, SetOptions, Ttl,
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
const CONNECTION: &[&str] = &["noscript", "loading", "stale", "fast"];

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
    command("unlink", -2, WRITE_FAST, ALL_KEYS, del),
    command("expire", -3, WRITE_FAST, ONE_KEY, expire),
    command("pexpire", -3, WRITE_FAST, ONE_KEY, pexpire),
    command("expireat", -3, WRITE_FAST, ONE_KEY, expireat),
    command("pexpireat", -3, WRITE_FAST, ONE_KEY, pexpireat),
    command("ttl", 2, READ, ONE_KEY, ttl),
    command("pttl", 2, READ, ONE_KEY, pttl),
    command("persist", 2, WRITE_FAST, ONE_KEY, persist),
    command("type", 2, READ, ONE_KEY, key_type),
    command("scan", -2, &["readonly"], NO_KEYS, scan),
    command("keys", 2, &["readonly"], NO_KEYS, keys),
    command("dbsize", 1, READ, NO_KEYS, dbsize),
    command("ping", -1, &["fast"], NO_KEYS, ping),
    command("echo", 2, &["fast"], NO_KEYS, echo),
    command("flushdb", -1, &["write"], NO_KEYS, flush),
    command("flushall", -1, &["write"], NO_KEYS, flush),
    command("info", -1, &["loading", "stale"], NO_KEYS, info),
    command("select", 2, &["loading", "stale", "fast"], NO_KEYS, select),
    command("quit", -1, &["fast"], NO_KEYS, quit),
    command("hello", -1, CONNECTION, NO_KEYS, hello),
    command("auth", -2, CONNECTION, NO_KEYS, auth),
    CommandSpec {
        name: "client",
        arity: -2,
        flags: &[],
        keys: NO_KEYS,
        run: Run::Container {
            own: None,
            subcommands: &[
                command("id", 2, CONNECTION, NO_KEYS, client_id),
                command("getname", 2, CONNECTION, NO_KEYS, client_getname),
                command("setname", 3, CONNECTION, NO_KEYS, client_setname),
                command("setinfo", 4, CONNECTION, NO_KEYS, client_setinfo),
                command("info", 2, CONNECTION, NO_KEYS, client_info),
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
}

impl Session {
    pub(crate) fn new(id: u64, peer: SocketAddr) -> Self {
        Session {
            id,
            peer,
            quit: false,
            meters: (0..=TABLE.len()).map(|_| None).collect(),
            unflushed_commands: 0,
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
    /// Whether a storm records this command: the handlers of the modelled
    /// commands (GET, plain SET, DEL/UNLINK and EXISTS of one key) then leave
    /// their result in `reply`.
    observed: bool,
    reply: Option<Response>,
}

impl Call<'_> {
    fn engine(&self) -> &dyn MapEngine {
        &*self.server.engine
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
        mut storm: Option<&mut StormTap>,
        args: &[Bytes],
        out: &mut BytesMut,
    ) {
        let started = Instant::now();
        let (slot, result, pending, reply) = match resolve(args) {
            Ok((slot, handler)) => {
                let pending = storm
                    .as_deref_mut()
                    .and_then(|storm| storm.before(key_access(&TABLE[slot], args), started));
                let mut call = Call {
                    args,
                    out: &mut *out,
                    session: &mut *session,
                    server: self,
                    observed: pending.is_some(),
                    reply: None,
                };
                let result = handler(&mut call);
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
        self.record(session, slot, result.is_ok(), elapsed);
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
    let (first, last, step) = spec.keys;
    if (first, last, step) == NO_KEYS {
        return KeyAccess::Everything;
    }
    let count = args.len() as i64;
    let last = if last < 0 { count + last } else { last }.min(count - 1);
    if first > last {
        return KeyAccess::Untouched;
    }
    KeyAccess::Unmodelled {
        keys: &args[first as usize..=last as usize],
        step: step as usize,
    }
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

fn get(call: &mut Call<'_>) -> Result<(), CommandError> {
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

fn set(call: &mut Call<'_>) -> Result<(), CommandError> {
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

fn mget(call: &mut Call<'_>) -> Result<(), CommandError> {
    let values = call.engine().mget(&call.args[1..]);
    resp::write_array_len(call.out, values.len());
    for value in &values {
        resp::write_optional_bulk(call.out, value.as_deref());
    }
    Ok(())
}

fn mset(call: &mut Call<'_>) -> Result<(), CommandError> {
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

fn del(call: &mut Call<'_>) -> Result<(), CommandError> {
    let removed = call.engine().del(&call.args[1..]);
    if call.observed {
        call.reply = Some(Response::Count(removed));
    }
    integer(call.out, count(removed))
}

fn exists(call: &mut Call<'_>) -> Result<(), CommandError> {
    let found = call.engine().exists(&call.args[1..]);
    if call.observed {
        call.reply = Some(Response::Count(found));
    }
    integer(call.out, count(found))
}

fn incr_by(call: &mut Call<'_>, delta: i64) -> Result<(), CommandError> {
    match call.engine().incr_by(&call.args[1], delta) {
        Ok(value) => integer(call.out, value),
        Err(error) => Err(CommandError::new(format!("ERR {error}"))),
    }
}

fn incr(call: &mut Call<'_>) -> Result<(), CommandError> {
    incr_by(call, 1)
}

fn decr(call: &mut Call<'_>) -> Result<(), CommandError> {
    incr_by(call, -1)
}

fn incrby(call: &mut Call<'_>) -> Result<(), CommandError> {
    let delta = integer_arg(&call.args[2])?;
    incr_by(call, delta)
}

fn decrby(call: &mut Call<'_>) -> Result<(), CommandError> {
    let delta = integer_arg(&call.args[2])?;
    // Negating i64::MIN overflows before the engine sees it.
    let delta = delta
        .checked_neg()
        .ok_or(CommandError::new("ERR decrement would overflow"))?;
    incr_by(call, delta)
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

fn expire(call: &mut Call<'_>) -> Result<(), CommandError> {
    expire_generic(call, "expire", true, false)
}

fn pexpire(call: &mut Call<'_>) -> Result<(), CommandError> {
    expire_generic(call, "pexpire", false, false)
}

fn expireat(call: &mut Call<'_>) -> Result<(), CommandError> {
    expire_generic(call, "expireat", true, true)
}

fn pexpireat(call: &mut Call<'_>) -> Result<(), CommandError> {
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

fn ttl(call: &mut Call<'_>) -> Result<(), CommandError> {
    ttl_generic(call, false)
}

fn pttl(call: &mut Call<'_>) -> Result<(), CommandError> {
    ttl_generic(call, true)
}

fn persist(call: &mut Call<'_>) -> Result<(), CommandError> {
    let removed = call.engine().persist(&call.args[1]);
    integer(call.out, i64::from(removed))
}

fn key_type(call: &mut Call<'_>) -> Result<(), CommandError> {
    let present = call.engine().exists(&call.args[1..2]) > 0;
    resp::write_simple(call.out, if present { "string" } else { "none" });
    Ok(())
}

fn scan(call: &mut Call<'_>) -> Result<(), CommandError> {
    let args = call.args;
    let cursor = std::str::from_utf8(&args[1])
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(CommandError::new("ERR invalid cursor"))?;
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

fn keys(call: &mut Call<'_>) -> Result<(), CommandError> {
    let found = call.engine().keys(&Pattern::new(&call.args[1]));
    write_bulk_array(call.out, &found);
    Ok(())
}

fn dbsize(call: &mut Call<'_>) -> Result<(), CommandError> {
    let keys = call.engine().len();
    integer(call.out, count(keys))
}

fn flush(call: &mut Call<'_>) -> Result<(), CommandError> {
    match call.args {
        [_] => {}
        [_, mode] if is(mode, "async") || is(mode, "sync") => {}
        _ => return Err(SYNTAX_ERROR),
    }
    call.engine().clear();
    ok(call.out)
}

fn ping(call: &mut Call<'_>) -> Result<(), CommandError> {
    match call.args {
        [_] => resp::write_simple(call.out, "PONG"),
        [_, message] => resp::write_bulk(call.out, message),
        _ => return Err(wrong_arity("ping")),
    }
    Ok(())
}

fn echo(call: &mut Call<'_>) -> Result<(), CommandError> {
    resp::write_bulk(call.out, &call.args[1]);
    Ok(())
}

fn quit(call: &mut Call<'_>) -> Result<(), CommandError> {
    call.session.quit = true;
    ok(call.out)
}

fn select(call: &mut Call<'_>) -> Result<(), CommandError> {
    let index = integer_arg(&call.args[1])?;
    if i32::try_from(index).is_err() {
        return Err(NOT_AN_INTEGER);
    }
    if index != 0 {
        return Err(CommandError::new("ERR DB index is out of range"));
    }
    ok(call.out)
}

/// There are no users or passwords: the default user takes any password, as
/// Redis's does when none is configured.
fn check_credentials(user: &[u8]) -> Result<(), CommandError> {
    if is(user, "default") {
        Ok(())
    } else {
        Err(WRONG_PASS)
    }
}

fn auth(call: &mut Call<'_>) -> Result<(), CommandError> {
    match call.args {
        [_, _password] => Err(CommandError::new(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        )),
        [_, user, _password] => {
            check_credentials(user)?;
            ok(call.out)
        }
        _ => Err(SYNTAX_ERROR),
    }
}

fn hello(call: &mut Call<'_>) -> Result<(), CommandError> {
    let args = call.args;
    let mut next = 1;
    if let Some(version) = args.get(1) {
        let version = parse_i64(version).ok_or(CommandError::new(
            "ERR Protocol version is not an integer or out of range",
        ))?;
        // Redis accepts 2 and 3; RESP3 is not implemented here.
        if version != 2 {
            return Err(CommandError::new("NOPROTO unsupported protocol version"));
        }
        next = 2;
    }
    let mut name = None;
    while next < args.len() {
        let more = args.len() - 1 - next;
        if is(&args[next], "auth") && more >= 2 {
            check_credentials(&args[next + 1])?;
            next += 3;
        } else if is(&args[next], "setname") && more >= 1 {
            name = Some(valid_client_name(&args[next + 1])?);
            next += 2;
        } else {
            return Err(CommandError::new(format!(
                "ERR Syntax error in HELLO option '{}'",
                quoted_prefix(&args[next], 128)
            )));
        }
    }
    if let Some(name) = name {
        call.server
            .stats
            .update_client(call.session.id, |record| record.name = name);
    }
    let out = &mut *call.out;
    resp::write_array_len(out, 14);
    for (field, value) in [("server", "redis"), ("version", REDIS_VERSION)] {
        resp::write_bulk(out, field.as_bytes());
        resp::write_bulk(out, value.as_bytes());
    }
    resp::write_bulk(out, b"proto");
    resp::write_integer(out, 2);
    resp::write_bulk(out, b"id");
    resp::write_integer(out, count(call.session.id));
    for (field, value) in [("mode", "standalone"), ("role", "master")] {
        resp::write_bulk(out, field.as_bytes());
        resp::write_bulk(out, value.as_bytes());
    }
    resp::write_bulk(out, b"modules");
    resp::write_array_len(out, 0);
    Ok(())
}

/// Redis's `validateClientName`: printable ASCII without spaces; empty clears
/// the name.
fn valid_client_name(name: &Bytes) -> Result<Option<Bytes>, CommandError> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(CommandError::new(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok((!name.is_empty()).then(|| name.clone()))
}

fn client_id(call: &mut Call<'_>) -> Result<(), CommandError> {
    integer(call.out, count(call.session.id))
}

fn client_getname(call: &mut Call<'_>) -> Result<(), CommandError> {
    let name = call
        .server
        .stats
        .client(call.session.id)
        .and_then(|record| record.name);
    resp::write_optional_bulk(call.out, name.as_deref());
    Ok(())
}

fn client_setname(call: &mut Call<'_>) -> Result<(), CommandError> {
    let name = valid_client_name(&call.args[2])?;
    call.server
        .stats
        .update_client(call.session.id, |record| record.name = name);
    ok(call.out)
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`, which redis-rs and redis-cli 7.2+
/// send on connect.
fn client_setinfo(call: &mut Call<'_>) -> Result<(), CommandError> {
    let (attribute, value) = (&call.args[2], &call.args[3]);
    let is_name = is(attribute, "lib-name");
    if !is_name && !is(attribute, "lib-ver") {
        return Err(CommandError::new(format!(
            "ERR Unrecognized option '{}'",
            quoted_prefix(attribute, 128)
        )));
    }
    if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(CommandError::new(format!(
            "ERR {} cannot contain spaces, newlines or special characters.",
            if is_name { "lib-name" } else { "lib-ver" }
        )));
    }
    let value = (!value.is_empty()).then(|| value.clone());
    call.server.stats.update_client(call.session.id, |record| {
        if is_name {
            record.lib_name = value;
        } else {
            record.lib_ver = value;
        }
    });
    ok(call.out)
}

/// One `CLIENT LIST` line, with the fields the sidecar knows; the rest of
/// Redis's fields (buffers, last command, idle time) are not tracked.
fn client_line(id: u64, record: &ClientRecord) -> String {
    let text = |value: &Option<Bytes>| {
        value
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default()
            .into_owned()
    };
    format!(
        "id={id} addr={} laddr={} fd=-1 name={} age={} flags=N db=0 sub=0 psub=0 multi=-1 \
         user=default resp=2 lib-name={} lib-ver={}\n",
        record.peer,
        record.local,
        text(&record.name),
        record.connected_at.elapsed().as_secs(),
        text(&record.lib_name),
        text(&record.lib_ver),
    )
}

fn client_info(call: &mut Call<'_>) -> Result<(), CommandError> {
    let line = call
        .server
        .stats
        .client(call.session.id)
        .map(|record| client_line(call.session.id, &record))
        .unwrap_or_default();
    resp::write_bulk(call.out, line.as_bytes());
    Ok(())
}

/// `CLIENT LIST [TYPE normal] [ID id …]`: every connection is a normal client.
fn client_list(call: &mut Call<'_>) -> Result<(), CommandError> {
    let filter: Option<Vec<u64>> = match &call.args[2..] {
        [] => None,
        [kind, value] if is(kind, "type") => {
            if is(value, "normal") {
                None
            } else if ["master", "replica", "slave", "pubsub"]
                .iter()
                .any(|t| is(value, t))
            {
                Some(Vec::new())
            } else {
                return Err(CommandError::new(format!(
                    "ERR Unknown client type '{}'",
                    quoted_prefix(value, 128)
                )));
            }
        }
        [kind, ids @ ..] if is(kind, "id") && !ids.is_empty() => Some(
            ids.iter()
                .map(|id| {
                    parse_i64(id)
                        .and_then(|id| u64::try_from(id).ok())
                        .filter(|&id| id > 0)
                        .ok_or(CommandError::new("ERR Invalid client ID"))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(SYNTAX_ERROR),
    };
    let mut listing = String::new();
    for (id, record) in call.server.stats.clients() {
        if filter.as_ref().is_none_or(|ids| ids.contains(&id)) {
            listing.push_str(&client_line(id, &record));
        }
    }
    resp::write_bulk(call.out, listing.as_bytes());
    Ok(())
}

fn write_command_info(out: &mut BytesMut, spec: &CommandSpec, parent: Option<&str>) {
    resp::write_array_len(out, 10);
    match parent {
        Some(parent) => resp::write_bulk(out, format!("{parent}|{}", spec.name).as_bytes()),
        None => resp::write_bulk(out, spec.name.as_bytes()),
    }
    resp::write_integer(out, i64::from(spec.arity));
    resp::write_array_len(out, spec.flags.len());
    for flag in spec.flags {
        resp::write_simple(out, flag);
    }
    resp::write_integer(out, spec.keys.0);
    resp::write_integer(out, spec.keys.1);
    resp::write_integer(out, spec.keys.2);
    // ACL categories, tips and key specifications: none are modelled.
    for _ in 0..3 {
        resp::write_array_len(out, 0);
    }
    match &spec.run {
        Run::Container { subcommands, .. } => {
            resp::write_array_len(out, subcommands.len());
            for sub in *subcommands {
                write_command_info(out, sub, Some(spec.name));
            }
        }
        Run::Handler(_) => resp::write_array_len(out, 0),
    }
}

fn command_all(call: &mut Call<'_>) -> Result<(), CommandError> {
    resp::write_array_len(call.out, TABLE.len());
    for spec in TABLE {
        write_command_info(call.out, spec, None);
    }
    Ok(())
}

fn command_count(call: &mut Call<'_>) -> Result<(), CommandError> {
    integer(call.out, TABLE.len() as i64)
}

/// Documentation is not served; an empty map is a valid answer, and
/// redis-cli then simply shows no hints.
fn command_docs(call: &mut Call<'_>) -> Result<(), CommandError> {
    resp::write_array_len(call.out, 0);
    Ok(())
}

fn command_info(call: &mut Call<'_>) -> Result<(), CommandError> {
    let names = &call.args[2..];
    if names.is_empty() {
        return command_all(call);
    }
    resp::write_array_len(call.out, names.len());
    for name in names {
        match lookup(TABLE, name) {
            Some(index) => write_command_info(call.out, &TABLE[index], None),
            None => resp::write_null_bulk(call.out),
        }
    }
    Ok(())
}

fn command_list(call: &mut Call<'_>) -> Result<(), CommandError> {
    resp::write_array_len(call.out, TABLE.len());
    for spec in TABLE {
        resp::write_bulk(call.out, spec.name.as_bytes());
    }
    Ok(())
}

/// The configuration parameters `CONFIG GET` answers, with their values.
fn config_parameters(config: &ServerConfig) -> Vec<(&'static str, String)> {
    vec![
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("databases", "1".into()),
        ("maxclients", config.max_clients.to_string()),
        (
            "timeout",
            config.idle_timeout.map_or(0, |t| t.as_secs()).to_string(),
        ),
        ("proto-max-bulk-len", config.limits.max_bulk_len.to_string()),
        (
            "client-query-buffer-limit",
            config.limits.max_query_bytes.to_string(),
        ),
    ]
}

fn config_get(call: &mut Call<'_>) -> Result<(), CommandError> {
    let parameters = config_parameters(&call.server.config);
    let mut wanted = vec![false; parameters.len()];
    for pattern in &call.args[2..] {
        // Parameter names are lowercase and Redis matches them without case.
        let pattern = Pattern::new(&pattern.to_ascii_lowercase());
        for (i, (name, _)) in parameters.iter().enumerate() {
            wanted[i] |= pattern.matches(name.as_bytes());
        }
    }
    let found: Vec<_> = parameters
        .iter()
        .zip(&wanted)
        .filter(|(_, w)| **w)
        .map(|(p, _)| p)
        .collect();
    resp::write_array_len(call.out, found.len() * 2);
    for (name, value) in found {
        resp::write_bulk(call.out, name.as_bytes());
        resp::write_bulk(call.out, value.as_bytes());
    }
    Ok(())
}

/// Nothing can be changed at run time; setting a parameter to the value it
/// already has is accepted, so setup scripts that pin `save ""` or
/// `appendonly no` work.
fn config_set(call: &mut Call<'_>) -> Result<(), CommandError> {
    let pairs = &call.args[2..];
    if !pairs.len().is_multiple_of(2) {
        return Err(wrong_arity("config|set"));
    }
    let parameters = config_parameters(&call.server.config);
    for pair in pairs.chunks_exact(2) {
        let (name, value) = (&pair[0], &pair[1]);
        let Some((known, current)) = parameters.iter().find(|(known, _)| is(name, known)) else {
            return Err(CommandError::new(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                quoted_prefix(name, 128)
            )));
        };
        if !value.eq_ignore_ascii_case(current.as_bytes()) {
            return Err(CommandError::new(format!(
                "ERR CONFIG SET failed (possibly related to argument '{known}') - \
                 mapchaos cannot change this parameter at run time"
            )));
        }
    }
    ok(call.out)
}

/// `INFO` sections, in the order Redis prints them.
const INFO_SECTIONS: [&str; 7] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "keyspace",
];

/// Redis's `bytesToHuman`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 50, "P"),
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (scale, unit) in UNITS {
        if bytes >= scale {
            return format!("{:.2}{unit}", bytes as f64 / scale as f64);
        }
    }
    format!("{bytes}B")
}

fn info_header(text: &mut String, title: &str) {
    if !text.is_empty() {
        text.push_str("\r\n");
    }
    let _ = write!(text, "# {title}\r\n");
}

fn info_field(text: &mut String, field: &str, value: impl std::fmt::Display) {
    let _ = write!(text, "{field}:{value}\r\n");
}

fn info(call: &mut Call<'_>) -> Result<(), CommandError> {
    let requested = &call.args[1..];
    let everything = requested.is_empty()
        || requested
            .iter()
            .any(|s| is(s, "all") || is(s, "everything") || is(s, "default"));
    let server = call.server;
    let stats = &server.stats;
    let engine = call.engine();
    // Memory and keyspace share one report; taking it may walk the engine.
    let memory = OnceLock::new();
    let report = || *memory.get_or_init(|| engine.memory());
    let mut text = String::new();
    let t = &mut text;
    for section in INFO_SECTIONS {
        if !everything && !requested.iter().any(|s| is(s, section)) {
            continue;
        }
        match section {
            "server" => {
                let uptime = stats.uptime().as_secs();
                info_header(t, "Server");
                info_field(t, "redis_version", REDIS_VERSION);
                info_field(t, "redis_mode", "standalone");
                info_field(
                    t,
                    "os",
                    format_args!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
                );
                info_field(t, "arch_bits", usize::BITS);
                info_field(t, "process_id", std::process::id());
                info_field(t, "tcp_port", stats.port());
                info_field(t, "uptime_in_seconds", uptime);
                info_field(t, "uptime_in_days", uptime / 86_400);
                info_field(t, "mapchaos_version", env!("CARGO_PKG_VERSION"));
                info_field(t, "mapchaos_engine", engine.name());
            }
            "clients" => {
                info_header(t, "Clients");
                info_field(t, "connected_clients", stats.connected_clients());
                info_field(t, "maxclients", server.config.max_clients);
                info_field(t, "blocked_clients", 0);
            }
            "memory" => {
                let report = report();
                let rss = memory::resident_bytes().unwrap_or(0);
                let ratio = if report.live_bytes > 0 {
                    rss as f64 / report.live_bytes as f64
                } else {
                    0.0
                };
                info_header(t, "Memory");
                info_field(t, "used_memory", report.live_bytes);
                info_field(t, "used_memory_human", human_bytes(report.live_bytes));
                info_field(t, "used_memory_rss", rss);
                info_field(t, "used_memory_rss_human", human_bytes(rss));
                info_field(t, "mapchaos_held_bytes", report.held_bytes);
                info_field(
                    t,
                    "mapchaos_held_bytes_human",
                    human_bytes(report.held_bytes),
                );
                info_field(t, "maxmemory", 0);
                info_field(t, "maxmemory_policy", "noeviction");
                info_field(t, "mem_fragmentation_ratio", format_args!("{ratio:.2}"));
            }
            "persistence" => {
                // Client libraries (ioredis, for one) wait while `loading:1`.
                info_header(t, "Persistence");
                info_field(t, "loading", 0);
                info_field(t, "aof_enabled", 0);
            }
            "stats" => {
                info_header(t, "Stats");
                info_field(
                    t,
                    "total_connections_received",
                    stats.total_connections_received(),
                );
                info_field(
                    t,
                    "total_commands_processed",
                    stats.total_commands_processed(),
                );
                info_field(t, "instantaneous_ops_per_sec", 0);
                info_field(t, "rejected_connections", stats.rejected_connections());
            }
            "replication" => {
                info_header(t, "Replication");
                info_field(t, "role", "master");
                info_field(t, "connected_slaves", 0);
            }
            _ => {
                let report = report();
                info_header(t, "Keyspace");
                // Redis lists only databases that hold keys.
                if report.keys > 0 {
                    info_field(
                        t,
                        "db0",
                        format_args!(
                            "keys={},expires={},avg_ttl=0",
                            report.keys, report.keys_with_ttl
                        ),
                    );
                }
            }
        }
    }
    resp::write_bulk(call.out, text.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Clock, ShardedEngine};

    const START: Millis = 1_700_000_000_000;

    /// One client session against a real engine on a manual clock.
    struct Client {
        clock: Clock,
        metrics: Arc<SidecarMetrics>,
        stats: Arc<ServerStats>,
        dispatcher: Dispatcher,
        session: Session,
    }

    impl Client {
        fn new() -> Self {
            let clock = Clock::manual(START);
            let engine = Arc::new(ShardedEngine::new(4, clock.clone()));
            let metrics = Arc::new(SidecarMetrics::new());
            let stats = Arc::new(ServerStats::new());
            let dispatcher = Dispatcher::new(
                engine,
                metrics.clone(),
                stats.clone(),
                ServerConfig::default(),
            );
            let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
            let id = stats.register_client(peer, "127.0.0.1:6379".parse().unwrap());
            let session = Session::new(id, peer);
            Client {
                clock,
                metrics,
                stats,
                dispatcher,
                session,
            }
        }

        /// Run a command given as separate arguments; the raw reply.
        fn call(&mut self, args: &[&[u8]]) -> String {
            let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
            let mut out = BytesMut::new();
            self.dispatcher.execute(&mut self.session, &args, &mut out);
            String::from_utf8(out.to_vec()).expect("test replies are UTF-8")
        }

        /// Run a command written with spaces between the arguments.
        fn run(&mut self, line: &str) -> String {
            let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            self.call(&args)
        }
    }

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

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
        assert_eq!(c.run("SCAN -1"), "-ERR invalid cursor\r\n");
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

    #[test]
    fn connection_commands() {
        let mut c = Client::new();
        assert_eq!(c.run("PING"), "+PONG\r\n");
        assert_eq!(c.run("PING hi"), bulk("hi"));
        assert_eq!(c.run("ECHO hello"), bulk("hello"));
        assert_eq!(c.run("SELECT 0"), "+OK\r\n");
        assert_eq!(c.run("SELECT 1"), "-ERR DB index is out of range\r\n");
        assert_eq!(
            c.run("SELECT x"),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert!(!c.session.quit);
        assert_eq!(c.run("QUIT"), "+OK\r\n");
        assert!(c.session.quit, "the server closes after this reply");
    }

    #[test]
    fn hello_answers_resp2_only() {
        let mut c = Client::new();
        let id = c.session.id;
        let expected = format!(
            "*14\r\n{}{}{}{}{}:2\r\n{}:{id}\r\n{}{}{}{}{}*0\r\n",
            bulk("server"),
            bulk("redis"),
            bulk("version"),
            bulk(REDIS_VERSION),
            bulk("proto"),
            bulk("id"),
            bulk("mode"),
            bulk("standalone"),
            bulk("role"),
            bulk("master"),
            bulk("modules"),
        );
        assert_eq!(c.run("HELLO"), expected);
        assert_eq!(c.run("HELLO 2"), expected);
        assert_eq!(
            c.run("HELLO 3"),
            "-NOPROTO unsupported protocol version\r\n"
        );
        assert_eq!(
            c.run("HELLO two"),
            "-ERR Protocol version is not an integer or out of range\r\n"
        );
        assert_eq!(
            c.run("HELLO 2 FOO"),
            "-ERR Syntax error in HELLO option 'FOO'\r\n"
        );
        assert_eq!(
            c.run("HELLO 2 AUTH bob secret"),
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        );
        assert_eq!(c.run("HELLO 2 AUTH default anything SETNAME app"), expected);
        assert_eq!(c.run("CLIENT GETNAME"), bulk("app"));
    }

    #[test]
    fn auth_without_a_password_configured() {
        let mut c = Client::new();
        assert!(
            c.run("AUTH pw")
                .starts_with("-ERR AUTH <password> called without any password")
        );
        assert_eq!(c.run("AUTH default pw"), "+OK\r\n");
    }

    #[test]
    fn client_subcommands() {
        let mut c = Client::new();
        let id = c.session.id;
        assert_eq!(c.run("CLIENT ID"), format!(":{id}\r\n"));
        assert_eq!(c.run("CLIENT GETNAME"), "$-1\r\n");
        assert_eq!(c.run("CLIENT SETNAME worker-1"), "+OK\r\n");
        assert_eq!(c.run("client getname"), bulk("worker-1"));
        assert_eq!(
            c.run("CLIENT SETNAME a\nb"),
            "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
        );
        assert_eq!(c.run("CLIENT SETINFO LIB-NAME redis-rs"), "+OK\r\n");
        assert_eq!(c.run("CLIENT SETINFO lib-ver 1.0.0"), "+OK\r\n");
        assert_eq!(
            c.run("CLIENT SETINFO color red"),
            "-ERR Unrecognized option 'color'\r\n"
        );
        let info = c.run("CLIENT INFO");
        assert!(
            info.contains(&format!("id={id} addr=127.0.0.1:40000 ")),
            "{info}"
        );
        assert!(
            info.contains(" name=worker-1 ") && info.contains("lib-name=redis-rs lib-ver=1.0.0")
        );
        let list = c.run("CLIENT LIST");
        assert!(list.contains(&format!("id={id} ")), "{list}");
        assert_eq!(c.run("CLIENT LIST TYPE pubsub"), "$0\r\n\r\n");
        assert_eq!(c.run("CLIENT LIST ID 999"), "$0\r\n\r\n");
        assert!(
            c.run(&format!("CLIENT LIST ID {id}"))
                .contains(&format!("id={id} "))
        );
        assert_eq!(
            c.run("CLIENT FOO"),
            "-ERR unknown subcommand 'FOO'. Try CLIENT HELP.\r\n"
        );
        assert_eq!(
            c.run("CLIENT"),
            "-ERR wrong number of arguments for 'client' command\r\n"
        );
        assert_eq!(
            c.run("CLIENT SETNAME"),
            "-ERR wrong number of arguments for 'client|setname' command\r\n"
        );
        assert_eq!(c.run("CLIENT SETNAME"), c.run("client setname"));
    }

    #[test]
    fn command_introspection() {
        let mut c = Client::new();
        assert_eq!(c.run("COMMAND COUNT"), format!(":{}\r\n", TABLE.len()));
        assert_eq!(c.run("COMMAND DOCS"), "*0\r\n");
        assert_eq!(c.run("COMMAND DOCS get"), "*0\r\n");
        assert!(c.run("COMMAND INFO get").starts_with(
            "*1\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
        ));
        assert_eq!(c.run("COMMAND INFO nosuch"), "*1\r\n$-1\r\n");
        assert!(
            c.run("COMMAND")
                .starts_with(&format!("*{}\r\n*10\r\n", TABLE.len()))
        );
        assert!(c.run("COMMAND LIST").contains(&bulk("scan")));
        assert_eq!(
            c.run("COMMAND FOO"),
            "-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n"
        );
    }

    #[test]
    fn config_get_answers_what_benchmarks_ask() {
        let mut c = Client::new();
        assert_eq!(
            c.run("CONFIG GET save"),
            format!("*2\r\n{}$0\r\n\r\n", bulk("save"))
        );
        assert_eq!(
            c.run("CONFIG GET APPENDONLY"),
            format!("*2\r\n{}{}", bulk("appendonly"), bulk("no"))
        );
        assert_eq!(c.run("CONFIG GET nosuch"), "*0\r\n");
        let many = c.run("CONFIG GET maxmemory* databases");
        assert!(many.starts_with("*6\r\n"), "{many}");
        assert!(many.contains(&bulk("maxmemory-policy")) && many.contains(&bulk("databases")));
        assert_eq!(
            c.run("CONFIG GET save save").len(),
            c.run("CONFIG GET save").len(),
            "no duplicates"
        );
    }

    #[test]
    fn config_set_accepts_only_what_is_already_so() {
        let mut c = Client::new();
        assert_eq!(c.call(&[b"CONFIG", b"SET", b"save", b""]), "+OK\r\n");
        assert_eq!(c.run("CONFIG SET appendonly no"), "+OK\r\n");
        assert!(
            c.run("CONFIG SET appendonly yes")
                .starts_with("-ERR CONFIG SET failed")
        );
        assert_eq!(
            c.run("CONFIG SET nosuch 1"),
            "-ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'\r\n"
        );
    }

    #[test]
    fn info_uses_redis_section_format() {
        let mut c = Client::new();
        c.run("SET a 1");
        c.run("SET b 1 EX 100");
        let all = c.run("INFO");
        assert!(all.contains("# Server\r\nredis_version:7.0.0\r\n"), "{all}");
        for field in [
            "connected_clients:1\r\n",
            "used_memory:",
            "used_memory_rss:",
            "mapchaos_held_bytes:",
            "mem_fragmentation_ratio:",
            "total_connections_received:1\r\n",
            "total_commands_processed:",
            "rejected_connections:0\r\n",
            "loading:0\r\n",
            "\r\n\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\n",
        ] {
            assert!(all.contains(field), "missing {field:?} in {all}");
        }
        let keyspace = c.run("INFO keyspace");
        assert_eq!(
            keyspace,
            bulk("# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\n")
        );
        let two = c.run("INFO keyspace CLIENTS");
        assert!(
            two.contains("# Clients\r\n") && two.contains("\r\n\r\n# Keyspace\r\n"),
            "{two}"
        );
        assert_eq!(c.run("INFO nosuch"), "$0\r\n\r\n");
        c.run("FLUSHALL");
        assert_eq!(c.run("INFO keyspace"), bulk("# Keyspace\r\n"));
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
