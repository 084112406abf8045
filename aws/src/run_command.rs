//! Running a node command ([`crate::node_commands`]) on one of the cluster's instances with
//! SSM Run Command: `SendCommand` with the `AWS-RunShellScript` document to that instance
//! alone (the driver found it by the cluster's id in its VPC), then `GetCommandInvocation`
//! until the invocation ends. A failure names the instance, the node and the tail of the
//! script's stderr.

use std::time::Duration;

use aws_sdk_ssm::types::CommandInvocationStatus;
use tokio::time::Instant;

use crate::error::{api, AwsError, RunCommandFailure};
use crate::node_commands::NodeAction;

/// The document that runs shell lines as root on Linux instances.
pub const DOCUMENT: &str = "AWS-RunShellScript";
/// How often a long wait says what it waits for.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// How much of the script's stderr an error keeps.
const STDERR_TAIL_LINES: usize = 15;
const STDERR_TAIL_CHARS: usize = 1500;

/// Which node on which instance a command is for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub cluster: &'a str,
    pub instance_id: &'a str,
    pub host: &'a str,
    pub node: &'a str,
}

/// How long to wait, and how often to ask.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// `create`, `update` or `delete`: the timeout it comes from.
    pub phase: &'static str,
    pub timeout: Duration,
    pub poll: Duration,
}

/// Sends `script` to the target's instance and waits until it ran. An instance whose SSM agent
/// has not registered yet (it is booting) is asked again until `wait.timeout`.
pub async fn run(
    ssm: &aws_sdk_ssm::Client,
    target: Target<'_>,
    action: NodeAction,
    script: &str,
    wait: Wait,
) -> Result<(), AwsError> {
    let deadline = Instant::now() + wait.timeout;
    let poll = wait
        .poll
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    let mut progress = |doing: &str| {
        if Instant::now() >= next_progress {
            next_progress = Instant::now() + PROGRESS_EVERY;
            tracing::info!(
                instance_id = target.instance_id,
                host = target.host,
                node = target.node,
                %action,
                "{doing}"
            );
        }
    };
    let timed_out = |what: &str| AwsError::Timeout {
        phase: wait.phase,
        what: format!(
            "{action} of node {} on instance {} (host {}): {what}",
            target.node, target.instance_id, target.host
        ),
        after: wait.timeout,
    };
    let seconds = wait.timeout.as_secs().max(30);
    let command_id = loop {
        let sent = ssm
            .send_command()
            .document_name(DOCUMENT)
            .instance_ids(target.instance_id)
            .comment(comment(target, action))
            .parameters("commands", script.lines().map(str::to_string).collect())
            .parameters("executionTimeout", vec![seconds.to_string()])
            .timeout_seconds(i32::try_from(seconds).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(api("ssm:SendCommand"));
        match sent {
            Ok(out) => {
                break out
                    .command()
                    .and_then(|c| c.command_id())
                    .map(str::to_string)
                    .ok_or(AwsError::MissingField {
                        operation: "ssm:SendCommand",
                        field: "Command.CommandId",
                    })?;
            }
            // The agent registers a while after boot.
            Err(e) if e.code() == Some("InvalidInstanceId") && Instant::now() < deadline => {
                progress("the instance's SSM agent is not online yet; asking again");
                tokio::time::sleep(poll).await;
            }
            Err(e) if e.code() == Some("InvalidInstanceId") => {
                return Err(timed_out(
                    "the instance's SSM agent never came online (does its instance profile carry AmazonSSMManagedInstanceCore, and can it reach the SSM endpoints?)",
                ))
            }
            Err(e) => return Err(e),
        }
    };
    tracing::debug!(
        command_id,
        instance_id = target.instance_id,
        node = target.node,
        %action,
        "run command sent"
    );
    loop {
        let answer = ssm
            .get_command_invocation()
            .command_id(&command_id)
            .instance_id(target.instance_id)
            .send()
            .await
            .map_err(api("ssm:GetCommandInvocation"));
        match answer {
            Ok(invocation) => match invocation.status() {
                Some(CommandInvocationStatus::Success) => return Ok(()),
                Some(
                    CommandInvocationStatus::Pending
                    | CommandInvocationStatus::InProgress
                    | CommandInvocationStatus::Delayed
                    | CommandInvocationStatus::Cancelling,
                )
                | None => progress("waiting for the run command to finish"),
                Some(status) => {
                    return Err(AwsError::RunCommand(Box::new(RunCommandFailure {
                        instance_id: target.instance_id.to_string(),
                        host: target.host.to_string(),
                        node: target.node.to_string(),
                        action: action.as_str(),
                        command_id,
                        status: format!(
                            "{} ({})",
                            status.as_str(),
                            invocation.status_details().unwrap_or("no details")
                        ),
                        stderr_tail: stderr_tail(
                            invocation.standard_error_content().unwrap_or_default(),
                        ),
                    })))
                }
            },
            // The invocation shows up shortly after SendCommand.
            Err(e) if e.code() == Some("InvocationDoesNotExist") => {
                progress("waiting for the run command to reach the instance")
            }
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(timed_out(&format!(
                "run command {command_id} did not finish"
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

/// SendCommand's comment (at most 100 characters): shown in the SSM console.
fn comment(target: Target<'_>, action: NodeAction) -> String {
    let text = format!("redisha {} {action} node {}", target.cluster, target.node);
    text.chars().take(100).collect()
}

/// The last lines of a script's stderr, bounded.
pub fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
    let skip = tail.chars().count().saturating_sub(STDERR_TAIL_CHARS);
    tail.chars().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stderr_tail_keeps_the_last_lines() {
        let long: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(&long);
        assert!(tail.starts_with("line 25\n"), "{tail}");
        assert!(tail.ends_with("line 39"), "{tail}");
        let wide = "x".repeat(5000);
        assert_eq!(stderr_tail(&wide).len(), STDERR_TAIL_CHARS);
        assert_eq!(stderr_tail(""), "");
    }

    #[test]
    fn the_comment_fits_ssm() {
        let node = "n".repeat(200);
        let target = Target {
            cluster: "shop",
            instance_id: "i-1",
            host: "a-1",
            node: &node,
        };
        assert_eq!(comment(target, NodeAction::Start).chars().count(), 100);
    }
}
