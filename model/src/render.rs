//! Compact, readable renderings of model actions and states, for
//! counterexamples and for Stateright's Explorer (the model state's `Debug`,
//! each step's description, the sequence diagram's labels).

use crate::model::state::{ClientState, ClientStatus, Cmd, Ghost, Msg, Network, Sm, State};
use crate::model::Envelope;
use crate::model::{Action, Effect, RaftModel};
use raft_spec::{ClientReply, Entry, Message, Payload, Role, Server};
use stateright::actor::Id;
use stateright::{Expectation, Model, Path};
use std::collections::HashMap;
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
            "AppendEntries t{} from {} prev {}@{} {} commit {}{}",
            m.term.0,
            m.leader_id,
            m.prev_log_term.0,
            m.prev_log_index.0,
            entries(&m.entries, m.prev_log_index.0 + 1),
            m.leader_commit.0,
            read_round(m.read_round)
        ),
        Message::AppendEntriesResponse(m) => format!(
            "AppendEntriesResponse t{} {} index {}{}{}",
            m.term.0,
            if m.success { "ok" } else { "rejected" },
            m.index.0,
            read_round(m.read_round),
            m.applied
                .map_or(String::new(), |a| format!(" applied {}", a.0))
        ),
        Message::ReadIndex(m) => format!(
            "ReadIndex t{} for client {} #{}",
            m.term.0, m.client_id.0, m.request_no
        ),
        Message::ReadIndexResponse(m) => format!(
            "ReadIndexResponse t{} for client {} #{} {}",
            m.term.0,
            m.client_id.0,
            m.request_no,
            m.index
                .map_or("not leader".to_string(), |i| format!("index {}", i.0))
        ),
    }
}

/// ` read round R` for a round of ReadIndex reads, nothing for none.
fn read_round(round: u64) -> String {
    if round == 0 {
        String::new()
    } else {
        format!(" read round {round}")
    }
}

/// A model message on one line.
pub fn message(msg: &Msg) -> String {
    match msg {
        Msg::Raft(m) => raft_message(m),
        Msg::Request { request_no, ack } if ack.is_applied() => {
            format!("ClientRequest #{request_no}")
        }
        Msg::Request { request_no, ack } => {
            format!("ClientRequest #{request_no} (ack {})", ack.name())
        }
        Msg::Read { request_no, mode } => format!("ClientRead #{request_no} ({})", mode.name()),
        Msg::Reply(answer) => match answer.reply {
            ClientReply::Ok(v) => format!("ClientReply #{} ok {v}", answer.request_no),
            ClientReply::Accepted { index, term } => format!(
                "ClientReply #{} accepted at {}@{}",
                answer.request_no, term.0, index.0
            ),
            ClientReply::NotLeader { leader_hint } => {
                let request_no = answer.request_no;
                match leader_hint {
                    Some(l) => format!("ClientReply #{request_no} not leader, try {l}"),
                    None => format!("ClientReply #{request_no} not leader, no leader known"),
                }
            }
            ClientReply::Superseded { applied } => format!(
                "ClientReply #{} superseded by #{applied}",
                answer.request_no
            ),
        },
    }
}

fn actor(id: Id) -> String {
    format!("{}", usize::from(id))
}

/// An action on one line.
pub fn action(action: &Action) -> String {
    match action {
        Action::Deliver { src, dst, msg } => {
            format!("{} → {} : {}", actor(*src), actor(*dst), message(msg))
        }
        Action::Drop(env) => format!(
            "drop {} → {} : {}",
            actor(env.src()),
            actor(env.dst()),
            message(&env.msg)
        ),
        Action::Timeout(id, timer) => format!("{} {:?} timeout", actor(*id), timer),
        Action::Crash(id) => format!("{} crashes", actor(*id)),
        Action::Recover(id) => format!("{} recovers", actor(*id)),
        Action::Sync(id) => format!("{} syncs its log", actor(*id)),
        Action::Invoke(id, to) => format!("{} sends its read to {}", actor(*id), actor(*to)),
    }
}

