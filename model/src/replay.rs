//! Trace replay: checks an execution of `raft-node`, recorded as one trace per
//! node ([`raft_spec::trace`]), step by step against the Stateright model.
//!
//! ```text
//!  trace of node 1 ─┐                     ┌─► the model's action (Deliver / Timeout /
//!  trace of node 2 ─┼─► merge (causal) ───┤     Crash + Recover; client requests from the
//!  trace of node 3 ─┘   one step at a time│     environment), enabled? then carried out
//!                                         ├─► the server's state == the recorded digest and fields
//!                                         └─► IncrementalSafety (= record_step + violated_properties)
//!  on a divergence, or with --explore: a second pass up to the last agreed
//!  state ─► ContextModel (the model from K steps before it) + Explorer path
//! ```
//!
//! # The model replayed against
//!
//! A Stateright [`ActorModel`] of [`ReplayActor`]s: one server actor per node
//! of the trace header, running the runtime's state machine ([`Kv`]) through
//! a server adapter ([`crate::actors::step_server`],
//! [`crate::actors::carry_out`]), on the model's default network (unordered,
//! duplicating: a message may be delivered late, more than once, or never).
//! A server's Stateright actor index is its node id, so the ids inside the
//! messages and the digest are the runtime's; indices that are not a node's
//! hold an inert [`ReplayActor::Environment`]. Every server is built with
//! the cap on the entries one AppendEntries carries that the trace headers
//! record ([`Header::max_append_entries`](raft_spec::trace::Header::max_append_entries),
//! [`Server::with_max_append_entries`]), at the start and at every recovery:
//! the cap is configuration, not persisted state. Traces that disagree on
//! it are refused as bad input. Replay uses this model's
//! actions, its actors and the model's server adapter, not a copy of the
//! rules: the rules are those of `raft-spec`, which the runtime runs too.
//! A delivery or a timeout is carried out in place, doing what the model's
//! `next_state` does (see "Cost"); a restart runs `next_state` itself.
//!
//! Each recorded step becomes the model's action, which must be enabled in
//! the current state:
//!
//! | recorded input                 | model action                                  | enabled when                       |
//! |--------------------------------|-----------------------------------------------|------------------------------------|
//! | `Message { from, message }`    | `Deliver { src: from, dst: server, message }` | that message is in flight          |
//! | `ElectionTimeout`              | `Timeout(server, Election)`                   | the election timer is set          |
//! | `HeartbeatTimeout`             | `Timeout(server, Heartbeat)`                  | the heartbeat timer is set         |
//! | `ClientRequest { .. }`         | the environment sends the request, then `Deliver` | always (an action of the environment) |
//! | `Restart` (first of the trace) | none: the server as in the initial state      | first step of every trace          |
//! | `Restart` (later)              | `Crash(server)`, then `Recover(server)`       | always                             |
//!
//! After the step, the server's state must equal the recorded one: the
//! [`state_digest`](raft_spec::trace::state_digest) and every readable field
//! (term, role, voted_for, commit_index, last_applied, last_log_index,
//! last_log_term). Then the step is recorded in the ghost [`History`] and
//! the Figure 3 properties plus the auxiliary invariants are evaluated over
//! every server, by [`IncrementalSafety`]: it gives what
//! `History::record_step` then [`safety::violated_properties`] (the
//! checker's functions) give, looking only at what the step changed (a
//! proptest in raft-spec checks the two agree after every step of random
//! histories).
//!
//! # Ordering rule
//!
//! Each trace holds the steps of one node in the order it took them; the
//! traces carry no clock. The replayer merges them into one order consistent
//! with causality: **a step that receives a message is replayed only once the
//! step of the sender that sent that message has been replayed** (the
//! message is then in flight in the model); every other step (a timer, a
//! client request, a restart) depends on its own node's earlier steps only.
//! Concretely, the replayer goes round the traces in header order, and
//! from each replays steps in file order until one receives a message not in
//! flight yet; it stops with a divergence when a full round replays nothing.
//! This never blocks an execution that some other order would replay: a
//! node's steps change only its own state and *add* messages to the network
//! (a duplicating network never takes one away), so a step that is enabled
//! stays enabled whatever other nodes do. And any order it picks is an
//! execution of the model, so a property violated on it is a real one.
//!
//! Messages are identified by content (sender, receiver, message): two
//! identical messages are interchangeable.
//!
//! # Cost
//!
//! Replay is linear in the trace: each step costs time proportional to what
//! it changes (the message, the entries written, the entries newly
//! applied), not to the logs, and memory holds the model state (the servers,
//! their storage, the messages in flight), not the trace, which is read as a
//! stream (one pending step per file). Concretely:
//!
//! - the stepped server is stepped in place (its `Arc` is not shared), not
//!   cloned as the model's adapter does for the checker;
//! - its storage is brought up to date with the step's
//!   [`raft_spec::Persist`], as a disk would be, instead of being replaced by
//!   a copy of the whole persistent state (the same state: every change to
//!   the persistent state is persisted in its step, the spec's contract);
//! - the chained log digest ([`LogDigest`]) is updated from the step's
//!   [`LogWrite`](raft_spec::LogWrite), and whether the step rewrote an entry (Leader
//!   Append-Only, the history's "conflict overwritten") is read from the
//!   stored log at the written indices only;
//! - the properties are [`IncrementalSafety`]'s.
//!
//! A restart runs the model's `next_state` and compares the reloaded log
//! with the log before: time proportional to the log, once per restart (the
//! runtime reloads its log too). [`ReplayOptions::cross_check`] (every test
//! of `tests/replay.rs` uses it) also runs each step through the model's
//! `next_state` and the full predicates and stops if either disagrees.
//! Responses that can never matter again ([`raft_spec::ignores_forever`],
//! the checker's own reduction) are forgotten whenever the network has
//! doubled since the last time. Measured (3 nodes, the median of 3 runs; see
//! the README): about 200,000 to 400,000 steps/s for idle and write-heavy
//! traces alike, from 10 k to 1 M steps.
//!
//! # The Explorer: `raft-model replay --explore`
//!
//! A path from the initial state of a long trace would be useless, and the
//! replay takes steps the Explorer could not follow (a client request is
//! sent and delivered at once; dead responses are forgotten). So the
//! Explorer serves a [`ContextModel`]: the replay model whose initial state
//! is the replayed state `K` steps (`--context`, default
//! [`DEFAULT_CONTEXT`]) before the last state the traces and the model
//! agree on (the end of a clean replay, or the state before the
//! divergence). The client requests of those `K` steps (and of the
//! diverging step) are in flight in that initial state, sent by the
//! environment, so delivering one is an ordinary action; crashes and
//! recoveries are allowed; nothing is forgotten. The path is the `K` steps'
//! actions, except those of steps that change nothing (Stateright has no
//! transition for them: a response the leader already counted, a late dead
//! response),
//! encoded as Stateright's Explorer does (`#/steps/0/i1/i2/...`, each action
//! by its index among those offered). The state at the end of the path is
//! the replayed one (its network may hold more messages: nothing is
//! forgotten). Finding that state means replaying the traces a second time
//! up to it ([`context_files`]): [`replay_files`] does it on a divergence,
//! to print the URL and the command that serves it, and says whether the
//! diverging step's action is offered there (a state or property mismatch)
//! or not (a step the model does not allow).

use crate::actors::{
    actor_id, apply_commands, carry_out, node_id, step_server, RaftMsg, ServerAdapter,
};
use raft_spec::safety::{self, Before, History, IncrementalSafety, ServerView};
use raft_spec::trace::{Header, LogDigest, Step, TraceError, TraceInput, TraceReader};
use raft_spec::{
    ClientId, ClientReply, Input, Kv, KvCommand, KvOutput, LogIndex, Message, NodeId, Output,
    PersistentState, Role, Server, Term, Timer,
};
use stateright::actor::{
    Actor, ActorModel, ActorModelAction, ActorModelState, Envelope, Id, Network, Out,
};
use stateright::{Model, Path as ModelPath};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::io::BufRead;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest node id the replayer accepts (actor indices are node ids).
pub const MAX_NODE_ID: u64 = 1024;

/// How many replayed steps a divergence report shows before the diverging one.
const RECENT: usize = 5;

/// An actor of the replay model.
#[derive(Clone, Debug)]
pub enum ReplayActor {
    /// A server of the cluster `cluster` (every node id, this one included).
    Server {
        /// Every server of the cluster.
        cluster: Vec<NodeId>,
        /// The most entries one AppendEntries carries (`None`: no cap),
        /// applied to the server at every start and recovery.
        max_append_entries: Option<NonZeroUsize>,
    },
    /// Not a server: the environment (clients), or an unused actor index.
    Environment,
}

