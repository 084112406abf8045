//! How long a drill watches and how long it waits for the heal, by failure kind. A process
//! failure on this machine takes hold the moment the signal or the rule lands and heals in
//! seconds; an EC2 instance takes seconds to a minute to shut down after StopInstances
//! answers, and minutes to boot after StartInstances. One fixed window would cut an aws drill
//! short (the master not even down yet: the report would disagree with the plan) or make the
//! local drills wait for nothing.

use std::time::Duration;

use crate::failure::Action;

/// What a failover needs after the failure takes hold: cluster-node-timeout until the master
/// is flagged failed, then the replica's election (under a second at rank 0), with room to
/// spare. The local drills' window.
pub fn failover_window(node_timeout_ms: u64) -> Duration {
    Duration::from_millis(2 * node_timeout_ms + 3000)
}

/// On EC2 the nodes keep serving while the instance's OS shuts down after StopInstances
/// answered (systemd stops redis-server; a master's SHUTDOWN first waits up to
/// shutdown-timeout, 10 s, for its replicas): seconds, up to about a minute.
pub const EC2_SHUTDOWN: Duration = Duration::from_secs(60);

/// From StartInstances' answer until the instance runs and its units start: EC2 takes tens of
/// seconds to a few minutes to boot an instance (more with a large encrypted volume), then
/// cloud-init and systemd.
pub const EC2_BOOT: Duration = Duration::from_secs(300);

/// The window when none is given: the failover window, and on aws the OS shutdown before it
/// (the failure counts from StopInstances' answer, while the nodes may still serve).
pub fn default_window_for(action: Action, node_timeout_ms: u64) -> Duration {
    match action {
        Action::Stop => EC2_SHUTDOWN + failover_window(node_timeout_ms),
        Action::Crash | Action::Hang | Action::Partition => failover_window(node_timeout_ms),
    }
}

/// A node that comes back waits its rejoin delay before it starts (2 x cluster-node-timeout
/// + 5 s, so that an old master rejoins as a replica of the one that replaced it).
fn rejoin_delay(node_timeout_ms: u64) -> Duration {
    Duration::from_millis(2 * node_timeout_ms + 5000)
}

/// How long the drill waits, after the heal, for `cluster_state:ok` on every node when none is
/// given. Local: a resumed process or a removed rule is back within seconds; 60 s is plenty.
/// aws: the heal returns once the instances run, then they boot, and the nodes start after
/// their rejoin delay.
pub fn default_heal_timeout(action: Action, node_timeout_ms: u64) -> Duration {
    match action {
        Action::Stop => EC2_BOOT + rejoin_delay(node_timeout_ms) + Duration::from_secs(60),
        Action::Crash | Action::Hang | Action::Partition => Duration::from_secs(60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_stop_gets_the_shutdown_and_the_boot_on_top_of_the_failover() {
        let local = default_window_for(Action::Crash, 5000);
        assert_eq!(local, Duration::from_secs(13));
        assert_eq!(default_window_for(Action::Hang, 5000), local);
        assert_eq!(
            default_window_for(Action::Stop, 5000),
            local + EC2_SHUTDOWN,
            "the nodes serve while the OS shuts down"
        );
        assert_eq!(
            default_heal_timeout(Action::Partition, 5000),
            Duration::from_secs(60)
        );
        // Boot, then the 15 s rejoin delay at 5000 ms, then a minute to converge.
        assert_eq!(
            default_heal_timeout(Action::Stop, 5000),
            Duration::from_secs(300 + 15 + 60)
        );
    }
}
