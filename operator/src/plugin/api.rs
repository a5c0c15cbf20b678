//! The plugin's way into a cluster: everything goes through the API server
//! with the user's kubeconfig. The store's members are read through the pod
//! proxy (`/api/v1/namespaces/NS/pods/POD:PORT/proxy/...`) and the store's
//! coordinator through the operator Service's proxy, both with the store's
//! peer token from its Secret (the members' and the coordinator's peer
//! routes require it); annotations are set with JSON merge patches at the
//! resource version read, retried on a conflict.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};

use crate::crd::BookStore;
use crate::names::StoreNames;
use crate::resources::TOKEN_KEY;
use bookstore_core::token::TOKEN_HEADER;

use super::edit::annotation_patch;

/// How often an annotation edit is retried when the store changed between
/// reading and patching it (409 Conflict).
const CONFLICT_RETRIES: usize = 5;

/// One store, through the API server.
#[derive(Clone)]
pub struct StoreApi {
    pub client: Client,
    pub names: StoreNames,
    stores: Api<BookStore>,
}

/// What an annotation edit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edited {
    /// The annotation now has this value (`None`: removed).
    Set(Option<String>),
    /// It already said what was asked; nothing was patched.
    Unchanged,
}

impl StoreApi {
    pub fn new(client: Client, name: &str, namespace: &str) -> Self {
        Self {
            stores: Api::namespaced(client.clone(), namespace),
            names: StoreNames::new(name, namespace),
            client,
        }
    }

    /// The store, or an error saying it does not exist.
    pub async fn get(&self) -> anyhow::Result<BookStore> {
        self.stores
            .get_opt(&self.names.name)
            .await
            .with_context(|| format!("reading BookStore {}", self.describe()))?
            .ok_or_else(|| {
                anyhow!(
                    "no BookStore {} (kubectl get bs -A lists them)",
                    self.describe()
                )
            })
    }

    /// `books/shop`.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.names.namespace, self.names.name)
    }

    /// Sets one annotation to what `edit` makes of the store (`Ok(None)`:
    /// nothing to change; `Ok(Some(None))`: remove it), at the resource
    /// version read, re-reading the store on a conflict.
    pub async fn edit_annotation(
        &self,
        key: &str,
        edit: impl Fn(&BookStore) -> anyhow::Result<Option<Option<String>>>,
    ) -> anyhow::Result<Edited> {
        for _ in 0..CONFLICT_RETRIES {
            let store = self.get().await?;
            let Some(value) = edit(&store)? else {
                return Ok(Edited::Unchanged);
            };
            let patch = annotation_patch(
                key,
                value.as_deref(),
                store.metadata.resource_version.as_deref(),
            );
            match self
                .stores
                .patch(
                    &self.names.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => return Ok(Edited::Set(value)),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!("annotating BookStore {} with {key}", self.describe())
                    });
                }
            }
        }
        bail!(
            "BookStore {} kept changing while the plugin set {key}; try again",
            self.describe()
        )
    }

    /// The store's peer token, from the Secret the operator generated.
    pub async fn token(&self) -> anyhow::Result<String> {
        let name = self.names.token_secret();
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.names.namespace)
            .get_opt(&name)
            .await
            .with_context(|| format!("reading the Secret {name}"))?
            .ok_or_else(|| anyhow!("the store has no Secret {name} yet (the operator makes it)"))?;
        let bytes = secret
            .data
            .and_then(|mut data| data.remove(TOKEN_KEY))
            .ok_or_else(|| anyhow!("the Secret {name} has no {TOKEN_KEY}"))?;
        String::from_utf8(bytes.0).map_err(|_| anyhow!("the Secret {name}'s token is not text"))
    }

    /// The store's pods.
    pub async fn pods(&self) -> anyhow::Result<Vec<Pod>> {
        let selector = format!("app.kubernetes.io/instance={}", self.names.name);
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.names.namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .with_context(|| format!("listing the pods of {}", self.describe()))?;
        Ok(pods.items)
    }

    /// GET `path` on a pod's `port` through the API server's pod proxy, with
    /// the peer token.
    pub async fn pod_get(
        &self,
        pod: &str,
        port: i32,
        path: &str,
        token: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let uri = format!(
            "/api/v1/namespaces/{}/pods/{pod}:{port}/proxy{path}",
            self.names.namespace
        );
        self.proxied_get(&uri, token, timeout).await
    }

    /// GET `path` on a Service's `port` through the API server's service
    /// proxy, with the peer token.
    pub async fn service_get(
        &self,
        service: &ServiceRef,
        path: &str,
        token: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let uri = format!(
            "/api/v1/namespaces/{}/services/{}:{}/proxy{path}",
            service.namespace, service.name, service.port
        );
        self.proxied_get(&uri, token, timeout).await
    }

    async fn proxied_get(
        &self,
        uri: &str,
        token: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let request = http::Request::get(uri)
            .header(TOKEN_HEADER, token)
            .body(Vec::new())
            .context("building a proxy request")?;
        match tokio::time::timeout(timeout, self.client.request_text(request)).await {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(kube::Error::Api(status))) => bail!("{} ({})", status.message, status.code),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => bail!("no answer within {} ms", timeout.as_millis()),
        }
    }
}

/// A Service by namespace, name and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port: u16,
    /// The path under it (`/stores/NS/NAME`).
    pub path: String,
}

/// The operator Service a member's `--coordinator-url` names
/// (`http://SVC.NS.svc:PORT/stores/...`), if it names one by its cluster
/// DNS name.
pub fn operator_service(url: &str) -> Option<ServiceRef> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_suffix(".cluster.local")
        .unwrap_or(host)
        .strip_suffix(".svc")?;
    let (name, namespace) = host.split_once('.')?;
    if namespace.contains('.') || name.is_empty() {
        return None;
    }
    Some(ServiceRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port,
        path: format!("/{}", path.trim_end_matches('/')),
    })
}

/// The `--coordinator-url` a pod's container runs with.
pub fn coordinator_url_of(pod: &Pod) -> Option<String> {
    let args = pod.spec.as_ref()?.containers.first()?.args.as_ref()?;
    let at = args.iter().position(|a| a == "--coordinator-url")?;
    args.get(at + 1).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_service_is_read_from_the_members_coordinator_url() {
        assert_eq!(
            operator_service("http://bookstore-operator.ops.svc:9100/stores/books/shop"),
            Some(ServiceRef {
                namespace: "ops".into(),
                name: "bookstore-operator".into(),
                port: 9100,
                path: "/stores/books/shop".into(),
            })
        );
        assert_eq!(
            operator_service("http://op.ops.svc.cluster.local:9100/stores/b/s/")
                .map(|s| (s.name, s.path)),
            Some(("op".into(), "/stores/b/s".into()))
        );
        for url in [
            "http://127.0.0.1:9100/stores/b/s",
            "http://op.ops.example.com:9100/stores/b/s",
            "https://op.ops.svc:9100/stores/b/s",
            "http://op.ops.svc/stores/b/s",
        ] {
            assert_eq!(operator_service(url), None, "{url}");
        }
    }
}