/// A message of the replay model. Its `Debug` is one line (the Explorer
/// names actions with it), e.g. `AppendEntries t1 from n1 prev 342@1 1
/// entries commit 342`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReplayMsg {
    /// A Raft RPC or response between servers.
    Raft(RaftMsg<KvCommand>),
    /// A client request, sent by the environment.
    Request {
        /// The client session.
        client_id: ClientId,
        /// The client's request number.
        request_no: u64,
        /// The command.
        command: KvCommand,
    },
}

impl ReplayMsg {
    /// The server input that delivering this message from `src` is.
    fn into_input(self, src: Id) -> Input<KvCommand> {
        match self {
            ReplayMsg::Raft(m) => Input::Message {
                from: node_id(src),
                message: m.into_inner(),
            },
            ReplayMsg::Request {
                client_id,
                request_no,
                command,
            } => Input::ClientRequest {
                client_id,
                request_no,
                command,
            },
        }
    }
}

impl fmt::Debug for ReplayMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Entries are counted, not listed: a replayed log can be long.
            ReplayMsg::Raft(m) => f.write_str(&crate::render::raft_message_with(m, |e, _| {
                format!("{} entries", e.len())
            })),
            ReplayMsg::Request {
                client_id,
                request_no,
                command,
            } => write!(f, "ClientRequest {client_id} #{request_no} {command:?}"),
        }
    }
}

/// One line about a replayed server, e.g. `n1 Leader t1 voted n1 log 343
/// (last term 1) commit 342 applied 342`.
fn server_line(s: &Server<Kv>) -> String {
    format!(
        "{} {:?} t{} voted {} log {} (last term {}) commit {} applied {}",
        s.id,
        s.role(),
        s.current_term().0,
        s.persistent
            .voted_for
            .map_or_else(|| "-".to_string(), |n| n.to_string()),
        s.log().len(),
        s.log().last_term().0,
        s.volatile.commit_index.0,
        s.volatile.last_applied.0
    )
}

/// The state of a replay actor.
// Actor states live behind an `Arc` in the model state: the size difference
// costs nothing per clone.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReplayState {
    /// A server.
    Server(Server<Kv>),
    /// The environment (no state).
    Environment,
}

/// What a replayed server keeps across a crash (shared, so that cloning the
/// model state does not copy logs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KvStored(pub Arc<PersistentState<KvCommand>>);

impl ServerAdapter for ReplayActor {
    type Sm = Kv;

    fn raft_message(message: Message<KvCommand>) -> ReplayMsg {
        ReplayMsg::Raft(RaftMsg::new(message))
    }

    /// Client replies leave the model: the environment is not checked (the
    /// runtime answers clients outside the trace).
    fn client_reply(
        _client_id: ClientId,
        _request_no: u64,
        _reply: ClientReply<KvOutput>,
    ) -> Option<(Id, ReplayMsg)> {
        None
    }

    fn stored(persistent: &PersistentState<KvCommand>) -> KvStored {
        KvStored(Arc::new(persistent.clone()))
    }
}

impl Actor for ReplayActor {
    type Msg = ReplayMsg;
    type Timer = Timer;
    type State = ReplayState;
    type Storage = KvStored;
    type Random = ();

    fn on_start(&self, id: Id, storage: &Option<KvStored>, o: &mut Out<Self>) -> ReplayState {
        match self {
            ReplayActor::Server {
                cluster,
                max_append_entries,
            } => {
                let persistent = storage
                    .as_ref()
                    .map(|s| PersistentState::clone(&s.0))
                    .unwrap_or_default();
                let (server, outputs) = Server::restart(node_id(id), cluster.clone(), persistent);
                // Configuration, not state: applied again at every recovery.
                let server = server.with_max_append_entries(*max_append_entries);
                carry_out(&server, outputs, o);
                ReplayState::Server(server)
            }
            ReplayActor::Environment => ReplayState::Environment,
        }
    }

    fn on_msg(
        &self,
        _id: Id,
        state: &mut Cow<ReplayState>,
        src: Id,
        msg: ReplayMsg,
        o: &mut Out<Self>,
    ) {
        let ReplayState::Server(current) = state.as_ref() else {
            return;
        };
        if let Some(next) = step_server(current, msg.into_input(src), o) {
            *state = Cow::Owned(ReplayState::Server(next));
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<ReplayState>, timer: &Timer, o: &mut Out<Self>) {
        let ReplayState::Server(current) = state.as_ref() else {
            return;
        };
        if let Some(next) = step_server(current, Input::timeout(*timer), o) {
            *state = Cow::Owned(ReplayState::Server(next));
        }
    }

    fn name(&self) -> String {
        match self {
            ReplayActor::Server { .. } => "server".to_string(),
            ReplayActor::Environment => "environment".to_string(),
        }
    }
}

/// The replay model: Stateright's actor model of the cluster's servers.
pub type ReplayModel = ActorModel<ReplayActor, (), ()>;
/// A state of the replay model.
pub type ReplayModelState = ActorModelState<ReplayActor, ()>;
/// An action of the replay model.
pub type ReplayAction = ActorModelAction<ReplayMsg, Timer, ()>;

/// Builds the replay model of a cluster (ids at most [`MAX_NODE_ID`]) whose
/// servers send at most `max_append_entries` entries in one AppendEntries
/// ([`Server::with_max_append_entries`]; `None`: no cap), as the trace
/// headers record.
pub fn replay_model(servers: &[NodeId], max_append_entries: Option<NonZeroUsize>) -> ReplayModel {
    let top = servers.iter().map(|n| n.0).max().unwrap_or(0);
    let actors = (0..=top + 1).map(|i| {
        if servers.contains(&NodeId(i)) {
            ReplayActor::Server {
                cluster: servers.to_vec(),
                max_append_entries,
            }
        } else {
            ReplayActor::Environment
        }
    });
    ActorModel::new((), ())
        .actors(actors)
        .init_network(Network::new_unordered_duplicating([]))
}

/// Unreadable or inconsistent input: exit status 2. Every variant names the
/// file, and the line where it applies.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The trace could not be read or parsed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// No trace was given.
    #[error("no trace to replay")]
    NoTrace,
    /// The header does not fit with the other traces or this replayer.
    #[error("{file}:1: {message}")]
    Header {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A step line is well-formed JSON but cannot belong to this trace.
    #[error("{file}:{line}: {message}")]
    Step {
        /// The file.
        file: String,
        /// The line.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// What disagreed at the first divergence. Each variant names the rule of the
/// replay that the step broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DivergenceKind {
    /// The step's input is not an action the model allows in its current
    /// state (a message that is not in flight, a timer that is not set).
    NotEnabled {
        /// Why.
        reason: String,
    },
    /// The server's state after the step differs from the recorded one:
    /// `(field, recorded, model)` for each field that differs.
    StateMismatch {
        /// The fields that differ.
        fields: Vec<(String, String, String)>,
    },
    /// A safety property fails after the step.
    PropertyViolated {
        /// The names of the properties that fail.
        properties: Vec<&'static str>,
    },
    /// The file's step numbers are not consecutive: a step is missing, or
    /// steps were reordered.
    OutOfSequence {
        /// The step number expected.
        expected: u64,
        /// The step number found.
        found: u64,
    },
    /// The first step of a trace is not the node's start.
    NotStarted,
    /// The in-place replay and the model's `next_state` or the full
    /// property predicates disagree: a bug of the replayer, reported only
    /// with [`ReplayOptions::cross_check`].
    Internal {
        /// What differs.
        what: String,
    },
}

/// The first step at which the trace and the model disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The step's number in the replayed order (1-based).
    pub step: u64,
    /// The trace file.
    pub file: String,
    /// The step's line in the file.
    pub line: u64,
    /// The server that took the step.
    pub server: NodeId,
    /// The step's input, as recorded (JSON).
    pub input: String,
    /// The model action the step maps to, enabled or not (none for a
    /// trace's first step, which is the initial state).
    pub action: Option<ReplayAction>,
    /// What disagreed.
    pub kind: DivergenceKind,
    /// The last steps replayed before it, oldest first.
    pub recent: Vec<String>,
    /// Other traces' next steps that could not be replayed either (when no
    /// trace could go on).
    pub also_blocked: Vec<String>,
    /// Where the Explorer opens the model at the last state both agreed on
    /// (filled by [`replay_files`], which can read the traces again).
    pub explorer: Option<ExplorerPath>,
}

/// The Explorer path of a replayed state, served by
/// `raft-model replay --explore` ([`Context`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExplorerPath {
    /// The replayed steps the path ends after.
    pub end: u64,
    /// The replayed steps its model starts after (`end` minus the context).
    pub start: u64,
    /// The path: the URL fragment after `#/steps/`.
    pub path: String,
    /// The command that serves it.
    pub command: String,
    /// The diverging step's model action as the Explorer names it, and
    /// whether the model offers it at the end of the path.
    pub next: Option<(String, bool)>,
}

