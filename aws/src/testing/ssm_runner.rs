//! A test-only SSM agent: it executes, for real, on this machine, the Run Command scripts the
//! driver sends to moto (which only records them and reports every invocation "Success"), and
//! with [`SsmRunner::booting`] the node setup of each new instance's user data, as cloud-init
//! would at first boot. So the text the product sends is the text that runs.
//!
//! Each emulated instance is a [`Machine`]: a throwaway mount namespace (`unshare --mount
//! --propagation private`, held open by one `sleep` process) where `/etc`, `/var/lib`,
//! `/usr/local` and `/run` are overlays whose writes land in the machine's temp dir, so the
//! scripts write `/etc/redisha`, `/etc/systemd/system`, `/var/lib/redisha`... of their own and
//! nothing of this machine. In it:
//!
//! - `systemctl` is a shim first on PATH ([`SYSTEMCTL`]): it reads the unit the script wrote,
//!   runs its `ExecStartPre=` lines and starts its `ExecStart=` command in the background,
//!   recording the pid in the machine's `pids/`; stop ends that pid (TERM, then KILL), enable
//!   and disable make and remove the `multi-user.target.wants` link. Everything runs as root.
//! - `cloud-init status --wait` is a shim that says the first boot is done.
//! - `/usr/local/sbin/redisha-password` is a stub ([`password_stub`]): the product's helper
//!   signs an SSM request with the instance profile's credentials from the instance metadata
//!   service, which does not exist here. The stub reads the same parameter (named in
//!   `/etc/redisha/password-parameter`, which the node setup writes) from moto's SSM and writes
//!   `/etc/redisha/auth.conf` as the product's helper does, before every node start.
//! - the nodes bind to their loopback stand-ins: the driver renders the node setup with the
//!   stand-in address and port of the test-only address map. Nothing contacts moto's invented
//!   private addresses, nor the metadata service.
//!
//! Moto's StopInstances and StartInstances only flip the instance's state; the runner makes
//! them real: a stopped instance's processes get SIGKILL at once (the power going off: nothing
//! finishes what it was doing), and when it runs again it boots: `/run` is emptied (a tmpfs on
//! a real instance) and its enabled units start (not its user data: cloud-init runs that at the
//! first boot only), so its nodes come back from their config, nodes.conf and data as
//! systemd would start them, after the unit's rejoin delay.
//!
//! Processes are ended by pid (the shim's pid files and the holder's pid), never by name, when
//! an instance stops or terminates in moto and when the runner drops (also when a test fails).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::user_data;

/// What the runner ran: a Run Command on one instance, or a first boot.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The command's id, or `first-boot`.
    pub command_id: String,
    pub instance_id: String,
    /// The command's comment (`redisha <cluster> <action> node <name>`), or `first-boot`.
    pub comment: String,
    /// The script's exit code (-1 when it could not run).
    pub code: i32,
    pub stderr: String,
}

/// The directories of this machine each emulated instance has its own copy of (overlays).
const OVERLAID: [&str; 4] = ["/etc", "/var/lib", "/usr/local", "/run"];

/// One emulated instance: a mount namespace held open by a `sleep`, and its temp dir.
pub struct Machine {
    holder: Child,
    dir: tempfile::TempDir,
    /// The namespace's identity (`mnt:[<inode>]`): what proves that a pid the shim recorded
    /// is still one of this machine's processes, and not a reused pid.
    namespace: Option<std::path::PathBuf>,
}

