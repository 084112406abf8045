//! The `redisha` command: exit codes, messages on bad input, the json shape, determinism, and
//! that its json output reads back as a placement for `report` and `diff`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/planner")
}

fn redisha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_redisha"))
        .args(args)
        .output()
        .expect("run redisha")
}

fn example(name: &str) -> String {
    examples().join(name).to_string_lossy().into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn plan_json_has_the_documented_shape() {
    let out = redisha(&["plan", &example("three-zones.json"), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let nodes = v["nodes"].as_array().expect("nodes list");
    assert_eq!(nodes.len(), 6);
    for n in nodes {
        for key in ["name", "shard", "role", "host", "zone", "slots"] {
            assert!(n.get(key).is_some(), "node lacks {key}: {n}");
        }
        assert!(matches!(
            n["role"].as_str(),
            Some("master") | Some("replica")
        ));
    }
    assert!(v["report"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("survives any single host: yes; any single zone: yes"));
    assert!(v["report"]["failures"].as_array().is_some());
    assert!(v["warnings"].as_array().unwrap().is_empty());
}

#[test]
fn plan_is_byte_identical_across_runs() {
    for format in ["json", "text", "markdown", "dot"] {
        let a = redisha(&["plan", &example("with-partition.json"), "--format", format]);
        let b = redisha(&["plan", &example("with-partition.json"), "--format", format]);
        assert!(a.status.success());
        assert_eq!(a.stdout, b.stdout, "{format} output differs between runs");
    }
}

#[test]
fn toml_input_plans_and_warns_about_two_zones() {
    let out = redisha(&["plan", &example("two-zones.toml")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("any single zone: no"), "{text}");
    assert!(
        text.contains("warning: cannot survive losing zone"),
        "{text}"
    );
    assert!(text.contains("add 1 zone(s)"), "{text}");
}

#[test]
fn invalid_input_lists_every_problem_with_its_path() {
    let out = redisha(&["plan", &example("invalid.json")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for expected in [
        "cluster.shards: must be at least 1",
        "zones[0].hosts[0].memory_mb: must be greater than 0",
        "zones[0].hosts[1].name: duplicate host name \"h1\"",
        "zones[1].hosts: must list at least one host",
        "partitions[0].side[0]: unknown zone \"z9\"",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
    assert!(!err.contains("panicked"));
}

#[test]
fn infeasible_input_names_the_constraint_and_the_fix() {
    let out = redisha(&["plan", &example("infeasible.json")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(
            "replicas=2 with spread=zone needs 3 zones with free capacity; the topology has 2"
        ),
        "{err}"
    );
    assert!(err.contains("fix: add 1 zone(s)"), "{err}");
}

#[test]
fn parse_errors_name_the_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\"cluster\": {\"shards\": 3, \"replicas\": 1, \"node_memory_mb\": \"lots\"}, \"zones\": []}",
    )
    .unwrap();
    let out = redisha(&["plan", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cluster.node_memory_mb"), "{err}");
    assert!(err.contains("line 1"), "{err}");

    let toml = dir.path().join("bad.toml");
    std::fs::write(
        &toml,
        "[cluster]\nshards = 3\nreplicas = 1\nnode_memory_mb = 4096\nspred = \"zone\"\n",
    )
    .unwrap();
    let out = redisha(&["plan", toml.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("spred"), "{}", stderr(&out));

    let out = redisha(&["plan", dir.path().join("missing.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read"));
}

#[test]
fn json_plan_reads_back_for_report_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let current = dir.path().join("current.json");
    let out = redisha(&["plan", &example("three-zones.json"), "--format", "json"]);
    std::fs::write(&current, &out.stdout).unwrap();

    let rep = redisha(&[
        "report",
        &example("three-zones.json"),
        "--placement",
        current.to_str().unwrap(),
    ]);
    assert!(rep.status.success(), "{}", stderr(&rep));
    assert!(stdout(&rep).starts_with("survives any single host: yes"));

    // A placement that does not fit the topology is refused with the node's path.
    let placement_on_other = redisha(&[
        "report",
        &example("two-zones.toml"),
        "--placement",
        current.to_str().unwrap(),
    ]);
    assert_eq!(placement_on_other.status.code(), Some(1));
    let err = stderr(&placement_on_other);
    assert!(
        err.contains("nodes[0].zone: host \"a1\" is in zone \"eu-west-1a\""),
        "{err}"
    );
    assert!(err.contains("nodes[2].host: unknown host \"c1\""), "{err}");

    // diff against a request plans it with the current placement as previous.
    let diff = redisha(&[
        "diff",
        current.to_str().unwrap(),
        &example("grown.json"),
        "--format",
        "json",
    ]);
    assert!(diff.status.success(), "{}", stderr(&diff));
    let steps: serde_json::Value = serde_json::from_slice(&diff.stdout).unwrap();
    let ops: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["op"].as_str().unwrap())
        .collect();
    assert!(
        ops.contains(&"add_node") && ops.contains(&"migrate_slots"),
        "{ops:?}"
    );

    // diff between the shipped current/target pair.
    let pair = redisha(&["diff", &example("current.json"), &example("target.json")]);
    assert!(pair.status.success(), "{}", stderr(&pair));
    assert!(stdout(&pair).contains("fail over to"), "{}", stdout(&pair));
}

#[test]
fn dot_output_draws_zones_as_clusters() {
    let out = redisha(&["plan", &example("three-zones.json"), "--format", "dot"]);
    assert!(out.status.success());
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph"));
    assert_eq!(dot.matches("subgraph cluster_").count(), 3);
    assert!(dot.contains("fillcolor=\"#d9534f\""));
}

#[test]
fn usage_errors_exit_one_and_never_panic() {
    let out = redisha(&["plan", &example("three-zones.json"), "--format", "bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("possible values: text, json, markdown, dot"));
    let out = redisha(&["report", &example("three-zones.json"), "--format", "dot"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("use `redisha plan --format dot`"));
}

/// docs/planner.md shows the sentinel reports of three examples; they must be what the CLI
/// prints today (regenerate with `redisha report examples/planner/<name>.json --format
/// markdown > examples/planner/<name>.md` and paste into the docs).
#[test]
fn the_sentinel_reports_in_the_docs_are_current() {
    let docs = std::fs::read_to_string(examples().join("../../docs/planner.md")).expect("docs");
    for name in [
        "sentinel-three-zones",
        "sentinel-two-zones",
        "sentinel-two-zones-witness",
    ] {
        let out = redisha(&[
            "report",
            &example(&format!("{name}.json")),
            "--format",
            "markdown",
        ]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let report = stdout(&out);
        let saved = std::fs::read_to_string(examples().join(format!("{name}.md"))).expect("md");
        assert_eq!(report, saved, "examples/planner/{name}.md is stale");
        assert!(
            docs.contains(report.trim_end()),
            "docs/planner.md does not show the current report of {name}"
        );
    }
}

#[test]
fn plan_json_of_sentinel_mode_lists_the_sentinels() {
    let out = redisha(&[
        "plan",
        &example("sentinel-three-zones.json"),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3));
    let sentinels = v["sentinel"]["sentinels"].as_array().expect("sentinels");
    assert_eq!(sentinels.len(), 3);
    assert_eq!(v["sentinel"]["report"]["survives_any_zone"], true);
}
