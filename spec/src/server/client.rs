//! Client interaction (Raft §8): a request appended by the leader, a
//! session per client so that a command is applied at most once, and the
//! apply loop that answers the client.

use super::{Ack, ClientReply, Effects, Occasion, Output, Role, Server, Session};
use crate::state_machine::StateMachine;
use crate::types::{ClientId, LogIndex, Payload};

impl<S: StateMachine> Server<S> {
    /// Raft §8: a leader appends the command and replies once it is committed
    /// and applied; other servers redirect the client to the leader they know.
    /// A request already applied is answered from the session table (an
    /// older one than the client's latest applied is answered
    /// [`ClientReply::Superseded`]), and one already appended in the current
    /// term is not appended twice.
    pub(super) fn handle_client_request(
        &mut self,
        client_id: ClientId,
        request_no: u64,
        command: S::Command,
        ack: Ack,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        if self.volatile.role != Role::Leader {
            return self.redirect(client_id, request_no, fx);
        }
        let session = self.volatile.sessions.get(&client_id);
        let reply = match Session::of(session.map(|(n, _)| *n), request_no) {
            Session::New => None,
            Session::Applied => session.map(|(_, output)| ClientReply::Ok(output.clone())),
            Session::Superseded { applied } => Some(ClientReply::Superseded { applied }),
        };
        if let Some(reply) = reply {
            fx.rest.push(Output::ClientReply {
                client_id,
                request_no,
                reply,
            });
            return;
        }
        // Already appended in this term: it will be answered once applied.
        // A copy from an earlier term is not enough, since only an entry of
        // the current term can commit it (Raft §5.4.2).
        let term = self.persistent.current_term;
        let from = self.volatile.last_applied.next();
        let pending = self.persistent.log.entries_from(from).iter().position(|e| {
            e.term == term
                && matches!(&e.payload, Payload::Command { client_id: c, request_no: r, .. }
                    if *c == client_id && *r == request_no)
        });
        if let Some(offset) = pending {
            if !ack.is_applied() {
                let index = LogIndex(from.0 + offset as u64);
                self.volatile
                    .pending_acks
                    .insert(index, (client_id, request_no, ack));
            }
            return;
        }
        if !ack.is_applied() {
            let index = self.persistent.log.last_index().next();
            self.volatile
                .pending_acks
                .insert(index, (client_id, request_no, ack));
        }
        self.append_to_own_log(
            Payload::Command {
                client_id,
                request_no,
                command,
            },
            fx,
        );
        self.replicate(Occasion::Append, fx);
        self.advance_commit_index(fx);
    }

    /// A server that does not lead answers a request with the leader it
    /// knows (Raft §8).
    pub(super) fn redirect(
        &self,
        client_id: ClientId,
        request_no: u64,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        fx.rest.push(Output::ClientReply {
            client_id,
            request_no,
            reply: ClientReply::NotLeader {
                leader_hint: self.volatile.leader_hint,
            },
        });
    }

