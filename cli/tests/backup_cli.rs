//! `redisha backup` as a cron job sees it: exit codes and messages, and the password never in
//! what it prints. (Backups of live clusters: cluster/tests/backup.rs, aws/tests/backup_s3.rs.)

use std::process::Command;

fn backup(args: &[&str], password: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redisha-backup"));
    cmd.args(args).env_remove("REDISHA_PASSWORD");
    if let Some(p) = password {
        cmd.env("REDISHA_PASSWORD", p);
    }
    cmd.output().expect("run redisha-backup")
}

#[test]
fn a_cluster_that_does_not_answer_fails_with_its_address_and_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().to_string_lossy().into_owned();
    // Nothing listens there (the tests' own loopback range).
    let out = backup(
        &[
            "--cluster-id",
            "0123456789abcdef",
            "--endpoint",
            "127.129.0.1:9799",
            "--destination",
            &dest,
        ],
        Some("cron-Secret-1"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("127.129.0.1:9799"), "{stderr}");
    assert!(
        !stderr.contains("cron-Secret-1")
            && !String::from_utf8_lossy(&out.stdout).contains("cron-Secret-1")
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing is written"
    );
}

#[test]
fn bad_arguments_are_refused_before_anything_is_contacted() {
    let id = "0123456789abcdef";
    for (cluster_id, destination, retain, expected) in [
        ("not-an-id", "/tmp/x", "1", "16 hex digits"),
        (id, "/tmp/x", "0", "--retain"),
        (id, "s3://", "1", "no bucket"),
    ] {
        let args = [
            "--cluster-id",
            cluster_id,
            "--endpoint",
            "127.129.0.1:9799",
            "--destination",
            destination,
            "--retain",
            retain,
        ];
        let out = backup(&args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
