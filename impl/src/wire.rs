//! The wire protocol: length-prefixed frames of postcard-encoded [`Frame`]s.
//!
//! A frame is a 4-byte big-endian payload length followed by the payload. A
//! length above the reader's limit ([`DEFAULT_MAX_FRAME`] unless configured)
//! is refused before anything is allocated.
//!
//! Every connection starts with [`Frame::Hello`] from the side that
//! connects, carrying the protocol version, the cluster id and who connects
//! (a peer node with its id, or a client). The accepting node answers
//! [`Frame::Welcome`] or [`Frame::Refused`] with the reason, logs a refusal,
//! and closes. After that:
//! - peer connections carry [`Frame::Raft`] one way (each node dials every
//!   peer for what it sends; replies come back on the peer's own connection);
//! - client connections carry [`Frame::Request`] / [`Frame::Status`] from the
//!   client and [`Frame::Response`] back.

use raft_spec::{
    Ack, ClientId, KvCommand, KvOutput, LogIndex, Message, NodeId, ReadMode, Role, Term,
};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use thiserror::Error;

/// The protocol version of [`Frame::Hello`]: it changes with the encoding
/// of any frame, since postcard's is positional (a node of another version
/// is refused at the handshake rather than misreading frames).
pub const PROTOCOL_VERSION: u32 = 5;
/// The default limit on a frame's payload: 64 MiB (an AppendEntries that
/// carries a lagging follower's missing entries can be large).
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// Who opens a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sender {
    /// A server of the cluster.
    Peer {
        /// Its id.
        id: NodeId,
        /// A random number drawn when its process started: a new value
        /// means the peer restarted.
        incarnation: u64,
        /// Its data directory's storage id (drawn when it was
        /// bootstrapped): a new value means its state was wiped.
        storage_id: u64,
    },
    /// A client.
    Client,
}

/// A node's state as `status` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// The node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// Its commit index.
    pub commit_index: LogIndex,
    /// Its last applied index.
    pub last_applied: LogIndex,
    /// The index of its last log entry.
    pub last_log_index: LogIndex,
    /// The term of its last log entry.
    pub last_log_term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
}

/// A node's answer to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The command was committed and applied; what it returned.
    Ok(KvOutput),
    /// This node is not the leader; the leader it knows of and its address.
    NotLeader {
        /// The leader's id, if known.
        leader: Option<NodeId>,
        /// The leader's address, if known.
        address: Option<String>,
    },
    /// The answer to [`Frame::Status`].
    Status(StatusInfo),
    /// The request is older than the client's latest applied one
    /// ([`raft_spec::ClientReply::Superseded`]): its answer is gone.
    Superseded {
        /// The number of the client's latest applied request.
        applied: u64,
    },
    /// The write reached the acknowledgement point the request asked for
    /// before it was applied ([`raft_spec::ClientReply::Accepted`]); it is
    /// at `index` of the leader's log.
    Accepted {
        /// Where the leader appended it.
        index: LogIndex,
        /// The term of the leader that answered.
        term: Term,
    },
}

/// Everything that travels on a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame of a connection.
    Hello {
        /// [`PROTOCOL_VERSION`] of the sender.
        protocol: u32,
        /// The cluster id (a client may leave it empty: it does not check).
        cluster_id: String,
        /// Who connects.
        sender: Sender,
    },
    /// The handshake was accepted.
    Welcome,
    /// The handshake was refused; the connection closes.
    Refused {
        /// Why.
        reason: String,
    },
    /// A Raft message from the peer that opened the connection.
    Raft(Message<KvCommand>),
    /// A client request (exactly-once by `(client_id, request_no)`).
    Request {
        /// The client session.
        client_id: ClientId,
        /// The request number, from 1.
        request_no: u64,
        /// The command.
        command: KvCommand,
        /// When the leader answers a write ([`Ack::Applied`]: with its
        /// result).
        ack: Ack,
        /// How a read is served (`None`: as a write, through the log).
        read: Option<ReadMode>,
    },
    /// A client asks for the node's status.
    Status,
    /// A node's answer to a client.
    Response(Response),
    /// Test control (accepted only by a node started with test control on):
    /// drop all traffic to and from these peers, in-process, to make a
    /// network partition between real processes. An empty list heals.
    Partition {
        /// The peers cut off.
        blocked: Vec<NodeId>,
    },
}

