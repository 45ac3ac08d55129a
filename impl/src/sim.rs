//! A deterministic in-process cluster: the real event-loop code
//! ([`Node::handle`]) over a simulated network, clock and storage, driven by
//! one seed.
//!
//! - **Clock**: virtual; the simulation jumps to the next event (a message
//!   delivery, a timer deadline, a client's retry deadline).
//! - **Network**: every message gets a random delay in
//!   `[delay_min, delay_max]`, is lost with probability `loss`, duplicated with
//!   probability `duplicate` (the copy has its own delay, so messages also
//!   reorder), and dropped if its link is cut by a partition.
//! - **Storage**: raft-node's WAL ([`FileStorage`]: its encoding, checksums
//!   and recovery) over a file in memory ([`SimFile`]) or, with
//!   [`SimConfig::data_dir`], a real file written and fdatasynced in that
//!   directory; a crash keeps what a `kill -9` keeps (every byte written),
//!   and a restart recovers from those bytes as a node recovers from its
//!   disk. [`Sim::crash_before_sync`]
//!   makes a node crash in the middle of its next batch that persists
//!   something, after its steps (and their trace lines) and before the
//!   batch's write reaches the file: nothing of that batch is durable, and
//!   nothing it would have sent leaves. [`Sim::crash_after_sync`] makes it
//!   crash right after that fsync, before the trace's synced marker: the
//!   batch is durable, and still nothing it would have sent leaves. These
//!   are the two windows of a `kill -9` that the recorder reconciles at
//!   restart ([`crate::node`], "The trace across a crash").
//! - **Wire**: every message and every response travels as the transport's
//!   frame ([`crate::wire::encode`], [`crate::wire::read_frame`], within
//!   the default frame limit), so the codec and the frame handling are the
//!   real ones; only sockets are simulated.
//! - **Clients**: sessions that retry on timeout and follow redirects, with
//!   the same request number, like [`crate::client::Client`].
//!
//! Every random choice comes from one [`SplitMix64`] seeded by
//! [`SimConfig::seed`], and every collection iterates in a fixed order, so a
//! run is a function of its seed and schedule.

use crate::config::{Peers, Timing};
use crate::node::{ConnId, Event, Io, Node, NodeOptions, SplitMix64, Time, TraceOut};
use crate::storage::{FileStorage, SimFile, WalFile};
use crate::wire::{self, Frame, Response};
use raft_spec::trace::resume_trace;
use raft_spec::{
    Ack, ClientId, Kv, KvCommand, KvOutput, Message, NodeId, PersistentState, Replication, Role,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Simulation parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Number of nodes (ids 1..=n).
    pub nodes: u64,
    /// Timer durations.
    pub timing: Timing,
    /// How every node paces AppendEntries.
    pub replication: Replication,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Smallest network delay.
    pub delay_min: Duration,
    /// Largest network delay.
    pub delay_max: Duration,
    /// How long a client waits for an answer before trying another node.
    pub client_attempt_timeout: Duration,
    /// Record every node's trace in memory ([`Sim::traces`]).
    pub trace: bool,
    /// Where the nodes' WAL files are (`node-N.wal`), as real files written
    /// and fdatasynced; `None`: in memory ([`SimFile`]). Either way the WAL
    /// code is raft-node's own ([`FileStorage`]) and a crash keeps what a
    /// `kill -9` keeps.
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            nodes: 3,
            timing: Timing::default(),
            replication: Replication::runtime(),
            loss: 0.0,
            duplicate: 0.0,
            delay_min: Duration::from_micros(500),
            delay_max: Duration::from_millis(3),
            client_attempt_timeout: Duration::from_millis(500),
            trace: false,
            data_dir: None,
        }
    }
}

/// A simulated node's storage: the WAL over a [`SimDisk`].
pub type SimStorage = FileStorage<SimDisk>;

/// The file a simulated node's WAL writes: in memory ([`SimFile`]), or a
/// real file in [`SimConfig::data_dir`] (written and fdatasynced as on a
/// node's disk), with the same crash points.
#[derive(Debug)]
pub enum SimDisk {
    /// In memory.
    Memory(SimFile),
    /// A real file, and the crash points the test sets.
    File {
        /// The open file.
        file: std::fs::File,
        /// The next append writes only this many of its bytes, then fails.
        tear_next_append: Option<usize>,
        /// The next sync makes everything durable, then fails.
        fail_after_next_sync: bool,
    },
}

