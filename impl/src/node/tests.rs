use super::*;
use crate::storage::MemStorage;
use raft_spec::trace::resume_trace;
use raft_spec::trace::{TraceError, TraceReader};
use raft_spec::{Persist, RequestVoteResponse, Term};
use std::sync::{Arc, Mutex};

/// Records storage, trace and I/O calls in one sequence, to check their
/// order.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// A trace writer that journals each line it receives: the step's input,
/// `synced S`, or `released S (as recorded)` / `released S (N items)`.
impl Write for Journal {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        for line in std::str::from_utf8(b).unwrap().lines() {
            let what = if let Ok(m) = serde_json::from_str::<raft_spec::trace::Synced>(line) {
                format!("synced {}", m.synced)
            } else if let Ok(m) = serde_json::from_str::<raft_spec::trace::Released<KvOutput>>(line)
            {
                match m.out {
                    Some(out) => format!("released {} ({} items)", m.released, out.len()),
                    None => format!("released {} (as recorded)", m.released),
                }
            } else if let Ok(s) = serde_json::from_str::<Step<KvCommand, KvOutput>>(line) {
                s.input.name().to_string()
            } else {
                "header".to_string()
            };
            self.push(format!("trace {what}"));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The simulation's in-memory trace file: it outlives the node writing it.
type Shared = crate::sim::TraceBuffer;

fn text(out: &Shared) -> String {
    String::from_utf8(out.bytes()).unwrap()
}

struct JournalStorage(Journal);

impl Storage for JournalStorage {
    fn append(&mut self, p: &Persist<KvCommand>) -> Result<(), StorageError> {
        let entries = p.log.as_ref().map_or(0, |w| w.entries.len());
        self.0.push(format!(
            "append hs={} entries={entries}",
            p.hard_state.is_some()
        ));
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.0.push("sync".into());
        Ok(())
    }
}

impl Io for Journal {
    fn send(&mut self, to: NodeId, message: Message<KvCommand>) {
        let detail = match &message {
            Message::AppendEntries(m) => format!(" entries={}", m.entries.len()),
            _ => String::new(),
        };
        self.push(format!("send {} {}{detail}", to.0, message.name()));
    }
    fn reply(&mut self, conn: ConnId, response: Response) {
        self.push(format!("reply {conn} {response:?}"));
    }
}

fn peers(n: u64) -> Peers {
    (1..=n)
        .map(|i| (NodeId(i), format!("127.0.0.1:{}", 7000 + i)))
        .collect()
}

fn options(n: u64) -> NodeOptions {
    NodeOptions {
        id: NodeId(1),
        peers: peers(n),
        cluster_id: "t".into(),
        timing: Timing::default(),
        seed: 1,
        trace: None,
        replication: Replication::default(),
        fifo_links: false,
    }
}

fn ms(n: u64) -> Time {
    Duration::from_millis(n)
}

fn put(k: &str) -> KvCommand {
    KvCommand::Put {
        key: k.into(),
        value: "v".into(),
    }
}

fn vote(term: u64) -> Event {
    Event::Peer {
        from: NodeId(2),
        message: Message::RequestVoteResponse(RequestVoteResponse {
            term: Term(term),
            vote_granted: true,
        }),
    }
}

#[test]
fn the_election_timeout_is_drawn_in_the_configured_range() {
    let j = Journal::default();
    for seed in 0..50 {
        let mut o = options(3);
        o.seed = seed;
        let node = Node::start(
            o,
            PersistentState::default(),
            MemStorage::default(),
            ms(10),
            &mut j.clone(),
        )
        .unwrap();
        let d = node.next_deadline().unwrap();
        assert!(d >= ms(160) && d <= ms(310), "{d:?}");
    }
}

#[test]
fn persistence_is_synced_before_any_send_or_reply_of_the_batch() {
    let j = Journal::default();
    let mut node = Node::start(
        options(3),
        PersistentState::default(),
        JournalStorage(j.clone()),
        ms(0),
        &mut j.clone(),
    )
    .unwrap();
    assert_eq!(j.take(), Vec::<String>::new());
    // The election timer fires: term and vote are synced before RequestVotes.
    node.handle(ms(400), vec![], &mut j.clone()).unwrap();
    assert_eq!(
        j.take(),
        vec![
            "append hs=true entries=0",
            "sync",
            "send 2 RequestVote",
            "send 3 RequestVote"
        ]
    );
    assert_eq!(node.server().role(), Role::Candidate);
    // A vote makes it leader; heartbeats go out (nothing to persist).
    node.handle(ms(401), vec![vote(1)], &mut j.clone()).unwrap();
    assert_eq!(
        j.take(),
        vec![
            "send 2 AppendEntries entries=0",
            "send 3 AppendEntries entries=0"
        ]
    );
    assert_eq!(node.next_deadline(), Some(ms(451)));
}

/// Node 1 of three started with `o`, elected at 401 ms (node 2's vote),
/// then handed three client requests in one batch at 402 ms; the journal
/// holds what that batch did.
fn leader_given_three_requests(o: NodeOptions) -> (Node<JournalStorage>, Journal) {
    let j = Journal::default();
    let mut node = Node::start(
        o,
        PersistentState::default(),
        JournalStorage(j.clone()),
        ms(0),
        &mut j.clone(),
    )
    .unwrap();
    node.handle(ms(400), vec![], &mut j.clone()).unwrap();
    node.handle(ms(401), vec![vote(1)], &mut j.clone()).unwrap();
    j.take();
    let requests = (1..=3).map(|i| Event::Request {
        conn: 9,
        client_id: ClientId(5),
        request_no: i,
        command: put(&format!("k{i}")),
        ack: raft_spec::Ack::Applied,
        read: None,
    });
    node.handle(ms(402), requests, &mut j.clone()).unwrap();
    (node, j)
}

#[test]
fn group_commit_covers_a_batch_and_coalesces_append_entries() {
    let (node, j) = leader_given_three_requests(options(3));
    // Three appends, one sync, then one AppendEntries per peer holding all three.
    assert_eq!(
        j.take(),
        vec![
            "append hs=false entries=1",
            "append hs=false entries=1",
            "append hs=false entries=1",
            "sync",
            "send 2 AppendEntries entries=3",
            "send 3 AppendEntries entries=3"
        ]
    );
    assert_eq!(node.counters().coalesced, 4);
    assert_eq!(node.counters().syncs, 2);
}

#[test]
fn a_node_with_a_cap_of_one_sends_at_most_one_entry_per_append_entries() {
    let cap = std::num::NonZeroUsize::new(1);
    let out = Shared::default();
    let mut o = options(3);
    o.trace = Some(TraceOut {
        out: Box::new(out.clone()),
        resume_after: None,
    });
    let replication = Replication {
        max_append_entries: cap,
        ..Replication::default()
    };
    o.replication = replication;
    let (mut node, j) = leader_given_three_requests(o);
    assert_eq!(node.server().replication(), replication);
    // Three appends, one sync, then one AppendEntries per peer holding only
    // the first of the three entries.
    assert_eq!(
        j.take(),
        vec![
            "append hs=false entries=1",
            "append hs=false entries=1",
            "append hs=false entries=1",
            "sync",
            "send 2 AppendEntries entries=1",
            "send 3 AppendEntries entries=1"
        ]
    );
    // Each acknowledgement brings the next batch of one, and the last
    // entry's acknowledgement brings none.
    for index in 1..=3 {
        let ack = Event::Peer {
            from: NodeId(2),
            message: Message::AppendEntriesResponse(raft_spec::AppendEntriesResponse {
                term: Term(1),
                success: true,
                index: raft_spec::LogIndex(index),
                last_log_index: None,
                read_round: 0,
                applied: None,
            }),
        };
        node.handle(ms(402 + index), vec![ack], &mut j.clone())
            .unwrap();
        let sent: Vec<String> = j
            .take()
            .into_iter()
            .filter(|l| l.starts_with("send"))
            .collect();
        let expected: Vec<&str> = if index < 3 {
            vec!["send 2 AppendEntries entries=1"]
        } else {
            vec![]
        };
        assert_eq!(sent, expected, "after the acknowledgement of {index}");
    }
    // A heartbeat resends from each peer's next index, still one entry at
    // most (peer 2 has everything; peer 3 still lacks all three).
    node.handle(ms(460), vec![], &mut j.clone()).unwrap();
    assert_eq!(
        j.take(),
        vec![
            "send 2 AppendEntries entries=0",
            "send 3 AppendEntries entries=1"
        ]
    );
    // The trace header records the cap.
    let text = text(&out);
    let reader = TraceReader::new("mem", text.as_bytes()).unwrap();
    assert_eq!(reader.header().replication, replication);
}

#[test]
fn a_single_node_answers_the_client_after_the_sync() {
    let j = Journal::default();
    let mut node = Node::start(
        options(1),
        PersistentState::default(),
        JournalStorage(j.clone()),
        ms(0),
        &mut j.clone(),
    )
    .unwrap();
    node.handle(ms(400), vec![], &mut j.clone()).unwrap();
    assert_eq!(node.server().role(), Role::Leader);
    j.take();
    let req = |no, command| Event::Request {
        conn: 4,
        client_id: ClientId(1),
        request_no: no,
        command,
        ack: raft_spec::Ack::Applied,
        read: None,
    };
    node.handle(ms(401), vec![req(1, put("a"))], &mut j.clone())
        .unwrap();
    assert_eq!(
        j.take(),
        vec!["append hs=false entries=1", "sync", "reply 4 Ok(None)"]
    );
    // Request 2 is applied; a late retry of request 1 is not applied again
    // and is told it was superseded.
    node.handle(ms(402), vec![req(2, put("a"))], &mut j.clone())
        .unwrap();
    node.handle(ms(403), vec![req(1, put("a"))], &mut j.clone())
        .unwrap();
    let log = j.take();
    let replies: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("reply"))
        .collect();
    assert_eq!(
        replies,
        [
            "reply 4 Ok(Some(\"v\"))",
            "reply 4 Superseded { applied: 2 }"
        ]
    );
    assert_eq!(node.server().log().len(), 2);
}

#[test]
fn a_follower_redirects_with_the_leaders_address_and_status_reports() {
    let j = Journal::default();
    let mut node = Node::start(
        options(3),
        PersistentState::default(),
        MemStorage::default(),
        ms(0),
        &mut j.clone(),
    )
    .unwrap();
    let heartbeat = Event::Peer {
        from: NodeId(3),
        message: Message::AppendEntries(raft_spec::AppendEntries {
            term: Term(2),
            leader_id: NodeId(3),
            prev_log_index: raft_spec::LogIndex(0),
            prev_log_term: Term(0),
            entries: vec![],
            leader_commit: raft_spec::LogIndex(0),
            read_round: 0,
        }),
    };
    let req = Event::Request {
        conn: 8,
        client_id: ClientId(1),
        request_no: 1,
        command: put("a"),
        ack: raft_spec::Ack::Applied,
        read: None,
    };
    node.handle(
        ms(5),
        vec![heartbeat, req, Event::Status { conn: 9 }],
        &mut j.clone(),
    )
    .unwrap();
    let log = j.take();
    assert_eq!(log[0], "send 3 AppendEntriesResponse");
    assert_eq!(
        log[1],
        "reply 8 NotLeader { leader: Some(NodeId(3)), address: Some(\"127.0.0.1:7003\") }"
    );
    assert!(
        log[2].starts_with(
            "reply 9 Status(StatusInfo { id: NodeId(1), role: Follower, term: Term(2)"
        ),
        "{}",
        log[2]
    );
}

#[test]
fn the_trace_records_each_step() {
    let out = Shared::default();
    let mut o = options(1);
    o.trace = Some(TraceOut {
        out: Box::new(out.clone()),
        resume_after: None,
    });
    let j = Journal::default();
    let mut node = Node::start(
        o,
        PersistentState::default(),
        MemStorage::default(),
        ms(0),
        &mut j.clone(),
    )
    .unwrap();
    node.handle(ms(400), vec![], &mut j.clone()).unwrap();
    node.handle(
        ms(401),
        vec![Event::Request {
            conn: 1,
            client_id: ClientId(3),
            request_no: 1,
            command: put("k"),
            ack: raft_spec::Ack::Applied,
            read: None,
        }],
        &mut j.clone(),
    )
    .unwrap();
    let text = text(&out);
    let reader = TraceReader::new("mem", text.as_bytes()).unwrap();
    assert_eq!(reader.header().recorded_by, NodeId(1));
    let steps: Vec<Step<KvCommand, KvOutput>> = reader.steps().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.input.name()).collect();
    assert_eq!(names, vec!["Restart", "ElectionTimeout", "ClientRequest"]);
    assert_eq!(steps[2].commit_index, raft_spec::LogIndex(1));
    assert_eq!(steps[2].role, Role::Leader);
    assert_eq!(
        steps[2].digest,
        raft_spec::trace::state_digest(node.server())
    );
}

