//! Two-way conformance: seeded random walks of the replay model (its one
//! step function, `ReplayModel::step`, over Kv servers) drive raft-node's event-loop core
//! ([`raft_node::node::Node`], the code the runtime and the deterministic
//! harness run) with the same inputs; after every step the node's server
//! equals the model's, and every message the node sent is in flight in the
//! model. The model exercises the implementation as the traces exercise the
//! model.

#![allow(clippy::unwrap_used)]

use raft_model::replay::{Cluster, Envelope, ReplayAction, ReplayModel, ReplayMsg};
use raft_node::config::Timing;
use raft_node::node::{ConnId, Event, Io, Node, NodeOptions, SplitMix64, Time};
use raft_node::storage::MemStorage;
use raft_node::wire::Response;
use raft_spec::{ClientId, KvCommand, Message, NodeId, Server, Timer};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
struct Outbox {
    sent: Vec<(NodeId, Message<KvCommand>)>,
}

impl Io for Outbox {
    fn send(&mut self, to: NodeId, message: Message<KvCommand>) {
        self.sent.push((to, message));
    }
    fn reply(&mut self, _conn: ConnId, _response: Response) {}
}

struct Impl {
    nodes: BTreeMap<NodeId, Node<MemStorage>>,
    /// Each node's own clock: a node's timer fires when its clock reaches
    /// the deadline, and no other node's time moves.
    clocks: BTreeMap<NodeId, Time>,
    ids: Vec<NodeId>,
}

impl Impl {
    fn options(&self, id: NodeId) -> NodeOptions {
        NodeOptions {
            id,
            peers: self
                .ids
                .iter()
                .map(|n| (*n, format!("sim:{}", n.0)))
                .collect(),
            cluster_id: "conformance".into(),
            timing: Timing::default(),
            seed: id.0,
            trace: None,
            replication: raft_spec::Replication::default(),
            fifo_links: false,
        }
    }

    fn start(ids: &[NodeId]) -> (Impl, Outbox) {
        let mut i = Impl {
            nodes: BTreeMap::new(),
            clocks: BTreeMap::new(),
            ids: ids.to_vec(),
        };
        let mut out = Outbox::default();
        for &id in ids {
            let node = Node::start(
                i.options(id),
                Default::default(),
                MemStorage::default(),
                Duration::ZERO,
                &mut out,
            )
            .unwrap();
            i.nodes.insert(id, node);
            i.clocks.insert(id, Duration::ZERO);
        }
        (i, out)
    }

    fn handle(&mut self, id: NodeId, events: Vec<Event>, now: Time) -> Outbox {
        let mut out = Outbox::default();
        self.nodes
            .get_mut(&id)
            .unwrap()
            .handle(now, events, &mut out)
            .unwrap();
        out
    }

    fn fire_timer(&mut self, id: NodeId) -> Outbox {
        let deadline = self.nodes[&id].next_deadline().expect("a timer is set");
        let now = self.clocks[&id].max(deadline);
        self.clocks.insert(id, now);
        self.handle(id, Vec::new(), now)
    }

    fn restart(&mut self, id: NodeId) -> Outbox {
        let node = self.nodes.remove(&id).unwrap();
        let mut storage = node.into_storage();
        storage.crash();
        let mut out = Outbox::default();
        let node = Node::start(
            self.options(id),
            storage.durable().clone(),
            storage,
            self.clocks[&id],
            &mut out,
        )
        .unwrap();
        self.nodes.insert(id, node);
        out
    }
}

fn server(state: &Cluster, id: NodeId) -> &Server<raft_spec::Kv> {
    state.server(id).unwrap()
}

/// The action a random walk takes, in terms both sides understand.
enum Choice {
    Deliver(NodeId, NodeId, Message<KvCommand>),
    Timeout(NodeId, Timer),
    Request(NodeId, u64),
    Restart(NodeId),
}

