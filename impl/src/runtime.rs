//! One node process: storage, transport, trace file and the event loop on
//! the wall clock (`raft-node serve`).

use crate::config::{check_member, ConfigError, Peers, Timing};
use crate::node::{Node, NodeError, NodeOptions, Time, TraceOut};
use crate::storage::{FileStorage, KnownPeers, StorageError};
use crate::transport::{self, TransportOptions};
use raft_spec::trace::resume_trace;
use raft_spec::trace::VERSION;
use raft_spec::{KvCommand, NodeId, PersistentState, Replication};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tracing::info_span;

/// The most events handled in one batch (one fsync).
pub const MAX_BATCH: usize = 4096;

/// How to run a node.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// This node's id.
    pub id: NodeId,
    /// Every server and its address (peers and clients use the same one).
    pub peers: Peers,
    /// The cluster id checked in every handshake.
    pub cluster_id: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where to write the NDJSON trace, if anywhere.
    pub trace: Option<PathBuf>,
    /// Timer durations.
    pub timing: Timing,
    /// How the node paces AppendEntries (`--max-append-entries`,
    /// `--max-append-bytes`, `--window`).
    pub replication: Replication,
    /// The address to listen on; by default the loopback address with the
    /// port of this node's `--peers` address.
    pub listen: Option<String>,
    /// The frame size limit.
    pub max_frame: usize,
    /// Accept the test-only partition control from clients.
    pub test_control: bool,
    /// The most inbound connections served at once
    /// ([`crate::transport::TransportOptions::max_connections`]).
    pub max_connections: usize,
    /// How long a silent client connection is kept
    /// ([`crate::transport::TransportOptions::client_idle_timeout`]).
    pub client_idle_timeout: std::time::Duration,
    /// Create the node's state if the data directory holds none
    /// (`--bootstrap`); otherwise such a directory is refused.
    pub bootstrap: bool,
}

