//! Scenario tests of the member core: every transition and every refusal,
//! one message at a time (the core has no clock of its own: time enters
//! only through the topologies it is handed).

use super::*;
use crate::topology::TopologyMember;

const TIER: Role = Role::Catalog;

/// A topology at `epoch` with `primary`; each member is (ordinal,
/// incarnation, in sync).
fn topology(epoch: Epoch, primary: Option<Ordinal>, members: &[(Ordinal, u64, bool)]) -> Topology {
    Topology {
        tier: TIER,
        epoch,
        primary,
        members: members
            .iter()
            .map(|&(ordinal, incarnation, in_sync)| TopologyMember {
                ordinal,
                incarnation,
                peer: format!("peer-{ordinal}"),
                public: format!("public-{ordinal}"),
                live: true,
                in_sync,
            })
            .collect(),
    }
}

fn primary(ordinal: Ordinal, incarnation: u64) -> PrimaryId {
    PrimaryId {
        ordinal,
        incarnation,
    }
}

fn batch(epoch: Epoch, from: PrimaryId, first: LogIndex, last: LogIndex) -> BatchHeader {
    BatchHeader {
        epoch,
        primary: from,
        first: Some(first),
        last: Some(last),
    }
}

fn phases(effects: &[Effect]) -> Vec<Phase> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::PhaseChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect()
}

/// Member 1 (incarnation 20) as an in-sync replica of primary 0
/// (incarnation 10) at epoch 3.
/// Member 1 (incarnation 20) as a learner of primary 0 at epoch 2: it has
/// installed the snapshot and is catching up (its effects not yet taken).
fn catching_up_learner() -> MemberCore {
    let mut core = MemberCore::new(TIER, 1, 20);
    core.adopt(topology(2, Some(0), &[(0, 10, true), (1, 20, false)]));
    core.snapshot_installed(SnapshotGrant {
        epoch: 2,
        primary: primary(0, 10),
        index: 0,
    });
    core
}

fn following_replica() -> MemberCore {
    let mut core = catching_up_learner();
    core.adopt(topology(3, Some(0), &[(0, 10, true), (1, 20, true)]));
    assert_eq!(core.phase(), Phase::Following);
    core.take_effects();
    core
}

/// Member 0 (incarnation 10) as the primary at epoch 3, with replica 1.
fn leading_primary() -> MemberCore {
    let mut core = MemberCore::new(TIER, 0, 10);
    core.adopt(topology(3, Some(0), &[(0, 10, true), (1, 20, true)]));
    assert_eq!(
        core.take_effects().last(),
        Some(&Effect::Promote { epoch: 3 })
    );
    core.promotion_ready(3);
    assert_eq!(core.phase(), Phase::Leading);
    core.take_effects();
    core
}

#[test]
fn a_new_member_joins_and_serves_nothing() {
    let core = MemberCore::new(TIER, 1, 20);
    assert_eq!(core.phase(), Phase::Joining);
    assert_eq!(core.route_write(), Err(Refusal::NotPrimary));
    assert_eq!(
        core.resync_step(),
        None,
        "no topology, no primary to resync from"
    );
}

#[test]
fn a_joiner_resyncs_snapshot_then_join_then_follows() {
    let mut core = MemberCore::new(TIER, 1, 20);
    core.adopt(topology(2, Some(0), &[(0, 10, true), (1, 20, false)]));
    assert_eq!(
        core.resync_step(),
        Some(ResyncStep::FetchSnapshot {
            primary: 0,
            peer: "peer-0".into()
        })
    );
    core.snapshot_installed(SnapshotGrant {
        epoch: 2,
        primary: primary(0, 10),
        index: 0,
    });
    assert_eq!(phases(&core.take_effects()), vec![Phase::CatchingUp]);
    assert_eq!(
        core.resync_step(),
        Some(ResyncStep::AskToJoin {
            primary: 0,
            peer: "peer-0".into(),
            snapshot_index: 0
        })
    );
    core.adopt(topology(3, Some(0), &[(0, 10, true), (1, 20, true)]));
    assert_eq!(phases(&core.take_effects()), vec![Phase::Following]);
    assert_eq!(core.resync_step(), None);
    assert_eq!(core.route_write(), Ok(Some("peer-0".into())));
}