/// One server on one line, e.g. `n1 Leader t2 voted n1 log [1@1 2@2] commit 2`.
pub fn server(s: &Server<Sm>, crashed: bool) -> String {
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

fn client(c: &ClientState) -> String {
    let status = match c.status {
        ClientStatus::Pending => "pending".to_string(),
        ClientStatus::Done(v) => format!("done, got {v}"),
        ClientStatus::Accepted { term } => format!("acknowledged in term {}", term.0),
        ClientStatus::Idle => "not sent yet".to_string(),
    };
    format!("client {} request #{} {}", c.index, c.request_no, status)
}

/// Every actor of a state, one line each.
pub fn state(state: &State) -> String {
    let mut out = String::new();
    for slot in &state.servers {
        let _ = writeln!(out, "{}", server(slot.server(), slot.crashed));
    }
    for c in state.clients.iter() {
        let _ = writeln!(out, "{}", client(c));
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

/// Actor `i` of a state on one line: a server as [`server`] plus its
/// timers, a client as its request and status.
pub fn actor_line(state: &State, i: usize) -> Option<String> {
    if let Some(slot) = state.servers.get(i) {
        let mut line = server(slot.server(), slot.crashed);
        let timers = slot.timers();
        if !timers.is_empty() {
            let names: Vec<String> = timers.iter().map(|t| format!("{t:?}")).collect();
            let _ = write!(line, ", timers: {}", names.join(" "));
        }
        return Some(line);
    }
    state.client(i).map(client)
}

/// The messages in flight, one line each (`src → dst : message`), sorted
/// by sender, receiver and message; on an ordered network, each channel's
/// messages in delivery order.
pub fn network_lines(network: &Network) -> Vec<String> {
    network
        .envelopes()
        .iter()
        .map(|e| {
            format!(
                "{} → {} : {}",
                actor(e.src()),
                actor(e.dst()),
                message(&e.msg)
            )
        })
        .collect()
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
    let recovered: Vec<String> = ghost.recovered().map(|n| n.to_string()).collect();
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
    let servers: Vec<String> = (0..state.servers.len())
        .filter_map(|i| actor_line(state, i))
        .collect();
    let clients: Vec<String> = state.clients.iter().map(client).collect();
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
    section("history:".into(), &history_lines(&state.ghost));
    out
}

/// What the actor touched by `action` does in response: messages sent,
/// timers set or cancelled, state persisted, one line each. The effects are
/// the model's own ([`RaftModel::effects`]); nothing is decided here.
fn outputs(model: &RaftModel, last: &State, action: &Action) -> Vec<String> {
    let Some(id) = action.actor() else {
        return Vec::new();
    };
    model
        .effects(last, action)
        .iter()
        .map(|effect| match effect {
            Effect::Send(dst, msg) => format!(
                "sends {} → {} : {}",
                actor(Id::from(id)),
                actor(*dst),
                message(msg)
            ),
            Effect::SetTimer(t) => format!("sets the {t:?} timer"),
            Effect::CancelTimer(t) => format!("cancels the {t:?} timer"),
            Effect::Save => "persists its term, vote and log".to_string(),
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
    if let Some(i) = action.actor() {
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

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The sequence diagram of a path, as the Explorer shows it: one timeline
/// per actor (`0 server`, ..., `3 client`), an arrow from each message's
/// send to its delivery, labelled with the message, and a circle for each
/// timeout, crash and recovery. The layout is that of Stateright's own
/// actor-model diagrams, so the Explorer's styles apply.
pub fn sequence_diagram(model: &RaftModel, path: &Path<State, Action>) -> String {
    let steps = path.clone().into_vec();
    let actors = steps.first().map_or(0, |(s, _)| s.actors());
    let names: Vec<String> = (0..actors)
        .map(|i| {
            if i < model.config.servers {
                format!("{i} server")
            } else {
                format!("{i} client")
            }
        })
        .collect();
    let letter_px = 10;
    let widest = names.iter().map(|n| n.len() as u64).max().unwrap_or(0) * letter_px;
    let spacing = widest.max(100);
    let plot = |x: usize, y: usize| (x as u64 * spacing, y as u64 * 30);
    let (width, height) = plot(actors, steps.len());
    // Room for the event labels right of the last timeline.
    let width = width + 300;
    let mut svg = format!(
        "<svg version='1.1' baseProfile='full' width='{width}' height='{height}' \
         viewbox='-20 -20 {} {}' xmlns='http://www.w3.org/2000/svg'>",
        width + 20,
        height + 20
    );
    svg.push_str(
        "<defs><marker class='svg-event-shape' id='arrow' markerWidth='12' \
         markerHeight='10' refX='12' refY='5' orient='auto'>\
         <polygon points='0 0, 12 5, 0 10' /></marker></defs>",
    );
    for (i, name) in names.iter().enumerate() {
        let (x1, y1) = plot(i, 0);
        let (x2, y2) = plot(i, steps.len());
        let _ = writeln!(
            svg,
            "<line x1='{x1}' y1='{y1}' x2='{x2}' y2='{y2}' class='svg-actor-timeline' />"
        );
        let _ = writeln!(
            svg,
            "<text x='{x1}' y='{y1}' class='svg-actor-label'>{}</text>",
            escape(name)
        );
    }
    // When each message was sent (the step number; 0: before the path).
    let mut sent: HashMap<Envelope, usize> = HashMap::new();
    let mut labels = Vec::new();
    for (k, (state, action)) in steps.iter().enumerate() {
        let time = k + 1;
        let Some(action) = action else {
            continue;
        };
        let Some(i) = action.actor() else {
            continue;
        };
        match action {
            Action::Deliver { src, dst, msg } => {
                let key = Envelope::new(*src, *dst, *msg);
                let from = sent.get(&key).copied().unwrap_or(0);
                let (x1, y1) = plot(usize::from(*src), from);
                let (x2, y2) = plot(i, time);
                let _ = writeln!(
                    svg,
                    "<line x1='{x1}' x2='{x2}' y1='{y1}' y2='{y2}' marker-end='url(#arrow)' \
                     class='svg-event-line' />"
                );
                labels.push((i, time, message(msg)));
            }
            Action::Timeout(_, timer) => {
                labels.push((i, time, format!("Timeout({timer:?})")));
            }
            Action::Crash(_) => labels.push((i, time, "Crash".to_string())),
            Action::Recover(_) => labels.push((i, time, "Recover".to_string())),
            Action::Sync(_) => labels.push((i, time, "Sync".to_string())),
            Action::Invoke(..) => labels.push((i, time, "Invoke".to_string())),
            Action::Drop(_) => {}
        }
        if !matches!(action, Action::Deliver { .. }) {
            let (x, y) = plot(i, time);
            let _ = writeln!(
                svg,
                "<circle cx='{x}' cy='{y}' r='10' class='svg-event-shape' />"
            );
        }
        for effect in model.effects(state, action) {
            if let Effect::Send(dst, msg) = effect {
                sent.insert(Envelope::new(Id::from(i), dst, msg), time);
            }
        }
    }
    // Labels last, so that they are drawn over the shapes.
    for (i, time, label) in labels {
        let (x, y) = plot(i, time);
        let _ = writeln!(
            svg,
            "<text x='{x}' y='{y}' class='svg-event-label'>{}</text>",
            escape(&label)
        );
    }
    svg.push_str("</svg>");
    svg
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
