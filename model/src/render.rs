//! Compact, readable renderings of model actions and states, for
//! counterexamples and for Stateright's Explorer (the model state's `Debug`,
//! each step's description, the sequence diagram's labels).

use crate::actors::{ActorState, ClientStatus, Cmd, Msg, RaftActor};
use crate::model::{Action, Ghost, RaftModel, State};
use raft_spec::{ClientReply, Entry, Message, Payload, Role, Server, Timer};
use stateright::actor::{Actor, ActorModelAction, Command, Envelope, Id, Network, Out};
use stateright::{Expectation, Model, Path};
use std::borrow::Cow;
use std::fmt::Write;

fn entries<C>(entries: &[Entry<C>], first_index: u64) -> String {
    let items: Vec<String> = entries
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let tag = match &e.payload {
                Payload::Noop => String::new(),
                Payload::Command { client_id, .. } => format!("({client_id})"),
            };
            format!("{}@{}{}", e.term.0, first_index + k as u64, tag)
        })
        .collect();
    format!("[{}]", items.join(" "))
}

/// A Raft message on one line, e.g. `RequestVote t3 from n1 last 2@1`.
pub fn raft_message(msg: &Message<Cmd>) -> String {
    raft_message_with(msg, entries)
}

/// [`raft_message`] for any command type, with AppendEntries' entries
/// written by `entries` (given the entries and the index of the first).
pub fn raft_message_with<C>(
    msg: &Message<C>,
    entries: impl Fn(&[Entry<C>], u64) -> String,
) -> String {
    match msg {
        Message::RequestVote(m) => format!(
            "RequestVote t{} from {} last {}@{}",
            m.term.0, m.candidate_id, m.last_log_term.0, m.last_log_index.0
        ),
        Message::RequestVoteResponse(m) => format!(
            "RequestVoteResponse t{} {}",
            m.term.0,
            if m.vote_granted { "granted" } else { "refused" }
        ),
        Message::AppendEntries(m) => format!(
            "AppendEntries t{} from {} prev {}@{} {} commit {}",
            m.term.0,
            m.leader_id,
            m.prev_log_term.0,
            m.prev_log_index.0,
            entries(&m.entries, m.prev_log_index.0 + 1),
            m.leader_commit.0
        ),
        Message::AppendEntriesResponse(m) => format!(
            "AppendEntriesResponse t{} {} index {}",
            m.term.0,
            if m.success { "ok" } else { "rejected" },
            m.index.0
        ),
    }
}

/// A model message on one line.
pub fn message(msg: &Msg) -> String {
    match msg {
        Msg::Raft(m) => raft_message(m),
        Msg::Request { request_no } => format!("ClientRequest #{request_no}"),
        Msg::Reply(answer) => match answer.reply {
            ClientReply::Ok(v) => format!("ClientReply #{} ok {v}", answer.request_no),
            ClientReply::NotLeader { leader_hint } => {
                let request_no = answer.request_no;
                match leader_hint {
                    Some(l) => format!("ClientReply #{request_no} not leader, try {l}"),
                    None => format!("ClientReply #{request_no} not leader, no leader known"),
                }
            }
        },
    }
}

fn actor(id: Id) -> String {
    format!("{}", usize::from(id))
}

/// An action on one line.
pub fn action(action: &Action) -> String {
    match action {
        ActorModelAction::Deliver { src, dst, msg } => {
            format!("{} → {} : {}", actor(*src), actor(*dst), message(msg))
        }
        ActorModelAction::Drop(env) => format!(
            "drop {} → {} : {}",
            actor(env.src),
            actor(env.dst),
            message(&env.msg)
        ),
        ActorModelAction::Timeout(id, timer) => format!("{} {:?} timeout", actor(*id), timer),
        ActorModelAction::Crash(id) => format!("{} crashes", actor(*id)),
        ActorModelAction::Recover(id) => format!("{} recovers", actor(*id)),
        ActorModelAction::SelectRandom { actor: id, .. } => format!("{} random", actor(*id)),
    }
}

/// One server on one line, e.g. `n1 Leader t2 voted n1 log [1@1 2@2] commit 2`.
pub fn server(s: &Server<crate::actors::Sm>, crashed: bool) -> String {
    let role = match s.role() {
        Role::Follower => "Follower",
        Role::Candidate => "Candidate",
        Role::Leader => "Leader",
    };
    let voted = s
        .persistent
        .voted_for
        .map_or("-".to_string(), |v| v.to_string());
    let mut line = format!(
        "{} {} t{} voted {} log {} commit {}",
        s.id,
        if crashed { "CRASHED" } else { role },
        s.current_term().0,
        voted,
        entries(s.log().entries(), 1),
        s.volatile.commit_index.0
    );
    if crashed {
        line.push_str(" (last state before the crash)");
    }
    line
}

