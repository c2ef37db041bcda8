//! The fault schedule, drawn from the seed as the run goes: node crashes
//! and restarts, partitions (both ways and one way), slow links, a clock
//! jumped on one node (and back when the fault ends), a worker cut off
//! (frozen to the cluster) or killed mid-task, a client cut off from a node mid-request (its reply
//! lost, so it retries). At most a minority of the nodes under a fault at
//! a time (one of three, two of five), so a majority stays up; `heal`
//! undoes everything.

use std::time::Duration;

use crate::cluster::{self, SimWall, Stores};
use crate::history::Shared;
use crate::rng::SimRng;

/// A moderate clock jump: within the clock bound (500 ms), so the node may
/// lead; too small to trigger the known gap (`history::KNOWN_JUMP_MS`).
pub const MODERATE_SKEW_MS: (u64, u64) = (300, 480);
/// A far clock jump.
pub const FAR_SKEW_MS: (u64, u64) = (1_000, 3_000);

/// A fault in force and when it ends (ms of simulated time).
#[derive(Debug, Clone)]
enum Fault {
    Crashed(u64),
    Partitioned(u64),
    OneWay(u64, u64),
    Slow(u64),
    Skewed(u64),
    WorkerCut(String),
    WorkerDead(String),
    ClientCut(String, u64),
}

impl Fault {
    /// The node a node fault is on (a one-way partition: the sender's
    /// side; its peer may take another fault).
    fn node(&self) -> Option<u64> {
        match self {
            Fault::Crashed(n) | Fault::Partitioned(n) | Fault::OneWay(n, _) | Fault::Slow(n) | Fault::Skewed(n) => {
                Some(*n)
            }
            _ => None,
        }
    }
}

pub struct Faults {
    rng: SimRng,
    nodes: u64,
    workers: Vec<String>,
    clients: Vec<String>,
    walls: Vec<SimWall>,
    /// Node faults in force, each on its own node; at most
    /// [`Faults::max_node_faults`].
    node_faults: Vec<(Fault, u64)>,
    worker_fault: Option<(Fault, u64)>,
    client_fault: Option<(Fault, u64)>,
    /// How many faults were injected, by kind (for the report).
    pub injected: u64,
}

fn node_hosts(nodes: u64, except: u64) -> Vec<String> {
    (1..=nodes).filter(|n| *n != except).map(cluster::host).collect()
}

fn all_nodes(nodes: u64) -> Vec<String> {
    (1..=nodes).map(cluster::host).collect()
}

impl Faults {
    pub fn new(rng: SimRng, nodes: u64, workers: Vec<String>, clients: Vec<String>, walls: Vec<SimWall>) -> Faults {
        Faults {
            rng,
            nodes,
            workers,
            clients,
            walls,
            node_faults: Vec::new(),
            worker_fault: None,
            client_fault: None,
            injected: 0,
        }
    }

    /// Called every 100 ms of simulated time during the chaos phase.
    pub fn tick(&mut self, sim: &mut turmoil::Sim<'_>, now: u64, stores: &Stores, history: &Shared) {
        self.expire(sim, now, false, history);
        if self.node_faults.len() < self.max_node_faults() && self.rng.chance(0.05) {
            // A node not under a fault already.
            let free: Vec<u64> =
                (1..=self.nodes).filter(|n| !self.node_faults.iter().any(|(f, _)| f.node() == Some(*n))).collect();
            let node = free[self.rng.range(0, free.len() as u64) as usize];
            let until = now + self.rng.range(300, 4_000);
            let fault = match self.rng.range(0, 5) {
                0 => {
                    stores.take(node as usize - 1);
                    sim.crash(cluster::host(node));
                    Fault::Crashed(node)
                }
                1 => {
                    for other in node_hosts(self.nodes, node) {
                        sim.partition(cluster::host(node), other);
                    }
                    Fault::Partitioned(node)
                }
                2 => {
                    let other = (node % self.nodes) + 1;
                    sim.partition_oneway(cluster::host(node), cluster::host(other));
                    Fault::OneWay(node, other)
                }
                3 => {
                    let latency = Duration::from_millis(self.rng.range(50, 600));
                    for other in node_hosts(self.nodes, node) {
                        sim.set_link_max_message_latency(cluster::host(node), other, latency);
                    }
                    Fault::Slow(node)
                }
                _ => {
                    // One node's clock jumps, then stays off until the
                    // fault ends (when it jumps back): moderately (past
                    // the clock bound, short of a step of replicated
                    // time) or far.
                    let size = if self.rng.chance(0.6) {
                        self.rng.range(MODERATE_SKEW_MS.0, MODERATE_SKEW_MS.1)
                    } else {
                        self.rng.range(FAR_SKEW_MS.0, FAR_SKEW_MS.1)
                    } as i64;
                    let skew = if self.rng.chance(0.5) { size } else { -size };
                    Self::set_skew(&self.walls, node, skew, now, history);
                    Fault::Skewed(node)
                }
            };
            self.trace(history, now, &format!("{fault:?} until {until}"));
            self.injected += 1;
            self.node_faults.push((fault, until));
        }
        if self.worker_fault.is_none() && self.rng.chance(0.03) && !self.workers.is_empty() {
            let w = self.workers[self.rng.range(0, self.workers.len() as u64) as usize].clone();
            let until = now + self.rng.range(500, 6_000);
            let fault = if self.rng.chance(0.5) {
                for n in all_nodes(self.nodes) {
                    sim.hold(w.as_str(), n);
                }
                Fault::WorkerCut(w)
            } else {
                sim.crash(w.as_str());
                Fault::WorkerDead(w)
            };
            self.trace(history, now, &format!("{fault:?} until {until}"));
            self.injected += 1;
            self.worker_fault = Some((fault, until));
        }
        if self.client_fault.is_none() && self.rng.chance(0.03) && !self.clients.is_empty() {
            let c = self.clients[self.rng.range(0, self.clients.len() as u64) as usize].clone();
            let node = self.rng.range(1, self.nodes + 1);
            let until = now + self.rng.range(200, 3_000);
            sim.partition(c.as_str(), cluster::host(node));
            let fault = Fault::ClientCut(c, node);
            self.trace(history, now, &format!("{fault:?} until {until}"));
            self.injected += 1;
            self.client_fault = Some((fault, until));
        }
    }