#[test]
fn trace_lines_precede_the_fsync_the_synced_marker_the_released_one_and_that_the_sends() {
    let j = Journal::default();
    let mut o = options(3);
    o.trace = Some(TraceOut {
        out: Box::new(j.clone()),
        resume_after: None,
    });
    let mut node = Node::start(
        o,
        PersistentState::default(),
        JournalStorage(j.clone()),
        ms(0),
        &mut j.clone(),
    )
    .unwrap();
    // Nothing persisted: no fsync, no marker.
    assert_eq!(j.take(), vec!["trace header", "trace Restart"]);
    node.handle(ms(400), vec![], &mut j.clone()).unwrap();
    assert_eq!(
        j.take(),
        vec![
            "append hs=true entries=0",
            "trace ElectionTimeout",
            "sync",
            "trace synced 2",
            "trace released 2 (as recorded)",
            "send 2 RequestVote",
            "send 3 RequestVote"
        ]
    );
    node.handle(ms(401), vec![vote(1)], &mut j.clone()).unwrap();
    assert_eq!(
        j.take(),
        vec![
            "trace RequestVoteResponse",
            "trace released 3 (as recorded)",
            "send 2 AppendEntries entries=0",
            "send 3 AppendEntries entries=0"
        ]
    );
}

/// A single node (leader at its first election timeout) writing its trace
/// to `out`, continuing it after `resume_after`.
fn traced(
    out: &Shared,
    resume_after: Option<u64>,
    persistent: PersistentState<KvCommand>,
    storage: MemStorage,
) -> Node<MemStorage> {
    let mut o = options(1);
    o.trace = Some(TraceOut {
        out: Box::new(out.clone()),
        resume_after,
    });
    Node::start(o, persistent, storage, ms(0), &mut Journal::default()).unwrap()
}