/// Every actor of a state, one line each.
pub fn state(state: &State) -> String {
    let mut out = String::new();
    for (i, a) in state.actor_states.iter().enumerate() {
        let crashed = state.crashed.get(i).copied().unwrap_or(false);
        match &**a {
            ActorState::Server(s) => {
                let _ = writeln!(out, "{}", server(s.server(), crashed));
            }
            ActorState::Client(c) => {
                let status = match c.status {
                    ClientStatus::Pending => "pending".to_string(),
                    ClientStatus::Done(v) => format!("done, got {v}"),
                };
                let _ = writeln!(
                    out,
                    "client {} request #{} {}",
                    c.index, c.request_no, status
                );
            }
        }
    }
    out
}

// ---- The Explorer ---------------------------------------------------------
//
// Stateright's Explorer shows, for each state, the model's `format_step`
// (what the step did) or, with "Complete State?", the state's `{:#?}`; it
// labels the sequence diagram with the messages' `Debug`. All three are
// written here, one line per server, client and message in flight.

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&message(self))
    }
}

impl std::fmt::Debug for State {
    /// The same compact text with or without `{:#?}`: the Explorer asks for
    /// the alternate form, which for a derived `Debug` would spread every
    /// field of every message over lines of its own.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&state_view(self))
    }
}

fn timers_of(state: &State, i: usize) -> Vec<Timer> {
    let mut timers: Vec<Timer> = state
        .timers_set
        .get(i)
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();
    timers.sort();
    timers
}

/// Actor `i` of a state on one line: a server as [`server`] plus its
/// timers, a client as its request and status.
pub fn actor_line(state: &State, i: usize) -> Option<String> {
    let crashed = state.crashed.get(i).copied().unwrap_or(false);
    Some(match &**state.actor_states.get(i)? {
        ActorState::Server(s) => {
            let mut line = server(s.server(), crashed);
            let timers = timers_of(state, i);
            if !timers.is_empty() {
                let names: Vec<String> = timers.iter().map(|t| format!("{t:?}")).collect();
                let _ = write!(line, ", timers: {}", names.join(" "));
            }
            line
        }
        ActorState::Client(c) => {
            let status = match c.status {
                ClientStatus::Pending => "pending".to_string(),
                ClientStatus::Done(v) => format!("done, got {v}"),
            };
            format!("client {} request #{} {}", c.index, c.request_no, status)
        }
    })
}

/// The messages in flight, one line each (`src → dst : message`), sorted
/// by sender, receiver and message; on an ordered network, each channel's
/// messages in delivery order.
pub fn network_lines(network: &Network<Msg>) -> Vec<String> {
    let line =
        |src: Id, dst: Id, msg: &Msg| format!("{} → {} : {}", actor(src), actor(dst), message(msg));
    match network {
        Network::UnorderedDuplicating(set, _) => {
            let mut envelopes: Vec<&Envelope<Msg>> = set.iter().collect();
            envelopes.sort();
            envelopes
                .into_iter()
                .map(|e| line(e.src, e.dst, &e.msg))
                .collect()
        }
        Network::UnorderedNonDuplicating(multiset) => {
            let mut envelopes: Vec<(&Envelope<Msg>, &usize)> = multiset.iter().collect();
            envelopes.sort();
            envelopes
                .into_iter()
                .map(|(e, &n)| {
                    let mut l = line(e.src, e.dst, &e.msg);
                    if n > 1 {
                        let _ = write!(l, " (×{n})");
                    }
                    l
                })
                .collect()
        }
        Network::Ordered(flows) => flows
            .iter()
            .flat_map(|(&(src, dst), flow)| flow.iter().map(move |m| line(src, dst, m)))
            .collect(),
    }
}

