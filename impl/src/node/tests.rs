use super::*;
use crate::storage::MemStorage;
use raft_spec::{Persist, RequestVoteResponse, Term};
use std::cell::RefCell;
use std::rc::Rc;

/// Records storage and I/O calls in one sequence, to check their order.
#[derive(Clone, Default)]
struct Journal(Rc<RefCell<Vec<String>>>);

impl Journal {
    fn push(&self, s: String) {
        self.0.borrow_mut().push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.borrow_mut())
    }
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

#[test]
fn group_commit_covers_a_batch_and_coalesces_append_entries() {
    let j = Journal::default();
    let mut node = Node::start(
        options(3),
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
    });
    node.handle(ms(402), requests, &mut j.clone()).unwrap();
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
    };
    node.handle(ms(401), vec![req(1, put("a"))], &mut j.clone())
        .unwrap();
    assert_eq!(
        j.take(),
        vec!["append hs=false entries=1", "sync", "reply 4 Ok(None)"]
    );
    // A retried request is answered from the session table, not applied again.
    node.handle(ms(402), vec![req(2, put("a"))], &mut j.clone())
        .unwrap();
    node.handle(ms(403), vec![req(1, put("a"))], &mut j.clone())
        .unwrap();
    let log = j.take();
    assert_eq!(
        log.last().map(String::as_str),
        Some("reply 4 Ok(Some(\"v\"))")
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
        }),
    };
    let req = Event::Request {
        conn: 8,
        client_id: ClientId(1),
        request_no: 1,
        command: put("a"),
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
fn the_trace_records_each_step_after_its_sync() {
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
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
        }],
        &mut j.clone(),
    )
    .unwrap();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let reader = raft_spec::trace::TraceReader::new("mem", text.as_bytes()).unwrap();
    assert_eq!(reader.header().recorded_by, NodeId(1));
    let steps: Vec<Step<KvCommand>> = reader.steps().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.input.name()).collect();
    assert_eq!(names, vec!["Restart", "ElectionTimeout", "ClientRequest"]);
    assert_eq!(steps[2].commit_index, raft_spec::LogIndex(1));
    assert_eq!(steps[2].role, Role::Leader);
    assert_eq!(
        steps[2].digest,
        raft_spec::trace::state_digest(node.server())
    );
}
