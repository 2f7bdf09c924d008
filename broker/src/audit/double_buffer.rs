//! Two buffers per file: the caller fills one while a dedicated writer thread writes
//! the other. The writer *takes* the filled buffer (a swap under a lock) as soon as
//! it is free and the buffer is due: full, older than the flush interval, or asked
//! for by the caller (urgent). So the writer goes from one write to the next without
//! waiting to be handed anything, and the caller never waits for the writer unless
//! its buffer is full. A line larger than a buffer is written on its own. Memory
//! stays bounded: buffers never grow past their capacity, or one such line.
//!
//! Each buffer carries a *mark* (a position the caller defines, e.g. "every offset
//! below N"). The writer publishes a buffer's mark only once its bytes are written
//! (and synced, with `fsync`), so readers of [`DoubleBuffer::written_mark`] never see
//! a position whose records could still be lost in memory.
//!
//! A failed write (a full disk, say) is transient: the writer says so once, keeps
//! what it has not written, and tries again with backoff until it succeeds, carrying
//! on exactly where the last write stopped (a short write is never written twice).
//! Meanwhile its mark stands still, so nothing that depends on it (freeing ring
//! slots) moves. Only once the owner asks it to stop ([`StopSignal::request`]) does
//! a failing writer give up, after [`STOP_PATIENCE`], and report the error.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::watched_file::{Check, WatchedFile};
use crate::metrics::WriteTimes;

/// Called with the new mark each time one is published (after a write, or when
/// nothing was buffered): lets the owner act on written records at once.
pub type OnWritten = Box<dyn Fn(u64) + Send + Sync>;

/// How often at most a writer checks that its file is still the one at its path.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How long a failing writer keeps trying once it is asked to stop.
pub const STOP_PATIENCE: Duration = Duration::from_secs(1);
/// The first and the longest pause between two tries of a failed write.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_LONGEST: Duration = Duration::from_millis(500);

struct Exchange {
    /// What the caller has appended and the writer not yet taken.
    filling: Vec<u8>,
    /// The position `filling` (with everything taken before it) completes.
    mark: u64,
    /// The caller asked for `filling` to be written now.
    urgent: bool,
    /// When the writer last took a buffer: `filling` is due a flush interval later.
    last_take: Instant,
    /// The writer is writing a buffer it took.
    writing: bool,
    closed: bool,
    /// The writer gave up (only ever after a stop request): every later call fails.
    error: Option<String>,
    /// The error of the write the writer is retrying, while it fails.
    failing: Option<String>,
}

