//! CheckQuorum ([`Replication::check_quorum`]), and the quiet period and
//! lease reads ([`Replication::leases`]) (Raft thesis §6.2, §4.2.3, §6.4.1).
//!
//! - **CheckQuorum**: a leader keeps its election timer running; each time
//!   it fires, the leader checks that a majority (itself included) answered
//!   an AppendEntries of its term since the last check, and steps down to
//!   follower if not. A leader cut off from the majority stops serving
//!   within an election timeout. Leases do not rest on it (the lease
//!   timer ends a lease), but a deposed leader that never steps down keeps
//!   taking writes it cannot commit, and clients wait on it.
//! - **Quiet period** (thesis §4.2.3): a follower that hears from its leader
//!   sets its [`Timer::Quiet`], the minimum election timeout, and until it
//!   fires takes no message of a later term but an AppendEntries: it neither
//!   grants a vote nor moves to the later term. The thesis names RequestVote
//!   only; responses of a later term are held off too, since adopting their
//!   term would end the quiet period at once and free the vote. A server
//!   that restarts with a term is quiet too ([`QUIET_AT_BOOT`]) until it
//!   hears from a leader and its quiet timer fires, or its election timer
//!   fires: it may have answered a lease's round before it crashed.
//! - **Lease** (thesis §6.4.1): when a round of AppendEntries starts (see
//!   [`ReadMode::ReadIndex`](super::ReadMode::ReadIndex)) and no lease runs, the leader sets its
//!   [`Timer::Lease`]; once a majority answers that round or a later one,
//!   it holds the lease until the timer fires. The followers that answered
//!   heard it after the round started, so none of them takes a later term
//!   before its quiet timer fires, a minimum election timeout after; the
//!   runtime sets the lease timer to that timeout divided by the clock-drift
//!   bound, so the lease ends first, and while it lasts no other leader can
//!   be elected. A [`ReadMode::Lease`] read is then answered at the read
//!   index without a round (the leader still waits to have committed an
//!   entry of its term, and to have applied the index).
//!
//! The model checker has no clocks: it may fire any timer that is set, but
//! a follower's quiet and election timers not while the leader of its term
//! holds a lease timer started no later than the round it last heard (the
//! drift bound, docs/consistency.md); [`Bug::LeaseBeyondDrift`] drops
//! that order.
//!
//! [`Bug::LeaseBeyondDrift`]: crate::bugs::Bug::LeaseBeyondDrift
//!
//! [`Replication::check_quorum`]: super::Replication::check_quorum
//! [`Replication::leases`]: super::Replication::leases
//! [`ReadMode::Lease`]: super::ReadMode::Lease

use super::{Effects, Output, Role, Server, Timer};
use crate::message::Message;
use crate::state_machine::StateMachine;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};

/// [`VolatileState::quiet`](super::VolatileState::quiet) of a server that
/// restarted with a term: it may have heard any round of any leader of a
/// term up to its own before it crashed.
pub const QUIET_AT_BOOT: u64 = u64::MAX;

/// A leader's lease, while its [`Timer::Lease`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The round of AppendEntries at whose start the timer was set.
    pub round: u64,
    /// Whether a majority has answered that round or a later one.
    pub held: bool,
}

impl<S: StateMachine> Server<S> {
    /// Whether CheckQuorum is on.
    pub(super) fn check_quorum(&self) -> bool {
        self.replication.check_quorum
    }

    /// Whether the quiet period and leases are on.
    pub(super) fn leases(&self) -> bool {
        self.replication.leases
    }

    /// Whether this server, quiet, takes no part in `message` of a later
    /// term (see the module docs).
    pub(super) fn stays_quiet(&self, message: &Message<S::Command>) -> bool {
        self.volatile.quiet.is_some() && !matches!(message, Message::AppendEntries(_))
    }

