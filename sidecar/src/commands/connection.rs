//! Connection commands: PING, ECHO, QUIT, SELECT, AUTH, HELLO and CLIENT
//! (ID, GETNAME, SETNAME, SETINFO, INFO, LIST, KILL, REPLY, NO-EVICT).

use super::*;

pub(super) fn ping(call: &mut Call<'_>) -> Result<(), CommandError> {
    match call.args {
        [_] => resp::write_simple(call.out, "PONG"),
        [_, message] => resp::write_bulk(call.out, message),
        _ => return Err(wrong_arity("ping")),
    }
    Ok(())
}

pub(super) fn echo(call: &mut Call<'_>) -> Result<(), CommandError> {
    resp::write_bulk(call.out, &call.args[1]);
    Ok(())
}

pub(super) fn quit(call: &mut Call<'_>) -> Result<(), CommandError> {
    call.session.quit = true;
    ok(call.out)
}

pub(super) fn select(call: &mut Call<'_>) -> Result<(), CommandError> {
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

pub(super) fn auth(call: &mut Call<'_>) -> Result<(), CommandError> {
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

pub(super) fn hello(call: &mut Call<'_>) -> Result<(), CommandError> {
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

pub(super) fn client_id(call: &mut Call<'_>) -> Result<(), CommandError> {
    integer(call.out, count(call.session.id))
}

pub(super) fn client_getname(call: &mut Call<'_>) -> Result<(), CommandError> {
    let name = call
        .server
        .stats
        .client(call.session.id)
        .and_then(|record| record.name);
    resp::write_optional_bulk(call.out, name.as_deref());
    Ok(())
}

pub(super) fn client_setname(call: &mut Call<'_>) -> Result<(), CommandError> {
    let name = valid_client_name(&call.args[2])?;
    call.server
        .stats
        .update_client(call.session.id, |record| record.name = name);
    ok(call.out)
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`, which redis-rs and redis-cli 7.2+
/// send on connect.
pub(super) fn client_setinfo(call: &mut Call<'_>) -> Result<(), CommandError> {
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

pub(super) fn client_info(call: &mut Call<'_>) -> Result<(), CommandError> {
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
pub(super) fn client_list(call: &mut Call<'_>) -> Result<(), CommandError> {
    let filter: Option<Vec<u64>> = match &call.args[2..] {
        [] => None,
        [kind, value] if is(kind, "type") => match client_type_matches(value) {
            Some(true) => None,
            Some(false) => Some(Vec::new()),
            None => {
                return Err(CommandError::new(format!(
                    "ERR Unknown client type '{}'",
                    quoted_prefix(value, 128)
                )));
            }
        },
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

/// The client types Redis knows; every sidecar connection is a normal one.
fn client_type_matches(name: &[u8]) -> Option<bool> {
    if is(name, "normal") {
        Some(true)
    } else if ["master", "replica", "slave", "pubsub"]
        .iter()
        .any(|t| is(name, t))
    {
        Some(false)
    } else {
        None
    }
}

/// Redis's `clientKillCommand`: the old form `CLIENT KILL addr` answers OK
/// or "No such client" and may kill the caller; the filter form answers how
/// many it killed and skips the caller unless `SKIPME no`.
pub(super) fn client_kill(call: &mut Call<'_>) -> Result<(), CommandError> {
    let args = &call.args[2..];
    let old_form = args.len() == 1;
    let (mut id, mut addr, mut laddr) = (None, None, None);
    let mut normal = true;
    let mut skip_me = !old_form;
    if old_form {
        addr = Some(&args[0]);
    } else {
        let mut i = 0;
        while i < args.len() {
            let (option, value) = (&args[i], args.get(i + 1));
            let Some(value) = value else {
                return Err(SYNTAX_ERROR);
            };
            if is(option, "id") {
                let parsed = parse_i64(value)
                    .filter(|&id| id > 0)
                    .ok_or(CommandError::new("ERR client-id should be greater than 0"))?;
                id = Some(parsed as u64);
            } else if is(option, "type") {
                normal = client_type_matches(value).ok_or_else(|| {
                    CommandError::new(format!(
                        "ERR Unknown client type '{}'",
                        quoted_prefix(value, usize::MAX)
                    ))
                })?;
            } else if is(option, "addr") {
                addr = Some(value);
            } else if is(option, "laddr") {
                laddr = Some(value);
            } else if is(option, "user") {
                check_user(value)?;
            } else if is(option, "skipme") {
                skip_me = if is(value, "yes") {
                    true
                } else if is(value, "no") {
                    false
                } else {
                    return Err(SYNTAX_ERROR);
                };
            } else {
                return Err(SYNTAX_ERROR);
            }
            i += 2;
        }
    }
    let me = call.session.id;
    let mut killed = 0;
    for (client, record) in call.server.stats.clients() {
        let matches = normal
            && id.is_none_or(|id| id == client)
            && addr.is_none_or(|addr| addr[..] == *record.peer.to_string().as_bytes())
            && laddr.is_none_or(|laddr| laddr[..] == *record.local.to_string().as_bytes());
        if !matches || (client == me && skip_me) {
            continue;
        }
        if client == me {
            // Closed once this reply is written, as Redis does.
            call.session.quit = true;
        } else {
            record.kill.cancel();
        }
        killed += 1;
    }
    if old_form {
        if killed == 0 {
            return Err(CommandError::new("ERR No such client"));
        }
        return ok(call.out);
    }
    integer(call.out, killed)
}

/// Only the default user exists.
fn check_user(user: &[u8]) -> Result<(), CommandError> {
    if is(user, "default") {
        Ok(())
    } else {
        Err(CommandError::new(format!(
            "ERR No such user '{}'",
            quoted_prefix(user, usize::MAX)
        )))
    }
}

/// `CLIENT REPLY ON|OFF|SKIP`. OFF and SKIP are not answered themselves.
pub(super) fn client_reply(call: &mut Call<'_>) -> Result<(), CommandError> {
    let mode = &call.args[2];
    if is(mode, "on") {
        call.session.reply_off = false;
        call.session.skip_next_reply = false;
        call.session.skip_reply = false;
        ok(call.out)
    } else if is(mode, "off") {
        call.session.reply_off = true;
        Ok(())
    } else if is(mode, "skip") {
        if !call.session.reply_off {
            call.session.skip_next_reply = true;
        }
        Ok(())
    } else {
        Err(SYNTAX_ERROR)
    }
}

/// `CLIENT NO-EVICT ON|OFF`: accepted; the sidecar never evicts clients.
pub(super) fn client_no_evict(call: &mut Call<'_>) -> Result<(), CommandError> {
    let mode = &call.args[2];
    if is(mode, "on") || is(mode, "off") {
        ok(call.out)
    } else {
        Err(SYNTAX_ERROR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::test_client::*;

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
}
