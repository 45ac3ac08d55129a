//! The replayer: merges the traces in causal order and steps the replay
//! model ([`ReplayModel::step`]) with each recorded step, checking that it
//! is enabled, that the server's state after it is the recorded one, and
//! that every safety property still holds.

use super::cluster::{
    BeforeStep, Cluster, Emit, Emits, Envelope, RaftMsg, ReplayAction, ReplayModel, ReplayMsg,
};
use super::divergence::{
    field_distance, input_json, message_field_diff, Divergence, DivergenceKind,
};
use super::history::{Ack, ClientHistory, Violation};
use super::input::{open, Inputs, KvStep, Marker, Trace};
use super::{ReplayError, ReplayOptions, ReplaySummary};
use crate::model::intern::{content_hash, FixedState};
use raft_spec::safety::{self, History, IncrementalSafety, ServerView};
use raft_spec::trace::{released_sends, Emitted, LogDigest, Released, StepState, TraceInput};
use raft_spec::{
    ClientReply, Input, KvCommand, KvOutput, LogIndex, Message, NodeId, Replication, Term, Timer,
};
use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many replayed steps a divergence report shows before the diverging one.
const RECENT: usize = 5;

pub(super) enum Outcome {
    Replayed,
    /// Not enabled yet.
    Blocked(Block),
}

/// A step that receives a message not in flight (yet). Why, in words, is
/// worked out only if the replay gets stuck ([`Replayer::not_in_flight`]).
pub(super) struct Block {
    /// The sender the step waits for.
    sender: NodeId,
    /// The receiver.
    receiver: NodeId,
    /// The message awaited.
    message: Message<KvCommand>,
    /// Whether the model has it in flight, and it waits only for the
    /// sender's released marker.
    in_flight: bool,
}

/// A batch of a version-3 trace not released yet.
#[derive(Default)]
struct OpenBatch {
    /// What its steps emitted that leaves at the release (sends and
    /// replies), in order, each send with whether it is an AppendEntries.
    pending: Emits,
    /// Whether one of its steps persisted something no synced marker has
    /// covered yet.
    unsynced: bool,
}

/// The replay state: the model, its current state, and the ghost history.
pub(super) struct Replayer {
    pub(super) model: ReplayModel,
    pub(super) state: Cluster,
    /// The chained digest of each server's log, in node-id order.
    digests: Vec<LogDigest>,
    /// The ghost history and the properties, kept step by step.
    safety: IncrementalSafety<KvCommand>,
    /// With [`ReplayOptions::cross_check`]: the history the full predicates
    /// are evaluated on.
    reference: Option<History<KvCommand>>,
    pub(super) steps: u64,
    restarts: u64,
    max_term: Term,
    committed: LogIndex,
    recent: VecDeque<Recent>,
    /// Network size after the last time dead responses were forgotten.
    collected_at: usize,
    /// The window of steps recorded for the Explorer, if asked.
    pub(super) capture: Option<Capture>,
    /// Whether each server's trace (in node-id order) records outputs and
    /// releases (version 3 on).
    records: Vec<bool>,
    /// Each server's batch not released yet, in node-id order.
    batches: Vec<OpenBatch>,
    /// Every message some node released, by [`released_key`] of its
    /// sender, receiver and content, with how many times (over links in
    /// order: released and not yet delivered or overtaken).
    released: HashMap<u64, u32, FixedState>,
    /// Whether every trace says its links are in order
    /// ([`raft_spec::trace::Header::fifo_links`]) and records releases:
    /// then a message delivered on a link takes every message released
    /// before it on that link out of flight, and itself (no duplicates),
    /// so the network holds what the links can still deliver.
    fifo: bool,
    /// Over links in order: each link's released messages not delivered
    /// yet, in release order, by (sender, receiver).
    links: HashMap<(NodeId, NodeId), VecDeque<(u64, Envelope)>, FixedState>,
    /// The replies released, against the committed log.
    history: ClientHistory,
}

