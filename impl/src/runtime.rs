//! One node process: storage, transport, trace file and the event loop on
//! the wall clock (`raft-node serve`).

use crate::config::{check_member, ConfigError, Peers, Timing};
use crate::node::{Event, Node, NodeError, NodeOptions, Time};
use crate::storage::{FileStorage, StorageError};
use crate::transport::{self, TransportOptions};
use raft_spec::NodeId;
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
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
    /// The address to listen on; by default the loopback address with the
    /// port of this node's `--peers` address.
    pub listen: Option<String>,
    /// The frame size limit.
    pub max_frame: usize,
    /// Accept the test-only partition control from clients.
    pub test_control: bool,
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
    /// The trace file could not be created.
    #[error("cannot create trace file {}: {source}", path.display())]
    TraceFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The event loop stopped on a fatal error.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// The listening address: `listen` if given, else loopback with the port of
/// the node's own address.
pub fn listen_address(options: &ServeOptions) -> Result<String, ServeError> {
    if let Some(l) = &options.listen {
        return Ok(l.clone());
    }
    check_member(options.id, &options.peers)?;
    let own = options.peers.get(&options.id).cloned().unwrap_or_default();
    let port = own.rsplit_once(':').map_or("0", |(_, p)| p);
    Ok(format!("127.0.0.1:{port}"))
}

/// Runs a node until a fatal error.
pub fn serve(options: ServeOptions) -> Result<(), ServeError> {
    check_member(options.id, &options.peers)?;
    options.timing.check()?;
    let span = info_span!("node", id = options.id.0);
    let _entered = span.enter();
    let (storage, persistent, _recovery) =
        FileStorage::open(&options.data_dir, &options.cluster_id, options.id)?;
    let addr = listen_address(&options)?;
    let listener = TcpListener::bind(&addr).map_err(|source| ServeError::Listen {
        addr: addr.clone(),
        source,
    })?;
    let trace: Option<Box<dyn Write + Send>> = match &options.trace {
        None => None,
        Some(path) => Some(Box::new(File::create(path).map_err(|source| {
            ServeError::TraceFile {
                path: path.clone(),
                source,
            }
        })?)),
    };
    tracing::info!(addr, data_dir = %options.data_dir.display(), "listening");
    let (tx, rx) = mpsc::channel::<Event>();
    let mut transport = transport::start(
        TransportOptions {
            id: options.id,
            cluster_id: options.cluster_id.clone(),
            peers: options.peers.clone(),
            max_frame: options.max_frame,
            test_control: options.test_control,
        },
        listener,
        tx,
    );
    let origin = Instant::now();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ options.id.0;
    let mut node = Node::start(
        NodeOptions {
            id: options.id,
            peers: options.peers.clone(),
            cluster_id: options.cluster_id.clone(),
            timing: options.timing,
            seed,
            trace,
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
        match rx.recv_timeout(wait) {
            Ok(event) => batch.push(event),
            Err(RecvTimeoutError::Timeout) => {}
            // The accepting thread holds a sender for as long as it runs.
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        node.handle(origin.elapsed(), batch.drain(..), &mut transport)?;
    }
}
