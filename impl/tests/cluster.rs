//! End-to-end tests on real `raft-node` processes over TCP and disk.

#![allow(clippy::unwrap_used)]

use raft_node::client::{Client, ClientOptions};
use raft_node::cluster::{ClusterOptions, LocalCluster};
use raft_node::wire::{self, Frame, Sender, StatusInfo};
use raft_spec::trace::{state_digest, TraceReader};
use raft_spec::{ClientId, Kv, KvCommand, NodeId, Role, Server};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_raft-node");

fn cluster(dir: &tempfile::TempDir, traces: bool) -> LocalCluster {
    let mut o = ClusterOptions::new(PathBuf::from(EXE), dir.path().join("data"));
    o.test_control = true;
    o.rust_log = Some("info".into());
    if traces {
        o.trace_dir = Some(dir.path().join("traces"));
    }
    LocalCluster::start(o).expect("start the cluster")
}

fn statuses(c: &LocalCluster) -> Vec<StatusInfo> {
    c.statuses()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn leader_of(c: &LocalCluster) -> StatusInfo {
    c.wait_for_leader(Duration::from_secs(10))
        .expect("a leader within 10 s")
}

#[test]
fn a_cluster_of_processes_elects_replicates_survives_kill_9_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(&dir, true);
    let leader = leader_of(&c);
    // wait_for_leader found exactly one leader at the highest term; no term
    // ever has two.
    let all = statuses(&c);
    assert_eq!(all.len(), 3);
    for s in &all {
        let same_term_leaders = all
            .iter()
            .filter(|o| o.role == Role::Leader && o.term == s.term)
            .count();
        assert!(same_term_leaders <= 1, "{all:?}");
    }

    // Put/get round trip.
    let mut client = c.client();
    assert_eq!(client.call(KvCommand::put("greeting", "hello")), Ok(None));
    assert_eq!(
        client.call(KvCommand::get("greeting")),
        Ok(Some("hello".into()))
    );

    // A follower redirects the client to the leader.
    let follower = all.iter().find(|s| s.role != Role::Leader).map(|s| s.id);
    let mut redirected = c.client();
    redirected.prefer(follower.expect("a follower"));
    assert_eq!(
        redirected.call(KvCommand::get("greeting")),
        Ok(Some("hello".into()))
    );
    assert!(redirected.redirects >= 1);
    assert_ne!(redirected.leader(), follower);

    // Acknowledged writes.
    for i in 0..20 {
        assert_eq!(
            client.call(KvCommand::put(format!("k{i}"), format!("v{i}"))),
            Ok(None)
        );
    }

    // kill -9 of the leader: a new leader, every acknowledged write readable.
    c.kill(leader.id).expect("kill the leader");
    let new_leader = leader_of(&c);
    assert_ne!(new_leader.id, leader.id);
    assert!(new_leader.term > leader.term);
    for i in 0..20 {
        assert_eq!(
            client.call(KvCommand::get(format!("k{i}"))),
            Ok(Some(format!("v{i}").into())),
            "key k{i}"
        );
    }
    // More writes while the old leader is down, so its log lags.
    for i in 20..30 {
        assert_eq!(
            client.call(KvCommand::put(format!("k{i}"), "late")),
            Ok(None)
        );
    }

    // The restarted node catches up (the leader backs off its next_index).
    c.start_node(leader.id).expect("restart");
    let target = statuses(&c)
        .into_iter()
        .find(|s| s.id == new_leader.id)
        .expect("leader status");
    wait_until(
        "the restarted node catches up",
        Duration::from_secs(10),
        || {
            statuses(&c).into_iter().any(|s| {
                s.id == leader.id
                    && s.last_log_index >= target.last_log_index
                    && s.commit_index >= target.commit_index
            })
        },
    );

    // A retried request is applied once: a second application of this put
    // would return the previous value "once".
    let options = ClientOptions::new(c.peers().clone());
    let mut session = Client::with_session(options.clone(), ClientId(4242), 1);
    assert_eq!(
        session.call_numbered(1, KvCommand::put("once", "once")),
        Ok(None)
    );
    let mut retry = Client::with_session(options, ClientId(4242), 1);
    assert_eq!(
        retry.call_numbered(1, KvCommand::put("once", "once")),
        Ok(None)
    );
    assert_eq!(client.call(KvCommand::get("once")), Ok(Some("once".into())));
    // Once request 2 is applied, a late retry of request 1 is told so.
    assert_eq!(
        session.call_numbered(2, KvCommand::put("once", "twice")),
        Ok(Some("once".into()))
    );
    assert_eq!(
        retry.call_numbered(1, KvCommand::put("once", "once")),
        Err(raft_node::client::ClientError::Superseded {
            request_no: 1,
            applied: 2
        })
    );
    assert_eq!(
        client.call(KvCommand::get("once")),
        Ok(Some("twice".into()))
    );

    // Every node wrote a trace that raft-spec's transition functions
    // reproduce step by step; the restarted node continued its file.
    drop(c);
    for id in 1..=3u64 {
        let path = dir.path().join(format!("traces/node-{id}.ndjson"));
        let (steps, restarts) = replay(&path, NodeId(id));
        assert!(steps > 10, "node {id}: {steps} steps");
        let expected = if NodeId(id) == leader.id { 2 } else { 1 };
        assert_eq!(restarts, expected, "node {id}");
    }
}

