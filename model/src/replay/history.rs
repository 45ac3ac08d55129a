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
//! (Raft §8: a retried request is answered from the session table). The
//! check computes that from the log alone, with a map of its own, so it
//! does not rest on the code it checks.

use raft_spec::{ClientId, Entry, Kv, KvCommand, KvOutput, NodeId, Payload, Server, StateMachine};
use std::collections::{BTreeMap, HashMap};
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

/// The committed log as far as any server committed it, and the
/// acknowledgements released.
#[derive(Default)]
pub(super) struct ClientHistory {
    /// The longest committed prefix seen (State Machine Safety, which the
    /// replay checks at every step, makes every server's committed prefix
    /// a prefix of it).
    committed: Vec<Entry<KvCommand>>,
    acks: Vec<Ack>,
}

impl ClientHistory {
    /// Extends the committed log with what `server` has committed beyond
    /// it: time proportional to the new entries.
    pub(super) fn observe(&mut self, server: &Server<Kv>) {
        let commit = server.volatile.commit_index.0;
        let have = self.committed.len() as u64;
        if commit > have {
            let entries = server.log().entries();
            let (from, to) = (have as usize, (commit as usize).min(entries.len()));
            self.committed.extend(entries[from..to].iter().cloned());
        }
    }

    /// Records an acknowledgement.
    pub(super) fn acknowledge(&mut self, ack: Ack) {
        self.acks.push(ack);
    }

    /// The number of acknowledgements recorded.
    pub(super) fn acknowledged(&self) -> usize {
        self.acks.len()
    }

    /// The first acknowledgement (in the order they were released) that is
    /// not in the committed log, or whose reply is not what applying the
    /// log returns.
    pub(super) fn check(&self) -> Option<Violation> {
        // (client, request) -> (index, output) of its first application.
        let mut outcome: HashMap<(ClientId, u64), (usize, KvOutput)> = HashMap::new();
        let mut sessions: BTreeMap<ClientId, u64> = BTreeMap::new();
        let mut map = Kv::default();
        for (i, entry) in self.committed.iter().enumerate() {
            let Payload::Command {
                client_id,
                request_no,
                command,
            } = &entry.payload
            else {
                continue;
            };
            if sessions
                .get(client_id)
                .is_some_and(|last| *last >= *request_no)
            {
                continue;
            }
            sessions.insert(*client_id, *request_no);
            outcome.insert((*client_id, *request_no), (i + 1, map.apply(command)));
        }
        self.acks.iter().find_map(|ack| {
            let reason = match outcome.get(&(ack.client_id, ack.request_no)) {
                None => format!(
                    "server {} acknowledged request {} of client {} (reply {:?}), but it is not in the committed log ({} entries): an acknowledged operation was lost",
                    ack.server.0,
                    ack.request_no,
                    ack.client_id.0,
                    ack.value,
                    self.committed.len()
                ),
                Some((index, value)) if *value != ack.value => format!(
                    "server {} answered request {} of client {} with {:?}, but applied in log order (index {index} of the committed log) it returns {value:?}: the history is not linearizable",
                    ack.server.0, ack.request_no, ack.client_id.0, ack.value
                ),
                Some(_) => return None,
            };
            Some(Violation {
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
    use raft_spec::{LogIndex, Term};

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

    fn put(k: &str, v: &str) -> KvCommand {
        KvCommand::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    fn ack(client: u64, request_no: u64, value: Option<&str>) -> Ack {
        Ack {
            client_id: ClientId(client),
            request_no,
            value: value.map(str::to_string),
            server: NodeId(1),
            file: Arc::from("n1"),
            line: 7,
        }
    }

    fn history(entries: Vec<Entry<KvCommand>>) -> ClientHistory {
        ClientHistory {
            committed: entries,
            acks: Vec::new(),
        }
    }

    #[test]
    fn replies_that_follow_the_log_pass_and_a_wrong_or_lost_one_is_named() {
        let log = vec![
            entry(1, 1, put("a", "1")),
            entry(2, 1, put("a", "2")),
            // A retry of a request already applied changes nothing.
            entry(1, 1, put("a", "1")),
            entry(1, 2, KvCommand::Get { key: "a".into() }),
        ];
        let mut h = history(log.clone());
        h.acknowledge(ack(1, 1, None));
        h.acknowledge(ack(2, 1, Some("1")));
        h.acknowledge(ack(1, 2, Some("2")));
        assert!(h.check().is_none());
        assert_eq!(h.acknowledged(), 3);

        // A read that returns a value the log never gave it at that point.
        let mut h = history(log.clone());
        h.acknowledge(ack(1, 2, Some("1")));
        let v = h.check().unwrap();
        assert!(v.reason.contains("not linearizable"), "{}", v.reason);
        assert!(v.reason.contains("index 4"), "{}", v.reason);

        // An acknowledged write that no server committed.
        let mut h = history(log[..2].to_vec());
        h.acknowledge(ack(1, 2, Some("2")));
        let v = h.check().unwrap();
        assert!(v.reason.contains("was lost"), "{}", v.reason);
        assert_eq!((v.ack.line, &*v.ack.file), (7, "n1"));
    }

    #[test]
    fn the_committed_log_grows_with_what_servers_commit() {
        let (mut server, _) = Server::<Kv>::new(NodeId(1), vec![NodeId(1)]);
        server.step(raft_spec::Input::ElectionTimeout);
        server.step(raft_spec::Input::ClientRequest {
            client_id: ClientId(3),
            request_no: 1,
            command: put("k", "v"),
        });
        assert_eq!(server.volatile.commit_index, LogIndex(1));
        let mut h = ClientHistory::default();
        h.observe(&server);
        h.observe(&server);
        assert_eq!(h.committed.len(), 1);
        h.acknowledge(ack(3, 1, None));
        assert!(h.check().is_none());
    }
}
