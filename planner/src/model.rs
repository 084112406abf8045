//! The failure-domain model: a petgraph tree root -> zones -> racks -> hosts, plus one node per
//! declared partition side with edges to the zones on that side. The solver and the report work
//! on flat indices derived from it (fast), the dot renderer on the graph itself.

use crate::fasthash::FastMap;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, EdgeRef};
use petgraph::Direction;

use crate::request::{Request, Spread, Survive};

/// A vertex of the failure-domain graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    Root,
    Zone(usize),
    Rack(usize),
    Host(usize),
    /// The declared side of partition `k` (the other side is every zone not linked).
    PartitionSide(usize),
}

#[derive(Debug, Clone)]
pub struct ZoneInfo {
    pub name: String,
    pub hosts: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct RackInfo {
    /// `None` for a host without a rack: such a host is a rack of its own, since nothing says
    /// it shares power or a switch with any other host.
    pub name: Option<String>,
    pub zone: usize,
}

#[derive(Debug, Clone)]
pub struct HostInfo {
    pub name: String,
    pub zone: usize,
    pub rack: usize,
    /// Nodes this host can run: min(max_nodes, memory_mb / node_memory_mb).
    pub capacity: u32,
    pub max_nodes: u32,
    pub memory_mb: u64,
}

#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub name: String,
    /// `in_side[z]`: zone z is on the declared side.
    pub in_side: Vec<bool>,
}

impl PartitionInfo {
    /// "a+b" for the declared side (`declared`) or the other side.
    pub fn side_label(&self, zones: &[ZoneInfo], declared: bool) -> String {
        let names: Vec<&str> = zones
            .iter()
            .enumerate()
            .filter(|(z, _)| self.in_side[*z] == declared)
            .map(|(_, zone)| zone.name.as_str())
            .collect();
        names.join("+")
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    pub graph: DiGraph<Domain, ()>,
    pub root: NodeIndex,
    pub zones: Vec<ZoneInfo>,
    pub racks: Vec<RackInfo>,
    pub hosts: Vec<HostInfo>,
    pub partitions: Vec<PartitionInfo>,
    /// The survival goal the report checks (unset: none).
    pub survive: Survive,
    zone_nodes: Vec<NodeIndex>,
    rack_nodes: Vec<NodeIndex>,
    host_by_name: FastMap<String, usize>,
    zone_by_name: FastMap<String, usize>,
}

impl Topology {
    /// Build the model. Assumes a validated request (unknown partition zones are skipped).
    pub fn build(req: &Request) -> Topology {
        let mut graph = DiGraph::new();
        let root = graph.add_node(Domain::Root);
        let (mut zones, mut racks, mut hosts) = (Vec::new(), Vec::new(), Vec::new());
        let (mut zone_nodes, mut rack_nodes) = (Vec::new(), Vec::new());
        let mut host_by_name = FastMap::default();
        let mut zone_by_name = FastMap::default();
        for zone in &req.zones {
            let z = zones.len();
            let zn = graph.add_node(Domain::Zone(z));
            graph.add_edge(root, zn, ());
            zone_nodes.push(zn);
            zone_by_name.entry(zone.name.clone()).or_insert(z);
            let mut rack_by_name: FastMap<&str, usize> = FastMap::default();
            let mut zone_hosts = Vec::new();
            for host in &zone.hosts {
                let rack = match &host.rack {
                    Some(name) => *rack_by_name.entry(name.as_str()).or_insert_with(|| {
                        racks.push(RackInfo {
                            name: Some(name.clone()),
                            zone: z,
                        });
                        let rn = graph.add_node(Domain::Rack(racks.len() - 1));
                        graph.add_edge(zn, rn, ());
                        rack_nodes.push(rn);
                        racks.len() - 1
                    }),
                    None => {
                        racks.push(RackInfo {
                            name: None,
                            zone: z,
                        });
                        let rn = graph.add_node(Domain::Rack(racks.len() - 1));
                        graph.add_edge(zn, rn, ());
                        rack_nodes.push(rn);
                        racks.len() - 1
                    }
                };
                let h = hosts.len();
                // node_memory_mb = 0 is a validation error; the model still must not divide by it.
                let capacity = host
                    .memory_mb
                    .checked_div(req.cluster.node_memory_mb)
                    .map_or(0, |by_memory| {
                        by_memory.min(u64::from(host.max_nodes)) as u32
                    });
                hosts.push(HostInfo {
                    name: host.name.clone(),
                    zone: z,
                    rack,
                    capacity,
                    max_nodes: host.max_nodes,
                    memory_mb: host.memory_mb,
                });
                host_by_name.entry(host.name.clone()).or_insert(h);
                let hn = graph.add_node(Domain::Host(h));
                graph.add_edge(rack_nodes[rack], hn, ());
                zone_hosts.push(h);
            }
            zones.push(ZoneInfo {
                name: zone.name.clone(),
                hosts: zone_hosts,
            });
        }
        let mut partitions = Vec::new();
        for (k, part) in req.partitions.iter().enumerate() {
            let pn = graph.add_node(Domain::PartitionSide(k));
            let mut in_side = vec![false; zones.len()];
            for name in &part.side {
                if let Some(&z) = zone_by_name.get(name) {
                    in_side[z] = true;
                    graph.add_edge(pn, zone_nodes[z], ());
                }
            }
            partitions.push(PartitionInfo {
                name: part.name.clone(),
                in_side,
            });
        }
        Topology {
            graph,
            root,
            zones,
            racks,
            hosts,
            partitions,
            survive: req.cluster.survive,
            zone_nodes,
            rack_nodes,
            host_by_name,
            zone_by_name,
        }
    }

    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.host_by_name.get(name).copied()
    }

