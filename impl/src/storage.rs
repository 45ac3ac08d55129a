//! Durable storage of the persistent state (`current_term`, `voted_for`,
//! log): a write-ahead log of the server's [`Persist`] outputs.
//!
//! # On disk
//!
//! A data directory holds:
//! - `LOCK`: held with an exclusive lock (`flock`) for as long as a node
//!   runs on the directory, and holding that process's id. A second
//!   process on the same directory is refused, naming the holder: two
//!   processes appending to one WAL could vote twice in a term. The lock
//!   goes with the process (a `kill -9` releases it).
//! - `identity.json`: the cluster id and node id the directory belongs to,
//!   and a random *storage id* naming this copy of the node's state, written
//!   (and fsynced, with the directory) when the node is bootstrapped
//!   (`--bootstrap`). Starting a node with another node's or another
//!   cluster's directory is refused; so is starting on a directory that was
//!   never bootstrapped without `--bootstrap`: a node whose state was wiped
//!   must not rejoin silently (it would vote as if it had never voted, and
//!   for leaders lacking entries it acknowledged: Raft §5.2 and Fig. 2
//!   assume its persistent state survives). Peers hold each other to the
//!   storage id they first saw ([`KnownPeers`], `peers.json`), so a wiped
//!   node bootstrapped again is refused by them too.
//! - `raft.synced`: how many bytes of the WAL are known durable (a 12-byte
//!   record: `len: u64 LE`, CRC-32 of those 8 bytes), advanced after
//!   `fdatasync`s by a background thread (at most every
//!   [`WATERMARK_INTERVAL`]), so it never runs ahead of what is synced.
//! - `raft.wal`: an 8-byte magic `RAFTWAL1`, then records. A record is a
//!   12-byte header (`len: u32 LE`, `len_crc: u32 LE` = CRC-32 of the four
//!   length bytes, `crc: u32 LE` = CRC-32 of the payload), then `len` bytes of
//!   payload: one [`Persist`]'s hard state and log write, encoded with
//!   postcard as the pair `(Option<HardState>, Option<LogWrite>)`. Recovery folds the records
//!   with [`PersistentState::apply_persist`], so a restart recovers exactly
//!   what was persisted.
//!
//! Decision: one append-only file rather than segments. The spec has no
//! snapshots, so no prefix of the log can ever be dropped and segments would
//! buy nothing yet.
//!
//! # Durability
//!
//! [`Storage::append`] buffers; [`Storage::sync`] writes the buffer with one
//! `write` and one `fdatasync`: the group commit of the event loop. Nothing
//! the server sends or replies leaves before the `sync` that covers its step.
//!
//! The WAL reaches its file through [`WalFile`]: a real [`File`], or a
//! [`SimFile`], a file in memory that models what a crash keeps (a process
//! kill keeps every byte written, a power loss only the synced ones and a
//! torn prefix of the rest) and whose writes and syncs a test can make fail.
//! The storage tests and the simulation run the same [`FileStorage`] code
//! over it, encoding, checksums and recovery included.
//!
//! # Recovery
//!
//! - A **torn tail** (a record cut short by a crash during the last write, or
//!   zero bytes where it should be) is truncated with a warning. A record
//!   whose checksum fails is treated as torn only if it is the last thing in
//!   the file (nothing valid follows it) and lies past the synced length of
//!   `raft.synced`: only an unsynced write can be torn.
//! - **Lost synced records** (the valid records end before the synced
//!   length: the file was cut, or a synced record was damaged) stop the node
//!   with [`StorageError::LostSynced`], naming the file and the offsets.
//!   Records synced in the last [`WATERMARK_INTERVAL`] before a crash are not
//!   yet covered by `raft.synced`; their loss looks like a torn tail.
//! - **Corruption before the tail** (a checksum failure with valid records
//!   after it) stops the node with [`StorageError::Corrupt`], naming the file
//!   and the byte offset of the bad record. Nothing is truncated then: the
//!   operator decides.
//!
//! A storage failure is fatal for the node (as etcd's `Storage` documents):
//! the event loop stops rather than run on a state it cannot persist.

