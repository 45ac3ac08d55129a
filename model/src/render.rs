//! Compact, readable renderings of model actions and server states, for
//! counterexamples and the Explorer.

use crate::actors::{ActorState, ClientStatus, Cmd, Msg};
use crate::model::{Action, State};
use raft_spec::{ClientReply, Entry, Message, Payload, Role, Server};
use stateright::actor::{ActorModelAction, Id};
use std::fmt::Write;

fn entries(entries: &[Entry<Cmd>], first_index: u64) -> String {
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
        Msg::Reply {
            request_no,
            reply: ClientReply::Ok(v),
        } => format!("ClientReply #{request_no} ok {v}"),
        Msg::Reply {
            request_no,
            reply: ClientReply::NotLeader { leader_hint },
        } => match leader_hint {
            Some(l) => format!("ClientReply #{request_no} not leader, try {l}"),
            None => format!("ClientReply #{request_no} not leader, no leader known"),
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
                let _ = writeln!(out, "{}", server(&s.0, crashed));
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
