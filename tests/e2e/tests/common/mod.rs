//! End-to-end harness: the real Terraform CLI (`scripts/terraform`) against the provider binary
//! built in the same (dev) profile as the tests. Reused by the cluster resource's tests.
//!
//! - `provider_binary()` builds `terraform-provider-redisha` once per test process (cargo is a
//!   no-op when it is up to date) and returns `target/<profile>/terraform-provider-redisha`,
//!   next to the test executable. `REDISHA_SKIP_PROVIDER_BUILD=1` skips the build (scripts/test
//!   sets it: its workspace build made the binary, with the `test-address-map` feature).
//! - `TfDir::dev(main_tf)` is a temp working dir with the config and a dev_overrides CLI config;
//!   `TfDir::mirror(main_tf)` uses a filesystem_mirror instead, so `terraform init` runs offline.
//! - `run(args)` runs scripts/terraform there with a timeout; `output_json()` parses
//!   `terraform output -json` into `name -> value`.

#![allow(dead_code)]

pub mod clients;
pub mod crash;
pub mod local_cluster;
pub mod sentinel;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One Terraform command may take this long before the test fails (and the process is killed).
pub const TF_TIMEOUT: Duration = Duration::from_secs(180);

/// The repository root (scripts/, examples/, .venv): two levels above this crate, `tests/e2e/`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>`: the directory above `deps/` that holds this test executable.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

pub fn provider_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // The feature the workspace build gets from this crate's dependency on the
            // provider: tests/aws_e2e.rs needs the address map.
            workspace_binary(
                "terraform-provider-redisha",
                "terraform-provider-redisha",
                &["--features", "test-address-map"],
            )
        })
        .clone()
}

/// `redisha-status`, the program `redisha status` runs.
pub fn redisha_status_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| workspace_binary("redisha-cli", "redisha-status", &[]))
        .clone()
}

/// `redisha-drill`, with the test-only address map (tests/drill_aws_e2e.rs reaches the aws
/// driver's nodes at loopback stand-ins), as the workspace build makes it.
pub fn drill_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            workspace_binary(
                "redisha-drill",
                "redisha-drill",
                &["--features", "test-address-map"],
            )
        })
        .clone()
}

/// `target/<profile>/<bin>`, built first (`cargo build -p <package> <args>`) unless
/// REDISHA_SKIP_PROVIDER_BUILD says the workspace build made it already.
fn workspace_binary(package: &str, bin: &str, args: &[&str]) -> PathBuf {
    let path = profile_dir().join(bin);
    if std::env::var_os("REDISHA_SKIP_PROVIDER_BUILD").is_none() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = profile_dir()
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .unwrap_or_else(|| "debug".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root())
            .args(["build", "-p", package])
            .args(args);
        if profile != "debug" {
            cmd.args(["--profile", &profile]);
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p {package} {} failed",
            args.join(" ")
        );
    }
    assert!(path.is_file(), "{bin} missing at {}", path.display());
    path
}

#[derive(Debug)]
pub struct TfOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl TfOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// stdout and stderr together, for asserting on messages wherever Terraform put them.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    #[track_caller]
    pub fn assert_success(&self, what: &str) {
        assert!(
            self.success(),
            "{what} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
    }
}

/// Makes `cmd` start a process group of its own (its id is the child's pid), so that
/// [`kill_process_group`] can end it together with what it started.
///
/// Why: killing a timed-out terraform alone orphans the provider it started, which inherits
/// (and keeps) the shared e2e lock and blocks every later test run. Nodes the provider starts
/// are daemons in sessions of their own, outside the group; the tests' cleanup ends them.
pub fn in_own_process_group(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
}

/// SIGKILLs the process group `child` leads (see [`in_own_process_group`]) by its id, then
/// reaps the child.
pub fn kill_process_group(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `cmd` to completion or kills it, with what it started, after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> TfOutput {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    in_own_process_group(&mut cmd);
    let mut child = cmd.spawn().expect("spawn command");
    // Drain both pipes in threads so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for command") {
            break Some(status);
        }
        if Instant::now() > deadline {
            kill_process_group(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    assert!(
        status.is_some(),
        "command timed out after {timeout:?}: {cmd:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    TfOutput {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    }
}

/// A Terraform working directory for one test, removed when dropped.
pub struct TfDir {
    pub dir: tempfile::TempDir,
    pub cli_config: PathBuf,
    /// Extra environment for every command (e.g. PATH without terraform).
    pub env: Vec<(String, String)>,
}

impl TfDir {
    fn with_config(main_tf: &str) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("redisha-e2e")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("main.tf"), main_tf).expect("write main.tf");
        dir
    }

    fn cli_config(args: &[&str]) {
        let mut cmd = Command::new(workspace_root().join("scripts/tf-cli-config"));
        cmd.args(args);
        let out = run_with_timeout(cmd, Duration::from_secs(30));
        out.assert_success("scripts/tf-cli-config");
    }

    /// dev_overrides: no `terraform init` needed.
    pub fn dev(main_tf: &str) -> TfDir {
        let bin = provider_binary();
        let dir = Self::with_config(main_tf);
        let cli_config = dir.path().join("dev.tfrc");
        Self::cli_config(&[
            "dev",
            cli_config.to_str().expect("utf-8 path"),
            bin.to_str().expect("utf-8 path"),
        ]);
        TfDir {
            dir,
            cli_config,
            env: Vec::new(),
        }
    }

    /// filesystem_mirror: `terraform init` installs the provider from a local mirror, offline.
    pub fn mirror(main_tf: &str) -> TfDir {
        let bin = provider_binary();
        let dir = Self::with_config(main_tf);
        let cli_config = dir.path().join("mirror.tfrc");
        let mirror = dir.path().join("mirror");
        Self::cli_config(&[
            "mirror",
            cli_config.to_str().expect("utf-8 path"),
            mirror.to_str().expect("utf-8 path"),
            bin.to_str().expect("utf-8 path"),
        ]);
        TfDir {
            dir,
            cli_config,
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(workspace_root().join("scripts/terraform"));
        cmd.args(args)
            .current_dir(self.path())
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .env_remove("TF_LOG")
            .env_remove("TF_REATTACH_PROVIDERS");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `terraform ARGS` (add `-no-color` yourself where output is matched).
    pub fn run(&self, args: &[&str]) -> TfOutput {
        run_with_timeout(self.command(args), TF_TIMEOUT)
    }

    /// `terraform output -json` as `name -> value`.
    pub fn output_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let out = self.run(&["output", "-json"]);
        out.assert_success("terraform output -json");
        let parsed: serde_json::Value =
            serde_json::from_str(&out.stdout).expect("output -json is JSON");
        parsed
            .as_object()
            .expect("output -json is an object")
            .iter()
            .map(|(k, v)| (k.clone(), v["value"].clone()))
            .collect()
    }
}

/// The report example's main.tf.
pub fn report_example() -> String {
    std::fs::read_to_string(workspace_root().join("examples/report/main.tf"))
        .expect("examples/report/main.tf")
}

/// The `endpoints` output (host:port of every node) of the cluster in `tf`.
pub fn endpoints(tf: &TfDir) -> Vec<String> {
    tf.output_json()["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The body of `GET /metrics` at `address` (a metrics exporter).
pub fn scrape(address: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("no exporter at {address}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text
}

/// The value of the sample `metric` (without labels) in a scrape.
pub fn sample(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{metric} ")))
        .and_then(|v| v.trim().parse().ok())
}