impl SimDisk {
    fn tear_next_append(&mut self, n: Option<usize>) {
        match self {
            SimDisk::Memory(f) => f.tear_next_append = n,
            SimDisk::File {
                tear_next_append, ..
            } => *tear_next_append = n,
        }
    }

    fn fail_after_next_sync(&mut self, on: bool) {
        match self {
            SimDisk::Memory(f) => f.fail_after_next_sync = on,
            SimDisk::File {
                fail_after_next_sync,
                ..
            } => *fail_after_next_sync = on,
        }
    }
}

impl WalFile for SimDisk {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            SimDisk::Memory(f) => f.append(bytes),
            SimDisk::File {
                file,
                tear_next_append,
                ..
            } => match tear_next_append.take() {
                Some(n) => {
                    file.append(&bytes[..n.min(bytes.len())])?;
                    Err(std::io::Error::other("simulated crash during a write"))
                }
                None => file.append(bytes),
            },
        }
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        match self {
            SimDisk::Memory(f) => f.sync_data(),
            SimDisk::File {
                file,
                fail_after_next_sync,
                ..
            } => {
                WalFile::sync_data(file)?;
                if std::mem::take(fail_after_next_sync) {
                    return Err(std::io::Error::other("simulated crash after the fsync"));
                }
                Ok(())
            }
        }
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        match self {
            SimDisk::Memory(f) => f.truncate(len),
            SimDisk::File { file, .. } => WalFile::truncate(file, len),
        }
    }
}

/// What a node that is down has on disk.
enum DownDisk {
    /// The bytes of its file in memory (what a kill left).
    Memory(Vec<u8>),
    /// Its file in the data directory.
    File,
}

enum SimNode {
    Up(Box<Node<SimStorage>>),
    Down(DownDisk),
}

/// `frame` encoded and decoded as the transport does; `None` if the codec
/// refuses it (counted as a loss: a real connection closes on a bad frame).
fn through_the_wire(frame: &Frame) -> Option<Frame> {
    let bytes = wire::encode(frame).ok()?;
    wire::read_frame(&mut &bytes[..], wire::DEFAULT_MAX_FRAME).ok()
}

#[derive(Clone, Debug)]
enum Delivery {
    Peer {
        to: NodeId,
        from: NodeId,
        message: Message<KvCommand>,
    },
    Request {
        to: NodeId,
        conn: ConnId,
        client_id: ClientId,
        request_no: u64,
        command: KvCommand,
    },
    Reply {
        conn: ConnId,
        response: Response,
    },
}

/// One acknowledged client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    /// The client session.
    pub client_id: ClientId,
    /// The request number.
    pub request_no: u64,
    /// The command.
    pub command: KvCommand,
    /// What it returned.
    pub output: KvOutput,
}

struct Attempt {
    conn: ConnId,
    deadline: Time,
}

struct SimClient {
    id: ClientId,
    next_no: u64,
    target: NodeId,
    /// The operation in flight: request number, command, current attempt.
    current: Option<(u64, KvCommand, Attempt)>,
    /// Commands still to issue.
    todo: Vec<KvCommand>,
}

#[derive(Default)]
struct Outbox {
    sent: Vec<(NodeId, Message<KvCommand>)>,
    replies: Vec<(ConnId, Response)>,
}

impl Io for Outbox {
    fn send(&mut self, to: NodeId, message: Message<KvCommand>) {
        self.sent.push((to, message));
    }
    fn reply(&mut self, conn: ConnId, response: Response) {
        self.replies.push((conn, response));
    }
}

/// Counts of what the simulation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages sent by nodes.
    pub sent: u64,
    /// Messages lost (loss, partition, or a down receiver).
    pub dropped: u64,
    /// Messages duplicated.
    pub duplicated: u64,
    /// Crashes (including crashes before a sync).
    pub crashes: u64,
}