    /// Set node `node`'s clock skew, recording a forward jump (the
    /// known gap of replicated time, see `history::KNOWN`).
    fn set_skew(walls: &[SimWall], node: u64, skew: i64, now: u64, history: &Shared) {
        let wall = &walls[node as usize - 1];
        let before = wall.skew_ms.swap(skew, std::sync::atomic::Ordering::SeqCst);
        let mut h = history.lock();
        h.trace(&format!("{now} fault clock node{node} {before} -> {skew} ms"));
        h.clock_jumped(skew - before);
    }

    /// Crash the workers whose requested moment has come (see
    /// `History::crash_requests`), if no worker fault is in force.
    pub fn crash_requested(&mut self, sim: &mut turmoil::Sim<'_>, now: u64, history: &Shared) {
        let due = {
            let mut h = history.lock();
            let Some(i) = h.crash_requests.iter().position(|(_, at)| *at <= now) else { return };
            h.crash_requests.remove(i).0
        };
        if self.worker_fault.is_some() {
            return;
        }
        let until = now + self.rng.range(100, 1_000);
        sim.crash(due.as_str());
        let fault = Fault::WorkerDead(due);
        self.trace(history, now, &format!("{fault:?} until {until} (after a success)"));
        self.injected += 1;
        self.worker_fault = Some((fault, until));
    }

    fn trace(&self, history: &Shared, now: u64, what: &str) {
        history.lock().trace(&format!("{now} fault {what}"));
    }

    /// End the faults whose time is up, starting none.
    pub fn expire_due(&mut self, sim: &mut turmoil::Sim<'_>, now: u64, history: &Shared) {
        self.expire(sim, now, false, history);
    }

    /// How many nodes may be under a fault at once: a minority.
    fn max_node_faults(&self) -> usize {
        ((self.nodes - 1) / 2) as usize
    }

    /// End the faults whose time is up (all of them with `all`).
    fn expire(&mut self, sim: &mut turmoil::Sim<'_>, now: u64, all: bool, history: &Shared) {
        let mut due = Vec::new();
        self.node_faults.retain(|(fault, until)| {
            let ends = all || now >= *until;
            if ends {
                due.push(fault.clone());
            }
            !ends
        });
        for slot in [&mut self.worker_fault, &mut self.client_fault] {
            if let Some((fault, until)) = slot.clone() {
                if all || now >= until {
                    *slot = None;
                    due.push(fault);
                }
            }
        }
        for fault in due {
            history.lock().trace(&format!("{now} heal {fault:?}"));
            match fault {
                Fault::Crashed(node) => sim.bounce(cluster::host(node)),
                Fault::Partitioned(node) => {
                    for other in node_hosts(self.nodes, node) {
                        sim.repair(cluster::host(node), other);
                    }
                }
                Fault::OneWay(a, b) => sim.repair_oneway(cluster::host(a), cluster::host(b)),
                Fault::Skewed(node) => Self::set_skew(&self.walls, node, 0, now, history),
                Fault::Slow(node) => {
                    for other in node_hosts(self.nodes, node) {
                        sim.set_link_max_message_latency(cluster::host(node), other, Duration::from_millis(5));
                    }
                }
                Fault::WorkerCut(w) => {
                    for n in all_nodes(self.nodes) {
                        sim.release(w.as_str(), n);
                    }
                }
                Fault::WorkerDead(w) => sim.bounce(w.as_str()),
                Fault::ClientCut(c, node) => sim.repair(c.as_str(), cluster::host(node)),
            }
        }
    }

    /// Undo every fault: the cluster must then finish everything.
    pub fn heal(&mut self, sim: &mut turmoil::Sim<'_>, now: u64, history: &Shared) {
        self.expire(sim, now, true, history);
    }
}
