//! Waiting and waking through the region: an event count over a futex word.
//!
//! A poster changes the state, then wakes sleepers only if some are counted, so the
//! fast path costs one fence and one load, no syscall. A waiter spins briefly
//! ([`spin_until`]: a cross-core futex wake costs tens of microseconds, a cache-line
//! hop a tenth of one) unless what it waits for is the broker's slower work, then
//! counts itself,
//! rechecks, and sleeps for at most [`MAX_SLEEP`]: a lost wake-up or a dead poster
//! delays a waiter, never wedges it.

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::layout::EventWord;
use crate::sys::{futex_wait, futex_wake_all};

/// Longest single sleep: every waiter rechecks its state and stop conditions this often.
pub const MAX_SLEEP: Duration = Duration::from_millis(100);
/// How long a waiter spins before sleeping.
pub const SPIN: Duration = Duration::from_micros(20);
/// How often a spinning waiter offers its core to others.
const OFFER_EVERY: Duration = Duration::from_micros(8);

/// Identifies an event word to the broker, which repairs sleeper counts of dead clients.
pub mod event_id {
    pub const PUBLISHED: u32 = 0;
    pub const SPACE: u32 = 1;
    pub const CLEANER: u32 = 2;
    pub const PERSISTED: u32 = 3;
    /// Group `g`'s turn event is `GROUP_BASE + g`.
    pub const GROUP_BASE: u32 = 4;
}

/// Wakes the sleepers of `event`, if any, after the caller changed the state they
/// wait on.
pub fn notify(event: &EventWord) {
    // SeqCst fence pairs with the one in `sleep_once`: either this load sees the
    // sleeper's increment, or the sleeper's recheck sees our state change.
    fence(Ordering::SeqCst);
    if event.sleepers.load(Ordering::Relaxed) > 0 {
        wake(event);
    }
}

impl EventWord {
    /// Whether anyone sleeps on this event now.
    pub fn has_sleepers(&self) -> bool {
        self.sleepers.load(Ordering::Relaxed) > 0
    }
}

/// Wakes every sleeper unconditionally (used when the broker stops).
pub fn wake(event: &EventWord) {
    // Release pairs with the Acquire load of `seq` in `sleep_once`.
    event.seq.fetch_add(1, Ordering::Release);
    futex_wake_all(&event.seq);
}

/// Spins until `ready` holds or [`SPIN`] has passed; true if it holds.
pub fn spin_until(ready: impl FnMut() -> bool) -> bool {
    spin_offering(OFFER_EVERY, ready)
}

/// As [`spin_until`], offering the core after every round of tries: for a thread
/// whose core is wanted by the threads of its own process that work after it.
pub fn spin_until_offering_often(ready: impl FnMut() -> bool) -> bool {
    spin_offering(Duration::ZERO, ready)
}

fn spin_offering(offer_every: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut offered = start;
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let now = Instant::now();
        if now - start >= SPIN {
            return ready();
        }
        // With more runnable processes than cores, the one we wait for may need
        // this core: offer it now and then. A client waiting for a message offers
        // it every few microseconds, not after every round: the offer is a system
        // call, and what arrives during it waits for its end.
        if now - offered >= offer_every {
            std::thread::yield_now();
            offered = Instant::now();
        }
    }
}

