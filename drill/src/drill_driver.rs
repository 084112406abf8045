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
            (DrillDriver::Aws { .. }, other) => Err(DrillError::Failure(format!(
                "the aws driver's drill is `stop` (StopInstances of a zone's or a host's instances); {} is a local-driver drill",
                other.as_str()
            ))),
        }
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
}
