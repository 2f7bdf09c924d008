//! The Kafka port: one mio event loop for every connection. A connection's
//! requests are answered one at a time, in order; while one waits (a fetch for
//! data, a produce for room, either for the log or the disk), that connection
//! reads nothing more, and the loop looks at the waiting requests every 50 µs
//! for their first 2 ms, then every millisecond, until they answer. Everything
//! a connection holds is bounded: its input by
//! [`crate::frame::MAX_KAFKA_REQUEST`], its output by [`MAX_OUTPUT`].

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::committer::Committer;
use crate::coordinator::Coordinator;
use crate::frame::FrameInput;
use crate::log::KafkaLog;
use crate::requests::{self, Answer, ConnectionState, Context, Pending};
use crate::scram::UsersFile;
use crate::transport::Transport;

/// Output a connection may have waiting before it is read from no more.
pub const MAX_OUTPUT: usize = 32 << 20;
/// How often waiting requests are looked at.
const WAITING_TICK: Duration = Duration::from_millis(1);
/// For its first [`QUICK_FOR`], a waiting request is looked at every
/// [`QUICK_NAP`] instead (a produce into a full ring usually finds room that
/// soon): as a shared-memory producer spins briefly before it sleeps.
const QUICK_FOR: Duration = Duration::from_millis(2);
const QUICK_NAP: Duration = Duration::from_micros(50);
/// How often the loop wakes with nothing waiting, to check its stop flag.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// At most one line a second about connections closed for bad input.
const REPORT_EVERY: Duration = Duration::from_secs(1);

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// How the listener presents itself.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The address Metadata hands out (`--kafka-advertise`, else the bound one).
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Connections beyond this are closed at once.
    pub max_connections: usize,
    /// Who may connect (SASL/SCRAM-SHA-256); None: anyone (loopback only).
    pub users: Option<UsersFile>,
    /// TLS for every connection, when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

pub struct Listener {
    log: Arc<dyn KafkaLog>,
    config: ListenerConfig,
}

struct Connection {
    transport: Transport,
    peer: Option<SocketAddr>,
    input: FrameInput,
    output: Vec<u8>,
    waiting: Option<Box<dyn Pending>>,
    state: ConnectionState,
    /// Close once the output is written.
    closing: bool,
    /// Since when its request has waited.
    waiting_since: Option<Instant>,
    /// What it is registered for: changed only when it must be (registering
    /// again re-arms readiness, so a connection whose unread bytes wait would be
    /// reported at once, every turn).
    interest: Interest,
}

/// What every connection's requests share: the loop's topic creations, the
/// group coordinator and the commit writer.
struct Shared<'a> {
    spawn_creation: &'a dyn Fn(Box<dyn FnOnce() + Send>),
    coordinator: &'a mut Coordinator,
    committer: &'a Committer,
    users: Option<&'a crate::scram::Users>,
}

/// A line about a closed connection, at most every [`REPORT_EVERY`].
struct Reports {
    last: Option<Instant>,
    missed: u64,
}

impl Reports {
    fn say(&mut self, line: impl FnOnce() -> String) {
        let now = Instant::now();
        if self.last.is_some_and(|l| now - l < REPORT_EVERY) {
            self.missed += 1;
            return;
        }
        let missed = std::mem::take(&mut self.missed);
        let more = if missed > 0 {
            format!(" ({missed} more since the last line)")
        } else {
            String::new()
        };
        eprintln!("broker: kafka: {}{more}", line());
        self.last = Some(now);
    }
}

impl Listener {
    pub fn new(log: Arc<dyn KafkaLog>, config: ListenerConfig) -> Self {
        Listener { log, config }
    }

