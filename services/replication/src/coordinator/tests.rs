//! Named scenarios for the coordinator, driven by a fake clock.

use super::*;

const TIER: Role = Role::Catalog;

struct Scenario {
    coordinator: Coordinator,
    now: Instant,
}

impl Scenario {
    /// A tier of `members` members, nobody heard from yet.
    fn new(members: usize) -> Self {
        let now = Instant::now();
        let config = CoordinatorConfig::default();
        Self {
            coordinator: Coordinator::new(config, &[(TIER, members)], now),
            now,
        }
    }

    fn advance(&mut self, by: Duration) -> Vec<Published> {
        self.now += by;
        self.coordinator.tick(self.now)
    }

    fn beat(&mut self, ordinal: Ordinal, incarnation: u64, phase: Phase) -> Option<Published> {
        self.beat_with_data(ordinal, incarnation, phase, 0, 0)
    }

    fn beat_with_data(
        &mut self,
        ordinal: Ordinal,
        incarnation: u64,
        phase: Phase,
        data_epoch: Epoch,
        applied: LogIndex,
    ) -> Option<Published> {
        let heartbeat = Heartbeat {
            tier: TIER,
            ordinal,
            incarnation,
            peer: format!("127.0.0.1:{}", 9000 + ordinal),
            public: format!("127.0.0.1:{}", 8000 + ordinal),
            phase,
            epoch: self.topology().epoch,
            applied,
            data_epoch,
        };
        self.coordinator.heartbeat(&heartbeat, self.now)
    }

    fn topology(&self) -> Topology {
        self.coordinator
            .topology(TIER, self.now)
            .expect("tier exists")
    }

    fn in_sync(&self) -> Vec<Ordinal> {
        self.topology()
            .members
            .iter()
            .filter(|m| m.in_sync)
            .map(|m| m.ordinal)
            .collect()
    }

    fn add_to_in_sync(&mut self, ordinal: Ordinal) -> Result<Published, AlterError> {
        let topology = self.topology();
        let mut in_sync = self.in_sync();
        in_sync.push(ordinal);
        let request = AlterInSync {
            tier: TIER,
            epoch: topology.epoch,
            primary: topology.primary.expect("a primary"),
            in_sync,
        };
        self.coordinator.alter_in_sync(&request, self.now)
    }

    /// Both members up, 0 primary, 1 added back in sync.
    fn healthy_pair() -> Self {
        let mut s = Self::new(2);
        s.beat(0, 100, Phase::Joining);
        s.beat(1, 200, Phase::Joining);
        s.add_to_in_sync(1).expect("1 joins");
        s
    }

    /// Keeps `alive` heartbeating for `duration`, one beat per interval.
    fn run_for(&mut self, duration: Duration, alive: &[(Ordinal, u64, Phase)]) -> Vec<Published> {
        let mut changes = Vec::new();
        let step = DEFAULT_HEARTBEAT_INTERVAL;
        let mut elapsed = Duration::ZERO;
        while elapsed < duration {
            for &(ordinal, incarnation, phase) in alive {
                changes.extend(self.beat(ordinal, incarnation, phase));
            }
            changes.extend(self.advance(step));
            elapsed += step;
        }
        changes
    }
}

#[test]
fn bootstrap_waits_for_every_member_then_picks_the_lowest() {
    let mut s = Scenario::new(2);
    assert!(
        s.beat(1, 200, Phase::Joining).is_none(),
        "waits for member 0"
    );
    let published = s.beat(0, 100, Phase::Joining).expect("bootstrap");
    assert_eq!(published.topology.primary, Some(0));
    assert_eq!(published.topology.epoch, 1);
    assert_eq!(s.in_sync(), vec![0]);
}

