//! TCP transport: accepts peers and clients on one listening address, dials
//! every peer, and turns frames into [`Event`]s for the event loop.
//!
//! Threads: one accepting; one per inbound connection for its handshake,
//! which a peer's connection keeps to read its frames; one per peer (dials
//! it, reconnecting with exponential backoff from 10 ms to 500 ms, cut short
//! when that peer connects to us, since it is evidently up again; and writes
//! the messages the event loop hands it). Client connections hold no thread:
//! once their handshake is done they are served on the event loop's thread
//! (module `clients`), which waits on their sockets, its timers and the peers'
//! channel at once ([`Transport::next_batch`]). Messages to a peer that is
//! unreachable are dropped, as a lossy network would: Raft retransmits what
//! matters.
//!
//! Refusals are answered with [`Frame::Refused`] and logged: a node of another
//! cluster (cluster id mismatch), an unknown node id, another protocol
//! version, a first frame that is not `Hello`. An oversized or malformed
//! frame closes its connection with a warning; nothing reaches the server.
//!
//! **Order.** Each link (one sender to one receiver) delivers its messages in
//! the order the sender released them, with gaps (messages lost with a
//! connection) but never reordered or duplicated: one writer per peer, TCP
//! within a connection, and a newer inbound connection from a peer
//! supersedes the older one, whose frames not yet handed on are dropped
//! (under one lock with the hand-over, so none slips in after the newer
//! connection's). Traces record it ([`raft_spec::trace::Header::fifo_links`])
//! and the replay relies on it to bound its memory.

mod clients;

use crate::config::Peers;
use crate::node::{ConnId, Event, Io};
use crate::storage::KnownPeers;
use crate::wire::{self, Frame, FrameError, Response, Sender, PROTOCOL_VERSION};
use clients::{Admitted, ClientOptions, Clients};
use raft_spec::{KvCommand, Message, NodeId};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// The most messages queued for one peer; more are dropped.
pub const PEER_QUEUE: usize = 256;

/// The most bytes ([`message_bytes`]) queued for one peer; a message that
/// would pass it is dropped, unless the queue is empty (so that every
/// message, however large, can be sent). It holds a full flow-control window
/// of [`raft_spec::Replication::runtime`] (64 batches of 1 MiB).
pub const PEER_QUEUE_BYTES: u64 = 64 << 20;

/// The bytes a message takes in a peer's send queue: a fixed 64 for the
/// message and, for an AppendEntries, each entry's
/// [`raft_spec::flow::entry_bytes`].
pub fn message_bytes(message: &Message<KvCommand>) -> u64 {
    64 + match message {
        Message::AppendEntries(m) => m
            .entries
            .iter()
            .map(raft_spec::flow::entry_bytes::<raft_spec::Kv>)
            .sum(),
        _ => 0,
    }
}

/// The sending end of a peer's queue, bounded in messages and bytes.
#[derive(Debug)]
struct QueueTx {
    tx: mpsc::SyncSender<(Message<KvCommand>, u64)>,
    bytes: Arc<AtomicU64>,
}

/// The receiving end of a peer's queue.
struct QueueRx {
    rx: mpsc::Receiver<(Message<KvCommand>, u64)>,
    bytes: Arc<AtomicU64>,
}

fn peer_queue() -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::sync_channel(PEER_QUEUE);
    let bytes = Arc::new(AtomicU64::new(0));
    (
        QueueTx {
            tx,
            bytes: bytes.clone(),
        },
        QueueRx { rx, bytes },
    )
}

impl QueueTx {
    /// Queues `message`, or drops it if the queue is full (in messages or
    /// bytes). `Err` if the receiving thread is gone.
    fn offer(&self, message: Message<KvCommand>) -> Result<bool, ()> {
        let size = message_bytes(&message);
        let queued = self.bytes.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(size) > PEER_QUEUE_BYTES {
            return Ok(false);
        }
        self.bytes.fetch_add(size, Ordering::AcqRel);
        match self.tx.try_send((message, size)) {
            Ok(()) => Ok(true),
            Err(e) => {
                self.bytes.fetch_sub(size, Ordering::AcqRel);
                match e {
                    mpsc::TrySendError::Full(_) => Ok(false),
                    mpsc::TrySendError::Disconnected(_) => Err(()),
                }
            }
        }
    }
}