    /// Serves until `stop` is set.
    pub fn serve(&self, listener: std::net::TcpListener, stop: &AtomicBool) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let committer = Arc::new(Committer::default());
        let commits = {
            let (committer, log, waker) = (committer.clone(), self.log.clone(), waker.clone());
            std::thread::Builder::new()
                .name("kafka-commits".into())
                .spawn(move || {
                    committer.run(&log, &|| {
                        let _ = waker.wake();
                    })
                })?
        };
        let served = self.serve_connections(&mut listener, &mut poll, &waker, &committer, stop);
        committer.stop();
        let _ = commits.join();
        served
    }

    fn serve_connections(
        &self,
        listener: &mut TcpListener,
        poll: &mut Poll,
        waker: &Arc<Waker>,
        committer: &Committer,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        let instance = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut coordinator = Coordinator::new(instance);
        let mut users = self.config.users.clone();
        let spawn_creation = |work: Box<dyn FnOnce() + Send>| {
            let waker = waker.clone();
            let spawned = std::thread::Builder::new()
                .name("kafka-create-topics".into())
                .spawn(move || {
                    work();
                    let _ = waker.wake();
                });
            if let Err(e) = spawned {
                eprintln!("broker: kafka: cannot start a topic creation: {e}");
            }
        };
        let mut events = Events::with_capacity(256);
        let mut conns: HashMap<Token, Connection> = HashMap::new();
        let mut next_token = 0usize;
        let mut reports = Reports {
            last: None,
            missed: 0,
        };
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let quick = conns
                .values()
                .any(|c| c.waiting_since.is_some_and(|t| now - t < QUICK_FOR));
            let tick = if quick {
                Duration::ZERO
            } else if conns.values().any(|c| c.waiting.is_some()) {
                WAITING_TICK
            } else {
                IDLE_TICK
            };
            match poll.poll(&mut events, Some(tick)) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => other?,
            }
            if quick && events.is_empty() {
                std::thread::sleep(QUICK_NAP);
            }
            // New connections authenticate against the users file as it is now.
            let accepting = events.iter().any(|e| e.token() == LISTENER);
            if let Some(u) = users.as_mut().filter(|_| accepting) {
                match u.refresh() {
                    Ok(true) => eprintln!("broker: kafka: read the users file again"),
                    Ok(false) => {}
                    Err(e) => reports.say(|| format!("keeping the users as they were: {e}")),
                }
            }
            let shared = &mut Shared {
                spawn_creation: &spawn_creation,
                coordinator: &mut coordinator,
                committer,
                users: users.as_ref().map(UsersFile::users),
            };
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(listener, poll, &mut conns, &mut next_token),
                    WAKER => {}
                    token => self.serve_one(poll, &mut conns, token, shared, &mut reports),
                }
            }
            for emptied in shared.coordinator.advance(Instant::now()) {
                self.log.release_group(&emptied);
            }
            if shared.coordinator.take_changed() {
                self.log.kafka_groups_changed(shared.coordinator.views());
            }
            // Waiting requests go on; the ones that answered let their
            // connections read on.
            let waiting: Vec<Token> = conns
                .iter()
                .filter(|(_, c)| c.waiting.is_some())
                .map(|(t, _)| *t)
                .collect();
            for token in waiting {
                self.serve_one(poll, &mut conns, token, shared, &mut reports);
            }
            for (token, conn) in conns.iter_mut() {
                let interest = if conn.transport.wants_write(&conn.output) {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                if interest != conn.interest
                    && poll
                        .registry()
                        .reregister(conn.transport.socket(), *token, interest)
                        .is_ok()
                {
                    conn.interest = interest;
                }
            }
        }
        for token in conns.keys().copied().collect::<Vec<_>>() {
            self.close(poll, &mut conns, token);
        }
        Ok(())
    }

    /// Serves connection `token` as far as it can go now; closes it if it is done.
    fn serve_one(
        &self,
        poll: &Poll,
        conns: &mut HashMap<Token, Connection>,
        token: Token,
        shared: &mut Shared<'_>,
        reports: &mut Reports,
    ) {
        let Some(conn) = conns.get_mut(&token) else {
            return;
        };
        let advertised = (
            self.config.advertised_host.as_str(),
            self.config.advertised_port,
        );
        let alive = conn.serve(&self.log, advertised, shared, reports);
        if !alive {
            self.close(poll, conns, token);
        } else if conn.waiting.is_none() {
            conn.waiting_since = None;
        } else if conn.waiting_since.is_none() {
            conn.waiting_since = Some(Instant::now());
        }
    }

    fn accept_all(
        &self,
        listener: &TcpListener,
        poll: &Poll,
        conns: &mut HashMap<Token, Connection>,
        next_token: &mut usize,
    ) {
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    if conns.len() >= self.config.max_connections {
                        // Closed at once: Kafka's clients retry.
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let token = Token(*next_token);
                    *next_token = (*next_token + 1) % (usize::MAX - 2);
                    let registered =
                        poll.registry()
                            .register(&mut stream, token, Interest::READABLE);
                    let transport = Transport::new(stream, self.config.tls.as_ref());
                    if let (Ok(()), Ok(transport)) = (registered, transport) {
                        conns.insert(
                            token,
                            Connection {
                                transport,
                                peer: Some(peer),
                                input: FrameInput::default(),
                                output: Vec::new(),
                                waiting: None,
                                state: ConnectionState::new(self.config.users.is_some()),
                                closing: false,
                                interest: Interest::READABLE,
                                waiting_since: None,
                            },
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Out of descriptors or a reset: drop this accept, keep serving.
                Err(_) => return,
            }
        }
    }

    fn close(&self, poll: &Poll, conns: &mut HashMap<Token, Connection>, token: Token) {
        let Some(mut conn) = conns.remove(&token) else {
            return;
        };
        let _ = poll.registry().deregister(conn.transport.socket());
        if let Some((_, producer)) = conn.state.producer.take() {
            self.log.release_producer(producer);
        }
    }
}