#[test]
fn a_topology_about_another_incarnation_is_ignored() {
    let mut core = MemberCore::new(TIER, 1, 21);
    core.adopt(topology(5, Some(1), &[(0, 10, true), (1, 20, true)]));
    assert!(core.take_effects().is_empty());
    assert_eq!(core.topology().epoch, 0);
}

#[test]
fn an_old_or_equal_topology_is_ignored() {
    let mut core = following_replica();
    core.adopt(topology(3, Some(1), &[(0, 10, true), (1, 20, true)]));
    core.adopt(topology(2, Some(1), &[(0, 10, true), (1, 20, true)]));
    assert!(core.take_effects().is_empty());
    assert_eq!(core.phase(), Phase::Following);
}

#[test]
fn a_topology_of_another_tier_is_ignored() {
    let mut core = MemberCore::new(TIER, 1, 20);
    let mut other = topology(5, Some(1), &[(1, 20, true)]);
    other.tier = Role::Order;
    core.adopt(other);
    assert!(core.take_effects().is_empty());
}

#[test]
fn named_primary_promotes_only_after_the_hook() {
    let mut core = MemberCore::new(TIER, 0, 10);
    core.adopt(topology(3, Some(0), &[(0, 10, true)]));
    let effects = core.take_effects();
    assert!(effects.contains(&Effect::Promote { epoch: 3 }));
    assert_eq!(
        core.phase(),
        Phase::Joining,
        "no writes before the hook ran"
    );
    assert_eq!(core.lead(), Err(Refusal::NotPrimary));
    core.promotion_ready(3);
    assert_eq!(phases(&core.take_effects()), vec![Phase::Leading]);
    assert_eq!(core.route_write(), Ok(None));
    assert_eq!(core.following(), Some(primary(0, 10)));
}

#[test]
fn a_promotion_overtaken_by_a_newer_primary_does_not_lead() {
    let mut core = MemberCore::new(TIER, 0, 10);
    core.adopt(topology(3, Some(0), &[(0, 10, true), (1, 20, true)]));
    core.adopt(topology(4, Some(1), &[(0, 10, false), (1, 20, true)]));
    core.promotion_ready(3);
    assert_ne!(core.phase(), Phase::Leading);
}

#[test]
fn a_primary_named_again_does_not_promote_twice() {
    let mut core = leading_primary();
    core.adopt(topology(4, Some(0), &[(0, 10, true)]));
    let effects = core.take_effects();
    assert!(!effects.iter().any(|e| matches!(e, Effect::Promote { .. })));
    assert_eq!(core.phase(), Phase::Leading);
}

#[test]
fn a_primary_that_sees_another_named_is_fenced() {
    let mut core = leading_primary();
    core.adopt(topology(4, Some(1), &[(0, 10, false), (1, 20, true)]));
    assert_eq!(phases(&core.take_effects()), vec![Phase::Fenced]);
    assert_eq!(core.lead(), Err(Refusal::NotPrimary));
    assert_eq!(
        core.resync_step(),
        Some(ResyncStep::FetchSnapshot {
            primary: 1,
            peer: "peer-1".into()
        }),
        "a fenced member resyncs like a joiner"
    );
}

#[test]
fn a_fenced_member_named_again_leads_again() {
    let mut core = leading_primary();
    core.in_sync_altered(AlterAnswer::Stale { asked: 3 });
    assert_eq!(core.phase(), Phase::Fenced);
    core.adopt(topology(5, Some(0), &[(0, 10, true)]));
    assert!(core.take_effects().contains(&Effect::Promote { epoch: 5 }));
    core.promotion_ready(5);
    assert_eq!(core.phase(), Phase::Leading);
}

