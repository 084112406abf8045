//! Checking a request (and a given placement against a request), reporting every problem at
//! once with its path in the document.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::fasthash::FastMap;

use crate::error::{FieldError, Path, ValidationErrors};
use crate::model::Topology;
use crate::placement::{Placement, Role, SLOT_COUNT};
use crate::request::{Request, Spread};

/// Names become node, host and file names, so they are kept to a portable alphabet.
const MAX_NAME_LEN: usize = 63;
/// More copies than this is a configuration mistake rather than a design.
pub const MAX_REPLICAS: u32 = 15;

/// `path` is built only when there is an error: validation runs on 30,000-host topologies.
fn check_name(errors: &mut Vec<FieldError>, path: impl Fn() -> Path, name: &str) {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        return;
    }
    let path = path();
    if name.is_empty() {
        errors.push(path.error("must not be empty"));
    } else if name.len() > MAX_NAME_LEN {
        errors.push(path.error(format!("must be at most {MAX_NAME_LEN} characters")));
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errors.push(path.error(format!(
            "{name:?} may only contain letters, digits, '-', '_' and '.'"
        )));
    }
}

/// Check everything in a request; `Err` lists every problem found, in document order.
pub fn validate(req: &Request) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    let cluster = Path::root().field("cluster");
    let c = &req.cluster;
    if c.shards == 0 {
        errors.push(cluster.field("shards").error("must be at least 1"));
    } else if c.shards > SLOT_COUNT {
        errors.push(cluster.field("shards").error(format!(
            "must be at most {SLOT_COUNT} (one hash slot per shard at least)"
        )));
    }
    if c.replicas > MAX_REPLICAS {
        errors.push(
            cluster
                .field("replicas")
                .error(format!("must be at most {MAX_REPLICAS}")),
        );
    }
    if c.node_memory_mb == 0 {
        errors.push(
            cluster
                .field("node_memory_mb")
                .error("must be greater than 0"),
        );
    }

    let zones = Path::root().field("zones");
    if req.zones.is_empty() {
        errors.push(zones.error("must list at least one zone"));
    }
    let mut zone_names: FastMap<&str, usize> = FastMap::default();
    let mut host_names: FastMap<&str, (usize, usize)> = FastMap::default();
    for (zi, zone) in req.zones.iter().enumerate() {
        let zp = zones.index(zi);
        check_name(&mut errors, || zp.field("name"), &zone.name);
        if let Some(first) = zone_names.insert(&zone.name, zi) {
            errors.push(zp.field("name").error(format!(
                "duplicate zone name {:?} (also zones[{first}])",
                zone.name
            )));
            zone_names.insert(&zone.name, first);
        }
        if zone.hosts.is_empty() {
            errors.push(zp.field("hosts").error("must list at least one host"));
        }
        for (hi, host) in zone.hosts.iter().enumerate() {
            let hp = || zp.field("hosts").index(hi);
            check_name(&mut errors, || hp().field("name"), &host.name);
            if let Some((fz, fh)) = host_names.insert(&host.name, (zi, hi)) {
                errors.push(hp().field("name").error(format!(
                    "duplicate host name {:?} (also zones[{fz}].hosts[{fh}]); host names are unique across zones",
                    host.name
                )));
                host_names.insert(&host.name, (fz, fh));
            }
            if host.memory_mb == 0 {
                errors.push(hp().field("memory_mb").error("must be greater than 0"));
            }
            if host.max_nodes == 0 {
                errors.push(hp().field("max_nodes").error("must be at least 1"));
            }
            if let Some(rack) = &host.rack {
                check_name(&mut errors, || hp().field("rack"), rack);
            }
        }
    }

    let parts = Path::root().field("partitions");
    let mut part_names: HashMap<&str, usize> = HashMap::new();
    for (pi, part) in req.partitions.iter().enumerate() {
        let pp = parts.index(pi);
        check_name(&mut errors, || pp.field("name"), &part.name);
        if let Some(first) = part_names.insert(&part.name, pi) {
            errors.push(pp.field("name").error(format!(
                "duplicate partition name {:?} (also partitions[{first}])",
                part.name
            )));
            part_names.insert(&part.name, first);
        }
        if part.side.is_empty() {
            errors.push(pp.field("side").error("must name at least one zone"));
        }
        let mut seen = HashSet::new();
        for (si, zone) in part.side.iter().enumerate() {
            let sp = pp.field("side").index(si);
            if !zone_names.contains_key(zone.as_str()) {
                let known: Vec<&str> = req.zones.iter().map(|z| z.name.as_str()).collect();
                errors.push(sp.error(format!(
                    "unknown zone {zone:?}; the zones are {}",
                    known.join(", ")
                )));
            } else if !seen.insert(zone.as_str()) {
                errors.push(sp.error(format!("zone {zone:?} is listed twice")));
            }
        }
        let distinct_zones: HashSet<&str> = req.zones.iter().map(|z| z.name.as_str()).collect();
        if !part.side.is_empty() && !distinct_zones.is_empty() && seen.len() == distinct_zones.len()
        {
            errors.push(pp.field("side").error(
                "names every zone, so the other side of the split would be empty; list only the zones on one side",
            ));
        }
    }

    crate::survive::check(req, &mut errors);
    crate::sentinel::check(req, &mut errors);

    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// Check that a given placement (e.g. one observed live) fits the request's topology: known