#[test]
fn bootstrap_trusts_the_member_with_the_newest_data() {
    let mut s = Scenario::new(2);
    s.beat_with_data(0, 100, Phase::Joining, 3, 50);
    let published = s
        .beat_with_data(1, 200, Phase::Joining, 4, 10)
        .expect("bootstrap");
    assert_eq!(published.topology.primary, Some(1), "epoch 4 beats epoch 3");
}

#[test]
fn bootstrap_gives_up_waiting_after_the_deadline() {
    let mut s = Scenario::new(2);
    assert!(s.beat(1, 200, Phase::Joining).is_none());
    s.now += DEFAULT_BOOTSTRAP_WAIT;
    // Member 1 keeps beating; the deadline has passed.
    let published = s.beat(1, 200, Phase::Joining).expect("bootstrap");
    assert_eq!(published.topology.primary, Some(1));
}

#[test]
fn a_learner_added_by_the_primary_becomes_in_sync() {
    let s = Scenario::healthy_pair();
    assert_eq!(s.in_sync(), vec![0, 1]);
    assert_eq!(s.topology().primary, Some(0));
    assert_eq!(s.topology().epoch, 2);
}

#[test]
fn a_silent_primary_fails_over_to_the_next_in_sync_ordinal() {
    let mut s = Scenario::healthy_pair();
    let changes = s.run_for(Duration::from_secs(5), &[(1, 200, Phase::Following)]);
    let failover = changes.iter().find(|c| c.failover).expect("a failover");
    assert_eq!(failover.topology.primary, Some(1));
    assert_eq!(failover.previous_primary, Some(0));
    assert!(failover.topology.epoch > 2);
    assert_eq!(s.in_sync(), vec![1]);
}

#[test]
fn a_restarted_primary_fails_over_even_before_it_is_missed() {
    let mut s = Scenario::healthy_pair();
    let published = s.beat(0, 101, Phase::Joining).expect("restart noticed");
    assert_eq!(published.topology.primary, Some(1));
    assert_eq!(s.in_sync(), vec![1]);
}

#[test]
fn the_last_in_sync_member_is_waited_for_not_replaced() {
    let mut s = Scenario::new(2);
    s.beat(0, 100, Phase::Joining);
    s.beat(1, 200, Phase::Joining);
    // 1 never caught up; 0 goes silent.
    let changes = s.run_for(Duration::from_secs(5), &[(1, 200, Phase::CatchingUp)]);
    let last = changes.last().expect("a change");
    assert_eq!(last.topology.primary, None, "1 lacks writes; no primary");
    assert_eq!(s.in_sync(), vec![0]);
    // 0 restarts from its disk: it is still the only holder, so it leads.
    let back = s.beat(0, 101, Phase::Joining).expect("0 is back");
    assert_eq!(back.topology.primary, Some(0));
}

#[test]
fn a_recovered_lower_ordinal_takes_the_primary_back_after_catching_up() {
    let mut s = Scenario::healthy_pair();
    s.run_for(Duration::from_secs(5), &[(1, 200, Phase::Following)]);
    assert_eq!(s.topology().primary, Some(1));
    s.beat(0, 101, Phase::Joining);
    assert_eq!(s.topology().primary, Some(1), "0 is behind: not yet");
    let handover = s.add_to_in_sync(0).expect("primary 1 adds 0");
    // Adding 0 makes it healthy; the rule then moves the primary back.
    let settled = s.advance(Duration::from_millis(10));
    let topology = settled
        .last()
        .map(|p| p.topology.clone())
        .unwrap_or(handover.topology);
    assert_eq!(topology.primary, Some(0));
    assert!(
        !settled.iter().any(|p| p.failover),
        "a handover, not a failover"
    );
    assert_eq!(s.in_sync(), vec![0], "1 resyncs from the new primary");
}