/// The simulated cluster.
pub struct Sim {
    config: SimConfig,
    rng: SplitMix64,
    now: Time,
    nodes: BTreeMap<NodeId, SimNode>,
    queue: BTreeMap<(Time, u64), Delivery>,
    seq: u64,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    clients: Vec<SimClient>,
    /// Each attempt's client and request number.
    conns: BTreeMap<ConnId, (usize, u64)>,
    next_conn: ConnId,
    acked: Vec<Acked>,
    stats: SimStats,
    /// Each node's trace, when [`SimConfig::trace`] is on.
    traces: BTreeMap<NodeId, TraceBuffer>,
    #[cfg(feature = "fault-injection")]
    fault: Option<RuntimeFault>,
}

/// An in-memory trace file shared with the node writing it; it survives the
/// node's crashes, as a file would.
#[derive(Clone, Default)]
pub(crate) struct TraceBuffer(pub(crate) Arc<Mutex<Vec<u8>>>);

impl TraceBuffer {
    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Reconciles the trace of node `id` with the state it `recovered`, as
    /// the real runtime does ([`crate::runtime::open_trace`]): cuts the steps
    /// that never became durable; the `seq` to continue after (`None`: a new
    /// trace).
    fn resume(&self, id: NodeId, recovered: &PersistentState<KvCommand>) -> Option<u64> {
        let mut bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete == 0 {
            bytes.clear();
            return None;
        }
        let resume = resume_trace::<_, raft_spec::KvOutput>(
            &format!("sim:{}", id.0),
            &bytes[..complete],
            recovered,
        )
        .unwrap_or_else(|e| panic!("the trace of node {} does not read back: {e}", id.0));
        bytes.truncate(resume.keep);
        Some(resume.last_seq)
    }
}

impl std::io::Write for TraceBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut b = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("trace buffer poisoned"))?;
        b.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A runtime-layer fault, for tests that check that trace replay catches
