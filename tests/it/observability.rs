//! The observability that ships: the Grafana dashboard (`deploy/grafana/`) and the Prometheus
//! alerting rules (`deploy/prometheus/`). `promtool` checks the rules, runs their unit tests and
//! parses every panel's query; every metric the dashboard and the rules name is one a real relay
//! exports, and every metric family the relay exports has a panel; the dashboard is well-formed; and
//! a real Prometheus scraping a real relay evaluates every panel's query to data, loads the rules
//! without an evaluation error, and raises each alert when its cause is staged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::common::*;
use crate::ops::documented_metrics;

const SECOND: Duration = Duration::from_secs(1);
const RULES: &str = "deploy/prometheus/sio-relay-rules.yaml";
const RULE_TESTS: &str = "deploy/prometheus/sio-relay-rules.test.yaml";
const DASHBOARD: &str = "deploy/grafana/sio-relay.json";
const INSTALL: &str =
    "apt-get install --no-install-recommends prometheus (Debian's package ships promtool too)";

/// The alerts the rules file must hold, each with the metric it watches: one per alert of the
/// "Alerts worth having" of docs/03-operating.md (checked below against that paragraph), and the
/// relay down.
const ALERTS: [(&str, &str); 9] = [
    ("SioRelayGroupLagGrowing", "sio_relay_group_lag"),
    ("SioRelayGroupPendingGrowing", "sio_relay_group_pending"),
    ("SioRelayDeadLetters", "sio_relay_dead_lettered_total"),
    ("SioRelayEntriesHeld", "sio_relay_held_entries"),
    ("SioRelayRedisDisconnected", "sio_relay_redis_connected"),
    ("SioRelayRedisRefusing", "sio_relay_redis_refusing"),
    ("SioRelayParkedEntries", "sio_relay_parked_entries"),
    ("SioRelayGroupRecreated", "sio_relay_group_recreated_total"),
    ("SioRelayDown", "up"),
];

/// The rows of the dashboard, in order.
const ROWS: [&str; 6] = [
    "Flow",
    "Backlog",
    "Latency",
    "Redis",
    "Client acknowledgements",
    "Failures",
];

fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one YAML document");
    docs.remove(0)
}

struct Rule {
    alert: String,
    expr: String,
    annotations: BTreeMap<String, String>,
    severity: String,
}

fn rules() -> Vec<Rule> {
    let file = yaml(RULES);
    let mut rules = Vec::new();
    for group in file["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let alert = rule["alert"].as_str().expect("alerting rules only");
            let annotations = rule["annotations"]
                .as_hash()
                .unwrap_or_else(|| panic!("{alert}: annotations"))
                .iter()
                .map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into()))
                .collect();
            rules.push(Rule {
                alert: alert.into(),
                expr: rule["expr"].as_str().expect("expr").into(),
                annotations,
                severity: rule["labels"]["severity"].as_str().unwrap_or("").into(),
            });
        }
    }
    rules
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel, rows included, with the panels of collapsed rows.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner);
        }
    }
    panels
}

/// (panel title, query) of every target of every panel.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    all_panels(dashboard)
        .into_iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or("").to_owned()))
        })
        .collect()
}

/// A panel's query with Grafana's variables replaced, as Grafana sends it to Prometheus.
fn as_promql(expr: &str, rate_interval: &str, job: &str) -> String {
    let promql = expr
        .replace("$__rate_interval", rate_interval)
        .replace("$job", job)
        .replace("$instance", ".*")
        .replace("$stream", ".*");
    assert!(!promql.contains('$'), "an unknown variable in {expr}");
    promql
}

/// The relay's metric names an expression uses: the identifiers starting `sio_relay_`, outside
/// string literals (label values).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ident(c) && (i == 0 || !(ident(chars[i - 1]) || chars[i - 1] == '$')) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.starts_with("sio_relay_") {
                assert!(
                    word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{word:?} in {expr}"
                );
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// What `/metrics` exports: the name of every sample, and every family with its type.
struct Exposition {
    samples: BTreeSet<String>,
    families: BTreeMap<String, String>,
}