    /// The writes whose [`Ack`] point is reached are answered: those before
    /// the apply [`ClientReply::Accepted`], those after it (levels 5 and 6)
    /// with the result the apply recorded in the client's session. Called
    /// at the end of every step of a leader with writes pending. The step's
    /// persist comes before its replies ([`Output`]), so a write answered at
    /// [`Ack::Stored`] in the step that appends it is durable before the
    /// answer leaves; with the leader's write in parallel, it waits for
    /// [`Input::Synced`].
    pub(super) fn answer_early_acks(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        let own = match self.volatile.durable_index {
            Some(durable) => durable,
            None => self.persistent.log.last_index(),
        };
        let commit = self.volatile.commit_index;
        let everywhere = self
            .volatile
            .match_index
            .values()
            .copied()
            .fold(own, LogIndex::min);
        let (quorum_applied, all_applied) = if self.awaits_applies(LogIndex(u64::MAX)) {
            self.applied_by_quorum_and_all()
        } else {
            (LogIndex(0), LogIndex(0))
        };
        let reached: Vec<LogIndex> = self
            .volatile
            .pending_acks
            .iter()
            .filter(|(&index, (_, _, ack))| match ack {
                Ack::Stored => index <= own,
                Ack::Committed => index <= commit,
                Ack::Replicated => index <= everywhere,
                Ack::Applied => false,
                Ack::QuorumApplied => index <= quorum_applied,
                Ack::AllApplied => index <= all_applied,
            })
            .map(|(&index, _)| index)
            .collect();
        let term = self.persistent.current_term;
        for index in reached {
            if let Some((client_id, request_no, ack)) = self.volatile.pending_acks.remove(&index) {
                let reply = match self.volatile.sessions.get(&client_id) {
                    Some((n, output)) if ack.counts_applied() && *n == request_no => {
                        ClientReply::Ok(output.clone())
                    }
                    // Superseded by a later request of its client when
                    // applied: applied, but without a result to give.
                    _ => ClientReply::Accepted { index, term },
                };
                fx.rest.push(Output::ClientReply {
                    client_id,
                    request_no,
                    reply,
                });
            }
        }
    }

    /// Fig. 2 (All servers): "If commitIndex > lastApplied: increment
    /// lastApplied, apply log[lastApplied] to state machine". A command whose
    /// (client id, request number) was applied before is not applied again
    /// (Raft §8). The leader answers the client.
    pub(super) fn apply_committed(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        while self.volatile.last_applied < self.volatile.commit_index {
            let index = self.volatile.last_applied.next();
            let Some(entry) = self.persistent.log.get(index) else {
                // commit_index never passes the end of the log (see the
                // invariant on `commit_index`), so this cannot happen.
                break;
            };
            self.volatile.last_applied = index;
            fx.rest.push(Output::Applied {
                index,
                term: entry.term,
            });
            let Payload::Command {
                client_id,
                request_no,
                command,
            } = &entry.payload
            else {
                continue;
            };
            let session = self.volatile.sessions.get(client_id);
            let output = match (Session::of(session.map(|(n, _)| *n), *request_no), session) {
                (Session::Applied, Some((_, output))) => output.clone(),
                (Session::Superseded { .. }, _) => continue,
                _ => {
                    let output = self.volatile.state_machine.apply(command);
                    self.volatile
                        .sessions
                        .insert(*client_id, (*request_no, output.clone()));
                    output
                }
            };
            let held = matches!(self.volatile.pending_acks.get(&index),
                Some((c, n, ack)) if ack.counts_applied() && c == client_id && n == request_no);
            if self.volatile.role == Role::Leader && !held {
                fx.rest.push(Output::ClientReply {
                    client_id: *client_id,
                    request_no: *request_no,
                    reply: ClientReply::Ok(output),
                });
            }
        }
    }

    /// The highest index a majority of the servers has applied, and the
    /// highest every server has: the leader's own `last_applied` and what
    /// its peers reported ([`VolatileState::applied_index`]; a peer that
    /// reported nothing counts as 0).
    ///
    /// [`VolatileState::applied_index`]: crate::VolatileState::applied_index
    fn applied_by_quorum_and_all(&self) -> (LogIndex, LogIndex) {
        let mut applied: Vec<LogIndex> = self
            .peers
            .iter()
            .map(|p| {
                self.volatile
                    .applied_index
                    .get(p)
                    .copied()
                    .unwrap_or_default()
            })
            .collect();
        applied.push(self.volatile.last_applied);
        applied.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = applied.len() / 2;
        let all = applied.last().copied().unwrap_or_default();
        (applied.get(quorum).copied().unwrap_or_default(), all)
    }

    /// Whether a write answered only once followers applied it waits at or
    /// below `index`.
    pub(super) fn awaits_applies(&self, index: LogIndex) -> bool {
        self.volatile
            .pending_acks
            .range(..=index)
            .any(|(_, (_, _, ack))| ack.counts_applied())
    }
}