/// Why a node could not start or stopped.
#[derive(Debug, Error)]
pub enum ServeError {
    /// A bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be used.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The trace file could not be created, read or extended.
    #[error("trace file {}: {source}", path.display())]
    TraceFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The existing trace file cannot be continued.
    #[error("trace file {}: {message}", path.display())]
    TraceMismatch {
        /// The file.
        path: PathBuf,
        /// What is wrong (another node's trace, a malformed line, ...).
        message: String,
    },
    /// The event loop stopped on a fatal error.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// The listening address: `listen` if given; else this node's `--peers`
/// address if it is a loopback one (`127.x.x.x`, `[::1]`, `localhost`);
/// else loopback with its port (binding elsewhere needs `--listen`).
pub fn listen_address(options: &ServeOptions) -> Result<String, ServeError> {
    if let Some(l) = &options.listen {
        return Ok(l.clone());
    }
    check_member(options.id, &options.peers)?;
    let own = options.peers.get(&options.id).cloned().unwrap_or_default();
    let (host, port) = own.rsplit_once(':').unwrap_or(("", "0"));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback && host != "localhost" {
        return Ok(own);
    }
    if !loopback {
        tracing::warn!(
            address = own,
            "listening on loopback only; pass --listen to accept remote peers"
        );
    }
    Ok(format!("127.0.0.1:{port}"))
}

/// Opens the trace file: a new file gets a header; an existing trace of this
/// node and cluster is continued after its last complete line (a line cut
/// short by a crash is truncated), once its unconfirmed tail is reconciled
/// with the state the storage `recovered` ([`resume_trace`]: steps that
/// never became durable are cut); another node's trace, one of another
/// format version, or one recorded with another `--max-append-entries`
/// (its header records the cap for the whole file), is refused.
pub fn open_trace(
    path: &Path,
    options: &ServeOptions,
    recovered: &PersistentState<KvCommand>,
) -> Result<TraceOut, ServeError> {
    let io = |source| ServeError::TraceFile {
        path: path.to_path_buf(),
        source,
    };
    let mismatch = |message: String| ServeError::TraceMismatch {
        path: path.to_path_buf(),
        message,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(e)),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete == 0 {
        let file = File::create(path).map_err(io)?;
        return Ok(TraceOut {
            out: Box::new(file),
            resume_after: None,
        });
    }
    let name = path.display().to_string();
    let resume = resume_trace::<_, raft_spec::KvOutput>(&name, &bytes[..complete], recovered)
        .map_err(|e| mismatch(e.to_string()))?;
    let h = &resume.header;
    let servers: Vec<NodeId> = options.peers.keys().copied().collect();
    if h.recorded_by != options.id || h.cluster_id != options.cluster_id || h.servers != servers {
        return Err(mismatch(format!(
            "it records node {} of cluster {:?} with servers {:?}, not node {} of cluster {:?} with servers {:?}",
            h.recorded_by.0, h.cluster_id, h.servers, options.id.0, options.cluster_id, servers
        )));
    }
    if h.replication != options.replication {
        return Err(mismatch(format!(
            "it was recorded with {}, this node runs with {}: restart with the same settings, \
             or move the trace away to start a new one",
            crate::config::replication_flags(&h.replication),
            crate::config::replication_flags(&options.replication)
        )));
    }
    if h.version != VERSION {
        return Err(mismatch(format!(
            "a version-{} trace; this node writes version {VERSION}: move it away to start a new one",
            h.version
        )));
    }
    let file = OpenOptions::new().write(true).open(path).map_err(io)?;
    if complete < bytes.len() {
        tracing::warn!(
            file = %path.display(),
            bytes = bytes.len() - complete,
            "trace ends with a partial line: truncating it"
        );
    }
    if let Some((first, last)) = resume.cut {
        tracing::warn!(
            file = %path.display(),
            first,
            last,
            "trace steps never became durable (killed before their fsync): cutting them"
        );
    }
    if resume.keep < bytes.len() {
        file.set_len(resume.keep as u64).map_err(io)?;
    }
    let mut file = file;
    file.seek(SeekFrom::End(0)).map_err(io)?;
    Ok(TraceOut {
        out: Box::new(file),
        resume_after: Some(resume.last_seq),
    })
}

/// Runs a node until a fatal error.
pub fn serve(options: ServeOptions) -> Result<(), ServeError> {
    check_member(options.id, &options.peers)?;
    options.timing.check()?;
    let span = info_span!("node", id = options.id.0);
    let _entered = span.enter();
    let (storage, persistent, _recovery) = FileStorage::open(
        &options.data_dir,
        &options.cluster_id,
        options.id,
        options.bootstrap,
    )?;
    let known_peers = Arc::new(Mutex::new(KnownPeers::load(&options.data_dir)?));
    let addr = listen_address(&options)?;
    let listener = TcpListener::bind(&addr).map_err(|source| ServeError::Listen {
        addr: addr.clone(),
        source,
    })?;
    let trace = match &options.trace {
        None => None,
        Some(path) => Some(open_trace(path, &options, &persistent)?),
    };
    tracing::info!(addr, data_dir = %options.data_dir.display(), "listening");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ options.id.0;
    let mut transport = transport::start(
        TransportOptions {
            id: options.id,
            cluster_id: options.cluster_id.clone(),
            peers: options.peers.clone(),
            max_frame: options.max_frame,
            test_control: options.test_control,
            incarnation: crate::node::SplitMix64::new(seed).next_u64(),
            storage_id: storage.storage_id(),
            known_peers,
            max_connections: options.max_connections,
            client_idle_timeout: options.client_idle_timeout,
        },
        listener,
    )
    .map_err(|source| ServeError::Listen {
        addr: addr.clone(),
        source,
    })?;
    let origin = Instant::now();
    let mut node = Node::start(
        NodeOptions {
            id: options.id,
            peers: options.peers.clone(),
            cluster_id: options.cluster_id.clone(),
            timing: options.timing,
            seed,
            trace,
            replication: options.replication,
            // The transport's contract (crate::transport).
            fifo_links: true,
        },
        persistent,
        storage,
        origin.elapsed(),
        &mut transport,
    )?;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let now: Time = origin.elapsed();
        let wait = node
            .next_deadline()
            .map_or(Duration::from_secs(3600), |d| d.saturating_sub(now));
        if !transport.next_batch(wait, &mut batch, MAX_BATCH) {
            return Ok(());
        }
        let started = Instant::now();
        node.handle(origin.elapsed(), batch.drain(..), &mut transport)?;
        let took = started.elapsed();
        node.batch_took(took);
        if took > options.timing.election_min / 2 {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                election_min_ms = options.timing.election_min.as_millis() as u64,
                "a batch of steps held the event loop for a large part of an election timeout"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::node::Event;
    use crate::wire::DEFAULT_MAX_FRAME;

    fn options(dir: &tempfile::TempDir, id: u64) -> ServeOptions {
        ServeOptions {
            id: NodeId(id),
            peers: crate::config::parse_peers("1=127.0.0.1:1,2=127.0.0.1:2").unwrap(),
            cluster_id: "c".into(),
            data_dir: dir.path().join("data"),
            trace: None,
            timing: Timing::default(),
            replication: Replication::runtime(),
            listen: None,
            max_frame: DEFAULT_MAX_FRAME,
            test_control: false,
            max_connections: crate::transport::DEFAULT_MAX_CONNECTIONS,
            client_idle_timeout: crate::transport::DEFAULT_CLIENT_IDLE_TIMEOUT,
            bootstrap: true,
        }
    }

    #[test]
    fn the_node_listens_on_loopback_unless_told_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(&dir, 1);
        o.peers = crate::config::parse_peers("1=[::1]:7001,2=10.0.0.2:7002").unwrap();
        assert_eq!(listen_address(&o).unwrap(), "[::1]:7001");
        o.id = NodeId(2);
        assert_eq!(listen_address(&o).unwrap(), "127.0.0.1:7002");
        o.listen = Some("0.0.0.0:9000".into());
        assert_eq!(listen_address(&o).unwrap(), "0.0.0.0:9000");
        o.listen = None;
        o.peers = crate::config::parse_peers("1=localhost:7005").unwrap();
        o.id = NodeId(1);
        assert_eq!(listen_address(&o).unwrap(), "127.0.0.1:7005");
    }

    #[test]
    fn a_trace_is_continued_after_its_last_complete_line_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.ndjson");
        let o = options(&dir, 1);
        let fresh = open_trace(&path, &o, &PersistentState::default()).unwrap();
        assert_eq!(fresh.resume_after, None);
        drop(fresh);

        let header =
            raft_spec::trace::Header::new("c", vec![NodeId(1), NodeId(2)], "kv", NodeId(1))
                .with_replication(o.replication);
        let mut text = serde_json::to_string(&header).unwrap();
        text.push('\n');
        let (server, _) = raft_spec::Server::<raft_spec::Kv>::new(NodeId(1), vec![NodeId(2)]);
        let digest = raft_spec::trace::LogDigest::default();
        for seq in 1..=2 {
            let step = raft_spec::trace::Step::after(
                seq,
                raft_spec::trace::TraceInput::Restart,
                &server,
                &digest,
            );
            text.push_str(&serde_json::to_string(&step).unwrap());
            text.push('\n');
        }
        let complete = text.len() as u64;
        text.push_str("{\"seq\":3,\"ser"); // cut short by a crash
        std::fs::write(&path, &text).unwrap();
        let resumed = open_trace(&path, &o, &PersistentState::default()).unwrap();
        assert_eq!(resumed.resume_after, Some(2));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), complete);
        drop(resumed);

        let err = open_trace(&path, &options(&dir, 2), &PersistentState::default())
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("it records node 1 of cluster \"c\""),
            "{err}"
        );

        // The header records the replication settings for the whole file: a
        // node restarted with others does not continue it.
        let mut capped = options(&dir, 1);
        capped.replication.max_append_entries = std::num::NonZeroUsize::new(2);
        let err = open_trace(&path, &capped, &PersistentState::default())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains(
                "it was recorded with the default replication settings, this node runs with \
                 --max-append-entries 2: restart with the same settings"
            ),
            "{err}"
        );

        std::fs::write(&path, "not json\n").unwrap();
        let err = open_trace(&path, &o, &PersistentState::default())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("t.ndjson:1: malformed trace line"),
            "{err}"
        );
    }

    #[test]
    fn a_trace_is_continued_after_the_steps_that_became_durable() {
        use crate::node::Io;
        use crate::storage::MemStorage;
        use raft_spec::{ClientId, Message, RequestVoteResponse, Term};
        struct Nowhere;
        impl Io for Nowhere {
            fn send(&mut self, _: NodeId, _: Message<KvCommand>) {}
            fn reply(&mut self, _: u64, _: crate::wire::Response) {}
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.ndjson");
        let o = options(&dir, 1);
        let mut node = Node::start(
            NodeOptions {
                id: o.id,
                peers: o.peers.clone(),
                cluster_id: o.cluster_id.clone(),
                timing: o.timing,
                seed: 1,
                trace: Some(open_trace(&path, &o, &PersistentState::default()).unwrap()),
                replication: o.replication,
                fifo_links: false,
            },
            PersistentState::default(),
            MemStorage::default(),
            Duration::ZERO,
            &mut Nowhere,
        )
        .unwrap();
        let ms = Duration::from_millis;
        node.handle(ms(400), vec![], &mut Nowhere).unwrap();
        let vote = Event::Peer {
            from: NodeId(2),
            message: Message::RequestVoteResponse(RequestVoteResponse {
                term: Term(1),
                vote_granted: true,
            }),
        };
        node.handle(ms(401), vec![vote], &mut Nowhere).unwrap();
        // Killed before the fsync of a client request's entry.
        node.storage_mut().fail_next_sync = true;
        let request = Event::Request {
            conn: 1,
            client_id: ClientId(1),
            request_no: 1,
            command: KvCommand::Get { key: "k".into() },
            ack: raft_spec::Ack::Applied,
            read: None,
        };
        assert!(node.handle(ms(402), vec![request], &mut Nowhere).is_err());
        let mut storage = node.into_storage();
        storage.crash();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Header, Restart, ElectionTimeout and its two markers, the vote and
        // its released marker, the request.
        assert_eq!(lines.len(), 8, "{text}");
        assert_eq!(lines[3], r#"{"synced":2}"#);
        assert_eq!(lines[4], r#"{"released":2}"#, "{text}");
        assert_eq!(lines[6], r#"{"released":3}"#, "{text}");

        let resumed = open_trace(&path, &o, storage.durable()).unwrap();
        assert_eq!(resumed.resume_after, Some(3));
        let kept = lines[..7].iter().map(|l| l.len() + 1).sum::<usize>();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), kept as u64);
        drop(resumed);

        // A version-1 trace is not continued.
        let old = text.replacen("\"version\":3", "\"version\":1", 1);
        let old: String = old
            .lines()
            .filter(|l| !l.starts_with("{\"synced\"") && !l.starts_with("{\"released\""))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, old).unwrap();
        let err = open_trace(&path, &o, storage.durable()).err().unwrap();
        assert!(
            err.to_string().ends_with(
                "a version-1 trace; this node writes version 3: move it away to start a new one"
            ),
            "{err}"
        );
    }
}