/// A replayed step, formatted only if a divergence report shows it.
struct Recent {
    step: u64,
    file: Arc<str>,
    line: u64,
    recorded: KvStep,
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
pub(super) struct Capture {
    /// Steps replayed before the window.
    pub(super) start: u64,
    /// Steps replayed at the end of the window.
    pub(super) end: u64,
    pub(super) init: Option<Cluster>,
    pub(super) actions: Vec<ReplayAction>,
}

/// The model action a recorded step of `node` maps to, whether or not it is
/// enabled (for a restart, the crash that begins it; none for a trace's
/// first step, which is the initial state).
pub(super) fn action_of(node: NodeId, step: &KvStep, first: bool) -> Option<ReplayAction> {
    Some(match &step.input {
        TraceInput::Restart if first => return None,
        TraceInput::Restart => ReplayAction::Crash(node),
        TraceInput::Step(Input::ElectionTimeout) => ReplayAction::Timeout(node, Timer::Election),
        TraceInput::Step(Input::HeartbeatTimeout) => ReplayAction::Timeout(node, Timer::Heartbeat),
        TraceInput::Step(Input::LeaseTimeout) => ReplayAction::Timeout(node, Timer::Lease),
        TraceInput::Step(Input::QuietTimeout) => ReplayAction::Timeout(node, Timer::Quiet),
        TraceInput::Step(Input::Synced { term, index }) => ReplayAction::Synced {
            node,
            term: *term,
            index: *index,
        },
        TraceInput::Step(Input::ClientRequest {
            client_id,
            request_no,
            command,
            ack,
        }) => ReplayAction::Deliver(Envelope {
            dst: node,
            msg: ReplayMsg::Request {
                ack: *ack,
                client_id: *client_id,
                request_no: *request_no,
                command: command.clone(),
                read: None,
            },
        }),
        TraceInput::Step(Input::ClientRead {
            client_id,
            request_no,
            command,
            mode,
        }) => ReplayAction::Deliver(Envelope {
            dst: node,
            msg: ReplayMsg::Request {
                ack: raft_spec::Ack::Applied,
                client_id: *client_id,
                request_no: *request_no,
                command: command.clone(),
                read: Some(*mode),
            },
        }),
        TraceInput::Step(Input::Message { from, message }) => ReplayAction::Deliver(Envelope {
            dst: node,
            msg: ReplayMsg::raft(*from, message.clone()),
        }),
    })
}

impl Replayer {
    fn new(model: ReplayModel, options: &ReplayOptions, records: Vec<bool>, fifo: bool) -> Self {
        let state = model.init().clone();
        let digests = vec![LogDigest::default(); state.ids().len()];
        let batches = records.iter().map(|_| OpenBatch::default()).collect();
        let safety = IncrementalSafety::new(&server_views(&state), History::default());
        let fifo = fifo && records.iter().all(|&r| r);
        Replayer {
            model,
            state,
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
            records,
            batches,
            released: HashMap::default(),
            fifo,
            links: HashMap::default(),
            history: ClientHistory::default(),
        }
    }

    /// The index of `node` among the servers (node-id order).
    fn index_of(&self, node: NodeId) -> Option<usize> {
        self.state.ids().iter().position(|n| *n == node)
    }

