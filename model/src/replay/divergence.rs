//! What a divergence reports: the rule the step broke, the fields that
//! differ, the steps before it, and where the Explorer opens.

use super::cluster::ReplayAction;
use super::DEFAULT_EXPLORER;
use raft_spec::trace::TraceInput;
use raft_spec::{KvCommand, Message, NodeId};
use std::fmt;

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
    /// What the step emitted, as its trace records it (`out`, version 3),
    /// differs from what the model's server emitted: both lists, as JSON.
    OutputMismatch {
        /// The recorded outputs.
        recorded: Vec<String>,
        /// The model's outputs.
        model: Vec<String>,
    },
    /// A batch released its sends and replies before its writes were
    /// durable: its released marker comes before the synced marker of a
    /// step of the batch that persisted something.
    ReleasedBeforeSynced,
    /// A released marker does not list what its batch's steps emitted to
    /// leave (less what the release rule drops).
    ReleaseMismatch {
        /// What differs.
        reason: String,
    },
    /// The replies the nodes released are not a linearizable history of
    /// the committed log, or an acknowledged operation is not in it
    /// (checked at the end of the replay).
    HistoryViolated {
        /// What is wrong.
        reason: String,
    },
    /// The incremental properties and the full predicates disagree: a bug
    /// of the replayer, reported only with
    /// [`ReplayOptions::cross_check`](super::ReplayOptions::cross_check).
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
    /// (filled by [`super::replay_files`], which can read the traces again).
    pub explorer: Option<ExplorerPath>,
}

/// The Explorer path of a replayed state, served by
/// `raft-model replay --explore` ([`super::Context`]).
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
            DivergenceKind::OutputMismatch { recorded, model } => {
                writeln!(
                    f,
                    "  what the step emitted differs from the model's outputs:"
                )?;
                writeln!(f, "    recorded: [{}]", recorded.join(", "))?;
                writeln!(f, "    model:    [{}]", model.join(", "))?;
            }
            DivergenceKind::ReleasedBeforeSynced => {
                writeln!(
                    f,
                    "  the batch's sends and replies left before its writes were durable (released marker before the batch's synced marker)"
                )?;
            }
            DivergenceKind::ReleaseMismatch { reason } => {
                writeln!(
                    f,
                    "  what the batch released differs from what its steps emitted: {reason}"
                )?;
            }
            DivergenceKind::HistoryViolated { reason } => {
                writeln!(f, "  client history: {reason}")?;
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

pub(super) fn input_json(input: &TraceInput<KvCommand>) -> String {
    serde_json::to_string(input).unwrap_or_else(|_| input.name().to_string())
}

/// The top-level fields of two messages of the same kind that differ:
/// `(field, recorded, model)`.
pub(super) fn message_field_diff(
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

pub(super) fn field_distance(recorded: &Message<KvCommand>, model: &Message<KvCommand>) -> usize {
    message_field_diff(recorded, model).len()
}
