//! Dead messages: messages no actor will ever act on are forgotten.
//!
//! This is a sound reduction: a dead message's delivery changes no actor
//! and sends nothing that is not itself dead, so removing it is the same as
//! delaying it forever, which every network semantics allows (on an ordered
//! channel, the same as delivering it at once). The set of reachable server,
//! client and ghost states is unchanged; only states that differ in dead
//! messages are merged. `tests/model_check.rs` checks this on several
//! configurations (seeded bugs that change which messages matter, the
//! non-duplicating network, the protocol options) by comparing the reachable
//! projections with and without it ([`RaftModel::without_garbage_collection`]).
//!
//! The Raft rules (which messages a server ignores, refuses or absorbs for
//! good) are raft-spec's; what is added here is what the bounds imply (no
//! term above the bound, no crash left) and what the duplicating network
//! implies (a message in flight stays deliverable).

use super::state::{node_id, Cmd, Msg, State};
use super::RaftModel;
use crate::config::NetworkKind;
use raft_spec::{
    acceptance, ignores_forever_with_bug, refusal, refuses_forever, ClientReply, Message, NodeId,
    Timer,
};
use stateright::actor::{Envelope, Id};

impl RaftModel {
    /// Whether delivering `msg` from `src` to `dst` can never change
    /// anything, in this state or any later one: it changes no actor and
    /// sends nothing that is not itself dead.
    pub(crate) fn is_dead(&self, state: &State, src: Id, dst: Id, msg: &Msg) -> bool {
        let i = usize::from(dst);
        if let Some(c) = state.client(i) {
            let Msg::Reply(answer) = msg else {
                return false;
            };
            let done = matches!(c.status, super::state::ClientStatus::Done(_));
            // A redirect only makes the client resend its request to the
            // hinted leader. On a duplicating network that request is
            // already deliverable (the client sent it to every server at
            // start; a copy that was dropped is indistinguishable from one
            // that is delayed), so the redirect adds no behaviour.
            let redirect_is_moot = match answer.reply {
                ClientReply::NotLeader { leader_hint: None } => true,
                ClientReply::NotLeader { .. } => {
                    self.config.network == NetworkKind::UnorderedDuplicating
                }
                ClientReply::Ok(_) => false,
            };
            return done || redirect_is_moot;
        }
        match msg {
            Msg::Raft(m) if i < state.servers.len() => {
                self.ignores_forever(state, i, node_id(src), m)
                    || self.answer_teaches_nothing(state, src, i, m)
                    || self.absorbed_for_good(state, src, i, m)
            }
            _ => false,
        }
    }

    /// Whether server `i` ignores `message` from `from` now and forever: a
    /// live server as [`raft_spec::Server::ignores_forever`] says, a crashed
    /// one as [`ignores_forever_with_bug`] says of its persisted term (it
    /// restarts as a follower of that term).
    pub(crate) fn ignores_forever(
        &self,
        state: &State,
        i: usize,
        from: NodeId,
        message: &Message<Cmd>,
    ) -> bool {
        let Some(slot) = state.servers.get(i) else {
            return false;
        };
        if slot.crashed {
            ignores_forever_with_bug(
                slot.persisted().current_term,
                None,
                message,
                self.config.bug,
            )
        } else {
            slot.server().ignores_forever(from, message)
        }
    }

    /// Whether `m` is a request (RequestVote or AppendEntries) whose only
    /// effect, now and later, is a refusal that is already in flight or that
    /// its sender ignores.
    ///
    /// Its recipient refuses it for good ([`refuses_forever`]: the request is
    /// of an older term, or asks for a vote the recipient has given to
    /// another candidate in that term), answering with a [`refusal`] of its
    /// term at the time. A recipient at the highest term the bounds allow
    /// stays there, so its refusal is always the same message; if that is in
    /// flight on the duplicating network ([`Self::in_flight_for_good`]), a
    /// delivery changes nothing, whatever the sender's term. Otherwise the
    /// sender must be at the highest term: then no answer can be of a higher
    /// term than its own (no explored state has a term above the bound), an
    /// answer of an older term is stale, and the sender is asked whether it
    /// ignores, now and forever, the answer of its own term
    /// ([`raft_spec::Server::ignores_forever`]; for a crashed sender,
    /// [`ignores_forever_with_bug`] of its persisted term). A refused vote is
    /// always ignored; a rejected AppendEntries is ignored by a follower, and
    /// by a leader for which it is stale. Each of these lasts, and a step
    /// that sends only such a dead answer is a step that sends nothing.
    fn answer_teaches_nothing(&self, state: &State, src: Id, dst: usize, m: &Message<Cmd>) -> bool {
        let (Some(recipient), Some(sender)) = (state.view(dst), state.view(usize::from(src)))
        else {
            return false;
        };
        if !refuses_forever(
            recipient.current_term,
            recipient.voted_for,
            m,
            self.config.bug,
        ) {
            return false;
        }
        let ignored = sender.current_term.0 >= self.config.max_term
            && refusal(sender.current_term, m).is_some_and(|answer| {
                self.ignores_forever(state, usize::from(src), recipient.id, &answer)
            });
        // At the bound the recipient's refusal is one message forever. The
        // network is looked up last: it costs a message built and hashed.
        ignored
            || (recipient.current_term.0 >= self.config.max_term
                && refusal(recipient.current_term, m).is_some_and(|answer| {
                    Self::in_flight_for_good(state, Id::from(dst), src, answer)
                }))
    }