impl Machine {
    fn new(instance_id: &str, moto_port: u16) -> std::io::Result<Machine> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("redisha-ssm-{instance_id}-"))
            .tempdir()?;
        let root = dir.path();
        for sub in ["bin", "pids", "log", "commands", "boot"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        write_executable(&root.join("bin/systemctl"), SYSTEMCTL)?;
        write_executable(&root.join("bin/cloud-init"), CLOUD_INIT)?;
        write_executable(&root.join("redisha-password"), &password_stub(moto_port))?;
        let mut mounts = String::new();
        for (i, path) in OVERLAID.iter().enumerate() {
            let upper = root.join(format!("upper/{i}"));
            let work = root.join(format!("work/{i}"));
            std::fs::create_dir_all(&upper)?;
            std::fs::create_dir_all(&work)?;
            mounts.push_str(&format!(
                "mount -t overlay overlay -o lowerdir={path},upperdir={},workdir={} {path}\n",
                upper.display(),
                work.display()
            ));
        }
        let script = format!(
            "set -e\n{mounts}mkdir -p /usr/local/sbin\ninstall -m 0700 {stub} /usr/local/sbin/redisha-password\necho ready\nexec sleep infinity\n",
            stub = root.join("redisha-password").display()
        );
        let mut holder = unshare()
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        if let Some(out) = holder.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != "ready" {
            let _ = holder.kill();
            let out = holder.wait_with_output()?;
            return Err(std::io::Error::other(format!(
                "the mount namespace of {instance_id} did not come up: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let namespace = mount_namespace(holder.id());
        Ok(Machine {
            holder,
            dir,
            namespace,
        })
    }

    /// Runs `script` with `sh` as root inside the machine, as the SSM agent's
    /// `aws:runShellScript` does, with the shims first on PATH.
    pub fn run(&self, script: &str) -> std::io::Result<Output> {
        let root = self.dir.path();
        let file = tempfile::Builder::new()
            .prefix("command-")
            .suffix(".sh")
            .tempfile_in(root.join("commands"))?;
        std::fs::write(file.path(), script)?;
        Command::new("nsenter")
            .arg("--target")
            .arg(self.holder.id().to_string())
            .args(["--mount", "--", "env", "-i"])
            .arg(format!(
                "PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                root.join("bin").display()
            ))
            .arg("HOME=/root")
            .arg(format!("REDISHA_MACHINE={}", root.display()))
            .arg("sh")
            .arg(file.path())
            .stdin(Stdio::null())
            .output()
    }

    /// Whether `path` (as the machine sees it) exists.
    pub fn exists(&self, path: &str) -> bool {
        self.run(&format!("test -e '{path}'"))
            .is_ok_and(|o| o.status.success())
    }

    /// The content of `path` as the machine sees it (empty if it cannot be read).
    pub fn read(&self, path: &str) -> String {
        self.run(&format!("cat '{path}'"))
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The pid the systemctl shim recorded for `unit` (e.g. `redisha-node@9500`), if its
    /// process is alive.
    pub fn pid_of(&self, unit: &str) -> Option<u32> {
        let text =
            std::fs::read_to_string(self.dir.path().join(format!("pids/{unit}.pid"))).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// Every process the shim started that still runs: (unit, pid).
    pub fn running(&self) -> Vec<(String, u32)> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("pids")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let unit = name.strip_suffix(".pid")?.to_string();
                let pid = std::fs::read_to_string(entry.path())
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                (alive(pid) && self.owns(pid)).then_some((unit, pid))
            })
            .collect()
    }

    /// Ends every process the shim started (by its recorded pid): the instance stopped or
    /// terminated.
    pub fn halt(&self) {
        self.end_recorded(end_pid);
    }

    /// Ends every pid the shim recorded with `end` (nodes, sentinels and metrics exporters
    /// alike: an instance that stops runs nothing), and forgets them. A pid is ended only while
    /// it is still in this machine's mount namespace, so a pid reused by another process is
    /// left alone.
    fn end_recorded(&self, end: fn(u32)) {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("pids")) else {
            return;
        };
        for entry in entries.flatten() {
            let pid = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            if let Some(pid) = pid.filter(|&p| self.owns(p)) {
                end(pid);
            }
            let _ = std::fs::remove_file(entry.path());
        }
    }

    /// Whether `pid` is a process of this machine (in its mount namespace).
    fn owns(&self, pid: u32) -> bool {
        self.namespace.is_some() && mount_namespace(pid) == self.namespace
    }

    /// The power going off (the instance stopped): SIGKILL of every process the shim
    /// started, as nothing on the instance gets to finish what it was doing.
    pub fn power_off(&self) {
        self.end_recorded(kill_pid);
    }

    /// A later boot (the instance started again): `/run` starts empty (a tmpfs on a real
    /// instance) and every enabled unit starts, each in the background as systemd starts
    /// them side by side: a node's unit waits its rejoin delay before redis-server starts.
    fn boot(&self) -> std::io::Result<Output> {
        self.run(BOOT)
    }

    /// The first boot: writes the user data's files (but the password helper, see the module
    /// doc) and runs its node setup. The install script (packages, data volume) is not run:
    /// redis-server is installed here, and there is no volume.
    fn first_boot(&self, document: &str) -> std::io::Result<Output> {
        let mut script = String::from("set -eu\n");
        for (i, (path, content)) in user_data::files(document).into_iter().enumerate() {
            if path == user_data::PASSWORD_SCRIPT {
                continue;
            }
            let staged = self.dir.path().join(format!("boot/{i}"));
            std::fs::write(&staged, content)?;
            let mode = if path.starts_with("/usr/local/sbin/") {
                "0700"
            } else {
                "0600"
            };
            script.push_str(&format!(
                "install -D -m {mode} {} {path}\n",
                staged.display()
            ));
        }
        script.push_str(&format!("sh {}\n", user_data::NODE_SETUP_SCRIPT));
        self.run(&script)
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.halt();
        // Child::kill signals the holder's pid only; the namespace goes with it.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// `unshare` for a private mount namespace: as root directly, else in a user namespace of
/// our own (`-r`).
fn unshare() -> Command {
    let mut cmd = Command::new("unshare");
    // The effective uid, from /proc (no libc here).
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        cmd.arg("--map-root-user");
    }
    cmd.args(["--mount", "--propagation", "private"]);
    cmd
}

fn write_executable(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::File::create(path)?;
    f.write_all(text.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The mount namespace of `pid` (`mnt:[<inode>]`), if it runs and can be read.
fn mount_namespace(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// SIGKILL of `pid` (a process of the machine, see [`Machine::end_recorded`]).
fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// Ends `pid` (TERM, then KILL after 5 s; a process of the machine, see
/// [`Machine::end_recorded`]).
fn end_pid(pid: u32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// What the runner's thread and the test share.
#[derive(Default)]
struct Shared {
    machines: BTreeMap<String, Arc<Machine>>,
    ran: Vec<Ran>,
    /// Command ids taken up (run or skipped), and those whose every invocation finished.
    seen: BTreeSet<String>,
    done: BTreeSet<String>,
    booted: BTreeSet<String>,
    /// Instances stopped (their processes killed) and not started again yet.
    powered_off: BTreeSet<String>,
    /// Problems of the runner itself (not of the scripts).
    trouble: Vec<String>,
}

/// The runner: a thread polling moto (ListCommands, DescribeInstances) and running what it
/// finds, one script at a time, in the order sent. Stops and ends every process it started
/// when dropped.
pub struct SsmRunner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Mutex<Shared>>,
}

impl SsmRunner {
    /// Runs the commands sent to moto on `moto_port`.
    pub fn start(moto_port: u16) -> SsmRunner {
        Self::spawn(moto_port, None)
    }

    /// Also first-boots every running instance of `cluster` (its `redisha:cluster` tag) that
    /// shows up: the node setup of its user data runs, as cloud-init would.
    pub fn booting(moto_port: u16, cluster: &str) -> SsmRunner {
        Self::spawn(moto_port, Some(cluster.to_string()))
    }

    fn spawn(moto_port: u16, boot: Option<String>) -> SsmRunner {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let thread = {
            let stop = stop.clone();
            let shared = shared.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let client = rt.block_on(super::client_at(moto_port));
                while !stop.load(Ordering::SeqCst) {
                    rt.block_on(poll_once(&client, moto_port, boot.as_deref(), &shared));
                    std::thread::sleep(Duration::from_millis(150));
                }
            })
        };
        SsmRunner {
            stop,
            thread: Some(thread),
            shared,
        }
    }

    /// Everything run so far.
    pub fn ran(&self) -> Vec<Ran> {
        self.lock().ran.clone()
    }

    /// The runner's own problems (a namespace that did not come up, moto unreachable).
    pub fn trouble(&self) -> Vec<String> {
        self.lock().trouble.clone()
    }

    /// What ran and how it ended, with the end of every machine's node logs: for a failing
    /// test to print.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for ran in self.ran() {
            out.push_str(&format!(
                "{} {} on {}: exit {}{}\n",
                ran.command_id,
                ran.comment,
                ran.instance_id,
                ran.code,
                if ran.stderr.is_empty() {
                    String::new()
                } else {
                    format!("\n  stderr: {}", ran.stderr.trim_end())
                }
            ));
        }
        for trouble in self.trouble() {
            out.push_str(&format!("runner: {trouble}\n"));
        }
        let machines: Vec<(String, Arc<Machine>)> = self
            .lock()
            .machines
            .iter()
            .map(|(id, m)| (id.clone(), m.clone()))
            .collect();
        for (id, machine) in machines {
            let Ok(entries) = std::fs::read_dir(machine.dir.path().join("log")) else {
                continue;
            };
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
                out.push_str(&format!(
                    "{id} {}:\n    {tail}\n",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
        out
    }

    /// Every process the shim started on any machine that still runs: (instance, unit, pid).
    pub fn running(&self) -> Vec<(String, String, u32)> {
        let machines: Vec<(String, Arc<Machine>)> = self
            .lock()
            .machines
            .iter()
            .map(|(id, m)| (id.clone(), m.clone()))
            .collect();
        machines
            .into_iter()
            .flat_map(|(id, m)| {
                m.running()
                    .into_iter()
                    .map(move |(unit, pid)| (id.clone(), unit, pid))
            })
            .collect()
    }

    /// The machine of `instance_id`, once a command or its first boot made it.
    pub fn machine(&self, instance_id: &str) -> Option<Arc<Machine>> {
        self.lock().machines.get(instance_id).cloned()
    }

    /// Waits (at most `timeout`) until every command moto holds now has run, and every running
    /// instance to boot has booted. Moto reports commands done at once, so a test waits here
    /// before it looks at what a command did.
    pub fn settle(&self, moto_port: u16, timeout: Duration) {
        // On a thread of its own: callers may be inside a tokio runtime.
        let sent: Vec<String> = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let client = rt.block_on(super::client_at(moto_port));
            rt.block_on(client.ssm.list_commands().send())
                .map(|out| {
                    out.commands()
                        .iter()
                        .filter_map(|c| c.command_id().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        })
        .join()
        .unwrap_or_default();
        let deadline = Instant::now() + timeout;
        while !sent.iter().all(|id| self.lock().done.contains(id)) {
            assert!(
                Instant::now() < deadline,
                "the SSM runner did not run every command within {timeout:?}: {:?}",
                self.trouble()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for SsmRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The machines end their processes as they drop.
        let machines = std::mem::take(&mut self.lock().machines);
        drop(machines);
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The machine of `instance_id`, made on first use.
fn machine_of(
    shared: &Mutex<Shared>,
    instance_id: &str,
    moto_port: u16,
) -> Result<Arc<Machine>, String> {
    if let Some(m) = lock(shared).machines.get(instance_id) {
        return Ok(m.clone());
    }
    let machine =
        Arc::new(Machine::new(instance_id, moto_port).map_err(|e| format!("{instance_id}: {e}"))?);
    lock(shared)
        .machines
        .insert(instance_id.to_string(), machine.clone());
    Ok(machine)
}

fn record(shared: &Mutex<Shared>, ran: Ran, result: std::io::Result<Output>) {
    let ran = match result {
        Ok(out) => Ran {
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            ..ran
        },
        Err(e) => Ran {
            stderr: e.to_string(),
            ..ran
        },
    };
    if ran.code != 0 {
        eprintln!(
            "SSM runner: {} on {} exited {}: {}",
            ran.comment, ran.instance_id, ran.code, ran.stderr
        );
    }
    lock(shared).ran.push(ran);
}

/// One round: instances first (boot the new, halt the stopped), then the commands not run yet.
async fn poll_once(
    client: &crate::AwsClients,
    moto_port: u16,
    boot: Option<&str>,
    shared: &Mutex<Shared>,
) {
    let commands = match client.ssm.list_commands().send().await {
        Ok(out) => out.commands().to_vec(),
        Err(e) => {
            lock(shared).trouble.push(format!("ListCommands: {e}"));
            return;
        }
    };
    let instances = match client.describe_instances().send().await {
        Ok(out) => out
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().cloned())
            .collect::<Vec<_>>(),
        Err(e) => {
            lock(shared).trouble.push(format!("DescribeInstances: {e}"));
            return;
        }
    };
    let running: BTreeSet<String> = instances
        .iter()
        .filter(|i| {
            i.state().and_then(|s| s.name())
                == Some(&aws_sdk_ec2::types::InstanceStateName::Running)
        })
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    let stopped: BTreeSet<String> = instances
        .iter()
        .filter(|i| {
            matches!(
                i.state().and_then(|s| s.name()),
                Some(
                    aws_sdk_ec2::types::InstanceStateName::Stopping
                        | aws_sdk_ec2::types::InstanceStateName::Stopped
                )
            )
        })
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    // A stopped instance's processes die at once, as at a power-off (moto only flips the
    // state); a terminated one's end as it goes.
    let gone: Vec<(String, Arc<Machine>)> = lock(shared)
        .machines
        .iter()
        .filter(|(id, _)| !running.contains(*id))
        .map(|(id, m)| (id.clone(), m.clone()))
        .collect();
    for (id, machine) in gone {
        if stopped.contains(&id) {
            if lock(shared).powered_off.insert(id) {
                machine.power_off();
            }
        } else {
            machine.halt();
        }
    }
    // A stopped instance started again boots: its enabled units start (not its user data,
    // which cloud-init runs at the first boot only).
    let rebooted: Vec<(String, Arc<Machine>)> = lock(shared)
        .machines
        .iter()
        .filter(|(id, _)| running.contains(*id))
        .map(|(id, m)| (id.clone(), m.clone()))
        .collect();
    for (id, machine) in rebooted {
        if !lock(shared).powered_off.remove(&id) {
            continue;
        }
        let ran = Ran {
            command_id: "boot".into(),
            instance_id: id.clone(),
            comment: "boot".into(),
            code: -1,
            stderr: String::new(),
        };
        record(shared, ran, machine.boot());
    }
    if let Some(cluster) = boot {
        for instance in &instances {
            let Some(id) = instance.instance_id() else {
                continue;
            };
            let of_cluster = instance.tags().iter().any(|t| {
                t.key() == Some(crate::instances::CLUSTER_TAG) && t.value() == Some(cluster)
            });
            if !of_cluster || !running.contains(id) || lock(shared).booted.contains(id) {
                continue;
            }
            lock(shared).booted.insert(id.to_string());
            let document = match super::user_data(client, id).await {
                Ok(d) => d,
                Err(e) => {
                    lock(shared).trouble.push(e);
                    continue;
                }
            };
            let ran = Ran {
                command_id: "first-boot".into(),
                instance_id: id.to_string(),
                comment: "first-boot".into(),
                code: -1,
                stderr: String::new(),
            };
            match machine_of(shared, id, moto_port) {
                Ok(machine) => record(shared, ran, machine.first_boot(&document)),
                Err(e) => lock(shared).trouble.push(e),
            }
        }
    }
    for command in commands {
        let Some(id) = command.command_id().map(str::to_string) else {
            continue;
        };
        if !lock(shared).seen.insert(id.clone()) {
            continue;
        }
        if command.document_name() != Some(crate::run_command::DOCUMENT) {
            lock(shared).done.insert(id);
            continue;
        }
        let script = command
            .parameters()
            .and_then(|p| p.get("commands"))
            .map(|lines| lines.join("\n"))
            .unwrap_or_default();
        // moto lists every instance of the region on a command sent to one (a command without
        // Targets gets them all); the script names the one it was sent to.
        let named = crate::node_commands::addressed_to(&script).map(str::to_string);
        for instance_id in command
            .instance_ids()
            .iter()
            .filter(|i| named.as_ref().is_none_or(|n| n == *i))
        {
            let ran = Ran {
                command_id: id.clone(),
                instance_id: instance_id.clone(),
                comment: command.comment().unwrap_or_default().to_string(),
                code: -1,
                stderr: String::new(),
            };
            if !running.contains(instance_id) {
                // The real agent never gets it: nothing runs.
                record(
                    shared,
                    ran,
                    Err(std::io::Error::other("the instance is not running")),
                );
                continue;
            }
            match machine_of(shared, instance_id, moto_port) {
                Ok(machine) => record(shared, ran, machine.run(&script)),
                Err(e) => lock(shared).trouble.push(e),
            }
        }
        lock(shared).done.insert(id);
    }
}

/// The stand-in for `/usr/local/sbin/redisha-password` (see the module doc): the product's
/// helper with its SSM transport (SigV4 with the instance profile's credentials from the
/// metadata service) swapped for one that asks moto's SSM on loopback. Everything else (the
/// files it writes, when it waits, what it keeps) is the product's text.
pub fn password_stub(moto_port: u16) -> String {
    const BEGIN: &str = "# SSM transport\n";
    const END: &str = "# end of SSM transport\n";
    let product = user_data::FETCH_PASSWORD;
    let (Some(start), Some(end)) = (product.find(BEGIN), product.find(END)) else {
        panic!("the password helper lost its SSM transport markers");
    };
    let transport = format!(
        r#"# SSM transport (test stub: moto on loopback)
def get_parameter(name):
    req = urllib.request.Request(
        "http://127.0.0.1:{moto_port}/",
        data=json.dumps({{"Name": name, "WithDecryption": True}}).encode(),
        headers={{"Content-Type": "application/x-amz-json-1.1",
                 "X-Amz-Target": "AmazonSSM.GetParameter",
                 "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=0"}})
    return json.loads(urllib.request.urlopen(req, timeout=10).read())["Parameter"]["Value"]
"#
    );
    format!(
        "{}{transport}{}",
        &product[..start],
        &product[end + END.len()..]
    )
}

/// A later boot (see [`Machine::boot`]).
const BOOT: &str = r#"set -eu
find /run -mindepth 1 -maxdepth 1 -exec rm -rf {} +
for link in /etc/systemd/system/multi-user.target.wants/*.service; do
  [ -e "$link" ] || continue
  unit=$(basename "$link" .service)
  systemctl start "$unit" </dev/null >>"$REDISHA_MACHINE/log/boot.log" 2>&1 &
done
"#;

/// Prints what the runner ran, and the processes' logs, when the test holding it fails:
/// `let _report = ReportOnFailure(&runner);`.
pub struct ReportOnFailure<'a>(pub &'a SsmRunner);

impl Drop for ReportOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("SSM runner:\n{}", self.0.report());
        }
    }
}

/// The `cloud-init` shim: the first boot is always done here.
const CLOUD_INIT: &str = "#!/bin/sh\necho 'status: done'\n";

/// The `systemctl` shim (see the module doc).
pub const SYSTEMCTL: &str = r#"#!/bin/sh
# Test shim of systemctl: runs a unit's ExecStartPre= and ExecStart= lines, by pid file.
set -eu
M="$REDISHA_MACHINE"
now=no
verb=""
units=""
for a in "$@"; do
  case "$a" in
    --now) now=yes ;;
    -*) ;;
    *) if [ -z "$verb" ]; then verb="$a"; else units="$units ${a%.service}"; fi ;;
  esac
done
unit_file() {
  case "$1" in
    *@*) echo "/etc/systemd/system/${1%%@*}@.service" ;;
    *) echo "/etc/systemd/system/$1.service" ;;
  esac
}
alive() {
  [ -r "/proc/$1/stat" ] || return 1
  state=$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)
  [ "$state" != Z ]
}
running() {
  [ -f "$M/pids/$1.pid" ] && alive "$(cat "$M/pids/$1.pid")"
}
start() {
  if running "$1"; then return 0; fi
  file=$(unit_file "$1")
  [ -f "$file" ] || { echo "systemctl (test shim): unit $1 not found" >&2; return 5; }
  inst=""
  case "$1" in *@*) inst="${1#*@}" ;; esac
  sed -n 's/^ExecStartPre=[+-]*//p' "$file" | sed "s/%i/$inst/g" > "$M/log/$1.pre"
  while IFS= read -r line; do
    eval "$line" </dev/null
  done < "$M/log/$1.pre"
  # Started meanwhile (a boot's start waits its rejoin delay; a Run Command start does not):
  # systemd would have joined the two starts into one job.
  if running "$1"; then return 0; fi
  cmd=$(sed -n 's/^ExecStart=//p' "$file" | sed "s/%i/$inst/g")
  set -f
  # shellcheck disable=SC2086
  set -- "$1" $cmd
  set +f
  unit="$1"
  shift
  # As systemd, hand the service no descriptor of ours (a test's lock file among them): the
  # ones sh can name are closed.
  ( umask 077; exec "$@" </dev/null >>"$M/log/$unit.log" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- ) &
  echo $! > "$M/pids/$unit.pid"
}
stop() {
  [ -f "$M/pids/$1.pid" ] || return 0
  pid=$(cat "$M/pids/$1.pid")
  if alive "$pid"; then
    kill "$pid" 2>/dev/null || true
    n=0
    while alive "$pid" && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$M/pids/$1.pid"
}
wants=/etc/systemd/system/multi-user.target.wants
for u in $units; do
  case "$verb" in
    start) start "$u" ;;
    stop) stop "$u" ;;
    restart) stop "$u"; start "$u" ;;
    enable)
      mkdir -p "$wants"
      ln -sf "$(unit_file "$u")" "$wants/$u.service"
      if [ "$now" = yes ]; then start "$u"; fi ;;
    disable)
      rm -f "$wants/$u.service"
      if [ "$now" = yes ]; then stop "$u"; fi ;;
    is-active) running "$u" ;;
    *) echo "systemctl (test shim): $verb is not emulated" >&2; exit 1 ;;
  esac
done
exit 0
"#;