impl QueueRx {
    fn taken(&self, (message, size): (Message<KvCommand>, u64)) -> Message<KvCommand> {
        self.bytes.fetch_sub(size, Ordering::AcqRel);
        message
    }

    /// The next message, waiting for one; `None` once the node is gone.
    fn recv(&self) -> Option<Message<KvCommand>> {
        self.rx.recv().ok().map(|m| self.taken(m))
    }

    /// The next message if one is queued.
    fn try_recv(&self) -> Result<Message<KvCommand>, mpsc::TryRecvError> {
        self.rx.try_recv().map(|m| self.taken(m))
    }
}

/// How long an accepted connection may take to say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// How the transport is set up.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// This node.
    pub id: NodeId,
    /// The cluster id checked in every handshake.
    pub cluster_id: String,
    /// Every server (this one included) and its address.
    pub peers: Peers,
    /// The frame size limit.
    pub max_frame: usize,
    /// Whether clients may send [`Frame::Partition`] (tests only).
    pub test_control: bool,
    /// A random number of this process, sent in the handshake, so that
    /// peers tell a restart from a reconnection.
    pub incarnation: u64,
    /// This node's storage id, sent in the handshake
    /// ([`crate::storage::FileStorage::storage_id`]).
    pub storage_id: u64,
    /// The storage ids of the peers, first seen and kept in the data
    /// directory: a peer presenting another one is refused.
    pub known_peers: Arc<Mutex<KnownPeers>>,
    /// The most inbound connections (peers and clients) served at once;
    /// one more is refused ("too many connections") and closed.
    pub max_connections: usize,
    /// How long a client connection may stay silent (between requests, or
    /// in the middle of a frame) before the node closes it; the client
    /// reconnects when it next has a request.
    pub client_idle_timeout: Duration,
}

