//! Which anomalies stay impossible when other clients may write the stormed
//! keys unseen (`keys.source: existing` over the network): the argument per
//! kind is docs/checker-open-world.md. Unseen clients may SET and DEL any
//! key at any instant, but only with values of their own: never one in the
//! storm's value format (only a storm worker writes those, each once).
//!
//! Only a GET that returned a storm worker's value proves something then:
//! that value is in the key only between its one SET and the next write
//! (the storm's or anyone's), so reading it after the storm deleted or
//! overwrote it cannot be explained by any unseen write. Every other read
//! (nil, EXISTS, a DEL's count, a SCAN, an original value an application
//! may write again) an unseen SET or DEL can explain.

use mapchaos_api::AnomalyKind;

use super::Finding;
use crate::history::{History, Op, ValueId};

/// Whether `finding` is impossible whatever unseen clients wrote.
pub(super) fn unexplainable(history: &History, finding: &Finding) -> bool {
    let read_storm_value = finding
        .culprit
        .and_then(|event| history.events().get(event as usize))
        .is_some_and(|event| match event.op {
            Op::Get {
                read: Some(value), ..
            } => is_storm_write(value),
            _ => false,
        });
    match finding.kind {
        // A value the storm wrote, read after an acknowledged DEL (or a read
        // that saw the key absent) that followed its SET: nobody else can
        // have put it back.
        AnomalyKind::StaleRead | AnomalyKind::Resurrection => read_storm_value,
        // The read returned an older storm value instead of the sole last
        // write's: only the storm writes that value, and its SET is over
        // before the last write began.
        AnomalyKind::LostWrite => read_storm_value,
        // A DEL's count, a SCAN's keys and a value no storm SET wrote are
        // all what an unseen SET or DEL may leave; the full search's
        // failures assume a closed world.
        AnomalyKind::LostDelete
        | AnomalyKind::PhantomRead
        | AnomalyKind::ScanMiss
        | AnomalyKind::ScanPhantom
        | AnomalyKind::Nonlinearizable => false,
    }
}

/// A value a storm worker wrote (not the preparer's record of an original
/// value, which the application may write again, nor bytes no storm wrote).
fn is_storm_write(value: ValueId) -> bool {
    value != ValueId::UNWRITTEN && value.0 >> 32 != 0
}

#[cfg(test)]
mod tests {
    use mapchaos_api::AnomalyKind;

    use crate::checker::{CheckOptions, check};
    use crate::history::{Event, History, Op, ValueId};

    /// A value storm worker 1 wrote, and the preparer's record of an
    /// original value (which the application may write again).
    const STORM: ValueId = ValueId((1 << 32) | 7);
    const ORIGINAL: ValueId = ValueId(0);
    const OTHER: ValueId = ValueId((2 << 32) | 9);

    fn ev(client: u32, call: u64, ret: u64, op: Op) -> Event {
        Event {
            client,
            call,
            ret,
            op,
        }
    }

    /// (kind found, keys no unseen write explains)
    fn judged(events: Vec<Event>) -> (Vec<AnomalyKind>, u64) {
        let history = History::new(vec![b"k".to_vec()], 0, false, events).unwrap();
        let report = check(&history, &CheckOptions::default());
        let kinds = report
            .anomalies
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, _)| *k)
            .collect();
        (kinds, report.open_world_anomalies)
    }

    fn stale(value: ValueId) -> Vec<Event> {
        vec![
            ev(1, 0, 10, Op::Set { key: 0, value }),
            ev(
                2,
                20,
                30,
                Op::Del {
                    key: 0,
                    removed: true,
                },
            ),
            ev(
                3,
                40,
                50,
                Op::Get {
                    key: 0,
                    read: Some(value),
                },
            ),
        ]
    }

    #[test]
    fn a_storm_value_read_after_its_delete_fails_in_an_open_world() {
        let (kinds, proven) = judged(stale(STORM));
        assert!(kinds.contains(&AnomalyKind::StaleRead), "{kinds:?}");
        assert_eq!(proven, 1);
    }

    #[test]
    fn an_original_value_read_after_the_delete_may_be_the_applications_write() {
        let (kinds, proven) = judged(stale(ORIGINAL));
        assert!(kinds.contains(&AnomalyKind::StaleRead), "{kinds:?}");
        assert_eq!(proven, 0);
    }

    #[test]
    fn a_resurrection_proves_something_only_through_a_get_of_a_storm_value() {
        let resurrected = |last: Op| {
            vec![
                ev(
                    1,
                    0,
                    10,
                    Op::Set {
                        key: 0,
                        value: STORM,
                    },
                ),
                ev(2, 20, 30, Op::Get { key: 0, read: None }),
                ev(3, 40, 50, last),
            ]
        };
        let (kinds, proven) = judged(resurrected(Op::Get {
            key: 0,
            read: Some(STORM),
        }));
        // (The read that saw it absent is a lost write too, in a closed world.)
        assert!(kinds.contains(&AnomalyKind::Resurrection), "{kinds:?}");
        assert_eq!(proven, 1);
        // EXISTS says present: an unseen SET explains it.
        let (kinds, proven) = judged(resurrected(Op::Exists {
            key: 0,
            present: true,
        }));
        assert!(!kinds.is_empty());
        assert_eq!(proven, 0);
    }

    #[test]
    fn a_lost_write_proves_something_only_when_an_older_storm_value_came_back() {
        let lost = |read: Option<ValueId>| {
            vec![
                ev(
                    1,
                    0,
                    10,
                    Op::Set {
                        key: 0,
                        value: OTHER,
                    },
                ),
                ev(
                    1,
                    20,
                    30,
                    Op::Set {
                        key: 0,
                        value: STORM,
                    },
                ),
                ev(2, 40, 50, Op::Get { key: 0, read }),
            ]
        };
        let (kinds, proven) = judged(lost(Some(OTHER)));
        assert!(kinds.contains(&AnomalyKind::LostWrite), "{kinds:?}");
        assert_eq!(proven, 1);
        // Nil: an unseen DEL explains it.
        let (kinds, proven) = judged(lost(None));
        assert_eq!(kinds, [AnomalyKind::LostWrite]);
        assert_eq!(proven, 0);
    }

    #[test]
    fn lost_deletes_and_phantoms_are_explained_by_unseen_writes() {
        let lost_delete = vec![
            ev(
                1,
                0,
                10,
                Op::Set {
                    key: 0,
                    value: STORM,
                },
            ),
            ev(
                2,
                20,
                30,
                Op::Del {
                    key: 0,
                    removed: false,
                },
            ),
        ];
        let (kinds, proven) = judged(lost_delete);
        assert_eq!(kinds, [AnomalyKind::LostDelete]);
        assert_eq!(proven, 0);
        let phantom = vec![
            ev(
                1,
                0,
                10,
                Op::Set {
                    key: 0,
                    value: STORM,
                },
            ),
            ev(
                2,
                20,
                30,
                Op::Get {
                    key: 0,
                    read: Some(ValueId::UNWRITTEN),
                },
            ),
        ];
        let (kinds, proven) = judged(phantom);
        assert!(kinds.contains(&AnomalyKind::PhantomRead), "{kinds:?}");
        assert_eq!(proven, 0);
    }
}
