//! The `redisha_cluster` model: the placement data source's topology and shape arguments,
//! plus the password, extra redis.conf settings, one driver block and what apply learns.

use std::collections::BTreeMap;

use crate::model;
use crate::tfplugin::framework::Attr;
use crate::topology::{self, TopologyModel};

use super::users::UserModel;

model! {
    /// One node of `nodes`.
    #[derive(Debug)]
    pub struct NodeValue {
        pub id: Attr<String>,
        pub name: Attr<String>,
        pub address: Attr<String>,
        pub role: Attr<String>,
        pub planned_role: Attr<String>,
        pub status: Attr<String>,
        pub shard: Attr<u32>,
        pub zone: Attr<String>,
        pub host: Attr<String>,
        pub slots: Attr<Vec<String>>,
    }
}

model! {
    pub struct LocalModel("Runs every host as a loopback address 127.O.Z.H on this machine and every node as a redis-server process.") {
        pub data_dir: Attr<String> = optional("Directory holding one directory per node (config file with mode 0600, data, log). \
             Default `.redisha/<name>` under Terraform's working directory. Changing it replaces the cluster.").requires_replace(),
        pub base_port: Attr<u32> = optional("Client port of the first node on each host; the n-th node on a host uses base_port + n \
             and the cluster bus port 10000 above it. Default 7000. Changing it replaces the cluster.").requires_replace(),
        pub loopback_octet: Attr<u32> = optional("Second octet O of the host addresses 127.O.Z.H (Z: zone number, H: host number, from 1). \
             Default 0. Give two clusters on one machine different values. Changing it replaces the cluster.").requires_replace(),
        pub redis_server: Attr<String> = optional("The server binary, a path or a name on PATH: Redis 6.2 or later, or Valkey 7.2 or later. \
             Default `redis-server`. Changing it rolls the cluster onto that engine in place: replicas first, then each \
             master after a coordinated failover to an upgraded replica. A change the current masters' snapshot format \
             forbids (most downgrades) is refused at plan."),
    }
}

model! {
    pub struct MetricsModel("Prometheus metrics: a `prometheus-redis-exporter` beside every node (local driver: a process \
         started and ended with its node; aws: a systemd unit on every instance, always there), and \
         `prometheus_targets` listing them for Prometheus' `file_sd_configs`.") {
        pub port_offset: Attr<u32> = optional("Local driver: an exporter listens on its node's address at the node's port plus this. \
             Default 20000 (node 7000, exporter 27000). On aws exporters always listen at the node's port + 20000."),
        pub exporter: Attr<String> = optional("Local driver: the exporter binary, a path or a name on PATH. Default \
             `prometheus-redis-exporter` (Debian's package, which `scripts/setup` installs)."),
    }
}

model! {
    pub struct DataVolumeModel("An encrypted gp3 data volume per instance, mounted as Redis's data directory.") {
        pub size_gb: Attr<u32> = required("Size in GiB."),
        pub encrypted: Attr<bool> = optional("Default true."),
    }
}

model! {
    pub struct AwsModel("Runs every host as an EC2 instance in a subnet of its zone. Changing `ami` or `redis_package` replaces the \
         instances one at a time on the live cluster (see \"Engines: upgrades and downgrades\"); changing any other argument of this block replaces the cluster.") {
        pub subnet_ids: Attr<Vec<String>> = required("Subnets to launch into; their availability zones are the cluster's zones (several subnets may share a zone).").requires_replace(),
        pub instance_type: Attr<String> = required("Instance type; its memory (DescribeInstanceTypes) is the host capacity the planner fills.").requires_replace(),
        pub ami: Attr<String> = required("AMI id: a Debian or Ubuntu image with cloud-init. Changing it rolls the cluster onto instances of the new AMI \
             in place: one instance at a time, those holding only replicas first; each master on an instance first fails over to a replica \
             on another instance, then the instance is terminated and replaced with the same nodes, which resynchronise before the next."),
        pub redis_package: Attr<String> = optional("The engine package first boot installs (apt, dnf or yum): `redis-server` (the default), Amazon Linux's \
             `redis6`, or any package that installs a `redis-server`, `redis6-server` or `redis7-server` binary. Changing it replaces the instances one at a time, as a change of `ami` does."),
        pub key_name: Attr<String> = optional("EC2 key pair for SSH.").requires_replace(),
        pub allowed_cidrs: Attr<Vec<String>> = optional("CIDR blocks allowed to reach the Redis ports besides the cluster's own security group.").requires_replace(),
        pub monitoring_cidrs: Attr<Vec<String>> = optional("CIDR blocks allowed to reach every node's metrics exporter (node port + 20000), such as your Prometheus servers' subnet. Default: none (the exporters are then reachable from nowhere outside the instance).").requires_replace(),
        pub allowed_security_group_ids: Attr<Vec<String>> = optional("Security groups (of the subnets' VPC) whose members may reach the Redis ports, such as your application's. The cluster bus ports are open to the cluster's own group only.").requires_replace(),
        pub placement_group: Attr<String> = optional("Name of an existing `spread` placement group.").requires_replace(),
        pub instance_profile: Attr<String> = optional("Name of an existing instance profile for the nodes. Default: redisha makes a role and profile per cluster (`redisha-node-<cluster_id>`) that may read the cluster's password parameter and take SSM Run Command; yours needs the same (see \"IAM permissions\").").requires_replace(),
        pub max_nodes_per_instance: Attr<u32> = optional("Most redis-server nodes one instance runs. Default: as many as its memory holds.").requires_replace(),
        pub tags: Attr<BTreeMap<String, String>> = optional("Tags for every instance and the security group.").requires_replace(),
        pub data_volume: Attr<DataVolumeModel> = single_block().requires_replace(),
    }
}