/// A frame that cannot be read.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The announced length is above the limit.
    #[error("oversized frame: {len} bytes, limit {max}")]
    Oversized {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload does not decode.
    #[error("malformed frame of {len} bytes: {reason}")]
    Malformed {
        /// The payload's length.
        len: usize,
        /// The decoder's message.
        reason: String,
    },
}

impl FrameError {
    /// Whether the peer simply closed the connection.
    pub fn is_eof(&self) -> bool {
        matches!(self, FrameError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof)
    }
}

/// Encodes `frame` with its length prefix, in a buffer sized for it: the
/// payload is copied once, however large its entries.
pub fn encode(frame: &Frame) -> io::Result<Vec<u8>> {
    let len = payload_len(frame)?;
    let mut framed = Vec::with_capacity(len as usize + 4);
    framed.extend_from_slice(&len.to_be_bytes());
    postcard::to_extend(frame, framed).map_err(io::Error::other)
}

/// The length of `frame`'s payload, which its prefix carries.
fn payload_len(frame: &Frame) -> io::Result<u32> {
    let len = serialized_len(frame).map_err(io::Error::other)?;
    u32::try_from(len).map_err(|_| io::Error::other("frame above 4 GiB"))
}

/// The length of `value`'s postcard encoding, counted by the encoder
/// itself writing nowhere (strings and byte strings are counted, not
/// copied).
pub fn serialized_len(value: &impl Serialize) -> postcard::Result<usize> {
    /// A writer that keeps only the count of bytes written.
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    postcard::to_io(value, Count(0)).map(|c| c.0)
}

/// Writes one frame (the caller flushes), serialized straight into `w`
/// after its length prefix, with no buffer of its own: a large
/// AppendEntries leaves without being copied first.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let len = payload_len(frame)?;
    w.write_all(&len.to_be_bytes())?;
    postcard::to_io(frame, w).map_err(io::Error::other)?;
    Ok(())
}

/// Reads one frame, refusing payloads above `max` bytes.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Frame, FrameError> {
    read_frame_with(r, max, |_| {})
}

/// The chunk in which [`read_frame_with`] reads a large payload.
pub const READ_CHUNK: usize = 1 << 20;

/// [`read_frame`], calling `progress(bytes read so far)` before each
/// [`READ_CHUNK`] of a payload larger than one chunk and before decoding
/// it: a frame that takes a
/// while to arrive tells its reader that its sender is alive.
pub fn read_frame_with(
    r: &mut impl Read,
    max: usize,
    mut progress: impl FnMut(usize),
) -> Result<Frame, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::Oversized { len, max });
    }
    let mut payload = vec![0u8; len];
    if len <= READ_CHUNK {
        r.read_exact(&mut payload)?;
    } else {
        for (i, chunk) in payload.chunks_mut(READ_CHUNK).enumerate() {
            progress(i * READ_CHUNK);
            r.read_exact(chunk)?;
        }
        // Once more as it is decoded, which takes a while too.
        progress(len);
    }
    postcard::from_bytes(&payload).map_err(|e| FrameError::Malformed {
        len,
        reason: e.to_string(),
    })
}

/// What [`FrameBuf::fill`] stopped on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filled {
    /// The source has nothing more for now (a non-blocking socket).
    WouldBlock,
    /// The source is closed.
    Eof,
    /// It read its budget and the source may hold more: call again.
    Budget,
}

