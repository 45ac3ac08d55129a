//! Flow control: how much a leader sends each follower, and when.
//!
//! Figure 2 leaves the pacing of AppendEntries open. Its literal reading
//! (every AppendEntries carries every entry from `next_index` on, and so does
//! every heartbeat) is what the model checks by default, and it chokes a real
//! cluster on large or lagging data: each heartbeat resends everything a
//! follower lacks. [`Replication`] bounds each message in entries and in bytes
//! and, with a `window`, paces each follower the way etcd-io/raft's
//! `tracker.Progress` does ([`Progress`]):
//!
//! - **Probe**: the leader does not know where the follower's log matches its
//!   own. It sends one AppendEntries (at most one batch of entries) when it
//!   enters the state, on each heartbeat and on each answer, and none when it
//!   appends: one message per round trip or heartbeat, whatever the log does.
//! - **Replicate**: the follower acknowledged the leader's log up to
//!   `next_index - 1`. The leader pipelines: it sends each batch as soon as it
//!   has it, moves `next_index` past it at once (optimistically), and keeps at
//!   most `window` batches unacknowledged. Heartbeats carry no entries; their
//!   `prev_log_index` is `next_index - 1`, so a follower that missed a batch
//!   rejects the heartbeat and the leader goes back to probing.
//!
//! A rejection also tells the leader the follower's last log index
//! ([`AppendEntriesResponse::last_log_index`]), so a follower far behind is
//! probed from its end of log at once rather than one index per round trip,
//! and a follower whose log went back below what it acknowledged (it lost
//! records that were synced: a failed disk, a restored backup) is *repaired*:
//! probed again from its real end, where Figure 2's leader, which ignores a
//! rejection at or below `match_index`, would never send it those entries
//! again. The repair changes no state of the leader's: `match_index` never
//! decreases (the loss is outside Raft's storage assumption, and what was
//! counted stays counted) and `next_index > match_index` always, on which
//! the model's dead-message reduction rests. The model has no storage loss,
//! so there a repair only ever answers a reordered stale rejection, which
//! costs a resend of entries the follower holds (docs/model.md, "Flow
//! control").
//!
//! None of this changes what a follower accepts: every AppendEntries still
//! passes Figure 2's consistency check, so the safety argument is the
//! paper's, and the checker checks it for these rules too.
//!
//! [`AppendEntriesResponse::last_log_index`]: crate::AppendEntriesResponse::last_log_index

use super::{Effects, Server};
use crate::message::AppendEntries;
use crate::types::{Entry, LogIndex, NodeId, Payload, Term};
use crate::{Message, Output, StateMachine};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::num::{NonZeroU64, NonZeroUsize};