model! {
    pub struct EndpointModel("aws driver: a configuration endpoint, one DNS name in a Route 53 private hosted zone whose A record \
         lists every instance of the cluster (as ElastiCache's). Cluster-aware clients connect to `configuration_endpoint_address` \
         and discover the nodes from there. A TXT record at the same name holds `redisha-cluster-id=<cluster_id>`: redisha \
         only changes or deletes records that carry it, and refuses a name that already has someone else's records. \
         Changes apply in place; destroy deletes both records.") {
        pub hosted_zone_id: Attr<String> = required("Id of a Route 53 private hosted zone associated with the subnets' VPC (e.g. `aws_route53_zone.internal.zone_id`)."),
        pub name: Attr<String> = required("The name inside that zone, e.g. `cache.internal.example.com`."),
        pub ttl: Attr<u32> = optional("Seconds resolvers keep the answer. Default 60: a replaced instance is seen within a minute."),
    }
}

model! {
    pub struct TlsModel("TLS for client connections, replication and the cluster bus (`tls-port`, `tls-replication`, `tls-cluster`), \
         with certificates from a certificate authority redisha makes for the cluster: each node gets its own, with its address in \
         the subject alternative names, valid 365 days and reissued when fewer than 30 are left. Or, with `ca_cert_pem`, `cert_pem` and \
         `key_pem`, every node presents your certificate (from your own PKI) instead, on both drivers. Clients verify the nodes with \
         `tls_ca_cert_pem` (e.g. `redis-cli --tls --cacert ca.pem`). Each node's port is its TLS port in both modes; `endpoints` \
         say `rediss://`. Adding or removing the block on an existing cluster is refused (create a new one), and so is a switch \
         between generated and supplied certificates.") {
        pub mode: Attr<String> = required("`preferred`: TLS on each node's port, plain text too on the node's port + 1000. `required`: TLS only \
             (the plain-text port is closed). Changing it applies in place as a rolling restart, replicas first. On aws, `preferred` also opens the plain-text ports in the cluster's security group, to the client ports' sources; a switch to `required` revokes them once every node has restarted."),
        pub ca_cert_pem: Attr<String> = optional("Your certificate authority (PEM; several certificates allowed, e.g. an old and a new authority \
             while one replaces the other): the nodes verify each other with it and `tls_ca_cert_pem` repeats it for clients. Set \
             together with `cert_pem` and `key_pem`, e.g. `file(\"ca.pem\")`."),
        pub cert_pem: Attr<String> = optional("The certificate every node presents (PEM, intermediates after it), issued by `ca_cert_pem`. \
             The plan checks that it names every node's address in its subject alternative names (IP or DNS), is valid now, \
             (on aws: every instance's private address as an IP SAN, checked by apply once the instances run and before any node \
             starts on them, where the plan does not know it yet), \
             and allows both serverAuth and clientAuth (nodes present it to each other on the cluster bus); `tls_cert_expiry` shows \
             when it expires, and plans warn in its last 30 days (redisha cannot renew it). A new certificate or authority applies \
             as a rolling restart, replicas first; to replace the authority, first add the new one to `ca_cert_pem` beside the old, \
             then change the certificate, then drop the old authority (the plan refuses a step that nodes on either side of the \
             roll would not accept)."),
        pub key_pem: Attr<String> = optional("The private key of `cert_pem` (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC; RSA, ECDSA P-256/P-384 \
             or Ed25519). Kept in Terraform state as a sensitive value and in each node's directory (mode 0600; aws: with the certificate in a \
             SecureString per node under `/redisha/<name>/<cluster_id>/node/tls/`, which the instances read); never shown.").sensitive(),
    }
}