impl ExplorerPath {
    /// The URL under `base` (e.g. `http://127.0.0.1:3000`).
    pub fn url(&self, base: &str) -> String {
        format!("{}/#/steps/{}", base.trim_end_matches('/'), self.path)
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "DIVERGENCE at step {} ({}:{}), server {}",
            self.step, self.file, self.line, self.server.0
        )?;
        writeln!(f, "  input: {}", self.input)?;
        match &self.kind {
            DivergenceKind::NotEnabled { reason } => {
                writeln!(f, "  not an action the model allows here: {reason}")?;
            }
            DivergenceKind::StateMismatch { fields } => {
                writeln!(f, "  the server's state after the step differs:")?;
                writeln!(f, "    {:<16} {:<20} {:<20}", "field", "recorded", "model")?;
                for (name, recorded, model) in fields {
                    writeln!(f, "    {name:<16} {recorded:<20} {model:<20}")?;
                }
            }
            DivergenceKind::PropertyViolated { properties } => {
                writeln!(f, "  safety property violated: {}", properties.join(", "))?;
            }
            DivergenceKind::OutOfSequence { expected, found } => {
                writeln!(
                    f,
                    "  step number {found}, expected {expected}: a step is missing or steps are out of order"
                )?;
            }
            DivergenceKind::NotStarted => {
                writeln!(
                    f,
                    "  the first step of a trace must be \"Restart\" (the node's start)"
                )?;
            }
            DivergenceKind::Internal { what } => {
                writeln!(f, "  internal: {what}")?;
            }
        }
        if !self.also_blocked.is_empty() {
            writeln!(f, "  no other trace can go on either:")?;
            for b in &self.also_blocked {
                writeln!(f, "    {b}")?;
            }
        }
        if !self.recent.is_empty() {
            writeln!(f, "  last steps replayed:")?;
            for r in &self.recent {
                writeln!(f, "    {r}")?;
            }
        }
        if let Some(e) = &self.explorer {
            writeln!(
                f,
                "  the model at the last state both agreed on (after step {}), in the Explorer:",
                e.end
            )?;
            writeln!(f, "    {}", e.url(DEFAULT_EXPLORER))?;
            writeln!(f, "    served by: {}", e.command)?;
            if let Some((action, offered)) = &e.next {
                writeln!(
                    f,
                    "    the diverging step is the action \"{action}\", which the model {} there",
                    if *offered { "offers" } else { "does not offer" }
                )?;
            }
        }
        Ok(())
    }
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Unreadable or inconsistent input (exit status 2).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The trace and the model disagree (exit status 1).
    #[error("{0}")]
    Divergence(Box<Divergence>),
}

impl From<TraceError> for ReplayError {
    fn from(e: TraceError) -> Self {
        ReplayError::Input(InputError::Trace(e))
    }
}

impl ReplayError {
    /// The process exit status: 1 for a divergence, 2 for bad input.
    pub fn exit_code(&self) -> u8 {
        match self {
            ReplayError::Input(_) => 2,
            ReplayError::Divergence(_) => 1,
        }
    }
}

/// A clean replay's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplaySummary {
    /// Steps replayed.
    pub steps: u64,
    /// Servers (traces).
    pub servers: usize,
    /// The highest term reached.
    pub max_term: Term,
    /// The highest commit index reached (entries committed).
    pub committed: LogIndex,
    /// Restarts after the first start.
    pub restarts: u64,
    /// Wall-clock time of the replay.
    pub elapsed: Duration,
}

impl ReplaySummary {
    /// Replay throughput.
    pub fn steps_per_sec(&self) -> f64 {
        self.steps as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OK: {} steps of {} servers replayed clean (terms up to {}, {} entries committed, {} restarts) in {:.3} s, {:.0} steps/s",
            self.steps,
            self.servers,
            self.max_term.0,
            self.committed.0,
            self.restarts,
            self.elapsed.as_secs_f64(),
            self.steps_per_sec()
        )
    }
}

/// One trace being replayed: its reader and its next step.
struct Trace {
    reader: TraceReader<Box<dyn BufRead>>,
    name: Arc<str>,
    server: NodeId,
    next: Option<(Step<KvCommand>, u64)>,
    done: bool,
    last_seq: u64,
}

impl Trace {
    fn file(&self) -> &str {
        self.reader.file()
    }

    /// The next step (read if needed), `None` at the end of the file.
    fn peek(&mut self) -> Result<Option<&(Step<KvCommand>, u64)>, InputError> {
        if self.next.is_none() && !self.done {
            match self.reader.next_step::<KvCommand>() {
                None => self.done = true,
                Some(step) => {
                    let step = step?;
                    let line = self.reader.line();
                    if step.server != self.server {
                        return Err(InputError::Step {
                            file: self.file().to_string(),
                            line,
                            message: format!(
                                "a step of server {} in the trace recorded by server {}",
                                step.server.0, self.server.0
                            ),
                        });
                    }
                    self.next = Some((step, line));
                }
            }
        }
        Ok(self.next.as_ref())
    }
}

/// Where `raft-model replay --explore` serves by default.
pub const DEFAULT_EXPLORER: &str = "http://127.0.0.1:3000";

/// How many replayed steps before the state it opens at the Explorer's
/// model starts, unless `--context` says otherwise.
pub const DEFAULT_CONTEXT: u64 = 10;

/// How a replay runs.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// How many replayed steps before the state the Explorer opens at its
    /// model starts ([`DEFAULT_CONTEXT`]).
    pub context: u64,
    /// Also run every step through the model's `next_state` and the full
    /// property predicates ([`History::record_step`],
    /// [`safety::violated_properties`]), and stop with
    /// [`DivergenceKind::Internal`] if they disagree with the in-place step
    /// or the incremental properties. For tests: each step then costs time
    /// proportional to the whole state.
    pub cross_check: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            context: DEFAULT_CONTEXT,
            cross_check: false,
        }
    }
}

/// Traces as `(name, reader)` pairs.
type Inputs = Vec<(String, Box<dyn BufRead>)>;

fn open_files<P: AsRef<Path>>(paths: &[P]) -> Result<Inputs, ReplayError> {
    let mut inputs: Inputs = Vec::new();
    for p in paths {
        let path = p.as_ref();
        let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
            file: path.display().to_string(),
            line: 0,
            source,
        })?;
        inputs.push((
            path.display().to_string(),
            Box::new(std::io::BufReader::new(file)),
        ));
    }
    Ok(inputs)
}

/// Replays the trace files at `paths` (one per node). A divergence comes
/// with the Explorer path of the last state both agreed on
/// ([`Divergence::explorer`], [`DEFAULT_CONTEXT`] steps of context), found
/// by replaying the files a second time up to it.
pub fn replay_files<P: AsRef<Path>>(paths: &[P]) -> Result<ReplaySummary, ReplayError> {
    replay_files_with(paths, &ReplayOptions::default())
}

/// [`replay_files`] with options.
pub fn replay_files_with<P: AsRef<Path>>(
    paths: &[P],
    options: &ReplayOptions,
) -> Result<ReplaySummary, ReplayError> {
    match replay_with(open_files(paths)?, options) {
        Err(ReplayError::Divergence(mut d)) => {
            let end = d.step.saturating_sub(1);
            if let Ok(ctx) = context_files(paths, end, options.context, d.action.clone()) {
                d.explorer = Some(ctx.explorer_path(paths));
            }
            Err(ReplayError::Divergence(d))
        }
        other => other,
    }
}

/// What `raft-model replay --explore` serves: the replay's outcome, and
/// the Explorer window of `options.context` steps that ends at the last
/// state the traces and the model agreed on (the end of a clean replay, or
/// the state before the divergence, whose [`Divergence::explorer`] is
/// filled). Bad input is the error.
pub fn replay_for_explorer<P: AsRef<Path>>(
    paths: &[P],
    options: &ReplayOptions,
) -> Result<(Result<ReplaySummary, Box<Divergence>>, Context), ReplayError> {
    match replay_with(open_files(paths)?, options) {
        Ok(summary) => {
            let ctx = context_files(paths, summary.steps, options.context, None)?;
            Ok((Ok(summary), ctx))
        }
        Err(ReplayError::Divergence(mut d)) => {
            let end = d.step.saturating_sub(1);
            let ctx = context_files(paths, end, options.context, d.action.clone())?;
            d.explorer = Some(ctx.explorer_path(paths));
            Ok((Err(d), ctx))
        }
        Err(e) => Err(e),
    }
}

/// Replays traces given as `(name, reader)` pairs, one per node.
pub fn replay(inputs: Vec<(String, Box<dyn BufRead>)>) -> Result<ReplaySummary, ReplayError> {
    replay_with(inputs, &ReplayOptions::default())
}