    /// Over links in order: `message` from `from` was delivered to `to`, so
    /// it and every message released before it on that link can no longer
    /// be delivered; those no other release still holds leave the network.
    fn delivered(&mut self, from: NodeId, to: NodeId, message: &Message<KvCommand>) {
        let key = released_key(from, to, content_hash(message));
        let Some(link) = self.links.get_mut(&(from, to)) else {
            return;
        };
        if !link.iter().any(|(k, _)| *k == key) {
            return;
        }
        while let Some((k, envelope)) = link.pop_front() {
            if let Some(n) = self.released.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.released.remove(&k);
                    self.state.forget(&envelope);
                }
            }
            if k == key {
                break;
            }
        }
    }

    /// Over links in order: `node`'s sends among `emits` that it never
    /// released leave the network, unless an identical message is
    /// released and not yet delivered.
    fn forget_unreleased<'a>(&mut self, node: NodeId, emits: impl IntoIterator<Item = &'a Emit>) {
        for emit in emits {
            if let (Emitted::Send { to, .. }, Some(envelope)) = (&emit.item, &emit.envelope) {
                if !self
                    .released
                    .contains_key(&released_key(node, *to, emit.content))
                {
                    self.state.forget(envelope);
                }
            }
        }
    }

    /// Whether `from` released `message` to `to`: always, if `from`'s trace
    /// records no releases (before version 3).
    fn was_released(&self, from: NodeId, to: NodeId, message: &RaftMsg) -> bool {
        match self.index_of(from) {
            Some(i) if self.records[i] => {
                self.released
                    .contains_key(&released_key(from, to, message.content_hash()))
            }
            _ => true,
        }
    }

    fn divergence(
        &self,
        trace: &Trace,
        line: u64,
        step: &KvStep,
        kind: DivergenceKind,
    ) -> ReplayError {
        ReplayError::Divergence(Box::new(Divergence {
            step: self.steps + 1,
            file: trace.file().to_string(),
            line,
            server: trace.server,
            input: input_json(&step.input),
            action: action_of(trace.server, step, trace.last_seq == 0),
            kind,
            recent: self.recent.iter().map(|r| r.to_string()).collect(),
            also_blocked: Vec::new(),
            explorer: None,
        }))
    }

    /// The model actions of a recorded step, checked to be enabled: `Err`
    /// with the outcome if it is not (blocked, or a divergence).
    fn actions(
        &self,
        trace: &Trace,
        line: u64,
        step: &KvStep,
    ) -> Result<Vec<ReplayAction>, Result<Outcome, ReplayError>> {
        let node = trace.server;
        let first = trace.last_seq == 0;
        Ok(match &step.input {
            TraceInput::Restart if first => Vec::new(),
            // The history sees the crash and the recovery as one step, as
            // the checker records a recovery (from the persisted state).
            // Writes in parallel that were not durable yet may be lost: as
            // many as the recovered log lacks, if they were that far back.
            TraceInput::Restart => {
                let lost = self.state.slot(node).and_then(|slot| {
                    let from = slot.unsynced_from?;
                    let keep = step.last_log_index;
                    (keep.next() >= from && keep < slot.stored.log.last_index()).then_some(keep)
                });
                let mut actions = vec![ReplayAction::Crash(node)];
                actions.extend(lost.map(|keep| ReplayAction::LoseUnsynced(node, keep)));
                actions.push(ReplayAction::Recover(node));
                actions
            }
            TraceInput::Step(Input::Synced { .. }) => {
                action_of(node, step, first).into_iter().collect()
            }
            TraceInput::Step(
                Input::ElectionTimeout
                | Input::HeartbeatTimeout
                | Input::LeaseTimeout
                | Input::QuietTimeout,
            ) => {
                let Some(action @ ReplayAction::Timeout(_, timer)) = action_of(node, step, first)
                else {
                    return Ok(Vec::new());
                };
                match self.state.slot(node) {
                    Some(slot) if !slot.timer_set(timer) => {
                        let reason = format!(
                            "the {timer:?} timer of server {} is not set (role {:?}, term {})",
                            node.0,
                            slot.server.role(),
                            slot.server.current_term().0
                        );
                        return Err(Err(self.divergence(
                            trace,
                            line,
                            step,
                            DivergenceKind::NotEnabled { reason },
                        )));
                    }
                    _ => vec![action],
                }
            }
            // The environment sends the request and the model delivers it
            // at once; the environment does not send it again (a retry is
            // another recorded request).
            TraceInput::Step(Input::ClientRequest { .. } | Input::ClientRead { .. }) => {
                action_of(node, step, first).into_iter().collect()
            }
            TraceInput::Step(Input::Message { from, message }) => {
                let wrapped = RaftMsg::new(message.clone());
                let in_flight = self.state.in_flight_msg(*from, node, &wrapped);
                // The real sender must have let it out too (version 3): the
                // model's network is lossy and duplicating, so it alone
                // cannot tell a message the node never released.
                let released = self.was_released(*from, node, &wrapped);
                if in_flight && released {
                    vec![ReplayAction::Deliver(Envelope {
                        dst: node,
                        msg: ReplayMsg::Raft {
                            from: *from,
                            message: wrapped,
                        },
                    })]
                } else if released
                    && self
                        .state
                        .server(node)
                        .is_some_and(|s| s.ignores_forever(*from, message))
                {
                    // A response the checker would have forgotten as dead
                    // (it changes nothing and sends nothing, in this state or
                    // later) may be delivered late: a no-op step, checked as
                    // such below.
                    Vec::new()
                } else {
                    return Err(Ok(Outcome::Blocked(Block {
                        sender: *from,
                        receiver: node,
                        message: message.clone(),
                        in_flight,
                    })));
                }
            }
        })
    }

    /// Replays one step if the model allows it now.
    pub(super) fn step(
        &mut self,
        trace: &mut Trace,
        line: u64,
        step: &KvStep,
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
        if trace.last_seq == 0 && step.input != TraceInput::Restart {
            return Err(self.divergence(trace, line, step, DivergenceKind::NotStarted));
        }
        let actions = match self.actions(trace, line, step) {
            Ok(actions) => actions,
            Err(outcome) => return outcome,
        };
        let Some(index) = self.index_of(node) else {
            let reason = format!("server {} is not one of the cluster's", node.0);
            return Err(self.divergence(trace, line, step, DivergenceKind::NotEnabled { reason }));
        };
        self.capture_step(&actions);
        let reference_before = self
            .reference
            .is_some()
            .then(|| self.state.slot(node).map(|s| Arc::clone(&s.server)))
            .flatten();
        let mut before: Option<BeforeStep> = None;
        let (mut from, mut rewritten) = (None, false);
        let records = self.records[index];
        let mut emits: Emits = Vec::new();
        if records && step.input == TraceInput::Restart && trace.last_seq == 0 {
            // The initial state carried out the start's outputs.
            emits = self.model.start_emits(node);
        }
        for action in &actions {
            let Some(stepped) = self.model.step_recording(
                &mut self.state,
                action,
                Some(&mut self.digests[index]),
                records.then_some(&mut emits),
            ) else {
                let reason = format!("{action:?} is not enabled");
                return Err(self.divergence(
                    trace,
                    line,
                    step,
                    DivergenceKind::Internal { what: reason },
                ));
            };
            before.get_or_insert(stepped.before);
            from = match (from, stepped.from) {
                (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                (a, b) => a.or(b),
            };
            rewritten |= stepped.rewritten;
        }
        let Some(after) = self.state.server(node) else {
            let reason = format!("server {} is not one of the cluster's", node.0);
            return Err(self.divergence(trace, line, step, DivergenceKind::NotEnabled { reason }));
        };
        let before = before.unwrap_or_else(|| BeforeStep::of(after));
        let fields = step
            .state()
            .differences(&StepState::of(after, &self.digests[index]));
        if !fields.is_empty() {
            return Err(self.divergence(
                trace,
                line,
                step,
                DivergenceKind::StateMismatch { fields },
            ));
        }
        if records {
            let recorded = step.out.as_deref().unwrap_or_default();
            if recorded.len() != emits.len()
                || recorded.iter().zip(&emits).any(|(r, m)| *r != m.item)
            {
                let json =
                    |items: Vec<&Emitted<KvOutput>>| items.into_iter().map(emitted_json).collect();
                return Err(self.divergence(
                    trace,
                    line,
                    step,
                    DivergenceKind::OutputMismatch {
                        recorded: json(recorded.iter().collect()),
                        model: json(emits.iter().map(|e| &e.item).collect()),
                    },
                ));
            }
        }
        self.history.observe(after);
        if let TraceInput::Step(Input::ClientRead {
            client_id,
            request_no,
            command: KvCommand::Get { key },
            mode,
        }) = &step.input
        {
            if *mode != raft_spec::ReadMode::Log {
                self.history.read_arrives(*client_id, *request_no, key);
            }
        }
        let (term, commit) = (after.current_term(), after.volatile.commit_index);
        let views = server_views(&self.state);
        let violated = self
            .safety
            .step(&before.view(), &views, node, from, rewritten);
        if let Some(b) = reference_before {
            if let Some(what) = self.cross_check(&b, node, &violated) {
                return Err(self.divergence(trace, line, step, DivergenceKind::Internal { what }));
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
        if let (true, TraceInput::Step(Input::Message { from, message })) = (self.fifo, &step.input)
        {
            self.delivered(*from, node, message);
        }
        if records {
            if step.input == TraceInput::Restart {
                // What the node held back before it went down never left.
                let unreleased = std::mem::take(&mut self.batches[index]);
                if self.fifo {
                    self.forget_unreleased(node, &unreleased.pending);
                }
            }
            let batch = &mut self.batches[index];
            // A write in parallel may still be under way at the release.
            batch.unsynced |= emits.iter().any(|e| {
                matches!(
                    e.item,
                    Emitted::Persist {
                        parallel: false,
                        ..
                    }
                )
            });
            batch
                .pending
                .extend(emits.into_iter().filter(|e| e.item.is_released()));
        }
        self.max_term = self.max_term.max(term);
        self.committed = self.committed.max(commit);
        self.steps += 1;
        if self.state.network().len() >= 2 * self.collected_at + 64 {
            // Whenever the network doubled: amortised constant time per step.
            self.state.forget_dead();
            self.collected_at = self.state.network().len();
        }
        Ok(Outcome::Replayed)
    }

    /// A divergence at a marker (or, for the history, at the marker that
    /// released the reply): every step so far agreed.
    fn marker_divergence(
        &self,
        file: &str,
        server: NodeId,
        line: u64,
        input: String,
        kind: DivergenceKind,
    ) -> ReplayError {
        ReplayError::Divergence(Box::new(Divergence {
            step: self.steps + 1,
            file: file.to_string(),
            line,
            server,
            input,
            action: None,
            kind,
            recent: self.recent.iter().map(|r| r.to_string()).collect(),
            also_blocked: Vec::new(),
            explorer: None,
        }))
    }

    /// Judges a marker of `trace` read after the steps replayed so far
    /// (version 3): a synced marker makes the open batch's writes durable;
    /// a released marker must come after them, and must list exactly what
    /// the batch emitted to leave, less what the release rule drops.
    pub(super) fn marker(&mut self, trace: &Trace, marker: Marker) -> Result<(), ReplayError> {
        let node = trace.server;
        let Some(index) = self.index_of(node) else {
            return Ok(());
        };
        if !self.records[index] {
            return Ok(());
        }
        let (line, released) = match marker {
            Marker::Synced => {
                self.batches[index].unsynced = false;
                return Ok(());
            }
            Marker::Released(line, released) => (line, released),
        };
        let input = serde_json::to_string(&released).unwrap_or_default();
        let bad = |this: &Self, kind| {
            this.marker_divergence(trace.file(), node, line, input.clone(), kind)
        };
        if self.batches[index].unsynced {
            return Err(bad(self, DivergenceKind::ReleasedBeforeSynced));
        }
        let batch = std::mem::take(&mut self.batches[index]);
        let replication = self.model.replication();
        let matched = match check_release(&batch.pending, &released, &replication) {
            Ok(matched) => matched,
            Err(reason) => return Err(bad(self, DivergenceKind::ReleaseMismatch { reason })),
        };
        if self.fifo {
            // The sends the node did not release never leave.
            let unreleased: Vec<&Emit> = batch
                .pending
                .iter()
                .filter(|e| !matched.iter().any(|m| std::ptr::eq(*m, *e)))
                .collect();
            self.forget_unreleased(node, unreleased);
        }
        for emit in matched {
            match &emit.item {
                Emitted::Send { to, .. } => {
                    let key = released_key(node, *to, emit.content);
                    *self.released.entry(key).or_insert(0) += 1;
                    if let (true, Some(envelope)) = (self.fifo, &emit.envelope) {
                        // In flight from now on, even if an identical copy
                        // released before was delivered (and forgotten)
                        // since this one was sent.
                        self.state.send(envelope.clone());
                        self.links
                            .entry((node, *to))
                            .or_default()
                            .push_back((key, envelope.clone()));
                    }
                }
                Emitted::Reply {
                    client_id,
                    request_no,
                    reply: ClientReply::Ok(value),
                } => {
                    let ack = Ack {
                        client_id: *client_id,
                        request_no: *request_no,
                        value: value.clone(),
                        server: node,
                        file: Arc::clone(&trace.name),
                        line,
                    };
                    if let Some(v) = self.history.acknowledge(ack) {
                        return Err(self.history_divergence(v));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// At the end of a clean replay: every reply released is in the
    /// committed log with the value applying it returns
    /// ([`ClientHistory::check`]).
    fn check_history(&self) -> Result<(), ReplayError> {
        match self.history.check() {
            None => Ok(()),
            Some(v) => Err(self.history_divergence(v)),
        }
    }

    /// The divergence of a history violation, at the marker that released
    /// the reply.
    fn history_divergence(&self, v: Violation) -> ReplayError {
        self.marker_divergence(
            &v.ack.file,
            v.ack.server,
            v.ack.line,
            format!(
                "reply to request {} of client {}: {:?}",
                v.ack.request_no, v.ack.client_id.0, v.ack.value
            ),
            DivergenceKind::HistoryViolated { reason: v.reason },
        )
    }

    /// Keeps the step just replayed for a divergence report.
    pub(super) fn remember(&mut self, file: &Arc<str>, line: u64, recorded: KvStep) {
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

    /// The cross-check: the full predicates ([`History::record_step`],
    /// [`safety::violated_properties`]) agree with the incremental ones.
    /// What differs, if anything.
    fn cross_check(
        &mut self,
        before: &raft_spec::Server<raft_spec::Kv>,
        node: NodeId,
        violated: &[&'static str],
    ) -> Option<String> {
        let after = self.state.server(node)?;
        let history = self.reference.as_mut()?;
        history.record_step(&ServerView::live(before), &ServerView::live(after));
        if history != self.safety.history() {
            return Some("the incremental history differs from record_step's".to_string());
        }
        let full = safety::violated_properties(&server_views(&self.state), history);
        (full != violated).then(|| {
            format!("violated_properties gives {full:?}, the incremental check {violated:?}")
        })
    }

    /// Why a message is not deliverable, with the closest messages in flight.
    fn not_in_flight(&self, block: &Block) -> (String, Option<usize>) {
        let (from, to, recorded) = (block.sender, block.receiver, &block.message);
        let mut distance = None;
        if block.in_flight {
            return (
                format!(
                    "{} from server {} to server {} was never released: the model sent it, but no released marker of server {}'s trace lists it",
                    recorded.name(),
                    from.0,
                    to.0,
                    from.0
                ),
                Some(0),
            );
        }
        let mut out = format!(
            "{} from server {} to server {} is not in flight (no replayed step of server {} sent it)",
            recorded.name(),
            from.0,
            to.0,
            from.0
        );
        let mut same: Vec<&Message<KvCommand>> = self
            .state
            .network()
            .iter()
            .filter(|e| e.dst == to)
            .filter_map(|e| match &e.msg {
                ReplayMsg::Raft { from: f, message } if *f == from => Some(&**message),
                _ => None,
            })
            .filter(|m| m.name() == recorded.name())
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
        type Described = ((bool, usize, u64, usize), usize, u64, KvStep, String);
        let mut described: Vec<Described> = Vec::new();
        for ((t, block), origin) in blocked.iter().zip(origins) {
            let (reason, distance) = self.not_in_flight(block);
            if let Ok(Some((step, line))) = traces[*t].peek() {
                let rank = (!origin, distance.unwrap_or(usize::MAX), step.seq, *t);
                described.push((rank, *t, *line, step.clone(), reason));
            }
        }
        described.sort_by_key(|d| d.0);
        let mut described = described.into_iter();
        let Some((_, t, line, step, reason)) = described.next() else {
            return ReplayError::Internal("no trace can go on, and none is blocked".to_string());
        };
        let also_blocked = described
            .map(|(_, t, line, step, reason)| {
                format!(
                    "{}:{} server {}: {} ({reason})",
                    traces[t].file(),
                    line,
                    traces[t].server.0,
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

    fn summary(&self, servers: usize) -> ReplaySummary {
        ReplaySummary {
            steps: self.steps,
            servers,
            max_term: self.max_term,
            committed: self.committed,
            restarts: self.restarts,
            acknowledged: self.history.acknowledged() as u64,
            elapsed: Duration::ZERO,
            torn_tails: Vec::new(),
        }
    }
}

/// Whether `released` lists what a batch whose steps emitted `pending`
/// (sends and replies, in order) lets out: every send the release rule
/// ([`released_sends`]) keeps, and of the replies those the node still had
/// a client for, all in the order emitted, and nothing else. The batch's
/// outputs it lists, in order; what differs, in words, otherwise.
fn check_release<'a>(
    pending: &'a Emits,
    released: &Released<KvOutput>,
    replication: &Replication,
) -> Result<Vec<&'a Emit>, String> {
    let superseded = |i: usize, e: &Emit| {
        replication.window.is_none()
            && e.append
            && pending[i + 1..]
                .iter()
                .any(|l| l.append && same_destination(&l.item, &e.item))
    };
    let Some(out) = &released.out else {
        // The short form: exactly what the release rule keeps.
        return Ok(pending
            .iter()
            .enumerate()
            .filter(|(i, e)| !superseded(*i, e))
            .map(|(_, e)| e)
            .collect());
    };
    // The common case: everything left, in order, and no AppendEntries was
    // superseded by a later one to the same server.
    if pending.len() == out.len()
        && pending.iter().zip(out).all(|(e, r)| e.item == *r)
        && !pending.iter().enumerate().any(|(i, e)| superseded(i, e))
    {
        return Ok(pending.iter().collect());
    }
    let sends: Vec<(NodeId, bool)> = pending
        .iter()
        .filter_map(|e| match e.item {
            Emitted::Send { to, .. } => Some((to, e.append)),
            _ => None,
        })
        .collect();
    let mut keep = released_sends(&sends, replication).into_iter();
    // (output, must it be released)
    let expected: Vec<(&Emit, bool)> = pending
        .iter()
        .filter_map(|e| match e.item {
            Emitted::Send { .. } => keep.next().unwrap_or(true).then_some((e, true)),
            _ => Some((e, false)),
        })
        .collect();
    let missing = |e: &Emit| {
        format!(
            "it does not release {}, which the batch's steps emitted and the release rule keeps",
            emitted_json(&e.item)
        )
    };
    let mut matched = Vec::with_capacity(out.len());
    let mut at = 0;
    for item in out {
        let Some(k) = expected[at..].iter().position(|(e, _)| e.item == *item) else {
            return Err(format!(
                "it releases {}, which the batch's steps did not emit (or not in that order)",
                emitted_json(item)
            ));
        };
        if let Some((skipped, _)) = expected[at..at + k].iter().find(|(_, must)| *must) {
            return Err(missing(skipped));
        }
        matched.push(expected[at + k].0);
        at += k + 1;
    }
    if let Some((e, _)) = expected[at..].iter().find(|(_, must)| *must) {
        return Err(missing(e));
    }
    Ok(matched)
}

fn same_destination(a: &Emitted<KvOutput>, b: &Emitted<KvOutput>) -> bool {
    matches!((a, b), (Emitted::Send { to: x, .. }, Emitted::Send { to: y, .. }) if x == y)
}

/// The key of a released message in [`Replayer::released`].
fn released_key(from: NodeId, to: NodeId, content: u64) -> u64 {
    let mut h = FixedState.build_hasher();
    h.write_u64(from.0);
    h.write_u64(to.0);
    h.write_u64(content);
    h.finish()
}

fn emitted_json(e: &Emitted<KvOutput>) -> String {
    serde_json::to_string(e).unwrap_or_else(|_| format!("{e:?}"))
}

/// The views of every server of a state (none is ever left crashed between
/// two replayed steps: a restart is a crash and a recovery).
fn server_views(state: &Cluster) -> Vec<ServerView<'_, KvCommand>> {
    state
        .slots()
        .map(|(_, slot)| ServerView::live(&slot.server))
        .collect()
}

/// Replays, up to `window.1` steps if a window is given (recording the
/// steps from `window.0` on for the Explorer).
pub(super) fn run(
    inputs: Inputs,
    options: &ReplayOptions,
    window: Option<(u64, u64)>,
) -> Result<(ReplaySummary, Replayer), ReplayError> {
    let started = Instant::now();
    let (mut traces, replication) = open(inputs)?;
    let servers: Vec<NodeId> = traces.iter().map(|t| t.server).collect();
    let records = traces.iter().map(Trace::records_outputs).collect();
    let fifo = traces.iter().all(|t| t.fifo_links);
    let mut replayer = Replayer::new(
        ReplayModel::new(&servers, replication),
        options,
        records,
        fifo,
    );
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
                while let Some(marker) = trace.markers.pop_front() {
                    replayer.marker(trace, marker)?;
                }
                let Some((step, line)) = trace.next.take() else {
                    break;
                };
                all_done = false;
                match replayer.step(trace, line, &step) {
                    Ok(Outcome::Replayed) => {
                        if step.input == TraceInput::Restart && trace.last_seq != 0 {
                            replayer.restarts += 1;
                        }
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
    if stop.is_none() {
        replayer.check_history()?;
    }
    if let Some(c) = &mut replayer.capture {
        if c.init.is_none() && replayer.steps <= c.start {
            c.init = Some(replayer.state.clone());
        }
    }
    let mut summary = replayer.summary(servers.len());
    summary.elapsed = started.elapsed();
    summary.torn_tails = traces
        .iter()
        .filter_map(|t| {
            t.torn_tail
                .map(|(line, bytes)| (t.file().to_string(), line, bytes))
        })
        .collect();
    Ok((summary, replayer))
}
