//! The readiness loop both TCP endpoints of the broker turn (the control port and
//! the metrics endpoint): a non-blocking listener registered under [`LISTENER`],
//! and a poll that wakes at least every tick so its owner can check its stop flag
//! and deadlines.

use std::io::ErrorKind;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

/// The listener's token; connections take any other.
pub const LISTENER: Token = Token(usize::MAX);

pub struct EventLoop {
    pub poll: Poll,
    pub listener: TcpListener,
    pub events: Events,
}

impl EventLoop {
    pub fn new(listener: std::net::TcpListener, capacity: usize) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(EventLoop {
            poll,
            listener,
            events: Events::with_capacity(capacity),
        })
    }

    /// Waits for readiness, at most `tick`; the events are then in `events`.
    pub fn turn(&mut self, tick: Duration) -> std::io::Result<()> {
        match self.poll.poll(&mut self.events, Some(tick)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                self.events.clear();
                Ok(())
            }
            other => other,
        }
    }
}
