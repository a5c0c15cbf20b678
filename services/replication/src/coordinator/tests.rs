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
        Self::resumed(members, &DurableState::new(), Instant::now())
    }

    /// A coordinator started at `now` from `durable`, nobody heard from yet.
    fn resumed(members: usize, durable: &DurableState, now: Instant) -> Self {
        let config = CoordinatorConfig::default();
        Self {
            coordinator: Coordinator::new(config, &[(TIER, members)], durable, now),
            now,
        }
    }

    /// A new coordinator from `durable` (what this one saved), as after a
    /// restart of the coordinator: same clock, nothing heard yet.
    fn restarted_from(&self, durable: &DurableState) -> Self {
        Self::resumed(2, durable, self.now)
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
            epoch: self.coordinator.status(self.now)[0].epoch,
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
        self.topology().in_sync_ordinals()
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
            added: Default::default(),
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
fn bootstrap_without_durable_state_never_elects_before_every_member_is_heard() {
    let mut s = Scenario::new(2);
    // Member 1 alone, for a long time: member 0 may hold newer data.
    let changes = s.run_for(Duration::from_secs(120), &[(1, 200, Phase::Joining)]);
    assert!(changes.is_empty(), "elected without member 0: {changes:?}");
    let waiting = s.coordinator.status(s.now)[0].waiting.clone();
    assert!(
        waiting
            .as_deref()
            .unwrap_or_default()
            .contains("no durable coordinator state"),
        "{waiting:?}"
    );
    let published = s
        .beat_with_data(0, 100, Phase::Joining, 9, 90)
        .expect("bootstrap");
    assert_eq!(published.topology.primary, Some(0));
    assert_eq!(s.coordinator.status(s.now)[0].waiting, None);
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
        added: Default::default(),
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
    let published = s
        .coordinator
        .mark_down(TIER, 0, "pod deleted", s.now, s.now)
        .expect("a change");
    assert!(published.failover);
    assert!(
        published.reason.contains("catalog-0 is down (pod deleted)"),
        "the cause as detected: {}",
        published.reason
    );
    assert_eq!(published.topology.primary, Some(1));
    assert!(
        s.coordinator
            .mark_down(TIER, 0, "pod deleted", s.now, s.now)
            .is_none(),
        "already down"
    );
    // A new incarnation has rejoined: live again (but not in sync: it must
    // resync).
    s.beat(0, 101, Phase::Joining);
    assert_eq!(s.topology().primary, Some(1));
    assert!(s.topology().member(0).expect("member").live);
    assert!(!s.coordinator.is_marked_down(TIER, 0));
}

#[test]
fn a_member_marked_down_stays_down_while_the_same_incarnation_heartbeats() {
    let mut s = Scenario::healthy_pair();
    s.coordinator
        .mark_down(TIER, 1, "pod deleted", s.now, s.now)
        .expect("1 leaves");
    // A terminating pod keeps heartbeating for its grace period.
    let changes = s.run_for(
        Duration::from_secs(10),
        &[(0, 100, Phase::Leading), (1, 200, Phase::Following)],
    );
    assert!(changes.is_empty(), "nothing changes: {changes:?}");
    let member = s.topology().member(1).cloned().expect("member");
    assert!(!member.live && !member.in_sync);
    assert!(s.coordinator.is_marked_down(TIER, 1));
}

/// The upgrade outage of issue 13: catalog-1 was replaced and is resyncing,
/// then catalog-0, the only in-sync member, was deleted. Its pod kept
/// heartbeating while it terminated, and every heartbeat made it live (and
/// primary) again until the operator marked it down again: epochs flapped
/// none→0→none→0. Down must stay down until a new incarnation is heard.
#[test]
fn a_terminating_last_in_sync_primary_never_flaps_back() {
    let mut s = Scenario::new(2);
    s.beat(0, 100, Phase::Joining);
    s.beat(1, 200, Phase::Joining);
    assert_eq!(s.topology().primary, Some(0));
    // catalog-1 replaced: a new incarnation, resyncing.
    s.beat(1, 201, Phase::Joining);
    let lost = s
        .coordinator
        .mark_down(TIER, 0, "pod deleted", s.now, s.now)
        .expect("primary lost");
    assert_eq!(
        lost.topology.primary, None,
        "the only in-sync member is down"
    );
    assert_eq!(s.in_sync(), vec![0], "it is waited for, not replaced");
    let epoch = s.topology().epoch;
    let mut changes = Vec::new();
    for _ in 0..20 {
        // The terminating pod's heartbeats and the operator's reconciles
        // interleave, as they did in the outage.
        changes.extend(s.beat(0, 100, Phase::Leading));
        changes.extend(
            s.coordinator
                .mark_down(TIER, 0, "pod deleted", s.now, s.now),
        );
        changes.extend(s.beat(1, 201, Phase::Joining));
        changes.extend(s.advance(Duration::from_millis(500)));
    }
    assert!(changes.is_empty(), "no flapping: {changes:?}");
    assert_eq!(s.topology().primary, None);
    assert_eq!(s.topology().epoch, epoch);
    // The new pod of catalog-0 (a new incarnation) holds the data: primary
    // again, once, with one new epoch.
    let back = s.beat(0, 101, Phase::Joining).expect("back");
    assert_eq!(back.topology.primary, Some(0));
    assert_eq!(back.topology.epoch, epoch + 1);
}

#[test]
fn a_new_incarnation_heard_after_the_observation_is_not_marked_down() {
    let mut s = Scenario::healthy_pair();
    // The operator lists the pods and sees catalog-1's old pod go; the new
    // pod's process heartbeats before the operator acts on what it saw.
    let observed_at = s.now;
    s.now += Duration::from_millis(100);
    s.beat(1, 201, Phase::Joining);
    assert!(
        s.coordinator
            .mark_down(TIER, 1, "pod is gone", observed_at, s.now)
            .is_none()
    );
    assert!(s.topology().member(1).expect("member").live);
}

#[test]
fn a_member_found_unresponsive_comes_back_with_its_next_heartbeat() {
    let mut s = Scenario::healthy_pair();
    let published = s
        .coordinator
        .mark_unresponsive(TIER, 1, "pod's container is not running", s.now)
        .expect("1 leaves the in-sync set");
    assert!(
        published
            .reason
            .contains("catalog-1 is down (pod's container is not running)"),
        "{}",
        published.reason
    );
    // The pod's status lagged behind a process that runs: it heartbeats.
    s.beat(1, 200, Phase::Joining);
    assert!(s.topology().member(1).expect("member").live);
    assert!(!s.coordinator.is_marked_down(TIER, 1));
}

#[test]
fn a_member_marked_down_rejoins_when_the_primary_admits_it_after_a_resync() {
    let mut s = Scenario::healthy_pair();
    s.coordinator
        .mark_down(TIER, 1, "pod deleted", s.now, s.now)
        .expect("1 leaves");
    // Not restarted: it resyncs as the same incarnation and is admitted.
    s.beat(1, 200, Phase::Joining);
    let admitted = s.add_to_in_sync(1).expect("admitted after its resync");
    let member = admitted.topology.member(1).cloned().expect("member");
    assert!(member.live && member.in_sync);
    assert!(!s.coordinator.is_marked_down(TIER, 1));
}

#[test]
fn a_silent_member_marked_down_cannot_be_admitted() {
    let mut s = Scenario::healthy_pair();
    s.coordinator
        .mark_down(TIER, 1, "pod deleted", s.now, s.now)
        .expect("1 leaves");
    s.run_for(Duration::from_secs(5), &[(0, 100, Phase::Leading)]);
    assert_eq!(s.add_to_in_sync(1), Err(AlterError::NotLive(1)));
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

fn record(epoch: Epoch, primary: Ordinal, in_sync: &[(Ordinal, u64)]) -> DurableState {
    DurableState::from([(
        TIER,
        TierRecord {
            epoch,
            primary: Some(primary),
            in_sync: in_sync.iter().copied().collect(),
        },
    )])
}

#[test]
fn every_published_change_is_in_the_durable_state() {
    let mut s = Scenario::healthy_pair();
    let durable = s.coordinator.durable_state();
    let recorded = &durable[&TIER];
    assert_eq!(recorded.epoch, s.topology().epoch);
    assert_eq!(recorded.primary, Some(0));
    assert_eq!(recorded.in_sync, BTreeMap::from([(0, 100), (1, 200)]));
    let failover = s
        .run_for(Duration::from_secs(5), &[(1, 200, Phase::Following)])
        .pop()
        .expect("a failover");
    let recorded = &s.coordinator.durable_state()[&TIER];
    assert_eq!(recorded.epoch, failover.topology.epoch);
    assert_eq!(recorded.primary, Some(1));
    assert_eq!(recorded.in_sync, BTreeMap::from([(1, 200)]));
}

#[test]
fn a_coordinator_restarted_after_a_failover_elects_only_the_recorded_in_sync_member() {
    // The defect of issue 10: 0 played dead, 1 took over and took writes;
    // the coordinator restarted with every member. 0's data looks as new
    // as 1's by (data epoch, index), but only 1 holds every acknowledged
    // write, and the durable state says so.
    let mut s = Scenario::healthy_pair();
    s.run_for(Duration::from_secs(5), &[(1, 200, Phase::Leading)]);
    let before = s.topology().epoch;
    let mut s = s.restarted_from(&s.coordinator.durable_state());
    assert!(
        s.beat_with_data(0, 101, Phase::Joining, 99, 99_999)
            .is_none()
    );
    let published = s
        .beat_with_data(1, 201, Phase::Joining, 3, 50)
        .expect("1 is back");
    assert_eq!(published.topology.primary, Some(1));
    assert!(published.topology.epoch > before, "epochs only rise");
    assert_eq!(s.in_sync(), vec![1]);
}

#[test]
fn a_restarted_coordinator_keeps_a_running_primary_without_a_new_epoch() {
    // Only the coordinator restarted (a new operator leader): the members
    // keep their incarnations and the primary keeps leading.
    let durable = record(7, 0, &[(0, 100), (1, 200)]);
    let mut s = Scenario::resumed(2, &durable, Instant::now());
    assert!(s.beat(1, 200, Phase::Following).is_none());
    assert_eq!(
        s.coordinator.status(s.now)[0].primary,
        Some(0),
        "1 does not take over"
    );
    assert_eq!(
        s.coordinator.topology(TIER, s.now),
        None,
        "0 is not heard yet"
    );
    assert!(s.beat(0, 100, Phase::Leading).is_none());
    let changes = s.run_for(
        Duration::from_secs(10),
        &[(0, 100, Phase::Leading), (1, 200, Phase::Following)],
    );
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(s.topology().epoch, 7);
    assert_eq!(s.in_sync(), vec![0, 1]);
}

#[test]
fn a_resumed_tier_elects_nobody_until_the_recorded_in_sync_members_are_heard() {
    let durable = record(7, 1, &[(0, 100), (1, 200)]);
    let mut s = Scenario::resumed(2, &durable, Instant::now());
    // 1 (the recorded primary) restarted and comes first; 0, a lower
    // in-sync ordinal, is not heard yet: 1 leaves, and nobody leads yet.
    // The change is decided but held back: a topology now could not list
    // in-sync member 0.
    assert_eq!(s.beat(1, 201, Phase::Joining), None);
    let status = s.coordinator.status(s.now)[0].clone();
    assert_eq!(status.primary, None);
    assert!(status.epoch > 7);
    assert!(
        s.coordinator.status(s.now)[0]
            .waiting
            .as_deref()
            .unwrap_or_default()
            .contains("waiting for in-sync members [catalog-0]")
    );
    let published = s.beat(0, 101, Phase::Joining).expect("0 is back");
    assert_eq!(published.topology.primary, Some(0));
    assert!(published.topology.epoch > status.epoch);
}

#[test]
fn a_resumed_tier_publishes_nothing_until_its_in_sync_members_are_heard_sim_seed_343() {
    let durable = record(19, 0, &[(0, 100), (1, 200), (2, 300)]);
    let mut s = Scenario::resumed(3, &durable, Instant::now());
    // 1 restarted: it leaves the in-sync set, but a topology now would not
    // list 0 and 2, and whoever adopted it would ignore the complete one
    // of the same epoch later.
    assert_eq!(s.beat(1, 201, Phase::Joining), None);
    assert_eq!(s.beat(0, 100, Phase::Leading), None);
    let published = s.beat(2, 300, Phase::Following).expect("held-back change");
    assert!(published.topology.epoch > 20);
    assert_eq!(published.topology.primary, Some(0));
    assert_eq!(published.topology.in_sync_ordinals(), vec![0, 2]);
}

#[test]
fn a_resumed_tier_stops_waiting_for_a_silent_in_sync_member_after_the_timeout() {
    let durable = record(7, 0, &[(0, 100), (1, 200)]);
    let mut s = Scenario::resumed(2, &durable, Instant::now());
    let changes = s.run_for(Duration::from_secs(5), &[(1, 200, Phase::Following)]);
    let last = changes.last().expect("a change");
    assert_eq!(last.topology.primary, Some(1));
    assert!(last.failover);
    assert_eq!(s.in_sync(), vec![1]);
}

#[test]
fn a_coordinator_restarted_between_saving_and_publishing_continues_above_the_saved_epoch() {
    let mut s = Scenario::healthy_pair();
    // The failover is decided and saved; the coordinator dies before
    // anyone hears of it.
    let unpublished = s
        .run_for(Duration::from_secs(5), &[(1, 200, Phase::Following)])
        .pop()
        .expect("a failover");
    let saved = s.coordinator.durable_state();
    let mut s = s.restarted_from(&saved);
    // 1 still reports the epoch before the failover.
    let published = s
        .run_for(Duration::from_secs(5), &[(1, 200, Phase::Following)])
        .pop();
    let topology = published.map_or_else(|| s.topology(), |p| p.topology);
    assert_eq!(topology.primary, Some(1));
    assert!(topology.epoch >= unpublished.topology.epoch);
    // Whatever it publishes next is above the saved epoch.
    s.beat(0, 101, Phase::Joining);
    let next = s.add_to_in_sync(0).expect("1 admits 0");
    assert!(next.topology.epoch > unpublished.topology.epoch);
}

#[test]
fn a_failed_save_rolls_back_and_the_change_is_decided_again() {
    let mut s = Scenario::healthy_pair();
    let saved = s.coordinator.durable_state();
    let failover = s
        .run_for(Duration::from_secs(5), &[(1, 200, Phase::Following)])
        .pop()
        .expect("a failover");
    s.coordinator.roll_back(&saved);
    assert_eq!(s.coordinator.durable_state(), saved);
    assert_eq!(s.topology().primary, Some(0));
    let again = s.advance(Duration::from_millis(250)).pop().expect("again");
    assert_eq!(again.topology.primary, Some(1));
    assert_eq!(again.topology.epoch, failover.topology.epoch);
}

#[test]
fn a_resumed_tier_tells_members_no_topology_until_its_in_sync_members_are_heard_sim_seed_0() {
    let now = Instant::now();
    let durable = record(4, 0, &[(0, 100), (1, 200)]);
    let mut s = Scenario::resumed(3, &durable, now);
    s.beat(0, 100, Phase::Leading);
    assert_eq!(
        s.coordinator.topology(TIER, s.now),
        None,
        "a topology now would list in-sync member 1 nowhere, and primary 0 would stop replicating to it"
    );
    s.beat(1, 200, Phase::Following);
    assert_eq!(s.in_sync(), vec![0, 1]);
}

#[test]
fn an_in_sync_change_from_a_primary_not_heard_since_a_restart_is_refused_sim_seed_237() {
    let now = Instant::now();
    let durable = record(1, 0, &[(0, 100)]);
    let mut s = Scenario::resumed(2, &durable, now);
    s.beat(1, 200, Phase::CatchingUp);
    let request = AlterInSync {
        tier: TIER,
        epoch: 1,
        primary: 0,
        in_sync: vec![0, 1],
        added: BTreeMap::new(),
    };
    assert_eq!(
        s.coordinator.alter_in_sync(&request, s.now),
        Err(AlterError::NotLive(0)),
        "the topology it would publish could not name primary 0, so 0 could not adopt it"
    );
    s.beat(0, 100, Phase::Leading);
    assert!(s.coordinator.alter_in_sync(&request, s.now).is_ok());
}

#[test]
fn adding_a_member_that_restarted_since_it_caught_up_is_refused_sim_seed_4240() {
    let mut s = Scenario::new(2);
    s.beat(0, 100, Phase::Joining);
    s.beat(1, 200, Phase::Joining);
    // 1 caught up as incarnation 200, then restarted; the primary's request
    // for 200 reaches the coordinator after 201's heartbeat.
    s.beat(1, 201, Phase::Joining);
    let topology = s.topology();
    let request = AlterInSync {
        tier: TIER,
        epoch: topology.epoch,
        primary: 0,
        in_sync: vec![0, 1],
        added: BTreeMap::from([(1, 200)]),
    };
    assert_eq!(
        s.coordinator.alter_in_sync(&request, s.now),
        Err(AlterError::Restarted(1))
    );
    let request = AlterInSync {
        added: BTreeMap::from([(1, 201)]),
        ..request
    };
    assert!(s.coordinator.alter_in_sync(&request, s.now).is_ok());
}

#[test]
fn the_last_in_sync_member_restarting_raises_the_epoch() {
    let mut s = Scenario::healthy_pair();
    s.run_for(Duration::from_secs(5), &[(1, 200, Phase::Leading)]);
    let epoch = s.topology().epoch;
    let published = s.beat(1, 201, Phase::Joining).expect("restart noticed");
    assert_eq!(published.topology.primary, Some(1));
    assert!(
        published.topology.epoch > epoch,
        "no two processes lead one epoch"
    );
    assert_eq!(s.coordinator.durable_state()[&TIER].in_sync[&1], 201);
}

mod epochs_only_rise {
    //! Random runs of heartbeats, restarts, silences, pod deletions and
    //! coordinator restarts: the published epochs rise strictly across every
    //! coordinator lifetime, and a newly elected primary was always in the
    //! last saved in-sync set.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Beat { ordinal: Ordinal, restart: bool },
        Silence { ms: u64 },
        MarkDown { ordinal: Ordinal },
        Admit { ordinal: Ordinal },
        RestartCoordinator,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3u32, proptest::bool::weighted(0.1))
                .prop_map(|(ordinal, restart)| Step::Beat { ordinal, restart }),
            2 => (100..4_000u64).prop_map(|ms| Step::Silence { ms }),
            1 => (0..3u32).prop_map(|ordinal| Step::MarkDown { ordinal }),
            2 => (0..3u32).prop_map(|ordinal| Step::Admit { ordinal }),
            1 => Just(Step::RestartCoordinator),
        ]
    }

    proptest! {
        #[test]
        fn across_coordinator_restarts(steps in proptest::collection::vec(step(), 1..120)) {
            let now = Instant::now();
            let config = CoordinatorConfig::default();
            let tiers = [(TIER, 3)];
            let mut saved = DurableState::new();
            let mut coordinator = Coordinator::new(config, &tiers, &saved, now);
            let mut now = now;
            let mut incarnations = [1u64, 2, 3];
            let mut highest_published = 0;
            for step in steps {
                let changes: Vec<Published> = match step {
                    Step::Beat { ordinal, restart } => {
                        if restart {
                            incarnations[ordinal as usize] += 10;
                        }
                        let heartbeat = Heartbeat {
                            tier: TIER,
                            ordinal,
                            incarnation: incarnations[ordinal as usize],
                            peer: String::new(),
                            public: String::new(),
                            phase: if restart { Phase::Joining } else { Phase::Following },
                            epoch: highest_published,
                            applied: 0,
                            data_epoch: 0,
                        };
                        coordinator.heartbeat(&heartbeat, now).into_iter().collect()
                    }
                    Step::Silence { ms } => {
                        now += Duration::from_millis(ms);
                        coordinator.tick(now)
                    }
                    Step::MarkDown { ordinal } => {
                        coordinator.mark_down(TIER, ordinal, "pod deleted", now, now).into_iter().collect()
                    }
                    Step::Admit { ordinal } => {
                        let Some(topology) = coordinator.topology(TIER, now) else { continue };
                        let Some(primary) = topology.primary else { continue };
                        let mut in_sync = topology.in_sync_ordinals();
                        in_sync.push(ordinal);
                        let request = AlterInSync { tier: TIER, epoch: topology.epoch, primary, in_sync, added: Default::default() };
                        coordinator.alter_in_sync(&request, now).into_iter().collect()
                    }
                    Step::RestartCoordinator => {
                        coordinator = Coordinator::new(config, &tiers, &saved, now);
                        Vec::new()
                    }
                };
                for change in changes {
                    let topology = &change.topology;
                    prop_assert!(topology.epoch > highest_published,
                        "epoch {} after {}", topology.epoch, highest_published);
                    if let (Some(new), Some(record)) = (topology.primary, saved.get(&TIER))
                        && change.previous_primary != Some(new)
                        && record.primary != Some(new)
                    {
                        prop_assert!(record.in_sync.contains_key(&new),
                            "elected {new}, not in the saved in-sync set {:?}", record.in_sync);
                    }
                    highest_published = topology.epoch;
                }
                // The driver saves before it publishes.
                saved = coordinator.durable_state();
            }
        }
    }
}

