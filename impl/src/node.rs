//! The event loop's core: one [`Node`] owns a `raft-spec` [`Server`] and
//! carries out its outputs. It does no I/O of its own: storage and the outside
//! world are handed in ([`Storage`], [`Io`]) and time is a parameter, so the
//! same code runs over TCP, disk and the wall clock ([`crate::runtime`]) and
//! over the simulated network, storage and clock of [`crate::sim`].
//!
//! ```text
//!  events ──► Node::handle(now, events, io)
//!  (peer messages,   1. fire the timers due at `now` (ElectionTimeout, HeartbeatTimeout)
//!   client requests, 2. step the server once per event, in order; for each step
//!   status, ...)        - Persist   → storage.append (buffered)
//!                       - SetTimer / CancelTimer → deadlines (election: random in range)
//!                       - Send / ClientReply     → held back
//!                    3. trace lines of the batch's steps, handed to the kernel
//!                    4. storage.sync(): one fsync for the whole batch (group commit)
//!                    5. if the batch persisted anything: the trace's synced
//!                       marker {"synced":S}, S the batch's last step, handed to the kernel
//!                    6. release the held-back sends and replies, in order
//!                    7. after a leader's writes in parallel: step Synced
//!                       (a batch of its own)
//! ```
//!
//! A batch whose only writes are the leader's own new entries
//! ([`raft_spec::Persist::parallel`], Raft thesis §10.2.1) releases (6)
//! before its fsync (4, 5): the followers write the entries while the
//! leader does. Once the fsync returns, the server is told
//! ([`Input::Synced`]) and only then counts its own copy toward a majority.
//!
//! The ordering contract of [`raft_spec::Output`] holds: a step's `Persist`
//! is durable before any of its sends or replies leaves (but for the
//! contract's one exception, a leader's write in parallel), and the sends of
//! every step of a batch wait for the batch's fsync. Outputs are carried out
//! in the order the server produced them.
//!
//! Decision: within one batch only the last AppendEntries to each peer is
//! sent. It carries the leader's latest view (every entry from the peer's
//! `next_index` on, or the first `max_append_entries` of them with a cap,
//! and the latest `leader_commit`), so the dropped earlier ones are a prefix
//! of what it says, or hold entries the peer has acknowledged since; dropping
//! a message is what an unreliable network may do anyway (Raft §5.1,
//! "messages may be lost"), so no rule of the protocol changes. Without it, a batch of `k` client
//! requests would send each follower `k` AppendEntries holding `k²/2` entries.
//! With flow control (a [`Replication::window`]) every AppendEntries
//! carries a batch of its own, each entry once, and none is dropped.
//!
//! No Raft rule is written here: the node only decides *when* inputs happen
//! (timer deadlines, batching) and carries out outputs.
//!
//! # The trace across a crash
//!
//! The order of steps 3 to 6 makes the trace ([`raft_spec::trace`]) agree
//! with the storage whatever instant a `kill -9` hits: the kernel keeps what
//! a killed process wrote, so
//!
//! - the trace holds every step whose writes may be durable (its line was
//!   written before the storage's `write` and `fsync`);
//! - a batch whose sends or replies may have left the node is followed by
//!   its marker (written before the release); so is every batch that
//!   persisted something, unless the process died between the trace lines
//!   and the marker. Only the tail of the trace after the last marker or
//!   `Restart` step can hold such an unconfirmed batch, and nothing it sent
//!   has left the node.
//!
//! At restart, [`resume_trace`](raft_spec::trace::resume_trace) reconciles that tail with what the storage
//! recovered. It compares the recovered `current_term`, `voted_for`, last
//! log index and last log term with the state recorded (the readable
//! fields) by the last marked or `Restart` step and by each step after it,
//! and keeps the trace up to the *last* of these that matches: the whole
//! trace if the batch's writes became durable (killed after the fsync,
//! before the marker), the trace up to the batch's first persisting step if
//! none did (killed before or during the fsync), or up to the last durable
//! step of a batch whose WAL `write` was cut short.
//! The steps cut never happened as far as anyone can tell: their writes are
//! lost and their messages never left. If none matches, nothing is cut and
//! the replayer reports the disagreement at the `Restart` step. Nothing at or before a marker or a
//! `Restart` is ever cut: a recovered state that contradicts a marked batch
//! is a storage fault (a lost synced write), not a crash, and the replayer
//! must see it. Cutting cannot hide one either: the `Restart` step records
//! the digest of the recovered state, which the replayer checks against its
//! own recovery from the kept steps. (A storage fault that loses only writes
//! whose batch has no marker is indistinguishable from a crash before the
//! fsync, and harmless: nobody heard of those writes.) The real runtime
//! does this in [`crate::runtime::open_trace`], the simulation in
//! [`crate::sim::Sim::restart`].

