//! The trace format: what `raft-node` records and the replayer reads.
//!
//! # Format (NDJSON, version 3)
//!
//! A trace is a UTF-8 text file of JSON values, one per line (`\n`
//! terminated). Each node process writes its own trace of the steps *it*
//! took; the traces of a cluster's nodes together describe the run.
//!
//! **Line 1, the header** ([`Header`]):
//!
//! ```json
//! {"format":"raft-trace","version":3,"cluster_id":"local","servers":[1,2,3],"state_machine":"kv","recorded_by":1}
//! ```
//!
//! - `format` is always `"raft-trace"`, `version` is [`VERSION`];
//! - `cluster_id` is the cluster id of the handshake, `servers` every server
//!   of the cluster (sorted), `state_machine` names the [`StateMachine`]
//!   (`"kv"` for [`crate::Kv`]), `recorded_by` the server whose steps follow;
//! - `max_append_entries`, `max_append_bytes`, `window` and
//!   `empty_heartbeats` (each optional, omitted when unset) are the
//!   replication settings the recorder ran its server with
//!   ([`crate::Replication`], [`crate::Server::with_replication`]); all
//!   absent is Figure 2's pacing. They are configuration, not state, so a
//!   replayer must apply them to every server it builds (at the start and
//!   after every `"Restart"`), and the traces of one cluster must agree on
//!   them. A trace without them reads, and is written, byte for byte as
//!   before the fields existed.
//!
//! **Every further line, one step** ([`Step`]): the server, the input it
//! took, and the server's state *after* the step:
//!
//! ```json
//! {"seq":3,"server":1,"input":{"Message":{"from":2,"message":{"RequestVoteResponse":{"term":1,"vote_granted":true}}}},"digest":"5f0c2d6e8a9b1c3d","term":1,"role":"Leader","voted_for":1,"commit_index":0,"last_applied":0,"last_log_index":0,"last_log_term":0,"out":[{"CancelTimer":"Election"},{"SetTimer":"Heartbeat"},{"Send":{"to":3,"digest":"0b9e3f2a61c4d875"}}]}
//! ```
//!
//! - `seq` counts the server's steps from 1 within the file. A restarted
//!   node appends to its trace (no second header) and continues the count:
//!   its first step after the restart is `"Restart"`, which a replayer turns
//!   into a crash and a recovery from the persistent state of the previous
//!   step (see "When a step is recorded" for why that state is the one the
//!   node recovered);
//! - `input` is a [`TraceInput`]: `"Restart"` (the server (re)started from
//!   what it had persisted: [`crate::Server::restart`]), `"ElectionTimeout"`,
//!   `"HeartbeatTimeout"`, `{"Message":{"from":N,"message":M}}` with `M` a
//!   [`crate::Message`] in serde's externally tagged JSON form,
//!   `{"ClientRequest":{"client_id":C,"request_no":R,"command":X}}`, or
//!   `{"Synced":{"term":T,"index":I}}` (the leader's own write in parallel
//!   is durable through `I`: [`crate::Input::Synced`]);
//! - `digest` is [`state_digest`] of the server after the step, as 16
//!   lowercase hex digits; `term`, `role`, `voted_for`, `commit_index`,
//!   `last_applied`, `last_log_index` and `last_log_term` are readable copies
//!   of a few fields, for people, for error messages, and for the recorder's
//!   reconciliation at restart (below);
//! - `out` (version 3) is what the step emitted, as the recorder carried it
//!   out, in order: a list of [`Emitted`] (`Persist` with the hard state,
//!   the log write's first index and length, and `"parallel":true` for a
//!   leader's write in parallel with its sends, `Send` with the destination
//!   and the [`message_digest`], `SetTimer`, `CancelTimer`, `Reply` with the
//!   client, the request number and the answer). [`Output::Applied`] is
//!   left out.
//!
//! **Synced markers** ([`Synced`], version 2): a line
//!
//! ```json
//! {"synced":7}
//! ```
//!
//! says that what the steps up to `seq` 7 persisted is durable. It follows
//! the line of step 7 (blank lines aside), at most once per step.
//!
//! **Released markers** ([`Released`], version 3): a line
//!
//! ```json
//! {"released":7,"out":[{"Send":{"to":2,"digest":"0b9e3f2a61c4d875"}},{"Reply":{"client_id":4,"request_no":9,"reply":{"Ok":null}}}]}
//! ```
//!
//! says that the batch whose last step is 7 handed these sends and replies
//! to the network, in this order, at the moment the line was written. It
//! follows the line of step 7 or that step's synced marker, at most once per
//! step. What it lists is the batch's sends and replies (the `Send` and
//! `Reply` items of its steps' `out`, in order) less what the release rule
//! drops: [`released_sends`] (an AppendEntries superseded in the same batch
//! by a later one to the same server), and a reply nobody waits for (its
//! client's connection closed). When it is exactly that list with no reply
//! left out, the common case, `out` is omitted: `{"released":7}`. The
//! recorder decides by comparing what it hands over with what its steps
//! recorded, so a release that differs is always spelled out.
//!
//! **When a step is recorded.** The recorder handles its inputs in batches
//! with one fsync each (group commit) and, per batch: writes the lines of
//! the batch's steps (handed to the kernel, not fsynced), then fsyncs what
//! the steps persisted, then, if they persisted anything, writes the marker
//! `{"synced":S}` with `S` the batch's last step, and only then lets the
//! batch's messages and replies leave (the persist-before-send contract on
//! [`crate::Output`]), writing the released marker as it hands them over.
//! A replayer therefore sees, in each trace, whether a batch's sends left
//! before its writes were durable (a released marker before the batch's
//! synced marker), and which messages and replies a node let out. A process killed at any instant (SIGKILL: the kernel
//! keeps what was written) therefore leaves a trace that holds every step
//! whose writes may be durable, and a marker after every batch whose messages
//! may have left. Its tail, after the last marker or `"Restart"` step, may
//! hold steps whose writes never became durable; nothing they would have
//! sent has left the node. At restart the recorder compares the persistent
//! state it recovered (`term`, `voted_for`, `last_log_index`,
//! `last_log_term`) with that tail and cuts the steps that never became
//! durable (`raft_node::node`, "The trace across a crash"); it never cuts a
//! step at or before a marker, so a recovered state that contradicts a
//! marked step (storage that lost a synced write) stays in the trace for the
//! replayer to report at the `"Restart"`. The steps of one file are in the
//! order the server took them. A machine crash (power loss) may still lose
//! the unsynced tail of the trace file itself: the trace is made for process
//! kills.
//!
//! Readers of the steps ([`TraceReader::next_step`], and so the replayer)
//! skip the markers: a step's line says the step happened, whether or not a
//! marker follows.
//!
//! **Versions.** Version 1 had no markers (and wrote a batch's lines after
//! its fsync); version 2 no outputs and no released markers. This reader
//! reads versions [`OLDEST_VERSION`] to [`VERSION`]; a marker in a trace of
//! a version before it is an error.
//!
//! # Digest
//!
//! [`state_digest`] is 64-bit FNV-1a ([`Fnv64`]) over a canonical binary
//! encoding of the server's state, identical on every machine and process:
//!
//! - integers (`Term`, `LogIndex`, `NodeId`, lengths) as 8 bytes little-endian;
//! - `Option<T>` as byte `0`, or byte `1` then `T`;
//! - `Role` as one byte: Follower 0, Candidate 1, Leader 2;
//! - sets and maps as their length, then their elements in ascending order;
//! - the log as its length and its chained digest [`LogDigest`]: `h0` is the
//!   FNV offset basis and `h(i) = FNV-1a(h(i-1) ‖ term ‖ payload)`, the payload
//!   being the compact `serde_json` encoding of the entry's [`crate::Payload`]
//!   (fields in declaration order, no whitespace).
//!
//! The fields, in order: the tag `b"raft-state-v1"`, `id`, `current_term`,
//! `voted_for`, log length, log digest, `role`, `commit_index`,
//! `last_applied`, `leader_hint`, `votes_granted`, `next_index`,
//! `match_index`, and, only for a leader with a flow-control window, the tag
//! `b"progress"` and each peer's [`Progress`] (its id, then byte `0` for
//! probe, or byte `1`, the number of batches in flight and the last index of
//! each), and, only for a leader writing its log in parallel, the tag
//! `b"durable"` and its `durable_index`, and, only for a leader with writes
//! to answer before applying them, the tag `b"acks"`, their number and each
//! one's index, client, request number and [`crate::Ack`] as one byte
//! (stored 0, committed 1, replicated 2). The state machine and the session table are left out on
//! purpose: both are a deterministic function of `log[1..=last_applied]`
//! (a restarted server re-applies its log from [`Default`]), which the log
//! digest and `last_applied` cover; leaving them out keeps the digest cheap.
//! The chained log digest lets a recorder (or a replayer) maintain it in time
//! proportional to what each step writes ([`LogDigest::apply`]) instead of the
//! whole log, so recording and replay stay linear in trace length.
//!
//! # Reading
//!
//! [`TraceReader`] checks the header and parses each line: a step, or a
//! marker, which it checks follows a step ([`TraceReader::next_record`]);
//! every error names the file and the 1-based line ([`TraceError`]).

use crate::server::{
    ClientReply, HardState, Input, LogWrite, Output, Persist, PersistentState, ReadAnswer, Role,
    Server, Timer,
};
use crate::state_machine::StateMachine;
use crate::types::{ClientId, Entry, Log, LogIndex, NodeId, Term};
use crate::Message;
use crate::{Progress, Replication};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, BufRead, Write};

/// The value of [`Header::format`].
pub const FORMAT: &str = "raft-trace";
/// The version of the format described in this module, which the writer
/// writes: 2 added the synced markers ([`Synced`]), 3 the outputs of each
/// step ([`Step::out`]) and the released markers ([`Released`]).
pub const VERSION: u32 = 3;
/// The first version whose steps record their outputs and whose batches
/// end with a released marker.
pub const OUTPUTS_VERSION: u32 = 3;
/// The oldest version [`TraceReader`] reads (version 1: no markers).
pub const OLDEST_VERSION: u32 = 1;

