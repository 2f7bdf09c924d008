//! Offset commits are written beside the listener's loop: a commit answers
//! once the state file holding it is written (SPEC §10), and writing a file is
//! not for the loop that serves every connection. One thread takes every
//! commit waiting and writes them with one replacement of the file; the loop
//! is woken when they are written.

use std::sync::{Arc, Condvar, Mutex};

use crate::log::{GroupCommit, KafkaLog};

/// A commit handed over, and how it went once written.
#[derive(Debug, Clone, Default)]
pub struct Ticket(Arc<Mutex<Option<Result<(), String>>>>);

impl Ticket {
    /// None until written; then whether it was.
    pub fn outcome(&self) -> Option<Result<(), String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(Vec<GroupCommit>, Ticket)>,
    stop: bool,
}

/// The commit writer's queue.
#[derive(Default)]
pub struct Committer {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Committer {
    /// Hands `commits` over to be written.
    pub fn submit(&self, commits: Vec<GroupCommit>) -> Ticket {
        let ticket = Ticket::default();
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.waiting.push((commits, ticket.clone()));
        self.wake.notify_one();
        ticket
    }

    /// The writer stops once what waits is written.
    pub fn stop(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        self.wake.notify_one();
    }

    /// Writes commits as they come until [`Committer::stop`]; `written` is
    /// called after each write.
    pub fn run(&self, log: &Arc<dyn KafkaLog>, written: &dyn Fn()) {
        loop {
            let batch = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                while q.waiting.is_empty() && !q.stop {
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                if q.waiting.is_empty() {
                    return;
                }
                std::mem::take(&mut q.waiting)
            };
            let all: Vec<GroupCommit> = batch.iter().flat_map(|(c, _)| c.clone()).collect();
            let outcome = log.commit_offsets(&all);
            for (_, ticket) in batch {
                *ticket.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome.clone());
            }
            written();
        }
    }
}
