//! The operator's cluster-wide kill switch: the ConfigMap
//! `mapchaos-kill-switch` in the operator's namespace. While it exists every
//! experiment is paused (running storms are stopped, none start), unless its
//! `data.enabled` is `"false"`. `kubectl -n <operator namespace> create
//! configmap mapchaos-kill-switch` stops all chaos; deleting it resumes.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The ConfigMap's name.
pub const CONFIG_MAP: &str = "mapchaos-kill-switch";

/// Whether a kill-switch ConfigMap turns chaos off.
pub fn is_on(config_map: &ConfigMap) -> bool {
    config_map
        .data
        .as_ref()
        .and_then(|data| data.get("enabled"))
        .is_none_or(|enabled| enabled.trim() != "false")
}

/// The kill switch's state: `None` until the first list has answered, so
/// nothing is reconciled on a guess.
#[derive(Clone)]
pub struct KillSwitch {
    state: watch::Receiver<Option<bool>>,
}

impl KillSwitch {
    /// A switch fixed in one position (tests, and the mocked controller).
    pub fn fixed(on: bool) -> Self {
        let (sender, state) = watch::channel(Some(on));
        // The receiver keeps reading the last value after the sender is gone.
        drop(sender);
        KillSwitch { state }
    }

    /// Watch the ConfigMap in `namespace` until `shutdown`.
    pub fn watch(client: Client, namespace: &str, shutdown: CancellationToken) -> Self {
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
        let (sender, state) = watch::channel(None);
        let namespace = namespace.to_owned();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(api, config).default_backoff());
            let mut seen_in_list = false;
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                let on = match event {
                    None => return,
                    Some(Err(error)) => {
                        tracing::warn!(%error, %namespace, "cannot watch the kill switch ConfigMap; keeping its last state");
                        continue;
                    }
                    Some(Ok(watcher::Event::Init)) => {
                        seen_in_list = false;
                        continue;
                    }
                    Some(Ok(watcher::Event::InitApply(config_map))) => {
                        seen_in_list = is_on(&config_map);
                        continue;
                    }
                    Some(Ok(watcher::Event::InitDone)) => seen_in_list,
                    Some(Ok(watcher::Event::Apply(config_map))) => is_on(&config_map),
                    Some(Ok(watcher::Event::Delete(_))) => false,
                };
                let changed = sender.send_if_modified(|state| {
                    let changed = *state != Some(on);
                    *state = Some(on);
                    changed
                });
                if changed {
                    tracing::warn!(%namespace, on, "kill switch {}", if on { "ON: every experiment pauses" } else { "off" });
                }
            }
        });
        KillSwitch { state }
    }

    /// On, off, or not yet known.
    pub fn state(&self) -> Option<bool> {
        *self.state.borrow()
    }

    /// Wait until the state is known; `false` if the watch ended first.
    pub async fn known(&self) -> bool {
        let mut state = self.state.clone();
        state.wait_for(Option::is_some).await.is_ok()
    }

    /// One item per change of state, for `Controller::reconcile_all_on`.
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        let mut state = self.state.clone();
        state.mark_unchanged();
        futures::stream::unfold(state, |mut state| async move {
            state.changed().await.ok()?;
            Some(((), state))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config_map(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn the_config_map_existing_is_on_unless_enabled_is_false() {
        assert!(is_on(&ConfigMap::default()));
        assert!(is_on(&config_map(&[("reason", "incident 42")])));
        assert!(is_on(&config_map(&[("enabled", "true")])));
        assert!(!is_on(&config_map(&[("enabled", "false")])));
    }

    #[tokio::test]
    async fn a_fixed_switch_is_known() {
        let switch = KillSwitch::fixed(true);
        assert!(switch.known().await);
        assert_eq!(switch.state(), Some(true));
    }
}