mod reconfigure {
    //! The spec changes while the coordinator runs: settings take effect at
    //! once, nothing is reset, a scale-down removes members before their
    //! pods go.
    use super::*;

    fn config(miss_threshold: u32) -> CoordinatorConfig {
        CoordinatorConfig {
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            miss_threshold,
        }
    }

    /// Three members in sync, 0 primary.
    fn healthy_trio() -> Scenario {
        let mut s = Scenario::new(3);
        s.beat(0, 100, Phase::Joining);
        s.beat(1, 200, Phase::Joining);
        s.beat(2, 300, Phase::Joining);
        s.add_to_in_sync(1).expect("1 joins");
        s.add_to_in_sync(2).expect("2 joins");
        s
    }

    #[test]
    fn a_raised_failure_threshold_takes_effect_without_resetting_the_epoch() {
        let mut s = Scenario::healthy_pair();
        let epoch = s.topology().epoch;
        let saved = s.coordinator.durable_state();
        let changes = s.coordinator.reconfigure(config(15), &[(TIER, 2)], s.now);
        assert!(changes.is_empty(), "settings alone change no topology");
        assert_eq!(s.coordinator.config().miss_threshold, 15);
        assert_eq!(s.coordinator.durable_state(), saved, "nothing is reset");
        // Silent for 5 s: three misses would have dropped it, fifteen do not.
        let changes = s.run_for(Duration::from_secs(5), &[(0, 100, Phase::Leading)]);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(s.in_sync(), vec![0, 1]);
        assert_eq!(s.topology().epoch, epoch);
    }