impl Exposition {
    fn parse(body: &str) -> Exposition {
        let mut samples = BTreeSet::new();
        let mut families = BTreeMap::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                families.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                samples.insert(line[..end].to_owned());
            }
        }
        Exposition { samples, families }
    }

    /// The family a sample name belongs to (OpenMetrics: a counter's samples end in `_total`, a
    /// histogram's in `_bucket`, `_sum` and `_count`).
    fn family_of(&self, sample: &str) -> Option<&str> {
        self.families.iter().find_map(|(family, kind)| {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            suffixes
                .iter()
                .any(|s| sample == format!("{family}{s}"))
                .then_some(family.as_str())
        })
    }
}

#[test]
fn metric_names_are_read_from_expressions_and_not_from_label_values() {
    let names = metric_names(
        r#"sum by (le) (rate(sio_relay_a_bucket{job=~"$job", reason="sio_relay_fake"}[5m]))
           / on() group_left sio_relay_b_total or label_replace(up, "x", 'sio_relay_y', "", "")"#,
    );
    let expected: BTreeSet<String> = ["sio_relay_a_bucket", "sio_relay_b_total"]
        .map(String::from)
        .into();
    assert_eq!(names, expected);
}

/// `promtool check rules` and `promtool test rules` pass; every alert has unit tests that fire it
/// and tests that do not; and every panel's query parses (as a recording rule checked by promtool).
#[test]
fn promtool_checks_the_rules_runs_their_tests_and_parses_every_panel_query() {
    let promtool = require("promtool", INSTALL);
    let run = |args: &[&str], file: &Path| {
        let out = Command::new(&promtool)
            .args(args)
            .arg(file)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?} {file:?}:\n{text}");
        text
    };
    let checked = run(&["check", "rules"], &repo_path(RULES));
    let rules = rules();
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{checked}"
    );
    run(&["test", "rules"], &repo_path(RULE_TESTS));

    // Each alert is tested both ways.
    let tests = yaml(RULE_TESTS);
    let mut fired = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in tests["tests"].as_vec().expect("tests") {
        for case in test["alert_rule_test"].as_vec().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            match case["exp_alerts"].as_vec() {
                Some(alerts) if !alerts.is_empty() => fired.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    for rule in &rules {
        assert!(
            fired.contains(&rule.alert),
            "no unit test fires {}",
            rule.alert
        );
        assert!(
            quiet.contains(&rule.alert),
            "no unit test where {} stays quiet",
            rule.alert
        );
    }

    // The dashboard's queries, as Grafana sends them, through PromQL's own parser.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yaml");
    let mut recording = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let queries = queries(&dashboard());
    for (i, (title, expr)) in queries.iter().enumerate() {
        let promql = serde_json::to_string(&as_promql(expr, "5m", ".*")).unwrap();
        recording.push_str(&format!(
            "      # {title}\n      - record: dashboard_query_{i}\n        expr: {promql}\n"
        ));
    }
    std::fs::write(&file, recording).unwrap();
    let checked = run(&["check", "rules"], &file);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
}

/// A relay that has delivered an entry and dead-lettered a malformed one, so that its labelled
/// families (entries read by source, dead letters by reason) have a series: what it exports.
fn exported_metrics() -> Exposition {
    let redis = RedisServer::start();
    let sub = Subscriber::start(&redis, "/");
    let relay = Relay::start(&redis, "relay-1", &[]);
    relay.wait_ready(10 * SECOND);
    let port = relay.http_port();
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "e")]);
    xadd(&mut con, &[("event", "connect")]);
    sub.wait_count(1, 10 * SECOND);
    wait_until(10 * SECOND, "both entries are acknowledged", || {
        reading(&http_get(port, "/metrics").1, "acknowledged_total") == Some(2.0)
    });
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    Exposition::parse(&body)
}