#[test]
fn heartbeats_within_the_threshold_never_flap() {
    let mut s = Scenario::healthy_pair();
    let epoch = s.topology().epoch;
    // Beats arrive late but within the miss threshold, for a long time.
    for _ in 0..100 {
        s.beat(0, 100, Phase::Leading);
        s.beat(1, 200, Phase::Following);
        s.advance(DEFAULT_HEARTBEAT_INTERVAL * 2);
    }
    assert_eq!(s.topology().epoch, epoch);
    assert_eq!(s.in_sync(), vec![0, 1]);
}

#[test]
fn a_restarted_replica_leaves_the_in_sync_set() {
    let mut s = Scenario::healthy_pair();
    let published = s.beat(1, 201, Phase::Joining).expect("restart noticed");
    assert_eq!(published.topology.primary, Some(0));
    assert_eq!(s.in_sync(), vec![0]);
}

#[test]
fn in_sync_changes_are_checked() {
    let mut s = Scenario::healthy_pair();
    let topology = s.topology();
    let stale = AlterInSync {
        tier: TIER,
        epoch: topology.epoch - 1,
        primary: 0,
        in_sync: vec![0],
    };
    assert!(matches!(
        s.coordinator.alter_in_sync(&stale, s.now),
        Err(AlterError::StaleEpoch { .. })
    ));
    let not_primary = AlterInSync {
        epoch: topology.epoch,
        primary: 1,
        ..stale.clone()
    };
    assert_eq!(
        s.coordinator.alter_in_sync(&not_primary, s.now),
        Err(AlterError::NotPrimary(1))
    );
    let without_primary = AlterInSync {
        epoch: topology.epoch,
        in_sync: vec![1],
        ..stale.clone()
    };
    assert_eq!(
        s.coordinator.alter_in_sync(&without_primary, s.now),
        Err(AlterError::MissingPrimary)
    );
    let drop_one = AlterInSync {
        epoch: topology.epoch,
        ..stale
    };
    let published = s
        .coordinator
        .alter_in_sync(&drop_one, s.now)
        .expect("drop 1");
    assert_eq!(published.topology.epoch, topology.epoch + 1);
    assert_eq!(s.in_sync(), vec![0]);
}

#[test]
fn adding_a_silent_member_is_refused() {
    let mut s = Scenario::new(3);
    s.beat(0, 100, Phase::Joining);
    s.beat(1, 200, Phase::Joining);
    s.beat(2, 300, Phase::Joining);
    s.run_for(Duration::from_secs(5), &[(0, 100, Phase::Leading)]);
    assert_eq!(s.add_to_in_sync(2), Err(AlterError::NotLive(2)));
}

#[test]
fn a_member_marked_down_fails_over_without_waiting_for_heartbeats() {
    let mut s = Scenario::healthy_pair();
    let published = s.coordinator.mark_down(TIER, 0, s.now).expect("a change");
    assert!(published.failover);
    assert_eq!(published.topology.primary, Some(1));
    assert!(
        s.coordinator.mark_down(TIER, 0, s.now).is_none(),
        "already down"
    );
    // Heartbeats bring it back as live (but not in sync: it must resync).
    s.beat(0, 100, Phase::Joining);
    assert_eq!(s.topology().primary, Some(1));
    assert!(s.topology().member(0).expect("member").live);
}

#[test]
fn a_restarted_coordinator_publishes_epochs_above_its_members() {
    let mut scenario = Scenario::new(2);
    for ordinal in [0, 1] {
        let heartbeat = Heartbeat {
            tier: TIER,
            ordinal,
            incarnation: 1,
            peer: format!("127.0.0.1:{}", 9000 + ordinal),
            public: format!("127.0.0.1:{}", 8000 + ordinal),
            phase: Phase::Following,
            epoch: 41,
            applied: 7,
            data_epoch: 40,
        };
        scenario.coordinator.heartbeat(&heartbeat, scenario.now);
    }
    let topology = scenario.topology();
    assert_eq!(topology.primary, Some(0));
    assert!(
        topology.epoch > 41,
        "epoch {} would be refused as stale",
        topology.epoch
    );
}
