//! The driver a drill runs through, which decides what it can break: processes and packets on
//! this machine (local), or EC2 instances (aws).

use std::path::Path;

use redisha_aws::AwsDriver;
use redisha_cluster::{Driver, LocalDriver};

use crate::error::{DrillError, Result};
use crate::failure::Action;

#[derive(Clone, Copy)]
pub enum DrillDriver<'a> {
    /// Crash, hang, partition: signals to the nodes' processes, nftables rules.
    Local(&'a LocalDriver),
    /// Stop: the hit hosts' instances stopped and started again. `record_dir` keeps the record
    /// of what was stopped (the CLI: the Terraform working directory).
    Aws {
        driver: &'a AwsDriver,
        record_dir: &'a Path,
    },
}

impl<'a> From<&'a LocalDriver> for DrillDriver<'a> {
    fn from(driver: &'a LocalDriver) -> Self {
        DrillDriver::Local(driver)
    }
}

impl DrillDriver<'_> {
    /// The cluster crate's driver, for the operator.
    pub fn driver(&self) -> &dyn Driver {
        match self {
            DrillDriver::Local(d) => *d,
            DrillDriver::Aws { driver, .. } => *driver,
        }
    }

    /// Refuses a failure this driver cannot cause, saying which it can.
    pub fn check(&self, action: Action) -> Result<()> {
        match (self, action) {
            (DrillDriver::Local(_), Action::Stop) => Err(DrillError::Failure(
                "stop is the aws driver's failure (its EC2 instances); on the local driver crash a --zone or --host".into(),
            )),
            (DrillDriver::Aws { .. }, Action::Stop) | (DrillDriver::Local(_), _) => Ok(()),
            (DrillDriver::Aws { .. }, other) => Err(DrillError::Failure(aws_refusal(other))),
        }
    }
}

/// Why `action` cannot run on the aws driver, and what to run instead. Signals and nftables
/// rules act on this machine: the aws driver's nodes run on EC2 instances.
pub fn aws_refusal(action: Action) -> String {
    let instead = "on the aws driver run `redisha-drill stop --zone ZONE` (or `--host HOST`): StopInstances of the cluster's instances there, started again after --seconds";
    match action {
        Action::Crash => format!(
            "`crash` sends SIGKILL to node processes on this machine, and the aws driver's nodes run on EC2 instances; {instead}, which is a crash of the whole instance"
        ),
        Action::Hang => format!(
            "`hang` (SIGSTOP) needs the node processes on this machine, and the aws driver's nodes run on EC2 instances; it has no aws equivalent in the drill; {instead}"
        ),
        Action::Partition => format!(
            "`partition` installs nftables rules on this machine, which cannot cut EC2 instances from each other; {instead}, or cut the zone's subnets yourself (a network ACL) and watch with `redisha status`"
        ),
        Action::Stop => "stop is the aws driver's own drill".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redisha_cluster::LocalConfig;

    #[test]
    fn the_local_driver_refuses_stop_and_takes_its_own_failures() {
        let driver = LocalDriver::new(LocalConfig::new("/nonexistent/redisha-drill-test"));
        let local = DrillDriver::from(&driver);
        let refused = local.check(Action::Stop).expect_err("stop refused");
        assert!(refused.to_string().contains("aws driver"), "{refused}");
        for action in [Action::Crash, Action::Hang, Action::Partition] {
            assert!(local.check(action).is_ok(), "{action:?}");
        }
    }

    #[test]
    fn aws_refusals_name_the_failure_and_the_stop_to_use_instead() {
        for (action, says) in [
            (Action::Crash, "SIGKILL"),
            (Action::Hang, "SIGSTOP"),
            (Action::Partition, "nftables"),
        ] {
            let refusal = aws_refusal(action);
            assert!(
                refusal.starts_with(&format!("`{}`", action.as_str())),
                "{refusal}"
            );
            assert!(refusal.contains(says), "{refusal}");
            assert!(refusal.contains("redisha-drill stop --zone"), "{refusal}");
        }
    }
}