/// How a leader paces AppendEntries: configuration, not state, and the same
/// on every server of a cluster (a follower reads `window` to know whether
/// to tell its last log index in a rejection).
///
/// [`Replication::default`] is Figure 2 read literally: no bound, no window,
/// heartbeats carrying entries. raft-node runs [`Replication::runtime`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Replication {
    /// The most entries one AppendEntries carries (`None`: no cap), like
    /// hashicorp/raft's `MaxAppendEntries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_append_entries: Option<NonZeroUsize>,
    /// The most bytes of entries ([`entry_bytes`]) one AppendEntries carries
    /// (`None`: no cap), like etcd-io/raft's `MaxSizePerMsg`. An entry larger
    /// than the cap travels alone, so every entry can be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_append_bytes: Option<NonZeroU64>,
    /// Per-follower flow control (`None`: Figure 2's pacing): at most this
    /// many batches of entries unacknowledged per follower in
    /// [`Progress::Replicate`], like etcd-io/raft's `MaxInflightMsgs`. See
    /// the module docs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<NonZeroUsize>,
    /// Whether heartbeats carry no entries, as Figure 2 words them ("empty
    /// AppendEntries RPCs (heartbeat)"), without a window: entries then
    /// travel only when appended, after a rejection and in the next batch
    /// after an acknowledgement. The default (`false`) sends every heartbeat
    /// with the entries from `next_index` on, which also resends what the
    /// network lost. With a window, heartbeats are empty in
    /// [`Progress::Replicate`] and carry one batch in [`Progress::Probe`],
    /// whatever this says.
    ///
    /// An empty heartbeat is where a follower's `min` in AppendEntries
    /// receiver rule 5 matters: the follower may hold entries past
    /// `prev_log_index` that conflict with the leader's committed ones, and
    /// only the `min` keeps it from committing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_heartbeats: bool,
    /// Whether a leader writes its own new entries to its disk in parallel
    /// with sending them (Raft thesis §10.2.1). Its [`crate::Persist`] of
    /// them is then marked [`crate::Persist::parallel`]: the step's sends
    /// need not wait for it. The leader counts itself toward a majority only
    /// up to its [`crate::VolatileState::durable_index`], which the runtime
    /// moves with [`crate::Input::Synced`] once the write is durable. With
    /// `false` (Figure 2) every persist is durable before the step's sends
    /// leave, and a leader's own log counts at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parallel_write: bool,
    /// Whether a leader steps down when a majority has not answered it
    /// within an election timeout (CheckQuorum, [`crate::server::lease`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check_quorum: bool,
    /// Whether followers keep a quiet period after hearing from their
    /// leader and leaders hold leases ([`crate::server::lease`]): needed by
    /// [`crate::ReadMode::Lease`], which without it is served as
    /// [`crate::ReadMode::ReadIndex`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leases: bool,
    /// Whether a follower's AppendEntriesResponse reports its last applied
    /// index ([`crate::AppendEntriesResponse::applied`]), which the
    /// acknowledgement levels [`crate::Ack::QuorumApplied`] and
    /// [`crate::Ack::AllApplied`] count. A leader then also sends its new
    /// commit index at once while such a write waits, rather than at the
    /// next heartbeat.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub report_applied: bool,
}

impl Replication {
    /// What raft-node runs by default: batches of at most 1 MiB
    /// ([`Replication::RUNTIME_MAX_APPEND_BYTES`]), a window of 64 batches
    /// per follower, no entry cap, the leader's own write in parallel,
    /// CheckQuorum and leases on, applied indices reported.
    pub fn runtime() -> Self {
        Replication {
            max_append_entries: None,
            max_append_bytes: NonZeroU64::new(Self::RUNTIME_MAX_APPEND_BYTES),
            window: NonZeroUsize::new(64),
            empty_heartbeats: false,
            parallel_write: true,
            check_quorum: true,
            leases: true,
            report_applied: true,
        }
    }

    /// The byte cap of [`Replication::runtime`]: 1 MiB, etcd's default
    /// `MaxSizePerMsg`.
    pub const RUNTIME_MAX_APPEND_BYTES: u64 = 1 << 20;

    /// Whether this is Figure 2's pacing with no bound at all.
    pub fn is_figure_2(&self) -> bool {
        *self == Replication::default()
    }
}

/// A leader's view of one follower's replication (etcd-io/raft's
/// `StateProbe` and `StateReplicate`), kept only with a
/// [`Replication::window`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Progress {
    /// Where the follower's log matches is not known: one AppendEntries per
    /// answer or heartbeat.
    Probe,
    /// The follower matched up to `next_index - 1` as far as the leader
    /// knows; batches are pipelined.
    Replicate {
        /// The last index of each batch sent and not yet acknowledged, oldest
        /// first; at most `window` of them.
        inflight: VecDeque<LogIndex>,
    },
}

/// Bytes an entry adds to an AppendEntries beyond its command: a bound on
/// the encoding of its term, session and request number.
pub const ENTRY_OVERHEAD: u64 = 32;

/// The size of `entry` that [`Replication::max_append_bytes`] counts:
/// [`StateMachine::command_bytes`] plus [`ENTRY_OVERHEAD`].
pub fn entry_bytes<S: StateMachine>(entry: &Entry<S::Command>) -> u64 {
    ENTRY_OVERHEAD
        + match &entry.payload {
            Payload::Noop => 0,
            Payload::Command { command, .. } => S::command_bytes(command),
        }
}