#[test]
fn a_replica_dropped_from_the_in_sync_set_rejoins() {
    let mut core = following_replica();
    core.adopt(topology(4, Some(0), &[(0, 10, true), (1, 20, false)]));
    assert_eq!(phases(&core.take_effects()), vec![Phase::Joining]);
    assert_eq!(core.following(), None);
}

#[test]
fn a_replica_whose_primary_changes_rejoins() {
    let mut core = following_replica();
    // The primary restarted as a new incarnation and is primary again.
    core.adopt(topology(4, Some(0), &[(0, 11, true), (1, 20, true)]));
    assert_eq!(phases(&core.take_effects()), vec![Phase::Joining]);
}

#[test]
fn a_catching_up_member_whose_primary_changes_starts_over() {
    let mut core = catching_up_learner();
    core.adopt(topology(3, Some(2), &[(1, 20, false), (2, 30, true)]));
    assert_eq!(
        phases(&core.take_effects()),
        vec![Phase::CatchingUp, Phase::Joining]
    );
}

#[test]
fn a_refused_join_starts_the_resync_over() {
    let mut core = catching_up_learner();
    core.join_refused(JoinRefused::NotALearner);
    assert_eq!(core.phase(), Phase::Joining);
}

/// The fault: during a rolling upgrade the coordinator refused a new pod's
/// admission (it had not seen the pod yet); the learner started over and
/// waited for a snapshot, the primary's next batch waited for it, and its
/// snapshot request waited behind that batch: the tier took no write for
/// the 2 s replicate timeout and buys were answered 503.
#[test]
fn a_learner_whose_admission_the_coordinator_refused_stays_catching_up_instead_of_stalling_the_primary()
 {
    let mut core = catching_up_learner();
    core.join_refused(JoinRefused::NotAdmitted);
    assert_eq!(core.phase(), Phase::CatchingUp);
    assert!(
        matches!(core.resync_step(), Some(ResyncStep::AskToJoin { .. })),
        "it asks to join again, without a new snapshot"
    );
}

#[test]
fn a_snapshot_installed_after_a_shutdown_changes_nothing() {
    let mut core = MemberCore::new(TIER, 1, 20);
    core.shut_down();
    core.snapshot_installed(SnapshotGrant {
        epoch: 2,
        primary: primary(0, 10),
        index: 0,
    });
    assert_eq!(core.phase(), Phase::ShutDown);
}

#[test]
fn a_replica_accepts_its_primarys_next_batch() {
    let mut core = following_replica();
    assert_eq!(
        core.accept_batch(batch(3, primary(0, 10), 6, 8), 5),
        Ok(BatchPlan::Apply)
    );
    assert_eq!(
        core.accept_batch(batch(3, primary(0, 10), 4, 6), 5),
        Ok(BatchPlan::Apply),
        "an overlap applies only the fresh writes"
    );
}

#[test]
fn a_duplicate_batch_is_acknowledged_without_applying() {
    let mut core = following_replica();
    assert_eq!(
        core.accept_batch(batch(3, primary(0, 10), 2, 5), 5),
        Ok(BatchPlan::AlreadyApplied)
    );
}

#[test]
fn refusal_gap() {
    let mut core = following_replica();
    assert_eq!(
        core.accept_batch(batch(3, primary(0, 10), 7, 8), 5),
        Err(Refusal::Gap)
    );
    assert_eq!(
        core.phase(),
        Phase::Following,
        "a gap is the sender's problem"
    );
}

#[test]
fn refusal_stale_epoch_deposes_the_sender() {
    let mut core = following_replica();
    core.adopt(topology(6, Some(2), &[(1, 20, true), (2, 30, true)]));
    let refusal = core.accept_batch(batch(5, primary(0, 10), 6, 6), 5);
    assert_eq!(refusal, Err(Refusal::StaleEpoch));
    assert!(Refusal::StaleEpoch.deposes_sender());
}

