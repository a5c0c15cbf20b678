//! The durable state of a store's coordinator, in a ConfigMap the store
//! owns (`<store>-coordinator`, key `state.json`).
//!
//! Why a ConfigMap: it lives as long as the store (an owner reference; the
//! garbage collector removes it with the store), it is readable with
//! `kubectl get cm`, and its `resourceVersion` gives optimistic concurrency:
//! every save names the version this coordinator last read or wrote, so if
//! another operator leader saved in between, the API server refuses the save
//! (409) and this coordinator publishes nothing and reloads. Two leaders can
//! therefore never both advance the same state.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bookstore_replication::coordinator::durable::{
    DurableError, DurableFuture, DurableState, DurableStore,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::names::{FIELD_MANAGER, StoreNames};

/// The ConfigMap key that holds the state.
pub const STATE_KEY: &str = "state.json";

/// A coordinator's state in a ConfigMap.
pub struct ConfigMapStore {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    owner: OwnerReference,
    /// The version this coordinator last read or wrote; `None` before the
    /// ConfigMap exists.
    resource_version: Mutex<Option<String>>,
}

impl ConfigMapStore {
    /// The state of the store `names`, owned by `owner` (the BookStore).
    pub fn for_store(client: Client, names: &StoreNames, owner: OwnerReference) -> Self {
        Self {
            api: Api::namespaced(client, &names.namespace),
            namespace: names.namespace.clone(),
            name: names.coordinator_state(),
            labels: names.labels(),
            owner,
            resource_version: Mutex::new(None),
        }
    }

    fn remember(&self, config_map: &ConfigMap) {
        *self
            .resource_version
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = config_map.metadata.resource_version.clone();
    }

    fn known_version(&self) -> Option<String> {
        self.resource_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn error(&self, action: &'static str, error: kube::Error) -> DurableError {
        match &error {
            kube::Error::Api(status) if status.code == 409 => DurableError::Conflict(format!(
                "ConfigMap {} changed since this coordinator read it: {error}",
                self.name
            )),
            _ => DurableError::Io {
                action,
                location: self.location(),
                message: error.to_string(),
            },
        }
    }

    async fn load_state(&self) -> Result<DurableState, DurableError> {
        let Some(config_map) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error("read", e))?
        else {
            *self
                .resource_version
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            return Ok(DurableState::new());
        };
        self.remember(&config_map);
        let Some(text) = config_map.data.as_ref().and_then(|d| d.get(STATE_KEY)) else {
            return Ok(DurableState::new());
        };
        serde_json::from_str(text).map_err(|error| DurableError::Corrupt {
            location: self.location(),
            message: error.to_string(),
        })
    }

    async fn save_state(&self, text: String) -> Result<(), DurableError> {
        let saved = match self.known_version() {
            None => {
                let config_map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        labels: Some(self.labels.clone()),
                        owner_references: Some(vec![self.owner.clone()]),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(STATE_KEY.to_owned(), text)])),
                    ..Default::default()
                };
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..Default::default()
                };
                self.api
                    .create(&params, &config_map)
                    .await
                    .map_err(|e| self.error("create", e))?
            }
            Some(version) => {
                // A merge patch that names the resourceVersion is refused
                // with 409 if anyone wrote the ConfigMap since.
                let patch = json!({
                    "metadata": {"resourceVersion": version},
                    "data": {STATE_KEY: text},
                });
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..Default::default()
                };
                self.api
                    .patch(&self.name, &params, &Patch::Merge(&patch))
                    .await
                    .map_err(|e| self.error("update", e))?
            }
        };
        self.remember(&saved);
        Ok(())
    }
}

impl DurableStore for ConfigMapStore {
    fn load(&self) -> DurableFuture<'_, DurableState> {
        Box::pin(self.load_state())
    }

    fn save(&self, state: &DurableState) -> DurableFuture<'_, ()> {
        let text = serde_json::to_string_pretty(state);
        Box::pin(async move {
            let text = text.map_err(|error| DurableError::Io {
                action: "encode",
                location: self.location(),
                message: error.to_string(),
            })?;
            self.save_state(text).await
        })
    }

    fn location(&self) -> String {
        format!("ConfigMap {}/{}", self.namespace, self.name)
    }
}
