//! The client history of a replay: every reply a node let out (its
//! released markers, trace version 3) against the committed log.
//!
//! The log is the linearization the check proposes: a request's entry is
//! appended after the request arrived, and its reply is released after the
//! entry was applied (the replayer checks each reply against the step that
//! emitted it, and each release against the batch's steps), so ordering the
//! operations by their place in the committed log respects real time. The
//! history is then linearizable exactly when every acknowledged operation
//! is in the committed log and its reply is what the key-value map returns
//! when the log is applied in order, each `(client, request number)` once
//! (Raft §8: a retried request is answered from the session table, the
//! rule `raft_spec::Session` states). The check computes that from the log
//! alone, with a map of its own, so it does not rest on the server's state
//! machine or session table. It applies the committed log as it
//! grows (memory: one outcome per request, not the log), checks each
//! acknowledgement when it is released, and at the end those whose request
//! was not committed yet when they were.
//!
//! A read served without the log (`raft_spec::ReadMode::ReadIndex`,
//! `Lease`, `Follower` or `FollowerReadIndex`) has no place in the log. It is linearizable when its value
//! is the key's at some index of the committed log from the last write
//! answered before the read arrived to what is committed when its answer is
//! released: it must see every write that had completed before it began,
//! and may see any committed since. The check keeps each key's values by
//! index for that.

use raft_spec::{ClientId, Kv, KvOutput, NodeId, Payload, Server, Session, StateMachine};
use std::collections::HashMap;
use std::sync::Arc;

/// An acknowledgement: a reply `Ok` that a node released.
#[derive(Clone, Debug)]
pub(super) struct Ack {
    pub(super) client_id: ClientId,
    pub(super) request_no: u64,
    pub(super) value: KvOutput,
    /// The node that released it, and where its released marker is.
    pub(super) server: NodeId,
    pub(super) file: Arc<str>,
    pub(super) line: u64,
}

/// What an acknowledged operation did wrong.
#[derive(Clone, Debug)]
pub(super) struct Violation {
    pub(super) ack: Ack,
    pub(super) reason: String,
}

/// The committed log as far as any server committed it, applied in order
/// to a map of the history's own, and the acknowledgements released.
#[derive(Default)]
pub(super) struct ClientHistory {
    /// Entries of the committed log applied so far (State Machine Safety,
    /// which the replay checks at every step, makes every server's
    /// committed prefix a prefix of one log).
    applied: u64,
    map: Kv,
    /// The last request applied of each client (Raft §8's session table).
    sessions: HashMap<ClientId, u64>,
    /// `(client, request)` -> index and output of its first application.
    outcomes: HashMap<(ClientId, u64), (u64, KvOutput)>,
    /// Acknowledgements of requests not in the committed log when they
    /// were released.
    waiting: Vec<Ack>,
    acknowledged: u64,
    /// The highest log index of a write whose answer has been released.
    completed: u64,
    /// Each key's values from the committed log: `(index, value after)`.
    versions: HashMap<String, Vec<(u64, KvOutput)>>,
    /// Reads served without the log: the key and `completed` when each
    /// arrived.
    reads: HashMap<(ClientId, u64), (String, u64)>,
}

impl ClientHistory {
    /// Applies what `server` has committed beyond the entries applied so
    /// far: time proportional to the new entries.
    pub(super) fn observe(&mut self, server: &Server<Kv>) {
        let commit = server.volatile.commit_index.0;
        if commit <= self.applied {
            return;
        }
        let entries = server.log().entries();
        let (from, to) = (self.applied as usize, (commit as usize).min(entries.len()));
        for (i, entry) in entries[from..to].iter().enumerate() {
            let Payload::Command {
                client_id,
                request_no,
                command,
            } = &entry.payload
            else {
                continue;
            };
            if Session::of(self.sessions.get(client_id).copied(), *request_no) != Session::New {
                continue;
            }
            self.sessions.insert(*client_id, *request_no);
            let output = self.map.apply(command);
            let index = (from + i + 1) as u64;
            if !matches!(command, raft_spec::KvCommand::Get { .. }) {
                let key = command.key();
                let now = self.map.get(key).map(raft_spec::Value::from);
                self.versions
                    .entry(key.to_string())
                    .or_default()
                    .push((index, now));
            }
            self.outcomes
                .insert((*client_id, *request_no), (index, output));
        }
        self.applied = to as u64;
    }

