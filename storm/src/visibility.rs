//! Delete visibility with a read/write split: per read endpoint, how long a
//! deleted value stayed readable there after its DEL returned, measured
//! from the history; and the witnesses told which endpoint served their
//! reads.
//!
//! A measurement is one acknowledged DEL D of a key and one endpoint that
//! GETs the key after D returned and before the key's next SET is sent
//! (after that, a read may see the new write). Among those GETs, the ones
//! that returned a value whose SET returned before D was sent read a value
//! D had deleted: the measurement is the time from D's return to the send
//! of the last of them (the value was readable at least that long after
//! D), or 0 when none did. GETs of values with no storm SET, SETs without a
//! reply and DELs without a reply are left out: they fix no instant.

use std::collections::HashMap;

use mapchaos_api::storm::{DeleteVisibility, ReadEndpoint};
use mapchaos_api::{OpName, Witness};

use crate::history::{ClientId, Event, History, Op, ValueId};

/// One endpoint: its shown URL and the workers reading from it.
pub type Endpoints = [(String, Vec<ClientId>)];

/// The delete visibility of every endpoint, in `endpoints`' order.
pub fn measure(history: &History, endpoints: &Endpoints) -> Vec<ReadEndpoint> {
    let endpoint_of: HashMap<ClientId, usize> = endpoints
        .iter()
        .enumerate()
        .flat_map(|(i, (_, workers))| workers.iter().map(move |&w| (w, i)))
        .collect();
    let mut per_key: Vec<KeyEvents> = (0..history.keys().len())
        .map(|_| KeyEvents::default())
        .collect();
    let mut set_ret: HashMap<ValueId, u64> = HashMap::new();
    for event in history.events() {
        match event.op {
            Op::Set { key, value } => {
                set_ret.insert(value, event.ret);
                per_key[key as usize].set_calls.push(event.call);
            }
            Op::Del { key, .. } if !event.is_info() => {
                per_key[key as usize].dels.push((event.call, event.ret));
            }
            Op::Get {
                key,
                read: Some(value),
            } if !event.is_info() && value != ValueId::UNWRITTEN => {
                if let Some(&endpoint) = endpoint_of.get(&event.client) {
                    per_key[key as usize].gets.push(Get {
                        endpoint,
                        call: event.call,
                        value: Some(value),
                    });
                }
            }
            Op::Get { key, read: None } if !event.is_info() => {
                if let Some(&endpoint) = endpoint_of.get(&event.client) {
                    per_key[key as usize].gets.push(Get {
                        endpoint,
                        call: event.call,
                        value: None,
                    });
                }
            }
            _ => {}
        }
    }
    let mut lags: Vec<Vec<u64>> = vec![Vec::new(); endpoints.len()];
    for key in &mut per_key {
        key.measure(&set_ret, &mut lags);
    }
    endpoints
        .iter()
        .zip(lags)
        .map(|((shown, workers), lags)| ReadEndpoint {
            endpoint: shown.clone(),
            workers: workers.clone(),
            delete_visibility: summarize(lags),
        })
        .collect()
}

#[derive(Default)]
struct KeyEvents {
    set_calls: Vec<u64>,
    /// Completed DELs: (call, ret).
    dels: Vec<(u64, u64)>,
    gets: Vec<Get>,
}

#[derive(Clone, Copy)]
struct Get {
    endpoint: usize,
    call: u64,
    value: Option<ValueId>,
}

impl KeyEvents {
    /// Push one lag (ns) per measured DEL and endpoint onto `lags`.
    fn measure(&mut self, set_ret: &HashMap<ValueId, u64>, lags: &mut [Vec<u64>]) {
        if self.dels.is_empty() || self.gets.is_empty() {
            return;
        }
        self.set_calls.sort_unstable();
        self.gets.sort_unstable_by_key(|g| g.call);
        // The first SET sent after `t`: the end of a DEL's window.
        let next_set = |t: u64| {
            let i = self.set_calls.partition_point(|&c| c <= t);
            self.set_calls.get(i).copied().unwrap_or(u64::MAX)
        };
        for &(del_call, del_ret) in &self.dels {
            let end = next_set(del_ret);
            let first = self.gets.partition_point(|g| g.call <= del_ret);
            let mut latest: Vec<Option<u64>> = vec![None; lags.len()];
            let mut observed = vec![false; lags.len()];
            for get in self.gets[first..].iter().take_while(|g| g.call < end) {
                observed[get.endpoint] = true;
                let deleted = get
                    .value
                    .and_then(|v| set_ret.get(&v))
                    .is_some_and(|&ret| ret != Event::NO_RETURN && ret < del_call);
                if deleted {
                    latest[get.endpoint] = Some(get.call - del_ret);
                }
            }
            for (endpoint, seen) in observed.into_iter().enumerate() {
                if seen {
                    lags[endpoint].push(latest[endpoint].unwrap_or(0));
                }
            }
        }
    }
}