#[test]
fn refusal_not_following_you_makes_the_replica_resync() {
    let mut core = following_replica();
    let refusal = core.accept_batch(batch(4, primary(2, 30), 6, 6), 5);
    assert_eq!(refusal, Err(Refusal::NotFollowingYou));
    assert_eq!(phases(&core.take_effects()), vec![Phase::Joining]);
    assert!(!Refusal::NotFollowingYou.deposes_sender());
}

#[test]
fn refusal_was_primary_fences_the_receiver() {
    let mut core = leading_primary();
    let refusal = core.accept_batch(batch(4, primary(1, 20), 6, 6), 5);
    assert_eq!(refusal, Err(Refusal::WasPrimary));
    assert_eq!(phases(&core.take_effects()), vec![Phase::Fenced]);
}

#[test]
fn refusal_not_replicating_while_joining_or_fenced() {
    let mut core = MemberCore::new(TIER, 1, 20);
    assert_eq!(
        core.accept_batch(batch(0, primary(0, 10), 1, 1), 0),
        Err(Refusal::NotReplicating)
    );
    let mut fenced = leading_primary();
    fenced.in_sync_altered(AlterAnswer::Stale { asked: 3 });
    assert_eq!(
        fenced.accept_batch(batch(3, primary(0, 10), 1, 1), 0),
        Err(Refusal::NotReplicating)
    );
}

#[test]
fn refusal_shut_down() {
    let mut core = following_replica();
    core.shut_down();
    assert_eq!(
        core.accept_batch(batch(3, primary(0, 10), 6, 6), 5),
        Err(Refusal::ShutDown)
    );
    assert_eq!(core.route_write(), Err(Refusal::ShutDown));
    core.adopt(topology(9, Some(1), &[(1, 20, true)]));
    assert_eq!(
        core.phase(),
        Phase::ShutDown,
        "a dead member adopts nothing"
    );
}

#[test]
fn recover_comes_back_as_a_new_incarnation_that_resyncs() {
    let mut core = following_replica();
    core.shut_down();
    core.recover(21);
    assert_eq!(core.phase(), Phase::Joining);
    assert_eq!(core.incarnation(), 21);
    core.recover(22);
    assert_eq!(
        core.incarnation(),
        21,
        "recover acts only on a shut-down member"
    );
}

#[test]
fn refusal_not_primary_for_writes_snapshots_and_joins() {
    let mut core = following_replica();
    assert_eq!(core.lead(), Err(Refusal::NotPrimary));
    assert_eq!(
        core.grant_snapshot(2, 30, "peer-2".into(), 0),
        Err(Refusal::NotPrimary)
    );
    assert_eq!(core.admit(2, 30, 0), Err(Refusal::NotPrimary));
}

#[test]
fn a_primary_sends_to_in_sync_replicas_and_learners() {
    let mut core = leading_primary();
    core.grant_snapshot(2, 30, "peer-2".into(), 0)
        .expect("grant");
    let leadership = core.lead().expect("leading");
    let targets: Vec<(Ordinal, bool)> = leadership
        .targets
        .iter()
        .map(|t| (t.ordinal, t.in_sync))
        .collect();
    assert_eq!(targets, vec![(1, true), (2, false)]);
    assert_eq!(leadership.incarnation, 10);
}

#[test]
fn refusal_not_a_learner() {
    let mut core = leading_primary();
    assert_eq!(core.admit(2, 30, 0), Err(Refusal::NotALearner));
    core.grant_snapshot(2, 30, "peer-2".into(), 0)
        .expect("grant");
    assert_eq!(
        core.admit(2, 31, 0),
        Err(Refusal::NotALearner),
        "another incarnation of the learner"
    );
    let alter = core.admit(2, 30, 0).expect("admit");
    assert_eq!(alter.in_sync, vec![0, 1, 2]);
    assert_eq!(alter.epoch, 3);
    core.in_sync_altered(AlterAnswer::Changed(topology(
        4,
        Some(0),
        &[(0, 10, true), (1, 20, true), (2, 30, true)],
    )));
    core.learner_admitted(2);
    assert_eq!(core.admit(2, 30, 0), Err(Refusal::NotALearner));
}