/// [`replay`] with options.
pub fn replay_with(
    inputs: Vec<(String, Box<dyn BufRead>)>,
    options: &ReplayOptions,
) -> Result<ReplaySummary, ReplayError> {
    run(inputs, options, None).map(|(summary, _)| summary)
}

/// Replays, up to `window.1` steps if a window is given (recording the
/// steps from `window.0` on for the Explorer).
fn run(
    inputs: Vec<(String, Box<dyn BufRead>)>,
    options: &ReplayOptions,
    window: Option<(u64, u64)>,
) -> Result<(ReplaySummary, Replayer), ReplayError> {
    let started = Instant::now();
    let (mut traces, max_append_entries) = open(inputs)?;
    let servers: Vec<NodeId> = traces.iter().map(|t| t.server).collect();
    let mut replayer = Replayer::new(&servers, max_append_entries, options);
    let stop = window.map(|(_, end)| end);
    replayer.capture = window.map(|(start, end)| Capture {
        start,
        end,
        init: None,
        actions: Vec::new(),
    });
    'replay: loop {
        let mut progressed = false;
        let mut blocked: Vec<(usize, Block)> = Vec::new();
        let mut all_done = true;
        for (t, trace) in traces.iter_mut().enumerate() {
            loop {
                if stop.is_some_and(|s| replayer.steps >= s) {
                    break 'replay;
                }
                trace.peek()?;
                let Some((step, line)) = trace.next.take() else {
                    break;
                };
                all_done = false;
                match replayer.step(trace, line, &step) {
                    Ok(Outcome::Replayed) => {
                        trace.last_seq = step.seq;
                        progressed = true;
                        replayer.remember(&trace.name, line, step);
                    }
                    Ok(Outcome::Blocked(block)) => {
                        trace.next = Some((step, line));
                        blocked.push((t, block));
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if all_done {
            break;
        }
        if !progressed {
            return Err(replayer.stuck(&mut traces, blocked));
        }
    }
    if let Some(c) = &mut replayer.capture {
        if c.init.is_none() && replayer.steps <= c.start {
            c.init = Some(replayer.state.clone());
        }
    }
    let mut summary = replayer.summary(servers.len());
    summary.elapsed = started.elapsed();
    Ok((summary, replayer))
}

/// The replay model started at a replayed state: what
/// `raft-model replay --explore` serves.
///
/// Its initial state is the replay's state after some step, with the client
/// requests that the following recorded steps take already sent by the
/// environment (in flight, so that delivering one is an ordinary action);
/// its actions and transitions are the replay model's, with crashes allowed
/// and nothing forgotten, so that each recorded step is an action the
/// Explorer offers.
#[derive(Clone)]
pub struct ContextModel {
    model: ReplayModel,
    init: ContextState,
}

/// A state of the [`ContextModel`]: a replay model state, shown in the
/// Explorer in a few lines (each server on one line, the timers, the number
/// of messages in flight; the messages themselves are the delivery actions
/// offered).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ContextState(pub ReplayModelState);

impl fmt::Debug for ContextState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.0;
        for (i, a) in s.actor_states.iter().enumerate() {
            let ReplayState::Server(server) = &**a else {
                continue;
            };
            let timers: Vec<String> = s
                .timers_set
                .get(i)
                .map(|t| t.iter().map(|x| format!("{x:?}")).collect())
                .unwrap_or_default();
            let crashed = s.crashed.get(i).copied().unwrap_or(false);
            writeln!(
                f,
                "{}{}, timers: [{}]",
                server_line(server),
                if crashed { " (crashed)" } else { "" },
                timers.join(", ")
            )?;
        }
        write!(f, "network: {} messages in flight", s.network.len())
    }
}

impl Model for ContextModel {
    type State = ContextState;
    type Action = ReplayAction;

    fn init_states(&self) -> Vec<ContextState> {
        vec![self.init.clone()]
    }

    fn actions(&self, state: &ContextState, actions: &mut Vec<ReplayAction>) {
        self.model.actions(&state.0, actions);
    }

    fn next_state(&self, state: &ContextState, action: ReplayAction) -> Option<ContextState> {
        self.model.next_state(&state.0, action).map(ContextState)
    }

    fn format_action(&self, action: &ReplayAction) -> String {
        self.model.format_action(action)
    }

    /// The stepped server before and after, and what it sent.
    fn format_step(&self, state: &ContextState, action: ReplayAction) -> Option<String> {
        let index = match &action {
            ActorModelAction::Deliver { dst, .. } => usize::from(*dst),
            ActorModelAction::Timeout(id, _)
            | ActorModelAction::Crash(id)
            | ActorModelAction::Recover(id) => usize::from(*id),
            _ => return None,
        };
        let name = self.format_action(&action);
        let next = self.model.next_state(&state.0, action)?;
        let line = |st: &ReplayModelState| match st.actor_states.get(index).map(|a| &**a) {
            Some(ReplayState::Server(s)) => server_line(s),
            _ => "-".to_string(),
        };
        let mut out = format!(
            "step: {name}\n  before: {}\n  after:  {}\n",
            line(&state.0),
            line(&next)
        );
        if let (Network::UnorderedDuplicating(old, _), Network::UnorderedDuplicating(new, _)) =
            (&state.0.network, &next.network)
        {
            for e in new.iter().filter(|e| !old.contains(e)) {
                let _ = writeln!(
                    out,
                    "  sends {} → {} : {:?}",
                    usize::from(e.src),
                    usize::from(e.dst),
                    e.msg
                );
            }
        }
        Some(out)
    }
}

/// A window of a replay, ready for the Explorer: the [`ContextModel`]
/// started after step `start`, and the path of the replayed steps up to
/// step `end`.
pub struct Context {
    /// The model to serve.
    pub model: ContextModel,
    /// The context asked for: `end - start` unless the trace is shorter.
    pub context: u64,
    /// Steps replayed before the model's initial state.
    pub start: u64,
    /// Steps replayed at the end of the path.
    pub end: u64,
    /// The path's actions (recorded steps that change the state).
    actions: Vec<ReplayAction>,
    /// The path as the Explorer encodes it: the initial state's index, then
    /// each action's index among those offered before it.
    indices: Vec<usize>,
    /// The state at the end of the path.
    last: ContextState,
    /// The next recorded step's action, if given.
    next: Option<ReplayAction>,
}

/// Replays `paths` up to step `end` and returns the window of the last
/// `context` steps before it for the Explorer; `next`, the action of the
/// step after `end` (a divergence's), is reported as offered or not there.
pub fn context_files<P: AsRef<Path>>(
    paths: &[P],
    end: u64,
    context: u64,
    next: Option<ReplayAction>,
) -> Result<Context, ReplayError> {
    let start = end.saturating_sub(context);
    let (summary, replayer) = run(
        open_files(paths)?,
        &ReplayOptions::default(),
        Some((start, end)),
    )?;
    let Some(capture) = replayer.capture else {
        unreachable!("a window was given")
    };
    let end = end.min(summary.steps);
    let start = start.min(end);
    let Some(mut init) = capture.init else {
        unreachable!("the state at the start of the window is taken once reached")
    };
    // The environment has sent the requests of the window (and of the next
    // step) already.
    if let Network::UnorderedDuplicating(set, _) = &mut init.network {
        for action in capture.actions.iter().chain(&next) {
            if let ActorModelAction::Deliver { src, dst, msg } = action {
                if matches!(msg, ReplayMsg::Request { .. }) {
                    set.insert(Envelope {
                        src: *src,
                        dst: *dst,
                        msg: msg.clone(),
                    });
                }
            }
        }
    }
    let servers: Vec<NodeId> = replayer
        .state
        .actor_states
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(***a, ReplayState::Server(_)))
        .map(|(i, _)| NodeId(i as u64))
        .collect();
    // Responses no server will ever act on are left out, as the replay
    // forgets them (delivering one changes nothing).
    if let Network::UnorderedDuplicating(set, _) = &mut init.network {
        let states = &init.actor_states;
        set.retain(
            |e| match (&e.msg, states.get(usize::from(e.dst)).map(|a| &**a)) {
                (ReplayMsg::Raft(m), Some(ReplayState::Server(s))) => {
                    !s.ignores_forever(node_id(e.src), m)
                }
                _ => true,
            },
        );
    }
    let model = ContextModel {
        model: replay_model(&servers, replayer.max_append_entries).max_crashes(servers.len()),
        init: ContextState(init),
    };
    // Steps that leave the state as it is (a response already counted, a
    // late dead response) are not actions of the path: Stateright has no
    // transition for them. The Explorer names each action by its index
    // among the actions of the state before it.
    let mut actions = Vec::new();
    let mut indices = vec![0];
    let mut state = model.init.clone();
    let mut offered = Vec::new();
    for action in capture.actions {
        if let Some(next) = model.next_state(&state, action.clone()) {
            offered.clear();
            model.actions(&state, &mut offered);
            let Some(i) = offered.iter().position(|a| *a == action) else {
                unreachable!("every action the replay takes is offered by the model")
            };
            indices.push(i);
            state = next;
            actions.push(action);
        }
    }
    Ok(Context {
        model,
        context,
        start,
        end,
        actions,
        indices,
        last: state,
        next,
    })
}