fn walk(seed: u64, steps: usize) -> (usize, u64) {
    let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let model = ReplayModel::new(&ids, raft_spec::Replication::default());
    let mut state = model.init().clone();
    let (mut imp, _) = Impl::start(&ids);
    let mut rng = SplitMix64::new(seed);
    let mut requests = 0;
    let mut taken = 0;
    let mut committed = 0;
    for _ in 0..steps {
        let mut deliveries = Vec::new();
        let mut timeouts = Vec::new();
        for a in model.actions_of(&state) {
            match a {
                ReplayAction::Deliver(Envelope {
                    dst,
                    msg: ReplayMsg::Raft { from, message },
                }) => deliveries.push(Choice::Deliver(from, dst, (*message).clone())),
                ReplayAction::Timeout(id, t) => timeouts.push(Choice::Timeout(id, t)),
                _ => {}
            }
        }
        // Weigh the kinds of action so that walks elect leaders and commit:
        // timeouts 10 %, client requests 10 % (to the leader, if any),
        // restarts 1 %, deliveries the rest.
        let leader = ids
            .iter()
            .copied()
            .find(|&n| server(&state, n).role() == raft_spec::Role::Leader);
        let roll = rng.next_u64() % 100;
        let pick_from = |v: &mut Vec<Choice>, rng: &mut SplitMix64| -> Option<Choice> {
            (!v.is_empty()).then(|| v.swap_remove((rng.next_u64() % v.len() as u64) as usize))
        };
        let choice = if roll < 10 {
            pick_from(&mut timeouts, &mut rng)
        } else if roll < 20 {
            let to = leader.unwrap_or(ids[(rng.next_u64() % 3) as usize]);
            Some(Choice::Request(to, requests + 1))
        } else if roll < 21 {
            Some(Choice::Restart(ids[(rng.next_u64() % 3) as usize]))
        } else {
            pick_from(&mut deliveries, &mut rng)
        };
        let Some(choice) = choice
            .or_else(|| pick_from(&mut deliveries, &mut rng))
            .or_else(|| pick_from(&mut timeouts, &mut rng))
        else {
            break;
        };
        let (id, model_actions, out) = match choice {
            Choice::Deliver(from, to, message) => {
                let action = ReplayAction::Deliver(Envelope {
                    dst: to,
                    msg: ReplayMsg::raft(from, message.clone()),
                });
                let now = imp.clocks[&to];
                let out = imp.handle(to, vec![Event::Peer { from, message }], now);
                (to, vec![action], out)
            }
            Choice::Timeout(id, timer) => {
                let out = imp.fire_timer(id);
                (id, vec![ReplayAction::Timeout(id, timer)], out)
            }
            Choice::Request(id, no) => {
                requests = no;
                let command = KvCommand::Put {
                    key: format!("k{}", no % 3),
                    value: format!("v{no}").into(),
                };
                let now = imp.clocks[&id];
                let event = Event::Request {
                    conn: no,
                    client_id: ClientId(7),
                    request_no: no,
                    command: command.clone(),
                    ack: raft_spec::Ack::Applied,
                    read: None,
                };
                let out = imp.handle(id, vec![event], now);
                let action = ReplayAction::Deliver(Envelope {
                    dst: id,
                    msg: ReplayMsg::Request {
                        client_id: ClientId(7),
                        request_no: no,
                        command,
                        ack: raft_spec::Ack::Applied,
                        read: None,
                    },
                });
                (id, vec![action], out)
            }
            Choice::Restart(id) => {
                let out = imp.restart(id);
                (
                    id,
                    vec![ReplayAction::Crash(id), ReplayAction::Recover(id)],
                    out,
                )
            }
        };
        for action in &model_actions {
            assert!(
                model.step(&mut state, action, None).is_some(),
                "seed {seed}: {action:?} is not enabled in the model"
            );
        }
        taken += 1;
        committed = committed.max(server(&state, id).volatile.commit_index.0);
        assert_eq!(
            imp.nodes[&id].server(),
            server(&state, id),
            "seed {seed}, step {taken}: node {} differs from the model",
            id.0
        );
        for (to, m) in &out.sent {
            assert!(
                state.in_flight(id, *to, m),
                "seed {seed}, step {taken}: node {} sent {m:?} to {}, which the model did not",
                id.0,
                to.0
            );
        }
    }
    (taken, committed)
}

#[test]
fn random_model_paths_give_the_same_server_states_in_raft_node() {
    let (mut total, mut committing) = (0, 0);
    for seed in 1..=20 {
        let (steps, committed) = walk(seed, 300);
        total += steps;
        committing += usize::from(committed > 0);
    }
    assert!(total >= 20 * 250, "{total} steps");
    // The walks reach elections and commits, not just timeouts.
    assert!(committing >= 5, "{committing} walks committed an entry");
}