use crate::config::{Peers, Timing};
use crate::storage::{Storage, StorageError};
use crate::wire::{Response, StatusInfo};
use raft_spec::trace::{
    message_digest, released_sends, Emitted, Header, LogDigest, Step, TraceInput, TraceWriter,
};
use raft_spec::{
    Ack, ClientId, ClientReply, Input, Kv, KvCommand, KvOutput, Message, NodeId, Output,
    PersistentState, ReadMode, Replication, Role, Server, Timer,
};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;
use thiserror::Error;
use tracing::{debug, debug_span, info, warn};

/// Time as seen by a node: a duration since an arbitrary origin (the
/// process start, or the simulation's start).
pub type Time = Duration;

/// A client connection, as numbered by the transport.
pub type ConnId = u64;

/// An input to the event loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A Raft message from a peer (the sender is the one authenticated by the
    /// connection's handshake).
    Peer {
        /// The sender.
        from: NodeId,
        /// The message.
        message: Message<KvCommand>,
    },
    /// A client request.
    Request {
        /// Where to answer.
        conn: ConnId,
        /// The client session.
        client_id: ClientId,
        /// The client's request number.
        request_no: u64,
        /// The command.
        command: KvCommand,
        /// When the leader answers a write.
        ack: Ack,
        /// How a read is served (`None`: through the log).
        read: Option<ReadMode>,
    },
    /// A client asks for the status.
    Status {
        /// Where to answer.
        conn: ConnId,
    },
    /// A client connection closed: forget what it waits for.
    ClientGone {
        /// The connection.
        conn: ConnId,
    },
    /// A large frame from a peer is arriving (`bytes` of it so far): if the
    /// peer is the leader this node follows, its election timer is held
    /// back by one election timeout. The runtime's policy, not a Raft
    /// input: timers decide only when a server campaigns, never what is safe,
    /// and a leader whose entries take longer than an election timeout to
    /// arrive is alive.
    Receiving {
        /// The sender.
        from: NodeId,
        /// The bytes of the frame read so far.
        bytes: usize,
    },
}

/// What the event loop does to the outside world (after the batch's fsync).
pub trait Io {
    /// Sends a message to a peer; delivery is not guaranteed.
    fn send(&mut self, to: NodeId, message: Message<KvCommand>);
    /// Answers a client connection.
    fn reply(&mut self, conn: ConnId, response: Response);
}

/// A fatal error of the event loop.
#[derive(Debug, Error)]
pub enum NodeError {
    /// Storage failed: the node stops (it cannot keep its promises).
    #[error("storage failure: {0}")]
    Storage(#[from] StorageError),
    /// The trace file could not be written.
    #[error("trace file: {0}")]
    Trace(std::io::Error),
}

/// A small, seedable pseudo-random generator (SplitMix64) for election
/// timeouts and the simulation: deterministic for a seed, no dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p` (0.0 to 1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Where trace lines go: a writer plus the incremental log digest.
struct Tracer {
    writer: TraceWriter<Box<dyn Write + Send>>,
    log_digest: LogDigest,
    seq: u64,
    steps: Vec<Step<KvCommand, KvOutput>>,
}

/// What one batch holds back until its fsync.
#[derive(Default)]
struct Batch {
    persisted: bool,
    /// Whether a step persisted something that must be durable before the
    /// batch's sends leave (every persist but a leader's write in parallel).
    synchronous: bool,
    /// The leader's writes in parallel ([`raft_spec::Persist::parallel`]):
    /// the term they were written in and the last index, reported with
    /// [`Input::Synced`] once the batch's fsync returns.
    parallel: Option<(raft_spec::Term, raft_spec::LogIndex)>,
    release: Vec<Release>,
    /// With a trace: the sends and replies its steps recorded, each send
    /// with whether it is an AppendEntries (what the released marker is
    /// compared with).
    recorded: Vec<(Emitted<KvOutput>, bool)>,
}

enum Release {
    /// A message to a peer, with its digest when the node records a trace.
    Send(NodeId, Message<KvCommand>, Option<raft_spec::trace::Digest>),
    /// A response on a connection, and the request it answers (`None` for a
    /// status response, which answers no request of the server's).
    Reply(ConnId, Response, Option<(ClientId, u64)>),
}

/// Counters, for `status` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Steps taken.
    pub steps: u64,
    /// Batches handled.
    pub batches: u64,
    /// Storage syncs (fsyncs).
    pub syncs: u64,
    /// Messages sent.
    pub sent: u64,
    /// AppendEntries dropped because a later one to the same peer superseded
    /// them in the same batch.
    pub coalesced: u64,
}