    pub fn zone_index(&self, name: &str) -> Option<usize> {
        self.zone_by_name.get(name).copied()
    }

    /// The index of host `h`'s domain at `level` (zone, rack or host index).
    pub fn domain_of(&self, h: usize, level: Spread) -> usize {
        match level {
            Spread::Host => h,
            Spread::Rack => self.hosts[h].rack,
            Spread::Zone => self.hosts[h].zone,
        }
    }

    /// The failure domains at `level`, each with its zone and its hosts, in document order.
    /// Walks the graph: a domain is a vertex of that level, its hosts the leaves below it.
    pub fn domains(&self, level: Spread) -> Vec<(usize, Vec<usize>)> {
        let vertices: Vec<NodeIndex> = match level {
            Spread::Zone => self.zone_nodes.clone(),
            Spread::Rack => self.rack_nodes.clone(),
            Spread::Host => self
                .graph
                .node_indices()
                .filter(|&n| matches!(self.graph[n], Domain::Host(_)))
                .collect(),
        };
        vertices
            .into_iter()
            .map(|v| {
                let hosts = self.hosts_below(v);
                let zone = hosts.first().map(|&h| self.hosts[h].zone).unwrap_or(0);
                (zone, hosts)
            })
            .collect()
    }

    /// Hosts reachable from `v` along tree edges (partition edges point into zones, so a walk
    /// from a zone, rack or host never leaves its subtree).
    pub fn hosts_below(&self, v: NodeIndex) -> Vec<usize> {
        let mut dfs = Dfs::new(&self.graph, v);
        let mut out = Vec::new();
        while let Some(n) = dfs.next(&self.graph) {
            if let Domain::Host(h) = self.graph[n] {
                out.push(h);
            }
        }
        out.sort_unstable();
        out
    }

    /// Zones on the declared side of partition `k`, read from the graph.
    pub fn partition_zones(&self, k: usize) -> Vec<usize> {
        let Some(pn) = self
            .graph
            .node_indices()
            .find(|&n| self.graph[n] == Domain::PartitionSide(k))
        else {
            return Vec::new();
        };
        let mut zones: Vec<usize> = self
            .graph
            .edges_directed(pn, Direction::Outgoing)
            .filter_map(|e| match self.graph[e.target()] {
                Domain::Zone(z) => Some(z),
                _ => None,
            })
            .collect();
        zones.sort_unstable();
        zones
    }

    /// Total node capacity of every host.
    pub fn total_capacity(&self) -> u64 {
        self.hosts.iter().map(|h| u64::from(h.capacity)).sum()
    }
}
