//! What the `redisha_sentinel` end-to-end tests ask of a deployment: connections to its data
//! nodes and sentinels, what a healthy one looks like from every sentinel, and writes a
//! replica acknowledged (WAIT) that must survive whatever the test does next.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::TfDir;

pub async fn connect(
    address: &str,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(format!("redis://:{password}@{address}/"))?
        .get_multiplexed_async_connection()
        .await
}

/// One `SENTINEL <sub> <master>` on a sentinel, logged in with `password` (none: without).
pub async fn ask_sentinel<T: redis::FromRedisValue>(
    sentinel: &str,
    password: Option<&str>,
    master: &str,
    sub: &str,
) -> redis::RedisResult<T> {
    let url = match password {
        Some(p) => format!("redis://:{p}@{sentinel}/"),
        None => format!("redis://{sentinel}/"),
    };
    let mut con = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("SENTINEL")
        .arg(sub)
        .arg(master)
        .query_async(&mut con)
        .await
}

/// The primary a sentinel names.
pub async fn primary_by(sentinel: &str, password: &str, master: &str) -> Option<String> {
    let a: Vec<String> = ask_sentinel(sentinel, Some(password), master, "GET-MASTER-ADDR-BY-NAME")
        .await
        .ok()?;
    (a.len() == 2).then(|| format!("{}:{}", a[0], a[1]))
}

/// Every sentinel names `primary`, knows exactly `replicas` replicas and the other sentinels,
/// none of them down, and has the quorum it needs (`SENTINEL CKQUORUM`).
pub async fn monitoring(
    sentinels: &[String],
    password: &str,
    master: &str,
    primary: &str,
    replicas: usize,
) {
    let peers = sentinels.len() - 1;
    for s in sentinels {
        assert_eq!(
            primary_by(s, password, master).await.as_deref(),
            Some(primary),
            "{s}"
        );
        let known: Vec<HashMap<String, String>> =
            ask_sentinel(s, Some(password), master, "REPLICAS")
                .await
                .expect("SENTINEL REPLICAS");
        assert_eq!(known.len(), replicas, "{s} knows {known:?}");
        let others: Vec<HashMap<String, String>> =
            ask_sentinel(s, Some(password), master, "SENTINELS")
                .await
                .expect("SENTINEL SENTINELS");
        assert_eq!(others.len(), peers, "{s} knows {others:?}");
        for o in &others {
            assert!(
                // Down means flagged `s_down`/`o_down` (no answer for down-after-milliseconds).
                // `disconnected` is transient: a sentinel just (re)started or reset has not
                // opened its links to a peer yet. `master_down` is that peer's vote on the
                // primary.
                !o.get("flags")
                    .is_some_and(|f| f.split(',').any(|x| ["s_down", "o_down"].contains(&x))),
                "{s} sees a peer down: {o:?}"
            );
        }
        let quorum: String = ask_sentinel(s, Some(password), master, "CKQUORUM")
            .await
            .expect("SENTINEL CKQUORUM");
        assert!(quorum.starts_with("OK"), "{s}: {quorum}");
    }
}

/// The first `redisha_sentinel`'s attributes as `terraform show -json` has them.
pub fn resource_values(tf: &TfDir) -> Json {
    let out = tf.run(&["show", "-json"]);
    out.assert_success("terraform show -json");
    let v: Json = serde_json::from_str(&out.stdout).expect("show -json is JSON");
    v["values"]["root_module"]["resources"][0]["values"].clone()
}

/// The addresses of `values`' nodes of `kind` (`data` or `sentinel`).
pub fn addresses(values: &Json, kind: &str) -> Vec<String> {
    values["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["kind"] == kind)
        .filter_map(|n| n["address"].as_str().map(String::from))
        .collect()
}

/// `count` keys `<prefix>:<i>` SET on `primary`, each followed by `WAIT 1 1000`: the names of
/// those a replica acknowledged.
pub async fn write_acknowledged(
    primary: &str,
    password: &str,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let mut con = connect(primary, password)
        .await
        .expect("connect to the primary");
    let mut acked = Vec::new();
    for i in 0..count {
        let key = format!("{prefix}:{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(i)
            .query_async(&mut con)
            .await
            .expect("SET");
        let n: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(1000)
            .query_async(&mut con)
            .await
            .expect("WAIT");
        if n >= 1 {
            acked.push(key);
        }
    }
    acked
}

/// Every key of `keys` reads back from `address`.
pub async fn assert_readable(address: &str, password: &str, keys: &[String]) {
    let mut con = connect(address, password).await.expect("connect");
    for key in keys {
        let v: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .expect("GET");
        assert!(v.is_some(), "{key} was acknowledged and is lost");
    }
}
