//! A send that waits: after [`REPORT_AFTER`] it asks the broker what holds it and
//! says so once; when it moves again, it says how long it waited; past the send
//! timeout it gives up, naming what held it.
//!
//! Everything here runs only while a send waits (the ring's wait loops call their
//! stop check once per sleep, at most every 100 ms): a send that never waits reads
//! no clock.

use std::time::{Duration, Instant};

use control_protocol::{ControlFrame, Session, WaitingFor};

use crate::ProducerError;

/// How long a send waits before the producer says why.
pub const REPORT_AFTER: Duration = Duration::from_secs(1);

/// What a producer tells its owner about a send that waits.
#[derive(Debug, Clone, PartialEq)]
pub enum SendNotice {
    /// A send has waited [`REPORT_AFTER`]: `line` says for what and why
    /// (`waiting for space in default/0: group group-2 is 4096 messages behind and
    /// has no consumers`).
    Waiting { line: String },
    /// It moved again after waiting this long.
    Moving { waited: Duration },
}

impl std::fmt::Display for SendNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendNotice::Waiting { line } => f.write_str(line),
            SendNotice::Moving { waited } => {
                write!(f, "sending again after {:.1} s", waited.as_secs_f64())
            }
        }
    }
}

/// What hears a producer's notices.
pub(crate) type NoticeFn = Box<dyn FnMut(&SendNotice) + Send>;

/// One send's (or one batch's) waiting, as seen from its stop checks.
pub(crate) struct WaitWatch<'p> {
    session: &'p Session,
    /// The ring the send waits on, and its topic-partition.
    ring: &'p shm_layout::Region,
    topic: &'p str,
    partition: u32,
    timeout: Option<Duration>,
    notify: Option<&'p mut NoticeFn>,
    /// When the current wait began (its first stop check).
    since: Option<Instant>,
    /// The line said for the current wait, if said.
    line: Option<String>,
    /// The wait that outlasted the timeout: how long, and why.
    gave_up: Option<(Duration, String)>,
}

impl<'p> WaitWatch<'p> {
    /// A send to `ring`, partition `partition` of `topic`.
    pub(crate) fn new(
        session: &'p Session,
        (ring, topic, partition): (&'p shm_layout::Region, &'p str, u32),
        timeout: Option<Duration>,
        notify: Option<&'p mut NoticeFn>,
    ) -> Self {
        WaitWatch {
            session,
            ring,
            topic,
            partition,
            timeout,
            notify,
            since: None,
            line: None,
            gave_up: None,
        }
    }

    /// A stop check while waiting: reports the wait once it has lasted
    /// [`REPORT_AFTER`]; true once it has outlasted the timeout.
    pub(crate) fn still_waiting(&mut self) -> bool {
        if self.gave_up.is_some() {
            return true;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        let waited = since.elapsed();
        let over = self.timeout.is_some_and(|t| waited >= t);
        if self.line.is_none() && (waited >= REPORT_AFTER || over) {
            let line = self.ask_why();
            if let Some(notify) = self.notify.as_mut() {
                notify(&SendNotice::Waiting { line: line.clone() });
            }
            self.line = Some(line);
        }
        if over {
            let line = self.line.clone().unwrap_or_default();
            self.gave_up = Some((waited, line));
        }
        over
    }

    /// The send moved (a record was committed, or it returned): a wait that was
    /// reported is reported over.
    pub(crate) fn moved(&mut self) {
        let Some(since) = self.since.take() else {
            return;
        };
        if self.line.take().is_some() && self.gave_up.is_none() {
            if let Some(notify) = self.notify.as_mut() {
                notify(&SendNotice::Moving {
                    waited: since.elapsed(),
                });
            }
        }
    }

    /// Publishes the producer's count of messages sent (see `publish_sent`).
    pub(crate) fn publish_sent(&self, sent: u64) {
        crate::publish_sent(self.session, sent);
    }

    /// The error for a send that gave up, if it did.
    pub(crate) fn timed_out(&self) -> Option<ProducerError> {
        self.gave_up
            .as_ref()
            .map(|(waited, reason)| ProducerError::TimedOut {
                waited: *waited,
                reason: reason.clone(),
            })
    }

    /// The waiting line: what it waits for, where, and what the broker says holds it.
    fn ask_why(&self) -> String {
        let region = self.ring;
        // A full ring is waited on first; with room in it, a send waits only for
        // its records to reach the disk.
        let waiting_for = if region.waits_for_disk() && region.has_space_for(1) {
            WaitingFor::Disk
        } else {
            WaitingFor::Space
        };
        let (topic, partition) = (self.topic, self.partition);
        let request = ControlFrame::WaitReasonRequest {
            topic: topic.into(),
            partition,
            waiting_for,
        };
        let reason = match self.session.request(&request) {
            Ok(ControlFrame::WaitReason { reason }) => reason,
            Ok(other) => format!("the broker answered {other:?}"),
            Err(e) => format!("the broker did not say why ({e})"),
        };
        format!(
            "waiting for {} in {topic}/{partition}: {reason}",
            waiting_for.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_read_as_the_producer_prints_them() {
        let moving = SendNotice::Moving {
            waited: Duration::from_millis(12_340),
        };
        assert_eq!(moving.to_string(), "sending again after 12.3 s");
        let waiting = SendNotice::Waiting {
            line: "waiting for space in default/0: x".into(),
        };
        assert_eq!(waiting.to_string(), "waiting for space in default/0: x");
    }
}