fn summarize(mut lags: Vec<u64>) -> DeleteVisibility {
    lags.sort_unstable();
    let micros = |ns: u64| ns.div_ceil(1000);
    let quantile = |q: f64| {
        if lags.is_empty() {
            0
        } else {
            let rank = ((q * lags.len() as f64).ceil() as usize).clamp(1, lags.len());
            micros(lags[rank - 1])
        }
    };
    DeleteVisibility {
        deletes: lags.len() as u64,
        read_late: lags.iter().filter(|&&lag| lag > 0).count() as u64,
        p50_micros: quantile(0.5),
        p99_micros: quantile(0.99),
        max_micros: lags.last().copied().map_or(0, micros),
    }
}

/// Say, in each witness with reads, which endpoint served them.
pub fn annotate(witnesses: &mut [Witness], endpoints: &Endpoints) {
    for witness in witnesses {
        let mut named: Vec<(u32, &str)> = witness
            .operations
            .iter()
            .filter(|op| matches!(op.op, OpName::Get | OpName::Exists | OpName::Scan))
            .filter_map(|op| {
                endpoints
                    .iter()
                    .find(|(_, workers)| workers.contains(&op.client))
                    .map(|(shown, _)| (op.client, shown.as_str()))
            })
            .collect();
        named.sort_unstable();
        named.dedup();
        if named.is_empty() {
            continue;
        }
        let served: Vec<String> = named
            .iter()
            .map(|(worker, shown)| format!("worker {worker}'s from read endpoint {shown}"))
            .collect();
        witness.explanation = format!(
            "{} The reads were served by the read/write split: {}; SETs and DELs went to the primary.",
            witness.explanation,
            served.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(client: ClientId, call: u64, ret: u64, op: Op) -> Event {
        Event {
            client,
            call,
            ret,
            op,
        }
    }

    #[test]
    fn a_deleted_value_read_late_on_a_replica_is_measured_there_only() {
        let v = ValueId::new(1, 1);
        let events = vec![
            event(1, 0, 10, Op::Set { key: 0, value: v }),
            event(
                1,
                20,
                30,
                Op::Del {
                    key: 0,
                    removed: true,
                },
            ),
            // Worker 2 reads the replica: the deleted value, 50 and 170 µs on.
            event(
                2,
                50_030,
                50_040,
                Op::Get {
                    key: 0,
                    read: Some(v),
                },
            ),
            event(
                2,
                170_030,
                170_040,
                Op::Get {
                    key: 0,
                    read: Some(v),
                },
            ),
            event(2, 200_000, 200_010, Op::Get { key: 0, read: None }),
            // Worker 3 reads the primary: the DEL is seen at once.
            event(3, 40, 45, Op::Get { key: 0, read: None }),
            // A second DEL, the value already gone: read absent, lag 0.
            event(
                1,
                300_000,
                300_010,
                Op::Del {
                    key: 0,
                    removed: false,
                },
            ),
            event(2, 300_020, 300_030, Op::Get { key: 0, read: None }),
        ];
        let history = History::new(vec![b"k".to_vec()], 0, false, events).unwrap();
        let endpoints = vec![
            ("redis://replica".to_owned(), vec![2]),
            ("redis://primary".to_owned(), vec![3]),
        ];
        let measured = measure(&history, &endpoints);
        let replica = measured[0].delete_visibility;
        assert_eq!(replica.deletes, 2);
        assert_eq!(replica.read_late, 1);
        assert_eq!(replica.max_micros, 170);
        assert_eq!(replica.p99_micros, 170);
        assert_eq!(replica.p50_micros, 0);
        let primary = measured[1].delete_visibility;
        assert_eq!(
            (primary.deletes, primary.read_late, primary.max_micros),
            (1, 0, 0)
        );
    }

    #[test]
    fn a_value_written_during_the_delete_or_after_the_next_set_is_not_late() {
        let (old, racing, new) = (ValueId::new(1, 1), ValueId::new(1, 2), ValueId::new(4, 1));
        let events = vec![
            event(1, 0, 10, Op::Set { key: 0, value: old }),
            // A SET racing the DEL may land after it: reading it is fine.
            event(
                4,
                15,
                40,
                Op::Set {
                    key: 0,
                    value: racing,
                },
            ),
            event(
                1,
                20,
                30,
                Op::Del {
                    key: 0,
                    removed: true,
                },
            ),
            event(
                2,
                1_000,
                1_010,
                Op::Get {
                    key: 0,
                    read: Some(racing),
                },
            ),
            // After the next SET was sent, the window is closed.
            event(4, 2_000, 2_010, Op::Set { key: 0, value: new }),
            event(
                2,
                5_000,
                5_010,
                Op::Get {
                    key: 0,
                    read: Some(old),
                },
            ),
        ];
        let history = History::new(vec![b"k".to_vec()], 0, false, events).unwrap();
        let measured = measure(&history, &[("r".to_owned(), vec![2])]);
        let lag = measured[0].delete_visibility;
        assert_eq!((lag.deletes, lag.read_late, lag.max_micros), (1, 0, 0));
    }
}