    #[test]
    fn a_lowered_failure_threshold_takes_effect_at_once() {
        let mut s = Scenario::healthy_pair();
        s.coordinator.reconfigure(config(1), &[(TIER, 2)], s.now);
        let changes = s.run_for(Duration::from_secs(2), &[(0, 100, Phase::Leading)]);
        assert!(!changes.is_empty(), "1 is dropped after one missed beat");
        assert_eq!(s.in_sync(), vec![0]);
    }

    #[test]
    fn a_scale_down_removes_the_highest_ordinal_from_the_in_sync_set_and_the_topology() {
        let mut s = healthy_trio();
        let epoch = s.topology().epoch;
        let changes = s
            .coordinator
            .reconfigure(CoordinatorConfig::default(), &[(TIER, 2)], s.now);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let topology = &changes[0].topology;
        assert_eq!(topology.epoch, epoch + 1, "the epoch rises once");
        assert_eq!(topology.primary, Some(0));
        assert!(topology.member(2).is_none(), "removed from the topology");
        assert_eq!(s.in_sync(), vec![0, 1]);
        assert_eq!(s.coordinator.durable_state()[&TIER].in_sync.len(), 2);
        assert_eq!(s.coordinator.kept_members(TIER), Some(2), "the pod may go");
        // Its terminating pod still heartbeats: it is not taken back.
        assert!(s.beat(2, 300, Phase::Following).is_none());
        assert!(s.topology().member(2).is_none());
    }