impl<S: StateMachine> Server<S> {
    /// The replication settings ([`Server::with_replication`]).
    pub fn replication(&self) -> Replication {
        self.replication
    }

    /// Runs with the replication settings `replication` (the default:
    /// Figure 2's pacing, see [`Replication`]). Configuration, not state:
    /// set it again after every [`Server::restart`], before the first step
    /// (with [`Replication::leases`], a server restarted with a term
    /// starts quiet: [`crate::server::lease`]).
    #[must_use]
    pub fn with_replication(mut self, replication: Replication) -> Self {
        self.replication = replication;
        self.quiet_at_boot();
        self
    }

    /// The entries one AppendEntries from `next` carries: as many as the
    /// caps allow, and at least one if the log has any.
    pub(super) fn batch_from(&self, next: LogIndex) -> Vec<Entry<S::Command>> {
        let entries = self.persistent.log.entries_from(next);
        let r = &self.replication;
        if r.max_append_entries.is_none() && r.max_append_bytes.is_none() {
            return entries.to_vec();
        }
        let max_entries = r.max_append_entries.map_or(usize::MAX, NonZeroUsize::get);
        let max_bytes = r.max_append_bytes.map_or(u64::MAX, NonZeroU64::get);
        let mut bytes = 0u64;
        let mut n = 0;
        for entry in entries.iter().take(max_entries) {
            bytes = bytes.saturating_add(entry_bytes::<S>(entry));
            if n > 0 && bytes > max_bytes {
                break;
            }
            n += 1;
        }
        entries[..n].to_vec()
    }

    /// Builds an AppendEntries to a follower whose next index is `next`,
    /// with `entries`.
    pub(super) fn append_entries(
        &self,
        next: LogIndex,
        entries: Vec<Entry<S::Command>>,
    ) -> Message<S::Command> {
        let prev_log_index = next.prev();
        Message::AppendEntries(AppendEntries {
            term: self.persistent.current_term,
            leader_id: self.id,
            prev_log_index,
            prev_log_term: self
                .persistent
                .log
                .term_at(prev_log_index)
                .unwrap_or(Term(0)),
            entries,
            leader_commit: self.volatile.commit_index,
            read_round: self.current_read_round(),
        })
    }

    /// `next_index[peer]`, within `1..=last_index + 1`.
    pub(super) fn next_of(&self, peer: NodeId) -> LogIndex {
        self.volatile
            .next_index
            .get(&peer)
            .copied()
            .unwrap_or(LogIndex(1))
            .max(LogIndex(1))
            .min(self.persistent.log.last_index().next())
    }

    /// With a window: what the leader sends `peer` when it appends, on a
    /// heartbeat (`heartbeat`) and when it becomes leader. A follower in
    /// probe gets one batch on a heartbeat or election and nothing on an
    /// append; one in replicate gets every batch the window admits, and an
    /// empty AppendEntries on a heartbeat.
    pub(super) fn pace(
        &mut self,
        peer: NodeId,
        heartbeat: bool,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        match self.volatile.progress.get(&peer) {
            Some(Progress::Replicate { .. }) => {
                self.fill(peer, fx);
                if heartbeat {
                    let message = self.append_entries(self.next_of(peer), Vec::new());
                    fx.rest.push(Output::Send { to: peer, message });
                }
            }
            Some(Progress::Probe) | None if heartbeat => self.probe(peer, fx),
            Some(Progress::Probe) | None => {}
        }
    }

    /// Sends `peer` one AppendEntries from its `next_index`, with one batch.
    fn probe(&mut self, peer: NodeId, fx: &mut Effects<S::Command, S::Output>) {
        let next = self.next_of(peer);
        let message = self.append_entries(next, self.batch_from(next));
        fx.rest.push(Output::Send { to: peer, message });
    }

