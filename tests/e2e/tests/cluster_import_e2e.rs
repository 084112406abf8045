//! `terraform import` of a running cluster by one node's address, then adoption by the
//! configuration that describes it: no restart, no change, and destroy still finds every process.

mod common;

use common::local_cluster::{our_pids, Cleanup};
use common::TfDir;

const OCTET: &str = "92";
const PORT: &str = "7800";
const PASSWORD: &str = "import-Secret-77";

fn vars() -> Vec<String> {
    vec![
        format!("-var=loopback_octet={OCTET}"),
        format!("-var=base_port={PORT}"),
        format!("-var=password={PASSWORD}"),
    ]
}

/// `terraform CMD [flags] ARGS`: flags go before positional arguments (import needs that).
fn run(tf: &TfDir, cmd: &[&str]) -> common::TfOutput {
    let (verb, rest) = cmd.split_first().expect("a command");
    let mut args: Vec<String> = vec![verb.to_string()];
    if *verb == "state" {
        args.extend(rest.iter().map(|s| s.to_string()));
        args.insert(2, "-no-color".into());
    } else {
        args.push("-no-color".into());
        args.extend(vars());
        args.extend(rest.iter().map(|s| s.to_string()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tf.run(&args)
}

#[test]
fn import_adopts_a_running_cluster() {
    let main_tf = std::fs::read_to_string(common::workspace_root().join("examples/local/main.tf"))
        .expect("examples/local/main.tf");
    let mut tf = TfDir::dev(&main_tf);
    tf.env.push(("REDISHA_PASSWORD".into(), PASSWORD.into()));
    let data_dir = tf.path().join(".redisha/demo");
    let mut destroy = vec![
        "destroy".to_string(),
        "-auto-approve".into(),
        "-no-color".into(),
    ];
    destroy.extend(vars());
    let _cleanup = Cleanup {
        tf: &tf,
        data_dir: data_dir.clone(),
        destroy_args: destroy,
    };

    run(&tf, &["apply", "-auto-approve"]).assert_success("terraform apply");
    let pids_before = {
        let mut p = our_pids(&data_dir);
        p.sort_unstable();
        p
    };
    assert_eq!(pids_before.len(), 6);

    // Terraform forgets the cluster; it keeps running.
    run(&tf, &["state", "rm", "redisha_cluster.demo"]).assert_success("terraform state rm");
    let address = format!("127.{OCTET}.1.1:{PORT}");
    let out = run(&tf, &["import", "redisha_cluster.demo", &address]);
    out.assert_success("terraform import");

    // Adoption: apply takes the nodes over without restarting any of them.
    run(&tf, &["apply", "-auto-approve"]).assert_success("terraform apply after import");
    let mut pids_after = our_pids(&data_dir);
    pids_after.sort_unstable();
    assert_eq!(pids_before, pids_after, "adoption restarted processes");
    let out = run(&tf, &["plan", "-detailed-exitcode"]);
    assert_eq!(
        out.code,
        Some(0),
        "the adopted cluster matches its configuration:\n{}",
        out.all()
    );

    // A wrong address is a clear error, not a panic.
    run(&tf, &["state", "rm", "redisha_cluster.demo"]).assert_success("terraform state rm");
    let out = run(&tf, &["import", "redisha_cluster.demo", "not-an-address"]);
    assert!(!out.success());
    assert!(out.all().contains("host:port"), "{}", out.all());
    run(&tf, &["import", "redisha_cluster.demo", &address])
        .assert_success("terraform import again");
    // Destroy before adoption would stop processes redisha has not taken over: refused.
    let out = run(&tf, &["destroy", "-auto-approve"]);
    assert!(
        !out.success() && out.all().contains("never adopted"),
        "{}",
        out.all()
    );
    assert_eq!(our_pids(&data_dir).len(), 6);
    run(&tf, &["apply", "-auto-approve"]).assert_success("terraform apply (adopt again)");

    run(&tf, &["destroy", "-auto-approve"]).assert_success("terraform destroy");
    assert!(
        our_pids(&data_dir).is_empty(),
        "processes left after destroy"
    );
}