/// hosts in their zones, host capacity, one master per shard, copies of a shard never on one
/// host nor in one spread domain, slots valid and owned once, by masters only.
/// Paths are `nodes[i].field` in the placement document.
pub fn validate_placement(req: &Request, placement: &Placement) -> Result<(), ValidationErrors> {
    validate(req)?;
    let topo = Topology::build(req);
    let mut errors = Vec::new();
    let nodes = Path::root().field("nodes");
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut per_host: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut masters: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut shards: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut slot_owner: Vec<Option<usize>> = vec![None; SLOT_COUNT as usize];
    for (i, node) in placement.nodes.iter().enumerate() {
        let np = nodes.index(i);
        if node.name.is_empty() {
            errors.push(np.field("name").error("must not be empty"));
        }
        if let Some(first) = names.insert(&node.name, i) {
            errors.push(np.field("name").error(format!(
                "duplicate node name {:?} (also nodes[{first}])",
                node.name
            )));
        }
        shards.entry(node.shard).or_default().push(i);
        if node.role == Role::Master {
            masters.entry(node.shard).or_default().push(i);
        }
        match topo.host_index(&node.host) {
            None => errors.push(
                np.field("host")
                    .error(format!("unknown host {:?}: not in the topology", node.host)),
            ),
            Some(h) => {
                let zone = &topo.zones[topo.hosts[h].zone].name;
                if zone != &node.zone {
                    errors.push(np.field("zone").error(format!(
                        "host {:?} is in zone {zone:?}, not {:?}",
                        node.host, node.zone
                    )));
                }
                per_host.entry(h).or_default().push(i);
            }
        }
        if node.role == Role::Replica && !node.slots.is_empty() {
            errors.push(
                np.field("slots")
                    .error("a replica serves no slots; slots belong to its master"),
            );
        }
        for (si, range) in node.slots.iter().enumerate() {
            let sp = np.field("slots").index(si);
            if range.start > range.end || u32::from(range.end) >= SLOT_COUNT {
                errors.push(sp.error(format!(
                    "invalid slot range {range}: need start <= end < {SLOT_COUNT}"
                )));
                continue;
            }
            for slot in range.start..=range.end {
                let owner = &mut slot_owner[usize::from(slot)];
                match owner {
                    Some(other) if *other != i => {
                        errors.push(sp.error(format!(
                            "slot {slot} is also served by {:?}",
                            placement.nodes[*other].name
                        )));
                        break;
                    }
                    _ => *owner = Some(i),
                }
            }
        }
    }
    let mut hosts: Vec<_> = per_host.into_iter().collect();
    hosts.sort();
    for (h, on_host) in hosts {
        let host = &topo.hosts[h];
        if on_host.len() as u64 > u64::from(host.capacity) {
            let last = *on_host.last().unwrap_or(&0);
            errors.push(nodes.index(last).field("host").error(format!(
                "host {:?} holds {} nodes but fits {} (max_nodes={}, memory {} MB / node_memory_mb {})",
                host.name,
                on_host.len(),
                host.capacity,
                host.max_nodes,
                host.memory_mb,
                req.cluster.node_memory_mb
            )));
        }
    }
    for (shard, members) in &shards {
        match masters.get(shard).map(Vec::len).unwrap_or(0) {
            1 => {}
            0 => errors.push(nodes.error(format!("shard {shard} has no master"))),
            n => errors.push(nodes.error(format!("shard {shard} has {n} masters; exactly one"))),
        }
        let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
        for &i in members {
            let Some(h) = topo.host_index(&placement.nodes[i].host) else {
                continue;
            };
            // Copies never share a host, whatever the spread; and never a domain of the spread level.
            for (level, domain) in [
                (Spread::Host, topo.domain_of(h, Spread::Host)),
                (req.cluster.spread, topo.domain_of(h, req.cluster.spread)),
            ] {
                let key = (level as usize, domain);
                if let Some(&other) = seen.get(&key) {
                    if other != i {
                        errors.push(nodes.index(i).field("host").error(format!(
                            "shard {shard} already has node {:?} in the same {}; spread={} forbids two copies there",
                            placement.nodes[other].name,
                            level.as_str(),
                            req.cluster.spread.as_str()
                        )));
                        break;
                    }
                } else {
                    seen.insert(key, i);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}
