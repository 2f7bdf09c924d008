//! Two fixed-capacity buffers per file: the caller fills one while a dedicated
//! writer thread writes the other. They swap when the filling one is full, when the
//! flush interval has passed, or when the caller says it is urgent. A record larger
//! than a buffer is written straight through. Memory stays bounded: a full buffer
//! makes the caller wait for the writer, it never grows.
//!
//! Each buffer carries a *mark* (a position the caller defines, e.g. "every offset
//! below N"). The writer publishes a buffer's mark only once its bytes are written
//! (and synced, with `fsync`), so readers of [`DoubleBuffer::written_mark`] never see
//! a position whose records could still be lost in memory.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Exchange {
    /// A buffer handed to the writer, with its mark.
    full: Option<(Vec<u8>, u64)>,
    /// The buffer the writer gave back, empty.
    spare: Option<Vec<u8>>,
    closed: bool,
    error: Option<String>,
}

/// Called with the new mark each time one is published (after a write, or when
/// nothing was buffered): lets the owner act on written records at once.
pub type OnWritten = Box<dyn Fn(u64) + Send + Sync>;

struct Shared {
    exchange: Mutex<Exchange>,
    changed: Condvar,
    written_mark: AtomicU64,
    writes: AtomicU64,
    on_written: OnWritten,
}

/// The filling side of a double-buffered file.
pub struct DoubleBuffer {
    shared: Arc<Shared>,
    filling: Vec<u8>,
    mark: u64,
    capacity: usize,
    interval: Duration,
    last_swap: Instant,
    writer: Option<JoinHandle<()>>,
}

impl DoubleBuffer {
    /// Starts the writer thread for `file`. `mark` is the position already on disk.
    pub fn new(
        file: File,
        capacity: usize,
        interval: Duration,
        fsync: bool,
        mark: u64,
        name: &str,
        on_written: OnWritten,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            exchange: Mutex::new(Exchange {
                spare: Some(Vec::with_capacity(capacity)),
                ..Exchange::default()
            }),
            changed: Condvar::new(),
            written_mark: AtomicU64::new(mark),
            writes: AtomicU64::new(0),
            on_written,
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("writer-{name}"))
                .spawn(move || write_loop(file, &shared, fsync))?
        };
        Ok(DoubleBuffer {
            shared,
            filling: Vec::with_capacity(capacity),
            mark,
            capacity: capacity.max(1),
            interval,
            last_swap: Instant::now(),
            writer: Some(writer),
        })
    }

    /// Appends one record (a whole line). Waits for the writer only when the buffer
    /// is full.
    pub fn append(&mut self, record: &[u8]) -> io::Result<()> {
        if self.filling.len() + record.len() > self.capacity {
            self.swap()?;
        }
        if record.len() > self.capacity {
            // Straight through: hand it to the writer as a buffer of its own.
            self.hand_over(record.to_vec())?;
            return Ok(());
        }
        self.filling.extend_from_slice(record);
        Ok(())
    }

    /// Appends whole lines: at once when they fit in the filling buffer, otherwise
    /// line by line (so that a line larger than a buffer is still written through).
    pub fn append_lines(&mut self, lines: &[u8]) -> io::Result<()> {
        if self.filling.len() + lines.len() <= self.capacity {
            self.filling.extend_from_slice(lines);
            return Ok(());
        }
        for line in lines.split_inclusive(|&b| b == b'\n') {
            self.append(line)?;
        }
        Ok(())
    }

    /// Sets the mark that the records appended so far complete.
    pub fn set_mark(&mut self, mark: u64) {
        self.mark = mark;
    }

    /// Whether anything is buffered and not yet handed to the writer.
    pub fn has_pending(&self) -> bool {
        !self.filling.is_empty()
    }

    /// Swaps if the interval has passed or `urgent`, and the writer is free; also
    /// publishes a new mark when nothing is buffered.
    pub fn tick(&mut self, urgent: bool) -> io::Result<()> {
        if self.filling.is_empty() {
            if self.mark > self.shared.written_mark.load(Ordering::Acquire) && self.writer_idle() {
                self.shared.written_mark.store(self.mark, Ordering::Release);
                (self.shared.on_written)(self.mark);
            }
            return Ok(());
        }
        if (urgent || self.last_swap.elapsed() >= self.interval) && self.writer_idle() {
            self.swap()?;
        }
        Ok(())
    }

    fn writer_idle(&self) -> bool {
        let ex = self
            .shared
            .exchange
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        ex.full.is_none() && ex.spare.is_some()
    }

    /// Hands the filling buffer to the writer, waiting for the spare one.
    pub fn swap(&mut self) -> io::Result<()> {
        let mut spare = self.take_spare()?;
        std::mem::swap(&mut spare, &mut self.filling);
        self.last_swap = Instant::now();
        self.give(spare)
    }

    fn hand_over(&mut self, buffer: Vec<u8>) -> io::Result<()> {
        // Keep file order: whatever is buffered goes first.
        if !self.filling.is_empty() {
            self.swap()?;
        }
        let spare = self.take_spare()?;
        self.give(buffer)?;
        // The writer returns `buffer`; keep the regular-sized spare instead.
        let returned = self.take_spare()?;
        drop(returned);
        self.shared
            .exchange
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spare = Some(spare);
        Ok(())
    }

    fn take_spare(&self) -> io::Result<Vec<u8>> {
        let mut ex = self
            .shared
            .exchange
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(e) = &ex.error {
                return Err(io::Error::other(e.clone()));
            }
            if let Some(b) = ex.spare.take() {
                return Ok(b);
            }
            ex = self
                .shared
                .changed
                .wait(ex)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn give(&self, buffer: Vec<u8>) -> io::Result<()> {
        let mut ex = self
            .shared
            .exchange
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        ex.full = Some((buffer, self.mark));
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Every record up to this mark is written (and synced under `fsync`).
    pub fn written_mark(&self) -> u64 {
        self.shared.written_mark.load(Ordering::Acquire)
    }

    /// How many buffers the writer has written (for status and tests).
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }

    /// Writes everything buffered, syncs, stops the writer thread, and reports the
    /// first write error, if any.
    pub fn close(mut self) -> io::Result<()> {
        if !self.filling.is_empty() {
            self.swap()?;
        }
        // Wait for the writer to finish the last buffer, then tell it to stop.
        let spare = self.take_spare()?;
        {
            let mut ex = self
                .shared
                .exchange
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            ex.spare = Some(spare);
            ex.closed = true;
            self.shared.changed.notify_all();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let ex = self
            .shared
            .exchange
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &ex.error {
            Some(e) => Err(io::Error::other(e.clone())),
            None => {
                self.shared.written_mark.store(self.mark, Ordering::Release);
                Ok(())
            }
        }
    }
}

impl Drop for DoubleBuffer {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            let mut ex = self
                .shared
                .exchange
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            ex.closed = true;
            self.shared.changed.notify_all();
            drop(ex);
            let _ = w.join();
        }
    }
}