impl Context {
    /// The path from the model's initial state through the replayed steps.
    pub fn path(&self) -> ModelPath<ContextState, ReplayAction> {
        ModelPath::from_actions(&self.model, self.model.init.clone(), &self.actions)
            .unwrap_or_else(|| unreachable!("every action of the path was applied above"))
    }

    /// The state at the end of the path.
    pub fn last_state(&self) -> &ReplayModelState {
        &self.last.0
    }

    /// The path as the Explorer's URL fragment (after `#/steps/`), as
    /// Stateright's `Path::encode` writes it.
    pub fn encoded_path(&self) -> String {
        let parts: Vec<String> = self.indices.iter().map(usize::to_string).collect();
        parts.join("/")
    }

    /// The next step's action as the Explorer names it, and whether the
    /// model offers it at the end of the path.
    pub fn next(&self) -> Option<(String, bool)> {
        let action = self.next.as_ref()?;
        let mut offered = Vec::new();
        self.model.actions(&self.last, &mut offered);
        let enabled =
            offered.contains(action) && self.model.next_state(&self.last, action.clone()).is_some();
        Some((self.model.format_action(action), enabled))
    }

    /// The [`ExplorerPath`] of this window of the traces at `paths`.
    pub fn explorer_path<P: AsRef<Path>>(&self, paths: &[P]) -> ExplorerPath {
        let mut command = format!("raft-model replay --explore --context {}", self.context);
        for p in paths {
            command.push(' ');
            command.push_str(&shell_quote(&p.as_ref().display().to_string()));
        }
        ExplorerPath {
            end: self.end,
            start: self.start,
            path: self.encoded_path(),
            command,
            next: self.next(),
        }
    }
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The traces, in server order, and the cap on the entries one
/// AppendEntries carries that their headers agree on.
type Opened = (Vec<Trace>, Option<NonZeroUsize>);

/// Reads and cross-checks the headers.
fn open(inputs: Vec<(String, Box<dyn BufRead>)>) -> Result<Opened, InputError> {
    let mut traces: Vec<Trace> = Vec::new();
    let mut first: Option<(String, Header)> = None;
    for (name, reader) in inputs {
        let reader = TraceReader::new(name.clone(), reader)?;
        let header = reader.header().clone();
        let bad = |message: String| InputError::Header {
            file: name.clone(),
            message,
        };
        if header.state_machine != "kv" {
            return Err(bad(format!(
                "state machine {:?}: the replayer runs the runtime's \"kv\"",
                header.state_machine
            )));
        }
        if header.servers.is_empty() || !header.servers.contains(&header.recorded_by) {
            return Err(bad(format!(
                "recorded_by {} is not one of the servers {:?}",
                header.recorded_by.0,
                ids(&header.servers)
            )));
        }
        if let Some(n) = header.servers.iter().find(|n| n.0 > MAX_NODE_ID) {
            return Err(bad(format!(
                "node id {} is above {MAX_NODE_ID}, the largest the replayer supports",
                n.0
            )));
        }
        match &first {
            None => first = Some((name.clone(), header.clone())),
            Some((f, h)) => {
                if h.cluster_id != header.cluster_id || h.servers != header.servers {
                    return Err(bad(format!(
                        "cluster {:?} of servers {:?}, but {f} is of cluster {:?} of servers {:?}: traces of different clusters",
                        header.cluster_id,
                        ids(&header.servers),
                        h.cluster_id,
                        ids(&h.servers)
                    )));
                }
                // The cap shapes every AppendEntries: the servers of one
                // replay model share it.
                if h.max_append_entries != header.max_append_entries {
                    let cap = |c: Option<NonZeroUsize>| {
                        c.map_or_else(|| "absent (no cap)".to_string(), |n| n.to_string())
                    };
                    return Err(bad(format!(
                        "max_append_entries {}, but {f} records max_append_entries {}: the traces of one cluster must agree on the cap",
                        cap(header.max_append_entries),
                        cap(h.max_append_entries)
                    )));
                }
            }
        }
        if let Some(other) = traces.iter().find(|t| t.server == header.recorded_by) {
            return Err(bad(format!(
                "a second trace of server {} (the first is {})",
                header.recorded_by.0,
                other.file()
            )));
        }
        traces.push(Trace {
            name: Arc::from(name.as_str()),
            reader,
            server: header.recorded_by,
            next: None,
            done: false,
            last_seq: 0,
        });
    }
    let Some((file, header)) = first else {
        return Err(InputError::NoTrace);
    };
    let missing: Vec<u64> = header
        .servers
        .iter()
        .filter(|n| !traces.iter().any(|t| t.server == **n))
        .map(|n| n.0)
        .collect();
    if !missing.is_empty() {
        return Err(InputError::Header {
            file,
            message: format!(
                "no trace given for server(s) {missing:?} of the cluster {:?}; replay needs every node's trace",
                ids(&header.servers)
            ),
        });
    }
    traces.sort_by_key(|t| t.server);
    Ok((traces, header.max_append_entries))
}

fn ids(nodes: &[NodeId]) -> Vec<u64> {
    nodes.iter().map(|n| n.0).collect()
}

enum Outcome {
    Replayed,
    /// Not enabled yet.
    Blocked(Block),
}

/// A step that receives a message not in flight (yet). Why, in words, is
/// worked out only if the replay gets stuck ([`Replayer::not_in_flight`]).
struct Block {
    /// The message awaited.
    envelope: Envelope<ReplayMsg>,
    /// The sender the step waits for.
    sender: NodeId,
    /// The receiver.
    receiver: NodeId,
}

/// The replay state: the model, its current state, and the ghost history.
struct Replayer {
    model: ReplayModel,
    /// The servers' cap on the entries one AppendEntries carries.
    max_append_entries: Option<NonZeroUsize>,
    state: ReplayModelState,
    /// The environment's actor index: the first that is not a server's.
    env: Id,
    /// The chained digest of each actor's log (indexed by actor index).
    digests: Vec<LogDigest>,
    /// The ghost history and the properties, kept step by step.
    safety: IncrementalSafety<KvCommand>,
    /// With [`ReplayOptions::cross_check`]: the history the full predicates
    /// are evaluated on.
    reference: Option<History<KvCommand>>,
    steps: u64,
    restarts: u64,
    max_term: Term,
    committed: LogIndex,
    recent: VecDeque<Recent>,
    /// Network size after the last collection of dead responses.
    collected_at: usize,
    /// The window of steps recorded for the Explorer, if asked.
    capture: Option<Capture>,
}

/// A replayed step, formatted only if a divergence report shows it.
struct Recent {
    step: u64,
    file: Arc<str>,
    line: u64,
    recorded: Step<KvCommand>,
}

impl fmt::Display for Recent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.recorded;
        write!(
            f,
            "step {} ({}:{}) server {}: {} -> term {}, {:?}, commit {}, last log {}/{}",
            self.step,
            self.file,
            self.line,
            s.server.0,
            input_json(&s.input),
            s.term.0,
            s.role,
            s.commit_index.0,
            s.last_log_index.0,
            s.last_log_term.0
        )
    }
}

/// What the Explorer needs of a window of replayed steps: the state before
/// the window, and the model actions of the steps in it.
struct Capture {
    /// Steps replayed before the window.
    start: u64,
    /// Steps replayed at the end of the window.
    end: u64,
    init: Option<ReplayModelState>,
    actions: Vec<ReplayAction>,
}

/// A server's state before an in-place step, for the history.
struct BeforeStep {
    role: Role,
    current_term: Term,
    voted_for: Option<NodeId>,
    last_applied: LogIndex,
    match_index: Option<BTreeMap<NodeId, LogIndex>>,
}

impl BeforeStep {
    fn of(server: &Server<Kv>) -> Self {
        let leader = server.role() == Role::Leader;
        BeforeStep {
            role: server.role(),
            current_term: server.current_term(),
            voted_for: server.persistent.voted_for,
            last_applied: server.volatile.last_applied,
            match_index: leader.then(|| server.volatile.match_index.clone()),
        }
    }

    fn view(&self) -> Before<'_> {
        Before {
            crashed: false,
            role: self.role,
            current_term: self.current_term,
            voted_for: self.voted_for,
            last_applied: self.last_applied,
            match_index: self.match_index.as_ref(),
        }
    }
}