/// Replays a node's trace through `Server::step` / `Server::restart` and
/// checks every recorded digest and field. Returns (steps, restarts).
fn replay(path: &std::path::Path, id: NodeId) -> (usize, usize) {
    let file = std::fs::File::open(path).expect("trace file");
    let reader = TraceReader::new(path.display().to_string(), std::io::BufReader::new(file))
        .expect("trace header");
    let header = reader.header().clone();
    assert_eq!(header.recorded_by, id);
    assert_eq!(header.servers, vec![NodeId(1), NodeId(2), NodeId(3)]);
    let steps = reader
        .steps::<KvCommand, raft_spec::KvOutput>()
        .expect("trace steps");
    let mut server: Option<Server<Kv>> = None;
    let mut restarts = 0;
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(step.seq, i as u64 + 1, "{}: seq", path.display());
        match step.input.clone().into_input() {
            None => {
                // A crash keeps the persistent state of the last recorded step.
                let persistent = server.map(|s| s.persistent).unwrap_or_default();
                server = Some(
                    Server::restart(id, header.servers.clone(), persistent)
                        .0
                        .with_replication(header.replication),
                );
                restarts += 1;
            }
            Some(input) => {
                server.as_mut().expect("a Restart first").step(input);
            }
        }
        let s = server.as_ref().expect("server");
        assert_eq!(
            (s.current_term(), s.role(), s.volatile.commit_index),
            (step.term, step.role, step.commit_index),
            "{}: step {}",
            path.display(),
            step.seq
        );
        assert_eq!(
            state_digest(s),
            step.digest,
            "{}: step {}",
            path.display(),
            step.seq
        );
    }
    (steps.len(), restarts)
}

#[test]
fn a_leader_cut_off_in_a_minority_steps_down_at_its_check_and_rejoins_when_the_partition_heals() {
    // The partition is made in-process by each node's transport, which drops
    // all traffic with the blocked peers (test-only control).
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(&dir, false);
    let old = leader_of(&c);
    let others: Vec<NodeId> = c.peers().keys().copied().filter(|&n| n != old.id).collect();
    let mut ctl = c.client();
    ctl.partition(old.id, &others).expect("isolate the leader");
    for &n in &others {
        ctl.partition(n, &[old.id]).expect("block the leader");
    }

    // The majority elects a new leader, which serves.
    let mut new = None;
    wait_until(
        "the majority elects a leader",
        Duration::from_secs(10),
        || {
            new = statuses(&c)
                .into_iter()
                .find(|s| s.role == Role::Leader && s.id != old.id);
            new.is_some()
        },
    );
    let new = new.expect("new leader");
    assert!(new.term > old.term);
    let mut client = c.client();
    client.prefer(new.id);
    assert_eq!(client.call(KvCommand::put("side", "majority")), Ok(None));

    // The old leader cannot commit, and CheckQuorum steps it down within an
    // election timeout of losing the majority.
    let mut minority =
        ClientOptions::new([(old.id, c.peers()[&old.id].clone())].into_iter().collect());
    minority.timeout = Duration::from_millis(700);
    let stuck = Client::new(minority).call(KvCommand::put("side", "minority"));
    assert!(stuck.is_err(), "{stuck:?}");
    wait_until(
        "the old leader steps down at its check",
        Duration::from_secs(10),
        || {
            statuses(&c)
                .into_iter()
                .any(|s| s.id == old.id && s.role != Role::Leader)
        },
    );

    // Heal: the old leader steps down to the new term.
    for n in c.peers().keys() {
        ctl.partition(*n, &[]).expect("heal");
    }
    wait_until("the old leader steps down", Duration::from_secs(10), || {
        statuses(&c)
            .into_iter()
            .any(|s| s.id == old.id && s.role == Role::Follower && s.term >= new.term)
    });
    assert_eq!(
        client.call(KvCommand::get("side")),
        Ok(Some("majority".into()))
    );
}