struct Shared {
    exchange: Mutex<Exchange>,
    /// Tells the writer something may be due (or that it should stop).
    due: Condvar,
    /// Tells the caller the writer took a buffer or finished one.
    taken: Condvar,
    capacity: usize,
    interval: Duration,
    written_mark: AtomicU64,
    /// Bytes written to the file so far (by this buffer).
    bytes_written: Arc<AtomicU64>,
    writes: AtomicU64,
    on_written: OnWritten,
    /// The file's name, for what the writer reports.
    file_name: String,
    /// The owner is stopping: a failing writer gives up after [`STOP_PATIENCE`].
    stop: AtomicBool,
    /// Where each write's duration goes, once the broker's metrics ask for it.
    write_times: std::sync::OnceLock<WriteTimes>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Exchange> {
        self.exchange.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Waits up to `pause` before the next try of a failed write; a stop request
    /// cuts it short.
    fn pause_before_retry(&self, pause: Duration) {
        let ex = self.lock();
        if !self.stopping() {
            let _ = self.due.wait_timeout(ex, pause);
        }
    }

    fn set_failing(&self, failing: Option<String>) {
        self.lock().failing = failing;
    }
}

/// Asks a [`DoubleBuffer`]'s writer to stop retrying a failed write (after
/// [`STOP_PATIENCE`]), and a caller waiting for it to give up waiting. Usable from
/// any thread while the buffer's owner is busy.
#[derive(Clone)]
pub struct StopSignal(Arc<Shared>);

impl StopSignal {
    pub fn request(&self) {
        let shared = &*self.0;
        let _ex = shared.lock();
        shared.stop.store(true, Ordering::Release);
        shared.due.notify_all();
        shared.taken.notify_all();
    }
}

/// Whether a [`DoubleBuffer`]'s writer is failing, readable from any thread.
#[derive(Clone)]
pub struct WriterHealth(Arc<Shared>);

impl WriterHealth {
    /// The error of a write the writer keeps retrying, while it fails.
    pub fn failure(&self) -> Option<String> {
        self.0.lock().failing.clone()
    }
}

/// The filling side of a double-buffered file.
pub struct DoubleBuffer {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl DoubleBuffer {
    /// Starts the writer thread for `file`. `mark` is the position already on disk.
    pub fn new(
        file: WatchedFile,
        capacity: usize,
        interval: Duration,
        fsync: bool,
        mark: u64,
        on_written: OnWritten,
    ) -> io::Result<Self> {
        let file_name = file.name().to_string();
        let capacity = capacity.max(1);
        let shared = Arc::new(Shared {
            exchange: Mutex::new(Exchange {
                filling: Vec::with_capacity(capacity),
                mark,
                urgent: false,
                last_take: Instant::now(),
                writing: false,
                closed: false,
                error: None,
                failing: None,
            }),
            due: Condvar::new(),
            taken: Condvar::new(),
            capacity,
            interval,
            written_mark: AtomicU64::new(mark),
            bytes_written: Arc::new(AtomicU64::new(0)),
            writes: AtomicU64::new(0),
            on_written,
            file_name,
            stop: AtomicBool::new(false),
            write_times: std::sync::OnceLock::new(),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(writer_thread_name(&shared.file_name))
                .spawn(move || write_loop(file, &shared, fsync))?
        };
        Ok(DoubleBuffer {
            shared,
            writer: Some(writer),
        })
    }

    /// Appends whole lines. Runs of lines that fit go in at once; when the buffer is
    /// full the caller waits for the writer to take it. A line larger than a whole
    /// buffer goes into a buffer of its own.
    pub fn append_lines(&mut self, mut lines: &[u8]) -> io::Result<()> {
        let shared = &*self.shared;
        let mut ex = shared.lock();
        while !lines.is_empty() {
            if let Some(e) = &ex.error {
                return Err(io::Error::other(e.clone()));
            }
            let room = shared.capacity.saturating_sub(ex.filling.len());
            let fit = if lines.len() <= room {
                lines.len()
            } else {
                // The longest run of whole lines that fits.
                lines[..room]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1)
            };
            let take = if fit > 0 {
                fit
            } else if ex.filling.is_empty() {
                // A line longer than a whole buffer: alone, and written at once.
                ex.urgent = true;
                lines
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(lines.len(), |i| i + 1)
            } else {
                if shared.stopping() {
                    if let Some(failing) = &ex.failing {
                        // The owner is stopping and the file cannot take more: what is
                        // not written stays where it came from (the region).
                        return Err(io::Error::other(failing.clone()));
                    }
                }
                ex.urgent = true;
                shared.due.notify_one();
                ex = shared.taken.wait(ex).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            if ex.filling.is_empty() {
                // The writer may sleep without a timer while nothing is buffered.
                shared.due.notify_one();
            }
            ex.filling.extend_from_slice(&lines[..take]);
            lines = &lines[take..];
        }
        Ok(())
    }

    /// Appends the whole lines of `batch`, which complete `mark`, leaves it empty,
    /// then ticks with `urgent` (see [`DoubleBuffer::tick`]). When nothing is
    /// buffered and the batch fits, the batch itself becomes the buffer and the
    /// caller gets the buffer's empty allocation back: formatted bytes are not copied
    /// a second time on their way to the file, and an urgent batch is taken in the
    /// same wake-up that tells the writer of it.
    pub fn append_batch(&mut self, batch: &mut Vec<u8>, mark: u64, urgent: bool) -> io::Result<()> {
        if !self.swap_in(batch, mark, urgent)? {
            let result = self.append_lines(batch);
            batch.clear();
            result?;
            self.set_mark(mark);
        }
        self.tick(urgent)
    }

    /// Makes a non-empty `batch` the buffer if nothing is buffered and it fits;
    /// false if it was not taken.
    fn swap_in(&mut self, batch: &mut Vec<u8>, mark: u64, urgent: bool) -> io::Result<bool> {
        let shared = &*self.shared;
        let mut ex = shared.lock();
        if let Some(e) = &ex.error {
            return Err(io::Error::other(e.clone()));
        }
        if batch.is_empty() || !ex.filling.is_empty() || batch.len() > shared.capacity {
            return Ok(false);
        }
        // `filling` was empty: the caller gets an empty allocation back.
        std::mem::swap(&mut ex.filling, batch);
        ex.mark = mark;
        ex.urgent |= urgent;
        // The writer may sleep without a timer while nothing is buffered.
        shared.due.notify_one();
        Ok(true)
    }

    /// Sets the mark that the lines appended so far complete.
    pub fn set_mark(&mut self, mark: u64) {
        self.shared.lock().mark = mark;
    }

    /// Whether anything is buffered and not yet taken by the writer.
    pub fn has_pending(&self) -> bool {
        !self.shared.lock().filling.is_empty()
    }

    /// With `urgent`, asks the writer to take what is buffered now. When nothing is
    /// buffered or being written, publishes the mark (every line for it is written).
    pub fn tick(&mut self, urgent: bool) -> io::Result<()> {
        let shared = &*self.shared;
        let mut ex = shared.lock();
        if let Some(e) = &ex.error {
            return Err(io::Error::other(e.clone()));
        }
        if ex.filling.is_empty() {
            let mark = ex.mark;
            if !ex.writing && mark > shared.written_mark.load(Ordering::Acquire) {
                shared.written_mark.fetch_max(mark, Ordering::AcqRel);
                drop(ex);
                (shared.on_written)(mark);
            }
        } else if urgent && !ex.urgent {
            ex.urgent = true;
            shared.due.notify_one();
        }
        Ok(())
    }

    /// Every record up to this mark is written (and synced under `fsync`).
    pub fn written_mark(&self) -> u64 {
        self.shared.written_mark.load(Ordering::Acquire)
    }

    /// The error of a write the writer keeps retrying, while it fails.
    pub fn write_failure(&self) -> Option<String> {
        self.shared.lock().failing.clone()
    }

    /// Records how long each write takes (with its sync under `fsync`) in `times`.
    pub fn time_writes(&self, times: WriteTimes) {
        let _ = self.shared.write_times.set(times);
    }

    /// A handle that tells whether the writer is failing (see [`WriterHealth`]).
    pub fn health(&self) -> WriterHealth {
        WriterHealth(self.shared.clone())
    }

    /// A handle that asks the writer to stop retrying (see [`StopSignal`]).
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal(self.shared.clone())
    }

