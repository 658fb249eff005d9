//! The deployment files: the systemd unit passes `systemd-analyze verify` (when that tool exists),
//! the Kubernetes manifests parse and hang together (the monitoring ones included: the metrics
//! Service, the ServiceMonitor and the PrometheusRule), and the configuration they ship is valid.

use std::path::Path;
use std::process::Command;

use sio_relay::config::Config;

use crate::common::binary;
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies() {
    let unit = repo("deploy/systemd/sio-relay.service");
    for directive in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LoadCredential=redis-password:",
        "SIO_RELAY_REDIS__PASSWORD_FILE=%d/redis-password",
        "--config /etc/sio-relay/config.toml",
    ] {
        assert!(unit.contains(directive), "the unit lacks {directive}");
    }
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze not installed: skipping `systemd-analyze verify`");
        return;
    };
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sio-relay.service");
    let unit = unit.replace("/usr/local/bin/sio-relay", &binary().to_string_lossy());
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("sio-relay.service"))
        .collect();
    assert!(out.status.success() && own.is_empty(), "{stderr}");
}

fn which(binary: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(binary))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

fn manifest(name: &str) -> Yaml {
    let docs = YamlLoader::load_from_str(&repo(&format!("deploy/kubernetes/{name}")))
        .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "{name}");
    docs.into_iter().next().unwrap()
}