    #[test]
    fn a_scale_down_keeps_a_primary_above_the_new_count_until_the_primary_moves() {
        let mut s = Scenario::healthy_pair();
        // 0 restarts: 1 takes over.
        s.beat(0, 101, Phase::Joining);
        assert_eq!(s.topology().primary, Some(1));
        let changes = s
            .coordinator
            .reconfigure(CoordinatorConfig::default(), &[(TIER, 1)], s.now);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(s.topology().primary, Some(1));
        assert_eq!(s.coordinator.kept_members(TIER), Some(2), "its pod stays");
        // 0 resyncs and is admitted; the rule moves the primary to 0, and
        // then 1 leaves.
        s.add_to_in_sync(0).expect("0 is admitted");
        s.advance(Duration::from_millis(250));
        assert_eq!(s.topology().primary, Some(0));
        assert!(s.topology().member(1).is_none());
        assert_eq!(s.coordinator.kept_members(TIER), Some(1));
    }

    #[test]
    fn a_scale_up_adds_the_member_once_it_has_resynced() {
        let mut s = Scenario::healthy_pair();
        assert!(
            s.beat(2, 300, Phase::Joining).is_none(),
            "not a member yet: ignored"
        );
        assert!(s.topology().member(2).is_none());
        s.coordinator
            .reconfigure(CoordinatorConfig::default(), &[(TIER, 3)], s.now);
        s.beat(2, 300, Phase::Joining);
        let member = s.topology().member(2).cloned().expect("a member");
        assert!(member.live && !member.in_sync, "it joins first");
        s.add_to_in_sync(2).expect("admitted after its resync");
        assert_eq!(s.in_sync(), vec![0, 1, 2]);
        assert_eq!(s.coordinator.kept_members(TIER), Some(3));
    }
}

