//! The compare-and-set restore over RESP. Where the server runs transactions
//! (redis-server does): `WATCH` the batch's keys, read them, then write the
//! keys whose state the storm left inside `MULTI`/`EXEC`; any other client's
//! write to a watched key in between aborts the `EXEC` and the batch is read
//! again, so a write by someone else is never overwritten. Where it does not:
//! an absent key is restored with `SET NX` (atomic), but a key holding a
//! storm value is read, then written — a write landing between the two is
//! lost. Either way, over the network the storm cannot see what other
//! clients wrote *before* its own last write to a key, nor tell their `DEL`
//! from its own.

use redis::Value;

use crate::client::{ClientError, RespClient};
use crate::restore::{Applied, RestoreItem, Wanted};
use crate::workload::decode_value;

/// Times a batch is read and written again after another client's write
/// aborted its transaction, before its keys are tried one by one.
const BATCH_ATTEMPTS: usize = 3;
/// The same for one key, before it is left as `Contended`.
const KEY_ATTEMPTS: usize = 8;

pub(crate) fn guarantee(client: &RespClient) -> &'static str {
    match client.transactions {
        Some(false) => {
            "no transactions on the server: SET NX for absent keys; a write landing between reading and rewriting a key holding a storm value can be lost"
        }
        _ => {
            "WATCH/MULTI/EXEC: a write by another client after the storm's last write is never overwritten"
        }
    }
}

