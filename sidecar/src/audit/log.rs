//! The delete log: one JSON line per key the map removes (or a delete command
//! names), written by a thread of its own. Bounded twice: the map's threads
//! hand events over a bounded channel and never wait (a full channel drops
//! the event and counts it in `mapchaos_delete_log_dropped_total`), and the
//! file is size-capped and rotated (`PATH`, `PATH.1` … `PATH.N`).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::SystemTime;

use prometheus::IntCounter;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Cause, Source};

/// Events waiting for the writer; past this they are dropped and counted.
pub const CHANNEL_CAPACITY: usize = 4096;
/// Longest key written in full; longer ones are cut (and say so), which
/// bounds what a waiting event holds.
pub const MAX_LOGGED_KEY: usize = 1024;

/// Where and how the delete log is written.
#[derive(Debug, Clone)]
pub struct DeleteLogConfig {
    /// The file (`-` for standard output, which is never rotated).
    pub path: PathBuf,
    /// Size at which the file is rotated.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub rotated_files: u32,
    /// Write `keySha256` (SHA-256 of the key, hex) instead of the key.
    pub redact_keys: bool,
}

/// The key of one event, as the log will show it.
pub(crate) enum EventKey {
    /// The key (at most [`MAX_LOGGED_KEY`] bytes of it) and its length.
    Key { bytes: Box<[u8]>, len: usize },
    /// The key's SHA-256.
    Hashed([u8; 32]),
    /// `FLUSHDB`/`FLUSHALL`: this many keys at once.
    Cleared(u64),
}

/// One delete, as handed to the writer.
pub(crate) struct Event {
    pub(crate) at: SystemTime,
    pub(crate) source: Source,
    pub(crate) cause: Cause,
    /// Client id and name, when an actor ran the command.
    pub(crate) client: Option<(u64, Option<String>)>,
    pub(crate) command: Option<&'static str>,
    pub(crate) key: EventKey,
    pub(crate) removed: bool,
}