mod switchover {
    //! Planned switchover: the primary moves to a named in-sync member by one
    //! clean handover, stays there while asked, and a member that is not in
    //! sync is refused.
    use super::*;
    use crate::switchover::SwitchoverRefused;

    /// A healthy pair switched over to 1; 0 has resynced and is in sync.
    fn switched_to_1_and_0_resynced() -> Scenario {
        let mut s = Scenario::healthy_pair();
        s.coordinator
            .switch_over(TIER, Some(1), s.now)
            .expect("allowed");
        s.beat(0, 100, Phase::Joining);
        s.add_to_in_sync(0).expect("0 resynced");
        s
    }

    #[test]
    fn a_switchover_moves_the_primary_to_the_in_sync_target_with_one_new_epoch() {
        let mut s = Scenario::healthy_pair();
        let epoch = s.topology().epoch;
        let moved = s
            .coordinator
            .switch_over(TIER, Some(1), s.now)
            .expect("allowed")
            .expect("a change");
        assert_eq!(moved.topology.primary, Some(1));
        assert_eq!(moved.topology.epoch, epoch + 1, "the epoch rises once");
        assert!(!moved.failover, "a handover, not a failover");
        assert_eq!(moved.previous_primary, Some(0));
        assert!(moved.reason.contains("by switchover"), "{}", moved.reason);
        // The old primary resyncs from the new one.
        assert_eq!(s.in_sync(), vec![1]);
        assert_eq!(s.coordinator.durable_state()[&TIER].primary, Some(1));
    }