fn request(no: u64) -> Event {
    Event::Request {
        conn: 1,
        client_id: ClientId(3),
        request_no: no,
        command: put(&format!("k{no}")),
        ack: raft_spec::Ack::Applied,
        read: None,
    }
}

/// A single traced node from an empty state that has recorded `Restart`,
/// `ElectionTimeout` (term 1, vote, leader: marked) and `ClientRequest` #1
/// (entry 1: marked), with the journal it handled them with.
fn traced_leader_with_one_entry(out: &Shared) -> (Node<MemStorage>, Journal) {
    let mut node = traced(out, None, PersistentState::default(), MemStorage::default());
    let j = Journal::default();
    node.handle(ms(400), vec![], &mut j.clone()).unwrap();
    node.handle(ms(401), vec![request(1)], &mut j.clone())
        .unwrap();
    (node, j)
}

/// Restart `Restart`, `ElectionTimeout` (term 1, vote, leader: marked),
/// `ClientRequest` #1 (entry 1: marked), then a batch of `ClientRequest`s
/// #2 and #3 whose fsync `crash` makes fail (before or after it makes them
/// durable). Returns the trace and the storage after the crash.
fn crash_in_a_batch(crash: impl FnOnce(&mut MemStorage)) -> (Shared, MemStorage) {
    let out = Shared::default();
    let (mut node, j) = traced_leader_with_one_entry(&out);
    crash(node.storage_mut());
    assert!(node
        .handle(ms(402), vec![request(2), request(3)], &mut j.clone())
        .is_err());
    // Nothing of the failed batch left the node.
    assert_eq!(j.take(), vec!["reply 1 Ok(None)"]);
    let mut storage = node.into_storage();
    storage.crash();
    (out, storage)
}

