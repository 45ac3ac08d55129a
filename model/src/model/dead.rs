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
//!
//! Whether a message to a server is dead depends on the two servers' states
//! and on whether some answer is in flight (a verdict); each thread
//! remembers the verdicts it has reached, by the servers' states and the
//! message (all interned).

use super::intern::Ref;
use super::memo::{Memo, MEMO_CAPACITY};
use super::state::{ClientStatus, Cmd, Envelope, Msg, Network, State};
use super::step::view_key;
use super::RaftModel;
use crate::config::NetworkKind;
use raft_spec::reduction::{acceptance, ignores_forever_with_bug, refusal, refuses_forever};
use raft_spec::{ClientReply, Message, NodeId, Timer};
use smallvec::SmallVec;
use stateright::actor::Id;
use std::cell::RefCell;

/// Whether a message to a server is dead, apart from the network: dead, or
/// dead if one of these answers (from its recipient to its sender) is in
/// flight (none: alive).
#[derive(Clone, Copy)]
struct Verdict {
    dead: bool,
    if_in_flight: [Option<Envelope>; 2],
}

impl Verdict {
    fn holds(&self, network: &Network) -> bool {
        self.dead
            || self
                .if_in_flight
                .iter()
                .flatten()
                .any(|e| network.contains(e))
    }

    fn dead_if_in_flight(&mut self, e: Envelope) {
        if let Some(free) = self.if_in_flight.iter_mut().find(|x| x.is_none()) {
            *free = Some(e);
        }
    }
}

type Verdicts = Memo<(u64, u64, u64), Verdict>;

thread_local! {
    /// The verdicts this thread has reached (for one model at a time: they
    /// depend on the bounds).
    static VERDICTS: RefCell<Verdicts> = RefCell::new(Memo::new(MEMO_CAPACITY));
}

/// Whether `e` carries a RequestVote or AppendEntries response.
fn is_response(e: &Envelope) -> bool {
    matches!(
        e.msg.get().raft(),
        Some(Message::RequestVoteResponse(_) | Message::AppendEntriesResponse(_))
    )
}

impl RaftModel {
    /// Whether delivering `e` can never change anything, in this state or
    /// any later one: it changes no actor and sends nothing that is not
    /// itself dead.
    pub(crate) fn is_dead(&self, state: &State, e: &Envelope) -> bool {
        VERDICTS.with(|memo| {
            let mut memo = memo.borrow_mut();
            memo.for_model(self.memo_tag);
            self.is_dead_with(&mut memo, state, e)
        })
    }

    /// [`Self::is_dead`] with this thread's memo of verdicts at hand.
    fn is_dead_with(&self, memo: &mut Verdicts, state: &State, e: &Envelope) -> bool {
        let i = usize::from(e.dst);
        if let Some(c) = state.client(i) {
            let Msg::Reply(answer) = e.msg.get() else {
                return false;
            };
            let done = c.status != ClientStatus::Pending;
            // A redirect only makes the client resend its request to the
            // hinted leader. On a duplicating network that request is
            // already deliverable if the client sent it there before (a
            // writer sent it to every server at start; a copy that was
            // dropped is indistinguishable from one that is delayed), so
            // the redirect adds no behaviour. A reader sent its read to one
            // server: its redirect is moot once the read to the hinted
            // leader is in flight (requests to servers are never dead, so
            // it stays so).
            let redirect_is_moot = match answer.reply {
                ClientReply::NotLeader { leader_hint: None } => true,
                ClientReply::NotLeader {
                    leader_hint: Some(leader),
                } => {
                    self.config.network == NetworkKind::UnorderedDuplicating
                        && (!self.is_reader(i - self.config.servers)
                            || state.network.contains(&Envelope::new(
                                Id::from(i),
                                Id::from(leader.0 as usize),
                                self.request(i, answer.request_no),
                            )))
                }
                ClientReply::Ok(_) | ClientReply::Accepted { .. } => false,
                // Never sent to a model client (each sends one request);
                // a client would ignore it.
                ClientReply::Superseded { .. } => true,
            };
            return done || redirect_is_moot;
        }
        let j = usize::from(e.src);
        let (Some(dst), Some(src)) = (state.servers.get(i), state.servers.get(j)) else {
            return false;
        };
        if e.msg.get().raft().is_none() {
            return false;
        }
        let crashes_left = usize::from(state.ghost.crashes) < self.config.crashes;
        let ((src_key, src_crashed), (dst_key, dst_crashed)) = (view_key(src), view_key(dst));
        let key = (
            src_key,
            dst_key,
            u64::from(e.msg.index())
                | (u64::from(src_crashed) << 32)
                | (u64::from(dst_crashed) << 33)
                | (u64::from(crashes_left) << 34)
                | (u64::from(dst.timers) << 35),
        );
        memo.get_or(key, || self.verdict(state, e))
            .holds(&state.network)
    }