pub(crate) fn restore(
    client: &mut RespClient,
    items: &[RestoreItem<'_>],
    applied: &mut Vec<Result<Applied, ClientError>>,
) {
    if client.transactions != Some(false) {
        match transactional(client, items, BATCH_ATTEMPTS) {
            Ok(Some(results)) => {
                applied.extend(results.into_iter().map(Ok));
                return;
            }
            Ok(None) if client.transactions == Some(false) => {}
            Ok(None) => {
                // Contended as a batch: one key at a time.
                for item in items {
                    applied.push(match transactional(client, &[*item], KEY_ATTEMPTS) {
                        Ok(Some(result)) => Ok(result[0]),
                        Ok(None) => Ok(Applied::Contended),
                        Err(error) => Err(error),
                    });
                }
                return;
            }
            Err(error) => {
                client.reset();
                applied.extend(items.iter().map(|_| Err(error.clone())));
                return;
            }
        }
    }
    for item in items {
        let result = without_transactions(client, item);
        if result.is_err() {
            client.reset();
        }
        applied.push(result);
    }
}

/// What a key's current value asks of the restore.
fn judge(item: &RestoreItem<'_>, current: Option<&[u8]>) -> Option<Applied> {
    let storm_left = current.is_none_or(|v| decode_value(v).is_some());
    match (item.wanted, current) {
        (Wanted::Value { value, .. }, Some(now)) if now == value => Some(Applied::AlreadyThere),
        (Wanted::Absent, None) => Some(Applied::AlreadyThere),
        _ if storm_left => None,
        _ => Some(Applied::Foreign),
    }
}

fn write_command(item: &RestoreItem<'_>) -> redis::Cmd {
    match item.wanted {
        Wanted::Value { value, ttl_ms } => {
            let mut command = redis::cmd("SET");
            command.arg(item.key).arg(value);
            if let Some(ttl) = ttl_ms {
                command.arg("PX").arg(ttl);
            }
            command
        }
        Wanted::Absent => {
            let mut command = redis::cmd("DEL");
            command.arg(item.key);
            command
        }
    }
}

fn query(client: &mut RespClient, pipeline: &redis::Pipeline) -> Result<Vec<Value>, ClientError> {
    let connection = client.connection()?;
    pipeline
        .query::<Vec<Value>>(connection)
        .map_err(|e| ClientError::Connection(e.to_string()))
}

/// `Some(results)` when the batch's transaction went through (or needed no
/// write); `None` when other clients' writes aborted it `attempts` times, or
/// the server has no transactions (then `client.transactions` says so).
fn transactional(
    client: &mut RespClient,
    items: &[RestoreItem<'_>],
    attempts: usize,
) -> Result<Option<Vec<Applied>>, ClientError> {
    for _ in 0..attempts {
        let mut read = redis::pipe();
        read.ignore_errors();
        let mut watch = redis::cmd("WATCH");
        for item in items {
            watch.arg(item.key);
        }
        read.add_command(watch);
        for item in items {
            read.cmd("GET").arg(item.key);
        }
        // A mark after the reads: once the write watch's feed reaches it,
        // every application write before the WATCH has been noted.
        let app_watch = client.watch.clone().filter(|w| w.lost().is_none());
        let mark = app_watch.as_ref().map(|w| {
            let (n, text) = w.new_mark(false);
            read.cmd("ECHO").arg(text);
            n
        });
        let replies = query(client, &read)?;
        let expected = items.len() + 1 + usize::from(mark.is_some());
        if replies.len() != expected {
            return Err(ClientError::Connection(format!(
                "{} replies to {expected} requests",
                replies.len(),
            )));
        }
        // Keys the application wrote since the batch was decided hold its
        // last write (the storm's workers stopped before): left as they are.
        // A watch lost here leaves the keys to the compare-and-set alone
        // (the restore then reports them unwatched).
        let written_since: Vec<bool> = match (&app_watch, mark) {
            (Some(w), Some(n)) if w.await_mark(n).is_ok() => {
                items.iter().map(|i| w.written_since_cut(i.key)).collect()
            }
            _ => vec![false; items.len()],
        };
        if let Value::ServerError(error) = &replies[0] {
            if client.transactions.is_none() {
                // Most likely "unknown command": restore without them (the
                // summary's guarantee then says so).
                client.transactions = Some(false);
                return Ok(None);
            }
            return Err(ClientError::Server(format!("WATCH: {error:?}")));
        }
        client.transactions = Some(true);
        let mut results = Vec::with_capacity(items.len());
        for ((item, reply), &since) in items.iter().zip(&replies[1..]).zip(&written_since) {
            if since {
                results.push(Some(Applied::Foreign));
                continue;
            }
            let current = match reply {
                Value::Nil => None,
                Value::BulkString(bytes) => Some(bytes.as_slice()),
                // Another type, or an error: not something a storm left.
                _ => {
                    results.push(Some(Applied::Foreign));
                    continue;
                }
            };
            results.push(judge(item, current));
        }
        if results.iter().all(Option::is_some) {
            let mut unwatch = redis::pipe();
            unwatch.cmd("UNWATCH");
            query(client, &unwatch)?;
            return Ok(Some(results.into_iter().flatten().collect()));
        }
        let mut write = redis::pipe();
        write.ignore_errors();
        write.cmd("MULTI");
        let mut queued = 0;
        for (item, result) in items.iter().zip(&results) {
            if result.is_none() {
                write.add_command(write_command(item));
                queued += 1;
            }
        }
        write.cmd("EXEC");
        let replies = query(client, &write)?;
        match replies.last() {
            // A watched key changed: read the batch again.
            Some(Value::Nil) => continue,
            Some(Value::Array(done)) if done.len() == queued => {
                if let Some(Value::ServerError(error)) =
                    done.iter().find(|v| matches!(v, Value::ServerError(_)))
                {
                    return Err(ClientError::Server(format!("{error:?}")));
                }
                return Ok(Some(
                    results
                        .into_iter()
                        .map(|r| r.unwrap_or(Applied::Written))
                        .collect(),
                ));
            }
            other => {
                return Err(ClientError::UnexpectedReply {
                    command: "EXEC",
                    reply: format!("{other:?}"),
                });
            }
        }
    }
    Ok(None)
}

/// One key without transactions: atomic for an absent key (`SET NX`), a
/// read-then-write otherwise.
fn without_transactions(
    client: &mut RespClient,
    item: &RestoreItem<'_>,
) -> Result<Applied, ClientError> {
    let mut get = redis::pipe();
    get.cmd("GET").arg(item.key);
    let current = match query(client, &get)?.pop() {
        Some(Value::Nil) => None,
        Some(Value::BulkString(bytes)) => Some(bytes),
        _ => return Ok(Applied::Foreign),
    };
    if let Some(done) = judge(item, current.as_deref()) {
        return Ok(done);
    }
    let mut command = write_command(item);
    match (item.wanted, &current) {
        // Absent: written only if still absent.
        (Wanted::Value { .. }, None) => {
            command.arg("NX");
        }
        // A storm value: written only if still present.
        (Wanted::Value { .. }, Some(_)) => {
            command.arg("XX");
        }
        (Wanted::Absent, _) => {}
    }
    let mut write = redis::pipe();
    write.ignore_errors();
    write.add_command(command);
    match query(client, &write)?.pop() {
        Some(Value::Nil) => Ok(Applied::Contended),
        Some(Value::ServerError(error)) => Err(ClientError::Server(format!("{error:?}"))),
        Some(_) => Ok(Applied::Written),
        None => Err(ClientError::Connection("no reply".into())),
    }
}
