//! Raw operating-system primitives the region is built on: futex waits and wakes on
//! words in shared memory, a robust process-shared pthread mutex, clocks, randomness.
//!
//! Everything here is a thin, safe wrapper over one or two libc calls; the algorithms
//! that use them live in [`crate::event`] and [`crate::ring`].

use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Sleeps while `*word == expected`, for at most `timeout`.
///
/// Returns when woken, when the value differs, on a signal or at the timeout; callers
/// always recheck their condition, so the reason does not matter.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; the timeout
    // pointer is valid; FUTEX_WAIT (not PRIVATE) works across processes sharing the page.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// One word of a [`futex_wait_any`], as the kernel's `struct futex_waitv`.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`: 32-bit words, shared between processes (not private).
const FUTEX2_SIZE_U32: u32 = 0x02;

/// The most words one [`futex_wait_any`] call takes (the kernel's limit).
pub const FUTEX_WAITV_MAX: usize = 128;

/// Sleeps until one of `words` (each with the value it is expected to hold) is
/// woken or changes, or `timeout` passes: one sleep over many words
/// (`futex_waitv`, Linux 5.16). Words past [`FUTEX_WAITV_MAX`] are not watched.
/// Where the call does not exist, sleeps on the first word for at most 10 ms.
pub fn futex_wait_any(words: &[(&AtomicU32, u32)], timeout: Duration) {
    let Some(&(first, first_value)) = words.first() else {
        std::thread::sleep(timeout);
        return;
    };
    if WAITV_UNSUPPORTED.load(Ordering::Relaxed) {
        futex_wait(first, first_value, timeout.min(WAITV_FALLBACK));
        return;
    }
    let waits: Vec<FutexWaitv> = words
        .iter()
        .take(FUTEX_WAITV_MAX)
        .map(|(word, value)| FutexWaitv {
            val: u64::from(*value),
            uaddr: word.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    let now = read_clock(libc::CLOCK_MONOTONIC);
    let nanos = now.1 + u64::from(timeout.subsec_nanos());
    let deadline = libc::timespec {
        tv_sec: now.0 + timeout.as_secs() as libc::time_t + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `waits` is a valid array of `waits.len()` kernel `futex_waitv`
    // entries, each naming an aligned u32 that stays valid for the call (borrowed
    // from `words`); the deadline pointer is valid; flags 0 and CLOCK_MONOTONIC
    // are what the call expects. It only reads the words.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waits.as_ptr(),
            waits.len() as libc::c_uint,
            0u32,
            &deadline as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r == -1 {
        match std::io::Error::last_os_error().raw_os_error() {
            // A word had changed, the time passed, or a signal came: done.
            Some(libc::EAGAIN | libc::ETIMEDOUT | libc::EINTR) => {}
            // The call does not exist or is refused (a seccomp filter, an old
            // kernel): never try it again, and never return at once, which would
            // make the caller spin.
            _ => {
                WAITV_UNSUPPORTED.store(true, Ordering::Relaxed);
                futex_wait(first, first_value, timeout.min(WAITV_FALLBACK));
            }
        }
    }
}

/// Set once `futex_waitv` failed for a reason other than the wait itself.
static WAITV_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Where `futex_waitv` cannot be used: the longest sleep on the first word only.
const WAITV_FALLBACK: Duration = Duration::from_millis(10);

/// Wakes every process sleeping in [`futex_wait`] on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid aligned u32; FUTEX_WAKE only reads the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// `clock` as seconds and nanoseconds, straight from `clock_gettime` (vDSO, no
/// syscall): these clocks are read for every send or poll.
fn read_clock(clock: libc::clockid_t) -> (libc::time_t, u64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clocks read here (CLOCK_REALTIME,
    // CLOCK_MONOTONIC) are always available on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec, ts.tv_nsec as u64)
}

/// Microseconds since the Unix epoch (wall clock), without `SystemTime`'s checked
/// arithmetic; a clock set before 1970 reads as 0.
pub fn wall_clock_micros() -> u64 {
    match read_clock(libc::CLOCK_REALTIME) {
        (secs, _) if secs < 0 => 0,
        (secs, nanos) => secs as u64 * 1_000_000 + nanos / 1_000,
    }
}

/// Milliseconds of CLOCK_MONOTONIC, which every process on the host shares; used for
/// liveness stamps written by one process and judged by another.
pub fn monotonic_millis() -> u64 {
    let (secs, nanos) = read_clock(libc::CLOCK_MONOTONIC);
    secs as u64 * 1000 + nanos / 1_000_000
}

/// Nanoseconds of CLOCK_MONOTONIC (shared by every process on the host): one-way
/// latencies are measured with it across processes.
pub fn monotonic_nanos() -> u64 {
    let (secs, nanos) = read_clock(libc::CLOCK_MONOTONIC);
    secs as u64 * 1_000_000_000 + nanos
}

/// Fills `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Whether a process with this pid exists (it may be a zombie or another user's).
pub fn process_exists(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission; it sends nothing.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Kills this process with SIGKILL (fault injection: dies at this instruction).
pub fn kill_self() -> ! {
    // SAFETY: kill(2) with our own pid and SIGKILL has no memory-safety preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    std::process::abort()
}

/// Stops this process with SIGSTOP (fault injection: halts at this instruction
/// until someone sends SIGCONT).
pub fn stop_self() {
    // SAFETY: kill(2) with our own pid and SIGSTOP has no memory-safety preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
}

/// Raises the soft limit on open files to at least `wanted`, or to the hard limit
/// if that is lower; returns the soft limit now in force.
pub fn raise_fd_limit(wanted: u64) -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft >= wanted {
        return Ok(soft);
    }
    let raised = wanted.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, raised, hard).map_err(io::Error::from)?;
    Ok(raised)
}

/// A pthread mutex that lives in shared memory, is shared between processes, and is
/// robust: when its holder dies, the next locker is told so and can repair the state
/// it protects before marking the mutex consistent again.
#[repr(C)]
pub struct RobustMutex {
    raw: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: the pthread mutex is designed to be used concurrently from many threads and
// processes; all access goes through pthread calls.
unsafe impl Sync for RobustMutex {}

/// How a lock attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LockOutcome {
    /// The lock is held and the protected state is as its last holder left it.
    Acquired,
    /// The lock is held, but its previous holder died holding it: repair the state,
    /// then call [`RobustMutex::mark_consistent`].
    OwnerDied,
    /// Not acquired within the timeout.
    TimedOut,
}

impl RobustMutex {
    /// Initialises the mutex in place as process-shared and robust.
    ///
    /// # Safety
    /// No other thread or process may use the mutex during or before this call, and it
    /// must not currently be locked.
    pub unsafe fn init(&self) -> io::Result<()> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is initialised by pthread_mutexattr_init before any other use.
        unsafe {
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let attr_ptr = attr.as_mut_ptr();
            let result = check(libc::pthread_mutexattr_setpshared(
                attr_ptr,
                libc::PTHREAD_PROCESS_SHARED,
            ))
            .and_then(|_| {
                check(libc::pthread_mutexattr_setrobust(
                    attr_ptr,
                    libc::PTHREAD_MUTEX_ROBUST,
                ))
            })
            .and_then(|_| check(libc::pthread_mutex_init(self.raw.get(), attr_ptr)));
            libc::pthread_mutexattr_destroy(attr_ptr);
            result
        }
    }

    /// Tries to lock without waiting: [`LockOutcome::TimedOut`] if another holds it.
    pub fn try_lock(&self) -> io::Result<LockOutcome> {
        // SAFETY: as for `lock_for`: an initialised process-shared robust mutex.
        let rc = unsafe { libc::pthread_mutex_trylock(self.raw.get()) };
        match rc {
            0 => Ok(LockOutcome::Acquired),
            libc::EOWNERDEAD => Ok(LockOutcome::OwnerDied),
            libc::EBUSY => Ok(LockOutcome::TimedOut),
            other => Err(io::Error::from_raw_os_error(other)),
        }
    }

    /// Tries to lock for at most `timeout`.
    pub fn lock_for(&self, timeout: Duration) -> io::Result<LockOutcome> {
        let deadline = SystemTime::now() + timeout;
        let since = deadline.duration_since(UNIX_EPOCH).unwrap_or_default();
        let abs = libc::timespec {
            tv_sec: since.as_secs() as libc::time_t,
            tv_nsec: since.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the mutex was initialised by the region's creator (the header is only
        // published after init); `abs` is a valid timespec.
        let rc = unsafe { libc::pthread_mutex_timedlock(self.raw.get(), &abs) };
        match rc {
            0 => Ok(LockOutcome::Acquired),
            libc::EOWNERDEAD => Ok(LockOutcome::OwnerDied),
            libc::ETIMEDOUT => Ok(LockOutcome::TimedOut),
            other => Err(io::Error::from_raw_os_error(other)),
        }
    }

    /// After [`LockOutcome::OwnerDied`] and the repair: lets later lockers use it normally.
    pub fn mark_consistent(&self) -> io::Result<()> {
        // SAFETY: called by the current holder after EOWNERDEAD, as POSIX requires.
        check(unsafe { libc::pthread_mutex_consistent(self.raw.get()) })
    }

    /// Releases a lock taken by this thread.
    pub fn unlock(&self) {
        // SAFETY: only called by the guard that holds the lock, on the locking thread.
        unsafe { libc::pthread_mutex_unlock(self.raw.get()) };
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Asks the CPU to start fetching the cache line holding `p` (a hint: it never
/// faults, whatever the address, and does nothing on other architectures).
#[inline]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only loads into cache; it never faults and never changes
    // memory, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_in_micros_agrees_with_system_time() {
        let micros = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        let before = micros(SystemTime::now());
        let ours = wall_clock_micros();
        let after = micros(SystemTime::now());
        assert!(
            (before..=after).contains(&ours),
            "{before} <= {ours} <= {after}"
        );
    }

    #[test]
    fn random_bytes_are_not_all_zero() {
        let mut a = [0u8; 32];
        random_bytes(&mut a).unwrap();
        assert!(a.iter().any(|&b| b != 0));
    }

    #[test]
    fn the_monotonic_clock_counts_milliseconds_of_the_monotonic_clock() {
        let before = monotonic_millis();
        let nanos = monotonic_nanos();
        let after = monotonic_millis();
        assert!(
            before <= nanos / 1_000_000 && nanos / 1_000_000 <= after,
            "milliseconds and nanoseconds read one clock: {before} {nanos} {after}"
        );
        // `Instant` reads CLOCK_MONOTONIC too: 20 ms of it are 20 ms of ours.
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let later = monotonic_millis();
        let elapsed = started.elapsed().as_millis() as u64;
        assert!(
            later - before >= 20 && later - before <= elapsed + 2,
            "{} ms counted over {elapsed} ms",
            later - before
        );
    }

    #[test]
    fn try_lock_reports_a_busy_lock_and_a_dead_holder() {
        let m = std::sync::Arc::new(RobustMutex {
            raw: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
        });
        // SAFETY: nobody else has seen `m` yet.
        unsafe { m.init() }.unwrap();
        let holder = m.clone();
        std::thread::spawn(move || {
            assert_eq!(
                holder.lock_for(Duration::from_secs(1)).unwrap(),
                LockOutcome::Acquired
            );
            let other = holder.clone();
            let busy = std::thread::spawn(move || other.try_lock().unwrap());
            assert_eq!(busy.join().unwrap(), LockOutcome::TimedOut, "held: busy");
            // The thread ends holding the lock.
        })
        .join()
        .unwrap();
        assert_eq!(m.try_lock().unwrap(), LockOutcome::OwnerDied);
        m.mark_consistent().unwrap();
        m.unlock();
        assert_eq!(m.try_lock().unwrap(), LockOutcome::Acquired);
        m.unlock();
    }

    #[test]
    fn own_pid_exists_and_pid_zero_does_not() {
        assert!(process_exists(std::process::id()));
        assert!(!process_exists(0));
    }
}
