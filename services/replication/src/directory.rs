//! Where the primary and the readable members of each replicated tier are,
//! as seen by a client of the tier (the frontend, and the order tier calling
//! the catalog). It is kept current two ways: the coordinator pushes every
//! change to `POST /peer/directory`, and a refresher polls the coordinator
//! every heartbeat interval in case a push was lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router, middleware};
use bookstore_core::cluster::Role;
use bookstore_core::peer::PeerClient;
use bookstore_core::token::{PeerToken, require_token};

use crate::node::messages::Done;
use crate::topology::Topology;

/// The latest topology of every replicated tier.
#[derive(Clone, Default)]
pub struct Directory {
    topologies: Arc<RwLock<BTreeMap<Role, Topology>>>,
    next_reader: Arc<AtomicUsize>,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `topology` if it is newer than the one held for its tier.
    pub fn update(&self, topology: Topology) {
        let mut topologies = self.topologies.write().unwrap_or_else(|p| p.into_inner());
        let newer = topologies
            .get(&topology.tier)
            .is_none_or(|held| topology.epoch > held.epoch);
        if newer {
            topologies.insert(topology.tier, topology);
        }
    }

    pub fn topology(&self, tier: Role) -> Option<Topology> {
        let topologies = self.topologies.read().unwrap_or_else(|p| p.into_inner());
        topologies.get(&tier).cloned()
    }

    /// The primary's (public, peer) addresses, if the tier has a primary.
    pub fn primary(&self, tier: Role) -> Option<(String, String)> {
        let topology = self.topology(tier)?;
        topology
            .primary_member()
            .map(|p| (p.public.clone(), p.peer.clone()))
    }

    /// The public addresses of the members that serve reads, starting at a
    /// different member each call so reads spread over the replicas.
    pub fn readers(&self, tier: Role) -> Vec<String> {
        let Some(topology) = self.topology(tier) else {
            return Vec::new();
        };
        let mut readers: Vec<String> = topology.readable().map(|m| m.public.clone()).collect();
        if !readers.is_empty() {
            let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
            readers.rotate_left(start);
        }
        readers
    }

    /// The route the coordinator pushes topologies to.
    pub fn push_route(&self, token: PeerToken) -> Router {
        Router::new()
            .route("/peer/directory", post(receive_push))
            .with_state(self.clone())
            .layer(middleware::from_fn_with_state(token, require_token))
    }

    /// Polls the coordinator every `interval`, forever.
    pub fn spawn_refresher(&self, client: PeerClient, coordinator_url: String, interval: Duration) {
        let directory = self.clone();
        tokio::spawn(async move {
            let url = format!("{coordinator_url}/coordinator/topology");
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let fetched: Result<Vec<Topology>, _> =
                    client.get("coordinator", "topology", &url, &()).await;
                match fetched {
                    Ok(topologies) => topologies.into_iter().for_each(|t| directory.update(t)),
                    Err(error) => tracing::debug!(%error, "topology refresh failed"),
                }
            }
        });
    }
}

async fn receive_push(
    State(directory): State<Directory>,
    Json(topology): Json<Topology>,
) -> Json<Done> {
    directory.update(topology);
    Json(Done { ok: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::TopologyMember;

    fn topology(epoch: u64, primary: u32) -> Topology {
        let member = |ordinal: u32| TopologyMember {
            ordinal,
            incarnation: 1,
            peer: format!("p{ordinal}"),
            public: format!("a{ordinal}"),
            live: true,
            in_sync: true,
        };
        Topology {
            tier: Role::Catalog,
            epoch,
            primary: Some(primary),
            members: vec![member(0), member(1)],
        }
    }

    #[test]
    fn older_topologies_never_replace_newer_ones() {
        let directory = Directory::new();
        directory.update(topology(5, 1));
        directory.update(topology(4, 0));
        assert_eq!(
            directory.primary(Role::Catalog),
            Some(("a1".into(), "p1".into()))
        );
    }

    #[test]
    fn reads_rotate_over_the_readable_members() {
        let directory = Directory::new();
        directory.update(topology(1, 0));
        let first = directory.readers(Role::Catalog);
        let second = directory.readers(Role::Catalog);
        assert_eq!(first.len(), 2);
        assert_ne!(first[0], second[0]);
    }
}
