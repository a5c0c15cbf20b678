//! Leader election through a coordination.k8s.io Lease, so two operator
//! replicas never both reconcile or both coordinate a store.
//!
//! The holder renews the Lease every third of its duration. Another replica
//! takes it only once it has expired. A leader that cannot renew before its
//! Lease expires stops acting (the process exits and the Deployment restarts
//! it as a follower), so there is never a moment with two leaders acting.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};

use crate::names::OPERATOR_LEADER_LABEL;

/// How long a Lease holds without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader that has not renewed for this long stops acting. It is shorter
/// than the Lease, so the old leader has stopped before another can take
/// over, even with some clock skew between their nodes.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// One replica's claim on the Lease.
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaderElection {
    pub fn new(api: Api<Lease>, name: &str, identity: &str) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<(), kube::Error> {
        loop {
            if self.try_hold().await? {
                tracing::info!(identity = %self.identity, "became the leader");
                return Ok(());
            }
            tokio::time::sleep(LEASE_DURATION / 3).await;
        }
    }

    /// Renews the Lease until renewal fails for [`RENEW_DEADLINE`] or
    /// another replica holds it; then returns (the caller must stop acting).
    pub async fn keep(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(LEASE_DURATION / 3).await;
            match self.try_hold().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("another replica holds the Lease");
                    return;
                }
                Err(error) => tracing::warn!(%error, "renewing the Lease failed"),
            }
            if last_renewal.elapsed() >= RENEW_DEADLINE {
                tracing::error!("could not renew the Lease in time");
                return;
            }
        }
    }

    /// Gives the Lease up on a clean shutdown, so a standby takes over at
    /// once instead of waiting for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(identity = %self.identity, "released the leader Lease"),
            Err(error) => tracing::warn!(%error, "could not release the leader Lease"),
        }
    }

    /// Takes or renews the Lease if it is free, expired or ours.
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !is_expired(&spec, now) {
            return Ok(false);
        }
        let acquired = if ours {
            spec.acquire_time.map_or(now, |t| t.0)
        } else {
            now
        };
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        lease.spec = Some(self.spec(now, acquired, transitions));
        // The resourceVersion makes this a compare-and-swap: if another
        // replica wrote the Lease since we read it, we lose the race.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

fn is_expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed
        .0
        .checked_add(duration)
        .map_or(true, |expiry| expiry < now)
}

/// The label the leader puts on its own pod, and takes off every other
/// operator pod: the chart's Service selects it, so the stores' heartbeats
/// reach the replica that coordinates, while every replica is Ready (a
/// standby that is not Ready would hold `helm install --wait` and
/// `kubectl rollout status` forever).
pub struct LeaderLabel {
    pods: Api<Pod>,
    own: String,
}

/// How often labelling the leader's pod is tried before the leader gives up
/// (each try a second apart): the Service reaches no coordinator until it
/// succeeds, so a leader that cannot label itself stops acting.
pub const LABEL_ATTEMPTS: u32 = 10;

impl LeaderLabel {
    /// For the operator running in pod `own` of `pods`' namespace.
    pub fn new(pods: Api<Pod>, own: &str) -> Self {
        Self {
            pods,
            own: own.to_owned(),
        }
    }

    /// Takes the label off this pod (a container restarted in the same pod
    /// keeps its labels; it is a standby until it leads again).
    pub async fn stand_by(&self) -> Result<(), kube::Error> {
        self.set(&self.own, None).await
    }

    /// Labels this pod the leader's, after taking the label off every other
    /// pod (an old leader that crashed, or was cut off and has stopped
    /// acting), retrying [`LABEL_ATTEMPTS`] times.
    pub async fn lead(&self) -> Result<(), kube::Error> {
        let mut attempt = 1;
        loop {
            match self.try_lead().await {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= LABEL_ATTEMPTS => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, attempt, "cannot label the leader's pod yet");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn try_lead(&self) -> Result<(), kube::Error> {
        let selector = format!("{OPERATOR_LEADER_LABEL}=true");
        let labelled = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await?;
        for pod in labelled.items {
            if let Some(name) = pod.metadata.name.filter(|n| n != &self.own) {
                self.set(&name, None).await?;
            }
        }
        self.set(&self.own, Some("true")).await
    }

    async fn set(&self, pod: &str, value: Option<&str>) -> Result<(), kube::Error> {
        let patch = serde_json::json!({"metadata": {"labels": {OPERATOR_LEADER_LABEL: value}}});
        match self
            .pods
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // A pod that went has no label to take off.
            Err(kube::Error::Api(status)) if status.code == 404 && value.is_none() => Ok(()),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_duration_since_renewal() {
        let renewed = Timestamp::from_second(1_000).expect("time");
        let spec = LeaseSpec {
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(!is_expired(
            &spec,
            Timestamp::from_second(1_010).expect("time")
        ));
        assert!(is_expired(
            &spec,
            Timestamp::from_second(1_016).expect("time")
        ));
        assert!(is_expired(&LeaseSpec::default(), renewed));
    }
}