/// The default of [`TransportOptions::client_idle_timeout`].
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default of [`TransportOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// A warning that may repeat fast (a full descriptor table makes every
/// `accept` fail at once): logged at most once a second, with how many
/// were held back since.
#[derive(Debug, Default)]
pub struct RateLimited {
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl RateLimited {
    /// Whether to log now, and how many were held back before this one.
    pub fn check(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// Counts an inbound connection toward
/// [`TransportOptions::max_connections`] while it lives.
#[derive(Debug)]
struct Live(Arc<std::sync::atomic::AtomicUsize>);

/// Hands events to the event loop and wakes it.
#[derive(Clone, Debug)]
struct EventTx {
    tx: mpsc::Sender<Event>,
    waker: Arc<mio::Waker>,
}

impl EventTx {
    /// Sends `event`; an error once the event loop is gone.
    fn send(&self, event: Event) -> Result<(), ()> {
        self.tx.send(event).map_err(|_| ())?;
        // A failed wake leaves the event for the loop's next timer.
        let _ = self.waker.wake();
        Ok(())
    }
}

/// Hands a client connection whose handshake is done to the event loop.
#[derive(Clone, Debug)]
struct AdmitTx {
    tx: mpsc::Sender<Admitted>,
    waker: Arc<mio::Waker>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per peer: a count of the peer's inbound connections to us, notified on
/// change. A peer that connects to us is up, perhaps restarted: our dialer
/// stops backing off, and our outbound connection, which may lead to the
/// peer's previous (dead) process, is renewed before the next write, so that
/// the write is not lost in a half-dead socket.
type Waker = Arc<(Mutex<u64>, Condvar)>;

#[derive(Debug, Default)]
struct PeerWatch {
    wakers: HashMap<NodeId, Waker>,
    /// The incarnation each peer last connected with.
    incarnations: Mutex<HashMap<NodeId, u64>>,
    /// Each peer's current inbound connection (by number): only it hands
    /// frames on, under this lock.
    inbound: Mutex<HashMap<NodeId, u64>>,
    /// Numbers inbound peer connections.
    next_inbound: AtomicU64,
}
type Wakers = Arc<PeerWatch>;

/// A peer connected to us with `incarnation`: if it is a new process (or
/// the first connection), move its generation on.
fn wake(wakers: &Wakers, peer: NodeId, incarnation: u64) {
    let previous = wakers
        .incarnations
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(peer, incarnation);
    if previous == Some(incarnation) {
        return;
    }
    if let Some(w) = wakers.wakers.get(&peer) {
        *w.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        w.1.notify_all();
    }
}

fn generation(waker: &Waker) -> u64 {
    *waker.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sleeps for `backoff` or until the generation moves past `seen`; returns
/// whether it did.
fn sleep_or_wake(waker: &Waker, seen: u64, backoff: Duration) -> bool {
    let guard = waker.0.lock().unwrap_or_else(PoisonError::into_inner);
    let (generation, _) = waker
        .1
        .wait_timeout_while(guard, backoff, |g| *g == seen)
        .unwrap_or_else(PoisonError::into_inner);
    *generation != seen
}

/// The running transport; the event loop's [`Io`], and what it waits on.
#[derive(Debug)]
pub struct Transport {
    peers: HashMap<NodeId, QueueTx>,
    clients: Clients,
    events: mpsc::Receiver<Event>,
    blocked: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl Transport {
    /// Waits up to `timeout` for the next events (requests from the
    /// clients, messages from the peers) and appends them to `batch`,
    /// taking the peers' only while it holds fewer than `max`; false once no peer message can come any
    /// more (the node is stopping).
    pub fn next_batch(&mut self, timeout: Duration, batch: &mut Vec<Event>, max: usize) -> bool {
        let timeout = match self.events.try_recv() {
            Ok(event) => {
                batch.push(event);
                Duration::ZERO
            }
            Err(mpsc::TryRecvError::Empty) => timeout,
            // The accepting thread holds a sender for as long as it runs.
            Err(mpsc::TryRecvError::Disconnected) => return false,
        };
        self.clients.poll(timeout, batch);
        while batch.len() < max {
            match self.events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        true
    }
}

impl Io for Transport {
    fn send(&mut self, to: NodeId, message: Message<KvCommand>) {
        if is_blocked(&self.blocked, to) {
            return;
        }
        if let Some(tx) = self.peers.get(&to) {
            // A full queue (the peer is not reading: paused, or far behind)
            // drops the message, as a lossy network would; Raft
            // retransmits what matters. A closed channel means the peer's
            // thread ended; the node is stopping.
            if let Ok(false) = tx.offer(message) {
                debug!(peer = to.0, "send queue full: message dropped");
            }
        }
    }

    fn reply(&mut self, conn: ConnId, response: Response) {
        self.clients.reply(conn, response);
    }
}

fn is_blocked(blocked: &RwLock<BTreeSet<NodeId>>, peer: NodeId) -> bool {
    blocked
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&peer)
}

/// Starts the transport on `listener`.
pub fn start(options: TransportOptions, listener: TcpListener) -> std::io::Result<Transport> {
    let blocked: Arc<RwLock<BTreeSet<NodeId>>> = Arc::default();
    let (clients, waker, admit) = Clients::new(
        ClientOptions {
            max_frame: options.max_frame,
            idle_timeout: options.client_idle_timeout,
            test_control: options.test_control,
        },
        blocked.clone(),
    )?;
    let (tx, events) = mpsc::channel();
    let admit = AdmitTx {
        tx: admit,
        waker: waker.clone(),
    };
    let sender = EventTx { tx, waker };
    let mut peers = HashMap::new();
    let wakers: Wakers = Arc::new(PeerWatch {
        wakers: options
            .peers
            .keys()
            .map(|&p| (p, Waker::default()))
            .collect(),
        incarnations: Mutex::default(),
        inbound: Mutex::default(),
        next_inbound: AtomicU64::new(0),
    });
    for (&peer, addr) in &options.peers {
        if peer == options.id {
            continue;
        }
        let (tx, rx) = peer_queue();
        peers.insert(peer, tx);
        let opts = options.clone();
        let addr = addr.clone();
        let waker = wakers.wakers.get(&peer).cloned().unwrap_or_default();
        let spawned = thread::Builder::new()
            .name(format!("peer-{}", peer.0))
            .spawn(move || dial_peer(&opts, peer, &addr, &rx, &waker));
        if let Err(e) = spawned {
            warn!(peer = peer.0, "cannot start the peer thread: {e}");
        }
    }
    let accept = {
        let blocked = blocked.clone();
        move || accept_loop(&options, &listener, &sender, &admit, &blocked, &wakers)
    };
    if let Err(e) = thread::Builder::new().name("accept".into()).spawn(accept) {
        warn!("cannot start the accepting thread: {e}");
    }
    Ok(Transport {
        peers,
        clients,
        events,
        blocked,
    })
}

fn accept_loop(
    options: &TransportOptions,
    listener: &TcpListener,
    events: &EventTx,
    admit: &AdmitTx,
    blocked: &Arc<RwLock<BTreeSet<NodeId>>>,
    wakers: &Wakers,
) {
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (mut accept_failed, mut too_many) = (RateLimited::default(), RateLimited::default());
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                if let Some(held_back) = accept_failed.check(std::time::Instant::now()) {
                    warn!(held_back, "accept failed: {e}");
                }
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if live.load(Ordering::Relaxed) >= options.max_connections {
            let reason = format!(
                "too many connections (this node serves at most {})",
                options.max_connections
            );
            if let Some(held_back) = too_many.check(std::time::Instant::now()) {
                warn!(held_back, "refused connection: {reason}");
            }
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = wire::write_frame(&mut stream, &Frame::Refused { reason });
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        live.fetch_add(1, Ordering::Relaxed);
        let counted = Live(live.clone());
        let options = options.clone();
        let events = events.clone();
        let admit = admit.clone();
        let blocked = blocked.clone();
        let wakers = wakers.clone();
        let spawned = thread::Builder::new().name("conn".into()).spawn(move || {
            let peer_addr = stream
                .peer_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            serve_connection(
                &options, stream, counted, &peer_addr, &events, &admit, &blocked, &wakers,
            );
        });
        if let Err(e) = spawned {
            warn!("cannot start a connection thread: {e}");
        }
    }
}

fn refuse(stream: &mut TcpStream, remote: &str, reason: String) {
    warn!(remote, "refused connection: {reason}");
    let _ = wire::write_frame(stream, &Frame::Refused { reason });
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

// The shared handles of the transport, passed one by one to keep their
// ownership visible.
#[allow(clippy::too_many_arguments)]
fn serve_connection(
    options: &TransportOptions,
    mut stream: TcpStream,
    live: Live,
    remote: &str,
    events: &EventTx,
    admit: &AdmitTx,
    blocked: &Arc<RwLock<BTreeSet<NodeId>>>,
    wakers: &Wakers,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(HELLO_TIMEOUT));
    let hello = match wire::read_frame(&mut stream, options.max_frame) {
        Ok(f) => f,
        Err(e) => {
            if !e.is_eof() {
                refuse(&mut stream, remote, format!("bad handshake: {e}"));
            }
            return;
        }
    };
    let Frame::Hello {
        protocol,
        cluster_id,
        sender,
    } = hello
    else {
        return refuse(&mut stream, remote, "first frame is not Hello".into());
    };
    if protocol != PROTOCOL_VERSION {
        return refuse(
            &mut stream,
            remote,
            format!("protocol version {protocol}, this node speaks {PROTOCOL_VERSION}"),
        );
    }
    let foreign = cluster_id != options.cluster_id;
    match sender {
        Sender::Peer {
            id,
            incarnation,
            storage_id,
        } => {
            if foreign {
                return refuse(
                    &mut stream,
                    remote,
                    format!(
                        "node {id} belongs to cluster {cluster_id:?}, this is cluster {:?}",
                        options.cluster_id
                    ),
                );
            }
            if id == options.id || !options.peers.contains_key(&id) {
                return refuse(
                    &mut stream,
                    remote,
                    format!(
                        "unknown node id {} (not a peer of node {})",
                        id.0, options.id.0
                    ),
                );
            }
            // Raft §5.2: a server's vote and log must survive it. A peer
            // bootstrapped again lost them; its messages are not taken.
            let admitted = options
                .known_peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(id, storage_id);
            if let Err(e) = admitted {
                error!(peer = id.0, remote, "refusing peer: {e}");
                return refuse(&mut stream, remote, e.to_string());
            }
            if welcome(&mut stream).is_err() {
                return;
            }
            debug!(peer = id.0, remote, "peer connected");
            let conn = wakers.next_inbound.fetch_add(1, Ordering::Relaxed);
            wakers
                .inbound
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, conn);
            wake(wakers, id, incarnation);
            read_peer(options, stream, id, conn, events, blocked, wakers);
        }
        Sender::Client => {
            if foreign && !cluster_id.is_empty() {
                return refuse(
                    &mut stream,
                    remote,
                    format!(
                        "client of cluster {cluster_id:?}, this is cluster {:?}",
                        options.cluster_id
                    ),
                );
            }
            if welcome(&mut stream).is_err() {
                return;
            }
            // The event loop serves it from now on.
            if admit.tx.send(Admitted { stream, live }).is_ok() {
                let _ = admit.waker.wake();
            }
        }
    }
}

fn welcome(stream: &mut TcpStream) -> std::io::Result<()> {
    wire::write_frame(stream, &Frame::Welcome)?;
    stream.flush()?;
    stream.set_read_timeout(None)
}

fn read_peer(
    options: &TransportOptions,
    stream: TcpStream,
    id: NodeId,
    conn: u64,
    events: &EventTx,
    blocked: &RwLock<BTreeSet<NodeId>>,
    wakers: &Wakers,
) {
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    loop {
        // A large frame in progress says the peer is alive (the node keeps
        // its election timer from firing while its leader's entries arrive).
        let receiving = |bytes: usize| {
            if !is_blocked(blocked, id) {
                let _ = events.send(Event::Receiving { from: id, bytes });
            }
        };
        match wire::read_frame_with(&mut reader, options.max_frame, receiving) {
            Ok(Frame::Raft(message)) => {
                if is_blocked(blocked, id) {
                    continue;
                }
                let current = wakers
                    .inbound
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if current.get(&id) != Some(&conn) {
                    debug!(
                        peer = id.0,
                        "connection superseded by a newer one from the peer"
                    );
                    return;
                }
                if events.send(Event::Peer { from: id, message }).is_err() {
                    return;
                }
                drop(current);
            }
            Ok(other) => {
                warn!(
                    peer = id.0,
                    "unexpected frame from a peer, closing: {other:?}"
                );
                return;
            }
            Err(e) if e.is_eof() => return,
            Err(e) => {
                warn!(peer = id.0, "closing the connection from the peer: {e}");
                return;
            }
        }
    }
}

/// Opens a connection to `addr` and performs the handshake as `sender`.
pub fn connect(
    addr: &str,
    cluster_id: &str,
    sender: Sender,
    timeout: Duration,
    max_frame: usize,
) -> Result<TcpStream, String> {
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("{addr}: {e}"))?;
    wire::write_frame(
        &mut stream,
        &Frame::Hello {
            protocol: PROTOCOL_VERSION,
            cluster_id: cluster_id.to_string(),
            sender,
        },
    )
    .and_then(|()| stream.flush())
    .map_err(|e| format!("handshake with {addr}: {e}"))?;
    match wire::read_frame(&mut stream, max_frame) {
        Ok(Frame::Welcome) => Ok(stream),
        Ok(Frame::Refused { reason }) => Err(format!("{addr} refused the connection: {reason}")),
        Ok(other) => Err(format!("{addr} answered the handshake with {other:?}")),
        Err(FrameError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(handshake_timeout(addr, timeout))
        }
        Err(e) => Err(format!("handshake with {addr}: {e}")),
    }
}

/// The error of a handshake that got no answer in time (the socket says
/// "resource temporarily unavailable", which tells a user nothing).
fn handshake_timeout(addr: &str, timeout: Duration) -> String {
    format!(
        "{addr} accepted the connection but did not answer the handshake within {} ms (a busy or stuck process, or not a raft-node)",
        timeout.as_millis()
    )
}

fn dial_peer(options: &TransportOptions, peer: NodeId, addr: &str, rx: &QueueRx, waker: &Waker) {
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u64;
    // A message taken from the queue but not yet written.
    let mut held: Option<Message<KvCommand>> = None;
    loop {
        let seen = generation(waker);
        match connect(
            addr,
            &options.cluster_id,
            Sender::Peer {
                id: options.id,
                incarnation: options.incarnation,
                storage_id: options.storage_id,
            },
            Duration::from_secs(1),
            options.max_frame,
        ) {
            Ok(stream) => {
                if failures > 0 {
                    info!(
                        peer = peer.0,
                        addr, "connected to peer after {failures} failed attempts"
                    );
                } else {
                    debug!(peer = peer.0, addr, "connected to peer");
                }
                failures = 0;
                backoff = BACKOFF_MIN;
                let _ = stream.set_read_timeout(None);
                match write_messages(stream, peer, rx, waker, seen, &mut held) {
                    Written::Reconnect => {}
                    Written::Stop => return,
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || e.contains("refused the connection:") {
                    warn!(
                        peer = peer.0,
                        "cannot reach peer (retrying with backoff): {e}"
                    );
                } else {
                    debug!(peer = peer.0, "cannot reach peer: {e}");
                }
                if sleep_or_wake(waker, seen, backoff) {
                    backoff = BACKOFF_MIN;
                } else {
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                // Drop what queued up meanwhile; stop if the node is gone.
                held = None;
                loop {
                    match rx.try_recv() {
                        Ok(_) => {}
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                }
            }
        }
    }
}

enum Written {
    Reconnect,
    Stop,
}

/// Writes messages until the connection fails or the peer reconnected to us
/// (reconnect) or the node stops.
fn write_messages(
    stream: TcpStream,
    peer: NodeId,
    rx: &QueueRx,
    waker: &Waker,
    seen: u64,
    held: &mut Option<Message<KvCommand>>,
) -> Written {
    let mut w = BufWriter::with_capacity(64 << 10, stream);
    loop {
        let message = match held.take() {
            Some(m) => m,
            None => match rx.recv() {
                Some(m) => m,
                None => return Written::Stop,
            },
        };
        if generation(waker) != seen {
            debug!(
                peer = peer.0,
                "peer reconnected to us: renewing our connection"
            );
            *held = Some(message);
            return Written::Reconnect;
        }
        let mut result = wire::write_frame(&mut w, &Frame::Raft(message));
        while result.is_ok() {
            match rx.try_recv() {
                Ok(more) => result = wire::write_frame(&mut w, &Frame::Raft(more)),
                Err(_) => break,
            }
        }
        if let Err(e) = result.and_then(|()| w.flush()) {
            info!(peer = peer.0, "connection to peer lost: {e}");
            return Written::Reconnect;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_silent_handshake_is_reported_as_such() {
        // A listener that accepts (the kernel does) but never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let err = connect(
            &addr,
            "c",
            Sender::Client,
            Duration::from_millis(200),
            wire::DEFAULT_MAX_FRAME,
        )
        .unwrap_err();
        assert_eq!(err, handshake_timeout(&addr, Duration::from_millis(200)));
        assert!(!err.contains("os error"), "{err}");
    }

    #[test]
    fn a_repeated_warning_is_logged_once_a_second_with_the_count_held_back() {
        let mut w = RateLimited::default();
        let t0 = Instant::now();
        assert_eq!(w.check(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(w.check(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(w.check(t0 + Duration::from_millis(1001)), Some(500));
        assert_eq!(w.check(t0 + Duration::from_millis(1002)), None);
    }
}