    /// A follower accepted an AppendEntries of its leader's term carrying
    /// `round`: its quiet period starts again.
    pub(super) fn hear_leader(&mut self, round: u64, fx: &mut Effects<S::Command, S::Output>) {
        if !self.leases() {
            return;
        }
        let heard = self.volatile.quiet.map_or(round, |q| q.max(round));
        self.volatile.quiet = Some(heard);
        fx.rest.push(Output::SetTimer(Timer::Quiet));
    }

    /// A leader heard from `from` in its term (CheckQuorum).
    pub(super) fn note_active(&mut self, from: NodeId) {
        if self.check_quorum() {
            self.volatile.recent_active.insert(from);
        }
    }

    /// Whether an answer of this leader's term may still count for
    /// CheckQuorum, now or later: always, with CheckQuorum on, since every
    /// check empties `recent_active` and the same answer delivered again
    /// then counts anew.
    pub(crate) fn activity_matters(&self) -> bool {
        self.check_quorum() && self.volatile.role == Role::Leader
    }

    /// A leader's election timer fired (CheckQuorum): it stays leader, and
    /// checks again an election timeout later, if a majority answered since
    /// the last check; otherwise it steps down.
    pub(super) fn check_quorum_timeout(&mut self, fx: &mut Effects<S::Command, S::Output>) {
        let active = self.volatile.recent_active.len() + 1;
        if self.is_majority(active) {
            self.volatile.recent_active.clear();
            fx.rest.push(Output::SetTimer(Timer::Election));
            return;
        }
        let term = self.persistent.current_term;
        self.become_follower(term, fx);
        self.volatile.leader_hint = None;
    }

    /// The lease timer fired: the lease is over.
    pub(super) fn handle_lease_timeout(&mut self) {
        self.volatile.lease = None;
    }

    /// Whether a lease waits for its round to be confirmed.
    pub(super) fn lease_unconfirmed(&self) -> bool {
        self.volatile.lease.is_some_and(|l| !l.held)
    }

    /// Whether this leader holds a lease now.
    pub(super) fn lease_held(&self) -> bool {
        self.volatile.lease.is_some_and(|l| l.held)
    }

    /// A round of AppendEntries starts as `round` (a read's, or the
    /// election's first): with no lease running, the lease timer starts
    /// with it.
    pub(super) fn lease_round_starts(
        &mut self,
        round: u64,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        if self.leases() && self.volatile.lease.is_none() {
            self.volatile.lease = Some(Lease { round, held: false });
            fx.rest.push(Output::SetTimer(Timer::Lease));
        }
    }

    /// The lease is held once a majority has answered its round.
    pub(super) fn lease_confirmed(&mut self, confirmed: u64) {
        if let Some(lease) = &mut self.volatile.lease {
            lease.held |= confirmed >= lease.round;
        }
    }

    /// Whether this leader's lease rests on `follower`'s quiet period: the
    /// leader holds a lease timer, and the follower is quiet having heard a
    /// round of this leader's term no earlier than the one the timer
    /// started with, or is quiet since its restart ([`QUIET_AT_BOOT`]) in a
    /// term at least the leader's (before the crash it may have answered
    /// any round of it). Under the drift bound, the follower's quiet and
    /// election timers then run out only after this lease: the order the
    /// model checker keeps (see the module docs).
    pub fn lease_rests_on(&self, follower: &Server<S>) -> bool {
        let (Some(lease), Some(heard)) = (self.volatile.lease, follower.volatile.quiet) else {
            return false;
        };
        let (term, theirs) = (self.current_term(), follower.current_term());
        self.volatile.role == Role::Leader
            && if heard == QUIET_AT_BOOT {
                term <= theirs
            } else {
                term == theirs && heard >= lease.round
            }
    }

    /// At a restart with a term, with CheckQuorum on: quiet from the start.
    pub(super) fn quiet_at_boot(&mut self) {
        let fresh = self.volatile.role == Role::Follower && self.volatile.commit_index.0 == 0;
        if self.leases() && self.persistent.current_term.0 > 0 && fresh {
            self.volatile.quiet = Some(QUIET_AT_BOOT);
        }
    }
}