use raft_spec::{KvCommand, NodeId, Persist, PersistentState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use thiserror::Error;
use tracing::{info, warn};

/// The WAL file's first bytes.
pub const MAGIC: &[u8; 8] = b"RAFTWAL1";
/// Bytes of a record header.
pub const HEADER_LEN: usize = 12;
/// The largest record accepted when reading (a record holds what one step
/// persisted).
pub const MAX_RECORD: usize = 256 << 20;

/// What the event loop needs from storage.
pub trait Storage {
    /// Adds one step's [`Persist`] to the current batch (not yet durable).
    fn append(&mut self, persist: &Persist<KvCommand>) -> Result<(), StorageError>;
    /// Makes every appended record durable.
    fn sync(&mut self) -> Result<(), StorageError>;
}

/// A storage failure. Each variant names the file.
#[derive(Debug, Error)]
pub enum StorageError {
    /// An I/O error on a file or directory.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A record before the tail fails its checksum or does not decode.
    #[error("corrupted record in {} at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The WAL file.
        path: PathBuf,
        /// Offset of the record's header.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file does not start with [`MAGIC`].
    #[error("{} is not a raft-node WAL (bad magic)", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The data directory belongs to another node or cluster.
    #[error("data directory {} belongs to node {found_node} of cluster {found_cluster:?}, not node {node} of cluster {cluster:?}", dir.display())]
    WrongIdentity {
        /// The directory.
        dir: PathBuf,
        /// The node id it was created for.
        found_node: u64,
        /// The cluster id it was created for.
        found_cluster: String,
        /// The node id asked for.
        node: u64,
        /// The cluster id asked for.
        cluster: String,
    },
    /// A record could not be encoded.
    #[error("cannot encode a record: {0}")]
    Encode(String),
    /// The directory holds no node state and `--bootstrap` was not given.
    #[error("data directory {} holds no node state (no {IDENTITY_FILE}). If this node is new, start it once with --bootstrap. If it ran before, its term, vote and log are gone: restore the directory from a copy; a node that rejoins empty can vote for a leader lacking entries it acknowledged, and lose them", dir.display())]
    NotBootstrapped {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory was bootstrapped but its WAL is missing, or holds
    /// records while its identity is missing.
    #[error("data directory {} is incomplete: {what}. Restore it from a copy; starting on it would forget votes and entries", dir.display())]
    Incomplete {
        /// The directory.
        dir: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The WAL's valid records end before what was synced.
    #[error("{}: the valid records end at byte offset {offset}, but {synced} bytes were synced (recorded in {}): synced records are lost (the file was cut short or damaged). The node stops rather than forget votes and entries it acknowledged: restore the data directory from a copy", path.display(), path.with_file_name(SYNCED_FILE).display())]
    LostSynced {
        /// The WAL file.
        path: PathBuf,
        /// Where the valid records end.
        offset: u64,
        /// The synced length recorded.
        synced: u64,
    },
    /// Another process holds the data directory's lock.
    #[error("data directory {} is in use by another process ({holder}; lock file {}): stop it, or give this node another data directory", dir.display(), dir.join(LOCK_FILE).display())]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// Who holds it, as the lock file says (`pid N`, or that it does
        /// not say).
        holder: String,
    },
}

/// The lock file of a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Takes the exclusive lock of the data directory `dir`, writing this
/// process's id into the lock file: the lock lasts as long as the returned
/// file is open.
pub fn lock_data_dir(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut held = String::new();
            let _ = file.read_to_string(&mut held);
            let holder = match held.trim() {
                "" => "its process id is not recorded".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(StorageError::Locked {
                dir: dir.to_path_buf(),
                holder,
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
    }
    file.set_len(0).map_err(io_err("write", &path))?;
    file.write_all(std::process::id().to_string().as_bytes())
        .map_err(io_err("write", &path))?;
    Ok(file)
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The identity file of a data directory.
pub const IDENTITY_FILE: &str = "identity.json";
/// The synced-length file of a data directory.
pub const SYNCED_FILE: &str = "raft.synced";
/// The peers' storage ids file of a data directory.
pub const PEERS_FILE: &str = "peers.json";
/// How often, at most, the synced length in `raft.synced` is advanced.
pub const WATERMARK_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Identity {
    cluster_id: String,
    node_id: NodeId,
    /// Random, drawn when the directory is bootstrapped: names this copy of
    /// the node's state.
    storage_id: u64,
}

/// Writes `bytes` to `dir/name` atomically and durably (a temporary file,
/// fsync, rename, fsync of the directory).
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    sync_dir(dir)
}

/// A fresh random storage id (never 0).
fn new_storage_id(node: NodeId) -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ node.0;
    crate::node::SplitMix64::new(seed).next_u64().max(1)
}

/// The storage ids of this node's peers, as first seen in their handshakes
/// and kept in `peers.json`: a peer that later presents another one was
/// bootstrapped again on an empty directory, and is refused.
#[derive(Debug)]
pub struct KnownPeers {
    path: PathBuf,
    dir: PathBuf,
    ids: BTreeMap<NodeId, u64>,
}

/// A peer presenting another storage id than the one first seen.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("node {} presents storage id {presented:016x}, but it was first seen with storage id {known:016x}: its data directory was replaced (wiped and bootstrapped again) and a Raft server that lost its term, vote and log must not rejoin. Restore node {}'s data directory from a copy; to accept it as it is, remove node {} from {} on every other node, knowing that entries it acknowledged may be lost", peer.0, peer.0, peer.0, path.display())]
pub struct ReplacedPeer {
    /// The peer.
    pub peer: NodeId,
    /// The storage id it presents.
    pub presented: u64,
    /// The storage id first seen.
    pub known: u64,
    /// The file that records it.
    pub path: PathBuf,
}

impl KnownPeers {
    /// Loads `dir/peers.json` (none yet: no peer seen).
    pub fn load(dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join(PEERS_FILE);
        let ids = match fs::read(&path) {
            Ok(bytes) => {
                let pairs: Vec<(NodeId, u64)> =
                    serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
                        path: path.clone(),
                        offset: e.column() as u64,
                        reason: e.to_string(),
                    })?;
                pairs.into_iter().collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        Ok(KnownPeers {
            path,
            dir: dir.to_path_buf(),
            ids,
        })
    }

    /// Accepts `peer` presenting `storage_id` if it is the one first seen
    /// (recording it, durably, on first sight); refuses another one.
    pub fn admit(&mut self, peer: NodeId, storage_id: u64) -> Result<(), AdmitError> {
        match self.ids.get(&peer) {
            Some(&known) if known == storage_id => Ok(()),
            Some(&known) => Err(AdmitError::Replaced(ReplacedPeer {
                peer,
                presented: storage_id,
                known,
                path: self.path.clone(),
            })),
            None => {
                self.ids.insert(peer, storage_id);
                let pairs: Vec<(NodeId, u64)> = self.ids.iter().map(|(&p, &s)| (p, s)).collect();
                let bytes =
                    serde_json::to_vec(&pairs).map_err(|e| StorageError::Encode(e.to_string()))?;
                write_durably(&self.dir, PEERS_FILE, &bytes)?;
                Ok(())
            }
        }
    }
}

/// Why a peer was not admitted.
#[derive(Debug, Error)]
pub enum AdmitError {
    /// It was bootstrapped again.
    #[error(transparent)]
    Replaced(#[from] ReplacedPeer),
    /// Its storage id could not be recorded.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Keeps `raft.synced` at (or behind) the WAL's synced length, from a
/// thread of its own so that the event loop never waits for its fsync.
#[derive(Debug)]
struct Watermark {
    tx: Option<mpsc::Sender<u64>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Watermark {
    /// Waits for the last synced length to be recorded (a storage that is
    /// closed, rather than killed, leaves an exact `raft.synced`).
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Encodes a synced length as stored in `raft.synced`.
fn encode_synced(len: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out[..8]);
    out[8..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes `raft.synced`; `None` if it is damaged.
fn decode_synced(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != 12 {
        return None;
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[..8]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[8..]);
    (crc32fast::hash(&len) == u32::from_le_bytes(crc)).then(|| u64::from_le_bytes(len))
}

impl Watermark {
    /// Starts the thread that writes `file` (named `path` in warnings).
    fn start(file: File, path: PathBuf) -> Self {
        let (tx, rx) = mpsc::channel::<u64>();
        let thread = thread::spawn(move || {
            while let Ok(mut len) = rx.recv() {
                while let Ok(later) = rx.try_recv() {
                    len = later;
                }
                let written = file
                    .write_all_at(&encode_synced(len), 0)
                    .and_then(|()| file.sync_data());
                if let Err(e) = written {
                    // The WAL itself is intact; only the check of a later
                    // recovery is weakened.
                    warn!(file = %path.display(), "cannot record the synced length: {e}");
                    return;
                }
                thread::sleep(WATERMARK_INTERVAL);
            }
        });
        Watermark {
            tx: Some(tx),
            thread: Some(thread),
        }
    }
}

/// What recovery found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Records read.
    pub records: u64,
    /// Bytes of torn tail that were truncated (0 if none).
    pub truncated_bytes: u64,
    /// Offset where the torn tail started.
    pub truncated_at: Option<u64>,
}

/// What the WAL does to its file: append bytes, make them durable, cut a
/// torn tail.
pub trait WalFile {
    /// Appends `bytes` at the end of the file (handed to the kernel: a
    /// process kill keeps them, a power loss may not).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes every byte appended so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes, durably.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl WalFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }
}

/// A WAL file in memory that keeps apart what was appended (what the
/// kernel holds: a process kill keeps it) and what was synced (what a power
/// loss keeps), with crash points a test sets: a write torn after some of
/// its bytes, a sync that fails.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimFile {
    bytes: Vec<u8>,
    durable: usize,
    /// The next append writes only this many of its bytes, then fails (a
    /// crash in the middle of the `write`).
    pub tear_next_append: Option<usize>,
    /// The next sync fails without making anything durable (a crash before
    /// the `fdatasync` returns).
    pub fail_next_sync: bool,
    /// The next sync makes everything durable, then fails (a crash right
    /// after it).
    pub fail_after_next_sync: bool,
}

impl SimFile {
    /// Every byte appended: what a process killed now leaves on disk.
    pub fn after_kill(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    /// What a power loss now leaves on disk: every synced byte, and the
    /// first `torn` of the bytes appended since (fewer if fewer were).
    pub fn after_power_loss(&self, torn: usize) -> Vec<u8> {
        let end = self.bytes.len().min(self.durable.saturating_add(torn));
        self.bytes[..end].to_vec()
    }

    /// How many bytes are durable (what a power loss keeps for sure).
    pub fn durable_len(&self) -> u64 {
        self.durable as u64
    }

    /// A file holding `bytes`, all durable (a disk after a restart).
    pub fn holding(bytes: Vec<u8>) -> Self {
        SimFile {
            durable: bytes.len(),
            bytes,
            ..SimFile::default()
        }
    }
}

fn crash(what: &str) -> io::Error {
    io::Error::other(format!("simulated crash {what}"))
}

impl WalFile for SimFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(n) = self.tear_next_append.take() {
            self.bytes.extend_from_slice(&bytes[..n.min(bytes.len())]);
            return Err(crash("during a write"));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.fail_next_sync) {
            return Err(crash("before the fsync"));
        }
        self.durable = self.bytes.len();
        if std::mem::take(&mut self.fail_after_next_sync) {
            return Err(crash("after the fsync"));
        }
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        self.bytes.truncate(len);
        self.durable = len;
        Ok(())
    }
}

/// The WAL: records appended to a [`WalFile`] (on disk, a [`File`]).
#[derive(Debug)]
pub struct FileStorage<F: WalFile = File> {
    path: PathBuf,
    file: F,
    /// The data directory's lock, held while the storage lives (on disk).
    lock: Option<File>,
    buf: Vec<u8>,
    /// Whether to fdatasync (always true outside benchmarks of the storage
    /// itself).
    fsync: bool,
    /// The file's length: every byte appended (synced, after a sync).
    len: u64,
    /// Where synced lengths are recorded (on disk).
    watermark: Option<Watermark>,
    /// The data directory's storage id (0 outside a data directory).
    storage_id: u64,
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

impl FileStorage {
    /// Opens the data directory `dir` of node `node` of cluster `cluster_id`
    /// and recovers the persistent state. A directory that holds no node
    /// state is created (bootstrapped) only if `bootstrap` is set; otherwise
    /// it is refused ([`StorageError::NotBootstrapped`]).
    pub fn open(
        dir: &Path,
        cluster_id: &str,
        node: NodeId,
        bootstrap: bool,
    ) -> Result<(Self, PersistentState<KvCommand>, Recovery), StorageError> {
        if !bootstrap && !dir.join(IDENTITY_FILE).exists() {
            return Err(StorageError::NotBootstrapped {
                dir: dir.to_path_buf(),
            });
        }
        fs::create_dir_all(dir).map_err(io_err("create data directory", dir))?;
        let lock = lock_data_dir(dir)?;
        let id_path = dir.join(IDENTITY_FILE);
        let path = dir.join("raft.wal");
        let identity = match fs::read(&id_path) {
            Ok(bytes) => {
                let found: Identity =
                    serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
                        path: id_path.clone(),
                        offset: e.column() as u64,
                        reason: e.to_string(),
                    })?;
                if found.cluster_id != cluster_id || found.node_id != node {
                    return Err(StorageError::WrongIdentity {
                        dir: dir.to_path_buf(),
                        found_node: found.node_id.0,
                        found_cluster: found.cluster_id,
                        node: node.0,
                        cluster: cluster_id.to_string(),
                    });
                }
                if !path.exists() {
                    return Err(StorageError::Incomplete {
                        dir: dir.to_path_buf(),
                        what: format!("{} is missing", path.display()),
                    });
                }
                found
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && bootstrap => {
                // Bootstrap: the WAL first (a crash before the identity is
                // written leaves an empty WAL, and bootstrapping again is
                // safe), then the identity, durably.
                let mut wal = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .open(&path)
                    .map_err(io_err("open", &path))?;
                let mut bytes = Vec::new();
                wal.read_to_end(&mut bytes).map_err(io_err("read", &path))?;
                if bytes.len() > MAGIC.len() {
                    return Err(StorageError::Incomplete {
                        dir: dir.to_path_buf(),
                        what: format!(
                            "{} holds records but {} is missing",
                            path.display(),
                            id_path.display()
                        ),
                    });
                }
                let _ = fs::remove_file(dir.join(SYNCED_FILE));
                sync_dir(dir)?;
                let identity = Identity {
                    cluster_id: cluster_id.to_string(),
                    node_id: node,
                    storage_id: new_storage_id(node),
                };
                let bytes = serde_json::to_vec(&identity)
                    .map_err(|e| StorageError::Encode(e.to_string()))?;
                write_durably(dir, IDENTITY_FILE, &bytes)?;
                info!(dir = %dir.display(), storage_id = format!("{:016x}", identity.storage_id), "bootstrapped a new data directory");
                identity
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::NotBootstrapped {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(io_err("read", &id_path)(e)),
        };

        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        let synced_path = dir.join(SYNCED_FILE);
        let synced_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&synced_path)
            .map_err(io_err("open", &synced_path))?;
        let mut recorded = [0u8; 12];
        let synced = match synced_file.read_at(&mut recorded, 0) {
            Ok(0) => 0,
            Ok(n) => decode_synced(&recorded[..n]).unwrap_or_else(|| {
                warn!(file = %synced_path.display(), "the synced length is unreadable: recovery cannot tell lost synced records from a torn tail");
                0
            }),
            Err(e) => return Err(io_err("read", &synced_path)(e)),
        };
        let fresh = bytes.is_empty();
        let (mut storage, state, recovery) = FileStorage::recover_from(path, file, &bytes, synced)?;
        if fresh {
            sync_dir(dir)?;
        }
        storage.lock = Some(lock);
        storage.storage_id = identity.storage_id;
        storage.watermark = Some(Watermark::start(synced_file, synced_path));
        Ok((storage, state, recovery))
    }

    /// The data directory's storage id (drawn when it was bootstrapped).
    pub fn storage_id(&self) -> u64 {
        self.storage_id
    }
}

impl<F: WalFile> FileStorage<F> {
    /// The WAL in `file` (named `path` in messages), which holds `bytes`
    /// of which `synced` are known durable: recovers the persistent state
    /// from them, cutting a torn tail (or writing the magic into an empty
    /// file), and returns the storage, the state and what recovery found.
    /// Valid records that end before `synced` are an error
    /// ([`StorageError::LostSynced`]). [`FileStorage::open`] does this on
    /// disk; the tests and the simulation do it on a [`SimFile`].
    pub fn recover_from(
        path: PathBuf,
        mut file: F,
        bytes: &[u8],
        synced: u64,
    ) -> Result<(Self, PersistentState<KvCommand>, Recovery), StorageError> {
        let (state, recovery, len) = if bytes.is_empty() {
            if synced > 0 {
                return Err(StorageError::LostSynced {
                    path,
                    offset: 0,
                    synced,
                });
            }
            file.append(MAGIC).map_err(io_err("write", &path))?;
            file.sync_data().map_err(io_err("fsync", &path))?;
            (
                PersistentState::default(),
                Recovery::default(),
                MAGIC.len() as u64,
            )
        } else {
            let (state, recovery) = recover(&path, bytes)?;
            let end = recovery.truncated_at.unwrap_or(bytes.len() as u64);
            if end < synced {
                return Err(StorageError::LostSynced {
                    path,
                    offset: end,
                    synced,
                });
            }
            if let Some(at) = recovery.truncated_at {
                warn!(
                    file = %path.display(),
                    offset = at,
                    bytes = recovery.truncated_bytes,
                    "torn tail in the WAL: truncating"
                );
                file.truncate(at).map_err(io_err("truncate", &path))?;
            }
            (state, recovery, end)
        };
        info!(
            file = %path.display(),
            records = recovery.records,
            term = state.current_term.0,
            log = state.log.len(),
            "recovered persistent state"
        );
        Ok((
            FileStorage {
                path,
                file,
                lock: None,
                buf: Vec::new(),
                fsync: true,
                len,
                watermark: None,
                storage_id: 0,
            },
            state,
            recovery,
        ))
    }

    /// The WAL's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file.
    pub fn file(&self) -> &F {
        &self.file
    }

    /// Mutable access to the file (a test sets its crash points).
    pub fn file_mut(&mut self) -> &mut F {
        &mut self.file
    }

    /// Gives the file back (what a crash leaves of it is the caller's to
    /// choose, for a [`SimFile`]).
    pub fn into_file(self) -> F {
        self.file
    }
}

/// Encodes one record (header and payload). The payload is what the
/// persist makes durable, its hard state and its log write;
/// [`Persist::parallel`] says when it may become durable, which a
/// recovery has no use for.
pub fn encode_record(persist: &Persist<KvCommand>, out: &mut Vec<u8>) -> Result<(), StorageError> {
    let record = (&persist.hard_state, &persist.log);
    let encode = |e: postcard::Error| StorageError::Encode(e.to_string());
    // The payload is serialized in place, after a header filled in once
    // its length and CRC are known: a large entry is copied once.
    let header = out.len();
    out.reserve(12 + crate::wire::serialized_len(&record).map_err(encode)?);
    out.extend_from_slice(&[0; 12]);
    if let Err(e) = postcard::to_io(&record, &mut *out) {
        out.truncate(header);
        return Err(encode(e));
    }
    let size = out.len() - header - 12;
    let Some(len) = u32::try_from(size)
        .ok()
        .filter(|&l| (l as usize) <= MAX_RECORD)
    else {
        out.truncate(header);
        return Err(StorageError::Encode(format!("record of {size} bytes")));
    };
    let len_bytes = len.to_le_bytes();
    let crc = crc32fast::hash(&out[header + 12..]);
    out[header..header + 4].copy_from_slice(&len_bytes);
    out[header + 4..header + 8].copy_from_slice(&crc32fast::hash(&len_bytes).to_le_bytes());
    out[header + 8..header + 12].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Checks the record at `at`: `Ok(Some((payload range, next)))` if valid,
/// `Ok(None)` if it is incomplete (runs past the end), `Err(reason)` if a
/// checksum fails.
fn check_record(bytes: &[u8], at: usize) -> Result<Option<(usize, usize)>, String> {
    if bytes.len() - at < HEADER_LEN {
        return Ok(None);
    }
    let len = u32_at(bytes, at);
    if crc32fast::hash(&len.to_le_bytes()) != u32_at(bytes, at + 4) {
        return Err("record header checksum mismatch".into());
    }
    let len = len as usize;
    if len > MAX_RECORD {
        return Err(format!("record length {len} exceeds {MAX_RECORD}"));
    }
    let start = at + HEADER_LEN;
    if bytes.len() - start < len {
        return Ok(None);
    }
    if crc32fast::hash(&bytes[start..start + len]) != u32_at(bytes, at + 8) {
        return Err("record checksum mismatch".into());
    }
    Ok(Some((start, start + len)))
}

/// Whether a valid record starts anywhere in `bytes[from..]`.
fn valid_record_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len()).any(|at| matches!(check_record(bytes, at), Ok(Some(_))))
}

/// Recovers the persistent state from the WAL's bytes. Returns where a torn
/// tail starts, if any; the caller truncates it.
pub fn recover(
    path: &Path,
    bytes: &[u8],
) -> Result<(PersistentState<KvCommand>, Recovery), StorageError> {
    let mut state = PersistentState::default();
    let mut recovery = Recovery::default();
    if bytes.len() < MAGIC.len() {
        // A crash while creating the file: only a prefix of the magic exists.
        if MAGIC.starts_with(bytes) {
            recovery.truncated_at = Some(0);
            recovery.truncated_bytes = bytes.len() as u64;
            return Ok((state, recovery));
        }
        return Err(StorageError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(StorageError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let corrupt = |reason: String| StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: at as u64,
            reason,
        };
        match check_record(bytes, at) {
            Ok(Some((start, end))) => {
                let (hard_state, log) = postcard::from_bytes(&bytes[start..end])
                    .map_err(|e| corrupt(format!("record does not decode: {e}")))?;
                let persist: Persist<KvCommand> = Persist {
                    hard_state,
                    log,
                    parallel: false,
                };
                state.apply_persist(&persist);
                recovery.records += 1;
                at = end;
            }
            Ok(None) => {
                // Runs past the end of the file: a write cut short.
                recovery.truncated_at = Some(at as u64);
                recovery.truncated_bytes = (bytes.len() - at) as u64;
                break;
            }
            Err(reason) => {
                if valid_record_after(bytes, at + 1) {
                    return Err(corrupt(reason));
                }
                recovery.truncated_at = Some(at as u64);
                recovery.truncated_bytes = (bytes.len() - at) as u64;
                break;
            }
        }
    }
    Ok((state, recovery))
}

impl<F: WalFile> Storage for FileStorage<F> {
    fn append(&mut self, persist: &Persist<KvCommand>) -> Result<(), StorageError> {
        encode_record(persist, &mut self.buf)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self.file.append(&self.buf);
        let appended = self.buf.len() as u64;
        self.buf.clear();
        written.map_err(io_err("append to", &self.path))?;
        self.len += appended;
        if self.fsync {
            self.file
                .sync_data()
                .map_err(io_err("fdatasync", &self.path))?;
            if let Some(tx) = self.watermark.as_ref().and_then(|w| w.tx.as_ref()) {
                // The thread is gone only after a failed write, which it
                // reported: the WAL goes on without the watermark.
                let _ = tx.send(self.len);
            }
        }
        Ok(())
    }
}

/// In-memory storage for the deterministic harness: appended records become
/// durable on [`Storage::sync`]; a simulated crash keeps only the durable ones.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    durable: PersistentState<KvCommand>,
    pending: Vec<Persist<KvCommand>>,
    /// Number of syncs done.
    pub syncs: u64,
    /// When set, the next sync fails (a simulated crash before the fsync).
    pub fail_next_sync: bool,
    /// When set, the next sync makes the records durable and then fails (a
    /// simulated crash right after the fsync, before the caller goes on).
    pub fail_after_next_sync: bool,
}

impl MemStorage {
    /// What a restart recovers: the durable state only.
    pub fn durable(&self) -> &PersistentState<KvCommand> {
        &self.durable
    }

    /// Forgets the records not yet synced, as a crash does.
    pub fn crash(&mut self) {
        self.pending.clear();
        self.fail_next_sync = false;
        self.fail_after_next_sync = false;
    }
}

impl Storage for MemStorage {
    fn append(&mut self, persist: &Persist<KvCommand>) -> Result<(), StorageError> {
        self.pending.push(persist.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        if self.fail_next_sync {
            self.fail_next_sync = false;
            self.pending.clear();
            return Err(StorageError::Io {
                op: "fdatasync",
                path: PathBuf::from("<simulated>"),
                source: io::Error::other("simulated crash before fsync"),
            });
        }
        for p in self.pending.drain(..) {
            self.durable.apply_persist(&p);
        }
        self.syncs += 1;
        if self.fail_after_next_sync {
            self.fail_after_next_sync = false;
            return Err(StorageError::Io {
                op: "fdatasync",
                path: PathBuf::from("<simulated>"),
                source: io::Error::other("simulated crash after fsync"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
