//! `raft-model replay --explore`: a window of replayed steps as a path of
//! the replay model, for Stateright's Explorer.

use super::cluster::{Cluster, ReplayAction, ReplayModel, ReplayMsg};
use super::input::open_files;
use super::replayer::run;
use super::{ExplorerPath, ReplayError, ReplayOptions};
use stateright::{Model, Path as ModelPath};
use std::path::Path;

/// A window of a replay, ready for the Explorer: the replay model started
/// after step `start` ([`ReplayModel::starting_in`]), and the path of the
/// replayed steps up to step `end`.
///
/// The model's initial state is the replay's state after step `start`, with
/// the client requests that the window's steps (and the diverging one)
/// take already sent by the environment (in flight, so that delivering one
/// is an ordinary action), and without the responses no server will act
/// on; crashes and recoveries are offered and nothing more is forgotten, so
/// that each recorded step is an action the Explorer offers.
pub struct Context {
    /// The model to serve.
    pub model: ReplayModel,
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
    last: Cluster,
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
    let end = end.min(summary.steps);
    let start = start.min(end);
    let (mut init, captured) = match replayer.capture {
        Some(c) => (c.init.unwrap_or_else(|| replayer.state.clone()), c.actions),
        None => (replayer.state.clone(), Vec::new()),
    };
    // The environment has sent the requests of the window (and of the next
    // step) already.
    for action in captured.iter().chain(&next) {
        if let ReplayAction::Deliver(e) = action {
            if matches!(e.msg, ReplayMsg::Request { .. }) {
                init.send(e.clone());
            }
        }
    }
    // Responses no server will ever act on are left out, as the replay
    // forgets them (delivering one changes nothing).
    init.forget_dead();
    let model = replayer.model.starting_in(init);
    // Steps that leave the state as it is (a response already counted, a
    // late dead response) are not actions of the path: the model has no
    // transition for them. The Explorer names each action by its index
    // among the actions of the state before it.
    let mut actions = Vec::new();
    let mut indices = vec![0];
    let mut state = model.init().clone();
    for action in captured {
        let Some(after) = model.next(&state, &action) else {
            continue;
        };
        let offered = model.actions_of(&state);
        let Some(i) = offered.iter().position(|a| *a == action) else {
            // Every action the replay took was enabled, and the window's
            // model offers every enabled action; a replayer bug otherwise.
            return Err(ReplayError::Internal(format!(
                "the replayed action {action:?} is not offered by the model"
            )));
        };
        indices.push(i);
        state = after;
        actions.push(action);
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
    /// The path from the model's initial state through the replayed steps
    /// (`None` only if the model no longer takes them: a replayer bug).
    pub fn path(&self) -> Option<ModelPath<Cluster, ReplayAction>> {
        ModelPath::from_actions(&self.model, self.model.init().clone(), &self.actions)
    }

    /// The state at the end of the path.
    pub fn last_state(&self) -> &Cluster {
        &self.last
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
        let enabled = self.model.actions_of(&self.last).contains(action)
            && self.model.next(&self.last, action).is_some();
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
