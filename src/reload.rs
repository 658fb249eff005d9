//! Configuration reload on SIGHUP: the config file (and environment) is read again, what a running
//! relay can change is applied (the log level), and every other changed key is named as needing a
//! restart, so an operator never wonders whether an edit took effect.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use signal_hook::consts::signal::SIGHUP;
use signal_hook_tokio::Signals;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::logging::LevelHandle;
use crate::metrics::{Metrics, Reload, ReloadLabels};
use crate::systemd;

/// Keys a running relay applies on reload.
const LIVE_KEYS: [&str; 1] = ["log.level"];

/// Installs the SIGHUP handler. `running` is the configuration the relay started with; each reload
/// is counted in `metrics` by what it did.
pub fn listen(
    path: Option<PathBuf>,
    running: Config,
    level: LevelHandle,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP])?;
    tokio::spawn(async move {
        let mut running = running;
        while signals.next().await.is_some() {
            systemd::reloading();
            let result = match Config::load(path.as_deref()) {
                Err(e) => {
                    error!(error = %e, "configuration reload failed; the running configuration stays");
                    Reload::failed
                }
                Ok(new) => apply(&mut running, &new, &level),
            };
            metrics
                .config_reloads
                .get_or_create(&ReloadLabels { result })
                .inc();
            systemd::reloaded();
        }
    });
    Ok(())
}

fn apply(running: &mut Config, new: &Config, level: &LevelHandle) -> Reload {
    let changed = changed_keys(running, new);
    if changed.is_empty() {
        info!("configuration reloaded: nothing changed");
        return Reload::unchanged;
    }
    let mut applied = Vec::new();
    if changed.contains(&"log.level".to_owned()) {
        match level.set(&new.log.level) {
            Ok(in_force) => {
                running.log.level = new.log.level.clone();
                applied.push(format!("log.level = {in_force:?}"));
            }
            Err(e) => error!(error = %e, "log.level not applied"),
        }
    }
    let needs_restart: Vec<&String> = changed
        .iter()
        .filter(|k| !LIVE_KEYS.contains(&k.as_str()))
        .collect();
    if !applied.is_empty() {
        info!(applied = ?applied, "configuration reloaded");
    }
    if !needs_restart.is_empty() {
        warn!(keys = ?needs_restart, "changed keys take effect only after a restart");
    }
    Reload::changed
}

/// The `section.key` names whose values differ.
fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) = (flatten(a), flatten(b));
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

fn flatten(cfg: &Config) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    if let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(cfg) {
        for (section, keys) in sections {
            if let serde_json::Value::Object(keys) = keys {
                for (key, value) in keys {
                    out.insert(format!("{section}.{key}"), value);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_named_by_section() {
        let a = Config::default();
        let mut b = a.clone();
        b.log.level = "debug".into();
        b.source.batch_size = 10;
        b.delivery.claim_idle = std::time::Duration::from_secs(9);
        assert_eq!(
            changed_keys(&a, &b),
            ["delivery.claim_idle", "log.level", "source.batch_size"]
        );
        assert!(changed_keys(&a, &a).is_empty());
    }
}