/// Frames cut out of a byte stream that arrives in pieces, as a
/// non-blocking socket delivers it: bytes go in with [`FrameBuf::fill`],
/// whole frames come out of [`FrameBuf::next_frame`]. A length above the
/// limit is refused as soon as its prefix is in, before its payload is.
#[derive(Debug, Default)]
pub struct FrameBuf {
    bytes: Vec<u8>,
    /// Where the first frame not yet taken starts.
    start: usize,
    /// Every byte that came in.
    received: u64,
}

/// The capacity a [`FrameBuf`] keeps once empty; a larger buffer (left by
/// a large frame) is given back.
const KEPT_CAPACITY: usize = 256 << 10;

impl FrameBuf {
    /// Reads from `r` through `scratch` until `r` would block, closes, or
    /// `budget` bytes came in.
    pub fn fill(
        &mut self,
        r: &mut impl Read,
        scratch: &mut [u8],
        budget: usize,
    ) -> io::Result<Filled> {
        let mut read = 0;
        while read < budget {
            match r.read(scratch) {
                Ok(0) => return Ok(Filled::Eof),
                Ok(n) => {
                    if self.start > 0 && self.start == self.bytes.len() {
                        self.clear();
                    }
                    self.bytes.extend_from_slice(&scratch[..n]);
                    read += n;
                    self.received += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Filled::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Filled::Budget)
    }

    /// The next whole frame, if it is all in; an error if its announced
    /// length is above `max` or its payload does not decode.
    pub fn next_frame(&mut self, max: usize) -> Result<Option<Frame>, FrameError> {
        let pending = &self.bytes[self.start..];
        let Some((prefix, rest)) = pending.split_first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > max {
            return Err(FrameError::Oversized { len, max });
        }
        let Some(payload) = rest.get(..len) else {
            // The rest of a large frame comes in one allocation.
            self.bytes.reserve(len - rest.len());
            return Ok(None);
        };
        let frame = postcard::from_bytes(payload).map_err(|e| FrameError::Malformed {
            len,
            reason: e.to_string(),
        })?;
        self.start += 4 + len;
        if self.start == self.bytes.len() {
            self.clear();
        }
        Ok(Some(frame))
    }

    /// Whether part of a frame is in.
    pub fn is_partial(&self) -> bool {
        self.start < self.bytes.len()
    }

    /// How many bytes came in, in all.
    pub fn received(&self) -> u64 {
        self.received
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.start = 0;
        if self.bytes.capacity() > KEPT_CAPACITY {
            self.bytes = Vec::new();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raft_spec::{AppendEntries, Entry, Payload};

    /// A source that hands out at most `step` bytes a read, then would
    /// block once, alternately, as a slow socket does.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
        blocked: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.blocked = !self.blocked;
            if self.blocked && !self.bytes.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.step.min(buf.len()).min(self.bytes.len());
            let (now, later) = self.bytes.split_at(n);
            buf[..n].copy_from_slice(now);
            self.bytes = later;
            Ok(n)
        }
    }

    #[test]
    fn frames_arriving_in_pieces_come_out_whole_and_in_order() {
        let frames = [
            Frame::Status,
            Frame::Response(Response::Ok(Some("v".repeat(5000).into()))),
            Frame::Welcome,
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            write_frame(&mut bytes, f).unwrap();
        }
        for step in [1, 3, 7, 4096, 1 << 20] {
            let mut source = Trickle {
                bytes: &bytes,
                step,
                blocked: false,
            };
            let (mut buf, mut scratch, mut got) = (FrameBuf::default(), vec![0u8; 64], vec![]);
            loop {
                let filled = buf.fill(&mut source, &mut scratch, 100).unwrap();
                while let Some(f) = buf.next_frame(DEFAULT_MAX_FRAME).unwrap() {
                    got.push(f);
                }
                if filled == Filled::Eof {
                    break;
                }
            }
            assert_eq!(got, frames, "step {step}");
            assert!(!buf.is_partial());
        }
    }

    #[test]
    fn a_frame_in_pieces_is_refused_on_its_prefix_or_its_payload() {
        let (mut buf, mut scratch) = (FrameBuf::default(), [0u8; 8]);
        let mut source: &[u8] = &1000u32.to_be_bytes();
        buf.fill(&mut source, &mut scratch, usize::MAX).unwrap();
        let err = buf.next_frame(100).unwrap_err();
        assert_eq!(err.to_string(), "oversized frame: 1000 bytes, limit 100");

        let mut buf = FrameBuf::default();
        let mut source: &[u8] = &[0, 0, 0, 3, 200, 200];
        buf.fill(&mut source, &mut scratch, usize::MAX).unwrap();
        assert!(buf.next_frame(100).unwrap().is_none());
        assert!(buf.is_partial());
        let mut source: &[u8] = &[200];
        buf.fill(&mut source, &mut scratch, usize::MAX).unwrap();
        let err = buf.next_frame(100).unwrap_err();
        assert!(matches!(err, FrameError::Malformed { len: 3, .. }), "{err}");
    }

    #[test]
    fn frames_round_trip() {
        let frames = vec![
            Frame::Hello {
                protocol: PROTOCOL_VERSION,
                cluster_id: "c".into(),
                sender: Sender::Peer {
                    id: NodeId(3),
                    incarnation: 77,
                    storage_id: 5,
                },
            },
            Frame::Raft(Message::AppendEntries(AppendEntries {
                term: Term(2),
                leader_id: NodeId(1),
                prev_log_index: LogIndex(4),
                prev_log_term: Term(1),
                entries: vec![Entry {
                    term: Term(2),
                    payload: Payload::Command {
                        client_id: ClientId(u64::MAX),
                        request_no: 7,
                        command: KvCommand::Put {
                            key: "k".into(),
                            value: "v".into(),
                        },
                    },
                }],
                leader_commit: LogIndex(4),
                read_round: 2,
            })),
            Frame::Raft(Message::AppendEntriesResponse(
                raft_spec::AppendEntriesResponse {
                    term: Term(2),
                    success: true,
                    index: LogIndex(5),
                    last_log_index: None,
                    read_round: 2,
                    applied: Some(LogIndex(4)),
                },
            )),
            Frame::Raft(Message::ReadIndex(raft_spec::ReadIndexRequest {
                term: Term(2),
                client_id: ClientId(9),
                request_no: 3,
            })),
            Frame::Raft(Message::ReadIndexResponse(raft_spec::ReadIndexResponse {
                term: Term(2),
                client_id: ClientId(9),
                request_no: 3,
                index: Some(LogIndex(4)),
            })),
            Frame::Request {
                client_id: ClientId(9),
                request_no: 4,
                command: KvCommand::get("k"),
                ack: Ack::AllApplied,
                read: Some(ReadMode::FollowerReadIndex),
            },
            Frame::Response(Response::NotLeader {
                leader: Some(NodeId(2)),
                address: Some("127.0.0.1:1".into()),
            }),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            let at = buf.len();
            write_frame(&mut buf, f).unwrap();
            // Written in place or encoded in a buffer: the same bytes, the
            // prefix counting exactly the payload.
            assert_eq!(buf[at..], encode(f).unwrap()[..]);
            assert_eq!(buf.len() - at - 4, postcard::to_allocvec(f).unwrap().len());
        }
        let mut r = &buf[..];
        for f in &frames {
            assert_eq!(&read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap(), f);
        }
        assert!(read_frame(&mut r, DEFAULT_MAX_FRAME).unwrap_err().is_eof());
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let mut buf = (1000u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&[0u8; 1000]);
        let err = read_frame(&mut &buf[..], 100).unwrap_err();
        assert_eq!(err.to_string(), "oversized frame: 1000 bytes, limit 100");

        let mut buf = 3u32.to_be_bytes().to_vec();
        buf.extend_from_slice(&[200, 200, 200]);
        let err = read_frame(&mut &buf[..], 100).unwrap_err();
        assert!(matches!(err, FrameError::Malformed { len: 3, .. }), "{err}");
    }
}