/// Whether the timer of `deadline` is due at `now`; if so it is taken (no
/// longer set).
fn take_due(deadline: &mut Option<Time>, now: Time) -> bool {
    let due = deadline.is_some_and(|d| d <= now);
    if due {
        *deadline = None;
    }
    due
}

/// One node: the server, its storage, its timers and its waiting clients.
pub struct Node<St: Storage> {
    server: Server<Kv>,
    storage: St,
    timing: Timing,
    rng: SplitMix64,
    election_deadline: Option<Time>,
    heartbeat_deadline: Option<Time>,
    /// The leader's lease timer ([`Timer::Lease`]).
    lease_deadline: Option<Time>,
    /// A follower's quiet timer ([`Timer::Quiet`]).
    quiet_deadline: Option<Time>,
    /// Whether the batch being handled (or the last one) started the
    /// election timer ([`Node::batch_took`]).
    election_started: bool,
    /// Clients waiting for the reply to `(client id, request number)`.
    pending: HashMap<(ClientId, u64), ConnId>,
    addresses: Peers,
    trace: Option<Tracer>,
    counters: Counters,
    /// Fault injection only: release a batch's sends before its fsync.
    #[cfg(feature = "fault-injection")]
    send_before_sync: bool,
}

impl<St: Storage> std::fmt::Debug for Node<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.server.id)
            .field("role", &self.server.role())
            .field("term", &self.server.current_term())
            .finish_non_exhaustive()
    }
}

/// How to start a [`Node`].
pub struct NodeOptions {
    /// This node's id.
    pub id: NodeId,
    /// Every server of the cluster (this one included) and its address.
    pub peers: Peers,
    /// The cluster id (for the trace header).
    pub cluster_id: String,
    /// Timer durations.
    pub timing: Timing,
    /// Seed of the election-timeout randomness.
    pub seed: u64,
    /// Where to write the trace, if anywhere.
    pub trace: Option<TraceOut>,
    /// How the node paces AppendEntries as leader
    /// ([`Server::with_replication`]). Configuration, not persisted state:
    /// applied at every start and restart, and recorded in a new trace's
    /// header ([`Header::replication`]).
    pub replication: Replication,
    /// Whether the transport delivers each link's messages in order, with
    /// gaps only (recorded in the trace header:
    /// [`raft_spec::trace::Header::fifo_links`]).
    pub fifo_links: bool,
}

/// Where a node writes its trace.
pub struct TraceOut {
    /// The file (or any writer).
    pub out: Box<dyn Write + Send>,
    /// `None`: a new trace (the header is written first). `Some(seq)`: the
    /// writer continues an existing trace whose last step is `seq`.
    pub resume_after: Option<u64>,
}

