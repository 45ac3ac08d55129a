//! The client: finds the leader (following "not leader, try node N"
//! answers), retries on failure with the same request number, so that each
//! command is applied exactly once (Raft §8: the session table of the server
//! answers a retried request without applying it again).
//!
//! Exactly-once holds within a session: the retries of one [`Client`]. The
//! command-line client opens a fresh session per invocation, so running
//! `raft-node put` twice is two requests (a put is idempotent anyway).
//!
//! A request in flight at a leader that loses its leadership is never
//! answered by it; the client notices through its per-attempt timeout
//! ([`ClientOptions::attempt_timeout`]) or the closed connection, and
//! retries elsewhere under the same number.

use crate::config::Peers;
use crate::node::SplitMix64;
use crate::transport;
use crate::wire::{self, Frame, Response, Sender, StatusInfo, DEFAULT_MAX_FRAME};
use raft_spec::{Ack, ClientId, KvCommand, KvOutput, LogIndex, NodeId, ReadMode, Term};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tracing::debug;

/// A failed client operation.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClientError {
    /// No leader answered within the timeout.
    #[error("no answer from a leader within {after:?} (last error: {last_error})")]
    Timeout {
        /// The timeout.
        after: Duration,
        /// The last thing that went wrong.
        last_error: String,
    },
    /// The request is older than the session's latest applied request,
    /// whose answer is the only one the session keeps (a retry that came
    /// too late).
    #[error("request {request_no} of this session is superseded by request {applied}, which is applied: a session keeps the answer to its latest request only")]
    Superseded {
        /// The request.
        request_no: u64,
        /// The session's latest applied request.
        applied: u64,
    },
    /// The node answered something unexpected.
    #[error("unexpected answer from node {node}: {answer}")]
    Unexpected {
        /// The node.
        node: u64,
        /// What it said.
        answer: String,
    },
}

/// What a node answered a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The command was applied (or the read served): its result.
    Done(KvOutput),
    /// The write reached the point its [`Ack`] names, before it was
    /// applied: at `index` of the log of the leader of `term`.
    Accepted {
        /// Where the leader appended it.
        index: LogIndex,
        /// The term of the leader that answered.
        term: Term,
    },
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The cluster's nodes and addresses.
    pub cluster: Peers,
    /// The cluster id to present (empty: do not check).
    pub cluster_id: String,
    /// How long one operation may take, retries included.
    pub timeout: Duration,
    /// How long to wait for one node's answer before trying another.
    pub attempt_timeout: Duration,
}

impl ClientOptions {
    /// Defaults: 10 s per operation, 1 s per attempt.
    pub fn new(cluster: Peers) -> Self {
        ClientOptions {
            cluster,
            cluster_id: String::new(),
            timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(1),
        }
    }
}

static CLIENTS: AtomicU64 = AtomicU64::new(0);

/// A fresh random client id.
pub fn random_client_id() -> ClientId {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = SplitMix64::new(
        nanos ^ (u64::from(std::process::id()) << 40) ^ CLIENTS.fetch_add(1, Ordering::Relaxed),
    );
    ClientId(rng.next_u64())
}

struct Conn {
    node: NodeId,
    stream: BufReader<TcpStream>,
}

/// A client session: one id, request numbers 1, 2, ...
pub struct Client {
    options: ClientOptions,
    client_id: ClientId,
    next_request_no: u64,
    conn: Option<Conn>,
    leader: Option<NodeId>,
    /// How many "not leader, try N" answers were followed.
    pub redirects: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("next_request_no", &self.next_request_no)
            .field("leader", &self.leader)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with a fresh random id.
    pub fn new(options: ClientOptions) -> Self {
        Self::with_session(options, random_client_id(), 1)
    }

    /// A client continuing session `client_id` at `next_request_no`.
    pub fn with_session(options: ClientOptions, client_id: ClientId, next_request_no: u64) -> Self {
        Client {
            options,
            client_id,
            next_request_no,
            conn: None,
            leader: None,
            redirects: 0,
        }
    }

    /// The session id.
    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// The leader that answered last.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Starts with `node` (instead of the first of the cluster).
    pub fn prefer(&mut self, node: NodeId) {
        self.leader = Some(node);
    }

    /// Runs `command` under the next request number, answered once applied
    /// (reads through the log).
    pub fn call(&mut self, command: KvCommand) -> Result<KvOutput, ClientError> {
        let no = self.next_request_no;
        self.next_request_no += 1;
        self.call_numbered(no, command)
    }

    /// Runs `command` under the next request number, a write answered at
    /// `ack` and a read served as `read` says (`None`: through the log).
    pub fn call_as(
        &mut self,
        command: KvCommand,
        ack: Ack,
        read: Option<ReadMode>,
    ) -> Result<Answer, ClientError> {
        let no = self.next_request_no;
        self.next_request_no += 1;
        self.request(no, command, ack, read)
    }