/// The first line of a trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version, [`VERSION`] for this module.
    pub version: u32,
    /// The cluster id carried by the transport's handshake.
    pub cluster_id: String,
    /// Every server of the cluster, sorted.
    pub servers: Vec<NodeId>,
    /// The state machine's name (`"kv"`).
    pub state_machine: String,
    /// The server whose steps the file records.
    pub recorded_by: NodeId,
    /// The replication settings the recorder's server ran with
    /// ([`crate::Server::with_replication`]), as the header's own fields
    /// `max_append_entries`, `max_append_bytes`, `window`,
    /// `empty_heartbeats` and `parallel_write`, each left out when unset, so that traces of
    /// Figure 2's pacing keep their bytes and version.
    #[serde(flatten)]
    pub replication: Replication,
    /// Whether the recorder's transport delivers the messages of each link
    /// (one sender to one receiver) in the order they were released, with
    /// gaps (lost messages) but no reordering and no duplicates, as
    /// raft-node's TCP transport does. The replay then forgets a message
    /// once a later one on its link is delivered, which bounds its memory
    /// by what the links can still deliver. `false` (left out of the JSON):
    /// any order, any duplicates (a simulated network).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fifo_links: bool,
}

impl Header {
    /// A version-[`VERSION`] header.
    pub fn new(
        cluster_id: impl Into<String>,
        mut servers: Vec<NodeId>,
        state_machine: impl Into<String>,
        recorded_by: NodeId,
    ) -> Self {
        servers.sort();
        servers.dedup();
        Header {
            format: FORMAT.to_string(),
            version: VERSION,
            cluster_id: cluster_id.into(),
            servers,
            state_machine: state_machine.into(),
            recorded_by,
            replication: Replication::default(),
            fifo_links: false,
        }
    }

    /// The same header, recording the replication settings `replication`.
    #[must_use]
    pub fn with_replication(mut self, replication: Replication) -> Self {
        self.replication = replication;
        self
    }

    /// The same header, saying whether links are in order
    /// ([`Header::fifo_links`]).
    #[must_use]
    pub fn with_fifo_links(mut self, fifo: bool) -> Self {
        self.fifo_links = fifo;
        self
    }
}

/// The input of a recorded step: the restart, or an [`Input`] given to
/// [`crate::Server::step`].
///
/// It is written as its [`Input`] is in serde's externally tagged form
/// (`{"Message":{...}}`, `"ElectionTimeout"`, ...), with `"Restart"` beside
/// them: a trace line names the input itself, not a wrapper around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceInput<C> {
    /// The server (re)started from its persisted state
    /// ([`crate::Server::restart`]); the first step of every run.
    Restart,
    /// An input to [`crate::Server::step`].
    Step(Input<C>),
}

impl<C> From<Input<C>> for TraceInput<C> {
    fn from(input: Input<C>) -> Self {
        TraceInput::Step(input)
    }
}

impl<C> TraceInput<C> {
    /// The [`Input`] to give [`crate::Server::step`]; `None` for
    /// [`TraceInput::Restart`], which is [`crate::Server::restart`].
    pub fn into_input(self) -> Option<Input<C>> {
        match self {
            TraceInput::Restart => None,
            TraceInput::Step(input) => Some(input),
        }
    }

    /// The [`Input`], if this is not the restart.
    pub fn input(&self) -> Option<&Input<C>> {
        match self {
            TraceInput::Restart => None,
            TraceInput::Step(input) => Some(input),
        }
    }

    /// A short name: `Restart`, or the input's as [`Input::name`] gives it.
    pub fn name(&self) -> &'static str {
        match self {
            TraceInput::Restart => RESTART,
            TraceInput::Step(input) => input.name(),
        }
    }
}

/// The restart's name in a trace line.
const RESTART: &str = "Restart";

impl<C: Serialize> Serialize for TraceInput<C> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TraceInput::Restart => serializer.serialize_unit_variant("TraceInput", 0, RESTART),
            TraceInput::Step(input) => input.serialize(serializer),
        }
    }
}

impl<'de, C: Deserialize<'de>> Deserialize<'de> for TraceInput<C> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_enum("TraceInput", &[RESTART], input_de::TraceInputVisitor::new())
    }
}

/// [`TraceInput`]'s reader: it reads the variant's name, takes `"Restart"`
/// itself and hands any other name, with the rest of the value unread, to
/// [`Input`]'s own deserializer. Nothing is buffered or parsed twice.
mod input_de {
    use super::{Input, TraceInput, RESTART};
    use serde::de::{self, DeserializeSeed, EnumAccess, IntoDeserializer, VariantAccess, Visitor};
    use serde::Deserialize;
    use std::borrow::Cow;
    use std::fmt;
    use std::marker::PhantomData;

    pub(super) struct TraceInputVisitor<C>(PhantomData<C>);

    impl<C> TraceInputVisitor<C> {
        pub(super) fn new() -> Self {
            TraceInputVisitor(PhantomData)
        }
    }

    impl<'de, C: Deserialize<'de>> Visitor<'de> for TraceInputVisitor<C> {
        type Value = TraceInput<C>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a step's input: \"Restart\" or a server input")
        }

        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
            let (Name(name), variant) = data.variant::<Name<'de>>()?;
            if name == RESTART {
                variant.unit_variant()?;
                return Ok(TraceInput::Restart);
            }
            Input::deserialize(NameRead { name, variant }).map(TraceInput::Step)
        }
    }

    /// A variant's name, borrowed from the input where it can be.
    struct Name<'de>(Cow<'de, str>);

    impl<'de> Deserialize<'de> for Name<'de> {
        fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct NameVisitor;
            impl<'de> Visitor<'de> for NameVisitor {
                type Value = Name<'de>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an input's name")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                    Ok(Name(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                    Ok(Name(Cow::Owned(v.to_owned())))
                }
            }
            deserializer.deserialize_identifier(NameVisitor)
        }
    }

    /// An enum whose variant's name is already read: the deserializer
    /// [`Input`] reads itself from.
    struct NameRead<'de, A> {
        name: Cow<'de, str>,
        variant: A,
    }

    impl<'de, A: VariantAccess<'de>> de::Deserializer<'de> for NameRead<'de, A> {
        type Error = A::Error;

        fn deserialize_any<W: Visitor<'de>>(self, visitor: W) -> Result<W::Value, A::Error> {
            visitor.visit_enum(self)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct enum identifier ignored_any
        }
    }

    impl<'de, A: VariantAccess<'de>> EnumAccess<'de> for NameRead<'de, A> {
        type Error = A::Error;
        type Variant = A;

        fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, A), A::Error> {
            let name: de::value::CowStrDeserializer<'de, A::Error> = self.name.into_deserializer();
            Ok((seed.deserialize(name)?, self.variant))
        }
    }
}

/// One output of a step as the recorder carried it out (version 3): the
/// trace's record of [`Output`], in the order the server produced it.
/// [`Output::Applied`] is left out (the step's `last_applied` says it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Emitted<R> {
    /// [`Output::Persist`], handed to the storage: the hard state written,
    /// if any, and the log write as its first index and number of entries,
    /// if any (the entries themselves are in the step's digest).
    Persist {
        /// The hard state written.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hard_state: Option<HardState>,
        /// `(from, entries)` of the log write.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log: Option<(LogIndex, u64)>,
        /// Whether the write was made durable in parallel with the step's
        /// sends ([`Persist::parallel`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        parallel: bool,
    },
    /// [`Output::Send`], held back for the batch's release: the destination
    /// and the [`message_digest`] of the message.
    Send {
        /// The destination server.
        to: NodeId,
        /// [`message_digest`] of the message.
        digest: Digest,
    },
    /// [`Output::SetTimer`]: the timer's deadline was (re)set.
    SetTimer(Timer),
    /// [`Output::CancelTimer`]: the timer was stopped.
    CancelTimer(Timer),
    /// [`Output::ClientReply`], held back for the batch's release, with
    /// the answer the client is given.
    Reply {
        /// The client session.
        client_id: ClientId,
        /// The request answered.
        request_no: u64,
        /// The answer.
        reply: ClientReply<R>,
    },
}

impl<R> Emitted<R> {
    /// The record of `output` of a server whose log's [`LogDigest`] is
    /// `log` (a send's digest covers the entries it carries through it:
    /// [`message_digest`]); `None` for [`Output::Applied`], which a trace
    /// leaves out.
    pub fn of<C: Serialize>(output: &Output<C, R>, log: &LogDigest) -> Option<Self>
    where
        R: Clone,
    {
        Some(match output {
            Output::Persist(p) => Emitted::Persist {
                hard_state: p.hard_state,
                log: p.log.as_ref().map(|w| (w.from, w.entries.len() as u64)),
                parallel: p.parallel,
            },
            Output::Send { to, message } => Emitted::Send {
                to: *to,
                digest: message_digest(message, log),
            },
            Output::SetTimer(t) => Emitted::SetTimer(*t),
            Output::CancelTimer(t) => Emitted::CancelTimer(*t),
            Output::Applied { .. } => return None,
            Output::ClientReply {
                client_id,
                request_no,
                reply,
            } => Emitted::Reply {
                client_id: *client_id,
                request_no: *request_no,
                reply: reply.clone(),
            },
        })
    }

    /// The records of a step's outputs, in order, for a server whose log's
    /// [`LogDigest`] after the step is `log`.
    pub fn all<C: Serialize>(outputs: &[Output<C, R>], log: &LogDigest) -> Vec<Self>
    where
        R: Clone,
    {
        outputs.iter().filter_map(|o| Emitted::of(o, log)).collect()
    }

    /// Whether it leaves the node at the batch's release (a send or a
    /// reply), rather than at once (storage, timers).
    pub fn is_released(&self) -> bool {
        matches!(self, Emitted::Send { .. } | Emitted::Reply { .. })
    }
}