impl Event {
    pub(crate) fn to_json(&self) -> Value {
        let mut line = Map::new();
        let at =
            jiff::Timestamp::try_from(self.at).map_or_else(|_| String::new(), |t| t.to_string());
        line.insert("time".into(), at.into());
        line.insert("source".into(), self.source.as_str().into());
        line.insert("cause".into(), self.cause.as_str().into());
        if let Some((id, name)) = &self.client {
            line.insert("client".into(), json!({ "id": id, "name": name }));
        }
        if let Some(command) = self.command {
            line.insert("command".into(), command.into());
        }
        match &self.key {
            EventKey::Key { bytes, len } => {
                match std::str::from_utf8(bytes) {
                    Ok(text) => line.insert("key".into(), text.into()),
                    Err(_) => line.insert("keyHex".into(), hex(bytes).into()),
                };
                if *len > bytes.len() {
                    line.insert("keyLen".into(), (*len).into());
                    line.insert("keyTruncated".into(), true.into());
                }
            }
            EventKey::Hashed(digest) => {
                line.insert("keySha256".into(), hex(digest).into());
            }
            EventKey::Cleared(keys) => {
                line.insert("keys".into(), (*keys).into());
            }
        }
        line.insert("removed".into(), self.removed.into());
        Value::Object(line)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sending side, held by the audit.
pub struct DeleteLog {
    sender: SyncSender<Event>,
    dropped: IntCounter,
    redact: bool,
}

impl DeleteLog {
    /// Open the log (an error names the path) and start its writer.
    pub fn start(config: DeleteLogConfig, dropped: IntCounter) -> io::Result<DeleteLog> {
        Self::start_with_capacity(config, dropped, CHANNEL_CAPACITY)
    }

    pub(crate) fn start_with_capacity(
        config: DeleteLogConfig,
        dropped: IntCounter,
        capacity: usize,
    ) -> io::Result<DeleteLog> {
        let output = Output::open(&config)?;
        let (sender, receiver) = sync_channel(capacity);
        std::thread::Builder::new()
            .name("delete-log".into())
            .spawn(move || write_all(receiver, output))?;
        Ok(DeleteLog {
            sender,
            dropped,
            redact: config.redact_keys,
        })
    }

    /// The key as this log shows it (hashed here when redacting: the bytes
    /// never wait in the channel).
    pub(crate) fn event_key(&self, key: &[u8]) -> EventKey {
        if self.redact {
            EventKey::Hashed(Sha256::digest(key).into())
        } else {
            EventKey::Key {
                bytes: key[..key.len().min(MAX_LOGGED_KEY)].into(),
                len: key.len(),
            }
        }
    }

    /// Hand over one event; never waits.
    pub(crate) fn send(&self, event: Event) {
        if self.sender.try_send(event).is_err() {
            self.dropped.inc();
        }
    }
}

/// The writing side: a size-capped, rotated file, or standard output.
struct Output {
    path: Option<PathBuf>,
    max_bytes: u64,
    rotated_files: u32,
    writer: BufWriter<Box<dyn Write + Send>>,
    written: u64,
}

impl Output {
    fn open(config: &DeleteLogConfig) -> io::Result<Output> {
        if config.path.as_os_str() == "-" {
            return Ok(Output {
                path: None,
                max_bytes: u64::MAX,
                rotated_files: 0,
                writer: BufWriter::new(Box::new(io::stdout())),
                written: 0,
            });
        }
        let file = append(&config.path)?;
        let written = file.metadata()?.len();
        Ok(Output {
            path: Some(config.path.clone()),
            max_bytes: config.max_bytes,
            rotated_files: config.rotated_files,
            writer: BufWriter::new(Box::new(file)),
            written,
        })
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let size = line.len() as u64 + 1;
        if self.written > 0 && self.written + size > self.max_bytes {
            self.rotate()?;
        }
        self.writer.write_all(line)?;
        self.writer.write_all(b"\n")?;
        self.written += size;
        Ok(())
    }

    /// `PATH.N-1` → `PATH.N` … `PATH` → `PATH.1`, then a fresh `PATH`; with no
    /// rotated files kept, the file is just started again.
    fn rotate(&mut self) -> io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.writer.flush()?;
        if self.rotated_files > 0 {
            for n in (1..self.rotated_files).rev() {
                let from = numbered(&path, n);
                if from.exists() {
                    std::fs::rename(&from, numbered(&path, n + 1))?;
                }
            }
            std::fs::rename(&path, numbered(&path, 1))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        self.writer = BufWriter::new(Box::new(file));
        self.written = 0;
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the delete log {}: {e}", path.display()),
            )
        })
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Write every event until the audit is dropped, flushing whenever the
/// channel runs dry so a line is on disk soon after its delete.
fn write_all(receiver: Receiver<Event>, mut output: Output) {
    let mut failed = false;
    let mut write = |output: &mut Output, event: Event| {
        let line = event.to_json().to_string();
        if let Err(error) = output.write_line(line.as_bytes())
            && !failed
        {
            tracing::error!(%error, "cannot write the delete log; its lines are lost until it can");
            failed = true;
        }
    };
    while let Ok(event) = receiver.recv() {
        write(&mut output, event);
        loop {
            match receiver.try_recv() {
                Ok(event) => write(&mut output, event),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = output.writer.flush();
                    return;
                }
            }
        }
        let _ = output.writer.flush();
    }
    let _ = output.writer.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: EventKey) -> Event {
        Event {
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            source: Source::App,
            cause: Cause::Del,
            client: Some((7, Some("web".into()))),
            command: Some("del"),
            key,
            removed: true,
        }
    }

    #[test]
    fn a_line_names_time_source_cause_client_command_key_and_removal() {
        let line = event(EventKey::Key {
            bytes: b"user:1".as_slice().into(),
            len: 6,
        })
        .to_json();
        assert_eq!(line["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(line["source"], "app");
        assert_eq!(line["cause"], "del");
        assert_eq!(line["client"], json!({"id": 7, "name": "web"}));
        assert_eq!(line["command"], "del");
        assert_eq!(line["key"], "user:1");
        assert_eq!(line["removed"], true);
        let binary = event(EventKey::Key {
            bytes: vec![0xff, 0x00].into(),
            len: 5000,
        })
        .to_json();
        assert_eq!(binary["keyHex"], "ff00");
        assert_eq!(binary["keyLen"], 5000);
        assert_eq!(binary["keyTruncated"], true);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // No writer: the queue fills and stays full, as behind a stuck disk.
        let (sender, receiver) = sync_channel(2);
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let log = DeleteLog {
            sender,
            dropped: dropped.clone(),
            redact: false,
        };
        let started = std::time::Instant::now();
        for _ in 0..10 {
            log.send(event(log.event_key(b"k")));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(dropped.get(), 8);
        assert_eq!(receiver.try_iter().count(), 2);
    }

    #[test]
    fn long_keys_wait_in_the_queue_cut_to_the_logged_length() {
        let (sender, _receiver) = sync_channel(1);
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let log = DeleteLog {
            sender,
            dropped,
            redact: false,
        };
        match log.event_key(&vec![b'k'; 10 * MAX_LOGGED_KEY]) {
            EventKey::Key { bytes, len } => {
                assert_eq!(bytes.len(), MAX_LOGGED_KEY);
                assert_eq!(len, 10 * MAX_LOGGED_KEY);
            }
            _ => panic!("not redacting"),
        }
    }

    #[test]
    fn rotation_keeps_each_file_under_the_cap_and_only_the_files_asked_for() {
        let dir = std::env::temp_dir().join(format!("mapchaos-delete-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("deletes.jsonl");
        let config = DeleteLogConfig {
            path: path.clone(),
            max_bytes: 1000,
            rotated_files: 2,
            redact_keys: false,
        };
        let mut output = Output::open(&config).unwrap();
        for i in 0..100 {
            output
                .write_line(format!("line {i:04} {}", "x".repeat(80)).as_bytes())
                .unwrap();
        }
        output.writer.flush().unwrap();
        for file in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
            let len = std::fs::metadata(&file).unwrap().len();
            assert!(len <= 1000 && len > 0, "{}: {len}", file.display());
        }
        assert!(!numbered(&path, 3).exists());
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(
            last.ends_with(&format!("line 0099 {}\n", "x".repeat(80))),
            "{last}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
