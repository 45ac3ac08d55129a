//! Trace replay: checks an execution of `raft-node`, recorded as one trace per
//! node ([`raft_spec::trace`]), step by step against the replay model.
//!
//! ```text
//!  trace of node 1 ─┐                     ┌─► the model's action (Deliver / Timeout /
//!  trace of node 2 ─┼─► merge (causal) ───┤     Crash + Recover; client requests from the
//!  trace of node 3 ─┘   one step at a time│     environment), enabled? then ReplayModel::step
//!                                         ├─► the server's state == the recorded digest and fields
//!                                         └─► IncrementalSafety (= record_step + violated_properties)
//!  on a divergence, or with --explore: a second pass up to the last agreed
//!  state ─► the replay model from K steps before it + Explorer path
//! ```
//!
//! The module is laid out by its seams: `cluster` holds the replay model
//! (its state, its actions and its one step function), `input` reads the
//! traces, `replayer` merges them and checks each step, `divergence` says
//! what disagreed, and `explorer` turns a window of replayed steps into an
//! Explorer path.
//!
//! # The model replayed against
//!
//! [`ReplayModel`]: one server per node of the trace header, with the
//! runtime's ids and state machine ([`raft_spec::Kv`]), on an unordered,
//! duplicating network (a message may be delivered late, more than once,
//! or never), stepped by [`ReplayModel::step`], which runs
//! [`raft_spec::Server::step`] and carries out its outputs. Every server is
//! built with the replication settings that the trace headers record
//! ([`Header::replication`](raft_spec::trace::Header::replication),
//! [`raft_spec::Server::with_replication`]), at the start and at every
//! recovery: they are configuration, not persisted state. Traces that
//! disagree on them are refused as bad input. The rules are those of
//! `raft-spec`, which the runtime runs too; the same step function serves
//! the replayer, the Explorer's window and the two-way conformance test
//! (`tests/conformance.rs`).
//!
//! Each recorded step becomes the model's action, which must be enabled in
//! the current state:
//!
//! | recorded input                 | model action                                  | enabled when                       |
//! |--------------------------------|-----------------------------------------------|------------------------------------|
//! | `Message { from, message }`    | `Deliver` of that message from `from`         | that message is in flight          |
//! | `ElectionTimeout`              | `Timeout(server, Election)`                   | the election timer is set          |
//! | `HeartbeatTimeout`             | `Timeout(server, Heartbeat)`                  | the heartbeat timer is set         |
//! | `ClientRequest { .. }`         | `Deliver` of the environment's request        | always (an action of the environment) |
//! | `Restart` (first of the trace) | none: the server as in the initial state      | first step of every trace          |
//! | `Restart` (later)              | `Crash(server)`, then `Recover(server)`       | always                             |
//!
//! After the step, the server's state must equal the recorded one: the
//! [`state_digest`](raft_spec::trace::state_digest) and every readable field
//! (term, role, voted_for, commit_index, last_applied, last_log_index,
//! last_log_term). Then the step is recorded in the ghost
//! [`History`](raft_spec::safety::History) and the Figure 3 properties plus
//! the auxiliary invariants are evaluated over every server, by
//! [`IncrementalSafety`](raft_spec::safety::IncrementalSafety): it gives
//! what `History::record_step` then
//! [`violated_properties`](raft_spec::safety::violated_properties) (the
//! checker's functions) give, looking only at what the step changed (a
//! proptest in raft-spec checks the two agree after every step of random
//! histories, and [`ReplayOptions::cross_check`] checks it along a replay).
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
//! - the stepped server is stepped in place (its `Arc` is shared only with
//!   a state kept for the Explorer, and then copied once);
//! - its storage is brought up to date with the step's
//!   [`raft_spec::Persist`], as a disk would be, instead of being replaced by
//!   a copy of the whole persistent state (the same state: every change to
//!   the persistent state is persisted in its step, the spec's contract);
//! - the chained log digest ([`LogDigest`](raft_spec::trace::LogDigest)) is
//!   updated from the step's [`LogWrite`](raft_spec::LogWrite), and whether
//!   the step rewrote an entry (Leader Append-Only, the history's "conflict
//!   overwritten") is read from the stored log at the written indices only;
//! - the properties are `IncrementalSafety`'s.
//!
//! A restart compares the reloaded log with the log before: time
//! proportional to the log, once per restart (the runtime reloads its log
//! too). [`ReplayOptions::cross_check`] (every test of `tests/replay.rs`
//! uses it) also evaluates the full predicates after each step and stops if
//! they disagree with the incremental ones. Responses that can never matter
//! again ([`raft_spec::Server::ignores_forever`], the checker's own
//! reduction) are forgotten whenever the network has doubled since the last
//! time. docs/benchmarks.md gives today's throughput and the command that measures
//! it.
//!
//! # The Explorer: `raft-model replay --explore`
//!
//! A path from the initial state of a long trace would be useless, and the
//! replay takes steps the Explorer could not follow (a client request is
//! sent and delivered at once; dead responses are forgotten). So the
//! Explorer serves the replay model ([`Context::model`]) whose initial state
//! is the replayed state `K` steps (`--context`, default
//! [`DEFAULT_CONTEXT`]) before the last state the traces and the model
//! agree on (the end of a clean replay, or the state before the
//! divergence). The client requests of those `K` steps (and of the
//! diverging step) are in flight in that initial state, sent by the
//! environment, so delivering one is an ordinary action; crashes and
//! recoveries are allowed; nothing is forgotten. The path is the `K` steps'
//! actions, except those of steps that change nothing (the model has no
//! transition for them: a response the leader already counted, a late dead
//! response), encoded as Stateright's Explorer does (`#/steps/0/i1/i2/...`, each action
//! by its index among those offered). The state at the end of the path is
//! the replayed one (its network may hold more messages: nothing is
//! forgotten). Finding that state means replaying the traces a second time
//! up to it ([`context_files`]): [`replay_files`] does it on a divergence,
//! to print the URL and the command that serves it, and says whether the
//! diverging step's action is offered there (a state or property mismatch)
//! or not (a step the model does not allow).