    /// What is wrong with `ack` against the log applied so far, if
    /// anything: `None` also when its request is not in it yet.
    fn judge(&self, ack: &Ack, at_end: bool) -> Option<String> {
        match self.outcomes.get(&(ack.client_id, ack.request_no)) {
            None if at_end => Some(format!(
                "server {} acknowledged request {} of client {} (reply {:?}), but it is not in the committed log ({} entries): an acknowledged operation was lost",
                ack.server.0, ack.request_no, ack.client_id.0, ack.value, self.applied
            )),
            None => None,
            Some((index, value)) if *value != ack.value => Some(format!(
                "server {} answered request {} of client {} with {:?}, but applied in log order (index {index} of the committed log) it returns {value:?}: the history is not linearizable",
                ack.server.0, ack.request_no, ack.client_id.0, ack.value
            )),
            Some(_) => None,
        }
    }

    /// A read of `key` served without the log arrives at a server.
    pub(super) fn read_arrives(&mut self, client_id: ClientId, request_no: u64, key: &str) {
        let completed = self.completed;
        self.reads
            .entry((client_id, request_no))
            .or_insert_with(|| (key.to_string(), completed));
    }

    /// The key's value at index `at` of the committed log.
    fn value_at(&self, key: &str, at: u64) -> KvOutput {
        let versions = self
            .versions
            .get(key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let before = versions.partition_point(|(i, _)| *i <= at);
        before
            .checked_sub(1)
            .and_then(|k| versions.get(k))
            .and_then(|(_, v)| v.clone())
    }

    /// What is wrong with the answer `ack` to a read of `key` that arrived
    /// when the writes through index `from` had been answered, if anything.
    fn judge_read(&self, ack: &Ack, key: &str, from: u64) -> Option<String> {
        let mut seen = vec![self.value_at(key, from)];
        if let Some(versions) = self.versions.get(key) {
            seen.extend(
                versions
                    .iter()
                    .filter(|(i, _)| *i > from && *i <= self.applied)
                    .map(|(_, v)| v.clone()),
            );
        }
        (!seen.contains(&ack.value)).then(|| {
            format!(
                "server {} answered read {} of client {} (key {key:?}) with {:?}, but from index {from} (the last write answered before the read arrived) to index {} (committed when it was answered) the key held only {seen:?}: a stale read, the history is not linearizable",
                ack.server.0, ack.request_no, ack.client_id.0, ack.value, self.applied
            )
        })
    }

    /// Records an acknowledgement as it is released; the violation, if its
    /// request is in the committed log with another outcome.
    pub(super) fn acknowledge(&mut self, ack: Ack) -> Option<Violation> {
        self.acknowledged += 1;
        if let Some((key, from)) = self.reads.get(&(ack.client_id, ack.request_no)) {
            let reason = self.judge_read(&ack, key, *from);
            return reason.map(|reason| Violation { ack, reason });
        }
        if let Some((index, _)) = self.outcomes.get(&(ack.client_id, ack.request_no)) {
            self.completed = self.completed.max(*index);
        }
        if let Some(reason) = self.judge(&ack, false) {
            return Some(Violation { ack, reason });
        }
        if !self.outcomes.contains_key(&(ack.client_id, ack.request_no)) {
            self.waiting.push(ack);
        }
        None
    }

    /// The number of acknowledgements recorded.
    pub(super) fn acknowledged(&self) -> usize {
        self.acknowledged as usize
    }

    /// At the end: the first acknowledgement (in the order they were
    /// released) that was not committed when it was released and whose
    /// request never reached the committed log, or did with another
    /// outcome.
    pub(super) fn check(&self) -> Option<Violation> {
        self.waiting.iter().find_map(|ack| {
            self.judge(ack, true).map(|reason| Violation {
                ack: ack.clone(),
                reason,
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raft_spec::{Entry, KvCommand, Log, LogIndex, PersistentState, Term};

    fn entry(client: u64, request_no: u64, command: KvCommand) -> Entry<KvCommand> {
        Entry {
            term: Term(1),
            payload: Payload::Command {
                client_id: ClientId(client),
                request_no,
                command,
            },
        }
    }

    fn ack(client: u64, request_no: u64, value: Option<&str>) -> Ack {
        Ack {
            client_id: ClientId(client),
            request_no,
            value: value.map(Into::into),
            server: NodeId(1),
            file: Arc::from("n1"),
            line: 7,
        }
    }

    /// A one-server cluster that has committed `entries`.
    fn committed(entries: Vec<Entry<KvCommand>>) -> Server<Kv> {
        let persistent = PersistentState {
            current_term: Term(1),
            voted_for: None,
            log: Log::from_entries(entries),
        };
        let (mut server, _) = Server::<Kv>::restart(NodeId(1), vec![NodeId(1)], persistent);
        server.volatile.commit_index = server.log().last_index();
        server
    }

    /// The first violation of `acks` against a committed log of `entries`,
    /// as they are released, then at the end.
    fn verdict(entries: Vec<Entry<KvCommand>>, acks: Vec<Ack>) -> Option<Violation> {
        let mut h = ClientHistory::default();
        h.observe(&committed(entries));
        let now = acks.into_iter().find_map(|a| h.acknowledge(a));
        now.or_else(|| h.check())
    }

    /// A read served without the log passes with any value the key held
    /// from the last write answered before it arrived to what is committed
    /// when it is answered, and is named stale with an older one.
    #[test]
    fn a_read_outside_the_log_must_see_the_writes_answered_before_it() {
        let log = vec![
            entry(1, 1, KvCommand::put("a", "1")),
            entry(1, 2, KvCommand::put("a", "2")),
        ];
        let mut h = ClientHistory::default();
        h.observe(&committed(log[..1].to_vec()));
        assert!(h.acknowledge(ack(1, 1, None)).is_none());
        // Arrives after the first write's answer, before the second's.
        h.read_arrives(ClientId(9), 1, "a");
        h.observe(&committed(log.clone()));
        assert!(h.acknowledge(ack(9, 1, Some("1"))).is_none());
        assert!(h.acknowledge(ack(1, 2, Some("1"))).is_none());
        h.read_arrives(ClientId(9), 2, "a");
        assert!(h.acknowledge(ack(9, 2, Some("2"))).is_none());
        h.read_arrives(ClientId(9), 3, "a");
        let v = h.acknowledge(ack(9, 3, Some("1"))).unwrap();
        assert!(v.reason.contains("stale read"), "{}", v.reason);
        h.read_arrives(ClientId(9), 4, "a");
        let v = h.acknowledge(ack(9, 4, None)).unwrap();
        assert!(v.reason.contains("from index 2"), "{}", v.reason);
        assert!(h.check().is_none());
    }

    #[test]
    fn replies_that_follow_the_log_pass_and_a_wrong_or_lost_one_is_named() {
        let log = vec![
            entry(1, 1, KvCommand::put("a", "1")),
            entry(2, 1, KvCommand::put("a", "2")),
            // A retry of a request already applied changes nothing.
            entry(1, 1, KvCommand::put("a", "1")),
            entry(1, 2, KvCommand::Get { key: "a".into() }),
        ];
        let acks = vec![ack(1, 1, None), ack(2, 1, Some("1")), ack(1, 2, Some("2"))];
        assert!(verdict(log.clone(), acks).is_none());

        // A read that returns a value the log never gave it at that point.
        let v = verdict(log.clone(), vec![ack(1, 2, Some("1"))]).unwrap();
        assert!(v.reason.contains("not linearizable"), "{}", v.reason);
        assert!(v.reason.contains("index 4"), "{}", v.reason);

        // An acknowledged write that no server committed.
        let v = verdict(log[..2].to_vec(), vec![ack(1, 2, Some("2"))]).unwrap();
        assert!(v.reason.contains("was lost"), "{}", v.reason);
        assert_eq!((v.ack.line, &*v.ack.file), (7, "n1"));

        // One released before the replay saw it committed is checked once
        // it is.
        let mut h = ClientHistory::default();
        h.observe(&committed(log[..2].to_vec()));
        assert!(h.acknowledge(ack(1, 2, Some("1"))).is_none());
        h.observe(&committed(log.clone()));
        let v = h.check().unwrap();
        assert!(v.reason.contains("not linearizable"), "{}", v.reason);
        assert_eq!(h.acknowledged(), 1);
    }

    #[test]
    fn the_committed_log_grows_with_what_servers_commit() {
        let (mut server, _) = Server::<Kv>::new(NodeId(1), vec![NodeId(1)]);
        server.step(raft_spec::Input::ElectionTimeout);
        server.step(raft_spec::Input::ClientRequest {
            client_id: ClientId(3),
            request_no: 1,
            command: KvCommand::put("k", "v"),
            ack: raft_spec::Ack::Applied,
        });
        assert_eq!(server.volatile.commit_index, LogIndex(1));
        let mut h = ClientHistory::default();
        h.observe(&server);
        h.observe(&server);
        assert_eq!(h.applied, 1);
        assert!(h.acknowledge(ack(3, 1, None)).is_none());
        assert!(h.check().is_none());
    }
}