/// The digest of a message its sender sends, as a [`Emitted::Send`]
/// records it: 64-bit FNV-1a ([`Fnv64`]) over a binary encoding, identical on
/// every machine, that costs what the message's fixed fields cost, not its
/// entries:
///
/// - a tag byte (RequestVote 0, RequestVoteResponse 1, AppendEntries 2,
///   AppendEntriesResponse 3, ReadIndex 4, ReadIndexResponse 5), then the fields in declaration order,
///   integers as 8 bytes little-endian and booleans as one byte;
/// - for an AppendEntries, instead of its entries: their number, then the
///   sender's chained log digest ([`LogDigest`]) of its first
///   `prev_log_index + entries` entries, `sender_log`, which covers the
///   entries sent (they are the sender's entries at those indices) and the
///   prefix they extend. Should the sender's log not reach that index
///   (`Server` never sends so), the byte `0xff` follows instead, then each
///   entry's term and the compact `serde_json` encoding of its payload;
/// - a `read_round` other than 0 (of an AppendEntries or its response):
///   the bytes `read`, then the round; a response's reported applied
///   index: the bytes `applied`, then the index.
/// - a ReadIndexResponse's index as an optional integer (a 0 byte for
///   none, a 1 byte and the integer for some).
pub fn message_digest<C: Serialize>(message: &Message<C>, sender_log: &LogDigest) -> Digest {
    let mut h = Fnv64::new();
    match message {
        Message::RequestVote(m) => {
            h.write(&[0]);
            for n in [
                m.term.0,
                m.candidate_id.0,
                m.last_log_index.0,
                m.last_log_term.0,
            ] {
                h.write_u64(n);
            }
        }
        Message::RequestVoteResponse(m) => {
            h.write(&[1]);
            h.write_u64(m.term.0);
            h.write(&[u8::from(m.vote_granted)]);
        }
        Message::AppendEntries(m) => {
            h.write(&[2]);
            for n in [
                m.term.0,
                m.leader_id.0,
                m.prev_log_index.0,
                m.prev_log_term.0,
                m.leader_commit.0,
                m.entries.len() as u64,
            ] {
                h.write_u64(n);
            }
            match sender_log.prefix(m.last_index()) {
                Some(d) => h.write_u64(d),
                None => {
                    h.write(&[0xff]);
                    for e in &m.entries {
                        h.write_u64(e.term.0);
                        json_into(&mut h, &e.payload);
                    }
                }
            }
            if m.read_round != 0 {
                h.write(b"read");
                h.write_u64(m.read_round);
            }
        }
        Message::AppendEntriesResponse(m) => {
            h.write(&[3]);
            h.write_u64(m.term.0);
            h.write(&[u8::from(m.success)]);
            h.write_u64(m.index.0);
            if m.read_round != 0 {
                h.write(b"read");
                h.write_u64(m.read_round);
            }
            if let Some(applied) = m.applied {
                h.write(b"applied");
                h.write_u64(applied.0);
            }
        }
        Message::ReadIndex(m) => {
            h.write(&[4]);
            for n in [m.term.0, m.client_id.0, m.request_no] {
                h.write_u64(n);
            }
        }
        Message::ReadIndexResponse(m) => {
            h.write(&[5]);
            for n in [m.term.0, m.client_id.0, m.request_no] {
                h.write_u64(n);
            }
            h.write_opt(m.index.map(|i| i.0));
        }
    }
    Digest(h.finish())
}

/// Hashes the compact `serde_json` encoding of `value`, streamed into the
/// hash.
fn json_into<T: Serialize + ?Sized>(h: &mut Fnv64, value: &T) {
    let _ = serde_json::to_writer(h, value);
}

/// The release rule of a batch (version 3): which of the batch's sends,
/// given in order as `(destination, is an AppendEntries)`, leave the node
/// whose servers run `replication`. Every send leaves, except, under
/// Figure 2's pacing (no [`Replication::window`]), an AppendEntries
/// followed, in the same batch, by another AppendEntries to the same
/// server: the later one carries the leader's latest view (raft-node's
/// `node` module gives the argument), and a dropped message is what the
/// network may do anyway. With a window each AppendEntries carries a batch
/// of its own and all leave. The recorder applies it when it releases a
/// batch, the replayer when it checks a [`Released`] marker.
pub fn released_sends(sends: &[(NodeId, bool)], replication: &Replication) -> Vec<bool> {
    let mut keep = vec![true; sends.len()];
    if replication.window.is_some() {
        return keep;
    }
    let mut later: Vec<NodeId> = Vec::new();
    for (i, (to, append)) in sends.iter().enumerate().rev() {
        if *append {
            if later.contains(to) {
                keep[i] = false;
            } else {
                later.push(*to);
            }
        }
    }
    keep
}

/// A state digest: see the module docs. Serialized as 16 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Digest(pub u64);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Digest {
    fn serialize<Se: serde::Serializer>(&self, s: Se) -> Result<Se::Ok, Se::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads the hex digits where they are, without a copy: every step
        /// and every send carries a digest.
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("16 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
                if s.len() != 16 {
                    return Err(E::custom(format!(
                        "digest must be 16 hex digits, got {s:?}"
                    )));
                }
                u64::from_str_radix(s, 16)
                    .map(Digest)
                    .map_err(|e| E::custom(format!("digest {s:?}: {e}")))
            }
        }
        d.deserialize_str(Hex)
    }
}

/// One recorded step (every line after the header).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "C: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned")]
pub struct Step<C, R> {
    /// The step's number in the file, from 1.
    pub seq: u64,
    /// The server that took the step.
    pub server: NodeId,
    /// What it took.
    pub input: TraceInput<C>,
    /// [`state_digest`] of the server after the step.
    pub digest: Digest,
    /// `current_term` after the step.
    pub term: Term,
    /// The role after the step.
    pub role: Role,
    /// `voted_for` after the step.
    pub voted_for: Option<NodeId>,
    /// `commit_index` after the step.
    pub commit_index: LogIndex,
    /// `last_applied` after the step.
    pub last_applied: LogIndex,
    /// The index of the last log entry after the step.
    pub last_log_index: LogIndex,
    /// The term of the last log entry after the step.
    pub last_log_term: Term,
    /// What the step emitted, as the recorder carried it out (version 3;
    /// absent before): see [`Emitted`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<Vec<Emitted<R>>>,
}

impl<C, R> Step<C, R> {
    /// The step record of `server` after it took `input`; `log_digest` must
    /// be the [`LogDigest`] of the server's log. It records no outputs
    /// ([`Step::with_out`] adds them).
    pub fn after<S: StateMachine<Command = C, Output = R>>(
        seq: u64,
        input: TraceInput<C>,
        server: &Server<S>,
        log_digest: &LogDigest,
    ) -> Self {
        let s = StepState::of(server, log_digest);
        Step {
            seq,
            server: server.id,
            input,
            digest: s.digest,
            term: s.term,
            role: s.role,
            voted_for: s.voted_for,
            commit_index: s.commit_index,
            last_applied: s.last_applied,
            last_log_index: s.last_log_index,
            last_log_term: s.last_log_term,
            out: None,
        }
    }

    /// Steps `server` with `input` and records it as step `seq`, its
    /// outputs as [`Emitted::all`] gives them; `log_digest` (the
    /// [`LogDigest`] of the server's log) is brought up to date. Returns
    /// the record and the outputs, for the caller to carry out. A recorder
    /// that carries out every output as the server gives it (a test, a
    /// simple harness) records with this; raft-node records each output
    /// where it carries it out.
    pub fn take<S: StateMachine<Command = C, Output = R>>(
        seq: u64,
        server: &mut Server<S>,
        input: Input<C>,
        log_digest: &mut LogDigest,
    ) -> (Self, Vec<Output<C, R>>)
    where
        C: Clone + Serialize,
        R: Clone,
    {
        let traced = TraceInput::from(input.clone());
        let outputs = server.step(input);
        for o in &outputs {
            if let Output::Persist(Persist { log: Some(w), .. }) = o {
                log_digest.apply(w);
            }
        }
        let step = Step::after(seq, traced, server, log_digest)
            .with_out(Emitted::all(&outputs, log_digest));
        (step, outputs)
    }

    /// The same step, recording `out` as what it emitted.
    #[must_use]
    pub fn with_out(mut self, out: Vec<Emitted<R>>) -> Self {
        self.out = Some(out);
        self
    }

    /// The state the step recorded.
    pub fn state(&self) -> StepState {
        StepState {
            digest: self.digest,
            term: self.term,
            role: self.role,
            voted_for: self.voted_for,
            commit_index: self.commit_index,
            last_applied: self.last_applied,
            last_log_index: self.last_log_index,
            last_log_term: self.last_log_term,
        }
    }
}

/// What a step records of the server's state after it: the digest and the
/// readable fields. Compared as a whole; [`StepState::differences`] lists
/// what differs. [`Step`] keeps the same fields flat rather than holding
/// this struct: a trace line is a flat JSON object, and `serde(flatten)`
/// would buffer every line of a replay into a map before reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepState {
    /// [`state_digest`] of the server.
    pub digest: Digest,
    /// `current_term`.
    pub term: Term,
    /// The role.
    pub role: Role,
    /// `voted_for`.
    pub voted_for: Option<NodeId>,
    /// `commit_index`.
    pub commit_index: LogIndex,
    /// `last_applied`.
    pub last_applied: LogIndex,
    /// The index of the last log entry.
    pub last_log_index: LogIndex,
    /// The term of the last log entry.
    pub last_log_term: Term,
}

impl StepState {
    /// The state of `server`, whose log's [`LogDigest`] is `log_digest`.
    pub fn of<S: StateMachine>(server: &Server<S>, log_digest: &LogDigest) -> Self {
        let log = server.log();
        StepState {
            digest: state_digest_with(server, log_digest),
            term: server.current_term(),
            role: server.role(),
            voted_for: server.persistent.voted_for,
            commit_index: server.volatile.commit_index,
            last_applied: server.volatile.last_applied,
            last_log_index: log.last_index(),
            last_log_term: log.last_term(),
        }
    }

