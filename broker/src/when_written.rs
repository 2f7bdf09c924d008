//! Work that waits for a file's writer: each item is kept with the byte count of
//! the file's buffers that covers it, and taken once the writer has written that
//! many bytes (its own count, shared with it). The persistence file's marks of
//! the partitions' rings and the consumption log's marks of their groups both
//! wait this way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub struct WhenWritten<T> {
    written: OnceLock<Arc<AtomicU64>>,
    /// (bytes that cover it, item), in the order the bytes are written.
    pending: Mutex<VecDeque<(u64, T)>>,
}

impl<T> Default for WhenWritten<T> {
    fn default() -> Self {
        WhenWritten {
            written: OnceLock::new(),
            pending: Mutex::new(VecDeque::new()),
        }
    }
}

impl<T> WhenWritten<T> {
    /// Counts against `written`, the writer's count of bytes written.
    pub fn watch(&self, written: Arc<AtomicU64>) {
        let _ = self.written.set(written);
    }

    /// `item` is due once the writer has written `end` bytes.
    pub fn push(&self, end: u64, item: T) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((end, item));
    }

    /// The items now due, in order.
    pub fn take_due(&self) -> Vec<T> {
        let Some(written) = self.written.get() else {
            return Vec::new();
        };
        let written = written.load(Ordering::Acquire);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        while pending.front().is_some_and(|(end, _)| *end <= written) {
            due.extend(pending.pop_front().map(|(_, item)| item));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_due_in_order_once_their_bytes_are_written() {
        let marks = WhenWritten::default();
        let written = Arc::new(AtomicU64::new(0));
        marks.push(10, "a");
        assert!(marks.take_due().is_empty(), "nothing is due before a watch");
        marks.watch(written.clone());
        marks.push(20, "b");
        assert!(marks.take_due().is_empty());
        written.store(15, Ordering::Release);
        assert_eq!(marks.take_due(), ["a"]);
        written.store(20, Ordering::Release);
        assert_eq!(marks.take_due(), ["b"]);
        assert!(marks.take_due().is_empty());
    }
}
