//! A read/write split, as applications that read from replicas run one:
//! SETs and DELs go to the primary, GETs, EXISTS and SCANs to read
//! endpoints. Preparing and restoring use the primary alone. Each worker
//! reads from one endpoint (worker `w` from endpoint `(w - 1) mod n`), so
//! every read of the history is known by the endpoint that served it.

use std::time::Duration;

use bytes::Bytes;
use mapchaos_api::storm::MemorySnapshot;

use crate::app_traffic::AppTap;
use crate::client::{ClientError, MapClient, Request, RespClient, Response};
use crate::endpoint::Endpoint;
use crate::history::ClientId;
use crate::restore::{Applied, RestoreItem};
use crate::runner::{OpObserver, StormTarget};

/// A primary target plus the endpoints its reads go to.
pub struct SplitTarget {
    primary: Box<dyn StormTarget>,
    reads: Vec<Endpoint>,
    timeout: Duration,
}

impl SplitTarget {
    /// `reads` must be non-empty; each must accept the credentials and
    /// answer a `PING` (the error names, as shown, the one that does not).
    pub fn new(
        primary: Box<dyn StormTarget>,
        reads: Vec<Endpoint>,
        timeout: Duration,
    ) -> Result<SplitTarget, (String, ClientError)> {
        for endpoint in &reads {
            crate::client::ping(endpoint, timeout).map_err(|e| (endpoint.shown().to_owned(), e))?;
        }
        Ok(SplitTarget {
            primary,
            reads,
            timeout,
        })
    }

    /// The endpoint worker `worker` (1-based) reads from.
    pub fn endpoint_of(&self, worker: ClientId) -> usize {
        (worker.saturating_sub(1) as usize) % self.reads.len()
    }
}

impl StormTarget for SplitTarget {
    /// The preparer's and the restore's connection: the primary alone.
    fn connect(&self) -> Result<Box<dyn MapClient>, ClientError> {
        self.primary.connect()
    }

    fn connect_worker(&self, worker: ClientId) -> Result<Box<dyn MapClient>, ClientError> {
        let endpoint = &self.reads[self.endpoint_of(worker)];
        Ok(Box::new(SplitClient {
            primary: self.primary.connect()?,
            reads: RespClient::connect_watched(endpoint, self.timeout, None)?,
            read_slots: Vec::new(),
            write_slots: Vec::new(),
            scratch: Vec::new(),
        }))
    }

    fn memory(&self) -> MemorySnapshot {
        self.primary.memory()
    }

    fn describe(&self) -> String {
        let reads: Vec<&str> = self.reads.iter().map(Endpoint::shown).collect();
        format!("{} (reads: {})", self.primary.describe(), reads.join(", "))
    }

    fn observer(&self) -> Option<Box<dyn OpObserver>> {
        self.primary.observer()
    }

    fn app_tap(&self) -> Option<&dyn AppTap> {
        self.primary.app_tap()
    }

    fn read_endpoints(&self, workers: u32) -> Vec<(String, Vec<ClientId>)> {
        let mut endpoints: Vec<(String, Vec<ClientId>)> = self
            .reads
            .iter()
            .map(|e| (e.shown().to_owned(), Vec::new()))
            .collect();
        for worker in 1..=workers.max(1) {
            endpoints[self.endpoint_of(worker)].1.push(worker);
        }
        endpoints
    }
}

/// One worker's two connections: writes to the primary, reads to its
/// endpoint. A batch is split in two pipelines, writes first; the history
/// gives every operation of a batch the batch's call and return, so their
/// order within it does not matter.
struct SplitClient {
    primary: Box<dyn MapClient>,
    reads: RespClient,
    read_slots: Vec<usize>,
    write_slots: Vec<usize>,
    scratch: Vec<Result<Response, ClientError>>,
}

fn is_read(request: &Request<'_>) -> bool {
    matches!(request, Request::Get(_) | Request::Exists(_))
}

impl MapClient for SplitClient {
    fn execute(
        &mut self,
        requests: &[Request<'_>],
        responses: &mut Vec<Result<Response, ClientError>>,
    ) {
        if requests.iter().all(is_read) {
            return self.reads.execute(requests, responses);
        }
        if !requests.iter().any(is_read) {
            return self.primary.execute(requests, responses);
        }
        self.read_slots.clear();
        self.write_slots.clear();
        for (i, request) in requests.iter().enumerate() {
            if is_read(request) {
                self.read_slots.push(i);
            } else {
                self.write_slots.push(i);
            }
        }
        let start = responses.len();
        responses.extend(requests.iter().map(|_| {
            Err(ClientError::Connection(
                "no reply (the read/write split lost it)".into(),
            ))
        }));
        for (slots, reads) in [(&self.write_slots, false), (&self.read_slots, true)] {
            let batch: Vec<Request<'_>> = slots.iter().map(|&i| requests[i]).collect();
            self.scratch.clear();
            if reads {
                self.reads.execute(&batch, &mut self.scratch);
            } else {
                self.primary.execute(&batch, &mut self.scratch);
            }
            for (&i, response) in slots.iter().zip(self.scratch.drain(..)) {
                responses[start + i] = response;
            }
        }
    }

    fn scan_page(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Bytes>), ClientError> {
        self.reads.scan_page(cursor, pattern, count)
    }

    fn restore(
        &mut self,
        items: &[RestoreItem<'_>],
        applied: &mut Vec<Result<Applied, ClientError>>,
    ) {
        self.primary.restore(items, applied);
    }

    fn restore_guarantee(&self) -> &'static str {
        self.primary.restore_guarantee()
    }

    fn unwatched(&self) -> bool {
        self.primary.unwatched()
    }
}