model! {
    pub struct TimeoutsModel("How long each operation may take, as `30s`, `10m` or `1h`.") {
        pub create: Attr<String> = optional("Default 10m."),
        pub update: Attr<String> = optional("Default 30m."),
        pub delete: Attr<String> = optional("Default 10m."),
    }
}

model! {
    pub struct ClusterModel("A Redis Cluster placed by the redisha planner (no shard shares a failure domain with its \
         replicas; losing any one zone keeps a master majority and a copy of every shard whenever \
         the topology allows it), formed, kept healthy and changed safely.") {
        pub name: Attr<String> = required("Cluster name: names the data directory (local) or tags the instances (aws). Changing it replaces the cluster.").requires_replace(),
        pub id: Attr<String> = computed("The cluster name."),
        pub cluster_id: Attr<String> = computed("The cluster's unique id, made at create and recorded on every node (local: in the node's          directory, `<data_dir>/<cluster_id>/<node>/`). redisha only ever stops, wipes or          adopts what carries it, and finds the nodes again by it when an apply was interrupted."),
        pub topology: TopologyModel = flatten().adjust(topology::blocks_optional),
        pub password: Attr<String> = optional("Password of the default user (requirepass and masterauth). Changing it rolls over every node.").sensitive(),
        pub default_user_enabled: Attr<bool> = optional("Default true. `false` switches Redis's `default` user off (`ACL SETUSER default off`): clients must log in as \
             one of the `user` blocks. redisha keeps working as its own user, `redisha-operator`. Changes apply in place."),
        pub operator_password_generation: Attr<u64> = optional("A number to change whenever the password of `redisha-operator`, the user redisha works as, \
             should be rotated (e.g. bump it, or set it from a `time_rotating` resource). redisha generates that password and keeps it beside the cluster \
             (never in Terraform); a change makes a new one and rotates in place: every node accepts both, replication and redisha move to the new one, \
             then the old one is removed. Unset: the password is kept as it is."),
        pub allow_data_loss: Attr<bool> = optional("Default false: apply refuses any action that would lose acknowledged writes, such as              restarting a failed master that has no live replica while append-only persistence is              off (it comes back with its last snapshot at best). Set true to accept that loss."),
        pub redis_config: Attr<BTreeMap<String, String>> = optional("Extra redis.conf settings, e.g. `{ maxmemory-policy = \"allkeys-lru\" }`. Changes roll over replicas first."),
        pub persistence: Attr<String> = optional("What every node keeps on disk: `none` (nothing), `rdb` (snapshots after 1 h if a key changed, 5 min if 100 did, 1 min if 10,000 did; the default) \
             or `aof` (an append-only file, fsynced as `appendfsync` says, plus snapshots). What each can lose on a crash, a failover and a zone loss: see \"Persistence\" above. Changes apply live."),
        pub appendfsync: Attr<String> = optional("With `persistence = \"aof\"`: `everysec` (the default; a crash loses at most about 1 s of writes) or `always` (every write is on disk before it is acknowledged; slower)."),
        pub min_replicas_to_write: Attr<u32> = optional("A master refuses writes while fewer than this many replicas are connected with at most `min_replicas_max_lag` seconds of lag. \
             Bounds what a master cut off from its replicas accepts and then loses. Default: unset (never refuse)."),
        pub min_replicas_max_lag: Attr<u32> = optional("Seconds of replica lag `min_replicas_to_write` tolerates. Default 10."),
        pub restore_from: Attr<String> = optional("A backup to create the cluster from: the `id` of a `redisha_backup` (a directory, or `s3://bucket/prefix/...`). \
             With as many shards as the backup, each master starts from its shard's snapshot; otherwise every key is loaded and routed by slot (TTLs kept). \
             The backup is checked (manifest, SHA-256 of every file, snapshot format against the engine) at plan and again before any node starts. Read only at create."),
        pub final_backup: Attr<String> = optional("A destination (a directory, or `s3://bucket/prefix`) for a backup taken just before destroy. \
             If that backup fails, destroy stops with nothing removed."),
        pub nodes: Attr<Vec<NodeValue>> = computed("Every node: `id` (Redis cluster node id), `name`, `address` (host:port), `role` (`master` or \
             `replica`, as the node says now), `planned_role` (what the plan made it), `status` (`up` or `down`), `shard` (0-based), `zone`, `host`, and `slots` as \
             `\"start-end\"` ranges. Read reports the live cluster, so drift shows in the next plan."),
        pub endpoints: Attr<Vec<String>> = computed("host:port of every node, for cluster-aware clients."),
        pub reader_endpoints: Attr<BTreeMap<String, Vec<String>>> = computed("Per zone, host:port of the replicas up in that zone, for clients that read from replicas \
             close to them (`READONLY`). Read follows failovers: a promoted replica leaves its list."),
        pub prometheus_targets: Attr<String> = computed("With `metrics`: the exporters as a Prometheus `file_sd` target list (JSON), one target per \
             node labelled `cluster`, `node`, `shard`, `role` (the planned role: the exporter's own `role`, the live \
             one, becomes `exported_role` in Prometheus), `zone` and `host`; write it to a file with \
             `local_file` and point `file_sd_configs` at it. Null without `metrics` on the local driver."),
        pub configuration_endpoint_address: Attr<String> = computed("With `configuration_endpoint`: `name:port` for cluster-aware clients (the first node of every instance \
             listens on 6379). Null otherwise."),
        pub tls_ca_cert_pem: Attr<String> = computed("With `tls`: the certificate (PEM) of the cluster's certificate authority, which issued every node's \
             certificate, or your `tls.ca_cert_pem`; give it to clients to verify the nodes. A generated authority's key never leaves the cluster \
             (local: `<data_dir>/<cluster_id>/`, mode 0600; aws: an SSM SecureString under `/redisha/<name>/<cluster_id>/`). Null without `tls`."),
        pub tls_cert_expiry: Attr<String> = computed("With `tls`: when the node certificate that expires first does (RFC 3339, UTC; with `tls.cert_pem`, \
             when that certificate does). A plan within 30 days of it says how many days are left; for generated certificates it shows this \
             as known after apply: apply reissues those certificates and restarts their nodes onto them, replicas first. Null without `tls`."),
        pub placement_report: Attr<String> = computed("The planner's what-if report, markdown."),
        pub metrics: Attr<MetricsModel> = single_block(),
        pub local: Attr<LocalModel> = single_block(),
        pub aws: Attr<AwsModel> = single_block(),
        pub configuration_endpoint: Attr<EndpointModel> = single_block(),
        pub tls: Attr<TlsModel> = single_block(),
        pub user: Attr<Vec<UserModel>> = list_block(),
        pub timeouts: Attr<TimeoutsModel> = single_block(),
    }
}