/// The ghost history on one line (two if a step-level violation was seen).
pub fn history_lines(ghost: &Ghost) -> Vec<String> {
    let leaders: Vec<String> = ghost
        .raft
        .leaders
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    let applied: Vec<Entry<Cmd>> = ghost.raft.applied.iter().map(|(e, _)| e.clone()).collect();
    let recovered: Vec<String> = ghost.recovered.iter().map(|n| n.to_string()).collect();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut lines = vec![format!(
        "leaders [{}], applied {}, conflict overwritten: {}, crashes {}, recovered [{}], rejoined: {}, client operations {} ({})",
        leaders.join(", "),
        entries(&applied, 1),
        yes_no(ghost.raft.conflict_overwritten),
        ghost.crashes,
        recovered.join(" "),
        yes_no(ghost.rejoined),
        ghost.clients.len(),
        if ghost.clients.serialized_history().is_some() {
            "linearizable"
        } else {
            "NOT linearizable"
        }
    )];
    if !ghost.raft.violations.is_empty() {
        let v: Vec<String> = ghost
            .raft
            .violations
            .iter()
            .map(|v| format!("{v:?}"))
            .collect();
        lines.push(format!("step violations: {}", v.join(", ")));
    }
    lines
}

/// A whole state, as the Explorer shows it: servers, clients, the messages
/// in flight and a summary of the ghost history, one line each.
pub fn state_view(state: &State) -> String {
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for (i, a) in state.actor_states.iter().enumerate() {
        let Some(line) = actor_line(state, i) else {
            continue;
        };
        match &**a {
            ActorState::Server(_) => servers.push(line),
            ActorState::Client(_) => clients.push(line),
        }
    }
    let network = network_lines(&state.network);
    let mut out = String::new();
    let mut section = |title: String, lines: &[String]| {
        let _ = writeln!(out, "{title}");
        for l in lines {
            let _ = writeln!(out, "  {l}");
        }
    };
    section("servers:".into(), &servers);
    if !clients.is_empty() {
        section("clients:".into(), &clients);
    }
    section(
        match network.len() {
            0 => "network: empty".to_string(),
            1 => "network: 1 message in flight".to_string(),
            n => format!("network: {n} messages in flight"),
        },
        &network,
    );
    section("history:".into(), &history_lines(&state.history));
    out
}

/// What the actor touched by `action` does in response: messages sent,
/// timers set or cancelled, state persisted, one line each. The actor is
/// asked, as Stateright's own step rendering does; nothing is decided here.
fn outputs(model: &RaftModel, last: &State, action: &Action) -> Vec<String> {
    let inner = model.actor_model();
    let mut out = Out::<RaftActor>::new();
    let id = match action {
        ActorModelAction::Deliver { src, dst, msg } => {
            let (Some(a), Some(s)) = (
                inner.actors.get(usize::from(*dst)),
                last.actor_states.get(usize::from(*dst)),
            ) else {
                return Vec::new();
            };
            let mut state = Cow::Borrowed(&**s);
            a.on_msg(*dst, &mut state, *src, msg.clone(), &mut out);
            *dst
        }
        ActorModelAction::Timeout(id, timer) => {
            let (Some(a), Some(s)) = (
                inner.actors.get(usize::from(*id)),
                last.actor_states.get(usize::from(*id)),
            ) else {
                return Vec::new();
            };
            let mut state = Cow::Borrowed(&**s);
            a.on_timeout(*id, &mut state, timer, &mut out);
            *id
        }
        ActorModelAction::Recover(id) => {
            let (Some(a), Some(storage)) = (
                inner.actors.get(usize::from(*id)),
                last.actor_storages.get(usize::from(*id)),
            ) else {
                return Vec::new();
            };
            a.on_start(*id, storage, &mut out);
            *id
        }
        _ => return Vec::new(),
    };
    out.iter()
        .filter_map(|c| match c {
            Command::Send(dst, msg) => Some(format!(
                "sends {} → {} : {}",
                actor(id),
                actor(*dst),
                message(msg)
            )),
            Command::SetTimer(t, _) => Some(format!("sets the {t:?} timer")),
            Command::CancelTimer(t) => Some(format!("cancels the {t:?} timer")),
            Command::Save(_) => Some("persists its term, vote and log".to_string()),
            Command::ChooseRandom(..) => None,
        })
        .collect()
}