    #[test]
    fn the_target_stays_primary_while_asked_and_the_rule_returns_after() {
        let mut s = switched_to_1_and_0_resynced();
        let changes = s.run_for(
            Duration::from_secs(3),
            &[(0, 100, Phase::Following), (1, 200, Phase::Leading)],
        );
        assert!(changes.is_empty(), "the lowest ordinal waits: {changes:?}");
        assert_eq!(s.topology().primary, Some(1));
        let back = s
            .coordinator
            .switch_over(TIER, None, s.now)
            .expect("always allowed")
            .expect("the rule applies again");
        assert_eq!(back.topology.primary, Some(0));
        assert!(!back.reason.contains("by switchover"));
    }

    #[test]
    fn a_switchover_to_a_member_that_is_not_in_sync_is_refused_and_changes_nothing() {
        let mut s = Scenario::new(2);
        s.beat(0, 100, Phase::Joining);
        s.beat(1, 200, Phase::Joining);
        let before = s.topology();
        assert_eq!(
            s.coordinator.switch_over(TIER, Some(1), s.now),
            Err(SwitchoverRefused::NotInSync(1))
        );
        assert_eq!(s.topology(), before);
        assert_eq!(s.coordinator.switchover_target(TIER), None);
        // Once it is in sync the same request is allowed.
        s.add_to_in_sync(1).expect("1 resynced");
        let moved = s
            .coordinator
            .switch_over(TIER, Some(1), s.now)
            .expect("allowed");
        assert_eq!(moved.map(|m| m.topology.primary), Some(Some(1)));
    }