#[test]
fn the_kubernetes_manifests_parse_and_fit_together() {
    let kustomization = manifest("kustomization.yaml");
    let resources: Vec<&str> = kustomization["resources"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for core in ["configmap.yaml", "secret.yaml", "deployment.yaml"] {
        assert!(resources.contains(&core), "{core} in {resources:?}");
    }
    // `kubectl apply -k` must work on a cluster without the Prometheus Operator: no object of its
    // CRDs among the default resources.
    for resource in &resources {
        let api = manifest(resource)["apiVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            !api.contains('.') || api.ends_with(".k8s.io/v1"),
            "{resource} ({api}) needs a CRD: keep it out of kustomization.yaml"
        );
    }

    let config_map = manifest("configmap.yaml");
    let secret = manifest("secret.yaml");
    let deployment = manifest("deployment.yaml");
    assert_eq!(config_map["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    assert_eq!(deployment["kind"].as_str(), Some("Deployment"));

    // The shipped config is one the relay accepts.
    let toml = config_map["data"]["config.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::create_dir_all(dir.path().join("secret")).unwrap();
    let toml = toml.replace(
        "/etc/sio-relay/secret",
        dir.path().join("secret").to_str().unwrap(),
    );
    std::fs::write(&file, toml).unwrap();
    std::fs::write(dir.path().join("secret/redis-password"), "x").unwrap();
    let cfg = Config::load_with_env(Some(&file), Some(Default::default())).expect("valid config");
    let port = cfg.http.addr().expect("the probes need http.listen").port() as i64;

    let pod = &deployment["spec"]["template"]["spec"];
    let relay = &pod["initContainers"][0];
    assert_eq!(relay["name"].as_str(), Some("sio-relay"));
    assert_eq!(
        relay["restartPolicy"].as_str(),
        Some("Always"),
        "a native sidecar"
    );
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        grace as u64 > cfg.shutdown.timeout.as_secs(),
        "grace period > shutdown.timeout"
    );
    assert_eq!(relay["ports"][0]["containerPort"].as_i64(), Some(port));
    assert_eq!(
        relay["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/livez")
    );
    assert_eq!(
        relay["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let env = &relay["env"][0];
    assert_eq!(env["name"].as_str(), Some("SIO_RELAY_SOURCE__CONSUMER"));
    assert_eq!(
        env["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.name"),
        "the consumer is named after the pod"
    );
    assert!(relay["resources"]["limits"]["memory"].as_str().is_some());
    assert_eq!(
        relay["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"].as_str(),
        config_map["metadata"]["name"].as_str()
    );
    assert_eq!(
        pod["volumes"][1]["secret"]["secretName"].as_str(),
        secret["metadata"]["name"].as_str()
    );

    // The relay can read its password as the manifests run it: secret files belong to root and,
    // with fsGroup, to that group; the relay runs as a non-root user.
    let uid = relay["securityContext"]["runAsUser"]
        .as_i64()
        .expect("runAsUser");
    let gid = relay["securityContext"]["runAsGroup"]
        .as_i64()
        .expect("runAsGroup");
    let fs_group = pod["securityContext"]["fsGroup"].as_i64();
    let mode = pod["volumes"][1]["secret"]["defaultMode"]
        .as_i64()
        .expect("defaultMode");
    assert_ne!(uid, 0, "not root");
    let readable_by_group = fs_group.is_some_and(|g| g == gid) && mode & 0o040 != 0;
    let readable_by_others = mode & 0o004 != 0;
    assert!(
        readable_by_group && !readable_by_others,
        "uid {uid} gid {gid} fsGroup {fs_group:?} mode {mode:o}: the relay must read the secret, others must not"
    );
    let password_file = &cfg.redis.password_file;
    let mount = relay["volumeMounts"][1]["mountPath"].as_str().unwrap();
    assert!(
        config_map["data"]["config.toml"]
            .as_str()
            .unwrap()
            .contains(&format!("{mount}/redis-password")),
        "the config reads the password from the mounted secret ({password_file})"
    );
}

#[test]
fn the_dockerfile_builds_from_files_that_exist_and_runs_as_non_root() {
    let dockerfile = repo("Dockerfile");
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
            assert!(path.exists(), "{line}: {source} does not exist");
        }
    }
    assert!(dockerfile.contains("USER nonroot"));
    assert!(dockerfile.contains("--locked"));
}

/// `labels` (a YAML map) holds every key and value of `selector`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let selector = selector.as_hash().expect("a selector");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels[k.as_str().unwrap()] == *v)
}

/// The metrics Service selects the Deployment's pods and exposes the relay's named port, not-ready
/// pods included; the ServiceMonitor selects that Service alone and scrapes that port's
/// `/metrics`, under the job the alerting rules expect; the PrometheusRule carries exactly the
/// groups of `deploy/prometheus/sio-relay-rules.yaml`.
#[test]
fn the_monitoring_manifests_scrape_the_relay_and_carry_the_rules() {
    let deployment = manifest("deployment.yaml");
    let service = manifest("service-metrics.yaml");
    let monitor = manifest("servicemonitor.yaml");
    let rule = manifest("prometheusrule.yaml");
    let template = &deployment["spec"]["template"];
    let relay = &template["spec"]["initContainers"][0];
    assert_eq!(relay["name"].as_str(), Some("sio-relay"));
    let relay_port = &relay["ports"][0];
    let port_name = relay_port["name"]
        .as_str()
        .expect("the relay's port is named");
    let container_port = relay_port["containerPort"].as_i64().unwrap();

    assert_eq!(service["apiVersion"].as_str(), Some("v1"));
    assert_eq!(service["kind"].as_str(), Some("Service"));
    assert!(
        selects(
            &service["spec"]["selector"],
            &template["metadata"]["labels"]
        ),
        "the Service selects the Deployment's pods"
    );
    let ports = service["spec"]["ports"].as_vec().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["targetPort"].as_str(), Some(port_name));
    assert_eq!(ports[0]["port"].as_i64(), Some(container_port));
    let service_port = ports[0]["name"]
        .as_str()
        .expect("the Service's port is named");
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "a relay that lost Redis is not ready, and must still be scraped"
    );
    // The annotations for annotation-based scraping name the same port.
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/port"].as_str(),
        Some(container_port.to_string().as_str())
    );

    assert_eq!(
        monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(monitor["kind"].as_str(), Some("ServiceMonitor"));
    let match_labels = &monitor["spec"]["selector"]["matchLabels"];
    assert!(
        selects(match_labels, &service["metadata"]["labels"]),
        "the ServiceMonitor selects the metrics Service"
    );
    assert!(
        !selects(match_labels, &template["metadata"]["labels"]),
        "the ServiceMonitor must not select the app's own Services by the app's labels"
    );
    let endpoints = monitor["spec"]["endpoints"].as_vec().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"].as_str(), Some(service_port));
    assert_eq!(endpoints[0]["path"].as_str(), Some("/metrics"));
    // Without jobLabel, Prometheus's job is the Service's name: the job SioRelayDown watches.
    assert!(monitor["spec"]["jobLabel"].is_badvalue());
    let rules_file = repo("deploy/prometheus/sio-relay-rules.yaml");
    let job = service["metadata"]["name"].as_str().unwrap();
    assert!(
        rules_file.contains(&format!("up{{job=\"{job}\"}}")),
        "the rules watch up{{job=\"{job}\"}}"
    );

    assert_eq!(
        rule["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    let rules = YamlLoader::load_from_str(&rules_file).unwrap().remove(0);
    assert!(rules["groups"].as_vec().is_some_and(|g| !g.is_empty()));
    assert!(
        rule["spec"]["groups"] == rules["groups"],
        "prometheusrule.yaml's spec.groups differ from deploy/prometheus/sio-relay-rules.yaml's groups"
    );
}