/// What a step did to the stepped server's log.
#[derive(Default)]
struct LogChange {
    /// The first index written, if the log changed.
    from: Option<LogIndex>,
    /// Whether an entry held before the step was deleted or replaced.
    rewritten: bool,
}

impl Replayer {
    fn new(
        servers: &[NodeId],
        max_append_entries: Option<NonZeroUsize>,
        options: &ReplayOptions,
    ) -> Self {
        let model = replay_model(servers, max_append_entries);
        let mut state = model
            .init_states()
            .pop()
            .unwrap_or_else(|| unreachable!("an actor model has one initial state"));
        clear_last_delivered(&mut state);
        let digests = vec![LogDigest::default(); state.actor_states.len()];
        let env = Id::from(
            state
                .actor_states
                .iter()
                .position(|a| matches!(**a, ReplayState::Environment))
                .unwrap_or(0),
        );
        let safety = IncrementalSafety::new(&server_views(&state), History::default());
        Replayer {
            model,
            max_append_entries,
            state,
            env,
            digests,
            safety,
            reference: options.cross_check.then(History::default),
            steps: 0,
            restarts: 0,
            max_term: Term(0),
            committed: LogIndex(0),
            recent: VecDeque::new(),
            collected_at: 0,
            capture: None,
        }
    }

    fn server(state: &ReplayModelState, node: NodeId) -> Option<&Server<Kv>> {
        match state.actor_states.get(node.0 as usize).map(|a| &**a) {
            Some(ReplayState::Server(s)) => Some(s),
            _ => None,
        }
    }

    fn divergence(
        &self,
        trace: &Trace,
        line: u64,
        step: &Step<KvCommand>,
        kind: DivergenceKind,
    ) -> ReplayError {
        ReplayError::Divergence(Box::new(Divergence {
            step: self.steps + 1,
            file: trace.file().to_string(),
            line,
            server: trace.server,
            input: input_json(&step.input),
            action: self.action_of(trace.server, step, trace.last_seq == 0),
            kind,
            recent: self.recent.iter().map(|r| r.to_string()).collect(),
            also_blocked: Vec::new(),
            explorer: None,
        }))
    }

    /// The model action a recorded step maps to, whether or not it is
    /// enabled (for a restart, the crash that begins it).
    fn action_of(&self, node: NodeId, step: &Step<KvCommand>, first: bool) -> Option<ReplayAction> {
        let id = actor_id(node);
        Some(match &step.input {
            TraceInput::Restart if first => return None,
            TraceInput::Restart => ActorModelAction::Crash(id),
            TraceInput::ElectionTimeout => ActorModelAction::Timeout(id, Timer::Election),
            TraceInput::HeartbeatTimeout => ActorModelAction::Timeout(id, Timer::Heartbeat),
            TraceInput::ClientRequest {
                client_id,
                request_no,
                command,
            } => ActorModelAction::Deliver {
                src: self.env,
                dst: id,
                msg: ReplayMsg::Request {
                    client_id: *client_id,
                    request_no: *request_no,
                    command: command.clone(),
                },
            },
            TraceInput::Message { from, message } => ActorModelAction::Deliver {
                src: actor_id(*from),
                dst: id,
                msg: ReplayMsg::Raft(RaftMsg::new(message.clone())),
            },
        })
    }

    /// Replays one step if the model allows it now.
    fn step(
        &mut self,
        trace: &mut Trace,
        line: u64,
        step: &Step<KvCommand>,
    ) -> Result<Outcome, ReplayError> {
        let node = trace.server;
        let expected = trace.last_seq + 1;
        if step.seq != expected {
            return Err(self.divergence(
                trace,
                line,
                step,
                DivergenceKind::OutOfSequence {
                    expected,
                    found: step.seq,
                },
            ));
        }
        let first = trace.last_seq == 0;
        if first && step.input != TraceInput::Restart {
            return Err(self.divergence(trace, line, step, DivergenceKind::NotStarted));
        }
        let id = actor_id(node);
        let index = node.0 as usize;
        let actions: Vec<ReplayAction> = match &step.input {
            TraceInput::Restart if first => Vec::new(),
            TraceInput::Restart => {
                self.restarts += 1;
                // The history sees the crash and the recovery as one step, as
                // the checker records a recovery (from the persisted state).
                vec![ActorModelAction::Crash(id), ActorModelAction::Recover(id)]
            }
            TraceInput::ElectionTimeout | TraceInput::HeartbeatTimeout => {
                let timer = if step.input == TraceInput::ElectionTimeout {
                    Timer::Election
                } else {
                    Timer::Heartbeat
                };
                let set = self
                    .state
                    .timers_set
                    .get(index)
                    .is_some_and(|t| t.iter().any(|x| *x == timer));
                if !set {
                    let Some(before) = Self::server(&self.state, node) else {
                        unreachable!("every server of the header has a server actor")
                    };
                    return Err(self.divergence(
                        trace,
                        line,
                        step,
                        DivergenceKind::NotEnabled {
                            reason: format!(
                                "the {timer:?} timer of server {} is not set (role {:?}, term {})",
                                node.0,
                                before.role(),
                                before.current_term().0
                            ),
                        },
                    ));
                }
                vec![ActorModelAction::Timeout(id, timer)]
            }
            TraceInput::ClientRequest { .. } => {
                // The environment sends the request and the model delivers
                // it at once; the environment does not send it again (a
                // retry is another recorded request).
                self.action_of(node, step, first).into_iter().collect()
            }
            TraceInput::Message { from, message } => {
                let envelope = Envelope {
                    src: actor_id(*from),
                    dst: id,
                    msg: ReplayMsg::Raft(RaftMsg::new(message.clone())),
                };
                let in_flight = match &self.state.network {
                    Network::UnorderedDuplicating(set, _) => set.contains(&envelope),
                    _ => false,
                };
                let ignored = || {
                    Self::server(&self.state, node)
                        .is_some_and(|s| s.ignores_forever(*from, message))
                };
                if in_flight {
                    let Envelope { src, dst, msg } = envelope;
                    vec![ActorModelAction::Deliver { src, dst, msg }]
                } else if ignored() {
                    // A response the checker would have forgotten as dead
                    // (it changes nothing, in this state or later) may be
                    // delivered late: a no-op step, checked as such below.
                    Vec::new()
                } else {
                    return Ok(Outcome::Blocked(Block {
                        envelope,
                        sender: *from,
                        receiver: node,
                    }));
                }
            }
        };
        self.capture_step(&actions);
        // With the cross-check: the model's own next state, computed first.
        let reference = self.reference.is_some().then(|| {
            let before = Arc::clone(&self.state.actor_states[index]);
            (before, self.next_state(actions.clone(), true))
        });
        let (before, change) = self.apply(index, id, actions);
        let Some(after) = Self::server(&self.state, node) else {
            unreachable!("every server of the header has a server actor")
        };
        // The input is not compared: a placeholder saves copying it.
        let model_step = Step::after(step.seq, TraceInput::Restart, after, &self.digests[index]);
        let fields = differing_fields(step, &model_step);
        if !fields.is_empty() {
            return Err(self.divergence(
                trace,
                line,
                step,
                DivergenceKind::StateMismatch { fields },
            ));
        }
        let views = server_views(&self.state);
        let violated =
            self.safety
                .step(&before.view(), &views, node, change.from, change.rewritten);
        if let Some((before, next)) = reference {
            if let Some(why) = self.cross_check(&before, &next, node, &violated) {
                return Err(self.divergence(
                    trace,
                    line,
                    step,
                    DivergenceKind::Internal { what: why },
                ));
            }
        }
        if !violated.is_empty() {
            return Err(self.divergence(
                trace,
                line,
                step,
                DivergenceKind::PropertyViolated {
                    properties: violated,
                },
            ));
        }
        let Some(after) = Self::server(&self.state, node) else {
            unreachable!("every server of the header has a server actor")
        };
        self.max_term = self.max_term.max(after.current_term());
        self.committed = self.committed.max(after.volatile.commit_index);
        self.steps += 1;
        self.collect_dead_responses();
        Ok(Outcome::Replayed)
    }