    /// Runs `command` as request `request_no` (a retry reuses the number).
    pub fn call_numbered(
        &mut self,
        request_no: u64,
        command: KvCommand,
    ) -> Result<KvOutput, ClientError> {
        match self.request(request_no, command, Ack::Applied, None)? {
            Answer::Done(output) => Ok(output),
            accepted @ Answer::Accepted { .. } => Err(ClientError::Unexpected {
                node: self.leader.map_or(0, |n| n.0),
                answer: format!("{accepted:?}"),
            }),
        }
    }

    fn request(
        &mut self,
        request_no: u64,
        command: KvCommand,
        ack: Ack,
        read: Option<ReadMode>,
    ) -> Result<Answer, ClientError> {
        let started = Instant::now();
        let ids: Vec<NodeId> = self.options.cluster.keys().copied().collect();
        let mut target = self
            .leader
            .or_else(|| ids.first().copied())
            .unwrap_or(NodeId(0));
        let mut last_error = String::from("no node tried");
        let mut misses = 0usize;
        let request = Frame::Request {
            client_id: self.client_id,
            request_no,
            command,
            ack,
            read,
        };
        while started.elapsed() < self.options.timeout {
            match self.attempt(target, &request) {
                Ok(Response::Ok(output)) => {
                    self.leader = Some(target);
                    return Ok(Answer::Done(output));
                }
                Ok(Response::Accepted { index, term }) => {
                    self.leader = Some(target);
                    return Ok(Answer::Accepted { index, term });
                }
                Ok(Response::NotLeader { leader, address }) => {
                    if let (Some(l), Some(a)) = (leader, &address) {
                        self.options.cluster.entry(l).or_insert_with(|| a.clone());
                    }
                    last_error = format!("node {} is not the leader", target.0);
                    match leader {
                        Some(l) if l != target => {
                            debug!(from = target.0, to = l.0, "redirected to the leader");
                            self.redirects += 1;
                            target = l;
                            continue;
                        }
                        _ => {}
                    }
                }
                Ok(Response::Superseded { applied }) => {
                    self.leader = Some(target);
                    return Err(ClientError::Superseded {
                        request_no,
                        applied,
                    });
                }
                Ok(other) => {
                    return Err(ClientError::Unexpected {
                        node: target.0,
                        answer: format!("{other:?}"),
                    })
                }
                Err(e) => {
                    last_error = e;
                    self.conn = None;
                }
            }
            // Try the next node; pause after a round without a leader.
            let pos = ids.iter().position(|&n| n == target).unwrap_or(0);
            target = ids
                .get((pos + 1) % ids.len().max(1))
                .copied()
                .unwrap_or(target);
            self.leader = None;
            misses += 1;
            if misses.is_multiple_of(ids.len().max(1)) {
                thread::sleep(Duration::from_millis(20));
            }
        }
        self.conn = None;
        Err(ClientError::Timeout {
            after: self.options.timeout,
            last_error,
        })
    }

    fn attempt(&mut self, node: NodeId, frame: &Frame) -> Result<Response, String> {
        if self.conn.as_ref().is_none_or(|c| c.node != node) {
            let addr = self
                .options
                .cluster
                .get(&node)
                .ok_or_else(|| format!("no address for node {}", node.0))?;
            let stream = transport::connect(
                addr,
                &self.options.cluster_id,
                Sender::Client,
                self.options.attempt_timeout,
                DEFAULT_MAX_FRAME,
            )?;
            self.conn = Some(Conn {
                node,
                stream: BufReader::new(stream),
            });
        }
        let conn = self.conn.as_mut().ok_or("no connection")?;
        let stream = conn.stream.get_mut();
        wire::write_frame(stream, frame)
            .and_then(|()| stream.flush())
            .map_err(|e| format!("node {}: {e}", node.0))?;
        match wire::read_frame(&mut conn.stream, DEFAULT_MAX_FRAME) {
            Ok(Frame::Response(r)) => Ok(r),
            Ok(other) => Err(format!("node {} answered {other:?}", node.0)),
            Err(e) => Err(format!("node {}: {e}", node.0)),
        }
    }

    /// Asks `node` for its status.
    pub fn status(&mut self, node: NodeId) -> Result<StatusInfo, String> {
        match self.attempt(node, &Frame::Status) {
            Ok(Response::Status(s)) => Ok(s),
            Ok(other) => {
                self.conn = None;
                Err(format!("node {} answered {other:?}", node.0))
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// Test control: tells `node` to drop all traffic with `blocked` (a node
    /// started with test control only).
    pub fn partition(&mut self, node: NodeId, blocked: &[NodeId]) -> Result<(), String> {
        let frame = Frame::Partition {
            blocked: blocked.to_vec(),
        };
        let result = self.attempt(node, &frame);
        self.conn = None;
        match result {
            Ok(Response::Ok(_)) => Ok(()),
            Ok(other) => Err(format!("node {} answered {other:?}", node.0)),
            Err(e) => Err(e),
        }
    }

    /// Every node's status (or why it did not answer), in id order.
    pub fn cluster_status(&mut self) -> Vec<(NodeId, Result<StatusInfo, String>)> {
        let ids: Vec<NodeId> = self.options.cluster.keys().copied().collect();
        ids.into_iter().map(|n| (n, self.status(n))).collect()
    }
}