/// Every metric the dashboard and the rules name exists in a real relay's `/metrics` (a sample of
/// that exact name); every family the relay exports has a panel, each histogram its p50 and p99;
/// every alert docs/03-operating.md recommends has its rule.
#[test]
fn the_dashboard_and_the_rules_name_exported_metrics_and_cover_them_all() {
    let exported = exported_metrics();
    // Every family shows a sample: none is left unseen for lack of a label set.
    for family in exported.families.keys() {
        assert!(
            exported
                .samples
                .iter()
                .any(|s| exported.family_of(s) == Some(family.as_str())),
            "{family} has no series yet: drive the relay further"
        );
    }
    // The docs' table names nothing that is not exported here (so nothing escapes coverage).
    for name in documented_metrics() {
        let base = format!("sio_relay_{}", name.split('{').next().unwrap());
        assert!(
            exported.samples.contains(&base) || exported.samples.contains(&format!("{base}_count")),
            "docs/03-operating.md's {name} is not in /metrics: {:?}",
            exported.samples
        );
    }

    let dashboard = dashboard();
    let queries = queries(&dashboard);
    let rules = rules();
    let mut on_dashboard = BTreeSet::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(
            !names.is_empty() || expr.contains("up{"),
            "panel {title:?} queries no relay metric: {expr}"
        );
        for name in names {
            assert!(
                exported.samples.contains(&name),
                "panel {title:?} uses {name}, which the relay does not export: {expr}"
            );
            on_dashboard.insert(name);
        }
    }
    for rule in &rules {
        for name in metric_names(&rule.expr) {
            assert!(
                exported.samples.contains(&name),
                "alert {} uses {name}, which the relay does not export",
                rule.alert
            );
        }
    }
    let covered: BTreeSet<&str> = on_dashboard
        .iter()
        .filter_map(|n| exported.family_of(n))
        .collect();
    for (family, kind) in &exported.families {
        assert!(
            covered.contains(family.as_str()),
            "{family} ({kind}) has no panel on the dashboard"
        );
        if kind == "histogram" {
            for q in ["0.5", "0.99"] {
                assert!(
                    queries
                        .iter()
                        .any(|(_, e)| e.contains(&format!("histogram_quantile({q},"))
                            && e.contains(&format!("{family}_bucket"))),
                    "no p{} of {family}",
                    &q[2..]
                );
            }
        }
    }

    // The rules are exactly the expected alerts, each on its metric, each with a severity and
    // instructions.
    let names: Vec<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    assert_eq!(names, ALERTS.map(|(a, _)| a));
    for (rule, (_, metric)) in rules.iter().zip(ALERTS) {
        let uses = if metric == "up" {
            rule.expr.contains("up{job=")
        } else {
            metric_names(&rule.expr).contains(metric)
        };
        assert!(
            uses,
            "{} does not watch {metric}: {}",
            rule.alert, rule.expr
        );
        assert!(
            ["warning", "critical"].contains(&rule.severity.as_str()),
            "{}: severity {:?}",
            rule.alert,
            rule.severity
        );
        let description = &rule.annotations["description"];
        assert!(rule.annotations.contains_key("summary"), "{}", rule.alert);
        assert!(
            description.contains("`sio-relay status`") || description.contains("`sio-relay dead"),
            "{}: the description tells the operator what to run",
            rule.alert
        );
    }
    // The recommended alerts of docs/03-operating.md, by the metrics its paragraph names, all
    // have a rule.
    let chapter = read("docs/03-operating.md");
    let paragraph = chapter
        .split("Alerts worth having:")
        .nth(1)
        .expect("the alerts paragraph of docs/03-operating.md")
        .split("\n\n")
        .next()
        .unwrap();
    let mut recommended = BTreeSet::new();
    for code in paragraph.split('`').skip(1).step_by(2) {
        for word in code.split(|c: char| !(c.is_ascii_lowercase() || c == '_')) {
            let name = format!("sio_relay_{word}");
            if !word.is_empty() && exported.samples.contains(&name) {
                recommended.insert(name);
            }
        }
    }
    let watched: BTreeSet<String> = ALERTS
        .iter()
        .filter(|(_, m)| *m != "up")
        .map(|(_, m)| m.to_string())
        .collect();
    assert_eq!(
        recommended, watched,
        "the documented alerts and the rules' metrics"
    );
}