    /// In replicate: sends `peer` batches from `next_index` while the window
    /// has room, moving `next_index` past each.
    fn fill(&mut self, peer: NodeId, fx: &mut Effects<S::Command, S::Output>) {
        let window = self
            .replication
            .window
            .map_or(usize::MAX, NonZeroUsize::get);
        loop {
            let next = self.next_of(peer);
            let room = matches!(
                self.volatile.progress.get(&peer),
                Some(Progress::Replicate { inflight }) if inflight.len() < window
            );
            if !room || next > self.persistent.log.last_index() {
                return;
            }
            let entries = self.batch_from(next);
            let last = LogIndex(next.0 + entries.len() as u64 - 1);
            let message = self.append_entries(next, entries);
            fx.rest.push(Output::Send { to: peer, message });
            self.volatile.next_index.insert(peer, last.next());
            if let Some(Progress::Replicate { inflight }) = self.volatile.progress.get_mut(&peer) {
                inflight.push_back(last);
            }
        }
    }

    /// With a window: `peer` acknowledged its log up to `index` (the
    /// leader's `match_index` has been raised already). In probe, the answer
    /// to the current probe (`index >= next_index - 1`) switches to
    /// replicate; an older one is stale. In replicate the acknowledged
    /// batches leave the window. Either way `next_index` moves past `index`,
    /// and the window is filled again.
    pub(super) fn paced_ack(
        &mut self,
        peer: NodeId,
        index: LogIndex,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        let next = self.next_of(peer);
        match self.volatile.progress.get_mut(&peer) {
            Some(Progress::Replicate { inflight }) => {
                while inflight.front().is_some_and(|&i| i <= index) {
                    inflight.pop_front();
                }
            }
            Some(Progress::Probe) | None if index.next() >= next => {
                self.volatile.progress.insert(
                    peer,
                    Progress::Replicate {
                        inflight: VecDeque::new(),
                    },
                );
            }
            Some(Progress::Probe) | None => return,
        }
        if index.next() > next {
            self.volatile.next_index.insert(peer, index.next());
        }
        self.fill(peer, fx);
    }

    /// With a window: `peer` rejected an AppendEntries at `index` and says
    /// its log ends at `last_log_index`.
    ///
    /// - Above `match_index` the follower's log does not match at `index`:
    ///   back to probe from `min(index, last_log_index + 1)` (never at or
    ///   below `match_index`), unless a probe there already went out. In
    ///   probe, only the answer to the current probe (`index = next_index -
    ///   1`) counts; an older rejection is stale.
    /// - At or below `match_index` a rejection is stale (the follower matched
    ///   there when it acknowledged), unless it answers the latest message
    ///   (`index = next_index - 1`) and its last log index is below
    ///   `match_index`: the follower lost entries it had acknowledged. The
    ///   leader then sends it the batch that follows its real end (repair),
    ///   and changes nothing of its own state: `match_index` never decreases
    ///   and `next_index` stays above it, so the follower gets one batch per
    ///   rejection, that is per heartbeat, until it has caught up to
    ///   `next_index - 1` again.
    pub(super) fn paced_reject(
        &mut self,
        peer: NodeId,
        index: LogIndex,
        last_log_index: Option<LogIndex>,
        fx: &mut Effects<S::Command, S::Output>,
    ) {
        let matched = self
            .volatile
            .match_index
            .get(&peer)
            .copied()
            .unwrap_or_default();
        let next = self.next_of(peer);
        let probing = !matches!(
            self.volatile.progress.get(&peer),
            Some(Progress::Replicate { .. })
        );
        let hint = last_log_index.map_or(index, LogIndex::next);
        let target = if index > matched {
            if probing && index.next() != next {
                return;
            }
            index.min(hint).max(matched.next())
        } else {
            if let Some(last) = last_log_index.filter(|&l| l < matched && index.next() == next) {
                let from = last.next();
                let message = self.append_entries(from, self.batch_from(from));
                fx.rest.push(Output::Send { to: peer, message });
            }
            return;
        };
        if target >= next {
            return;
        }
        self.volatile.next_index.insert(peer, target);
        self.volatile.progress.insert(peer, Progress::Probe);
        self.probe(peer, fx);
    }
}