/// The trace's lines, with the synced markers.
fn lines(out: &Shared) -> Vec<String> {
    text(out).lines().skip(1).map(str::to_string).collect()
}

fn seqs(text: &str) -> Vec<u64> {
    TraceReader::new("t", text.as_bytes())
        .unwrap()
        .steps::<KvCommand, KvOutput>()
        .unwrap()
        .iter()
        .map(|s| s.seq)
        .collect()
}

#[test]
fn a_kill_before_the_fsync_cuts_the_batch_from_the_trace_at_restart() {
    let (out, storage) = crash_in_a_batch(|s| s.fail_next_sync = true);
    // The batch's lines are in the trace, without a marker.
    let before = lines(&out);
    assert_eq!(before.len(), 8, "{before:?}");
    assert_eq!(before[4], r#"{"synced":3}"#);
    assert_eq!(before[5], r#"{"released":3}"#);
    assert!(before[7].starts_with(r#"{"seq":5,"#), "{}", before[7]);
    assert_eq!(storage.durable().log.len(), 1);

    let bytes = out.bytes();
    let r = resume_trace::<_, KvOutput>("t", &bytes, storage.durable()).unwrap();
    assert_eq!(r.cut, Some((4, 5)));
    assert_eq!(r.last_seq, 3);
    // Cut just after the markers of step 3.
    let kept = std::str::from_utf8(&bytes[..r.keep]).unwrap();
    assert!(
        kept.ends_with("{\"synced\":3}\n{\"released\":3}\n"),
        "{kept}"
    );

    // The restarted node continues after step 3, and the trace reads back.
    out.0.lock().unwrap().truncate(r.keep);
    let persistent = storage.durable().clone();
    let node = traced(&out, Some(r.last_seq), persistent, storage);
    assert_eq!(node.server().log().len(), 1);
    assert_eq!(seqs(&text(&out)), vec![1, 2, 3, 4]);
    let last = lines(&out).pop().unwrap();
    assert!(
        last.contains(r#""seq":4,"#) && last.contains("Restart"),
        "{last}"
    );
}

#[test]
fn a_kill_after_the_fsync_before_the_marker_keeps_the_whole_trace() {
    let (out, storage) = crash_in_a_batch(|s| s.fail_after_next_sync = true);
    let before = lines(&out);
    assert_eq!(before.len(), 8, "{before:?}");
    assert!(before[7].starts_with(r#"{"seq":5,"#), "{}", before[7]);
    assert_eq!(storage.durable().log.len(), 3);

    let bytes = out.bytes();
    let r = resume_trace::<_, KvOutput>("t", &bytes, storage.durable()).unwrap();
    assert_eq!((r.cut, r.last_seq, r.keep), (None, 5, bytes.len()));
}

#[test]
fn a_batch_cut_short_in_its_wal_write_is_cut_after_its_last_durable_step() {
    let (out, storage) = crash_in_a_batch(|s| s.fail_after_next_sync = true);
    // As if only request #2's record had reached the WAL.
    let mut recovered = storage.durable().clone();
    recovered.log.truncate_from(raft_spec::LogIndex(3));
    let r = resume_trace::<_, KvOutput>("t", &out.bytes(), &recovered).unwrap();
    assert_eq!((r.cut, r.last_seq), (Some((5, 5)), 4));
}

#[test]
fn a_marked_batch_is_never_cut_even_if_the_storage_lost_it() {
    // Storage that loses the last synced entry (a fault, not a crash): the
    // recovered state equals the one before the marked step 3, yet nothing
    // is cut, so the replayer sees the loss at the `Restart`.
    let out = Shared::default();
    let (mut node, j) = traced_leader_with_one_entry(&out);
    // A heartbeat after the marker persists nothing.
    node.handle(ms(460), vec![], &mut j.clone()).unwrap();
    let mut recovered = node.storage().durable().clone();
    assert_eq!(recovered.log.len(), 1);
    recovered.log.truncate_from(raft_spec::LogIndex(1));
    let bytes = out.bytes();
    let r = resume_trace::<_, KvOutput>("t", &bytes, &recovered).unwrap();
    assert_eq!((r.cut, r.last_seq, r.keep), (None, 4, bytes.len()));
}

#[test]
fn a_restart_step_is_never_cut_nor_anything_before_it() {
    let (out, storage) = crash_in_a_batch(|s| s.fail_next_sync = true);
    let r = resume_trace::<_, KvOutput>("t", &out.bytes(), storage.durable()).unwrap();
    out.0.lock().unwrap().truncate(r.keep);
    let persistent = storage.durable().clone();
    let node = traced(&out, Some(r.last_seq), persistent, storage);
    drop(node);
    // The storage now recovers an empty state, as step 1 recorded: the
    // restart at step 4 recorded a log of one entry, so nothing is cut.
    let bytes = out.bytes();
    let r =
        resume_trace::<_, KvOutput>("t", &bytes, &PersistentState::<KvCommand>::default()).unwrap();
    assert_eq!((r.cut, r.last_seq, r.keep), (None, 4, bytes.len()));
}

#[test]
fn a_recovered_state_that_matches_no_step_of_the_tail_cuts_nothing() {
    let (out, storage) = crash_in_a_batch(|s| s.fail_next_sync = true);
    let mut recovered = storage.durable().clone();
    recovered.current_term = raft_spec::Term(7);
    let bytes = out.bytes();
    let r = resume_trace::<_, KvOutput>("t", &bytes, &recovered).unwrap();
    assert_eq!((r.cut, r.last_seq, r.keep), (None, 5, bytes.len()));
}

#[test]
fn a_version_1_trace_is_kept_whole_and_a_bad_marker_is_an_error() {
    let (out, storage) = crash_in_a_batch(|s| s.fail_next_sync = true);
    let text = text(&out);
    let old: String = text
        .replacen("\"version\":3", "\"version\":1", 1)
        .lines()
        .filter(|l| !l.starts_with("{\"synced\"") && !l.starts_with("{\"released\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let r = resume_trace::<_, KvOutput>("t", old.as_bytes(), storage.durable()).unwrap();
    assert_eq!((r.cut, r.last_seq, r.keep), (None, 5, old.len()));

    let bad = text.replace("{\"synced\":3}", "{\"synced\":2}");
    let err = resume_trace::<_, KvOutput>("t", bad.as_bytes(), storage.durable()).unwrap_err();
    assert!(
        matches!(err, TraceError::BadMarker { line: 6, .. }),
        "{err}"
    );
}
