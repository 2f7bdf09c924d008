//! Sending messages to a mini-kafka broker on this host.
//!
//! A [`Producer`] registers with the broker over its control port, maps the broker's
//! shared-memory region, and writes each message straight into the ring: no payload
//! crosses a socket. A send returns once the message is committed and has its
//! offset; it blocks while the ring is full (backpressure from the slowest group).
//!
//! ```no_run
//! let mut producer = producer::Producer::connect("127.0.0.1:4444", None)?;
//! let offset = producer.send(b"hello")?;
//! producer.send_keyed(Some(b"user-7"), b"world")?;
//! println!("hello is at offset {offset}");
//! # Ok::<(), producer::ProducerError>(())
//! ```
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use shm_layout::protocol::{default_id, ConnectError, Role, Session};
use shm_layout::ring::{SendError, Sender};
use shm_layout::sys::wall_clock_micros;

/// Why a send or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// Could not reach or register with the broker.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The message is larger than the broker accepts; nothing was written.
    #[error("message of {size} bytes is over the broker's maximum of {max} bytes (--max-message); nothing was sent")]
    TooLarge { size: u64, max: u64 },
    /// The broker stopped or its control connection was lost.
    #[error("broker stopped")]
    BrokerStopped,
    /// The caller's interrupt flag was raised while the send waited.
    #[error("interrupted")]
    Interrupted,
    /// The region is in a state the producer refuses to use.
    #[error("the shared-memory region is corrupt: {0}")]
    Corrupt(String),
}

/// A registered producer.
pub struct Producer {
    session: Session,
    interrupt: Option<Arc<AtomicBool>>,
    sent: u64,
    bytes: u64,
}

impl Producer {
    /// Connects to the broker at `broker` (`HOST:PORT`) as `id` (default
    /// `producer-<pid>`).
    pub fn connect(broker: &str, id: Option<&str>) -> Result<Producer, ProducerError> {
        let id = id.map_or_else(|| default_id(Role::Producer), str::to_string);
        let session = Session::connect(broker, Role::Producer, &id, None)?;
        Ok(Producer {
            session,
            interrupt: None,
            sent: 0,
            bytes: 0,
        })
    }

    /// A flag that, once raised (e.g. by a signal handler), makes a blocked send give
    /// up with [`ProducerError::Interrupted`].
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// The id this producer registered with.
    pub fn id(&self) -> &str {
        &self.session.id
    }

    /// Largest key + payload the broker accepts.
    pub fn max_message(&self) -> u64 {
        self.session.region.geometry().max_message as u64
    }

    /// Messages and payload bytes sent so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.sent, self.bytes)
    }

    /// Sends one message without a key; returns its offset.
    pub fn send(&mut self, payload: &[u8]) -> Result<u64, ProducerError> {
        self.send_keyed(None, payload)
    }

    /// Sends one message with an optional key; returns its offset.
    pub fn send_keyed(&mut self, key: Option<&[u8]>, payload: &[u8]) -> Result<u64, ProducerError> {
        let s = &self.session;
        let sender = Sender {
            client: s.client,
            generation: s.generation,
        };
        let link = s.link.clone();
        let interrupt = self.interrupt.clone();
        let stop = || {
            link.is_gone()
                || interrupt
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::Relaxed))
        };
        if stop() || s.region.is_closing() {
            return Err(self.stop_reason());
        }
        let result = s
            .region
            .send(sender, key, payload, wall_clock_micros(), stop, None);
        match result {
            Ok(offset) => {
                self.sent += 1;
                self.bytes += payload.len() as u64;
                Ok(offset)
            }
            Err(SendError::TooLarge { size, max }) => Err(ProducerError::TooLarge { size, max }),
            Err(SendError::Stopped | SendError::TimedOut) => Err(self.stop_reason()),
            Err(e @ (SendError::Corrupt(_) | SendError::Lock(_))) => {
                Err(ProducerError::Corrupt(e.to_string()))
            }
        }
    }

    /// Sends several messages in order; returns their offsets. Stops at the first
    /// error, which reports how many were sent.
    pub fn send_batch<'a>(
        &mut self,
        messages: impl IntoIterator<Item = (Option<&'a [u8]>, &'a [u8])>,
    ) -> Result<Vec<u64>, (usize, ProducerError)> {
        let mut offsets = Vec::new();
        for (key, payload) in messages {
            match self.send_keyed(key, payload) {
                Ok(o) => offsets.push(o),
                Err(e) => return Err((offsets.len(), e)),
            }
        }
        Ok(offsets)
    }

    fn stop_reason(&self) -> ProducerError {
        if self
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
            && !self.session.link.is_gone()
            && !self.session.region.is_closing()
        {
            ProducerError::Interrupted
        } else {
            ProducerError::BrokerStopped
        }
    }
}
