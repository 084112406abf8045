//! The `redisha_sentinel` model: the topology (as `redisha_cluster` writes it, without
//! shards: sentinel mode has one), the sentinel settings, the password, the driver block,
//! and what apply learns (the primary as Sentinel sees it, the sentinels' addresses, every
//! process).

use std::collections::BTreeMap;

use crate::model;
use crate::resources::cluster::model::{AwsModel, LocalModel, TimeoutsModel};
use crate::tfplugin::framework::Attr;
use crate::topology::{PartitionModel, SurviveModel, ZoneModel};

model! {
    /// One process of `nodes`.
    #[derive(Debug)]
    pub struct ProcessValue {
        pub name: Attr<String>,
        pub kind: Attr<String>,
        pub address: Attr<String>,
        pub role: Attr<String>,
        pub status: Attr<String>,
        pub zone: Attr<String>,
        pub host: Attr<String>,
    }
}

model! {
    pub struct SentinelSettingsModel("How the sentinels watch the primary.") {
        pub count: Attr<u32> = optional("Sentinel processes: 3 (default) or 5. The planner puts them in distinct zones where it can, so that losing any one zone keeps a majority of them with a replica to promote."),
        pub quorum: Attr<u32> = optional("Sentinels that must agree the primary is down. Default: a majority of `count`. A failover also needs a majority of all sentinels, whatever the quorum."),
        pub memory_mb: Attr<u64> = optional("Memory one sentinel needs on its host, in MiB. Default 64. Sentinels need memory only: they do not count against a host's `max_nodes`."),
        pub master_name: Attr<String> = optional("The name Sentinel-aware clients ask for. Default: the resource's `name`."),
        pub down_after_ms: Attr<u64> = optional("Sentinel's `down-after-milliseconds`: how long the primary may not answer before a sentinel counts it down. Default 5000."),
        pub failover_timeout_ms: Attr<u64> = optional("Sentinel's `failover-timeout`. Default 60000."),
        pub min_replicas_to_write: Attr<u32> = optional("The primary refuses writes with fewer replicas connected, so a primary cut off from the others stops taking writes that a failover elsewhere would discard. Default 1; 0 turns the guard off."),
        pub min_replicas_max_lag: Attr<u32> = optional("Seconds a replica may lag and still count for `min_replicas_to_write`. Default 10."),
    }
}

model! {
    pub struct SentinelModel("One primary with replicas and Redis Sentinel processes placed by the redisha planner, for \
         applications that cannot use Redis Cluster (several databases, multi-key commands, clients \
         without cluster support). Sentinel decides failovers; apply restarts processes that are proven \
         stopped and puts the planned primary back with `SENTINEL FAILOVER`.") {
        pub name: Attr<String> = required("Deployment name: names the data directory (local) or the instances, security group and SSM parameters (aws). Changing it replaces the deployment.").requires_replace(),
        pub id: Attr<String> = computed("The deployment name."),
        pub cluster_id: Attr<String> = computed("The deployment's unique id, made at create; its processes' directories are `<data_dir>/<cluster_id>/<process>/`."),
        pub replicas: Attr<u32> = required("Replicas of the primary."),
        pub node_memory_mb: Attr<u64> = required("Memory each redis-server data node needs, in MiB."),
        pub spread: Attr<String> = optional("Failure domain two data nodes never share: `host`, `rack` or `zone` (default)."),
        pub zone: Attr<Vec<ZoneModel>> = list_block(),
        pub partition: Attr<Vec<PartitionModel>> = list_block(),
        pub survive: Attr<SurviveModel> = single_block(),
        pub sentinel: Attr<SentinelSettingsModel> = single_block(),
        pub password: Attr<String> = required("Password of the data nodes' default user (requirepass, masterauth, and the sentinels' auth-pass). Changing it rotates every process without a moment where Sentinel or a replica cannot log in.").sensitive(),
        pub sentinel_password: Attr<String> = optional("The sentinels' own password: clients need it to ask a sentinel for the primary, and without it no one can reconfigure a sentinel (`SENTINEL SET`, `FAILOVER`, `REMOVE`). Default: `password`. Sentinel-aware clients take it apart from the data password (redis-py `sentinel_kwargs={\"password\": ...}`, Jedis `sentinelPassword`, Lettuce the password of each sentinel `RedisURI`), so a separate one costs clients nothing. Changing it rotates every sentinel without a moment where one sentinel refuses another.").sensitive(),
        pub redis_config: Attr<BTreeMap<String, String>> = optional("Extra redis.conf settings of the data nodes."),
        pub primary: Attr<String> = computed("host:port of the primary as a majority of the sentinels names it. Read reports the live one, so a failover shows in the next plan, and apply puts the planned primary back."),
        pub master_name: Attr<String> = computed("The name Sentinel-aware clients ask the sentinels for."),
        pub sentinel_addresses: Attr<Vec<String>> = computed("host:port of every sentinel, for Sentinel-aware clients; they log in with `sentinel_password` (or `password` when it is not set)."),
        pub nodes: Attr<Vec<ProcessValue>> = computed("Every process: `name`, `kind` (`data` or `sentinel`), `address`, `role` (`primary`, `replica` or `sentinel`), `status` (`up` or `down`), `zone`, `host`."),
        pub placement_report: Attr<String> = computed("The planner's sentinel report, markdown: per failure, sentinels left against the quorum, whether Sentinel fails over, and where an old primary keeps running cut off."),
        pub local: Attr<LocalModel> = single_block(),
        pub aws: Attr<AwsModel> = single_block(),
        pub timeouts: Attr<TimeoutsModel> = single_block(),
    }
}