    /// The fields in which `self` (recorded) and `other` (expected) differ,
    /// as `(field, recorded, expected)`, readable fields first. When only the
    /// digest differs, its name says what the readable fields leave out.
    pub fn differences(&self, other: &StepState) -> Vec<(String, String, String)> {
        if self == other {
            return Vec::new();
        }
        let opt = |n: Option<NodeId>| n.map_or_else(|| "none".to_string(), |n| n.0.to_string());
        let readable = |s: &StepState| {
            [
                ("term", s.term.0.to_string()),
                ("role", format!("{:?}", s.role)),
                ("voted_for", opt(s.voted_for)),
                ("commit_index", s.commit_index.0.to_string()),
                ("last_applied", s.last_applied.0.to_string()),
                ("last_log_index", s.last_log_index.0.to_string()),
                ("last_log_term", s.last_log_term.0.to_string()),
            ]
        };
        let mut out: Vec<(String, String, String)> = readable(self)
            .into_iter()
            .zip(readable(other))
            .filter(|((_, r), (_, m))| r != m)
            .map(|((name, r), (_, m))| (name.to_string(), r, m))
            .collect();
        if self.digest != other.digest {
            let name = if out.is_empty() {
                // Only what the readable copy leaves out differs.
                "digest (log entries, leader_hint, votes_granted, next_index or match_index)"
            } else {
                "digest"
            };
            out.push((
                name.to_string(),
                self.digest.to_string(),
                other.digest.to_string(),
            ));
        }
        out
    }
}

/// A synced marker (version 2): what the steps up to `seq` [`Synced::synced`]
/// persisted is durable. See "When a step is recorded" in the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Synced {
    /// The `seq` of the step whose line the marker follows, the last step
    /// of a batch that persisted something.
    pub synced: u64,
}

/// A released marker (version 3): the batch that ended with step
/// [`Released::released`] handed its sends and replies to the network, in
/// the order [`Released::out`] lists them (only [`Emitted::Send`] and
/// [`Emitted::Reply`]). The recorder writes it at the point where it hands
/// them over, so its place against the batch's [`Synced`] marker says
/// whether anything left before the batch was durable. See "When a step is
/// recorded" in the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(bound = "R: Serialize + DeserializeOwned")]
pub struct Released<R> {
    /// The `seq` of the batch's last step, whose line the marker follows.
    pub released: u64,
    /// What left, in order; `None` (the field left out): exactly the
    /// batch's sends and replies less the AppendEntries the release rule
    /// drops ([`released_sends`]).
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub out: Option<Vec<Emitted<R>>>,
}

/// One line after the header: a step or a marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<C, R> {
    /// A step.
    Step(Step<C, R>),
    /// A synced marker.
    Synced(Synced),
    /// A released marker.
    Released(Released<R>),
}

/// The kinds of line a trace holds after its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineKind {
    Step,
    Synced,
    Released,
}

/// What `line` holds, decided on its first key: `"synced"` or
/// `"released"` for a marker (a step's first key is `"seq"`), so that a
/// malformed step is reported as a step and a malformed marker as a marker.
fn line_kind(line: &str) -> LineKind {
    let rest = line
        .trim_start()
        .strip_prefix('{')
        .map(str::trim_start)
        .unwrap_or_default();
    if rest.starts_with("\"synced\"") {
        LineKind::Synced
    } else if rest.starts_with("\"released\"") {
        LineKind::Released
    } else {
        LineKind::Step
    }
}

/// 64-bit FNV-1a (Fowler–Noll–Vo), the digest's hash: tiny, stable, and
/// defined by two constants, so every implementation agrees.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(u64);

impl Fnv64 {
    /// The FNV-1a 64-bit offset basis.
    pub const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    /// The FNV 64-bit prime.
    pub const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// A hasher at the offset basis.
    pub fn new() -> Self {
        Fnv64(Self::OFFSET_BASIS)
    }

    /// Hashes `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    /// Hashes an integer as 8 bytes little-endian.
    pub fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }

    /// Hashes an `Option<u64>` (byte 0, or byte 1 then the value).
    pub fn write_opt(&mut self, n: Option<u64>) {
        match n {
            None => self.write(&[0]),
            Some(n) => {
                self.write(&[1]);
                self.write_u64(n);
            }
        }
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// Hashing what is written: an encoder streams into the hash without a
/// buffer.
impl Write for Fnv64 {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        Fnv64::write(self, bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64::new()
    }
}

/// The chained digest of a log (see the module docs), kept for every prefix
/// so that truncation and appends cost what they write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogDigest {
    /// `prefix[i]` is the digest of the first `i` entries; `prefix[0]` is
    /// the offset basis.
    prefix: Vec<u64>,
}

impl Default for LogDigest {
    fn default() -> Self {
        LogDigest {
            prefix: vec![Fnv64::OFFSET_BASIS],
        }
    }
}

impl LogDigest {
    /// The digest of `log`, computed from scratch.
    pub fn of<C: Serialize>(log: &Log<C>) -> Self {
        let mut d = LogDigest::default();
        for e in log.entries() {
            d.push(e);
        }
        d
    }

    /// Carries out a [`LogWrite`]: truncate from `write.from`, then append.
    pub fn apply<C: Serialize>(&mut self, write: &LogWrite<C>) {
        let keep = usize::try_from(write.from.0.max(1)).unwrap_or(usize::MAX);
        self.prefix.truncate(keep);
        for e in &write.entries {
            self.push(e);
        }
    }

    fn push<C: Serialize>(&mut self, entry: &Entry<C>) {
        let last = self.value();
        let mut h = Fnv64::new();
        h.write_u64(last);
        h.write_u64(entry.term.0);
        // serde_json cannot fail on the spec's payloads (no maps with
        // non-string keys); an error would hash part of the payload, which
        // any divergence check then reports.
        json_into(&mut h, &entry.payload);
        self.prefix.push(h.finish());
    }

    /// The number of entries covered.
    pub fn len(&self) -> u64 {
        self.prefix.len() as u64 - 1
    }

    /// Whether the digest covers no entry.
    pub fn is_empty(&self) -> bool {
        self.prefix.len() == 1
    }

    /// The digest of the first `len` entries, if the log has that many.
    pub fn prefix(&self, len: LogIndex) -> Option<u64> {
        usize::try_from(len.0)
            .ok()
            .and_then(|i| self.prefix.get(i))
            .copied()
    }

    /// The digest of the whole log.
    pub fn value(&self) -> u64 {
        self.prefix.last().copied().unwrap_or(Fnv64::OFFSET_BASIS)
    }
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Follower => 0,
        Role::Candidate => 1,
        Role::Leader => 2,
    }
}

/// The digest of `server`'s state, computed from scratch (time proportional
/// to the log). See the module docs for the encoding.
pub fn state_digest<S: StateMachine>(server: &Server<S>) -> Digest {
    state_digest_with(server, &LogDigest::of(server.log()))
}

/// The digest of `server`'s state given its log's [`LogDigest`] (which the
/// caller keeps up to date with [`LogDigest::apply`]).
pub fn state_digest_with<S: StateMachine>(server: &Server<S>, log: &LogDigest) -> Digest {
    let p = &server.persistent;
    let v = &server.volatile;
    let mut h = Fnv64::new();
    h.write(b"raft-state-v1");
    h.write_u64(server.id.0);
    h.write_u64(p.current_term.0);
    h.write_opt(p.voted_for.map(|n| n.0));
    h.write_u64(log.len());
    h.write_u64(log.value());
    h.write(&[role_byte(v.role)]);
    h.write_u64(v.commit_index.0);
    h.write_u64(v.last_applied.0);
    h.write_opt(v.leader_hint.map(|n| n.0));
    h.write_u64(v.votes_granted.len() as u64);
    for n in &v.votes_granted {
        h.write_u64(n.0);
    }
    for map in [&v.next_index, &v.match_index] {
        h.write_u64(map.len() as u64);
        for (n, i) in map {
            h.write_u64(n.0);
            h.write_u64(i.0);
        }
    }
    // Flow control's state, only where it exists (a leader with a window),
    // so that the digests of Figure 2's pacing are as they always were.
    if !v.progress.is_empty() {
        h.write(b"progress");
        h.write_u64(v.progress.len() as u64);
        for (n, p) in &v.progress {
            h.write_u64(n.0);
            match p {
                Progress::Probe => h.write(&[0]),
                Progress::Replicate { inflight } => {
                    h.write(&[1]);
                    h.write_u64(inflight.len() as u64);
                    for i in inflight {
                        h.write_u64(i.0);
                    }
                }
            }
        }
    }
    if let Some(durable) = v.durable_index {
        h.write(b"durable");
        h.write_u64(durable.0);
    }
    // The state of reads, only where there is some, as for flow control.
    if v.read_round != 0 || !v.read_acks.is_empty() || !v.pending_reads.is_empty() {
        h.write(b"reads");
        h.write_u64(v.read_round);
        h.write_u64(v.read_acks.len() as u64);
        for (n, r) in &v.read_acks {
            h.write_u64(n.0);
            h.write_u64(*r);
        }
        h.write_u64(v.pending_reads.len() as u64);
        for r in &v.pending_reads {
            h.write_u64(r.client_id.0);
            h.write_u64(r.request_no);
            h.write_u64(r.round);
            h.write_opt(r.index.map(|i| i.0));
            match &r.answer {
                ReadAnswer::Value(command) => json_into(&mut h, command),
                ReadAnswer::Index(follower) => {
                    h.write(b"for");
                    h.write_u64(follower.0);
                }
            }
        }
    }
    // CheckQuorum and leases, only where they are on.
    if v.lease.is_some() || !v.recent_active.is_empty() || v.quiet.is_some() {
        h.write(b"lease");
        h.write_opt(v.lease.map(|l| l.round));
        h.write(&[v.lease.map_or(0, |l| u8::from(l.held))]);
        h.write_u64(v.recent_active.len() as u64);
        for n in &v.recent_active {
            h.write_u64(n.0);
        }
        h.write_opt(v.quiet);
    }
    if !v.forwarded_reads.is_empty() {
        h.write(b"forwarded");
        h.write_u64(v.forwarded_reads.len() as u64);
        for r in &v.forwarded_reads {
            h.write_u64(r.client_id.0);
            h.write_u64(r.request_no);
            h.write_opt(r.index.map(|i| i.0));
            json_into(&mut h, &r.command);
        }
    }
    if !v.applied_index.is_empty() {
        h.write(b"applied");
        h.write_u64(v.applied_index.len() as u64);
        for (n, index) in &v.applied_index {
            h.write_u64(n.0);
            h.write_u64(index.0);
        }
    }
    if !v.pending_acks.is_empty() {
        h.write(b"acks");
        h.write_u64(v.pending_acks.len() as u64);
        for (index, (client, request_no, ack)) in &v.pending_acks {
            h.write_u64(index.0);
            h.write_u64(client.0);
            h.write_u64(*request_no);
            h.write(&[*ack as u8]);
        }
    }
    Digest(h.finish())
}

