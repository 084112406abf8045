//! The `redisha_cluster` schema: the placement data source's topology and shape arguments,
//! plus the password, extra redis.conf settings, one driver block and what apply learns.

use crate::data_sources::placement;
use crate::tfplugin::schema::{Attribute, Block, NestedBlock, Schema};
use crate::tfplugin::types::Type;

pub fn node_type() -> Type {
    Type::object([
        ("id", Type::String),
        ("name", Type::String),
        ("address", Type::String),
        ("role", Type::String),
        ("status", Type::String),
        ("shard", Type::Number),
        ("zone", Type::String),
        ("host", Type::String),
        ("slots", Type::list(Type::String)),
    ])
}

fn local_block() -> Block {
    Block::new("Runs every host as a loopback address 127.O.Z.H on this machine and every node as a redis-server process.")
        .attribute(Attribute::optional("data_dir", Type::String).describe(
            "Directory holding one directory per node (config file with mode 0600, data, log). \
             Default `.redisha/<name>` under Terraform's working directory.",
        ))
        .attribute(Attribute::optional("base_port", Type::Number).describe(
            "Client port of the first node on each host; the n-th node on a host uses base_port + n \
             and the cluster bus port 10000 above it. Default 7000.",
        ))
        .attribute(Attribute::optional("loopback_octet", Type::Number).describe(
            "Second octet O of the host addresses 127.O.Z.H (Z: zone number, H: host number, from 1). \
             Default 0. Give two clusters on one machine different values.",
        ))
        .attribute(Attribute::optional("redis_server", Type::String).describe(
            "The redis-server binary, a path or a name on PATH. Default `redis-server`.",
        ))
}

fn aws_block() -> Block {
    let volume =
        Block::new("An encrypted gp3 data volume per instance, mounted as Redis's data directory.")
            .attribute(Attribute::required("size_gb", Type::Number).describe("Size in GiB."))
            .attribute(Attribute::optional("encrypted", Type::Bool).describe("Default true."));
    Block::new("Runs every host as an EC2 instance in a subnet of its zone.")
        .attribute(Attribute::required("subnet_ids", Type::list(Type::String)).describe(
            "Subnets to launch into; their availability zones are the cluster's zones (several subnets may share a zone).",
        ))
        .attribute(Attribute::required("instance_type", Type::String).describe(
            "Instance type; its memory (DescribeInstanceTypes) is the host capacity the planner fills.",
        ))
        .attribute(Attribute::required("ami", Type::String).describe("AMI id: a Debian or Ubuntu image with cloud-init."))
        .attribute(Attribute::optional("key_name", Type::String).describe("EC2 key pair for SSH."))
        .attribute(Attribute::optional("allowed_cidrs", Type::list(Type::String)).describe(
            "CIDR blocks allowed to reach the Redis ports besides the cluster's own security group.",
        ))
        .attribute(Attribute::optional("placement_group", Type::String).describe(
            "Name of an existing `spread` placement group.",
        ))
        .attribute(Attribute::optional("max_nodes_per_instance", Type::Number).describe(
            "Most redis-server nodes one instance runs. Default: as many as its memory holds.",
        ))
        .attribute(Attribute::optional("tags", Type::map(Type::String)).describe("Tags for every instance and the security group."))
        .block(NestedBlock::single("data_volume", volume))
}

fn timeouts_block() -> Block {
    Block::new("How long each operation may take, as `30s`, `10m` or `1h`.")
        .attribute(Attribute::optional("create", Type::String).describe("Default 10m."))
        .attribute(Attribute::optional("update", Type::String).describe("Default 30m."))
        .attribute(Attribute::optional("delete", Type::String).describe("Default 10m."))
}

pub fn schema() -> Schema {
    let topology = placement::schema().block;
    let mut block = Block::new(
        "A Redis Cluster placed by the redisha planner (no shard shares a failure domain with its \
         replicas; losing any one zone keeps a master majority and a copy of every shard whenever \
         the topology allows it), formed, kept healthy and changed safely.",
    )
    .attribute(Attribute::required("name", Type::String).describe(
        "Cluster name: names the data directory (local) or tags the instances (aws). Changing it replaces the cluster.",
    ))
    .attribute(Attribute::computed("id", Type::String).describe("The cluster name."))
    .attribute(Attribute::computed("cluster_id", Type::String).describe(
        "The cluster's unique id, made at create and recorded on every node (local: in the node's          directory, `<data_dir>/<cluster_id>/<node>/`). redisha only ever stops, wipes or          adopts what carries it, and finds the nodes again by it when an apply was interrupted.",
    ));
    for a in topology.attributes.into_iter().filter(|a| !a.computed) {
        block = block.attribute(a);
    }
    for mut b in topology.blocks {
        // With the aws driver the zones come from the subnets, so zone blocks are optional here.
        b.min_items = 0;
        block = block.block(b);
    }
    let block = block
        .attribute(
            Attribute::optional("password", Type::String)
                .sensitive()
                .describe("Password of the default user (requirepass and masterauth). Changing it rolls over every node."),
        )
        .attribute(Attribute::optional("allow_data_loss", Type::Bool).describe(
            "Default false: apply refuses any action that would lose acknowledged writes, such as              restarting a failed master that has no live replica while append-only persistence is              off (it comes back with its last snapshot at best). Set true to accept that loss.",
        ))
        .attribute(Attribute::optional("redis_config", Type::map(Type::String)).describe(
            "Extra redis.conf settings, e.g. `{ maxmemory-policy = \"allkeys-lru\" }`. Changes roll over replicas first.",
        ))
        .attribute(Attribute::computed("nodes", Type::list(node_type())).describe(
            "Every node: `id` (Redis cluster node id), `name`, `address` (host:port), `role` (`master` or \
             `replica`), `status` (`up` or `down`), `shard` (0-based), `zone`, `host`, and `slots` as \
             `\"start-end\"` ranges. Read reports the live cluster, so drift shows in the next plan.",
        ))
        .attribute(Attribute::computed("endpoints", Type::list(Type::String)).describe("host:port of every node, for cluster-aware clients."))
        .attribute(Attribute::computed("placement_report", Type::String).describe("The planner's what-if report, markdown."))
        .block(NestedBlock::single("local", local_block()))
        .block(NestedBlock::single("aws", aws_block()))
        .block(NestedBlock::single("timeouts", timeouts_block()));
    Schema::new(0, block)
}
