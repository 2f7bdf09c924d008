//! The progress bar that `producer --count N` and `consumer --count N` draw on stderr
//! during a long run: messages so far out of N, the rate in msg/s, and the time left.
//!
//! A bar is for someone watching a run whose output goes elsewhere: the commands draw
//! one when [`stderr_alone_on_a_terminal`] (or, for a consumer that prints nothing on
//! stdout, when stderr is a terminal). Otherwise no bar exists at all
//! ([`CountProgress::off`]): pipes, files and tests see stderr exactly as without it.
//!
//! # What it costs a run
//! The sending and receiving loops call [`CountProgress::add`] once per batch (up to
//! 64 messages). With a bar, that is one relaxed atomic add to a counter, nothing
//! else: no clock read (indicatif's own `inc` reads the clock on every call) and no
//! lock. A thread of its own hands the counter to the bar five times a
//! second, and indicatif draws it then, so the bar also moves (elapsed time, falling
//! rate) while a send waits for space or a consumer for messages. Without a bar,
//! `add` is one branch on `None`.
#![forbid(unsafe_code)]

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressFinish, ProgressState, ProgressStyle};

/// How often the bar is redrawn: often enough to look alive, rarely enough to cost
/// nothing.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

/// The bar's line, e.g. `###########>-------- 1200/2000 messages, 48000 msg/s, ETA 0s`.
const TEMPLATE: &str = "{bar:30} {pos}/{len} messages, {rate}, ETA {eta}";

/// Whether stderr is a terminal and stdout is not: someone watches stderr while the
/// command's output goes to a file or a pipe.
pub fn stderr_alone_on_a_terminal() -> bool {
    std::io::stderr().is_terminal() && !std::io::stdout().is_terminal()
}

/// A bar on stderr counting messages towards `--count`, or nothing. Clones count
/// into, and print above, the same bar.
#[derive(Clone)]
pub struct CountProgress {
    drawn: Option<Arc<Drawn>>,
}

/// A bar being drawn.
struct Drawn {
    bar: ProgressBar,
    /// Messages counted so far: added to by the loops, read by the redraw thread.
    counted: Arc<AtomicU64>,
    /// The redraw thread and the sender whose drop stops it; taken by `clear`.
    redraw: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

impl CountProgress {
    /// A bar counting to `total` on stderr when `show` is true and there is a total;
    /// [`CountProgress::off`] otherwise.
    pub fn when(show: bool, total: Option<u64>) -> CountProgress {
        match total {
            Some(total) if show => CountProgress::on_stderr(total),
            _ => CountProgress::off(),
        }
    }

    /// A bar counting to `total`, drawn on stderr from now until [`CountProgress::clear`].
    pub fn on_stderr(total: u64) -> CountProgress {
        CountProgress::drawing(ProgressBar::new(total))
    }

    /// Draws `bar` in our style, redrawn from the counter until `clear`. Without a
    /// thread to spare there is no bar: a run goes on without one.
    fn drawing(bar: ProgressBar) -> CountProgress {
        let bar = bar
            .with_style(style())
            // Should a clear be missed (a panic), the bar still leaves the screen.
            .with_finish(ProgressFinish::AndClear);
        let counted = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = channel::<()>();
        let redraw = {
            let (bar, counted) = (bar.clone(), counted.clone());
            std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || loop {
                    bar.set_position(counted.load(Ordering::Relaxed));
                    match stopped.recv_timeout(REDRAW_EVERY) {
                        Err(RecvTimeoutError::Timeout) => {}
                        // `clear` dropped the sender.
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                })
        };
        match redraw {
            Ok(redraw) => CountProgress {
                drawn: Some(Arc::new(Drawn {
                    bar,
                    counted,
                    redraw: Mutex::new(Some((stop, redraw))),
                })),
            },
            Err(_) => CountProgress::off(),
        }
    }

    /// No bar, and no indicatif object: every call does nothing (or just prints).
    pub fn off() -> CountProgress {
        CountProgress { drawn: None }
    }

    /// Whether a bar is drawn.
    pub fn is_shown(&self) -> bool {
        self.drawn.is_some()
    }

    /// Counts `messages` more.
    pub fn add(&self, messages: u64) {
        if let Some(drawn) = &self.drawn {
            // Only a count: the redraw thread reads it, and nothing is ordered by it.
            drawn.counted.fetch_add(messages, Ordering::Relaxed);
        }
    }

    /// Prints `line` on stderr as its own line: above the bar, which is taken away
    /// while it prints and drawn again below it, so neither garbles the other.
    pub fn eprintln(&self, line: impl Display) {
        match &self.drawn {
            Some(drawn) => drawn.bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Stops redrawing (the redraw thread is joined) and wipes the bar off the
    /// screen, so that what is printed next starts on a clean line.
    pub fn clear(&self) {
        let Some(drawn) = &self.drawn else {
            return;
        };
        let redraw = drawn
            .redraw
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((stop, redraw)) = redraw {
            drop(stop);
            let _ = redraw.join();
        }
        drawn.bar.finish_and_clear();
    }
}

/// The bar's look: [`TEMPLATE`], with the rate in whole messages a second as in the
/// commands' summary lines.
fn style() -> ProgressStyle {
    ProgressStyle::with_template(TEMPLATE)
        .expect("the template is valid (checked by a unit test)")
        .with_key(
            "rate",
            |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.0} msg/s", state.per_sec());
            },
        )
        .progress_chars("#>-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::ProgressDrawTarget;

    #[test]
    fn the_template_is_valid() {
        let _ = style();
    }

    #[test]
    fn no_bar_without_a_total_or_when_not_shown() {
        assert!(!CountProgress::when(true, None).is_shown());
        assert!(!CountProgress::when(false, Some(10)).is_shown());
        let off = CountProgress::off();
        off.add(64);
        off.clear();
    }

    #[test]
    fn clear_stops_the_redraw_thread_and_counts_survive_clones() {
        let hidden = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::hidden());
        let progress = CountProgress::drawing(hidden);
        let clone = progress.clone();
        progress.add(64);
        clone.add(36);
        let drawn = progress.drawn.as_ref().unwrap();
        assert_eq!(drawn.counted.load(Ordering::Relaxed), 100);
        clone.clear();
        assert!(drawn.redraw.lock().unwrap().is_none(), "joined");
        assert!(drawn.bar.is_finished());
        progress.clear();
    }
}
