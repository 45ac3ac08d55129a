//! The replayer: merges the traces in causal order and steps the replay
//! model ([`ReplayModel::step`]) with each recorded step, checking that it
//! is enabled, that the server's state after it is the recorded one, and
//! that every safety property still holds.

use super::cluster::{BeforeStep, Cluster, Envelope, ReplayAction, ReplayModel, ReplayMsg};
use super::divergence::{
    field_distance, input_json, message_field_diff, Divergence, DivergenceKind,
};
use super::input::{open, Inputs, Trace};
use super::{ReplayError, ReplayOptions, ReplaySummary};
use raft_spec::safety::{self, History, IncrementalSafety, ServerView};
use raft_spec::trace::{LogDigest, Step, StepState, TraceInput};
use raft_spec::{KvCommand, LogIndex, Message, NodeId, Term, Timer};
use std::collections::VecDeque;
use std::fmt::{self, Write as _};
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
pub(super) fn action_of(node: NodeId, step: &Step<KvCommand>, first: bool) -> Option<ReplayAction> {
    Some(match &step.input {
        TraceInput::Restart if first => return None,
        TraceInput::Restart => ReplayAction::Crash(node),
        TraceInput::ElectionTimeout => ReplayAction::Timeout(node, Timer::Election),
        TraceInput::HeartbeatTimeout => ReplayAction::Timeout(node, Timer::Heartbeat),
        TraceInput::ClientRequest {
            client_id,
            request_no,
            command,
        } => ReplayAction::Deliver(Envelope {
            dst: node,
            msg: ReplayMsg::Request {
                client_id: *client_id,
                request_no: *request_no,
                command: command.clone(),
            },
        }),
        TraceInput::Message { from, message } => ReplayAction::Deliver(Envelope {
            dst: node,
            msg: ReplayMsg::raft(*from, message.clone()),
        }),
    })
}

impl Replayer {
    fn new(model: ReplayModel, options: &ReplayOptions) -> Self {
        let state = model.init().clone();
        let digests = vec![LogDigest::default(); state.ids().len()];
        let safety = IncrementalSafety::new(&server_views(&state), History::default());
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
        step: &Step<KvCommand>,
    ) -> Result<Vec<ReplayAction>, Result<Outcome, ReplayError>> {
        let node = trace.server;
        let first = trace.last_seq == 0;
        Ok(match &step.input {
            TraceInput::Restart if first => Vec::new(),
            // The history sees the crash and the recovery as one step, as
            // the checker records a recovery (from the persisted state).
            TraceInput::Restart => vec![ReplayAction::Crash(node), ReplayAction::Recover(node)],
            TraceInput::ElectionTimeout | TraceInput::HeartbeatTimeout => {
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
            TraceInput::ClientRequest { .. } => action_of(node, step, first).into_iter().collect(),
            TraceInput::Message { from, message } => {
                if self.state.in_flight(*from, node, message) {
                    action_of(node, step, first).into_iter().collect()
                } else if self
                    .state
                    .server(node)
                    .is_some_and(|s| s.ignores_forever(*from, message))
                {
                    // A response the checker would have forgotten as dead
                    // (it changes nothing, in this state or later) may be
                    // delivered late: a no-op step, checked as such below.
                    Vec::new()
                } else {
                    return Err(Ok(Outcome::Blocked(Block {
                        sender: *from,
                        receiver: node,
                        message: message.clone(),
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
        if trace.last_seq == 0 && step.input != TraceInput::Restart {
            return Err(self.divergence(trace, line, step, DivergenceKind::NotStarted));
        }
        let actions = match self.actions(trace, line, step) {
            Ok(actions) => actions,
            Err(outcome) => return outcome,
        };
        let Some(index) = self.state.ids().iter().position(|n| *n == node) else {
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
        for action in &actions {
            let Some(stepped) =
                self.model
                    .step(&mut self.state, action, Some(&mut self.digests[index]))
            else {
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

    /// Keeps the step just replayed for a divergence report.
    pub(super) fn remember(&mut self, file: &Arc<str>, line: u64, recorded: Step<KvCommand>) {
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
        type Described = (
            (bool, usize, u64, usize),
            usize,
            u64,
            Step<KvCommand>,
            String,
        );
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
            elapsed: Duration::ZERO,
        }
    }
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
    let (mut traces, max_append_entries) = open(inputs)?;
    let servers: Vec<NodeId> = traces.iter().map(|t| t.server).collect();
    let mut replayer = Replayer::new(ReplayModel::new(&servers, max_append_entries), options);
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
    if let Some(c) = &mut replayer.capture {
        if c.init.is_none() && replayer.steps <= c.start {
            c.init = Some(replayer.state.clone());
        }
    }
    let mut summary = replayer.summary(servers.len());
    summary.elapsed = started.elapsed();
    Ok((summary, replayer))
}