fn write_loop(mut file: File, shared: &Shared, fsync: bool) {
    loop {
        let (mut buffer, mark) = {
            let mut ex = shared.exchange.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(job) = ex.full.take() {
                    break job;
                }
                if ex.closed {
                    let _ = file.sync_all();
                    return;
                }
                ex = shared.changed.wait(ex).unwrap_or_else(|p| p.into_inner());
            }
        };
        let result =
            file.write_all(&buffer)
                .and_then(|_| if fsync { file.sync_data() } else { Ok(()) });
        let mut ex = shared.exchange.lock().unwrap_or_else(|p| p.into_inner());
        let written = match result {
            Ok(()) => {
                shared.written_mark.fetch_max(mark, Ordering::AcqRel);
                shared.writes.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                ex.error = Some(e.to_string());
                false
            }
        };
        buffer.clear();
        ex.spare = Some(buffer);
        shared.changed.notify_all();
        drop(ex);
        // Outside the lock: the hook may do real work (freeing slots), and the
        // filling side must not wait for it to swap.
        if written {
            (shared.on_written)(mark);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> (std::path::PathBuf, File) {
        let p = std::env::temp_dir().join(format!("mk-db-{}-{name}", std::process::id()));
        let f = File::create(&p).unwrap();
        (p, f)
    }

    /// A buffer that swaps only when full, with no hook.
    fn quiet_buffer(file: File, capacity: usize) -> DoubleBuffer {
        DoubleBuffer::new(
            file,
            capacity,
            Duration::from_secs(3600),
            false,
            0,
            "t",
            Box::new(|_| {}),
        )
        .unwrap()
    }

    #[test]
    fn records_arrive_in_order_across_swaps_and_straight_through_writes() {
        let (p, f) = temp_file("order");
        let mut b = quiet_buffer(f, 16);
        let mut expected = Vec::new();
        for i in 0..100u64 {
            let rec = if i % 10 == 0 {
                vec![b'A' + (i % 26) as u8; 40]
            } else {
                format!("{i}\n").into_bytes()
            };
            b.append(&rec).unwrap();
            b.set_mark(i + 1);
            expected.extend_from_slice(&rec);
        }
        assert!(b.writes() > 0, "a full buffer was handed to the writer");
        b.close().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), expected);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn batches_of_lines_arrive_whole_whether_they_fit_or_not() {
        let (p, f) = temp_file("lines");
        let mut b = quiet_buffer(f, 32);
        let batches: [&[u8]; 4] = [
            b"a\nb\n",
            b"a line longer than the whole buffer is\nc\n",
            b"0123456789\n0123456789\n0123456789\n",
            b"d\n",
        ];
        for lines in batches {
            b.append_lines(lines).unwrap();
            assert!(
                b.filling.len() <= 32,
                "the buffer stays within its capacity"
            );
        }
        b.close().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), batches.concat());
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn the_mark_is_published_only_after_the_write() {
        let (p, f) = temp_file("mark");
        let seen = Arc::new(AtomicU64::new(0));
        let hook = seen.clone();
        let mut b = DoubleBuffer::new(
            f,
            1024,
            Duration::ZERO,
            true,
            7,
            "t",
            Box::new(move |m| hook.store(m, Ordering::Release)),
        )
        .unwrap();
        assert_eq!(b.written_mark(), 7);
        b.append(b"x\n").unwrap();
        b.set_mark(8);
        assert_eq!(b.written_mark(), 7, "buffered, not written");
        b.tick(false).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.written_mark() != 8 {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"x\n");
        assert_eq!(
            seen.load(Ordering::Acquire),
            8,
            "the hook heard of the new mark"
        );
        b.close().unwrap();
        let _ = std::fs::remove_file(p);
    }
}
