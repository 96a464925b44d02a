//! Server commands: COMMAND, CONFIG and INFO, which report on the sidecar itself.

use super::*;

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

pub(super) fn command_all(call: &mut Call<'_>) -> Result<(), CommandError> {
    resp::write_array_len(call.out, TABLE.len());
    for spec in TABLE {
        write_command_info(call.out, spec, None);
    }
    Ok(())
}

pub(super) fn command_count(call: &mut Call<'_>) -> Result<(), CommandError> {
    integer(call.out, TABLE.len() as i64)
}

/// Documentation is not served; an empty map is a valid answer, and
/// redis-cli then simply shows no hints.
pub(super) fn command_docs(call: &mut Call<'_>) -> Result<(), CommandError> {
    resp::write_array_len(call.out, 0);
    Ok(())
}

pub(super) fn command_info(call: &mut Call<'_>) -> Result<(), CommandError> {
    let names = &call.args[2..];
    if names.is_empty() {
        return command_all(call);
    }
    resp::write_array_len(call.out, names.len());
    for name in names {
        match find_command(name) {
            Some((spec, parent)) => write_command_info(call.out, spec, parent),
            None => resp::write_null_bulk(call.out),
        }
    }
    Ok(())
}

/// A command by name, or a subcommand as `container|sub`, with its container.
fn find_command(name: &[u8]) -> Option<(&'static CommandSpec, Option<&'static str>)> {
    let Some(bar) = name.iter().position(|&b| b == b'|') else {
        return lookup(TABLE, name).map(|index| (&TABLE[index], None));
    };
    let parent = &TABLE[lookup(TABLE, &name[..bar])?];
    let Run::Container { subcommands, .. } = &parent.run else {
        return None;
    };
    let sub = lookup(subcommands, &name[bar + 1..])?;
    Some((&subcommands[sub], Some(parent.name)))
}

/// `COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN glob]`.
/// There are no modules, and ACL categories are not modelled: those
/// filters list nothing.
pub(super) fn command_list(call: &mut Call<'_>) -> Result<(), CommandError> {
    let filter = match &call.args[2..] {
        [] => None,
        [by, kind, value] if is(by, "filterby") => {
            if is(kind, "pattern") {
                Some(Some(Pattern::new(value)))
            } else if is(kind, "module") || is(kind, "aclcat") {
                Some(None)
            } else {
                return Err(SYNTAX_ERROR);
            }
        }
        _ => return Err(SYNTAX_ERROR),
    };
    let names: Vec<&str> = TABLE
        .iter()
        .map(|spec| spec.name)
        .filter(|name| match &filter {
            None => true,
            Some(Some(pattern)) => pattern.matches(name.as_bytes()),
            Some(None) => false,
        })
        .collect();
    resp::write_array_len(call.out, names.len());
    for name in names {
        resp::write_bulk(call.out, name.as_bytes());
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

pub(super) fn config_get(call: &mut Call<'_>) -> Result<(), CommandError> {
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
pub(super) fn config_set(call: &mut Call<'_>) -> Result<(), CommandError> {
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

pub(super) fn info(call: &mut Call<'_>) -> Result<(), CommandError> {
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
    use crate::commands::test_client::*;

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
}