    /// Keeps the step just replayed for a divergence report.
    fn remember(&mut self, file: &Arc<str>, line: u64, recorded: Step<KvCommand>) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            step: self.steps,
            file: Arc::clone(file),
            line,
            recorded,
        });
    }

    /// Records the state before the Explorer's window, and the actions of
    /// the steps in it.
    fn capture_step(&mut self, actions: &[ReplayAction]) {
        let steps = self.steps;
        let Some(c) = &mut self.capture else {
            return;
        };
        if steps == c.start && c.init.is_none() {
            c.init = Some(self.state.clone());
        }
        if steps >= c.start && steps < c.end {
            c.actions.extend(actions.iter().cloned());
        }
    }

    /// Carries out a step's `actions` on the current state, in place: what
    /// the model's `next_state` does (the cross-check of
    /// [`ReplayOptions::cross_check`] compares the two), in time
    /// proportional to what the step changes rather than to the state.
    ///
    /// A delivery or a timeout steps the server in place and carries out its
    /// outputs as the model's server adapter does ([`carry_out`]), except
    /// for persistence: the server's storage is brought up to date with the
    /// step's [`raft_spec::Persist`] (what a disk does) instead of being
    /// replaced by a copy of the whole persistent state, which is the same
    /// state since every change to the persistent state is persisted in its
    /// step (the spec's ordering contract). A restart (crash, recovery) runs
    /// the model's `next_state`: it reloads the log, as the runtime does.
    fn apply(
        &mut self,
        index: usize,
        id: Id,
        mut actions: Vec<ReplayAction>,
    ) -> (BeforeStep, LogChange) {
        if actions.len() > 1 {
            return self.apply_with_model(index, &actions);
        }
        let input = match actions.pop() {
            None => None,
            Some(ActorModelAction::Timeout(_, timer)) => {
                if let Some(t) = self.state.timers_set.get_mut(index) {
                    t.cancel(&timer);
                }
                Some(Input::timeout(timer))
            }
            // The action's message is not shared: taken, not copied.
            Some(ActorModelAction::Deliver { src, msg, .. }) => Some(msg.into_input(src)),
            Some(other) => return self.apply_with_model(index, &[other]),
        };
        let ReplayModelState {
            actor_states,
            actor_storages,
            ..
        } = &mut self.state;
        let ReplayState::Server(server) = Arc::make_mut(&mut actor_states[index]) else {
            unreachable!("every server of the header has a server actor")
        };
        let before = BeforeStep::of(server);
        let Some(input) = input else {
            return (before, LogChange::default());
        };
        let mut change = LogChange::default();
        let mut rest = Vec::new();
        for output in server.step(input) {
            let Output::Persist(persist) = output else {
                rest.push(output);
                continue;
            };
            if actor_storages.len() <= index {
                actor_storages.resize_with(index + 1, Default::default);
            }
            let stored = actor_storages[index]
                .get_or_insert_with(|| KvStored(Arc::new(PersistentState::default())));
            let stored = Arc::make_mut(&mut stored.0);
            if let Some(write) = &persist.log {
                // The stored log is the log before the step.
                change.rewritten |= write.rewrites(&stored.log);
                change.from = Some(change.from.map_or(write.from, |f| f.min(write.from)));
                self.digests[index].apply(write);
            }
            stored.apply_persist(&persist);
        }
        let mut out = Out::new();
        carry_out::<ReplayActor>(server, rest, &mut out);
        apply_commands(&mut self.state, id, out, |_, _| {});
        (before, change)
    }

    /// [`Replayer::apply`] through the model's `next_state` (a restart).
    fn apply_with_model(
        &mut self,
        index: usize,
        actions: &[ReplayAction],
    ) -> (BeforeStep, LogChange) {
        let before_state = Arc::clone(&self.state.actor_states[index]);
        let ReplayState::Server(before) = &*before_state else {
            unreachable!("every server of the header has a server actor")
        };
        self.state = self.next_state(actions.to_vec(), false);
        let Some(ReplayState::Server(after)) = self.state.actor_states.get(index).map(|a| &**a)
        else {
            unreachable!("every server of the header has a server actor")
        };
        let (old, new) = (before.log().entries(), after.log().entries());
        let common = old.iter().zip(new).take_while(|(a, b)| a == b).count();
        let mut change = LogChange::default();
        if common != old.len() || common != new.len() {
            change.from = Some(LogIndex(common as u64 + 1));
            change.rewritten = common < old.len();
            self.digests[index] = LogDigest::of(after.log());
        }
        (BeforeStep::of(before), change)
    }

    /// The cross-check: the in-place state equals the model's `next_state`,
    /// and the full predicates agree with the incremental ones. What
    /// differs, if anything.
    fn cross_check(
        &mut self,
        before: &ReplayState,
        next: &ReplayModelState,
        node: NodeId,
        violated: &[&'static str],
    ) -> Option<String> {
        let s = &self.state;
        let parts = [
            ("actor states", s.actor_states == next.actor_states),
            ("timers", s.timers_set == next.timers_set),
            ("crashed", s.crashed == next.crashed),
            ("storage", s.actor_storages == next.actor_storages),
            ("network", s.network == next.network),
        ];
        if let Some((what, _)) = parts.iter().find(|(_, same)| !same) {
            return Some(format!("the in-place step and next_state differ in {what}"));
        }
        let (ReplayState::Server(b), Some(a)) = (before, Self::server(next, node)) else {
            return Some("no server".to_string());
        };
        let history = self.reference.as_mut()?;
        history.record_step(&ServerView::live(b), &ServerView::live(a));
        if history != self.safety.history() {
            return Some("the incremental history differs from record_step's".to_string());
        }
        let full = safety::violated_properties(&server_views(next), history);
        (full != violated).then(|| {
            format!("violated_properties gives {full:?}, the incremental check {violated:?}")
        })
    }

    /// Applies `actions` in turn with the model's `next_state` (an action
    /// that is Stateright's no-op leaves the state as it is).
    ///
    /// The network is factored out while `next_state` runs, so that its
    /// clone of the state does not copy every message in flight: on the
    /// duplicating network, delivering leaves the network as it is (the
    /// replayer checked that the message is in flight) and a step only adds
    /// the messages it sends, which are merged back. The result is the state
    /// `next_state` returns on the whole state, in time independent of the
    /// number of messages in flight.
    ///
    /// With `keep_current`, the current state is left as it was (its network
    /// is copied); without, the caller replaces it with the result.
    fn next_state(&mut self, actions: Vec<ReplayAction>, keep_current: bool) -> ReplayModelState {
        let empty = Network::new_unordered_duplicating([]);
        let mut network = if keep_current {
            self.state.network.clone()
        } else {
            std::mem::replace(&mut self.state.network, empty)
        };
        let mut state = self.state.clone();
        state.network = Network::new_unordered_duplicating([]);
        for action in actions {
            if let Some(next) = self.model.next_state(&state, action) {
                state = next;
            }
        }
        if let (Network::UnorderedDuplicating(all, _), Network::UnorderedDuplicating(sent, _)) =
            (&mut network, &mut state.network)
        {
            all.extend(sent.drain());
        }
        state.network = network;
        state
    }

    /// Why a message is not deliverable, with the closest messages in flight.
    fn not_in_flight(
        &self,
        envelope: &Envelope<ReplayMsg>,
        from: NodeId,
        to: NodeId,
    ) -> (String, Option<usize>) {
        let ReplayMsg::Raft(recorded) = &envelope.msg else {
            return ("the message is not in flight".to_string(), None);
        };
        let mut distance = None;
        let mut out = format!(
            "{} from server {} to server {} is not in flight (no replayed step of server {} sent it)",
            recorded.name(),
            from.0,
            to.0,
            from.0
        );
        if let Network::UnorderedDuplicating(set, _) = &self.state.network {
            let mut same: Vec<&RaftMsg<KvCommand>> = set
                .iter()
                .filter(|e| e.src == envelope.src && e.dst == envelope.dst)
                .filter_map(|e| match &e.msg {
                    ReplayMsg::Raft(m) if m.name() == recorded.name() => Some(m),
                    _ => None,
                })
                .collect();
            same.sort_by_cached_key(|m| (field_distance(recorded, m), (*m).clone()));
            if let Some(closest) = same.first() {
                let diffs = message_field_diff(recorded, closest);
                distance = Some(diffs.len());
                let _ = write!(
                    out,
                    "; the closest {} in flight on that link differs in {}",
                    recorded.name(),
                    diffs
                        .iter()
                        .map(|(k, r, m)| format!("{k} (recorded {r}, model {m})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        (out, distance)
    }

    /// The divergence when no trace can go on.
    ///
    /// Blocked steps wait on each other: a step waits on its message's
    /// sender. The origin is among the steps whose sender waits, directly or
    /// not, on them (a cycle), or whose sender's trace has ended. Among those
    /// the report names first the step whose link carries the most similar
    /// message (fewest differing fields: the recorded one was most likely
    /// altered), then the earliest in its own trace; the others are listed.
    fn stuck(&self, traces: &mut [Trace], blocked: Vec<(usize, Block)>) -> ReplayError {
        let waits_on = |t: usize| -> Option<usize> {
            let (_, b) = blocked.iter().find(|(u, _)| *u == t)?;
            blocked
                .iter()
                .map(|(u, _)| *u)
                .find(|u| traces[*u].server == b.sender)
        };
        let is_origin = |t: usize| -> bool {
            let mut at = t;
            for _ in 0..=blocked.len() {
                match waits_on(at) {
                    None => return at == t,
                    Some(next) if next == t => return true,
                    Some(next) => at = next,
                }
            }
            false
        };
        let origins: Vec<bool> = blocked.iter().map(|(t, _)| is_origin(*t)).collect();
        // (rank, trace, line, step, why)
        type Described = (
            (bool, usize, u64, usize),
            usize,
            u64,
            Step<KvCommand>,
            String,
        );
        let mut described: Vec<Described> = Vec::new();
        for ((t, block), origin) in blocked.iter().zip(origins) {
            let (reason, distance) =
                self.not_in_flight(&block.envelope, block.sender, block.receiver);
            if let Ok(Some((step, line))) = traces[*t].peek() {
                let rank = (!origin, distance.unwrap_or(usize::MAX), step.seq, *t);
                described.push((rank, *t, *line, step.clone(), reason));
            }
        }
        described.sort_by_key(|d| d.0);
        let Some((_, t, line, step, reason)) = described.first().cloned() else {
            unreachable!("a round that replays nothing has a blocked trace")
        };
        let also_blocked = described
            .iter()
            .skip(1)
            .map(|(_, t, line, step, reason)| {
                format!(
                    "{}:{} server {}: {} ({reason})",
                    traces[*t].file(),
                    line,
                    traces[*t].server.0,
                    input_json(&step.input)
                )
            })
            .collect();
        let mut err = self.divergence(
            &traces[t],
            line,
            &step,
            DivergenceKind::NotEnabled { reason },
        );
        if let ReplayError::Divergence(d) = &mut err {
            d.also_blocked = also_blocked;
        }
        err
    }

    /// Forgets the responses no server will ever act on (the checker's own
    /// reduction, [`Server::ignores_forever`]), whenever the network doubled
    /// since the last time: amortised constant time per step.
    fn collect_dead_responses(&mut self) {
        let Network::UnorderedDuplicating(set, _) = &self.state.network else {
            return;
        };
        if set.len() < 2 * self.collected_at + 64 {
            return;
        }
        let states = &self.state.actor_states;
        let dead: Vec<Envelope<ReplayMsg>> = set
            .iter()
            .filter(
                |e| match (&e.msg, states.get(usize::from(e.dst)).map(|a| &**a)) {
                    (ReplayMsg::Raft(m), Some(ReplayState::Server(s))) => {
                        s.ignores_forever(node_id(e.src), m)
                    }
                    _ => false,
                },
            )
            .cloned()
            .collect();
        if let Network::UnorderedDuplicating(set, _) = &mut self.state.network {
            for e in &dead {
                set.remove(e);
            }
            self.collected_at = set.len();
        }
    }

    fn summary(&self, servers: usize) -> ReplaySummary {
        ReplaySummary {
            steps: self.steps,
            servers,
            max_term: self.max_term,
            committed: self.committed,
            restarts: self.restarts,
            elapsed: Duration::ZERO,
        }
    }
}

/// Stateright remembers the last message delivered on a duplicating network
/// only to tell states apart; the replayer has one state at a time.
fn clear_last_delivered(state: &mut ReplayModelState) {
    if let Network::UnorderedDuplicating(_, last) = &mut state.network {
        *last = None;
    }
}

/// The views of every server of a state (none is ever left crashed between
/// two replayed steps: a restart is a crash and a recovery).
fn server_views(state: &ReplayModelState) -> Vec<ServerView<'_, KvCommand>> {
    state
        .actor_states
        .iter()
        .filter_map(|a| match &**a {
            ReplayState::Server(s) => Some(ServerView::live(s)),
            ReplayState::Environment => None,
        })
        .collect()
}

fn input_json(input: &TraceInput<KvCommand>) -> String {
    serde_json::to_string(input).unwrap_or_else(|_| input.name().to_string())
}

/// The fields of two step records that differ: `(field, recorded, model)`.
fn differing_fields(
    recorded: &Step<KvCommand>,
    model: &Step<KvCommand>,
) -> Vec<(String, String, String)> {
    let same = recorded.term == model.term
        && recorded.role == model.role
        && recorded.voted_for == model.voted_for
        && recorded.commit_index == model.commit_index
        && recorded.last_applied == model.last_applied
        && recorded.last_log_index == model.last_log_index
        && recorded.last_log_term == model.last_log_term
        && recorded.digest == model.digest;
    if same {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cmp = |name: &str, r: String, m: String| {
        if r != m {
            out.push((name.to_string(), r, m));
        }
    };
    cmp(
        "term",
        recorded.term.0.to_string(),
        model.term.0.to_string(),
    );
    cmp(
        "role",
        format!("{:?}", recorded.role),
        format!("{:?}", model.role),
    );
    cmp("voted_for", opt(recorded.voted_for), opt(model.voted_for));
    cmp(
        "commit_index",
        recorded.commit_index.0.to_string(),
        model.commit_index.0.to_string(),
    );
    cmp(
        "last_applied",
        recorded.last_applied.0.to_string(),
        model.last_applied.0.to_string(),
    );
    cmp(
        "last_log_index",
        recorded.last_log_index.0.to_string(),
        model.last_log_index.0.to_string(),
    );
    cmp(
        "last_log_term",
        recorded.last_log_term.0.to_string(),
        model.last_log_term.0.to_string(),
    );
    let fields_differ = !out.is_empty();
    if recorded.digest != model.digest {
        out.push((
            if fields_differ {
                "digest".to_string()
            } else {
                // Only fields outside the readable copy differ.
                "digest (log entries, leader_hint, votes_granted, next_index or match_index)"
                    .to_string()
            },
            recorded.digest.to_string(),
            model.digest.to_string(),
        ));
    }
    out
}

fn opt(n: Option<NodeId>) -> String {
    n.map_or_else(|| "none".to_string(), |n| n.0.to_string())
}

/// The top-level fields of two messages of the same kind that differ:
/// `(field, recorded, model)`.
fn message_field_diff(
    recorded: &Message<KvCommand>,
    model: &Message<KvCommand>,
) -> Vec<(String, String, String)> {
    let fields = |m: &Message<KvCommand>| -> Vec<(String, serde_json::Value)> {
        match serde_json::to_value(m) {
            Ok(serde_json::Value::Object(outer)) => outer
                .into_iter()
                .next()
                .and_then(|(_, inner)| match inner {
                    serde_json::Value::Object(map) => Some(map.into_iter().collect()),
                    _ => None,
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    let (r, m) = (fields(recorded), fields(model));
    r.iter()
        .filter_map(|(k, v)| {
            let other = m.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v);
            (other != Some(v)).then(|| {
                (
                    k.clone(),
                    v.to_string(),
                    other.map_or_else(|| "-".to_string(), |o| o.to_string()),
                )
            })
        })
        .collect()
}

fn field_distance(recorded: &Message<KvCommand>, model: &Message<KvCommand>) -> usize {
    message_field_diff(recorded, model).len()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raft_spec::trace::TraceWriter;

    fn traces_of(texts: Vec<(&str, String)>) -> Vec<(String, Box<dyn BufRead>)> {
        texts
            .into_iter()
            .map(|(n, t)| {
                (
                    n.to_string(),
                    Box::new(std::io::Cursor::new(t.into_bytes())) as Box<dyn BufRead>,
                )
            })
            .collect()
    }

    /// A one-server cluster: start, elect itself, take a request.
    fn single_node_trace() -> String {
        let header = Header::new("t", vec![NodeId(1)], "kv", NodeId(1));
        let buf = SharedBuf::default();
        let mut w = TraceWriter::new(buf.clone(), &header).unwrap();
        let (mut server, _) = Server::<Kv>::new(NodeId(1), vec![NodeId(1)]);
        let mut digest = LogDigest::default();
        w.write_step(&Step::after(1, TraceInput::Restart, &server, &digest))
            .unwrap();
        let inputs = vec![
            Input::ElectionTimeout,
            Input::ClientRequest {
                client_id: ClientId(77),
                request_no: 1,
                command: KvCommand::Put {
                    key: "k".into(),
                    value: "v".into(),
                },
            },
        ];
        for (i, input) in inputs.into_iter().enumerate() {
            for out in server.step(input.clone()) {
                if let raft_spec::Output::Persist(p) = out {
                    if let Some(lw) = &p.log {
                        digest.apply(lw);
                    }
                }
            }
            w.write_step(&Step::after(i as u64 + 2, input.into(), &server, &digest))
                .unwrap();
        }
        w.flush().unwrap();
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_single_node_trace_replays_clean() {
        let text = single_node_trace();
        let s = replay(traces_of(vec![("n1", text)])).unwrap();
        assert_eq!(s.steps, 3);
        assert_eq!(s.committed, LogIndex(1));
        assert_eq!(s.max_term, Term(1));
    }
}