    /// [`Self::is_dead`] for a Raft message to a server, apart from the
    /// network.
    fn verdict(&self, state: &State, e: &Envelope) -> Verdict {
        let (src, dst) = (usize::from(e.src), usize::from(e.dst));
        let Some(m) = e.msg.get().raft() else {
            return Verdict {
                dead: false,
                if_in_flight: [None; 2],
            };
        };
        let from = NodeId(src as u64);
        let mut verdict = Verdict {
            dead: self.ignores_forever(state, dst, from, m),
            if_in_flight: [None; 2],
        };
        if !verdict.dead {
            self.answer_teaches_nothing(state, src, dst, m, &mut verdict);
        }
        if !verdict.dead {
            self.absorbed_for_good(state, src, dst, m, &mut verdict);
        }
        verdict
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
    fn answer_teaches_nothing(
        &self,
        state: &State,
        src: usize,
        dst: usize,
        m: &Message<Cmd>,
        verdict: &mut Verdict,
    ) {
        let (Some(recipient), Some(_)) = (state.view(dst), state.servers.get(src)) else {
            return;
        };
        if !refuses_forever(
            recipient.current_term,
            recipient.voted_for,
            m,
            self.config.bug,
        ) {
            return;
        }
        if self.sender_ignores_refusal_at_bound(state, src, recipient.id, m) {
            verdict.dead = true;
            return;
        }
        // At the bound the recipient's refusal is one message forever.
        if recipient.current_term.0 >= self.config.max_term {
            if let Some(answer) = refusal(recipient.current_term, m) {
                self.in_flight_for_good(dst, src, answer, verdict);
            }
        }
    }

    /// Whether the sender `src` of request `m` is at the highest term the
    /// bounds allow and ignores, now and forever, a refusal of `m` of its
    /// own term from `recipient` (no answer can be of a higher term, and one
    /// of a lower term is stale).
    fn sender_ignores_refusal_at_bound(
        &self,
        state: &State,
        src: usize,
        recipient: NodeId,
        m: &Message<Cmd>,
    ) -> bool {
        state.view(src).is_some_and(|sender| {
            sender.current_term.0 >= self.config.max_term
                && refusal(sender.current_term, m)
                    .is_some_and(|answer| self.ignores_forever(state, src, recipient, &answer))
        })
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
    fn absorbed_for_good(
        &self,
        state: &State,
        src: usize,
        dst: usize,
        m: &Message<Cmd>,
        verdict: &mut Verdict,
    ) {
        let Message::AppendEntries(request) = m else {
            return;
        };
        if usize::from(state.ghost.crashes) < self.config.crashes {
            return;
        }
        let Some(slot) = state.servers.get(dst).filter(|s| !s.crashed) else {
            return;
        };
        let recipient = slot.server();
        if !slot.timer_set(Timer::Election) || !recipient.absorbs(m) {
            return;
        }
        let ignores =
            |answer: &Message<Cmd>| self.ignores_forever(state, src, recipient.id, answer);
        let lasts = m.term().0 >= self.config.max_term
            || self.sender_ignores_refusal_at_bound(state, src, recipient.id, m);
        if !lasts {
            return;
        }
        let answer = acceptance(request);
        if ignores(&answer) {
            verdict.dead = true;
        } else {
            self.in_flight_for_good(dst, src, answer, verdict);
        }
    }

    /// A delivery is dead if `message` from `src` to `dst` is in flight on
    /// the duplicating network, where it stays deliverable until it is dead
    /// (a delivery does not consume it, and loss is explored as delay):
    /// sending it again then changes nothing, now or later.
    fn in_flight_for_good(
        &self,
        src: usize,
        dst: usize,
        message: Message<Cmd>,
        verdict: &mut Verdict,
    ) {
        if self.config.network == NetworkKind::UnorderedDuplicating {
            verdict.dead_if_in_flight(Envelope::new(
                Id::from(src),
                Id::from(dst),
                Ref::new(Msg::Raft(message)),
            ));
        }
    }

    /// Forgets messages that no actor will ever act on ([`Self::is_dead`])
    /// after a step from `last` to `next` of actor `stepped` (`None`: any
    /// message may have become dead).
    ///
    /// Whether a message is dead depends only on the states of its sender
    /// and its recipient, on whether a crash is left, and on answers in
    /// flight from its recipient to its sender. Every state this model
    /// produces has had its dead messages removed, and the initial state
    /// holds none (client requests are never dead). A step changes the state
    /// of one actor only (the one that received, timed out, crashed or
    /// recovered) and adds only messages it sends; so only messages to or
    /// from that actor can be newly dead, and when its state is unchanged
    /// (it only sent), only the messages it sent (`sent`: those the network
    /// did not hold already) and the messages to it whose answer it sent.
    /// The others are not looked at.
    pub(crate) fn collect_dead_messages(
        &self,
        last: &State,
        next: &mut State,
        stepped: Option<Id>,
        sent: &[Envelope],
    ) {
        let Some(a) = stepped.map(|a| usize::from(a) as u8) else {
            return self.remove_dead(next, |_| true);
        };
        let i = usize::from(a);
        let unchanged = next.ghost.crashes == last.ghost.crashes
            && match (last.servers.get(i), next.servers.get(i)) {
                (Some(before), Some(after)) => before == after,
                _ => last.client(i) == next.client(i),
            };
        if !unchanged {
            // A response's verdict depends on its recipient alone (only
            // `ignores_forever` can call it dead), so the responses the
            // actor had sent keep theirs.
            return self.remove_dead(next, |e| {
                e.dst == a || (e.src == a && (!is_response(e) || sent.contains(e)))
            });
        }
        if sent.is_empty() {
            return;
        }
        self.remove_dead(next, |e| {
            sent.contains(e) || (e.dst == a && sent.iter().any(|s| s.dst == e.src))
        });
    }

    /// Removes the messages that `look_at` selects and that are dead.
    fn remove_dead(&self, state: &mut State, look_at: impl Fn(&Envelope) -> bool) {
        let shared: &State = state;
        let dead: SmallVec<[usize; 8]> = VERDICTS.with(|memo| {
            let mut memo = memo.borrow_mut();
            memo.for_model(self.memo_tag);
            shared
                .network
                .envelopes()
                .iter()
                .enumerate()
                .filter(|(_, e)| look_at(e) && self.is_dead_with(&mut memo, shared, e))
                .map(|(at, _)| at)
                .collect()
        });
        if !dead.is_empty() {
            state.network.remove_positions(&dead);
        }
    }
}