#[test]
fn learners_of_a_previous_leadership_start_over() {
    let mut core = leading_primary();
    core.grant_snapshot(2, 30, "peer-2".into(), 0)
        .expect("grant");
    core.adopt(topology(4, Some(1), &[(0, 10, false), (1, 20, true)]));
    core.adopt(topology(5, Some(0), &[(0, 10, true)]));
    core.promotion_ready(5);
    assert_eq!(core.phase(), Phase::Leading);
    assert_eq!(core.admit(2, 30, 0), Err(Refusal::NotALearner));
}

#[test]
fn settle_all_acked_is_done() {
    let mut core = leading_primary();
    let leadership = core.lead().expect("leading");
    let results: Vec<(Target, SendOutcome)> = leadership
        .targets
        .iter()
        .map(|t| (t.clone(), SendOutcome::Acked))
        .collect();
    assert_eq!(core.settle(&leadership, &results), Settlement::Done);
}

#[test]
fn settle_drops_a_failed_learner_silently() {
    let mut core = leading_primary();
    core.grant_snapshot(2, 30, "peer-2".into(), 0)
        .expect("grant");
    let leadership = core.lead().expect("leading");
    let results: Vec<(Target, SendOutcome)> = leadership
        .targets
        .iter()
        .map(|t| {
            let outcome = if t.in_sync {
                SendOutcome::Acked
            } else {
                SendOutcome::Failed
            };
            (t.clone(), outcome)
        })
        .collect();
    assert_eq!(core.settle(&leadership, &results), Settlement::Done);
    assert_eq!(core.admit(2, 30, 0), Err(Refusal::NotALearner));
}

#[test]
fn settle_drops_a_failed_replica_through_the_coordinator() {
    let mut core = leading_primary();
    let leadership = core.lead().expect("leading");
    let results = vec![(
        leadership.targets[0].clone(),
        SendOutcome::Refused(Refusal::Gap),
    )];
    match core.settle(&leadership, &results) {
        Settlement::AlterInSync(alter) => {
            assert_eq!(alter.in_sync, vec![0]);
            assert_eq!(alter.epoch, 3);
            assert_eq!(alter.primary, 0);
        }
        other => panic!("expected an in-sync change, got {other:?}"),
    }
    core.in_sync_altered(AlterAnswer::Changed(topology(
        4,
        Some(0),
        &[(0, 10, true), (1, 20, false)],
    )));
    assert_eq!(core.phase(), Phase::Leading);
    assert_eq!(core.topology().epoch, 4);
}

#[test]
fn settle_stale_epoch_deposes_this_primary() {
    let mut core = leading_primary();
    let leadership = core.lead().expect("leading");
    let results = vec![(
        leadership.targets[0].clone(),
        SendOutcome::Refused(Refusal::StaleEpoch),
    )];
    assert_eq!(core.settle(&leadership, &results), Settlement::Deposed);
    assert_eq!(phases(&core.take_effects()), vec![Phase::Fenced]);
}

#[test]
fn a_failed_in_sync_change_keeps_leading_but_a_stale_one_fences() {
    let mut core = leading_primary();
    core.in_sync_altered(AlterAnswer::Failed);
    assert_eq!(core.phase(), Phase::Leading);
    core.in_sync_altered(AlterAnswer::Stale { asked: 3 });
    assert_eq!(core.phase(), Phase::Fenced);
}

