//! The shelf of finished storms: what they leave behind (report, history,
//! delete journal) is kept for `GET` within a byte budget, not a count, so a
//! run of storms cannot grow the sidecar past its container's limit. Over the
//! budget the oldest storm's history goes first (it is most of the bytes),
//! then whole storms, oldest first; a short list of dropped ids lets a `GET`
//! say that a storm was dropped for memory instead of "unknown".

use std::collections::VecDeque;

/// The default budget for finished storms: an eighth of the chart's default
/// 512 MiB container limit, leaving the rest to the map and a running storm.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Dropped storm ids remembered (ids are at most 128 bytes: about 150 KiB).
const REMEMBERED_DROPS: usize = 1024;

/// Something kept on the shelf: a finished storm.
pub(crate) trait Shelved {
    fn id(&self) -> &str;
    /// Let go of the history (its bytes are then no longer held).
    fn drop_history(&self);
}

struct Item<T> {
    value: T,
    /// Everything but the history.
    base_bytes: u64,
    history_bytes: u64,
}

impl<T> Item<T> {
    fn bytes(&self) -> u64 {
        self.base_bytes + self.history_bytes
    }
}

/// Finished storms within `max_bytes`.
pub(crate) struct Shelf<T> {
    items: VecDeque<Item<T>>,
    held: u64,
    max_bytes: u64,
    dropped: VecDeque<String>,
}

impl<T: Shelved + Clone> Shelf<T> {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Shelf {
            items: VecDeque::new(),
            held: 0,
            max_bytes,
            dropped: VecDeque::new(),
        }
    }

    /// Bytes the kept storms hold, as the budget counts them.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.held
    }

    /// Keep `value` (newest), then drop the oldest until within the budget.
    /// A history bigger than the whole budget is dropped at once.
    pub(crate) fn push(&mut self, value: T, base_bytes: u64, history_bytes: u64) {
        let history_bytes = if base_bytes + history_bytes > self.max_bytes && history_bytes > 0 {
            value.drop_history();
            0
        } else {
            history_bytes
        };
        self.dropped.retain(|id| id != value.id());
        let item = Item {
            value,
            base_bytes,
            history_bytes,
        };
        self.held += item.bytes();
        self.items.push_back(item);
        self.enforce();
    }

    fn enforce(&mut self) {
        // Histories first, oldest first: a report is a few kilobytes and
        // says what happened; the history is what takes the room.
        for item in self.items.iter_mut() {
            if self.held <= self.max_bytes {
                return;
            }
            if item.history_bytes > 0 {
                item.value.drop_history();
                self.held -= item.history_bytes;
                item.history_bytes = 0;
            }
        }
        // Then whole storms, oldest first; the newest stays even when its
        // report alone is over the budget, so its GET still answers.
        while self.held > self.max_bytes && self.items.len() > 1 {
            let item = self.items.pop_front().expect("more than one item");
            self.held -= item.bytes();
            self.remember_dropped(item.value.id().to_owned());
        }
    }

    fn remember_dropped(&mut self, id: String) {
        if self.dropped.len() == REMEMBERED_DROPS {
            self.dropped.pop_front();
        }
        self.dropped.push_back(id);
    }

    /// The kept storm `id`.
    pub(crate) fn find(&self, id: &str) -> Option<T> {
        self.items
            .iter()
            .find(|item| item.value.id() == id)
            .map(|item| item.value.clone())
    }

    /// Whether `id` was kept once and dropped for memory.
    pub(crate) fn was_dropped(&self, id: &str) -> bool {
        self.dropped.iter().any(|d| d == id)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    #[derive(Clone)]
    struct Fake {
        id: String,
        history: Rc<Cell<bool>>,
    }

    impl Shelved for Fake {
        fn id(&self) -> &str {
            &self.id
        }
        fn drop_history(&self) {
            self.history.set(false);
        }
    }

    fn fake(id: &str) -> Fake {
        Fake {
            id: id.into(),
            history: Rc::new(Cell::new(true)),
        }
    }

    #[test]
    fn histories_go_first_oldest_first_then_whole_storms() {
        let mut shelf = Shelf::new(1000);
        let (a, b, c) = (fake("a"), fake("b"), fake("c"));
        shelf.push(a.clone(), 100, 400);
        shelf.push(b.clone(), 100, 400);
        assert_eq!(shelf.held_bytes(), 1000);
        assert!(a.history.get() && b.history.get());
        shelf.push(c.clone(), 100, 400);
        // 1500 > 1000: a's history goes (1100), then b's (700).
        assert!(!a.history.get() && !b.history.get() && c.history.get());
        assert_eq!(shelf.held_bytes(), 700);
        assert!(shelf.find("a").is_some() && !shelf.was_dropped("a"));

        for i in 0..8 {
            shelf.push(fake(&format!("r{i}")), 100, 0);
        }
        assert_eq!(shelf.held_bytes(), 1000);
        // c's history went before any report; then a, the oldest.
        assert!(!c.history.get());
        assert!(shelf.find("a").is_none() && shelf.was_dropped("a"));
        assert!(shelf.find("b").is_some());
        shelf.push(fake("r8"), 100, 0);
        assert!(shelf.find("b").is_none() && shelf.was_dropped("b"));
        assert!(shelf.find("c").is_some());
        assert!(shelf.find("r7").is_some() && !shelf.was_dropped("r7"));
        assert!(!shelf.was_dropped("never-seen"));
    }

    #[test]
    fn a_history_over_the_whole_budget_is_dropped_at_once_but_the_report_stays() {
        let mut shelf = Shelf::new(1000);
        let big = fake("big");
        shelf.push(big.clone(), 100, 5000);
        assert!(!big.history.get());
        assert_eq!(shelf.held_bytes(), 100);
        assert!(shelf.find("big").is_some());
    }

    #[test]
    fn the_newest_report_stays_even_over_the_budget_and_drops_are_remembered_boundedly() {
        let mut shelf = Shelf::new(10);
        for i in 0..REMEMBERED_DROPS + 5 {
            shelf.push(fake(&i.to_string()), 50, 0);
            assert_eq!(shelf.held_bytes(), 50, "only the newest is kept");
        }
        assert!(shelf.find(&(REMEMBERED_DROPS + 4).to_string()).is_some());
        assert_eq!(shelf.dropped.len(), REMEMBERED_DROPS);
        assert!(!shelf.was_dropped("0"), "the oldest drops are forgotten");
        assert!(shelf.was_dropped(&(REMEMBERED_DROPS + 3).to_string()));
    }
}