#[cfg(test)]
mod tests {
    use crate::tfplugin::diagnostics::AttrPath;
    use crate::tfplugin::value::Value;

    /// A `redisha_cluster` value with an `aws` block of these settings.
    fn with_aws(ami: &str, package: Option<&str>, instance_type: &str) -> Value {
        let s = |v: &str| Value::String(v.into());
        Value::object([
            ("name", s("shop")),
            (
                "aws",
                Value::object([
                    ("subnet_ids", Value::List(vec![s("subnet-1")])),
                    ("instance_type", s(instance_type)),
                    ("ami", s(ami)),
                    ("redis_package", package.map_or(Value::Null, s)),
                ]),
            ),
        ])
    }

    fn replaced(prior: &Value, planned: &Value) -> Vec<AttrPath> {
        let schemas = crate::registry::schemas();
        schemas.resources["redisha_cluster"]
            .block
            .replace_paths(prior, planned)
    }

    #[test]
    fn the_engine_of_aws_changes_in_place_and_its_other_settings_replace_the_cluster() {
        let prior = with_aws("ami-1", None, "t3.small");
        assert!(replaced(&prior, &with_aws("ami-2", None, "t3.small")).is_empty());
        assert!(replaced(&prior, &with_aws("ami-1", Some("redis7"), "t3.small")).is_empty());
        assert_eq!(
            replaced(&prior, &with_aws("ami-2", None, "t3.large")),
            vec![AttrPath::attr("aws").then("instance_type")]
        );
        assert_eq!(
            replaced(
                &prior,
                &Value::object([("name", Value::String("shop".into()))])
            ),
            vec![AttrPath::attr("aws")],
            "leaving aws (for another driver) replaces the cluster"
        );
    }
}