#[test]
fn refusal_codes_round_trip_on_the_wire() {
    for refusal in Refusal::ALL {
        assert_eq!(Refusal::from_code(refusal.code()), Some(refusal));
    }
    assert_eq!(Refusal::from_code("unavailable"), None);
}

#[test]
fn stale_in_sync_answer_after_adopting_a_newer_topology_naming_it_does_not_fence_sim_seed_2() {
    let mut core = leading_primary();
    let leadership = core.lead().expect("leading");
    let results = vec![(leadership.targets[0].clone(), SendOutcome::Failed)];
    let Settlement::AlterInSync(request) = core.settle(&leadership, &results) else {
        panic!("expected an in-sync change");
    };
    // Meanwhile the coordinator dropped the replica itself (epoch 4), and
    // this member adopted that topology before the answer to its request.
    core.adopt(topology(4, Some(0), &[(0, 10, true), (1, 20, false)]));
    core.in_sync_altered(AlterAnswer::Stale {
        asked: request.epoch,
    });
    assert_eq!(core.phase(), Phase::Leading);
}

#[test]
fn stale_epoch_refusal_of_a_batch_from_a_lost_and_regained_leadership_does_not_fence_sim_seed_86() {
    let mut core = leading_primary();
    let old = core.lead().expect("leading at epoch 3");
    // While the batch is out, another primary is named, then this one again.
    core.adopt(topology(4, Some(1), &[(0, 10, false), (1, 20, true)]));
    core.adopt(topology(5, Some(0), &[(0, 10, true), (1, 20, false)]));
    core.promotion_ready(5);
    let results = vec![(
        old.targets[0].clone(),
        SendOutcome::Refused(Refusal::StaleEpoch),
    )];
    assert_eq!(
        core.settle(&old, &results),
        Settlement::Deposed,
        "the old batch fails"
    );
    assert_eq!(core.phase(), Phase::Leading, "the new leadership stands");
}

#[test]
fn an_admitted_learner_stays_a_target_until_the_adopted_topology_shows_it_in_sync_sim_seed_237() {
    let mut core = leading_primary();
    core.grant_snapshot(2, 30, "peer-2".into(), 0)
        .expect("grant");
    core.admit(2, 30, 0).expect("admit");
    // The answer's topology does not name this incarnation: not adopted.
    core.in_sync_altered(AlterAnswer::Changed(topology(4, Some(0), &[(2, 30, true)])));
    core.learner_admitted(2);
    let targets: Vec<Ordinal> = core
        .lead()
        .expect("leading")
        .targets
        .iter()
        .map(|t| t.ordinal)
        .collect();
    assert_eq!(targets, vec![1, 2], "learner 2 still gets every batch");
}

#[test]
fn refusal_not_a_learner_for_a_snapshot_of_an_earlier_registration_sim_seed_1171() {
    let mut core = leading_primary();
    core.grant_snapshot(2, 30, "peer-2".into(), 66)
        .expect("first fetch");
    // A send to it fails (it was still installing): it is dropped ...
    let leadership = core.lead().expect("leading");
    let results: Vec<(Target, SendOutcome)> = leadership
        .targets
        .iter()
        .map(|t| {
            (
                t.clone(),
                if t.ordinal == 2 {
                    SendOutcome::Failed
                } else {
                    SendOutcome::Acked
                },
            )
        })
        .collect();
    assert_eq!(core.settle(&leadership, &results), Settlement::Done);
    // ... and a second fetch registers it again, at index 67; it installed 66.
    core.grant_snapshot(2, 30, "peer-2".into(), 67)
        .expect("second fetch");
    assert_eq!(core.admit(2, 30, 66), Err(Refusal::NotALearner));
    assert!(core.admit(2, 30, 67).is_ok());
}

