//! Client connections, served on the event loop's own thread.
//!
//! Once a client's handshake is done (on its connection's thread), its
//! socket joins one readiness set (`epoll`, through mio) that the event
//! loop waits on together with its timers and its channel from the peers.
//! A request goes from the socket to the server with no thread in between,
//! and a reply leaves from the loop at once: a burst of requests from many
//! clients is read in one wake-up and becomes one batch (one fsync). A
//! reply the socket does not take whole waits in that connection's buffer,
//! behind which later replies queue in order, until the socket is
//! writable again.
//!
//! A connection is closed when its client closes it, sends a frame that is
//! oversized, malformed or not a client's, stays silent longer than the
//! idle timeout (between requests or in the middle of a frame), or its
//! socket fails; the server then hears [`Event::ClientGone`].

use super::Live;
use crate::node::{ConnId, Event};
use crate::wire::{self, Filled, Frame, FrameBuf, Response};
use mio::net::TcpStream;
use mio::{Interest, Poll, Token, Waker};
use raft_spec::NodeId;
use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::{mpsc, Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The readiness token of the waker (the peers' channel, admitted clients).
pub(super) const WAKE: Token = Token(0);

/// The most bytes read from one connection before the others get their
/// turn; the rest is read on the next pass.
const READ_BUDGET: usize = 4 << 20;

/// The bytes one `read` takes from a socket.
const SCRATCH: usize = 64 << 10;

/// The capacity a connection's reply buffer keeps once flushed.
const KEPT_CAPACITY: usize = 256 << 10;

/// A client connection whose handshake is done, handed to the event loop.
#[derive(Debug)]
pub(super) struct Admitted {
    /// The socket.
    pub stream: std::net::TcpStream,
    /// Counts the connection toward the cap while it lives.
    pub live: Live,
}

/// How clients are served.
#[derive(Clone, Copy, Debug)]
pub(super) struct ClientOptions {
    /// The frame size limit.
    pub max_frame: usize,
    /// How long a connection may stay silent.
    pub idle_timeout: Duration,
    /// Whether clients may send [`Frame::Partition`].
    pub test_control: bool,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    input: FrameBuf,
    /// Encoded replies not yet taken by the socket, from `sent` on.
    output: Vec<u8>,
    sent: usize,
    /// When a byte last came in.
    heard: Instant,
    _live: Live,
}

impl Conn {
    /// Writes what is buffered until the socket would block.
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.output.len() {
            match self.stream.write(&self.output[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.sent = 0;
        if self.output.capacity() > KEPT_CAPACITY {
            self.output = Vec::new();
        }
        Ok(())
    }

    /// Queues `response` behind what is buffered and writes what it can.
    fn send(&mut self, response: Response) -> io::Result<()> {
        wire::write_frame(&mut self.output, &Frame::Response(response))?;
        self.flush()
    }
}

/// Every client connection of a node, and the readiness set the event loop
/// waits on.
#[derive(Debug)]
pub(super) struct Clients {
    poll: Poll,
    events: mio::Events,
    ready: Vec<(Token, bool, bool)>,
    conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    admitted: mpsc::Receiver<Admitted>,
    scratch: Box<[u8]>,
    /// Connections that had more to read when their budget ran out.
    backlog: Vec<ConnId>,
    /// Connections to close at the next pass (their socket failed on a
    /// reply, sent from inside the server's step).
    broken: Vec<ConnId>,
    options: ClientOptions,
    blocked: Arc<RwLock<BTreeSet<NodeId>>>,
    next_sweep: Instant,
}

impl Clients {
    /// An empty set, its waker (for whoever feeds the event loop) and the
    /// channel on which admitted connections arrive.
    pub fn new(
        options: ClientOptions,
        blocked: Arc<RwLock<BTreeSet<NodeId>>>,
    ) -> io::Result<(Self, Arc<Waker>, mpsc::Sender<Admitted>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (admit, admitted) = mpsc::channel();
        let clients = Clients {
            poll,
            events: mio::Events::with_capacity(1024),
            ready: Vec::new(),
            conns: HashMap::new(),
            next_conn: 1,
            admitted,
            scratch: vec![0u8; SCRATCH].into_boxed_slice(),
            backlog: Vec::new(),
            broken: Vec::new(),
            options,
            blocked,
            next_sweep: Instant::now() + sweep_every(options.idle_timeout),
        };
        Ok((clients, waker, admit))
    }

    /// Whether the next wait should not block: connections have more to
    /// read or to close.
    pub fn has_work(&self) -> bool {
        !self.backlog.is_empty() || !self.broken.is_empty()
    }

    /// Waits up to `timeout` for readiness, then reads what the clients
    /// sent: their requests (and the closed connections) go to `batch`.
    pub fn poll(&mut self, timeout: Duration, batch: &mut Vec<Event>) {
        let now = Instant::now();
        let timeout = if self.has_work() {
            Duration::ZERO
        } else {
            timeout.min(self.next_sweep.saturating_duration_since(now))
        };
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                warn!("waiting for client sockets failed: {e}");
            }
        }
        self.ready.clear();
        self.ready
            .extend(self.events.iter().filter(|e| e.token() != WAKE).map(|e| {
                (
                    e.token(),
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                    e.is_writable(),
                )
            }));
        for i in 0..self.ready.len() {
            let (Token(token), readable, writable) = self.ready[i];
            let conn = token as ConnId;
            if writable {
                self.flush(conn);
            }
            if readable {
                self.read(conn, batch);
            }
        }
        for conn in std::mem::take(&mut self.backlog) {
            self.read(conn, batch);
        }
        for conn in std::mem::take(&mut self.broken) {
            self.close(conn, batch);
        }
        while let Ok(admitted) = self.admitted.try_recv() {
            self.admit(admitted);
        }
        let now = Instant::now();
        if now >= self.next_sweep {
            self.next_sweep = now + sweep_every(self.options.idle_timeout);
            let silent: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| now.duration_since(c.heard) >= self.options.idle_timeout)
                .map(|(&id, _)| id)
                .collect();
            for conn in silent {
                debug!(
                    conn,
                    "closing a client connection silent for {} ms",
                    self.options.idle_timeout.as_millis()
                );
                self.close(conn, batch);
            }
        }
    }

    /// Answers `conn` (dropped if it is gone).
    pub fn reply(&mut self, conn: ConnId, response: Response) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Err(e) = c.send(response) {
            debug!(conn, "client connection failed: {e}");
            self.broken.push(conn);
        }
    }

    fn admit(&mut self, admitted: Admitted) {
        let conn = self.next_conn;
        self.next_conn += 1;
        if let Err(e) = admitted.stream.set_nonblocking(true) {
            debug!("cannot serve a client connection: {e}");
            return;
        }
        let mut stream = TcpStream::from_std(admitted.stream);
        let token = Token(conn as usize);
        let registered = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            warn!("cannot watch a client connection: {e}");
            return;
        }
        self.conns.insert(
            conn,
            Conn {
                stream,
                input: FrameBuf::default(),
                output: Vec::new(),
                sent: 0,
                heard: Instant::now(),
                _live: admitted.live,
            },
        );
        // Read at once: a request may have followed the handshake.
        self.backlog.push(conn);
    }

    fn flush(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Err(e) = c.flush() {
                debug!(conn, "client connection failed: {e}");
                self.broken.push(conn);
            }
        }
    }

    fn read(&mut self, conn: ConnId, batch: &mut Vec<Event>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let before = c.input.received();
        let filled = c.input.fill(&mut c.stream, &mut self.scratch, READ_BUDGET);
        if c.input.received() != before {
            c.heard = Instant::now();
        }
        loop {
            let frame = match c.input.next_frame(self.options.max_frame) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    warn!(conn, "closing the client connection: {e}");
                    return self.close(conn, batch);
                }
            };
            let event = match frame {
                Frame::Request {
                    client_id,
                    request_no,
                    command,
                    ack,
                    read,
                } => Event::Request {
                    conn,
                    client_id,
                    request_no,
                    command,
                    ack,
                    read,
                },
                Frame::Status => Event::Status { conn },
                Frame::Partition { blocked: peers } if self.options.test_control => {
                    info!(?peers, "test control: blocking traffic with these peers");
                    *self.blocked.write().unwrap_or_else(PoisonError::into_inner) =
                        peers.into_iter().collect();
                    if c.send(Response::Ok(None)).is_err() {
                        return self.close(conn, batch);
                    }
                    continue;
                }
                other => {
                    warn!(conn, "unexpected frame from a client, closing: {other:?}");
                    return self.close(conn, batch);
                }
            };
            batch.push(event);
        }
        match filled {
            Ok(Filled::WouldBlock) => {}
            Ok(Filled::Budget) => self.backlog.push(conn),
            Ok(Filled::Eof) => self.close(conn, batch),
            Err(e) => {
                debug!(conn, "client connection closed: {e}");
                self.close(conn, batch);
            }
        }
    }

    fn close(&mut self, conn: ConnId, batch: &mut Vec<Event>) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let _ = c.stream.shutdown(Shutdown::Both);
        batch.push(Event::ClientGone { conn });
    }
}

/// How often silent connections are looked for: a connection is closed
/// between one and one and a quarter idle timeouts after its last byte.
fn sweep_every(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}