/// what the shared transition functions cannot prevent (crate feature
/// `fault-injection`, never enabled by the binary).
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeFault {
    /// Storage loses the last synced log entry of a node when it restarts.
    LoseLastEntryOnRestart,
    /// The codec zeroes `leader_commit` in every AppendEntries in transit.
    ZeroLeaderCommit,
    /// Nodes release a batch's sends before its fsync (so a vote reply can
    /// leave before the vote is durable, and a crash then forgets it).
    SendBeforeSync,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Starts a cluster of fresh nodes at time 0.
    pub fn new(config: SimConfig) -> Self {
        let mut sim = Sim {
            rng: SplitMix64::new(config.seed),
            config,
            now: Duration::ZERO,
            nodes: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            clients: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            acked: Vec::new(),
            stats: SimStats::default(),
            traces: BTreeMap::new(),
            #[cfg(feature = "fault-injection")]
            fault: None,
        };
        for i in 1..=sim.config.nodes {
            let disk = match &sim.config.data_dir {
                Some(_) => DownDisk::File,
                None => DownDisk::Memory(Vec::new()),
            };
            sim.nodes.insert(NodeId(i), SimNode::Down(disk));
            sim.restart(NodeId(i));
        }
        sim
    }

    fn peers(&self) -> Peers {
        (1..=self.config.nodes)
            .map(|i| (NodeId(i), format!("sim:{i}")))
            .collect()
    }

    /// The current virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// What the simulation did so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// The node `id`, if it is up.
    pub fn node(&self, id: NodeId) -> Option<&Node<SimStorage>> {
        match self.nodes.get(&id) {
            Some(SimNode::Up(n)) => Some(n),
            _ => None,
        }
    }

    /// The ids of the nodes that are up.
    pub fn up(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n, SimNode::Up(_)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The leader of the highest term among the nodes that are up, if one.
    pub fn leader(&self) -> Option<NodeId> {
        let up: Vec<&Node<SimStorage>> =
            self.up().into_iter().filter_map(|i| self.node(i)).collect();
        let max = up.iter().map(|n| n.server().current_term()).max()?;
        up.iter()
            .find(|n| n.server().role() == Role::Leader && n.server().current_term() == max)
            .map(|n| n.server().id)
    }

    /// Every acknowledged client operation, in acknowledgement order.
    pub fn acked(&self) -> &[Acked] {
        &self.acked
    }

    /// Crashes node `id`: it loses its volatile state and unsynced writes.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(SimNode::Up(_)) = self.nodes.get(&id) {
            if let Some(SimNode::Up(node)) = self.nodes.remove(&id) {
                // A kill: the kernel keeps every byte written; what the WAL
                // buffered in the process is gone.
                let disk = match node.into_storage().into_file() {
                    SimDisk::Memory(f) => DownDisk::Memory(f.after_kill()),
                    SimDisk::File { .. } => DownDisk::File,
                };
                self.nodes.insert(id, SimNode::Down(disk));
                self.stats.crashes += 1;
            }
        }
    }

    /// Makes node `id` crash during its next batch that persists something,
    /// after stepping (and writing the steps' trace lines) and before its
    /// fsync.
    pub fn crash_before_sync(&mut self, id: NodeId) {
        if let Some(SimNode::Up(node)) = self.nodes.get_mut(&id) {
            node.storage_mut().file_mut().tear_next_append(Some(0));
        }
    }

    /// Makes node `id` crash during its next batch that persists something,
    /// right after its fsync: the batch is durable, its trace has no synced
    /// marker, and nothing it would have sent leaves.
    pub fn crash_after_sync(&mut self, id: NodeId) {
        if let Some(SimNode::Up(node)) = self.nodes.get_mut(&id) {
            node.storage_mut().file_mut().fail_after_next_sync(true);
        }
    }

    /// Cancels every [`Sim::crash_before_sync`] and [`Sim::crash_after_sync`]
    /// not yet triggered.
    pub fn cancel_pending_crashes(&mut self) {
        for n in self.nodes.values_mut() {
            if let SimNode::Up(node) = n {
                let file = node.storage_mut().file_mut();
                file.tear_next_append(None);
                file.fail_after_next_sync(false);
            }
        }
    }

    /// Restarts node `id` from what it had synced (no-op if it is up). Its
    /// trace, if any, is continued after the steps that became durable
    /// ([`raft_spec::trace::resume_trace`]).
    ///
    /// # Panics
    /// If the node's own trace does not read back (a recorder bug).
    pub fn restart(&mut self, id: NodeId) {
        let Some(SimNode::Down(_)) = self.nodes.get(&id) else {
            return;
        };
        let Some(SimNode::Down(disk)) = self.nodes.remove(&id) else {
            return;
        };
        let Some((path, file, bytes)) = self.open_disk(id, disk) else {
            return;
        };
        // The simulated disk keeps no synced-length record (0: recovery
        // tells a torn tail by the records alone).
        let (storage, recovered, _) = match FileStorage::recover_from(path, file, &bytes, 0) {
            Ok(opened) => opened,
            Err(_) => {
                // A WAL the node refuses to start from: it stays down (the
                // tests look for the divergence this makes, if any).
                self.nodes.insert(id, SimNode::Down(self.down(bytes)));
                return;
            }
        };
        #[allow(unused_mut)]
        let mut persistent = recovered;
        #[cfg(feature = "fault-injection")]
        if self.fault == Some(RuntimeFault::LoseLastEntryOnRestart) && !persistent.log.is_empty() {
            let last = persistent.log.last_index();
            persistent.log.truncate_from(last);
        }
        let trace = self.config.trace.then(|| {
            let buffer = self.traces.entry(id).or_default().clone();
            let resume_after = buffer.resume(id, &persistent);
            TraceOut {
                out: Box::new(buffer),
                resume_after,
            }
        });
        let options = NodeOptions {
            id,
            peers: self.peers(),
            cluster_id: "sim".into(),
            timing: self.config.timing,
            seed: self.rng.next_u64(),
            trace,
            replication: self.config.replication,
            // The simulated network reorders and duplicates.
            fifo_links: false,
        };
        let mut out = Outbox::default();
        match Node::start(options, persistent, storage, self.now, &mut out) {
            Ok(mut node) => {
                #[cfg(feature = "fault-injection")]
                node.set_send_before_sync(self.fault == Some(RuntimeFault::SendBeforeSync));
                #[cfg(not(feature = "fault-injection"))]
                let _ = &mut node;
                self.nodes.insert(id, SimNode::Up(Box::new(node)));
            }
            Err(_) => {
                // Starting syncs nothing the WAL has not: the disk as it was.
                self.nodes.insert(id, SimNode::Down(self.down(bytes)));
            }
        }
        self.dispatch(id, out);
    }

    /// Node `id`'s WAL file as a restart finds it: its name, the file and
    /// its bytes. `None` (and the node left down) if a real file cannot be
    /// opened or read.
    fn open_disk(
        &mut self,
        id: NodeId,
        disk: DownDisk,
    ) -> Option<(std::path::PathBuf, SimDisk, Vec<u8>)> {
        let disk = match disk {
            // A file the configuration has no directory for: empty.
            DownDisk::File if self.config.data_dir.is_none() => DownDisk::Memory(Vec::new()),
            other => other,
        };
        match (disk, &self.config.data_dir) {
            (DownDisk::Memory(bytes), _) => Some((
                std::path::PathBuf::from(format!("sim-node-{}.wal", id.0)),
                SimDisk::Memory(SimFile::holding(bytes.clone())),
                bytes,
            )),
            (DownDisk::File, None) => None,
            (DownDisk::File, Some(dir)) => {
                let path = dir.join(format!("node-{}.wal", id.0));
                let opened = std::fs::create_dir_all(dir).and_then(|()| {
                    let file = std::fs::OpenOptions::new()
                        .read(true)
                        .append(true)
                        .create(true)
                        .open(&path)?;
                    Ok((file, std::fs::read(&path)?))
                });
                match opened {
                    Ok((file, bytes)) => Some((
                        path,
                        SimDisk::File {
                            file,
                            tear_next_append: None,
                            fail_after_next_sync: false,
                        },
                        bytes,
                    )),
                    Err(_) => {
                        self.nodes.insert(id, SimNode::Down(DownDisk::File));
                        None
                    }
                }
            }
        }
    }

    /// What a node that could not start keeps on disk.
    fn down(&self, bytes: Vec<u8>) -> DownDisk {
        match self.config.data_dir {
            Some(_) => DownDisk::File,
            None => DownDisk::Memory(bytes),
        }
    }

    /// Cuts every link between `group` and the other nodes (both ways).
    pub fn partition(&mut self, group: &[NodeId]) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &a in group {
            for &b in &ids {
                if !group.contains(&b) {
                    self.cut.insert((a, b));
                    self.cut.insert((b, a));
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Sets the loss and duplication probabilities.
    pub fn set_faults(&mut self, loss: f64, duplicate: f64) {
        self.config.loss = loss;
        self.config.duplicate = duplicate;
    }

    /// Adds a client session that issues `commands` one after the other.
    pub fn add_client(&mut self, commands: Vec<KvCommand>) {
        let id = ClientId(self.rng.next_u64());
        let target = NodeId(1 + self.rng.next_u64() % self.config.nodes.max(1));
        let mut todo = commands;
        todo.reverse();
        self.clients.push(SimClient {
            id,
            next_no: 1,
            target,
            current: None,
            todo,
        });
    }

    /// Whether every client has finished its commands.
    pub fn clients_done(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.current.is_none() && c.todo.is_empty())
    }

    /// Runs one command through a fresh client session, for at most
    /// `timeout_ms` of virtual time; its output, or `None` on timeout.
    pub fn call(&mut self, command: KvCommand, timeout_ms: u64) -> Option<KvOutput> {
        let client = self.clients.len();
        self.add_client(vec![command]);
        let end = self.now + Duration::from_millis(timeout_ms);
        let acked_before = self.acked.len();
        while self.now < end {
            if self.acked[acked_before..]
                .iter()
                .any(|a| a.client_id == self.clients[client].id)
            {
                break;
            }
            self.step_until(end);
        }
        self.acked[acked_before..]
            .iter()
            .find(|a| a.client_id == self.clients[client].id)
            .map(|a| a.output.clone())
    }

    /// Runs for `ms` milliseconds of virtual time.
    pub fn run_for_millis(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        while self.now < end {
            self.step_until(end);
        }
    }

    fn schedule(&mut self, at: Time, d: Delivery) {
        self.seq += 1;
        self.queue.insert((at, self.seq), d);
    }

    fn delay(&mut self) -> Duration {
        let lo = self.config.delay_min.as_micros() as u64;
        let hi = self.config.delay_max.as_micros() as u64;
        Duration::from_micros(self.rng.range(lo, hi))
    }

    fn dispatch(&mut self, from: NodeId, out: Outbox) {
        for (to, message) in out.sent {
            let Some(Frame::Raft(message)) = through_the_wire(&Frame::Raft(message)) else {
                self.stats.sent += 1;
                self.stats.dropped += 1;
                continue;
            };
            #[cfg(feature = "fault-injection")]
            let message = match message {
                Message::AppendEntries(mut m)
                    if self.fault == Some(RuntimeFault::ZeroLeaderCommit) =>
                {
                    m.leader_commit = raft_spec::LogIndex(0);
                    Message::AppendEntries(m)
                }
                other => other,
            };
            self.stats.sent += 1;
            if self.cut.contains(&(from, to)) || self.rng.chance(self.config.loss) {
                self.stats.dropped += 1;
                continue;
            }
            let copies = if self.rng.chance(self.config.duplicate) {
                self.stats.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + self.delay();
                let d = Delivery::Peer {
                    to,
                    from,
                    message: message.clone(),
                };
                self.schedule(at, d);
            }
        }
        for (conn, response) in out.replies {
            let Some(Frame::Response(response)) = through_the_wire(&Frame::Response(response))
            else {
                continue;
            };
            let at = self.now + self.delay();
            self.schedule(at, Delivery::Reply { conn, response });
        }
    }

    fn client_deadline(&self) -> Option<Time> {
        self.clients
            .iter()
            .filter_map(|c| c.current.as_ref().map(|(_, _, a)| a.deadline))
            .min()
    }

    /// Advances to the next event (not past `end`) and handles everything
    /// due then.
    fn step_until(&mut self, end: Time) {
        self.start_idle_clients();
        let mut next = end;
        if let Some((&(t, _), _)) = self.queue.iter().next() {
            next = next.min(t);
        }
        for n in self.nodes.values() {
            if let SimNode::Up(node) = n {
                if let Some(d) = node.next_deadline() {
                    next = next.min(d);
                }
            }
        }
        if let Some(d) = self.client_deadline() {
            next = next.min(d);
        }
        self.now = self.now.max(next);
        let now = self.now;

        // Everything due now, grouped per node in queue order.
        let mut per_node: BTreeMap<NodeId, Vec<Event>> = BTreeMap::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Delivery::Peer { to, from, message } => {
                    per_node
                        .entry(to)
                        .or_default()
                        .push(Event::Peer { from, message });
                }
                Delivery::Request {
                    to,
                    conn,
                    client_id,
                    request_no,
                    command,
                } => per_node.entry(to).or_default().push(Event::Request {
                    conn,
                    client_id,
                    request_no,
                    command,
                    ack: Ack::Applied,
                    read: None,
                }),
                Delivery::Reply { conn, response } => self.client_reply(conn, response),
            }
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let events = per_node.remove(&id).unwrap_or_default();
            let due = match self.nodes.get(&id) {
                Some(SimNode::Up(node)) => node.next_deadline().is_some_and(|d| d <= now),
                _ => {
                    self.stats.dropped += events.len() as u64;
                    continue;
                }
            };
            if events.is_empty() && !due {
                continue;
            }
            let mut out = Outbox::default();
            let result = match self.nodes.get_mut(&id) {
                Some(SimNode::Up(node)) => node.handle(now, events, &mut out),
                _ => continue,
            };
            // Whatever the node released is on the network, even if the batch
            // then failed (a failed sync is a crash before the fsync; the
            // event loop releases nothing of the batch then).
            self.dispatch(id, out);
            if result.is_err() {
                self.crash(id);
            }
        }
        self.client_timeouts();
    }

    fn start_idle_clients(&mut self) {
        for i in 0..self.clients.len() {
            if self.clients[i].current.is_none() {
                if let Some(cmd) = self.clients[i].todo.pop() {
                    let no = self.clients[i].next_no;
                    self.clients[i].next_no += 1;
                    self.send_attempt(i, no, cmd);
                }
            }
        }
    }

    fn send_attempt(&mut self, client: usize, request_no: u64, command: KvCommand) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(conn, (client, request_no));
        let deadline = self.now + self.config.client_attempt_timeout;
        let to = self.clients[client].target;
        let client_id = self.clients[client].id;
        let at = self.now + self.delay();
        let frame = Frame::Request {
            client_id,
            request_no,
            command: command.clone(),
            ack: Ack::Applied,
            read: None,
        };
        // The client's frame, as the node's connection reads it.
        if let Some(Frame::Request {
            client_id,
            request_no,
            command,
            ..
        }) = through_the_wire(&frame)
        {
            self.schedule(
                at,
                Delivery::Request {
                    to,
                    conn,
                    client_id,
                    request_no,
                    command,
                },
            );
        }
        self.clients[client].current = Some((request_no, command, Attempt { conn, deadline }));
    }

    fn client_reply(&mut self, conn: ConnId, response: Response) {
        let Some(&(i, for_no)) = self.conns.get(&conn) else {
            return;
        };
        // Only an answer about the request in flight counts (an answer to an
        // earlier attempt of the same request is as good as the latest).
        let Some((no, cmd, attempt)) = self.clients[i].current.take() else {
            return;
        };
        if for_no != no || (attempt.conn != conn && !matches!(response, Response::Ok(_))) {
            self.clients[i].current = Some((no, cmd, attempt));
            return;
        }
        match response {
            Response::Ok(output) => {
                self.acked.push(Acked {
                    client_id: self.clients[i].id,
                    request_no: no,
                    command: cmd,
                    output,
                });
            }
            Response::NotLeader { leader, .. } => {
                let n = self.config.nodes.max(1);
                let c = &mut self.clients[i];
                c.target = match leader {
                    Some(l) if l != c.target => l,
                    _ => NodeId(c.target.0 % n + 1),
                };
                // Retry after a short pause, as the real client does.
                let pause = Duration::from_millis(20);
                self.clients[i].current = Some((
                    no,
                    cmd,
                    Attempt {
                        conn: 0,
                        deadline: self.now + pause,
                    },
                ));
            }
            // A request older than its session's latest applied one: its
            // answer is gone; the client moves on (the harness's clients
            // number their requests in order, so this does not happen). The
            // harness's clients ask for the paper's acknowledgement, so
            // they are never answered before the write is applied.
            Response::Status(_) | Response::Superseded { .. } | Response::Accepted { .. } => {}
        }
    }

    fn client_timeouts(&mut self) {
        let now = self.now;
        for i in 0..self.clients.len() {
            let expired = matches!(&self.clients[i].current, Some((_, _, a)) if a.deadline <= now);
            if !expired {
                continue;
            }
            if let Some((no, cmd, attempt)) = self.clients[i].current.take() {
                let n = self.config.nodes.max(1);
                if attempt.conn != 0 {
                    // No answer in time: try the next node.
                    let c = &mut self.clients[i];
                    c.target = NodeId(c.target.0 % n + 1);
                }
                self.send_attempt(i, no, cmd);
            }
        }
    }

    /// Each node's trace so far (empty unless [`SimConfig::trace`]): the
    /// NDJSON of [`raft_spec::trace`], as the node wrote it.
    pub fn traces(&self) -> BTreeMap<NodeId, Vec<u8>> {
        self.traces.iter().map(|(id, b)| (*id, b.bytes())).collect()
    }

    /// Switches a runtime-layer fault on, for every node from now on (a
    /// node's own fault, [`RuntimeFault::SendBeforeSync`], applies from its
    /// next start, or at once to the nodes that are up).
    #[cfg(feature = "fault-injection")]
    pub fn inject(&mut self, fault: RuntimeFault) {
        self.fault = Some(fault);
        for n in self.nodes.values_mut() {
            if let SimNode::Up(node) = n {
                node.set_send_before_sync(fault == RuntimeFault::SendBeforeSync);
            }
        }
    }

    /// The state machines of the nodes that are up.
    pub fn state_machines(&self) -> BTreeMap<NodeId, Kv> {
        self.up()
            .into_iter()
            .filter_map(|id| {
                self.node(id)
                    .map(|n| (id, n.server().volatile.state_machine.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