#[test]
fn a_snapshot_from_a_former_primary_leaves_the_member_joining_sim_seed_1414() {
    let mut core = MemberCore::new(TIER, 2, 30);
    core.adopt(topology(5, Some(0), &[(0, 10, true), (2, 30, false)]));
    core.snapshot_installed(SnapshotGrant {
        epoch: 4,
        primary: primary(1, 20),
        index: 34,
    });
    assert_eq!(core.phase(), Phase::Joining);
    assert!(matches!(
        core.resync_step(),
        Some(ResyncStep::FetchSnapshot { primary: 0, .. })
    ));
}

#[test]
fn a_learner_in_doubt_that_fails_stays_a_target_until_a_topology_settles_it_sim_seed_1805() {
    let mut core = leading_primary();
    core.grant_snapshot(2, 30, "peer-2".into(), 0)
        .expect("grant");
    core.admit(2, 30, 0).expect("admit");
    // No answer to the admission: the coordinator may have saved it.
    core.in_sync_altered(AlterAnswer::Failed);
    let leadership = core.lead().expect("leading");
    let learner = leadership
        .targets
        .iter()
        .find(|t| t.ordinal == 2)
        .expect("target");
    assert!(learner.in_sync, "treated as in sync while in doubt");
    let results: Vec<(Target, SendOutcome)> = leadership
        .targets
        .iter()
        .map(|t| {
            (
                t.clone(),
                if t.ordinal == 2 {
                    SendOutcome::Failed
                } else {
                    SendOutcome::Acked
                },
            )
        })
        .collect();
    assert!(matches!(
        core.settle(&leadership, &results),
        Settlement::AlterInSync(_)
    ));
    let targets: Vec<Ordinal> = core
        .lead()
        .expect("leading")
        .targets
        .iter()
        .map(|t| t.ordinal)
        .collect();
    assert_eq!(
        targets,
        vec![1, 2],
        "still a target: the next batch cannot be acknowledged without it"
    );
    // A newer topology without it settles the doubt; then it is a plain learner.
    core.adopt(topology(4, Some(0), &[(0, 10, true), (1, 20, true)]));
    assert!(
        !core
            .lead()
            .expect("leading")
            .targets
            .iter()
            .any(|t| t.ordinal == 2 && t.in_sync)
    );
}

#[test]
fn a_learner_in_doubt_that_missed_a_batch_is_never_admitted_on_that_registration_sim_seed_6149() {
    let mut core = leading_primary();
    core.grant_snapshot(2, 30, "peer-2".into(), 0)
        .expect("grant");
    core.admit(2, 30, 0).expect("admit");
    core.in_sync_altered(AlterAnswer::Failed);
    let leadership = core.lead().expect("leading");
    let results: Vec<(Target, SendOutcome)> = leadership
        .targets
        .iter()
        .map(|t| {
            (
                t.clone(),
                if t.ordinal == 2 {
                    SendOutcome::Failed
                } else {
                    SendOutcome::Acked
                },
            )
        })
        .collect();
    core.settle(&leadership, &results);
    assert_eq!(
        core.admit(2, 30, 0),
        Err(Refusal::NotALearner),
        "it may lack the batch it missed"
    );
}

// ---- Linearizable reads (ReadIndex over the in-sync set). ----

/// An empty batch from `from`: what a round of reads alone sends.
fn confirming_batch(epoch: Epoch, from: PrimaryId) -> BatchHeader {
    BatchHeader {
        epoch,
        primary: from,
        first: None,
        last: None,
    }
}

#[test]
fn linearizable_reads_are_taken_by_the_primary_alone() {
    assert_eq!(leading_primary().take_linearizable_read(), Ok(()));
    assert_eq!(
        following_replica().take_linearizable_read(),
        Err(Refusal::NotPrimary)
    );
    assert_eq!(
        MemberCore::new(TIER, 1, 20).take_linearizable_read(),
        Err(Refusal::NotPrimary),
        "a joiner"
    );
    let mut shut = leading_primary();
    shut.shut_down();
    assert_eq!(shut.take_linearizable_read(), Err(Refusal::ShutDown));
}

