//! `reader_endpoints` and `prometheus_targets`: what the `nodes` value says, grouped for
//! clients that read from nearby replicas and for Prometheus. Both follow `nodes`: unknown
//! while it is (or while an address is), and read again with it: reader endpoints track
//! failovers; the targets' `role` label is the planned role, which does not change with them.

use std::collections::BTreeMap;

use redisha_cluster::local::DEFAULT_EXPORTER_PORT_OFFSET;

use crate::tfplugin::framework::Attr;

use super::model::{ClusterModel, NodeValue};

/// `model` with `reader_endpoints` and `prometheus_targets` made from its `nodes`.
pub fn with_derived(model: ClusterModel) -> ClusterModel {
    let offset = exporter_offset(&model);
    let name = model.name.value().cloned().unwrap_or_default();
    let (readers, targets) = match model.nodes.value() {
        Some(nodes) => (
            reader_endpoints(nodes),
            match offset {
                Some(offset) => prometheus_targets(&name, nodes, offset),
                None => Attr::Null,
            },
        ),
        None if model.nodes.is_unknown() => {
            (Attr::Unknown, offset.map_or(Attr::Null, |_| Attr::Unknown))
        }
        None => (Attr::Null, Attr::Null),
    };
    let endpoint = endpoint_address(&model);
    ClusterModel {
        reader_endpoints: readers,
        prometheus_targets: targets,
        configuration_endpoint_address: endpoint,
        ..model
    }
}

/// `name:6379` of the `configuration_endpoint` block (every instance runs its first node on
/// 6379), as written, without a final dot.
fn endpoint_address(model: &ClusterModel) -> Attr<String> {
    match &model.configuration_endpoint {
        Attr::Known(block) => match &block.name {
            Attr::Known(name) => Attr::Known(format!(
                "{}:{}",
                name.trim().trim_end_matches('.').to_ascii_lowercase(),
                redisha_aws::settings::REDIS_BASE_PORT
            )),
            Attr::Unknown => Attr::Unknown,
            Attr::Null => Attr::Null,
        },
        Attr::Unknown => Attr::Unknown,
        Attr::Null => Attr::Null,
    }
}

/// How far above its node an exporter listens: aws instances always run one at +20000; the
/// local driver only with `metrics { }`.
fn exporter_offset(model: &ClusterModel) -> Option<u16> {
    if model.aws.value().is_some() {
        return Some(DEFAULT_EXPORTER_PORT_OFFSET);
    }
    let metrics = model.metrics.value()?;
    Some(
        metrics
            .port_offset
            .value()
            .and_then(|o| u16::try_from(*o).ok())
            .unwrap_or(DEFAULT_EXPORTER_PORT_OFFSET),
    )
}

/// Per zone, the addresses of the replicas that are up there.
fn reader_endpoints(nodes: &[NodeValue]) -> Attr<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in nodes {
        let (Some(zone), Some(role), Some(status)) =
            (n.zone.value(), n.role.value(), n.status.value())
        else {
            continue;
        };
        let list = out.entry(zone.clone()).or_default();
        if role != "replica" || status != "up" {
            continue;
        }
        match &n.address {
            Attr::Known(a) => list.push(a.clone()),
            Attr::Unknown => return Attr::Unknown,
            Attr::Null => {}
        }
    }
    Attr::Known(out)
}

/// The file_sd document: one target group per node.
fn prometheus_targets(cluster: &str, nodes: &[NodeValue], offset: u16) -> Attr<String> {
    let mut groups = Vec::new();
    for n in nodes {
        let address = match &n.address {
            Attr::Known(a) => a,
            Attr::Unknown => return Attr::Unknown,
            Attr::Null => continue,
        };
        let Some((ip, port)) = redisha_cluster::conn::split_address(address) else {
            continue;
        };
        let Some(port) = port.checked_add(offset) else {
            continue;
        };
        let text = |a: &Attr<String>| a.value().cloned().unwrap_or_default();
        groups.push(serde_json::json!({
            "targets": [format!("{ip}:{port}")],
            "labels": {
                "cluster": cluster,
                "node": text(&n.name),
                "shard": n.shard.value().map(u32::to_string).unwrap_or_default(),
                // The plan's role: stable across failovers (the file need not change), and
                // what alerts compare the exporter's live role with.
                "role": text(&n.planned_role),
                "zone": text(&n.zone),
                "host": text(&n.host),
            },
        }));
    }
    Attr::Known(serde_json::Value::Array(groups).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, address: &str, role: &str, status: &str, zone: &str) -> NodeValue {
        NodeValue {
            id: Attr::Null,
            name: name.to_string().into(),
            address: address.to_string().into(),
            role: role.to_string().into(),
            planned_role: role.to_string().into(),
            status: status.to_string().into(),
            shard: 0.into(),
            zone: zone.to_string().into(),
            host: format!("{zone}-1").into(),
            slots: Attr::Known(Vec::new()),
        }
    }

    #[test]
    fn readers_are_the_replicas_up_in_each_zone() {
        let nodes = [
            node("m", "127.0.1.1:7000", "master", "up", "a"),
            node("r1", "127.0.2.1:7000", "replica", "up", "b"),
            node("r2", "127.0.3.1:7000", "replica", "down", "c"),
        ];
        let readers = reader_endpoints(&nodes)
            .value()
            .cloned()
            .unwrap_or_default();
        assert_eq!(readers["a"], Vec::<String>::new());
        assert_eq!(readers["b"], vec!["127.0.2.1:7000".to_string()]);
        assert!(readers["c"].is_empty(), "a down replica serves no reads");
    }

    #[test]
    fn targets_are_file_sd_groups_labelled_by_node() {
        let nodes = [node("m", "127.0.1.1:7000", "master", "up", "a")];
        let text = prometheus_targets("c1", &nodes, 20000)
            .value()
            .cloned()
            .unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc[0]["targets"][0], "127.0.1.1:27000");
        assert_eq!(doc[0]["labels"]["cluster"], "c1");
        assert_eq!(doc[0]["labels"]["node"], "m");
        assert_eq!(doc[0]["labels"]["shard"], "0");
        assert_eq!(doc[0]["labels"]["role"], "master");
        assert_eq!(doc[0]["labels"]["zone"], "a");
        assert_eq!(doc[0]["labels"]["host"], "a-1");
        let mut unknown = nodes.clone();
        unknown[0].address = Attr::Unknown;
        assert!(prometheus_targets("c1", &unknown, 20000).is_unknown());
    }
}