/// One step as the Explorer shows it by default: the action, the touched
/// actor before and after with what it sent, which properties hold in the
/// resulting state, then that whole state ([`state_view`]).
pub fn step(model: &RaftModel, last: &State, action: &Action) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "step: {}", self::action(action));
    let Some(next) = model.next_state(last, action.clone()) else {
        let _ = writeln!(out, "  changes nothing");
        return out;
    };
    let touched = match action {
        ActorModelAction::Deliver { dst, .. } => Some(usize::from(*dst)),
        ActorModelAction::Timeout(id, _)
        | ActorModelAction::Crash(id)
        | ActorModelAction::Recover(id) => Some(usize::from(*id)),
        ActorModelAction::Drop(_) | ActorModelAction::SelectRandom { .. } => None,
    };
    if let Some(i) = touched {
        if let (Some(before), Some(after)) = (actor_line(last, i), actor_line(&next, i)) {
            let _ = writeln!(out, "  before: {before}");
            let _ = writeln!(out, "  after:  {after}");
        }
    }
    for line in outputs(model, last, action) {
        let _ = writeln!(out, "  {line}");
    }
    let mut violated = Vec::new();
    let mut examples = Vec::new();
    let mut always = 0;
    for p in model.properties() {
        let holds = (p.condition)(model, &next);
        match p.expectation {
            Expectation::Always => {
                always += 1;
                if !holds {
                    violated.push(p.name);
                }
            }
            Expectation::Sometimes if holds => examples.push(p.name),
            _ => {}
        }
    }
    if violated.is_empty() {
        let _ = writeln!(
            out,
            "properties: all {always} `always` properties hold here"
        );
    } else {
        let _ = writeln!(out, "properties: VIOLATED here: {}", violated.join(", "));
    }
    if !examples.is_empty() {
        let _ = writeln!(out, "examples here: {}", examples.join("; "));
    }
    let _ = writeln!(out);
    out.push_str(&state_view(&next));
    out
}

/// Stateright's sequence diagram of the wrapped `ActorModel` for a path of
/// the model's states.
pub fn sequence_diagram(model: &RaftModel, path: Path<State, Action>) -> Option<String> {
    let steps: Vec<_> = path.into_vec().into_iter().map(|(s, a)| (s.0, a)).collect();
    let init = steps.first()?.0.clone();
    let actions: Vec<Action> = steps.iter().filter_map(|(_, a)| a.clone()).collect();
    let replay = Replay {
        steps,
        cursor: std::cell::Cell::new(0),
    };
    let inner_path = Path::from_actions(&replay, init, actions.iter())?;
    model.actor_model().as_svg(inner_path)
}

/// The `ActorModel`'s view of a path already taken: `Path` has no public
/// constructor from states, so this model offers at each state exactly the
/// step the path took, and `Path::from_actions` rebuilds the path from it.
struct Replay {
    steps: Vec<(InnerState, Option<Action>)>,
    /// The step `Path::from_actions` is at (a path may revisit a state).
    cursor: std::cell::Cell<usize>,
}

type InnerState = stateright::actor::ActorModelState<RaftActor, crate::model::Ghost>;

impl Replay {
    fn position(&self, state: &InnerState) -> Option<usize> {
        (self.cursor.get()..self.steps.len()).find(|&k| self.steps[k].0 == *state)
    }
}

impl Model for Replay {
    type State = InnerState;
    type Action = Action;

    fn init_states(&self) -> Vec<InnerState> {
        self.steps
            .first()
            .map(|(s, _)| s.clone())
            .into_iter()
            .collect()
    }

    fn actions(&self, state: &InnerState, actions: &mut Vec<Action>) {
        if let Some(Some(a)) = self.position(state).map(|k| &self.steps[k].1) {
            actions.push(a.clone());
        }
    }