fn serve(args: &[&str]) -> std::process::Output {
    Command::new(EXE)
        .arg("serve")
        .arg("--bootstrap")
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run raft-node")
}

#[test]
fn bad_arguments_and_unusable_resources_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().expect("utf-8 path");

    let out = serve(&["--id", "4", "--peers", "1=127.0.0.1:1", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node id 4 is not in --peers"));

    let out = serve(&["--id", "1", "--peers", "1=nonsense", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad peer \"1=nonsense\""));

    let entries = |bad: &str| {
        format!("--max-append-entries {bad:?}: expected a whole number of entries, at least 1")
    };
    let bytes = |bad: &str, frame: &str| {
        format!(
            "--max-append-bytes {bad}: expected at least 1 and at most half of --max-frame-bytes ({frame})"
        )
    };
    for (flags, expected) in [
        (vec!["--max-append-entries", "0"], entries("0")),
        (vec!["--max-append-entries", "many"], entries("many")),
        (vec!["--max-append-bytes", "0"], bytes("0", "67108864")),
        (
            vec!["--max-append-bytes", "2000", "--max-frame-bytes", "2048"],
            bytes("2000", "2048"),
        ),
    ] {
        let mut args = vec!["--id", "1", "--peers", "1=127.0.0.1:1", "--data-dir", data];
        args.extend(&flags);
        let out = serve(&args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&expected), "{flags:?}: {err}");
    }

    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let peers = format!("1=127.0.0.1:{port}");
    let out = serve(&["--id", "1", "--peers", &peers, "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );

    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let out = serve(&[
        "--id",
        "1",
        "--peers",
        &peers,
        "--data-dir",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("create data directory"));

    // Bad values exit 2 before anything is opened or bound.
    let cases: [(&[&str], &str); 3] = [
        (
            &["--listen", "nonsense"],
            "--listen \"nonsense\": expected HOST:PORT",
        ),
        (
            &["--max-frame-bytes", "0"],
            "--max-frame-bytes 0: expected at least 1024 bytes",
        ),
        (
            &["--peers", "1=127.0.0.1:7001,2=127.0.0.1:7001"],
            "peers 1 and 2 have the same address 127.0.0.1:7001 in --peers",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["--id", "1", "--data-dir", data];
        if !extra.contains(&"--peers") {
            args.extend(["--peers", "1=127.0.0.1:1"]);
        }
        args.extend(extra);
        let out = serve(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{extra:?}: {err}");
    }

    // No leader reachable: exit code 1; bad arguments: 2.
    let out = Command::new(EXE)
        .args(["get", "--cluster", &peers, "--timeout-ms", "300", "k"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no answer from a leader"), "{err}");
    // A client that waits more than a second says so.
    let out = Command::new(EXE)
        .args(["put", "--cluster", &peers, "--timeout-ms", "1300", "k", "v"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("waiting for a leader to answer (giving up after 1300 ms)..."),
        "{err}"
    );
    let out = Command::new(EXE)
        .args(["put", "--cluster"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

/// A second process on a running node's data directory exits 1 naming the
/// first one's pid, and the first keeps serving; once the first is killed
/// (`kill -9` releases the lock), the directory starts again.
#[test]
fn a_second_process_on_a_data_directory_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(&dir, false);
    let leader = leader_of(&c);
    let data = c.node_dir(leader.id);
    let spare = TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = format!("127.0.0.1:{}", spare.local_addr().expect("addr").port());
    drop(spare);
    let second = |listen: &str| {
        serve(&[
            "--id",
            &leader.id.0.to_string(),
            "--peers",
            &c.peers_arg(),
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--listen",
            listen,
        ])
    };
    let out = second(&listen);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by another process (pid "), "{err}");
    assert!(err.contains("LOCK"), "{err}");
    let mut client = c.client();
    assert_eq!(client.call(KvCommand::put("still", "serving")), Ok(None));

    c.kill(leader.id).unwrap();
    c.start_node(leader.id).unwrap();
    wait_until(
        "the node restarted on its directory",
        Duration::from_secs(10),
        || {
            c.status()
                .into_iter()
                .any(|(n, s)| n == leader.id && s.is_ok())
        },
    );
}

/// A one-node cluster run by hand (`raft-node serve` on a free port, with
/// `extra` arguments), killed when dropped.
struct OneNode {
    child: std::process::Child,
    port: u16,
    peers: String,
    _dir: tempfile::TempDir,
}

impl OneNode {
    fn start(extra: &[&str], stderr: std::process::Stdio) -> OneNode {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let peers = format!("1=127.0.0.1:{port}");
        let child = Command::new(EXE)
            .args(["serve", "--bootstrap", "--id", "1", "--peers", &peers])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path().join("d"))
            .env("RUST_LOG", "debug")
            .stderr(stderr)
            .spawn()
            .expect("start raft-node");
        OneNode {
            child,
            port,
            peers,
            _dir: dir,
        }
    }

    /// A TCP connection to the node, once it listens.
    fn connect(&self) -> std::net::TcpStream {
        let start = std::time::Instant::now();
        loop {
            match std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                Ok(s) => return s,
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("connect: {e}"),
            }
        }
    }

    /// `raft-node put k v` against it: whether it succeeded, and its stderr.
    fn put(&self) -> (bool, String) {
        let out = Command::new(EXE)
            .args([
                "put",
                "--cluster",
                &self.peers,
                "--timeout-ms",
                "5000",
                "k",
                "v",
            ])
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for OneNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node whose stderr pipe closes (its terminal or its log reader gone)
/// keeps running, and serving.
#[test]
fn a_node_whose_stderr_closes_runs_on() {
    let mut node = OneNode::start(&[], std::process::Stdio::piped());
    drop(node.child.stderr.take());
    // Every put logs lines the node can no longer write.
    let (served, err) = node.put();
    std::thread::sleep(Duration::from_millis(300));
    let exited = node.child.try_wait().expect("wait");
    assert!(exited.is_none(), "the node exited: {exited:?}");
    assert!(served, "{err}");
}

/// A client that falls silent in the middle of a frame is disconnected
/// after the idle timeout, and its place is free again.
#[test]
fn a_client_silent_in_the_middle_of_a_frame_is_disconnected() {
    use raft_node::wire::{encode, read_frame, Frame, Sender, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
    use std::io::{Read, Write};
    let node = OneNode::start(
        &["--max-connections", "1", "--client-idle-timeout-ms", "300"],
        std::process::Stdio::null(),
    );
    let mut s = node.connect();
    let hello = Frame::Hello {
        protocol: PROTOCOL_VERSION,
        cluster_id: String::new(),
        sender: Sender::Client,
    };
    s.write_all(&encode(&hello).expect("encode"))
        .expect("hello");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(
        read_frame(&mut s, DEFAULT_MAX_FRAME).expect("welcome"),
        Frame::Welcome
    );
    // Half a request frame, then silence.
    let request = encode(&Frame::Status).expect("encode");
    s.write_all(&request[..2]).expect("half a frame");
    let waited = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = s.read_to_end(&mut rest);
    let after = waited.elapsed();
    assert!(closed.is_ok() && rest.is_empty(), "{closed:?} {rest:?}");
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_secs(4),
        "closed after {after:?}"
    );
    // Its place (the cap is 1) is free again: a client is served.
    let (served, err) = node.put();
    assert!(served, "{err}");
}

/// A client that sends many requests without reading its replies fills the
/// socket: the event loop's sends would block, so the rest of that
/// connection's replies wait in its buffer until the socket is writable.
/// Every reply arrives, whole and in order, once the client reads, and the
/// node serves on.
#[test]
fn a_client_that_reads_late_gets_every_reply_in_order() {
    use raft_node::wire::{encode, read_frame, Frame, Response, Sender, DEFAULT_MAX_FRAME};
    use raft_spec::{Ack, ReadMode};
    use std::io::Write;
    let node = OneNode::start(&[], std::process::Stdio::null());
    let addr = format!("127.0.0.1:{}", node.port);
    let _ = node.connect();
    let big = "x".repeat(1 << 20);
    let mut client = Client::new(ClientOptions::new(
        raft_node::config::parse_peers(&node.peers).expect("peers"),
    ));
    assert_eq!(client.call(KvCommand::put("big", &big)), Ok(None));
    let mut s = raft_node::transport::connect(
        &addr,
        "",
        Sender::Client,
        Duration::from_secs(5),
        DEFAULT_MAX_FRAME,
    )
    .expect("client handshake");
    // 32 reads of a 1 MiB value, 32 MiB of replies: past what loopback's
    // socket buffers hold while nobody reads.
    let sent = 32u64;
    for request_no in 1..=sent {
        let get = Frame::Request {
            client_id: ClientId(77),
            request_no,
            command: KvCommand::get("big"),
            ack: Ack::Applied,
            read: Some(ReadMode::Follower),
        };
        s.write_all(&encode(&get).expect("encode"))
            .expect("request");
    }
    std::thread::sleep(Duration::from_secs(1));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = std::io::BufReader::new(s);
    for i in 0..sent {
        match read_frame(&mut reader, DEFAULT_MAX_FRAME) {
            Ok(Frame::Response(Response::Ok(Some(v)))) if v.as_str() == big => {}
            other => panic!("reply {i}: {:?}", other.map(|f| format!("{f:?}").len())),
        }
    }
    let (served, err) = node.put();
    assert!(served, "{err}");
}

/// A node at its connection cap refuses one more connection, saying why,
/// and serves again once a connection closes.
#[test]
fn connections_beyond_the_cap_are_refused_and_the_node_keeps_serving() {
    use raft_node::wire::{read_frame, Frame, DEFAULT_MAX_FRAME};
    let node = OneNode::start(&["--max-connections", "2"], std::process::Stdio::null());
    // Two connections that never say Hello hold the two places.
    let idle = [node.connect(), node.connect()];
    std::thread::sleep(Duration::from_millis(100));
    let mut third = node.connect();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    match read_frame(&mut third, DEFAULT_MAX_FRAME) {
        Ok(Frame::Refused { reason }) => {
            assert!(
                reason.contains("too many connections (this node serves at most 2)"),
                "{reason}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    drop(idle);
    let (served, err) = node.put();
    assert!(served, "{err}");
}

#[test]
fn foreign_clusters_and_bad_frames_are_refused_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = ClusterOptions::new(PathBuf::from(EXE), dir.path().join("data"));
    o.nodes = 1;
    o.cluster_id = "alpha".into();
    o.rust_log = Some("info".into());
    let c = LocalCluster::start(o).expect("start");
    leader_of(&c);
    let addr = c.peers()[&NodeId(1)].clone();

    // A node of another cluster is refused, and the refusal is logged.
    let err = raft_node::transport::connect(
        &addr,
        "beta",
        Sender::Peer {
            id: NodeId(1),
            incarnation: 1,
            storage_id: 1,
        },
        Duration::from_secs(1),
        1 << 20,
    )
    .unwrap_err();
    assert!(
        err.contains("belongs to cluster \"beta\", this is cluster \"alpha\""),
        "{err}"
    );
    // An unknown node id of this cluster is refused too.
    let err = raft_node::transport::connect(
        &addr,
        "alpha",
        Sender::Peer {
            id: NodeId(9),
            incarnation: 1,
            storage_id: 1,
        },
        Duration::from_secs(1),
        1 << 20,
    )
    .unwrap_err();
    assert!(err.contains("unknown node id 9"), "{err}");

    // An oversized frame and a malformed frame close their connection.
    for payload in [
        u32::MAX.to_be_bytes().to_vec(),
        [&5u32.to_be_bytes()[..], &[0xff; 5]].concat(),
    ] {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        s.write_all(&payload).expect("write");
        let answer = wire::read_frame(&mut s, 1 << 20);
        assert!(matches!(answer, Ok(Frame::Refused { .. })), "{answer:?}");
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).ok(), Some(0), "closed");
    }
    // A client that sends garbage after its handshake is disconnected.
    let mut s =
        raft_node::transport::connect(&addr, "", Sender::Client, Duration::from_secs(1), 1 << 20)
            .expect("client handshake");
    s.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).expect("write");
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).ok(), Some(0), "closed");

    // The node still serves.
    let mut client = c.client();
    assert_eq!(client.call(KvCommand::put("still", "alive")), Ok(None));
    drop(c);
    let log = std::fs::read_to_string(dir.path().join("data/node-1.log")).expect("log");
    assert!(log.contains("refused connection"), "{log}");
    assert!(log.contains("oversized frame"), "{log}");
}

/// A node whose data directory is wiped is refused twice over: restarted as
/// before (no `--bootstrap`) it refuses to start, naming what the operator
/// must do; bootstrapped again, its peers refuse it (they remember the
/// storage id they first saw), so its empty log never votes, and the two
/// others go on committing.
#[test]
fn a_wiped_node_is_refused_by_itself_and_by_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(&dir, false);
    let leader = leader_of(&c);
    let mut client = c.client();
    assert_eq!(client.call(KvCommand::put("a", "1")), Ok(None));
    let victim = c.peers().keys().copied().find(|&n| n != leader.id).unwrap();
    // Every peer has seen the victim (it acknowledged the put or voted).
    wait_until(
        "every node holds the entry",
        Duration::from_secs(10),
        || {
            statuses(&c)
                .iter()
                .all(|s| s.commit_index >= raft_spec::LogIndex(1))
        },
    );
    c.kill(victim).unwrap();
    std::fs::remove_dir_all(c.node_dir(victim)).unwrap();

    c.start_node(victim).unwrap();
    wait_until("the wiped node exits", Duration::from_secs(10), || {
        c.exited()
            .iter()
            .any(|(n, s)| *n == victim && s.code() == Some(1))
    });
    let log = std::fs::read_to_string(c.log_file(victim)).unwrap();
    assert!(log.contains("holds no node state"), "{log}");
    assert!(log.contains("start it once with --bootstrap"), "{log}");

    c.bootstrap_node(victim).unwrap();
    wait_until(
        "a peer refuses the re-bootstrapped node",
        Duration::from_secs(10),
        || {
            let refused_by_peer = c.peers().keys().filter(|&&n| n != victim).any(|&n| {
                std::fs::read_to_string(c.log_file(n))
                    .unwrap_or_default()
                    .contains(&format!(
                        "refusing peer: node {} presents storage id",
                        victim.0
                    ))
            });
            let told = std::fs::read_to_string(c.log_file(victim))
                .unwrap_or_default()
                .contains("wiped and bootstrapped again");
            refused_by_peer && told
        },
    );
    // The two others are a majority and keep committing; the wiped node,
    // cut off, holds nothing.
    assert_eq!(client.call(KvCommand::put("a", "2")), Ok(Some("1".into())));
    thread::sleep(Duration::from_millis(500));
    let wiped = c
        .status()
        .into_iter()
        .find(|(n, _)| *n == victim)
        .and_then(|(_, s)| s.ok())
        .expect("the wiped node answers status");
    assert_eq!(wiped.last_log_index, raft_spec::LogIndex(0), "{wiped:?}");
    assert_ne!(wiped.role, Role::Leader);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A follower restored from an older copy of its data directory (its log
/// went back below what it acknowledged, which Raft's storage assumption
/// excludes and no check of the node's can see) is repaired by the leader
/// (`raft_spec::flow`): it catches up, and with the other follower dead the
/// leader and it still commit. With Figure 2's pacing (`--window 0`, the
/// negative control) the leader ignores its rejections for good and nothing
/// commits.
#[test]
fn a_follower_restored_from_an_old_copy_is_repaired_by_the_leader() {
    for windowed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut o = ClusterOptions::new(PathBuf::from(EXE), dir.path().join("data"));
        o.rust_log = Some("info".into());
        if !windowed {
            o.replication.window = None;
        }
        let (mut c, leader) = LocalCluster::start_and_elect(o).unwrap();
        let mut followers = c.peers().keys().copied().filter(|&n| n != leader.id);
        let (victim, other) = (followers.next().unwrap(), followers.next().unwrap());
        let mut client = c.client();
        for i in 0..5 {
            client.call(KvCommand::put(format!("k{i}"), "old")).unwrap();
        }
        let all_hold = |c: &LocalCluster, n: u64| {
            statuses(c)
                .iter()
                .filter(|s| s.last_log_index >= raft_spec::LogIndex(n))
                .count()
                == 3
        };
        wait_until(
            "every node holds 5 entries",
            Duration::from_secs(10),
            || all_hold(&c, 5),
        );
        // A copy of the victim's directory, taken while it is stopped.
        let backup = dir.path().join("backup");
        c.pause(victim).unwrap();
        copy_dir(&c.node_dir(victim), &backup);
        c.resume(victim).unwrap();
        for i in 0..20 {
            client.call(KvCommand::put(format!("k{i}"), "new")).unwrap();
        }
        wait_until(
            "every node holds 25 entries",
            Duration::from_secs(10),
            || all_hold(&c, 25),
        );
        let term = statuses(&c).iter().map(|s| s.term).max().unwrap();

        c.kill(victim).unwrap();
        std::fs::remove_dir_all(c.node_dir(victim)).unwrap();
        copy_dir(&backup, &c.node_dir(victim));
        c.start_node(victim).unwrap();
        let caught_up = Instant::now();
        let mut repaired = false;
        while caught_up.elapsed() < Duration::from_secs(3) {
            let s = statuses(&c);
            repaired = s
                .iter()
                .any(|s| s.id == victim && s.last_log_index >= raft_spec::LogIndex(25));
            if repaired {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(repaired, windowed, "window {windowed}: {:?}", statuses(&c));
        let leaders: Vec<StatusInfo> = statuses(&c)
            .into_iter()
            .filter(|s| s.role == Role::Leader)
            .collect();
        if leaders.iter().any(|l| l.term != term) {
            // An election moved the term: the new leader probed afresh, and
            // the case under test did not arise. Nothing to conclude.
            eprintln!("window {windowed}: the term moved on ({leaders:?}), skipping the rest");
            continue;
        }

        c.kill(other).unwrap();
        let mut o = ClientOptions::new(c.peers().clone());
        o.timeout = Duration::from_secs(2);
        let committed = Client::new(o).call(KvCommand::put("after", "x")).is_ok();
        assert_eq!(committed, windowed, "window {windowed}");
    }
}

/// `put --value-file` carries values too large for the command line (here
/// 3 MiB, larger than one AppendEntries batch: it travels alone) and reads
/// standard input with `-`; a missing or non-UTF-8 file is a clear error.
#[test]
fn put_reads_large_values_from_a_file_or_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let o = ClusterOptions::new(PathBuf::from(EXE), dir.path().join("data"));
    let (c, _) = LocalCluster::start_and_elect(o).unwrap();
    let cluster = c.peers_arg();
    let value = "v".repeat(3 << 20);
    let file = dir.path().join("value");
    std::fs::write(&file, &value).unwrap();
    let put = Command::new(EXE)
        .args(["put", "--cluster", &cluster, "big", "--value-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    let mut stdin_put = Command::new(EXE)
        .args(["put", "--cluster", &cluster, "small", "--value-file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    stdin_put
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    assert!(stdin_put.wait().unwrap().success());
    let mut client = c.client();
    assert_eq!(client.call(KvCommand::get("big")), Ok(Some(value.into())));
    assert_eq!(
        client.call(KvCommand::get("small")),
        Ok(Some("from stdin".into()))
    );

    let missing = Command::new(EXE)
        .args([
            "put",
            "--cluster",
            &cluster,
            "k",
            "--value-file",
            "/nonexistent/v",
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("cannot read the value file /nonexistent/v"),
        "{err}"
    );
    std::fs::write(&file, b"ok\xff").unwrap();
    let binary = Command::new(EXE)
        .args(["put", "--cluster", &cluster, "k", "--value-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(binary.status.code(), Some(1));
    let err = String::from_utf8_lossy(&binary.stderr);
    assert!(err.contains("not UTF-8 text at byte offset 2"), "{err}");
    let both = Command::new(EXE)
        .args(["put", "--cluster", &cluster, "k", "v", "--value-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2), "{both:?}");
}