#[test]
fn reads_are_confirmed_when_every_in_sync_replica_acknowledged_the_batch() {
    let mut core = leading_primary();
    let leadership = core.lead().expect("leading");
    let results = vec![(leadership.targets[0].clone(), SendOutcome::Acked)];
    assert_eq!(core.settle(&leadership, &results), Settlement::Done);
    assert_eq!(core.confirm_reads(), Ok(()));
}

#[test]
fn an_in_sync_replica_acknowledges_an_empty_confirming_batch_without_applying_it() {
    let mut core = following_replica();
    assert_eq!(
        core.accept_batch(confirming_batch(3, primary(0, 10)), 7),
        Ok(BatchPlan::AlreadyApplied)
    );
    assert_eq!(core.phase(), Phase::Following);
}

/// The fault ReadIndex is for: primary 0 was paused, the coordinator made
/// replica 1 primary at epoch 4, and 0 wakes up with a read before it has
/// heard. Its confirming batch reaches 1, which refuses it as stale; 0 is
/// deposed and the read is refused instead of answered from its old state.
#[test]
fn a_woken_primary_whose_replica_leads_a_newer_epoch_refuses_the_read_as_unconfirmed() {
    let mut replica = following_replica();
    replica.adopt(topology(4, Some(1), &[(0, 10, false), (1, 20, true)]));
    replica.promotion_ready(4);
    assert_eq!(replica.phase(), Phase::Leading);
    let refusal = replica
        .accept_batch(confirming_batch(3, primary(0, 10)), 7)
        .expect_err("a batch of the deposed primary's epoch");
    assert_eq!(refusal, Refusal::StaleEpoch);

    let mut woken = leading_primary();
    assert_eq!(
        woken.take_linearizable_read(),
        Ok(()),
        "it does not know yet"
    );
    let leadership = woken.lead().expect("still leading as far as it knows");
    let results = vec![(leadership.targets[0].clone(), SendOutcome::Refused(refusal))];
    assert_eq!(woken.settle(&leadership, &results), Settlement::Deposed);
    assert_eq!(woken.phase(), Phase::Fenced);
    assert_eq!(woken.confirm_reads(), Err(Refusal::Unconfirmed));
}

/// The primary whose confirming batch failed at its replica: it has asked
/// the coordinator to drop the replica.
fn primary_whose_replica_failed() -> MemberCore {
    let mut core = leading_primary();
    let leadership = core.lead().expect("leading");
    let results = vec![(leadership.targets[0].clone(), SendOutcome::Failed)];
    assert!(matches!(
        core.settle(&leadership, &results),
        Settlement::AlterInSync(_)
    ));
    core
}

#[test]
fn reads_are_confirmed_once_the_coordinator_drops_a_replica_that_failed_the_batch() {
    let mut core = primary_whose_replica_failed();
    core.in_sync_altered(AlterAnswer::Changed(topology(
        4,
        Some(0),
        &[(0, 10, true), (1, 20, false)],
    )));
    assert_eq!(core.confirm_reads(), Ok(()));
}

#[test]
fn reads_are_refused_when_the_coordinator_refuses_the_in_sync_change_as_stale() {
    let mut core = primary_whose_replica_failed();
    core.in_sync_altered(AlterAnswer::Stale { asked: 3 });
    assert_eq!(core.phase(), Phase::Fenced);
    assert_eq!(core.confirm_reads(), Err(Refusal::Unconfirmed));
}

#[test]
fn refusal_unconfirmed_travels_as_its_code_and_is_retried_later_not_as_a_conflict() {
    assert_eq!(Refusal::Unconfirmed.code(), "unconfirmed");
    assert_eq!(
        Refusal::from_code("unconfirmed"),
        Some(Refusal::Unconfirmed)
    );
    assert!(!Refusal::Unconfirmed.is_conflict());
    assert!(!Refusal::Unconfirmed.deposes_sender());
}