/// An error reading a trace: every variant names the file, and the line
/// where it applies.
#[derive(Debug)]
pub enum TraceError {
    /// The file could not be opened or read.
    Io {
        /// The file.
        file: String,
        /// The line being read (0 when opening).
        line: u64,
        /// The cause.
        source: io::Error,
    },
    /// The file is empty: it has no header line.
    Empty {
        /// The file.
        file: String,
    },
    /// A line is not valid JSON for what it should hold.
    Parse {
        /// The file.
        file: String,
        /// The 1-based line number.
        line: u64,
        /// The parser's message.
        message: String,
    },
    /// The header has another format or version.
    BadHeader {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A marker is malformed, or is not where a marker may be (after the
    /// line of the step it names, in a trace of a version that has it).
    BadMarker {
        /// The file.
        file: String,
        /// The 1-based line number.
        line: u64,
        /// The marker's kind: `"synced"` or `"released"`.
        kind: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Io { file, line, source } => {
                write!(f, "{file}:{line}: cannot read trace: {source}")
            }
            TraceError::Empty { file } => write!(f, "{file}:1: empty trace, no header line"),
            TraceError::Parse {
                file,
                line,
                message,
            } => write!(f, "{file}:{line}: malformed trace line: {message}"),
            TraceError::BadHeader { file, message } => {
                write!(f, "{file}:1: bad trace header: {message}")
            }
            TraceError::BadMarker {
                file,
                line,
                kind,
                message,
            } => write!(f, "{file}:{line}: bad {kind} marker: {message}"),
        }
    }
}

impl std::error::Error for TraceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TraceError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Writes a trace: the header on creation, then one line per step.
///
/// The writer buffers; call [`TraceWriter::flush`] to hand what was written
/// to the underlying writer (the recorder does so after a batch's steps, and
/// after its marker: module docs, "When a step is recorded").
#[derive(Debug)]
pub struct TraceWriter<W: Write> {
    out: io::BufWriter<W>,
}

impl<W: Write> TraceWriter<W> {
    /// Starts a trace on `out` with `header` as its first line.
    pub fn new(out: W, header: &Header) -> io::Result<Self> {
        let mut w = TraceWriter {
            out: io::BufWriter::new(out),
        };
        w.line(header)?;
        Ok(w)
    }

    /// Continues a trace on `out` (positioned after the last complete line of
    /// an existing trace) without writing a header: a restarted node appends
    /// to its trace, starting with a [`TraceInput::Restart`] step.
    pub fn resume(out: W) -> Self {
        TraceWriter {
            out: io::BufWriter::new(out),
        }
    }

    fn line<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value).map_err(io::Error::other)?;
        self.out.write_all(b"\n")
    }

    /// Appends one step.
    pub fn write_step<C: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned>(
        &mut self,
        step: &Step<C, R>,
    ) -> io::Result<()> {
        self.line(step)
    }

    /// Appends a released marker: the batch whose last step is `seq` (the
    /// step written last) hands `out` (its sends and replies, in order) to
    /// the network now; `None`: exactly what the release rule keeps of the
    /// batch's sends and replies ([`Released::out`]).
    pub fn write_released<R: Serialize>(
        &mut self,
        seq: u64,
        out: Option<&[Emitted<R>]>,
    ) -> io::Result<()> {
        #[derive(Serialize)]
        struct Line<'a, R: Serialize> {
            released: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            out: Option<&'a [Emitted<R>]>,
        }
        self.line(&Line { released: seq, out })
    }

    /// Appends a synced marker: what the steps up to `seq` (the step written
    /// last) persisted is durable.
    pub fn write_synced(&mut self, seq: u64) -> io::Result<()> {
        self.line(&Synced { synced: seq })
    }

    /// Appends `step` as a batch of its own, durable and released at once:
    /// its line, a synced marker if it persisted anything, and a released
    /// marker with its sends and replies if it has any (its `out`, which a
    /// version-3 step has). What a recorder writes that syncs and releases
    /// after every step and keeps every reply (a test, a simple harness).
    pub fn write_alone<C: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned + Clone>(
        &mut self,
        step: &Step<C, R>,
    ) -> io::Result<()> {
        self.write_step(step)?;
        let out = step.out.as_deref().unwrap_or_default();
        if out.iter().any(|e| matches!(e, Emitted::Persist { .. })) {
            self.write_synced(step.seq)?;
        }
        let released: Vec<Emitted<R>> = out.iter().filter(|e| e.is_released()).cloned().collect();
        if !released.is_empty() {
            self.write_released(step.seq, Some(&released))?;
        }
        Ok(())
    }

    /// Hands everything written so far to the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Hands everything written to the underlying writer and gives it back.
    pub fn into_inner(self) -> io::Result<W> {
        self.out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
    }
}

/// Reads a trace: the header first, then its records (steps and markers).
#[derive(Debug)]
pub struct TraceReader<In: BufRead> {
    file: String,
    input: In,
    line: u64,
    offset: u64,
    header: Header,
    buf: String,
    /// The last step read, and the markers that followed it.
    last_step: Option<LastStep>,
    /// A last line cut short: its number and bytes.
    torn_tail: Option<(u64, u64)>,
}

/// The last step a [`TraceReader`] read, and which markers followed it.
#[derive(Clone, Copy, Debug)]
struct LastStep {
    seq: u64,
    synced: bool,
    released: bool,
}