    /// The count of bytes the writer has written to the file so far (all the
    /// lines appended, in order), updated as it writes.
    pub fn bytes_written(&self) -> Arc<AtomicU64> {
        self.shared.bytes_written.clone()
    }

    /// How many buffers the writer has written (for status and tests).
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }

    /// Writes everything buffered, syncs, stops the writer thread, and reports the
    /// first write error, if any.
    pub fn close(mut self) -> io::Result<()> {
        let mark = {
            let mut ex = self.shared.lock();
            ex.closed = true;
            self.shared.due.notify_one();
            ex.mark
        };
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        match &self.shared.lock().error {
            Some(e) => Err(io::Error::other(e.clone())),
            None => {
                self.shared.written_mark.fetch_max(mark, Ordering::AcqRel);
                Ok(())
            }
        }
    }
}

impl Drop for DoubleBuffer {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            self.shared.lock().closed = true;
            self.shared.due.notify_one();
            let _ = w.join();
        }
    }
}

/// The writer thread: takes each buffer as it falls due, writes it, publishes its
/// mark; on close, writes what is left, syncs and returns.
fn write_loop(mut file: WatchedFile, shared: &Shared, fsync: bool) {
    let mut spare = Vec::with_capacity(shared.capacity);
    let mut check_failing = false;
    // The file is checked after a write at most every CHECK_INTERVAL (two `stat`
    // calls each time), and once the writer is idle after writes it has not
    // checked: under load it writes thousands of buffers a second.
    let mut checked_at = Instant::now();
    let mut unchecked_write = false;
    loop {
        let (mut ours, mark) = {
            let mut ex = shared.lock();
            loop {
                if !ex.filling.is_empty() {
                    let age = ex.last_take.elapsed();
                    let full = ex.filling.len() >= shared.capacity;
                    if ex.urgent || ex.closed || full || age >= shared.interval {
                        break;
                    }
                    ex = shared
                        .due
                        .wait_timeout(ex, shared.interval - age)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                } else if ex.closed {
                    drop(ex);
                    check_in_place(&mut file, shared, &mut check_failing);
                    let _ = file.sync_all();
                    return;
                } else if unchecked_write {
                    let left = CHECK_INTERVAL.saturating_sub(checked_at.elapsed());
                    if left.is_zero() {
                        drop(ex);
                        check_in_place(&mut file, shared, &mut check_failing);
                        (checked_at, unchecked_write) = (Instant::now(), false);
                        ex = shared.lock();
                    } else {
                        ex = shared
                            .due
                            .wait_timeout(ex, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                } else {
                    ex = shared.due.wait(ex).unwrap_or_else(|p| p.into_inner());
                }
            }
            let ours = std::mem::replace(&mut ex.filling, std::mem::take(&mut spare));
            ex.urgent = false;
            ex.writing = true;
            ex.last_take = Instant::now();
            shared.taken.notify_all();
            (ours, ex.mark)
        };
        let len = ours.len() as u64;
        let began = Instant::now();
        let result = write_retrying(&mut file, &ours, fsync, shared);
        if let (Ok(()), Some(times)) = (&result, shared.write_times.get()) {
            times.observe(began.elapsed());
        }
        if result.is_ok() {
            if checked_at.elapsed() >= CHECK_INTERVAL {
                check_in_place(&mut file, shared, &mut check_failing);
                (checked_at, unchecked_write) = (Instant::now(), false);
            } else {
                unchecked_write = true;
            }
        }
        ours.clear();
        // A buffer that held one oversized line goes back to its usual size.
        ours.shrink_to(shared.capacity);
        spare = ours;
        {
            let mut ex = shared.lock();
            ex.writing = false;
            if let Err(e) = result {
                // Given up at a stop: nothing after the lost bytes may be written,
                // or a later mark would cover them.
                ex.error.get_or_insert(e.to_string());
                shared.taken.notify_all();
                return;
            }
            shared.written_mark.fetch_max(mark, Ordering::AcqRel);
            shared.bytes_written.fetch_add(len, Ordering::AcqRel);
            shared.writes.fetch_add(1, Ordering::Relaxed);
            shared.taken.notify_all();
        }
        // Outside the lock: the hook may do real work (freeing slots).
        (shared.on_written)(mark);
    }
}

/// A thread name within the 15 bytes Linux keeps: `writer-` and the file's stem.
fn writer_thread_name(file_name: &str) -> String {
    let stem = file_name.split('.').next().unwrap_or(file_name);
    format!("writer-{stem}").chars().take(15).collect()
}

/// Writes `bytes` (then syncs, with `fsync`), retrying failures with backoff from
/// where the last try stopped. Reports the first failure of a run of them once, and
/// the recovery once. Gives up only when the owner is stopping, after
/// [`STOP_PATIENCE`].
/// Checks that the file is still the one at its path, restoring it there if it is
/// not, and says what happened. A failing check is reported once, until one passes.
fn check_in_place(file: &mut WatchedFile, shared: &Shared, failing: &mut bool) {
    let name = &shared.file_name;
    match file.check() {
        Ok(Check::Intact) => {}
        Ok(Check::Restored { bytes, displaced }) => {
            let how = match displaced {
                None => "deleted".to_string(),
                Some(aside) => format!(
                    "replaced by another file (moved to {})",
                    aside.display()
                ),
            };
            eprintln!(
                "broker: {name} was {how} while the broker ran; restored it from the open file ({bytes} bytes), and writing goes on there"
            );
        }
        Ok(Check::Grown { by }) => eprintln!(
            "broker: {name} grew by {by} bytes the broker did not write (another process appends to it); they are kept"
        ),
        Ok(Check::Truncated { expected, found }) => eprintln!(
            "broker: {name} was cut from {expected} to {found} bytes while the broker ran; what was cut is lost from the file, and offsets are still never used twice"
        ),
        Err(e) if !*failing => {
            eprintln!("broker: cannot check that {name} is still in place: {e}; checking again after the next write");
            *failing = true;
            return;
        }
        Err(_) => return,
    }
    *failing = false;
}

fn write_retrying(
    file: &mut WatchedFile,
    bytes: &[u8],
    fsync: bool,
    shared: &Shared,
) -> io::Result<()> {
    let mut written = 0;
    let mut synced = !fsync;
    let mut pause = RETRY_FIRST;
    let mut failing_since: Option<Instant> = None;
    let mut give_up_at: Option<Instant> = None;
    loop {
        let step = if written < bytes.len() {
            match file.write(&bytes[written..]) {
                Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    written += n;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else if !synced {
            file.sync_data().map(|()| synced = true)
        } else {
            break;
        };
        let Err(e) = step else { continue };
        if e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if failing_since.is_none() {
            failing_since = Some(Instant::now());
            eprintln!(
                "broker: cannot write {}: {e}; retrying, and producers wait until it can be written",
                shared.file_name
            );
            shared.set_failing(Some(e.to_string()));
        }
        if shared.stopping() {
            let deadline = *give_up_at.get_or_insert_with(|| Instant::now() + STOP_PATIENCE);
            if Instant::now() >= deadline {
                return Err(e);
            }
        }
        shared.pause_before_retry(pause);
        pause = (pause * 2).min(RETRY_LONGEST);
    }
    if let Some(since) = failing_since {
        eprintln!(
            "broker: {} written again after {:.1} s",
            shared.file_name,
            since.elapsed().as_secs_f64()
        );
        shared.set_failing(None);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> (std::path::PathBuf, WatchedFile) {
        let p = std::env::temp_dir().join(format!("mk-db-{}-{name}", std::process::id()));
        let f = std::fs::File::create(&p).unwrap();
        (p.clone(), WatchedFile::new(f, p).unwrap())
    }

    /// A buffer written only when full or asked, with no hook.
    fn quiet_buffer(file: WatchedFile, capacity: usize) -> DoubleBuffer {
        DoubleBuffer::new(
            file,
            capacity,
            Duration::from_secs(3600),
            false,
            0,
            Box::new(|_| {}),
        )
        .unwrap()
    }

    /// Waits, with a deadline, until `done` holds.
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::yield_now();
        }
    }

    fn wait_for_mark(b: &DoubleBuffer, mark: u64) {
        wait_until(&format!("mark {mark} not written"), || {
            b.written_mark() >= mark
        });
    }

    #[test]
    fn records_arrive_in_order_across_swaps_and_oversized_lines() {
        let (p, f) = temp_file("order");
        let mut b = quiet_buffer(f, 16);
        let mut expected = Vec::new();
        for i in 0..100u64 {
            let mut rec = if i % 10 == 0 {
                vec![b'A' + (i % 26) as u8; 40]
            } else {
                format!("{i}").into_bytes()
            };
            rec.push(b'\n');
            b.append_lines(&rec).unwrap();
            b.set_mark(i + 1);
            expected.extend_from_slice(&rec);
        }
        assert!(b.writes() > 0, "full buffers were written before close");
        b.close().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), expected);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn batches_of_lines_arrive_whole_and_buffers_stay_within_capacity() {
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
            let ex = b.shared.lock();
            let single_line = ex.filling.iter().filter(|&&c| c == b'\n').count() <= 1;
            assert!(
                ex.filling.len() <= 32 || single_line,
                "a buffer holds at most its capacity, or one longer line"
            );
        }
        b.close().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), batches.concat());
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn a_batch_becomes_the_buffer_when_nothing_waits_and_is_copied_otherwise() {
        let (p, f) = temp_file("batch");
        let mut b = quiet_buffer(f, 64);
        let mut batch = b"one\ntwo\n".to_vec();
        let allocation = batch.as_ptr();
        b.append_batch(&mut batch, 0, false).unwrap();
        assert!(batch.is_empty(), "the caller gets an empty batch back");
        assert_eq!(
            b.shared.lock().filling.as_ptr(),
            allocation,
            "with nothing buffered, the batch itself is the buffer (no copy)"
        );
        // Something is buffered now: the next batch is appended after it.
        batch.extend_from_slice(b"three\n");
        b.append_batch(&mut batch, 0, false).unwrap();
        assert!(batch.is_empty());
        assert_eq!(&b.shared.lock().filling[..], b"one\ntwo\nthree\n");
        // A batch over the capacity is split into buffers of whole lines.
        let long: Vec<u8> = (0..12)
            .flat_map(|i| format!("line {i:02}\n").into_bytes())
            .collect();
        batch.extend_from_slice(&long);
        b.append_batch(&mut batch, 0, false).unwrap();
        assert!(batch.is_empty());
        assert!(b.shared.lock().filling.len() <= 64);
        b.close().unwrap();
        let mut expected = b"one\ntwo\nthree\n".to_vec();
        expected.extend_from_slice(&long);
        assert_eq!(std::fs::read(&p).unwrap(), expected);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn an_urgent_batch_is_taken_with_its_mark_in_one_wake_up() {
        let (p, f) = temp_file("urgent");
        let mut b = quiet_buffer(f, 1024);
        let mut batch = b"calm\n".to_vec();
        b.append_batch(&mut batch, 1, false).unwrap();
        assert_eq!(b.written_mark(), 0, "not urgent: it waits for its interval");
        batch.extend_from_slice(b"now\n");
        // The copy path (something is buffered) and the swap path both honour it.
        b.append_batch(&mut batch, 2, true).unwrap();
        wait_for_mark(&b, 2);
        batch.extend_from_slice(b"again\n");
        b.append_batch(&mut batch, 3, true).unwrap();
        wait_for_mark(&b, 3);
        assert_eq!(std::fs::read(&p).unwrap(), b"calm\nnow\nagain\n");
        b.close().unwrap();
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
            Duration::from_secs(3600),
            true,
            7,
            Box::new(move |m| hook.store(m, Ordering::Release)),
        )
        .unwrap();
        assert_eq!(b.written_mark(), 7);
        b.append_lines(b"x\n").unwrap();
        b.set_mark(8);
        b.tick(false).unwrap();
        assert_eq!(b.written_mark(), 7, "buffered, not written");
        b.tick(true).unwrap();
        wait_for_mark(&b, 8);
        assert_eq!(std::fs::read(&p).unwrap(), b"x\n");
        // The hook runs after the mark is published, outside the lock.
        wait_until("the hook never heard of mark 8", || {
            seen.load(Ordering::Acquire) == 8
        });
        // A mark with nothing new to write is published by the next tick.
        b.set_mark(9);
        b.tick(false).unwrap();
        wait_for_mark(&b, 9);
        b.close().unwrap();
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn a_failing_write_is_retried_until_a_stop_and_its_mark_never_moves() {
        // Every write to /dev/full fails with "No space left on device".
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let full = WatchedFile::new(full, "/dev/full".into()).unwrap();
        let mut b = DoubleBuffer::new(
            full,
            16,
            Duration::from_secs(3600),
            false,
            5,
            Box::new(|_| {}),
        )
        .unwrap();
        b.append_lines(b"first line\n").unwrap();
        b.set_mark(6);
        b.tick(true).unwrap();
        wait_until("the failure is never reported", || {
            b.write_failure().is_some()
        });
        assert!(b.write_failure().unwrap().contains("No space left"));
        // The writer keeps the failed buffer and retries; the caller may still fill
        // the other one.
        b.append_lines(b"second\n").unwrap();
        b.set_mark(7);
        b.tick(true).unwrap();
        assert_eq!(b.written_mark(), 5, "nothing counts as written");
        let stop = b.stop_signal();
        let started = Instant::now();
        stop.request();
        // A caller waiting for room gives up at once once stopping.
        let err = b
            .append_lines(b"third line, too long to fit\n")
            .unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        let err = b.close().unwrap_err();
        eprintln!("gave up {:?} after the stop request", started.elapsed());
        assert!(err.to_string().contains("No space left"), "{err}");
        assert!(
            started.elapsed() >= STOP_PATIENCE,
            "it kept trying for a while"
        );
    }

    #[test]
    fn the_writer_keeps_the_flush_interval_by_itself() {
        let (p, f) = temp_file("interval");
        let mut b = DoubleBuffer::new(
            f,
            1024,
            Duration::from_millis(20),
            false,
            0,
            Box::new(|_| {}),
        )
        .unwrap();
        let started = Instant::now();
        b.append_lines(b"late\n").unwrap();
        b.set_mark(1);
        // No tick, no urgency: the writer takes the buffer once it is a flush
        // interval old.
        wait_for_mark(&b, 1);
        eprintln!("written after {:?}", started.elapsed());
        assert_eq!(std::fs::read(&p).unwrap(), b"late\n");
        b.close().unwrap();
        let _ = std::fs::remove_file(p);
    }
}