    fn next_state(&self, last: &InnerState, action: Action) -> Option<InnerState> {
        let k = self.position(last)?;
        if self.steps[k].1.as_ref() != Some(&action) {
            return None;
        }
        self.cursor.set(k + 1);
        self.steps.get(k + 1).map(|(s, _)| s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    fn model(servers: usize, crashes: usize) -> RaftModel {
        RaftModel::new(ModelConfig {
            servers,
            max_term: 1,
            requests: 1,
            crashes,
            ..ModelConfig::default_check()
        })
    }

    /// Follows the first action whose rendering starts with each prefix.
    fn walk(model: &RaftModel, prefixes: &[&str]) -> Path<State, Action> {
        let init = model.init_states().remove(0);
        let mut state = init.clone();
        let mut taken = Vec::new();
        for prefix in prefixes {
            let (a, next) = model
                .next_steps(&state)
                .into_iter()
                .find(|(a, _)| action(a).starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} from\n{state:?}"));
            taken.push(a);
            state = next;
        }
        Path::from_actions(model, init, taken.iter()).expect("a path")
    }

    #[test]
    fn a_state_reads_the_same_with_and_without_alternate() {
        let m = model(2, 0);
        let init = &m.init_states()[0];
        assert_eq!(format!("{init:#?}"), format!("{init:?}"));
        assert_eq!(
            format!("{init:#?}"),
            "servers:\n\
             \x20 n0 Follower t0 voted - log [] commit 0, timers: Election\n\
             \x20 n1 Follower t0 voted - log [] commit 0, timers: Election\n\
             clients:\n\
             \x20 client 2 request #1 pending\n\
             network: 2 messages in flight\n\
             \x20 2 → 0 : ClientRequest #1\n\
             \x20 2 → 1 : ClientRequest #1\n\
             history:\n\
             \x20 leaders [], applied [], conflict overwritten: no, crashes 0, recovered [], \
             rejoined: no, client operations 1 (linearizable)\n"
        );
    }

    #[test]
    fn an_election_and_a_replication_read_line_by_line() {
        let m = model(2, 0);
        let path = walk(
            &m,
            &[
                "0 Election timeout",
                "0 → 1 : RequestVote t1",
                "1 → 0 : RequestVoteResponse t1 granted",
                "2 → 0 : ClientRequest #1",
                "0 → 1 : AppendEntries t1 from n0 prev 0@0 [1@1(c2)]",
                "1 → 0 : AppendEntriesResponse t1 ok index 1",
            ],
        );
        let last = format!("{:#?}", path.last_state());
        for line in [
            "  n0 Leader t1 voted n0 log [1@1(c2)] commit 1, timers: Heartbeat",
            "  n1 Follower t1 voted n0 log [1@1(c2)] commit 0, timers: Election",
            "  0 → 2 : ClientReply #1 ok 0",
        ] {
            assert!(last.lines().any(|l| l == line), "{line:?} in\n{last}");
        }
        // n1 has absorbed the AppendEntries and n0 has counted the answer:
        // with no crash left, it is forgotten.
        assert!(!last.contains("AppendEntries t1"), "{last}");
        assert!(
            last.contains("leaders [t1 n0], applied [1@1(c2)], "),
            "{last}"
        );
        // The step that commits: before and after, what it sends, properties.
        let steps = path.clone().into_vec();
        let (before, Some(commit)) = &steps[steps.len() - 2] else {
            panic!("no last action");
        };
        let text = step(&m, before, commit);
        let always = m
            .properties()
            .iter()
            .filter(|p| p.expectation == Expectation::Always)
            .count();
        for line in [
            "step: 1 → 0 : AppendEntriesResponse t1 ok index 1",
            "  before: n0 Leader t1 voted n0 log [1@1(c2)] commit 0, timers: Heartbeat",
            "  after:  n0 Leader t1 voted n0 log [1@1(c2)] commit 1, timers: Heartbeat",
            "  sends 0 → 2 : ClientReply #1 ok 0",
            &format!("properties: all {always} `always` properties hold here"),
            "examples here: a leader is elected; an entry is committed",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(text.ends_with(&last), "{text}");
    }

    #[test]
    fn a_crashed_server_says_so() {
        let m = model(2, 1);
        let path = walk(&m, &["0 Election timeout", "0 crashes"]);
        let last = format!("{:#?}", path.last_state());
        assert!(
            last.lines()
                .any(|l| l
                    == "  n0 CRASHED t1 voted n0 log [] commit 0 (last state before the crash)"),
            "{last}"
        );
        assert!(last.contains(", crashes 1, "), "{last}");
    }

    /// Stateright's sequence diagram still renders through the wrapper, its
    /// arrows labelled with the one-line messages.
    #[test]
    fn the_sequence_diagram_renders_with_readable_labels() {
        let m = model(3, 0);
        let path = walk(
            &m,
            &[
                "0 Election timeout",
                "0 → 1 : RequestVote t1",
                "1 → 0 : RequestVoteResponse t1 granted",
            ],
        );
        let svg = m.as_svg(path).expect("an svg");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains(">0 server</text>"), "{svg}");
        assert!(svg.contains(">3 client</text>"), "{svg}");
        assert!(svg.contains(">Timeout(Election)</text>"), "{svg}");
        assert!(
            svg.contains(">RequestVote t1 from n0 last 0@0</text>"),
            "{svg}"
        );
        assert!(
            svg.contains(">RequestVoteResponse t1 granted</text>"),
            "{svg}"
        );
        // Two deliveries: two arrows.
        assert_eq!(svg.matches("marker-end='url(#arrow)'").count(), 2, "{svg}");
    }
}