/// Sleeps once on `event` unless `ready` already holds, for at most `timeout`
/// (capped at [`MAX_SLEEP`]). `sleeping_on`, the caller's flag in its client entry,
/// records the event while asleep so the broker can uncount a sleeper that died.
pub fn sleep_once(
    event: &EventWord,
    id: u32,
    sleeping_on: Option<&AtomicU32>,
    mut ready: impl FnMut() -> bool,
    timeout: Duration,
) {
    event.sleepers.fetch_add(1, Ordering::Relaxed);
    if let Some(flag) = sleeping_on {
        flag.store(id + 1, Ordering::Relaxed);
    }
    // Pairs with the fence in `notify` (see there).
    fence(Ordering::SeqCst);
    let seq = event.seq.load(Ordering::Acquire);
    if !ready() {
        futex_wait(&event.seq, seq, timeout.min(MAX_SLEEP));
    }
    let counted = match sleeping_on {
        // Whoever swaps the flag back to 0 (we, or the broker repairing after our
        // death) uncounts us, exactly once.
        Some(flag) => flag.swap(0, Ordering::AcqRel) != 0,
        None => true,
    };
    if counted {
        event.sleepers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sleeps once on all of `events` unless `ready` already holds, until one of them
/// is notified or `timeout` passes (capped at [`MAX_SLEEP`]): a client of several
/// rings sleeps on one thing, never looks at them in turn. Counted as a sleeper
/// on each, so that their posters wake it; each event's flag (the caller's
/// `sleeping_on` in its entry in that event's region) records that event's id
/// while asleep, so that the broker can uncount a sleeper that died, as in
/// [`sleep_once`].
pub fn sleep_on_any(
    events: &[(&EventWord, u32, Option<&AtomicU32>)],
    mut ready: impl FnMut() -> bool,
    timeout: Duration,
) {
    for (e, id, flag) in events {
        e.sleepers.fetch_add(1, Ordering::Relaxed);
        if let Some(flag) = flag {
            flag.store(id + 1, Ordering::Relaxed);
        }
    }
    // Pairs with the fence in `notify` (see `sleep_once`).
    fence(Ordering::SeqCst);
    let words: Vec<(&AtomicU32, u32)> = events
        .iter()
        .map(|(e, _, _)| (&e.seq, e.seq.load(Ordering::Acquire)))
        .collect();
    if !ready() {
        crate::sys::futex_wait_any(&words, timeout.min(MAX_SLEEP));
    }
    for (e, _, flag) in events {
        // Whoever swaps the flag back to 0 uncounts us, exactly once.
        let counted = flag.is_none_or(|f| f.swap(0, Ordering::AcqRel) != 0);
        if counted {
            e.sleepers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Sleeps on `event` until someone notifies it or `timeout` passes: for threads
/// that work in periodic passes and can be asked to run one sooner.
pub fn nap(event: &EventWord, id: u32, timeout: Duration) {
    let seq = event.seq.load(Ordering::Acquire);
    sleep_once(
        event,
        id,
        None,
        || event.seq.load(Ordering::Acquire) != seq,
        timeout,
    );
}

/// How a wait ended without its condition becoming true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// `stop` returned true.
    Stopped,
    /// The deadline passed.
    TimedOut,
}

/// Waits until `ready` holds, sleeping in timed steps and checking `stop` and
/// `deadline` between them. A waiter for what another client brings about within
/// microseconds (a commit, a hand-out) spins first, with [`spin_until`]; one for the
/// broker's slower work (free space, records on disk) sleeps at once, leaving the
/// CPU to the threads that do it.
pub fn wait_until(
    event: &EventWord,
    id: u32,
    sleeping_on: Option<&AtomicU32>,
    mut ready: impl FnMut() -> bool,
    mut stop: impl FnMut() -> bool,
    deadline: Option<Instant>,
) -> Result<(), WaitError> {
    loop {
        if ready() {
            return Ok(());
        }
        if stop() {
            return Err(WaitError::Stopped);
        }
        let timeout = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Err(WaitError::TimedOut);
                }
                d - now
            }
            None => MAX_SLEEP,
        };
        sleep_once(event, id, sleeping_on, &mut ready, timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn event() -> Arc<EventWord> {
        Arc::new(EventWord {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        })
    }

    #[test]
    fn a_sleeper_on_several_events_wakes_when_any_is_notified() {
        let (a, b) = (event(), event());
        let flag = Arc::new(AtomicBool::new(false));
        let (a2, b2, flag2) = (a.clone(), b.clone(), flag.clone());
        let waiter = std::thread::spawn(move || {
            while !flag2.load(Ordering::Acquire) {
                sleep_on_any(
                    &[
                        (&*a2, event_id::PUBLISHED, None),
                        (&*b2, event_id::PUBLISHED, None),
                    ],
                    || flag2.load(Ordering::Acquire),
                    Duration::from_secs(10),
                );
            }
        });
        while b.sleepers.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        flag.store(true, Ordering::Release);
        notify(&b);
        waiter.join().unwrap();
        assert_eq!(a.sleepers.load(Ordering::Relaxed), 0);
        assert_eq!(b.sleepers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_notified_waiter_wakes_and_sleepers_return_to_zero() {
        let ev = event();
        let flag = Arc::new(AtomicBool::new(false));
        let (ev2, flag2) = (ev.clone(), flag.clone());
        let waiter = std::thread::spawn(move || {
            wait_until(
                &ev2,
                0,
                None,
                || flag2.load(Ordering::Acquire),
                || false,
                Some(Instant::now() + Duration::from_secs(10)),
            )
        });
        flag.store(true, Ordering::Release);
        notify(&ev);
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert_eq!(ev.sleepers.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn deadline_and_stop_end_a_wait() {
        let ev = event();
        let d = Some(Instant::now() + Duration::from_millis(30));
        assert_eq!(
            wait_until(&ev, 0, None, || false, || false, d),
            Err(WaitError::TimedOut)
        );
        assert_eq!(
            wait_until(&ev, 0, None, || false, || true, None),
            Err(WaitError::Stopped)
        );
    }

    #[test]
    fn a_sleeper_uncounted_by_someone_else_is_not_uncounted_twice() {
        let ev = event();
        let flag = AtomicU32::new(0);
        // Simulates the broker having repaired the count while we slept.
        sleep_once(
            &ev,
            5,
            Some(&flag),
            || {
                if flag.swap(0, Ordering::AcqRel) != 0 {
                    ev.sleepers.fetch_sub(1, Ordering::Relaxed);
                }
                true
            },
            Duration::from_millis(1),
        );
        assert_eq!(ev.sleepers.load(Ordering::Relaxed), 0);
    }
}