    /// Whether `m` is an AppendEntries that its recipient has absorbed for
    /// good and whose answers its sender ignores.
    ///
    /// The recipient is a live follower that absorbs `m`
    /// ([`raft_spec::Server::absorbs`]: it holds the entries and has
    /// committed as far as `m` allows) and has its election timer set
    /// already, so delivering `m` changes nothing there and only answers
    /// [`acceptance`]. That lasts while it stays a follower of `m`'s term,
    /// given that it never restarts: so no crash may be left in the bound,
    /// since a restart loses the commit index and the leader it knew. It also
    /// rests on the safety properties holding until then; a path that breaks
    /// one does so first in a state reached without such a delivery (none of
    /// them changes a server), so the checker still reports it.
    ///
    /// The sender must ignore the acceptance forever, or the acceptance must
    /// be in flight on the duplicating network already
    /// ([`Self::in_flight_for_good`]). Once the recipient moves to a later
    /// term, `m` is refused ([`refusal`]) with that term; when `m`'s term is
    /// below the bound, the sender must therefore be at the bound already and
    /// ignore a refusal of its own term, as in
    /// [`Self::answer_teaches_nothing`] (a refusal of a lower term is stale).
    /// Seeded bugs that break the argument turn it off
    /// ([`raft_spec::Server::absorbs`]).
    fn absorbed_for_good(&self, state: &State, src: Id, dst: usize, m: &Message<Cmd>) -> bool {
        let Message::AppendEntries(request) = m else {
            return false;
        };
        if usize::from(state.ghost.crashes) < self.config.crashes {
            return false;
        }
        let Some(slot) = state.servers.get(dst).filter(|s| !s.crashed) else {
            return false;
        };
        let Some(sender) = state.view(usize::from(src)) else {
            return false;
        };
        let recipient = slot.server();
        if !slot.timer_set(Timer::Election) || !recipient.absorbs(m) {
            return false;
        }
        let ignores = |answer: &Message<Cmd>| {
            self.ignores_forever(state, usize::from(src), recipient.id, answer)
        };
        let answer = acceptance(request);
        if !ignores(&answer) && !Self::in_flight_for_good(state, Id::from(dst), src, answer) {
            return false;
        }
        m.term().0 >= self.config.max_term
            || (sender.current_term.0 >= self.config.max_term
                && refusal(sender.current_term, m).is_some_and(|answer| ignores(&answer)))
    }

    /// Whether `message` from `src` to `dst` is in flight on the duplicating
    /// network, where it stays deliverable until it is dead (a delivery does
    /// not consume it, and loss is explored as delay): sending it again then
    /// changes nothing, now or later.
    fn in_flight_for_good(state: &State, src: Id, dst: Id, message: Message<Cmd>) -> bool {
        state.network.kind() == NetworkKind::UnorderedDuplicating
            && state.network.contains_raft(src, dst, &message)
    }

    /// Forgets messages that no actor will ever act on ([`Self::is_dead`]).
    ///
    /// Whether a message is dead depends only on the states of its recipient
    /// and its sender, and a step changes the state of one actor only (the
    /// one that received, timed out, crashed or recovered). Every state this
    /// model produces has had its dead messages removed, and the initial
    /// state holds none (client requests are never dead), so after a step of
    /// actor `stepped` only the messages to or from it can be newly dead: the
    /// others are not looked at. `None` looks at every message.
    pub(crate) fn collect_dead_messages(&self, state: &mut State, stepped: Option<Id>) {
        let involved = |e: &Envelope<Msg>| stepped.is_none_or(|a| a == e.src || a == e.dst);
        let shared: &State = state;
        let mut dead = shared
            .network
            .envelopes()
            .iter()
            .enumerate()
            .filter(|(_, e)| involved(e) && self.is_dead(shared, e.src, e.dst, &e.msg))
            .map(|(at, _)| at)
            .peekable();
        // Most steps make nothing dead: no allocation then.
        if dead.peek().is_some() {
            let dead: Vec<usize> = dead.collect();
            state.network.remove_positions(&dead);
        }
    }
}