mod cluster;
mod divergence;
mod explorer;
mod history;
mod input;
mod replayer;

pub use cluster::{
    server_line, BeforeStep, Cluster, Envelope, InFlight, RaftMsg, ReplayAction, ReplayModel,
    ReplayMsg, Slot, Stepped,
};
pub use divergence::{Divergence, DivergenceKind, ExplorerPath};
pub use explorer::{context_files, Context};
pub use input::InputError;

use input::open_files;
use raft_spec::trace::TraceError;
use raft_spec::{LogIndex, Term};
use std::fmt;
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Unreadable or inconsistent input (exit status 2).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The trace and the model disagree (exit status 1).
    #[error("{0}")]
    Divergence(Box<Divergence>),
    /// The replayer contradicts itself (exit status 1): a bug of the
    /// replayer, not of the traces.
    #[error("internal: {0}")]
    Internal(String),
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
            ReplayError::Divergence(_) | ReplayError::Internal(_) => 1,
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
    /// Replies `Ok` the nodes released (version-3 traces), each checked
    /// against the committed log.
    pub acknowledged: u64,
    /// Wall-clock time of the replay.
    pub elapsed: Duration,
    /// Traces whose last line was cut short (file, line, bytes): a node
    /// killed while writing it; the step never left the node, and the
    /// replay ends that trace before it.
    pub torn_tails: Vec<(String, u64, u64)>,
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
            "OK: {} steps of {} servers replayed clean (terms up to {}, {} entries committed, {} restarts, {} replies checked against the committed log) in {:.3} s, {:.0} steps/s",
            self.steps,
            self.servers,
            self.max_term.0,
            self.committed.0,
            self.restarts,
            self.acknowledged,
            self.elapsed.as_secs_f64(),
            self.steps_per_sec()
        )?;
        for (file, line, bytes) in &self.torn_tails {
            write!(
                f,
                "\n  note: {file} ends in a line cut short (line {line}, {bytes} bytes): its node was killed while writing it; that step never left the node"
            )?;
        }
        Ok(())
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
    /// Also evaluate the full property predicates after every step
    /// ([`History::record_step`](raft_spec::safety::History::record_step),
    /// [`violated_properties`](raft_spec::safety::violated_properties)), and
    /// stop with [`DivergenceKind::Internal`] if they disagree with the
    /// incremental ones. For tests: each step then costs time proportional
    /// to the whole state.
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
    replayer::run(inputs, options, None).map(|(summary, _)| summary)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raft_spec::trace::{Emitted, Header, LogDigest, Step, TraceInput, TraceWriter};
    use raft_spec::{ClientId, Input, Kv, KvCommand, NodeId, Server};

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
        let mut w = TraceWriter::new(Vec::new(), &header).unwrap();
        let (mut server, started) = Server::<Kv>::new(NodeId(1), vec![NodeId(1)]);
        let mut digest = LogDigest::default();
        let start = Step::after(1, TraceInput::Restart, &server, &digest);
        w.write_alone(&start.with_out(Emitted::all(&started, &digest)))
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
                ack: raft_spec::Ack::Applied,
            },
        ];
        for (i, input) in inputs.into_iter().enumerate() {
            let (step, _) = Step::take(i as u64 + 2, &mut server, input, &mut digest);
            w.write_alone(&step).unwrap();
        }
        String::from_utf8(w.into_inner().unwrap()).unwrap()
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