impl Connection {
    /// Answers what the connection sent, reads on while nothing waits, and
    /// writes what is answered; false once the connection is to be closed.
    fn serve(
        &mut self,
        log: &Arc<dyn KafkaLog>,
        advertised: (&str, u16),
        shared: &mut Shared<'_>,
        reports: &mut Reports,
    ) -> bool {
        let Connection {
            transport,
            peer,
            input,
            output,
            waiting,
            state,
            closing,
            ..
        } = self;
        let peer = *peer;
        let cx = &mut Context {
            log,
            advertised,
            connection: state,
            spawn_creation: shared.spawn_creation,
            coordinator: shared.coordinator,
            committer: shared.committer,
            peer,
            users: shared.users,
        };
        let peer_name = || peer.map_or_else(|| "a client".to_string(), |p| p.to_string());
        loop {
            // The request waiting, if any, first.
            if let Some(pending) = waiting.as_mut() {
                match pending.poll(cx, Instant::now()) {
                    Ok(Answer::NotYet) => break,
                    Ok(Answer::Done(frame)) => {
                        *waiting = None;
                        if let Some(f) = frame {
                            output.extend_from_slice(&f);
                        }
                        if let Some(line) = cx.connection.report.take() {
                            reports.say(|| format!("{}: {line}", peer_name()));
                        }
                        // A failed authentication is answered, then closed.
                        *closing |= cx.connection.close_after_answer;
                    }
                    Err(e) => {
                        reports.say(|| format!("closing the connection of {}: {e}", peer_name()));
                        return false;
                    }
                }
            }
            if !transport.flush(output) {
                return false;
            }
            if *closing {
                return !output.is_empty();
            }
            if output.len() > MAX_OUTPUT {
                // The client does not read its answers: it is read from no more
                // until it does.
                break;
            }
            match input.next_frame() {
                Ok(Some(frame)) => {
                    let started = requests::start_frame(frame, cx, Instant::now());
                    match started {
                        Ok(p) => *waiting = Some(p),
                        Err(e) => {
                            reports
                                .say(|| format!("closing the connection of {}: {e}", peer_name()));
                            return false;
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    reports.say(|| format!("closing the connection of {}: {e}", peer_name()));
                    return false;
                }
            }
            match transport.read_into(input) {
                Ok(0) => {
                    *closing = true;
                    return !output.is_empty();
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        transport.flush(output)
    }
}
