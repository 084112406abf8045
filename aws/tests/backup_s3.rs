//! Backups in S3 against moto_server: a local cluster (real redis-server processes) backed up
//! three times with `retain = 2` (the oldest pruned), restored from S3 into another shard
//! count (every file downloaded and checked first), and a damaged object refused by name.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use redisha_aws::testing::Moto;
use redisha_aws::S3Store;
use redisha_cluster::backup::restore::{create_restored, stage, Route};
use redisha_cluster::backup::{list_backups, take_backup, BackupRequest, Store};
use redisha_cluster::migrate_exec::key_slot;
use redisha_cluster::{ClusterState, LocalConfig, LocalDriver, NodeConfig, Operator, Options};
use redisha_planner::{ClusterSpec, HostSpec, Request, Spread, ZoneSpec};

const BUCKET: &str = "redisha-backups";

fn request(shards: u32) -> Request {
    Request {
        cluster: ClusterSpec {
            shards,
            replicas: 1,
            node_memory_mb: 64,
            spread: Spread::Zone,
            survive: Default::default(),
        },
        zones: (1..=3)
            .map(|z| ZoneSpec {
                name: format!("z{z}"),
                hosts: vec![HostSpec {
                    name: format!("h{z}"),
                    memory_mb: 4096,
                    max_nodes: 4,
                    rack: None,
                }],
            })
            .collect(),
        partitions: Vec::new(),
        sentinel: None,
    }
}

/// Ends our redis-servers (by pid, checked) even when the test fails.
struct Nodes(LocalDriver);

impl Drop for Nodes {
    fn drop(&mut self) {
        self.0.kill_all_blocking();
    }
}

fn driver(dir: &std::path::Path, id: &str) -> Nodes {
    let mut config = LocalConfig::new(dir.join("nodes"));
    config.loopback_octet = 122;
    config.base_port = 9740;
    Nodes(
        LocalDriver::new(config)
            .with_cluster(id, "s3")
            .expect("driver"),
    )
}

async fn create<'a>(d: &'a LocalDriver, id: &str, shards: u32) -> (ClusterState, Operator<'a>) {
    let op = Operator::with_options(
        d,
        NodeConfig::default(),
        Options {
            timeout: Duration::from_secs(60),
            ..Options::default()
        },
    );
    let mut state = ClusterState::new("local");
    state.cluster_id = id.into();
    let plan = redisha_planner::plan(&request(shards), None).expect("plan");
    op.create(&request(shards), &plan.placement, &mut state)
        .await
        .expect("create");
    (state, op)
}

async fn masters(
    state: &ClusterState,
) -> Vec<(
    Vec<redisha_planner::SlotRange>,
    redis::aio::MultiplexedConnection,
)> {
    let mut out = Vec::new();
    for n in state.nodes.iter().filter(|n| !n.slots.is_empty()) {
        let con = redis::Client::open(format!("redis://{}/", n.address()))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        out.push((n.slots.clone(), con));
    }
    out
}

fn owner_of(
    masters: &[(
        Vec<redisha_planner::SlotRange>,
        redis::aio::MultiplexedConnection,
    )],
    key: &str,
) -> usize {
    let slot = key_slot(key.as_bytes());
    masters
        .iter()
        .position(|(slots, _)| slots.iter().any(|r| r.start <= slot && slot <= r.end))
        .expect("every slot is served")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_go_to_s3_are_pruned_and_restore_into_other_shards() {
    let Some(moto) = Moto::start() else { return };
    tokio::time::timeout(Duration::from_secs(300), run(&moto))
        .await
        .expect("test timed out");
}

async fn run(moto: &Moto) {
    let s3 = moto.client().await.s3;
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("CreateBucket");
    let dir = tempfile::tempdir().unwrap();
    let id = "5300000000000001";
    let nodes = driver(dir.path(), id);
    let (mut state, op) = create(&nodes.0, id, 3).await;
    let mut cons = masters(&state).await;
    for i in 0..2000 {
        let k = format!("k{i}");
        let m = owner_of(&cons, &k);
        let () = redis::cmd("SET")
            .arg(&k)
            .arg(i)
            .arg("PX")
            .arg(3_600_000)
            .query_async(&mut cons[m].1)
            .await
            .unwrap();
    }

    let store = S3Store::new(s3.clone(), BUCKET, "nightly/");
    assert_eq!(store.location(), "s3://redisha-backups/nightly");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let m = take_backup(&BackupRequest {
            seeds: state.endpoints(),
            user: None,
            operator_password: None,
            password: None,
            cluster_id: id.into(),
            store: &store,
            retain: Some(2),
            scratch: dir.path().to_path_buf(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(15),
            timeout: Duration::from_secs(60),
        })
        .await
        .expect("backup to S3");
        assert_eq!(m.total_keys(), 2000);
        ids.push(m.backup_id);
    }
    let left: Vec<String> = list_backups(&store, id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.backup_id)
        .collect();
    assert_eq!(left, [ids[2].clone(), ids[1].clone()]);
    let objects = s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    assert!(
        objects
            .contents()
            .iter()
            .all(|o| !o.key().unwrap_or_default().contains(&ids[0])),
        "the oldest backup was pruned from S3"
    );
    op.destroy(&mut state).await.expect("destroy");
    drop(op);

    // Restore from S3 into 4 shards: every file downloaded, checked, its keys loaded.
    let backup = S3Store::new(s3.clone(), BUCKET, &format!("nightly/{id}/{}", ids[2]));
    let target = redisha_cluster::Driver::engine(&nodes.0).await.unwrap();
    let redis_server = nodes.0.resolve_redis_server().unwrap();
    let new_id = "5300000000000002";
    let restored_nodes = driver(dir.path(), new_id);
    {
        let staged = stage(&backup, "", &backup.location(), target.as_ref(), dir.path())
            .await
            .expect("stage from S3");
        let op = Operator::new(&restored_nodes.0, NodeConfig::default());
        let mut restored = ClusterState::new("local");
        restored.cluster_id = new_id.into();
        let plan = redisha_planner::plan(&request(4), None).unwrap();
        let route = create_restored(
            &op,
            &request(4),
            &plan.placement,
            &mut restored,
            &staged,
            &redis_server,
        )
        .await
        .expect("restore");
        assert_eq!(route, Route::Loaded(2000));
        let mut cons = masters(&restored).await;
        for i in (0..2000).step_by(97) {
            let k = format!("k{i}");
            let m = owner_of(&cons, &k);
            let (v, ttl): (Option<i64>, i64) = redis::pipe()
                .cmd("GET")
                .arg(&k)
                .cmd("PTTL")
                .arg(&k)
                .query_async(&mut cons[m].1)
                .await
                .unwrap();
            assert_eq!(v, Some(i), "{k}");
            assert!(ttl > 3_000_000, "{k} kept its TTL ({ttl} ms)");
        }
        op.destroy(&mut restored).await.expect("destroy restored");
    }

    // A damaged object is refused by name before anything starts.
    let key = format!("nightly/{id}/{}/shard-01.rdb", ids[2]);
    let body = s3
        .get_object()
        .bucket(BUCKET)
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    let mut bytes = body.into_bytes().to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    s3.put_object()
        .bucket(BUCKET)
        .key(&key)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .unwrap();
    let e = stage(&backup, "", &backup.location(), target.as_ref(), dir.path())
        .await
        .err()
        .expect("a damaged object is refused")
        .to_string();
    assert!(e.contains("shard-01.rdb") && e.contains("SHA-256"), "{e}");
}