impl<St: Storage> Node<St> {
    /// Starts (or restarts) the node from what `storage` recovered
    /// ([`Server::restart`], with the options' replication settings),
    /// carrying out the restart's outputs.
    pub fn start(
        options: NodeOptions,
        persistent: PersistentState<KvCommand>,
        storage: St,
        now: Time,
        io: &mut impl Io,
    ) -> Result<Self, NodeError> {
        let NodeOptions {
            id,
            peers,
            cluster_id,
            timing,
            seed,
            trace,
            replication,
            fifo_links,
        } = options;
        let ids: Vec<NodeId> = peers.keys().copied().collect();
        let trace = match trace {
            None => None,
            Some(TraceOut { out, resume_after }) => {
                let writer = match resume_after {
                    Some(_) => TraceWriter::resume(out),
                    None => {
                        let header = Header::new(cluster_id, ids.clone(), "kv", id)
                            .with_replication(replication)
                            .with_fifo_links(fifo_links);
                        TraceWriter::new(out, &header).map_err(NodeError::Trace)?
                    }
                };
                Some(Tracer {
                    writer,
                    log_digest: LogDigest::of(&persistent.log),
                    seq: resume_after.unwrap_or(0),
                    steps: Vec::new(),
                })
            }
        };
        let (server, outputs) = Server::restart(id, ids, persistent);
        let server = server.with_replication(replication);
        info!(
            term = server.current_term().0,
            last_log_index = server.log().last_index().0,
            "started as follower"
        );
        let mut node = Node {
            server,
            storage,
            timing,
            rng: SplitMix64::new(seed),
            election_deadline: None,
            heartbeat_deadline: None,
            lease_deadline: None,
            quiet_deadline: None,
            election_started: false,
            pending: HashMap::new(),
            addresses: peers,
            trace,
            counters: Counters::default(),
            #[cfg(feature = "fault-injection")]
            send_before_sync: false,
        };
        let mut batch = Batch::default();
        let out = node.carry_out(now, outputs, &mut batch)?;
        node.record(TraceInput::Restart, out);
        node.finish(now, batch, io)?;
        Ok(node)
    }

    /// The server (read-only).
    pub fn server(&self) -> &Server<Kv> {
        &self.server
    }

    /// The storage (read-only).
    pub fn storage(&self) -> &St {
        &self.storage
    }

    /// Mutable access to the storage (the simulation injects faults).
    pub fn storage_mut(&mut self) -> &mut St {
        &mut self.storage
    }