/// The dashboard imports: a Prometheus datasource variable used by every panel and query, job,
/// instance and stream variables applied to every selector, unique ids, a grid without overlaps, the rows in
/// order with panels under each.
#[test]
fn the_dashboard_is_well_formed() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_i64().unwrap() >= 36);
    assert_eq!(dashboard["uid"], "sio-relay");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    for name in ["job", "instance"] {
        let v = variable(name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        let query = v["query"]["query"].as_str().unwrap();
        assert!(
            query.starts_with("label_values(sio_relay_build_info"),
            "{query}"
        );
        assert!(query.ends_with(&format!(", {name})")), "{query}");
    }
    // The streams of the relays selected (one per partition, or the one `source.stream`).
    let stream = variable("stream");
    assert_eq!(stream["datasource"]["uid"], "${datasource}");
    assert_eq!(
        stream["query"]["query"],
        r#"label_values(sio_relay_acknowledged_total{job=~"$job", instance=~"$instance"}, stream)"#
    );

    let panels = all_panels(&dashboard);
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(i64, i64, i64, i64, String)> = Vec::new();
    for panel in &panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        let id = panel["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{title}: id"));
        assert!(ids.insert(id), "panel id {id} twice ({title})");
        let grid = &panel["gridPos"];
        let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| {
            grid[k]
                .as_i64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(
            h > 0 && w > 0 && x >= 0 && y >= 0 && x + w <= 24,
            "{title}: {grid}"
        );
        for &(bx, by, bw, bh, ref other) in &boxes {
            let apart = x >= bx + bw || bx >= x + w || y >= by + bh || by >= y + h;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((x, y, w, h, title.to_owned()));
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title}: a description"
        );
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            assert!(
                ref_ids.insert(target["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let expr = target["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "{title}: a target without expr");
            // Every selector filters by the variables, the stream's too where the series is one
            // stream's (all but those about the process: `up`, `build_info`, the configuration's
            // reloads, the spans not exported).
            let selectors = expr.matches('{').count();
            let per_process = [
                "up",
                "sio_relay_build_info",
                "sio_relay_config_reloads_total",
                "sio_relay_trace_spans_dropped_total",
            ]
            .iter()
            .map(|name| {
                expr.matches(&format!(r#"{name}{{job=~"$job", instance=~"$instance"}}"#))
                    .count()
            })
            .sum::<usize>();
            let per_stream = expr
                .matches(r#"{job=~"$job", instance=~"$instance", stream=~"$stream"}"#)
                .count();
            assert!(
                selectors == per_process + per_stream && selectors > 0,
                "{title}: every selector takes $job and $instance, and $stream unless it is about the process: {expr}"
            );
        }
    }

    // Rows in order, each followed by its panels, each panel below its row.
    let top: &Vec<Value> = dashboard["panels"].as_array().unwrap();
    let rows: Vec<&Value> = top.iter().filter(|p| p["type"] == "row").collect();
    let titles: Vec<&str> = rows.iter().map(|r| r["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ROWS);
    let mut row_y = -1;
    let mut in_row = 0;
    for panel in top {
        let y = panel["gridPos"]["y"].as_i64().unwrap();
        if panel["type"] == "row" {
            assert!(row_y < 0 || in_row > 0, "an empty row before y {y}");
            assert!(y > row_y, "rows out of order");
            row_y = y;
            in_row = 0;
        } else {
            assert!(
                row_y >= 0 && y > row_y,
                "{} is above its row",
                panel["title"]
            );
            in_row += 1;
        }
    }
    assert!(in_row > 0, "the last row is empty");
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A real Prometheus, scraping one relay every second with the rules loaded.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(relay_port: u16) -> Prometheus {
        let binary = require("prometheus", INSTALL);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: sio-relay\n    static_configs:\n      \
                 - targets: [\"127.0.0.1:{relay_port}\"]\n",
                rules = repo_path(RULES).display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus { child, port, dir };
        wait_until(30 * SECOND, "Prometheus is ready", || {
            http_get(port, "/-/ready").0 == 200
        });
        prometheus
    }

    fn api(&self, path: &str) -> Value {
        let (status, body) = http_get(self.port, path);
        let value: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: {status} {e}: {body}"));
        assert_eq!(value["status"], "success", "GET {path}: {body}");
        value["data"].clone()
    }

    /// The instant vector `expr` evaluates to now.
    fn query(&self, expr: &str) -> Vec<Value> {
        let encoded: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let data = self.api(&format!("/api/v1/query?query={encoded}"));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Alerts pending or firing now.
    fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `alert` is pending or firing (`firing` only when `firing`), with `label` if
    /// given; returns it.
    fn wait_alert(&self, alert: &str, firing: bool, label: Option<(&str, &str)>) -> Value {
        let mut found = None;
        wait_until(30 * SECOND, &format!("Prometheus raises {alert}"), || {
            found = self.alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == alert
                    && (!firing || a["state"] == "firing")
                    && label.is_none_or(|(k, v)| a["labels"][k] == v)
            });
            found.is_some()
        });
        let alert = found.unwrap();
        for text in alert["annotations"].as_object().unwrap().values() {
            let text = text.as_str().unwrap();
            assert!(
                !text.contains("{{") && !text.contains("<no value>") && !text.contains("<error"),
                "an annotation did not render: {text}"
            );
        }
        alert
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("prometheus.log"));
            eprintln!("--- prometheus log ---\n{}", log.unwrap_or_default());
        }
    }
}

/// Prometheus 2 scrapes a real relay (its OpenMetrics text), every panel's query returns data, the
/// rules evaluate without errors, and each alert is raised when its cause is staged: a growing
/// backlog (the lag and pending alerts, aggregated over the relays), an entry held, a dead letter
/// (the first of its reason, which `rate()` alone misses), Redis refusing, an entry parked, the
/// group destroyed, Redis killed, the relay killed. Alerts with a `for:` longer than a test are
/// seen pending; their timing is what `promtool test rules` checks.
#[test]
fn a_real_prometheus_scraping_a_relay_shows_every_panel_and_raises_every_alert() {
    let mut redis = RedisServer::start();
    let _sub = Subscriber::start(&redis, "/");
    let mut con = redis.connection();
    // A consumer that died with an entry: it stays pending (claim_idle 1 h).
    xadd(&mut con, &[("event", "e")]);
    read_as(&mut con, "dead-pod", 1);
    let mut relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("DELIVERY__CLAIM_IDLE", "1h"),
            ("DELIVERY__MAX_HELD", "1"),
            ("DELIVERY__RETRY_INTERVAL", "100ms"),
            ("SOURCE__BATCH_SIZE", "1"),
            ("REDIS__BACKOFF_MAX", "200ms"),
        ],
    );
    relay.wait_ready(10 * SECOND);
    let port = relay.http_port();
    let instance = format!("127.0.0.1:{port}");
    let metrics = || http_get(port, "/metrics").1;

    // An entry for a namespace nobody listens on is held; past max_held (1) reading pauses, so the
    // lag is above 0 from Prometheus's first scrape on.
    xadd(&mut con, &[("event", "e"), ("nsp", "/nobody")]);
    xadd(&mut con, &[("event", "e")]);
    xadd(&mut con, &[("event", "e")]);
    wait_until(15 * SECOND, "the lag and the held entry show", || {
        let body = metrics();
        reading(&body, "group_lag").is_some_and(|lag| lag >= 1.0)
            && reading(&body, "held_entries") == Some(1.0)
    });
    let prometheus = Prometheus::start(port);
    wait_until(30 * SECOND, "Prometheus scrapes the relay", || {
        prometheus.query(r#"up{job="sio-relay"} == 1"#).len() == 1
    });
    let mut raised = BTreeSet::new();

    // The backlog grows: two entries added for every one the dead consumer takes.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut con = redis.connection();
            let until = Instant::now() + 60 * SECOND;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                xadd(&mut con, &[("event", "e")]);
                xadd(&mut con, &[("event", "e")]);
                read_as(&mut con, "dead-pod", 1);
                // Paces the producer; the alerts below are waited for.
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        // Stops the producer on the way out, a failed wait included.
        let _stop = StopOnDrop(&stop);
        for alert in ["SioRelayGroupLagGrowing", "SioRelayGroupPendingGrowing"] {
            let a = prometheus.wait_alert(alert, false, Some(("job", "sio-relay")));
            assert!(
                a["labels"].get("instance").is_none(),
                "{alert} is one alert per group, not per relay: {a}"
            );
            assert_eq!(
                a["labels"]["stream"], STREAM,
                "{alert} names its stream: {a}"
            );
            raised.insert(alert);
        }
    });
    prometheus.wait_alert("SioRelayEntriesHeld", false, Some(("instance", &instance)));
    raised.insert("SioRelayEntriesHeld");

    // A server for the held entry's namespace: it is delivered and reading resumes. A malformed
    // entry is then the first dead letter of its reason.
    let _nobody = Subscriber::start(&redis, "/nobody");
    wait_until(30 * SECOND, "the held entry is delivered", || {
        reading(&metrics(), "held_entries") == Some(0.0)
    });
    xadd(&mut con, &[("event", "connect")]);
    prometheus.wait_alert("SioRelayDeadLetters", true, Some(("reason", "malformed")));
    raised.insert("SioRelayDeadLetters");

    // Every panel's query, as Grafana sends it, returns series.
    let queries = queries(&dashboard());
    let deadline = Instant::now() + 30 * SECOND;
    loop {
        let empty: Vec<&(String, String)> = queries
            .iter()
            .filter(|(_, expr)| {
                prometheus
                    .query(&as_promql(expr, "10s", "sio-relay"))
                    .is_empty()
            })
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels whose query returns nothing: {empty:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A dead-letter key of the wrong type: Redis refuses the batch with the dead letter.
    let _: () = redis::Commands::set(&mut con, DEAD, "oops").unwrap();
    xadd(&mut con, &[("event", "connect")]);
    prometheus.wait_alert(
        "SioRelayRedisRefusing",
        false,
        Some(("instance", &instance)),
    );
    raised.insert("SioRelayRedisRefusing");
    // An exhausted dead-letter stream: the malformed entry is parked.
    exhaust_dead_letter_stream(&mut con);
    prometheus.wait_alert(
        "SioRelayParkedEntries",
        false,
        Some(("instance", &instance)),
    );
    raised.insert("SioRelayParkedEntries");
    let _: () = redis::Commands::del(&mut con, DEAD).unwrap();
    wait_until(10 * SECOND, "the parked entry is dead-lettered", || {
        reading(&metrics(), "parked_entries") == Some(0.0)
    });
    // The group destroyed.
    destroy_group(&mut con);
    prometheus.wait_alert(
        "SioRelayGroupRecreated",
        true,
        Some(("instance", &instance)),
    );
    raised.insert("SioRelayGroupRecreated");

    // No rule failed to evaluate on the real series.
    let groups = prometheus.api("/api/v1/rules")["groups"].clone();
    let evaluated: Vec<&Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(evaluated.len(), ALERTS.len());
    for rule in evaluated {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // Redis gone, then the relay.
    redis.kill();
    prometheus.wait_alert(
        "SioRelayRedisDisconnected",
        false,
        Some(("connection", "writer")),
    );
    raised.insert("SioRelayRedisDisconnected");
    relay.kill();
    prometheus.wait_alert("SioRelayDown", false, Some(("instance", &instance)));
    raised.insert("SioRelayDown");

    assert_eq!(raised, ALERTS.map(|(a, _)| a).into());
}