    #[test]
    fn a_lost_switchover_target_fails_over_to_the_lowest_in_sync_member() {
        let mut s = switched_to_1_and_0_resynced();
        let lost = s
            .coordinator
            .mark_down(TIER, 1, "pod deleted", s.now, s.now)
            .expect("a change");
        assert!(lost.failover);
        assert_eq!(lost.topology.primary, Some(0));
    }
}

#[test]
fn a_fenced_primary_is_replaced_by_an_in_sync_member_and_rejoins_once_unfenced() {
    let mut s = Scenario::healthy_pair();
    let change = s
        .coordinator
        .fence(TIER, &BTreeSet::from([0]), s.now)
        .expect("fencing the primary changes the tier");
    assert!(change.failover, "{change:?}");
    assert_eq!(change.previous_primary, Some(0));
    assert!(
        change.reason.contains("catalog-0 is fenced"),
        "{}",
        change.reason
    );
    assert_eq!(s.topology().primary, Some(1));
    assert_eq!(s.in_sync(), [1]);
    // Its heartbeats do not make it live, and its primary cannot admit it.
    s.run_for(
        Duration::from_secs(5),
        &[(0, 100, Phase::Following), (1, 200, Phase::Leading)],
    );
    let fenced = s.topology();
    let member = fenced
        .members
        .iter()
        .find(|m| m.ordinal == 0)
        .expect("0 listed");
    assert!(!member.live && !member.in_sync);
    assert_eq!(s.add_to_in_sync(0), Err(AlterError::Fenced(0)));
    assert_eq!(s.coordinator.fenced(TIER), BTreeSet::from([0]));
    // Unfenced, it rejoins as any member does, and the rule takes the
    // primary back to the lowest ordinal.
    assert!(s.coordinator.fence(TIER, &BTreeSet::new(), s.now).is_none());
    s.beat(0, 100, Phase::Following);
    s.add_to_in_sync(0).expect("admitted after its resync");
    s.run_for(
        DEFAULT_HEARTBEAT_INTERVAL,
        &[(0, 100, Phase::Following), (1, 200, Phase::Leading)],
    );
    assert_eq!(
        s.topology().primary,
        Some(0),
        "handed back to the lowest ordinal"
    );
}