    /// Gives the storage back (the simulation keeps it across a crash).
    pub fn into_storage(self) -> St {
        self.storage
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The node's status.
    pub fn status(&self) -> StatusInfo {
        let s = &self.server;
        StatusInfo {
            id: s.id,
            role: s.role(),
            term: s.current_term(),
            commit_index: s.volatile.commit_index,
            last_applied: s.volatile.last_applied,
            last_log_index: s.log().last_index(),
            last_log_term: s.log().last_term(),
            leader: s.volatile.leader_hint,
        }
    }

    /// When the next timer fires, if any is set.
    pub fn next_deadline(&self) -> Option<Time> {
        [
            self.election_deadline,
            self.heartbeat_deadline,
            self.lease_deadline,
            self.quiet_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles one batch of events at time `now` (see the module docs).
    pub fn handle(
        &mut self,
        now: Time,
        events: impl IntoIterator<Item = Event>,
        io: &mut impl Io,
    ) -> Result<(), NodeError> {
        let mut batch = Batch::default();
        self.election_started = false;
        // A lease that ran out while the node was busy or paused ends before
        // any read waiting in the queue is served.
        if take_due(&mut self.lease_deadline, now) {
            self.step(now, Input::LeaseTimeout, &mut batch)?;
        }
        // Events first: they arrived while the node was busy, before `now`,
        // so a heartbeat waiting in the queue after a long step (a large
        // entry's write) resets the election timer before it is found
        // expired, and the node does not campaign against a live leader.
        for event in events {
            match event {
                Event::Peer { from, message } => {
                    if !self.server.peers.contains(&from) {
                        warn!(
                            from = from.0,
                            "message from a server outside the cluster dropped"
                        );
                        continue;
                    }
                    self.step(now, Input::Message { from, message }, &mut batch)?;
                }
                Event::Request {
                    conn,
                    client_id,
                    request_no,
                    command,
                    ack,
                    read,
                } => {
                    self.pending.insert((client_id, request_no), conn);
                    let input = match read {
                        Some(mode) => Input::ClientRead {
                            client_id,
                            request_no,
                            command,
                            mode,
                        },
                        None => Input::ClientRequest {
                            client_id,
                            request_no,
                            command,
                            ack,
                        },
                    };
                    self.step(now, input, &mut batch)?;
                }
                Event::Status { conn } => {
                    batch
                        .release
                        .push(Release::Reply(conn, Response::Status(self.status()), None));
                }
                Event::ClientGone { conn } => self.pending.retain(|_, c| *c != conn),
                Event::Receiving { from, bytes } => {
                    let following = self.server.role() != Role::Leader
                        && self.server.volatile.leader_hint == Some(from);
                    if let (true, Some(deadline)) = (following, self.election_deadline) {
                        let held = now + self.timing.election_min;
                        if held > deadline {
                            debug!(
                                from = from.0,
                                bytes, "leader's frame arriving: election timer held back"
                            );
                            self.election_deadline = Some(held);
                        }
                    }
                }
            }
        }
        self.fire_timers(now, &mut batch)?;
        self.finish(now, batch, io)
    }

    /// Tells the node that the batch [`Node::handle`] just handled took
    /// `took` of wall time (its steps, its writes and their fsync): an
    /// election timer that batch started counts from the end of that work,
    /// not from its start. A follower that spent long writing what its
    /// leader sent (a large entry) is then not found past its timeout the
    /// moment it is done, while its leader, busy writing the same entries,
    /// has not yet sent the next heartbeat: the counterpart of a tick-driven
    /// clock whose ticks stop while the node works (etcd-io/raft's
    /// `Tick`). The runtime's policy, like [`Event::Receiving`]; a
    /// simulation whose steps take no time never calls it.
    pub fn batch_took(&mut self, took: Duration) {
        if self.election_started {
            if let Some(deadline) = &mut self.election_deadline {
                *deadline += took;
            }
        }
    }

    /// Fires the timers whose deadline has passed. An election deadline
    /// passed by more than the longest election timeout means the node was
    /// not running (paused, or a step held its loop): what it missed from
    /// its leader may still be on its way, so the timer starts again rather
    /// than the node campaigning at once against a live leader. The
    /// runtime's policy, like [`Event::Receiving`]: timers decide only when
    /// a server campaigns.
    fn fire_timers(&mut self, now: Time, batch: &mut Batch) -> Result<(), NodeError> {
        if let Some(deadline) = self.election_deadline.filter(|&d| d <= now) {
            if now.saturating_sub(deadline) > self.timing.election_max {
                let after = self.election_timeout();
                debug!(
                    overdue_ms = now.saturating_sub(deadline).as_millis() as u64,
                    "election timer found long overdue: the node was not running; timer restarted"
                );
                self.election_deadline = Some(now + after);
            } else {
                self.election_deadline = None;
                self.step(now, Input::ElectionTimeout, batch)?;
            }
        }
        if take_due(&mut self.heartbeat_deadline, now) {
            self.step(now, Input::HeartbeatTimeout, batch)?;
        }
        if take_due(&mut self.lease_deadline, now) {
            self.step(now, Input::LeaseTimeout, batch)?;
        }
        if take_due(&mut self.quiet_deadline, now) {
            self.step(now, Input::QuietTimeout, batch)?;
        }
        Ok(())
    }

    /// An election timeout drawn uniformly from the timing's range.
    fn election_timeout(&mut self) -> Duration {
        let lo = self.timing.election_min.as_micros() as u64;
        let hi = self.timing.election_max.as_micros() as u64;
        Duration::from_micros(self.rng.range(lo, hi))
    }

    fn step(
        &mut self,
        now: Time,
        input: Input<KvCommand>,
        batch: &mut Batch,
    ) -> Result<(), NodeError> {
        let name = input.name();
        let span = debug_span!("step", input = name);
        let _entered = span.enter();
        let before = (
            self.server.role(),
            self.server.current_term(),
            self.server.volatile.commit_index,
        );
        let traced = self.trace.as_ref().map(|_| TraceInput::from(input.clone()));
        if let Input::Message { from, message } = &input {
            debug!(
                from = from.0,
                term = message.term().0,
                "received {}",
                message.name()
            );
        }
        let outputs = self.server.step(input);
        self.counters.steps += 1;
        let out = self.carry_out(now, outputs, batch)?;
        self.log_changes(before);
        if let Some(input) = traced {
            self.record(input, out);
        }
        Ok(())
    }

    /// Adds the step just taken to the batch's trace lines, with `out`, what
    /// it emitted as [`Node::carry_out`] carried it out.
    fn record(&mut self, input: TraceInput<KvCommand>, out: Vec<Emitted<KvOutput>>) {
        if let Some(t) = &mut self.trace {
            t.seq += 1;
            let step = Step::after(t.seq, input, &self.server, &t.log_digest).with_out(out);
            t.steps.push(step);
        }
    }

    fn log_changes(&self, (role, term, commit): (Role, raft_spec::Term, raft_spec::LogIndex)) {
        let s = &self.server;
        let now_term = s.current_term().0;
        if s.role() != role || s.current_term() != term {
            match s.role() {
                Role::Candidate => info!(
                    term = now_term,
                    last_log_index = s.log().last_index().0,
                    "became candidate: election timeout, requesting votes"
                ),
                Role::Leader => info!(term = now_term, "became leader"),
                Role::Follower if role == Role::Leader => {
                    info!(term = now_term, "stepped down: leader became follower")
                }
                Role::Follower if role == Role::Candidate => {
                    info!(term = now_term, "candidate became follower")
                }
                Role::Follower => info!(term = now_term, "follower moved to a new term"),
            }
        }
        if s.volatile.commit_index > commit {
            info!(
                term = now_term,
                commit_index = s.volatile.commit_index.0,
                role = ?s.role(),
                "committed"
            );
        }
    }

    /// Carries out a step's outputs in order; with a trace, returns what it
    /// carried out as the trace records it ([`Emitted`]), each output
    /// recorded where it is carried out: a persist once the storage took
    /// it, a timer as its deadline is set, a send or a reply as it is held
    /// back for the batch's release (a reply with the answer the client is
    /// given).
    fn carry_out(
        &mut self,
        now: Time,
        outputs: Vec<Output<KvCommand, KvOutput>>,
        batch: &mut Batch,
    ) -> Result<Vec<Emitted<KvOutput>>, NodeError> {
        let tracing = self.trace.is_some();
        let mut out = Vec::new();
        let mut emit = |e: Emitted<KvOutput>| {
            if tracing {
                out.push(e);
            }
        };
        for output in outputs {
            match output {
                Output::Persist(p) => {
                    if let Some(w) = &p.log {
                        info!(
                            from = w.from.0,
                            entries = w.entries.len(),
                            last_log_index = self.server.log().last_index().0,
                            "log write"
                        );
                    }
                    if let Some(t) = &mut self.trace {
                        if let Some(w) = &p.log {
                            t.log_digest.apply(w);
                        }
                    }
                    self.storage.append(&p)?;
                    batch.persisted = true;
                    match &p.log {
                        Some(w) if p.parallel => {
                            let last = w.last_index();
                            let term = self.server.current_term();
                            batch.parallel = Some(match batch.parallel {
                                Some((t, i)) if t == term => (t, i.max(last)),
                                _ => (term, last),
                            });
                        }
                        _ => batch.synchronous = true,
                    }
                    emit(Emitted::Persist {
                        hard_state: p.hard_state,
                        log: p.log.as_ref().map(|w| (w.from, w.entries.len() as u64)),
                        parallel: p.parallel,
                    });
                }
                Output::Send { to, message } => {
                    if let Message::RequestVoteResponse(r) = &message {
                        if r.vote_granted {
                            info!(candidate = to.0, term = r.term.0, "granted vote");
                        }
                    }
                    // The digest covers the entries through the log digest,
                    // which the step's persist (first of its outputs) has
                    // brought up to date.
                    let digest = self
                        .trace
                        .as_ref()
                        .map(|t| message_digest(&message, &t.log_digest));
                    if let Some(digest) = digest {
                        let e = Emitted::Send { to, digest };
                        let append = matches!(message, Message::AppendEntries(_));
                        batch.recorded.push((e.clone(), append));
                        emit(e);
                    }
                    batch.release.push(Release::Send(to, message, digest));
                }
                Output::SetTimer(timer) => {
                    match timer {
                        Timer::Election => {
                            let after = self.election_timeout();
                            self.election_deadline = Some(now + after);
                            self.election_started = true;
                        }
                        Timer::Heartbeat => {
                            self.heartbeat_deadline = Some(now + self.timing.heartbeat);
                        }
                        Timer::Lease => self.lease_deadline = Some(now + self.timing.lease()),
                        Timer::Quiet => {
                            self.quiet_deadline = Some(now + self.timing.election_min);
                        }
                    }
                    emit(Emitted::SetTimer(timer));
                }
                Output::CancelTimer(timer) => {
                    match timer {
                        Timer::Election => self.election_deadline = None,
                        Timer::Heartbeat => self.heartbeat_deadline = None,
                        Timer::Lease => self.lease_deadline = None,
                        Timer::Quiet => self.quiet_deadline = None,
                    }
                    emit(Emitted::CancelTimer(timer));
                }
                Output::Applied { index, term } => {
                    debug!(index = index.0, term = term.0, "applied");
                }
                Output::ClientReply {
                    client_id,
                    request_no,
                    reply,
                } => {
                    let Some(conn) = self.pending.remove(&(client_id, request_no)) else {
                        // Nobody waits (the connection closed): recorded as
                        // emitted, never released.
                        let e = Emitted::Reply {
                            client_id,
                            request_no,
                            reply,
                        };
                        if tracing {
                            batch.recorded.push((e.clone(), false));
                        }
                        emit(e);
                        continue;
                    };
                    let response = match reply {
                        ClientReply::Ok(output) => Response::Ok(output),
                        ClientReply::NotLeader { leader_hint } => Response::NotLeader {
                            leader: leader_hint,
                            address: leader_hint.and_then(|n| self.addresses.get(&n).cloned()),
                        },
                        ClientReply::Superseded { applied } => Response::Superseded { applied },
                        ClientReply::Accepted { index, term } => Response::Accepted { index, term },
                    };
                    if let Some(reply) = client_reply_of(&response).filter(|_| tracing) {
                        let e = Emitted::Reply {
                            client_id,
                            request_no,
                            reply,
                        };
                        batch.recorded.push((e.clone(), false));
                        emit(e);
                    }
                    batch.release.push(Release::Reply(
                        conn,
                        response,
                        Some((client_id, request_no)),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Breaks the persist-before-send contract on purpose: this node's
    /// batches release their sends before their fsync (a test of the trace
    /// replayer; crate feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub fn set_send_before_sync(&mut self, on: bool) {
        self.send_before_sync = on;
    }

    /// Trace, group commit, marker, then release in order (module docs).
    /// A batch whose only writes are the leader's writes in parallel
    /// releases first and syncs after (Raft thesis §10.2.1); once its
    /// fsync returns, the server is told ([`Input::Synced`]) in a batch of
    /// its own, which persists nothing.
    fn finish(&mut self, now: Time, batch: Batch, io: &mut impl Io) -> Result<(), NodeError> {
        let parallel = batch.parallel;
        self.finish_batch(batch, io)?;
        if let Some((term, index)) = parallel {
            let mut synced = Batch::default();
            self.step(now, Input::Synced { term, index }, &mut synced)?;
            self.finish_batch(synced, io)?;
        }
        Ok(())
    }

    fn finish_batch(&mut self, batch: Batch, io: &mut impl Io) -> Result<(), NodeError> {
        self.counters.batches += 1;
        // The batch's steps reach the kernel before their writes reach the
        // storage: a kill at any instant leaves a trace that holds every
        // step whose writes may be durable.
        if let Some(t) = &mut self.trace {
            if !t.steps.is_empty() {
                for step in t.steps.drain(..) {
                    t.writer.write_step(&step).map_err(NodeError::Trace)?;
                }
                t.writer.flush().map_err(NodeError::Trace)?;
            }
        }
        let mut release = Some((batch.release, batch.recorded));
        // The leader's own writes in parallel need not be durable first;
        // anything else must.
        let early = !batch.synchronous;
        #[cfg(feature = "fault-injection")]
        let early = early || self.send_before_sync;
        if early {
            if let Some((r, recorded)) = release.take() {
                self.release(r, &recorded, io)?;
            }
        }
        if batch.persisted {
            self.storage.sync()?;
            self.counters.syncs += 1;
            // Durable: say so before anything of the batch leaves, so that a
            // restart never cuts a step whose messages were sent.
            if let Some(t) = &mut self.trace {
                t.writer.write_synced(t.seq).map_err(NodeError::Trace)?;
                t.writer.flush().map_err(NodeError::Trace)?;
            }
        }
        if let Some((r, recorded)) = release {
            self.release(r, &recorded, io)?;
        }
        Ok(())
    }

    /// Sends the held-back messages and replies, in order, less the
    /// AppendEntries a later one to the same peer supersedes
    /// ([`released_sends`], module docs). With a trace, what leaves is
    /// first recorded in the batch's released marker, handed to the kernel
    /// before anything is handed to a socket: a kill at any instant leaves
    /// a trace that names every message and reply that may have left.
    ///
    /// The marker leaves its list out when it is exactly what the rule
    /// keeps of `recorded`, the sends and replies the batch's steps
    /// recorded ([`raft_spec::trace::Released::out`]).
    fn release(
        &mut self,
        release: Vec<Release>,
        recorded: &[(Emitted<KvOutput>, bool)],
        io: &mut impl Io,
    ) -> Result<(), NodeError> {
        let sends: Vec<(NodeId, bool)> = release
            .iter()
            .filter_map(|r| match r {
                Release::Send(to, m, _) => Some((*to, matches!(m, Message::AppendEntries(_)))),
                Release::Reply(..) => None,
            })
            .collect();
        let mut keep = released_sends(&sends, &self.server.replication()).into_iter();
        let release: Vec<Release> = release
            .into_iter()
            .filter(|r| match r {
                Release::Send(..) => keep.next().unwrap_or(true),
                Release::Reply(..) => true,
            })
            .collect();
        let released = release
            .iter()
            .filter(|r| matches!(r, Release::Send(..)))
            .count();
        self.counters.coalesced += (sends.len() - released) as u64;
        if let Some(t) = &mut self.trace {
            // What leaves, each send with the digest taken when its step
            // produced it (the log may have moved on since).
            let out: Vec<Emitted<KvOutput>> = release
                .iter()
                .filter_map(|r| match r {
                    Release::Send(to, _, digest) => {
                        digest.map(|digest| Emitted::Send { to: *to, digest })
                    }
                    Release::Reply(_, response, Some((client_id, request_no))) => {
                        client_reply_of(response).map(|reply| Emitted::Reply {
                            client_id: *client_id,
                            request_no: *request_no,
                            reply,
                        })
                    }
                    Release::Reply(_, _, None) => None,
                })
                .collect();
            if !out.is_empty() {
                let sends: Vec<(NodeId, bool)> = recorded
                    .iter()
                    .filter_map(|(e, append)| match e {
                        Emitted::Send { to, .. } => Some((*to, *append)),
                        _ => None,
                    })
                    .collect();
                let mut kept = released_sends(&sends, &self.server.replication()).into_iter();
                let expected = recorded.iter().filter(|(e, _)| match e {
                    Emitted::Send { .. } => kept.next().unwrap_or(true),
                    _ => true,
                });
                let as_recorded = expected.map(|(e, _)| e).eq(out.iter());
                t.writer
                    .write_released(t.seq, (!as_recorded).then_some(&out[..]))
                    .map_err(NodeError::Trace)?;
                t.writer.flush().map_err(NodeError::Trace)?;
            }
        }
        for r in release {
            match r {
                Release::Send(to, message, _) => {
                    self.counters.sent += 1;
                    io.send(to, message);
                }
                Release::Reply(conn, response, _) => io.reply(conn, response),
            }
        }
        Ok(())
    }
}

/// The client reply a response carries, as a trace records it (`None` for
/// a status response).
fn client_reply_of(response: &Response) -> Option<ClientReply<KvOutput>> {
    match response {
        Response::Ok(output) => Some(ClientReply::Ok(output.clone())),
        Response::NotLeader { leader, .. } => Some(ClientReply::NotLeader {
            leader_hint: *leader,
        }),
        Response::Superseded { applied } => Some(ClientReply::Superseded { applied: *applied }),
        Response::Accepted { index, term } => Some(ClientReply::Accepted {
            index: *index,
            term: *term,
        }),
        Response::Status(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