impl<In: BufRead> TraceReader<In> {
    /// Reads the header of the trace `input`; `file` names it in errors.
    pub fn new(file: impl Into<String>, mut input: In) -> Result<Self, TraceError> {
        let file = file.into();
        let mut buf = String::new();
        let n = input.read_line(&mut buf).map_err(|source| TraceError::Io {
            file: file.clone(),
            line: 1,
            source,
        })?;
        if n == 0 {
            return Err(TraceError::Empty { file });
        }
        let header: Header = serde_json::from_str(&buf).map_err(|e| TraceError::Parse {
            file: file.clone(),
            line: 1,
            message: e.to_string(),
        })?;
        if header.format != FORMAT {
            return Err(TraceError::BadHeader {
                file,
                message: format!("format {:?}, expected {FORMAT:?}", header.format),
            });
        }
        if !(OLDEST_VERSION..=VERSION).contains(&header.version) {
            return Err(TraceError::BadHeader {
                file,
                message: format!(
                    "version {}, this reader reads {OLDEST_VERSION} to {VERSION}",
                    header.version
                ),
            });
        }
        Ok(TraceReader {
            file,
            input,
            line: 1,
            offset: n as u64,
            header,
            buf: String::new(),
            last_step: None,
            torn_tail: None,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file name given to [`TraceReader::new`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The 1-based number of the line read last (the header is line 1): after
    /// [`TraceReader::next_step`] returned a step, that step's line.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The bytes read so far, header included: after
    /// [`TraceReader::next_record`] returned a record, the offset just past
    /// its line (where a writer would cut the trace to end with it).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Once the reader returned `None`: the line number and length of the
    /// file's last line if it was cut short (no newline, and it does not
    /// parse): a recorder killed while writing it. Its step never left the
    /// node (a line precedes its batch's markers), so the trace ends before
    /// it.
    pub fn torn_tail(&self) -> Option<(u64, u64)> {
        self.torn_tail
    }

    /// The next step, `None` at the end of the file. Blank lines are skipped,
    /// and so are markers (once checked: [`TraceReader::next_record`]).
    pub fn next_step<C: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned>(
        &mut self,
    ) -> Option<Result<Step<C, R>, TraceError>> {
        loop {
            match self.next_record()? {
                Ok(Record::Step(step)) => return Some(Ok(step)),
                Ok(Record::Synced(_) | Record::Released(_)) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next record, step or marker, `None` at the end of the file. Blank
    /// lines are skipped. A marker must follow the line of the step it
    /// names, with at most the batch's other marker between them, at most
    /// once of each kind per step: synced markers from version 2, released
    /// markers from version 3 ([`TraceError::BadMarker`] otherwise). The
    /// order of a batch's two markers is not checked here: it is what the
    /// replayer judges.
    pub fn next_record<C: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned>(
        &mut self,
    ) -> Option<Result<Record<C, R>, TraceError>> {
        loop {
            self.buf.clear();
            self.line += 1;
            match self.input.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(n) => self.offset += n as u64,
                Err(source) => {
                    return Some(Err(TraceError::Io {
                        file: self.file.clone(),
                        line: self.line,
                        source,
                    }))
                }
            }
            if self.buf.trim().is_empty() {
                continue;
            }
            if !self.buf.ends_with('\n')
                && serde_json::from_str::<serde_json::Value>(&self.buf).is_err()
            {
                self.torn_tail = Some((self.line, self.buf.len() as u64));
                return None;
            }
            return Some(match line_kind(&self.buf) {
                LineKind::Synced => self
                    .marker::<Synced>(LineKind::Synced, |m| m.synced)
                    .map(Record::Synced),
                LineKind::Released => self
                    .marker::<Released<R>>(LineKind::Released, |m| m.released)
                    .map(Record::Released),
                LineKind::Step => serde_json::from_str(&self.buf)
                    .map(|step: Step<C, R>| {
                        self.last_step = Some(LastStep {
                            seq: step.seq,
                            synced: false,
                            released: false,
                        });
                        Record::Step(step)
                    })
                    .map_err(|e| TraceError::Parse {
                        file: self.file.clone(),
                        line: self.line,
                        message: e.to_string(),
                    }),
            });
        }
    }

    /// Parses and checks the marker of kind `kind` in `self.buf`; `seq`
    /// reads the step it names.
    fn marker<M: DeserializeOwned>(
        &mut self,
        kind: LineKind,
        seq: impl Fn(&M) -> u64,
    ) -> Result<M, TraceError> {
        let (name, since) = match kind {
            LineKind::Released => ("released", OUTPUTS_VERSION),
            _ => ("synced", 2),
        };
        let bad = |message: String| TraceError::BadMarker {
            file: self.file.clone(),
            line: self.line,
            kind: name,
            message,
        };
        if self.header.version < since {
            return Err(bad(format!(
                "a {name} marker in a version-{} trace ({name} markers came with version {since})",
                self.header.version
            )));
        }
        let marker: M = serde_json::from_str(&self.buf).map_err(|e| bad(e.to_string()))?;
        let named = seq(&marker);
        let Some(last) = &mut self.last_step else {
            return Err(bad(format!("a marker for step {named} before any step")));
        };
        if last.seq != named {
            return Err(bad(format!(
                "a marker for step {named}, but the step before it is {}",
                last.seq
            )));
        }
        let seen = match kind {
            LineKind::Released => &mut last.released,
            _ => &mut last.synced,
        };
        if *seen {
            return Err(bad(format!("a second {name} marker for step {named}")));
        }
        *seen = true;
        Ok(marker)
    }

    /// Every remaining step, stopping at the first error (markers are
    /// checked and skipped).
    pub fn steps<C: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned>(
        mut self,
    ) -> Result<Vec<Step<C, R>>, TraceError> {
        let mut out = Vec::new();
        while let Some(step) = self.next_step() {
            out.push(step?);
        }
        Ok(out)
    }
}

// ---- Resuming a trace after a restart ---------------------------------------

/// Where a restarted node continues its trace: what [`resume_trace`]
/// decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceResume {
    /// The trace's header.
    pub header: Header,
    /// How many bytes of the trace to keep (whole lines); the rest is cut.
    pub keep: usize,
    /// The `seq` of the last step kept (0 if none): the node's next step is
    /// `last_seq + 1`.
    pub last_seq: u64,
    /// The `seq`s of the steps cut (first, last), if any.
    pub cut: Option<(u64, u64)>,
}

/// The persistent state a step recorded, as far as its readable fields
/// tell: `current_term`, `voted_for`, last log index, last log term.
type PersistentFields = (Term, Option<NodeId>, LogIndex, Term);

/// Reconciles the trace `complete` (whole lines: a line cut short by a
/// crash is the caller's to drop) with the persistent state the storage
/// `recovered`, for a node that restarts (raft-node's `node` module, "The trace across a crash"). Of the last marked or `Restart` step and the steps after it,
/// the trace is kept up to the last one whose recorded `term`, `voted_for`,
/// `last_log_index` and `last_log_term` equal `recovered`'s, and the steps
/// after that one are cut. If none does, nothing is cut: the replayer
/// reports the difference at the `Restart`. `file` names the trace in
/// errors.
///
/// A version-1 trace (no markers) is kept whole: nothing in it says which
/// steps are confirmed.
pub fn resume_trace<C: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned>(
    file: &str,
    complete: &[u8],
    recovered: &PersistentState<C>,
) -> Result<TraceResume, TraceError> {
    struct Candidate {
        seq: u64,
        fields: PersistentFields,
        /// The end of the step's line, or of its marker's.
        end: u64,
    }
    let mut reader = TraceReader::new(file, complete)?;
    let header = reader.header().clone();
    let want: PersistentFields = (
        recovered.current_term,
        recovered.voted_for,
        recovered.log.last_index(),
        recovered.log.last_term(),
    );
    // The last marked or `Restart` step, then the steps after it; of steps
    // in a row that recorded the same fields only the last is kept (the
    // last match is the one that counts), so the tail stays as small as the
    // number of persistent states it went through.
    let mut tail: Vec<Candidate> = Vec::new();
    let mut last_seq = 0;
    while let Some(record) = reader.next_record::<C, R>() {
        match record? {
            Record::Step(step) => {
                if matches!(step.input, TraceInput::Restart) {
                    tail.clear();
                }
                last_seq = step.seq;
                let candidate = Candidate {
                    seq: step.seq,
                    fields: (
                        step.term,
                        step.voted_for,
                        step.last_log_index,
                        step.last_log_term,
                    ),
                    end: reader.offset(),
                };
                match tail.last_mut() {
                    Some(last) if last.fields == candidate.fields => *last = candidate,
                    _ => tail.push(candidate),
                }
            }
            Record::Synced(_) | Record::Released(_) => {
                // The reader checked that the marker names the last step: a
                // synced batch is durable, a released one was heard of.
                let marked = tail.pop().map(|c| Candidate {
                    end: reader.offset(),
                    ..c
                });
                tail.clear();
                tail.extend(marked);
            }
        }
    }
    let whole = TraceResume {
        header,
        keep: complete.len(),
        last_seq,
        cut: None,
    };
    if whole.header.version < 2 {
        return Ok(whole);
    }
    match tail.iter().rposition(|c| c.fields == want) {
        Some(k) if k + 1 < tail.len() => Ok(TraceResume {
            keep: usize::try_from(tail[k].end).unwrap_or(complete.len()),
            last_seq: tail[k].seq,
            cut: Some((tail[k].seq + 1, last_seq)),
            ..whole
        }),
        _ => Ok(whole),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A step's recorded state is compared as a whole, and its differences
    /// name each readable field that differs, then the digest; a digest that
    /// alone differs says what the readable fields leave out.
    #[test]
    fn step_states_list_their_differences() {
        let (server, _) = Server::<crate::Kv>::new(NodeId(1), vec![NodeId(1), NodeId(2)]);
        let state = StepState::of(&server, &LogDigest::default());
        assert!(state.differences(&state).is_empty());
        let other = StepState {
            commit_index: LogIndex(2),
            digest: Digest(state.digest.0 ^ 1),
            ..state
        };
        let names: Vec<String> = state.differences(&other).into_iter().map(|d| d.0).collect();
        assert_eq!(names, ["commit_index", "digest"]);
        let digest_only = StepState {
            digest: Digest(state.digest.0 ^ 1),
            ..state
        };
        let d = state.differences(&digest_only);
        assert_eq!(d.len(), 1);
        assert!(d[0].0.starts_with("digest (log entries"), "{d:?}");
        assert_eq!(d[0].1, state.digest.to_string());
    }
    use crate::{Ack, Kv, KvCommand, KvOutput, Payload, RequestVote};

    fn header() -> Header {
        Header::new(
            "test",
            vec![NodeId(3), NodeId(1), NodeId(2)],
            "kv",
            NodeId(1),
        )
    }

    fn put(k: &str) -> KvCommand {
        KvCommand::Put {
            key: k.into(),
            value: "v".into(),
        }
    }

    #[test]
    fn writer_and_reader_round_trip_every_input() {
        let (mut server, _) = Server::<Kv>::new(NodeId(1), vec![NodeId(2), NodeId(3)]);
        let inputs: Vec<Input<KvCommand>> = vec![
            Input::ElectionTimeout,
            Input::Message {
                from: NodeId(2),
                message: Message::RequestVoteResponse(crate::RequestVoteResponse {
                    term: Term(1),
                    vote_granted: true,
                }),
            },
            Input::ClientRequest {
                client_id: ClientId(9),
                request_no: 1,
                command: put("a"),
                ack: Ack::Applied,
            },
            Input::HeartbeatTimeout,
        ];
        let steps = recorded_steps(&mut server, inputs);
        assert_eq!(server.role(), Role::Leader);
        assert_eq!(steps[3].last_log_index, LogIndex(1));
        // The incrementally kept digest equals the one from scratch.
        assert_eq!(steps[4].digest, state_digest(&server));

        let mut w = TraceWriter::new(Vec::new(), &header()).unwrap();
        for s in &steps {
            w.write_step(s).unwrap();
        }
        w.flush().unwrap();
        let bytes = w.out.into_inner().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.lines().count(), 6);
        assert!(text.starts_with(r#"{"format":"raft-trace","version":3,"#));

        let r = TraceReader::new("mem", text.as_bytes()).unwrap();
        assert_eq!(r.header(), &header());
        assert_eq!(r.header().servers, vec![NodeId(1), NodeId(2), NodeId(3)]);
        let back: Vec<Step<KvCommand, KvOutput>> = r.steps().unwrap();
        assert_eq!(back, steps);
        assert_eq!(
            back[1].input.clone().into_input(),
            Some(Input::ElectionTimeout)
        );
        assert_eq!(back[0].input.clone().into_input(), None);
    }

    /// A step's input is written exactly as the server's [`Input`] is, with
    /// `"Restart"` beside its variants, and read back through [`Input`]'s
    /// own deserializer; a name that is neither is an error naming it.
    #[test]
    fn inputs_are_written_as_the_server_input_is() {
        let cases: Vec<(TraceInput<KvCommand>, &str)> = vec![
            (TraceInput::Restart, r#""Restart""#),
            (Input::ElectionTimeout.into(), r#""ElectionTimeout""#),
            (Input::HeartbeatTimeout.into(), r#""HeartbeatTimeout""#),
            (
                Input::Synced {
                    term: Term(2),
                    index: LogIndex(5),
                }
                .into(),
                r#"{"Synced":{"term":2,"index":5}}"#,
            ),
            (
                Input::ClientRequest {
                    client_id: ClientId(9),
                    request_no: 1,
                    command: put("a"),
                    ack: Ack::Applied,
                }
                .into(),
                r#"{"ClientRequest":{"client_id":9,"request_no":1,"command":{"Put":{"key":"a","value":"v"}}}}"#,
            ),
            (
                Input::Message {
                    from: NodeId(2),
                    message: Message::RequestVoteResponse(crate::RequestVoteResponse {
                        term: Term(1),
                        vote_granted: true,
                    }),
                }
                .into(),
                r#"{"Message":{"from":2,"message":{"RequestVoteResponse":{"term":1,"vote_granted":true}}}}"#,
            ),
        ];
        for (input, json) in cases {
            assert_eq!(serde_json::to_string(&input).unwrap(), json);
            let back: TraceInput<KvCommand> = serde_json::from_str(json).unwrap();
            assert_eq!(back, input, "{json}");
            // Read from an owned string too (no borrowed variant name).
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            let back: TraceInput<KvCommand> = serde_json::from_value(value).unwrap();
            assert_eq!(back, input, "{json}");
        }
        for bad in [
            r#""Reboot""#,
            r#"{"Restart":{}}"#,
            r#"{"Synced":{"term":2}}"#,
            "7",
        ] {
            let err = serde_json::from_str::<TraceInput<KvCommand>>(bad).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
        let err = serde_json::from_str::<TraceInput<KvCommand>>(r#""Reboot""#).unwrap_err();
        assert!(err.to_string().contains("Reboot"), "{err}");
    }

    #[test]
    fn the_header_round_trips_with_and_without_replication_settings() {
        // With Figure 2's pacing the fields are left out: the header's bytes
        // are those of every trace written before the fields existed.
        let plain = header();
        assert!(plain.replication.is_figure_2());
        let text = serde_json::to_string(&plain).unwrap();
        assert_eq!(
            text,
            r#"{"format":"raft-trace","version":3,"cluster_id":"test","servers":[1,2,3],"state_machine":"kv","recorded_by":1}"#
        );
        let line = format!("{text}\n");
        let r = TraceReader::new("plain.ndjson", line.as_bytes()).unwrap();
        assert_eq!(r.header(), &plain);

        // Settings in use are the header's own fields, and read back.
        let replication = Replication {
            max_append_entries: std::num::NonZeroUsize::new(3),
            max_append_bytes: std::num::NonZeroU64::new(4096),
            window: std::num::NonZeroUsize::new(8),
            empty_heartbeats: false,
            parallel_write: false,
            check_quorum: true,
            leases: false,
            report_applied: false,
        };
        let capped = header().with_replication(replication);
        let mut w = TraceWriter::new(Vec::new(), &capped).unwrap();
        w.flush().unwrap();
        let text = String::from_utf8(w.out.into_inner().unwrap()).unwrap();
        assert_eq!(
            text,
            "{\"format\":\"raft-trace\",\"version\":3,\"cluster_id\":\"test\",\"servers\":[1,2,3],\"state_machine\":\"kv\",\"recorded_by\":1,\"max_append_entries\":3,\"max_append_bytes\":4096,\"window\":8,\"check_quorum\":true}\n"
        );
        let r = TraceReader::new("capped.ndjson", text.as_bytes()).unwrap();
        assert_eq!(r.header(), &capped);
        assert_eq!(r.header().replication, replication);

        // A cap of 0 is no cap a server can run with: the header is refused.
        for (field, value) in [("max_append_entries", 3), ("window", 8)] {
            let zero = text.replace(&format!("\"{field}\":{value}"), &format!("\"{field}\":0"));
            let err = TraceReader::new("zero.ndjson", zero.as_bytes()).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("zero.ndjson:1: malformed trace line")
                    && err.to_string().contains("nonzero"),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn the_digest_is_pinned() {
        // The digest must be identical across processes and machines: pin the
        // value of a fixed state, so any change to the encoding is noticed.
        let (mut server, _) = Server::<Kv>::new(NodeId(1), vec![NodeId(2)]);
        assert_eq!(state_digest(&server).to_string(), "428d0ed3b76b1d5a");
        server.step(Input::ElectionTimeout);
        server.step(Input::Message {
            from: NodeId(2),
            message: Message::RequestVoteResponse(crate::RequestVoteResponse {
                term: Term(1),
                vote_granted: true,
            }),
        });
        server.step(Input::ClientRequest {
            client_id: ClientId(1),
            request_no: 1,
            command: put("k"),
            ack: Ack::Applied,
        });
        assert_eq!(state_digest(&server).to_string(), "fddef7913bdff165");
    }

    #[test]
    fn the_digest_sees_every_field_it_covers() {
        let (server, _) = Server::<Kv>::new(NodeId(1), vec![NodeId(2)]);
        let base = state_digest(&server);
        let mut other = server.clone();
        other.persistent.voted_for = Some(NodeId(2));
        assert_ne!(state_digest(&other), base);
        let mut other = server.clone();
        other.volatile.commit_index = LogIndex(1);
        assert_ne!(state_digest(&other), base);
        let mut other = server.clone();
        other.persistent.log.push(Entry {
            term: Term(0),
            payload: Payload::Noop,
        });
        assert_ne!(state_digest(&other), base);
        let mut other = server.clone();
        other.volatile.match_index.insert(NodeId(2), LogIndex(0));
        assert_ne!(state_digest(&other), base);
    }

    #[test]
    fn log_digest_truncation_matches_a_fresh_computation() {
        let e = |t: u64, k: &str| Entry {
            term: Term(t),
            payload: Payload::Command {
                client_id: ClientId(1),
                request_no: t,
                command: put(k),
            },
        };
        let mut d = LogDigest::default();
        d.apply(&LogWrite {
            from: LogIndex(1),
            entries: vec![e(1, "a"), e(1, "b"), e(1, "c")],
        });
        d.apply(&LogWrite {
            from: LogIndex(2),
            entries: vec![e(2, "x")],
        });
        let log = Log::from_entries(vec![e(1, "a"), e(2, "x")]);
        assert_eq!(d, LogDigest::of(&log));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn a_last_line_cut_short_ends_the_trace_and_is_reported() {
        let mut text = serde_json::to_string(&header()).unwrap();
        text.push('\n');
        text.push_str("{\"seq\":1,\"ser");
        let mut r = TraceReader::new("t.ndjson", text.as_bytes()).unwrap();
        assert!(r.next_record::<KvCommand, KvOutput>().is_none());
        assert_eq!(r.torn_tail(), Some((2, 13)));
        // The same bytes followed by a newline are a malformed line.
        text.push('\n');
        let mut r = TraceReader::new("t.ndjson", text.as_bytes()).unwrap();
        assert!(matches!(
            r.next_record::<KvCommand, KvOutput>(),
            Some(Err(TraceError::Parse { line: 2, .. }))
        ));
        assert_eq!(r.torn_tail(), None);
    }

    #[test]
    fn reader_errors_name_the_file_and_line() {
        let err = TraceReader::new("t.ndjson", "".as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "t.ndjson:1: empty trace, no header line");

        let mut text = serde_json::to_string(&header()).unwrap();
        text.push('\n');
        text.push_str("{\"seq\":1}\n");
        let r = TraceReader::new("t.ndjson", text.as_bytes()).unwrap();
        let err = r.steps::<KvCommand, KvOutput>().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("t.ndjson:2: malformed trace line"),
            "{err}"
        );

        let bad = r#"{"format":"raft-trace","version":7,"cluster_id":"x","servers":[],"state_machine":"kv","recorded_by":1}"#;
        let err = TraceReader::new("v.ndjson", bad.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "v.ndjson:1: bad trace header: version 7, this reader reads 1 to 3"
        );

        let step = Step::<KvCommand, KvOutput> {
            seq: 1,
            server: NodeId(1),
            input: TraceInput::Step(Input::Message {
                from: NodeId(2),
                message: Message::RequestVote(RequestVote {
                    term: Term(1),
                    candidate_id: NodeId(2),
                    last_log_index: LogIndex(0),
                    last_log_term: Term(0),
                }),
            }),
            digest: Digest(1),
            term: Term(1),
            role: Role::Follower,
            voted_for: Some(NodeId(2)),
            commit_index: LogIndex(0),
            last_applied: LogIndex(0),
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            out: None,
        };
        let mut line = serde_json::to_string(&step).unwrap();
        line = line.replace("0000000000000001", "xyz");
        let text = format!("{}\n\n{line}\n", serde_json::to_string(&header()).unwrap());
        let err = TraceReader::new("d.ndjson", text.as_bytes())
            .unwrap()
            .steps::<KvCommand, KvOutput>()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("d.ndjson:3: malformed trace line: digest must be 16 hex digits"),
            "{err}"
        );
    }

    /// Three steps of a one-node cluster: Restart, ElectionTimeout (persists
    /// term and vote, and wins), ClientRequest (persists an entry).
    fn three_steps() -> Vec<Step<KvCommand, KvOutput>> {
        let (mut server, _) = Server::<Kv>::new(NodeId(1), vec![]);
        let inputs = [
            Input::ElectionTimeout,
            Input::ClientRequest {
                client_id: ClientId(9),
                request_no: 1,
                command: put("a"),
                ack: Ack::Applied,
            },
        ];
        recorded_steps(&mut server, inputs)
    }

    /// The steps `server` records from its start: `Restart` (seq 1), then
    /// one per input, with the log digest kept incrementally from the
    /// `Persist` outputs, as the recorder keeps it.
    fn recorded_steps(
        server: &mut Server<Kv>,
        inputs: impl IntoIterator<Item = Input<KvCommand>>,
    ) -> Vec<Step<KvCommand, KvOutput>> {
        let mut digest = LogDigest::of(server.log());
        let mut steps = vec![Step::after(1, TraceInput::Restart, server, &digest)];
        for (i, input) in inputs.into_iter().enumerate() {
            for out in server.step(input.clone()) {
                if let crate::Output::Persist(p) = out {
                    if let Some(w) = &p.log {
                        digest.apply(w);
                    }
                }
            }
            steps.push(Step::after(i as u64 + 2, input.into(), server, &digest));
        }
        steps
    }

    #[test]
    fn markers_are_read_as_records_and_skipped_as_steps() {
        let steps = three_steps();
        let mut w = TraceWriter::new(Vec::new(), &header()).unwrap();
        w.write_step(&steps[0]).unwrap();
        w.write_step(&steps[1]).unwrap();
        w.write_synced(2).unwrap();
        w.write_step(&steps[2]).unwrap();
        w.write_synced(3).unwrap();
        w.flush().unwrap();
        let text = String::from_utf8(w.out.into_inner().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[3], r#"{"synced":2}"#);
        assert_eq!(lines[5], r#"{"synced":3}"#);

        let mut r = TraceReader::new("mem", text.as_bytes()).unwrap();
        let mut records = Vec::new();
        let mut ends = Vec::new();
        while let Some(rec) = r.next_record::<KvCommand, KvOutput>() {
            records.push(rec.unwrap());
            ends.push((r.line(), r.offset()));
        }
        assert_eq!(
            records,
            vec![
                Record::Step(steps[0].clone()),
                Record::Step(steps[1].clone()),
                Record::Synced(Synced { synced: 2 }),
                Record::Step(steps[2].clone()),
                Record::Synced(Synced { synced: 3 }),
            ]
        );
        // Each record's line, and the offset just past it.
        let mut at = 0;
        let mut expected = Vec::new();
        for (i, l) in text.lines().enumerate() {
            at += l.len() as u64 + 1;
            if i > 0 {
                expected.push((i as u64 + 1, at));
            }
        }
        assert_eq!(ends, expected);
        assert_eq!(r.offset(), text.len() as u64);

        let r = TraceReader::new("mem", text.as_bytes()).unwrap();
        assert_eq!(r.steps::<KvCommand, KvOutput>().unwrap(), steps);
    }

    #[test]
    fn a_version_1_trace_still_reads() {
        let steps = three_steps();
        let mut h = header();
        h.version = 1;
        let mut text = serde_json::to_string(&h).unwrap() + "\n";
        for s in &steps {
            text.push_str(&serde_json::to_string(s).unwrap());
            text.push('\n');
        }
        let r = TraceReader::new("old.ndjson", text.as_bytes()).unwrap();
        assert_eq!(r.header().version, 1);
        assert_eq!(r.steps::<KvCommand, KvOutput>().unwrap(), steps);

        // A marker came with version 2.
        let lines: Vec<&str> = text.lines().collect();
        let marked = format!("{}\n{}\n{{\"synced\":1}}\n", lines[0], lines[1]);
        let err = TraceReader::new("old.ndjson", marked.as_bytes())
            .unwrap()
            .steps::<KvCommand, KvOutput>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "old.ndjson:3: bad synced marker: a synced marker in a version-1 trace (synced markers came with version 2)"
        );
    }

    #[test]
    fn a_misplaced_or_malformed_marker_is_an_error_naming_the_file_and_line() {
        let steps = three_steps();
        let head = serde_json::to_string(&header()).unwrap();
        let s1 = serde_json::to_string(&steps[0]).unwrap();
        let s2 = serde_json::to_string(&steps[1]).unwrap();
        let cases = [
            (
                format!("{head}\n{{\"synced\":1}}\n"),
                "m.ndjson:2: bad synced marker: a marker for step 1 before any step",
            ),
            (
                format!("{head}\n{s1}\n{s2}\n{{\"synced\":1}}\n"),
                "m.ndjson:4: bad synced marker: a marker for step 1, but the step before it is 2",
            ),
            (
                format!("{head}\n{s1}\n{{\"synced\":1}}\n\n{{\"synced\":1}}\n"),
                "m.ndjson:5: bad synced marker: a second synced marker for step 1",
            ),
            (
                format!("{head}\n{s1}\n{{ \"synced\": \"1\"}}\n"),
                "m.ndjson:3: bad synced marker: invalid type: string \"1\", expected u64 at line 1 column 15",
            ),
            (
                format!("{head}\n{s1}\n{{\"synced\":1,\"seq\":2}}\n"),
                "m.ndjson:3: bad synced marker: unknown field `seq`, expected `synced` at line 1 column 17",
            ),
        ];
        for (text, expected) in cases {
            let err = TraceReader::new("m.ndjson", text.as_bytes())
                .unwrap()
                .steps::<KvCommand, KvOutput>()
                .unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
        // A step whose keys come in another order is still a step.
        let sorted =
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&s1).unwrap())
                .unwrap();
        assert!(sorted.starts_with(r#"{"commit_index":"#), "{sorted}");
        let text = format!("{head}\n{sorted}\n");
        let back = TraceReader::new("m.ndjson", text.as_bytes()).unwrap();
        assert_eq!(
            back.steps::<KvCommand, KvOutput>().unwrap(),
            vec![steps[0].clone()]
        );
    }

    #[test]
    fn a_step_records_its_outputs_and_a_batch_its_release() {
        let (mut server, started) = Server::<Kv>::new(NodeId(1), vec![NodeId(2)]);
        let mut digest = LogDigest::default();
        let mut w = TraceWriter::new(Vec::new(), &header()).unwrap();
        let start = Step::after(1, TraceInput::Restart, &server, &digest);
        w.write_alone(&start.with_out(Emitted::all(&started, &digest)))
            .unwrap();
        let (step, outputs) = Step::take(2, &mut server, Input::ElectionTimeout, &mut digest);
        w.write_alone(&step).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[1].ends_with(r#""out":[{"SetTimer":"Election"}]}"#),
            "{text}"
        );
        let vote_request = outputs
            .iter()
            .find_map(|o| match o {
                crate::Output::Send { message, .. } => Some(message_digest(message, &digest)),
                _ => None,
            })
            .unwrap();
        assert_eq!(lines[3], r#"{"synced":2}"#);
        assert_eq!(
            lines[4],
            format!(r#"{{"released":2,"out":[{{"Send":{{"to":2,"digest":"{vote_request}"}}}}]}}"#)
        );
        assert!(
            lines[2]
                .contains(r#""out":[{"Persist":{"hard_state":{"current_term":1,"voted_for":1}}},"#),
            "{text}"
        );

        let mut r = TraceReader::new("mem", text.as_bytes()).unwrap();
        let records: Vec<Record<KvCommand, KvOutput>> = std::iter::from_fn(|| r.next_record())
            .map(Result::unwrap)
            .collect();
        assert_eq!(records.len(), 4);
        assert_eq!(records[1], Record::Step(step.clone()));
        let Record::Released(released) = &records[3] else {
            panic!("{records:?}")
        };
        assert_eq!(
            released.out,
            Some(vec![Emitted::Send {
                to: NodeId(2),
                digest: vote_request
            }])
        );
        assert!(
            step.out
                .as_ref()
                .unwrap()
                .iter()
                .filter(|e| e.is_released())
                .count()
                == 1
        );
    }

    /// The digest of a vote request is FNV-1a 64 over the tag 0 and its
    /// four fields as 8-byte little-endian integers, as any implementation
    /// computes it; an AppendEntries' covers its entries through the
    /// sender's log digest, so it changes with any entry it carries.
    #[test]
    fn the_message_digest_is_pinned_and_covers_the_entries() {
        let m: Message<KvCommand> = Message::RequestVote(RequestVote {
            term: Term(1),
            candidate_id: NodeId(2),
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
        });
        let mut expected = Fnv64::new();
        expected.write(&[0]);
        for n in [1u64, 2, 0, 0] {
            expected.write(&n.to_le_bytes());
        }
        assert_eq!(
            message_digest(&m, &LogDigest::default()).0,
            expected.finish()
        );
        assert_eq!(
            message_digest(&m, &LogDigest::default()).to_string(),
            "794f9c0da555521c"
        );

        let e = |k: &str| Entry {
            term: Term(1),
            payload: Payload::Command {
                client_id: ClientId(1),
                request_no: 1,
                command: put(k),
            },
        };
        let append = |entries: Vec<Entry<KvCommand>>| {
            Message::AppendEntries(crate::AppendEntries {
                term: Term(1),
                leader_id: NodeId(1),
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries,
                leader_commit: LogIndex(0),
                read_round: 0,
            })
        };
        let (a, b) = (
            LogDigest::of(&Log::from_entries(vec![e("a")])),
            LogDigest::of(&Log::from_entries(vec![e("b")])),
        );
        assert_ne!(
            message_digest(&append(vec![e("a")]), &a),
            message_digest(&append(vec![e("b")]), &b)
        );
        // A sender whose log does not reach the entries: they are hashed.
        let short = LogDigest::default();
        assert_ne!(
            message_digest(&append(vec![e("a")]), &short),
            message_digest(&append(vec![e("b")]), &short)
        );
    }

    #[test]
    fn the_release_rule_drops_only_superseded_append_entries() {
        let (a, b) = (NodeId(2), NodeId(3));
        // (to, is an AppendEntries)
        let sends = [
            (a, true),
            (b, false),
            (a, true),
            (b, true),
            (a, false),
            (b, true),
        ];
        assert_eq!(
            released_sends(&sends, &Replication::default()),
            vec![false, true, true, false, true, true]
        );
        assert_eq!(
            released_sends(&[], &Replication::default()),
            Vec::<bool>::new()
        );
        let windowed = Replication {
            window: std::num::NonZeroUsize::new(2),
            ..Replication::default()
        };
        assert_eq!(
            released_sends(&[(NodeId(2), true), (NodeId(2), true)], &windowed),
            vec![true, true]
        );
    }

    #[test]
    fn released_markers_are_checked_where_they_stand() {
        let steps = three_steps();
        let head = serde_json::to_string(&header()).unwrap();
        let s1 = serde_json::to_string(&steps[0]).unwrap();
        let s2 = serde_json::to_string(&steps[1]).unwrap();
        let ok = format!("{head}\n{s1}\n{s2}\n{{\"released\":2,\"out\":[]}}\n{{\"synced\":2}}\n");
        // Either order of a batch's two markers reads: the replayer judges it.
        let r = TraceReader::new("m.ndjson", ok.as_bytes()).unwrap();
        assert_eq!(r.steps::<KvCommand, KvOutput>().unwrap().len(), 2);
        let cases = [
            (
                format!(
                    "{head}\n{s1}\n{{\"released\":1,\"out\":[]}}\n{{\"released\":1,\"out\":[]}}\n"
                ),
                "m.ndjson:4: bad released marker: a second released marker for step 1",
            ),
            (
                format!("{head}\n{s1}\n{s2}\n{{\"released\":1,\"out\":[]}}\n"),
                "m.ndjson:4: bad released marker: a marker for step 1, but the step before it is 2",
            ),
            (
                format!("{head}\n{s1}\n{{\"released\":1,\"sent\":[]}}\n"),
                "m.ndjson:3: bad released marker: unknown field `sent`, expected `released` or `out` at line 1 column 20",
            ),
        ];
        for (text, expected) in cases {
            let err = TraceReader::new("m.ndjson", text.as_bytes())
                .unwrap()
                .steps::<KvCommand, KvOutput>()
                .unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }
}