#[test]
fn fencing_the_last_in_sync_member_leaves_the_tier_without_a_primary_but_keeps_its_data() {
    let mut s = Scenario::new(2);
    s.beat(0, 100, Phase::Joining);
    s.beat(1, 200, Phase::Joining);
    assert_eq!(s.in_sync(), [0], "1 not admitted yet");
    s.coordinator
        .fence(TIER, &BTreeSet::from([0]), s.now)
        .expect("change");
    assert_eq!(s.topology().primary, None, "1 lacks acknowledged writes");
    assert_eq!(s.in_sync(), [0], "the only copy stays in the in-sync set");
    s.coordinator
        .fence(TIER, &BTreeSet::new(), s.now)
        .expect("0 elected again");
    assert_eq!(s.topology().primary, Some(0));
}

#[test]
fn a_hibernating_tier_neither_fails_over_nor_forgets_and_wakes_with_its_primary() {
    let mut s = Scenario::healthy_pair();
    let before = s.topology().epoch;
    let changes = s.coordinator.hibernate(true, s.now);
    assert_eq!(changes.len(), 1, "the in-sync set shrinks to the primary");
    assert_eq!(s.in_sync(), [0]);
    let saved = s.coordinator.durable_state();
    assert_eq!(saved[&TIER].epoch, before + 1);
    // Every member goes: deleted pods, silence, a last heartbeat.
    assert!(
        s.coordinator
            .mark_down(TIER, 1, "pod is being deleted", s.now, s.now)
            .is_none()
    );
    assert!(
        s.coordinator
            .mark_down(TIER, 0, "pod is being deleted", s.now, s.now)
            .is_none()
    );
    assert!(s.beat(1, 200, Phase::Following).is_none());
    assert!(s.advance(Duration::from_secs(600)).is_empty());
    assert_eq!(
        s.coordinator.durable_state(),
        saved,
        "nothing changed while hibernating"
    );
    let refused = s.add_to_in_sync(1);
    assert_eq!(refused, Err(AlterError::Hibernating));
    // Woken long after: nobody runs yet, and it waits for its primary with
    // no deadline (a deadline would fail the tier over to nobody).
    assert!(s.coordinator.hibernate(false, s.now).is_empty());
    assert!(s.advance(Duration::from_secs(600)).is_empty());
    assert!(
        s.beat(1, 201, Phase::Joining).is_none(),
        "1 alone is not enough"
    );
    let woken = s.beat(0, 101, Phase::Joining).expect("the primary is back");
    assert!(!woken.failover, "{woken:?}");
    assert_eq!(woken.topology.primary, Some(0));
    assert!(woken.topology.epoch > saved[&TIER].epoch);
    s.add_to_in_sync(1).expect("1 resynced and admitted");
    assert_eq!(s.in_sync(), [0, 1]);
}
