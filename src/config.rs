//! Configuration: `config.toml` plus `SIO_RELAY_*` environment overrides, checked once at start.
//!
//! Every key has a default (the values in the repository's `config.toml`), so the relay runs without a
//! file. Unknown keys, values of the wrong type and values out of range are refused before anything
//! connects, with the key named, because a typo in a daemon's config should stop it at deploy time,
//! not change its behaviour silently at 3 a.m.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::entry::{Limits, JSON_DEPTHS};
use crate::packet::{Adapter, Parser, StreamsOptions, SubscriptionMode, Target, MAX_STREAM_COUNT};

/// Prefix of the environment variables that override config keys: `SIO_RELAY_REDIS__URL`.
pub const ENV_PREFIX: &str = "SIO_RELAY";

/// The most entries one batch may hold: the delivery script passes a batch's IDs to a single XACK,
/// and Lua refuses to unpack much more than a few thousand values at once.
pub const MAX_BATCH_SIZE: usize = 4096;

/// Bounds of `delivery.max_batch_bytes`: at least one ordinary packet, and well under the 32 MiB
/// that Redis allows a Pub/Sub client's output buffer by default.
pub const BATCH_BYTES: std::ops::RangeInclusive<usize> = 4096..=(16 << 20);

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub redis: RedisConfig,
    pub source: SourceConfig,
    pub delivery: DeliveryConfig,
    pub target: TargetConfig,
    pub dead_letter: DeadLetterConfig,
    pub acks: AcksConfig,
    pub limits: Limits,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// How the relay finds its Redis: at `url`, through the sentinels in `urls`, or as the nodes of
    /// a cluster reached through the seeds in `urls`.
    pub mode: RedisMode,
    /// Standalone: the server. Sentinel and cluster: how to reach the master the sentinels name or
    /// the cluster's nodes (TLS or not, ACL user, password, database); its host and port are not
    /// used.
    pub url: String,
    /// Sentinel: the sentinels; cluster: seed nodes; tried in order. A list, or in the environment
    /// a comma-separated string.
    #[serde(deserialize_with = "list_or_commas")]
    pub urls: Vec<String>,
    /// Sentinel: the name the sentinels monitor the master under.
    pub sentinel_master: String,
    /// Replicas that must have the relay's acknowledgements before it goes on (WAIT); 0 = off.
    pub wait_replicas: u32,
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// A file holding the password (a Kubernetes Secret or systemd credential); it overrides any
    /// password in `url` and is read again at every reconnection, so a rotated password is picked up.
    pub password_file: String,
    /// PEM file of the CA that signed the server's certificate (`rediss://` only); empty: the
    /// system's trust store.
    pub tls_ca_file: String,
    /// PEM client certificate and key for servers that require mutual TLS; both or neither.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Response timeout of every command except the blocking read, whose timeout derives from
    /// `source.block`.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            mode: RedisMode::Standalone,
            url: "redis://127.0.0.1:6379".into(),
            urls: Vec::new(),
            sentinel_master: String::new(),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            password_file: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// The most streams `source.streams` may list.
pub const MAX_PARTITIONS: usize = 64;

/// `redis.mode`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server at `redis.url`.
    Standalone,
    /// The master that the sentinels at `redis.urls` name for `redis.sentinel_master`, asked again
    /// at every reconnection.
    Sentinel,
    /// A Redis Cluster, found through the seed nodes at `redis.urls`: the relay works on the
    /// primary that serves its stream's slot (asked again at every reconnection) and counts the
    /// Socket.IO servers on every node.
    Cluster,
}

/// A list from the file (`["a", "b"]`) or from the environment, which only has strings (`a,b`).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Form::deserialize(d)? {
        Form::List(list) => list,
        Form::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    pub stream: String,
    /// Partitions: several streams instead of `stream`, each with its dead-letter stream
    /// `<stream>:dead`, relayed side by side (see [`crate::partition`]). Empty: `stream` alone.
    #[serde(deserialize_with = "list_or_commas")]
    pub streams: Vec<String>,
    pub group: String,
    /// Empty means `$HOSTNAME`, else the host name; resolved by [`Config::load`].
    pub consumer: String,
    pub start_id: String,
    pub batch_size: usize,
    #[serde(with = "humantime_serde")]
    pub block: Duration,
    /// Other consumers idle this long with nothing pending are removed from the group; zero never.
    #[serde(with = "humantime_serde")]
    pub stale_consumer_idle: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            stream: "sio-relay".into(),
            streams: Vec::new(),
            group: "sio-relay".into(),
            consumer: String::new(),
            start_id: "0".into(),
            batch_size: 256,
            block: Duration::from_secs(2),
            stale_consumer_idle: Duration::from_secs(3600),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub min_receivers: u32,
    pub max_deliveries: u32,
    #[serde(with = "humantime_serde")]
    pub claim_idle: Duration,
    #[serde(with = "humantime_serde")]
    pub claim_interval: Duration,
    /// Zero disables expiry.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    pub max_held: usize,
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// The most packet bytes one delivery script publishes: each server's Pub/Sub output buffer
    /// takes a whole batch at once, and Redis disconnects a server whose buffer passes its limit.
    pub max_batch_bytes: usize,
    /// When a published entry counts as delivered (see [`Confirm`]).
    pub confirm: Confirm,
    /// With `confirm = "processed"`: how long servers that are still subscribed may take to answer
    /// before their batch is confirmed without their answer.
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// How long held entries wait, once their namespace has servers again, for the clients of
    /// their rooms to be back; zero releases them as soon as servers listen.
    #[serde(with = "humantime_serde")]
    pub release_wait: Duration,
}

/// When a published entry is acknowledged in the group.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Confirm {
    /// Once every server counted when it was published has processed it: each batch is followed
    /// by a request every server answers only after what came before it on its subscription (see
    /// [`crate::confirming`]). Needs Socket.IO 4.5 and `@socket.io/redis-adapter` 7.2 or later.
    #[default]
    Processed,
    /// Once Redis has written it to the servers' sockets and they are still subscribed: what an
    /// emitter can know. For servers that cannot answer (older than Socket.IO 4.5).
    Published,
    /// As `Processed`, and every emit that is not volatile goes out as a broadcast with
    /// acknowledgements, whose answers say how many clients it reached: the clients' listeners get
    /// an extra callback argument, and the servers keep it (with the packet) per socket until it is
    /// called or the socket disconnects.
    Clients,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            min_receivers: 1,
            max_deliveries: 5,
            claim_idle: Duration::from_secs(30),
            claim_interval: Duration::from_secs(5),
            max_age: Duration::ZERO,
            max_held: 10_000,
            retry_interval: Duration::from_secs(1),
            max_batch_bytes: 1 << 20,
            confirm: Confirm::Processed,
            confirm_timeout: Duration::from_secs(5),
            release_wait: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    /// The servers' adapter: `createAdapter` (classic) or `createShardedAdapter` (sharded).
    pub adapter: Adapter,
    pub key: String,
    pub uid: String,
    /// The classic adapter's `parser` option.
    pub parser: Parser,
    /// The sharded adapter's `subscriptionMode` option, as the servers have it. What the relay
    /// publishes does not depend on it: every packet goes to the namespace's channel, which every
    /// mode subscribes to (see [`Target::encode`]).
    pub subscription_mode: SubscriptionMode,
    /// The streams adapter's stream (its `streamName` option): the relay appends entries there.
    pub stream: String,
    /// The streams adapter's `streamCount` option: with more than one, its servers read
    /// `<stream>-0` .. `<stream>-<n-1>`, and the relay appends each namespace's entries to the one
    /// its servers pick for it.
    pub stream_count: u32,
    /// The streams adapter's `useShardedPubSub` option: its servers SSUBSCRIBE their namespace's
    /// channel, which is how the relay counts them.
    pub use_sharded_pubsub: bool,
    /// The streams adapter's `maxLen` option: each append trims the stream to about this many
    /// entries, as the servers' own appends do (0: not trimmed). It is also how far back a client
    /// can recover what it missed.
    pub max_len: u64,
    /// python-socketio's `channel` option (`RedisManager(url, channel=...)`, Flask-SocketIO's
    /// `channel`): the one channel of its servers.
    pub channel: String,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            adapter: Adapter::Classic,
            key: SOCKET_IO_KEY.into(),
            uid: "emitter".into(),
            parser: Parser::Msgpack,
            subscription_mode: SubscriptionMode::Dynamic,
            stream: StreamsOptions::default().name,
            stream_count: StreamsOptions::default().count,
            use_sharded_pubsub: StreamsOptions::default().sharded_pubsub,
            max_len: StreamsOptions::default().max_len,
            channel: PYTHON_SOCKETIO_CHANNEL.into(),
        }
    }
}

/// python-socketio's default channel.
const PYTHON_SOCKETIO_CHANNEL: &str = "socketio";
/// The Node adapters' default key.
const SOCKET_IO_KEY: &str = "socket.io";

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    pub stream: String,
    /// Approximate cap on the dead-letter stream's length; zero keeps everything.
    pub max_len: u64,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            stream: "sio-relay:dead".into(),
            max_len: 0,
        }
    }
}

/// Entries that ask for their clients' acknowledgements (the `ack` field): where the results go,
/// and how long and how many of them the relay waits for.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AcksConfig {
    /// One entry per acknowledged entry: its ID, the clients reached and their answers. Empty
    /// means `<source.stream>:acks` (see [`Config::acks_stream`]).
    pub stream: String,
    /// Approximate cap on the results stream's length; zero keeps everything.
    pub max_len: u64,
    /// Entries waiting for acknowledgements at once; when full, the relay stops reading.
    pub max_waiting: usize,
    /// The pause between an attempt that no client acknowledged and the next.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// An entry no client acknowledged by this age (by its ID) is dead-lettered as `unacknowledged`
    /// (or sooner, by `delivery.max_age`, as `expired`).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// The `ack` of every emit that says none and is not volatile; zero: none.
    #[serde(with = "humantime_serde")]
    pub default: Duration,
}

impl AcksConfig {
    /// [`AcksConfig::default`] as an entry's `ack`: `None` when zero.
    pub fn default_wait(&self) -> Option<Duration> {
        (!self.default.is_zero()).then_some(self.default)
    }
}

impl Default for AcksConfig {
    fn default() -> Self {
        AcksConfig {
            stream: String::new(),
            max_len: 1_000_000,
            max_waiting: 10_000,
            retry_interval: Duration::from_secs(5),
            max_age: Duration::from_secs(3600),
            default: Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `sio_relay=debug`; `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` of the health and metrics listener; empty turns it off.
    pub listen: String,
    /// Serve the operator console at `/` on the same listener.
    pub console: bool,
    /// The token that lets the console replay and drop dead letters; without one (and without
    /// `console_token_file`) the console is read-only.
    pub console_token: String,
    /// A file holding the console's token (a Kubernetes Secret); read at each mutation, so a
    /// rotated token is picked up.
    pub console_token_file: String,
    /// Host names the console answers to besides IP addresses and `localhost` (a name a reverse
    /// proxy forwards with): a page elsewhere whose name is made to resolve to the relay (DNS
    /// rebinding) is not answered. A list, or in the environment a comma-separated string.
    #[serde(deserialize_with = "list_or_commas")]
    pub console_hosts: Vec<String>,
}

/// The shortest console token accepted: a guessable token would make the console's mutations open.
pub const MIN_CONSOLE_TOKEN: usize = 16;

impl HttpConfig {
    /// The address to listen on, `None` when the listener is off.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

/// Traces of entries, exported to an OpenTelemetry collector (see [`crate::traces`]).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP receiver's base URL (`http://collector:4318`): spans go to
    /// `<it>/v1/traces`. Empty: no traces, and nothing of them is done per entry.
    pub otlp_endpoint: String,
    /// `service.name` of the spans' resource.
    pub service_name: String,
    /// Spans ended and not yet exported, at most: past it, spans are dropped and counted.
    pub max_queue: usize,
    /// Spans per export request, at most.
    pub max_batch: usize,
    /// How long an ended span may wait for its batch to fill before it is exported.
    #[serde(with = "humantime_serde")]
    pub batch_delay: Duration,
    /// How long one export request may take.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
    /// Entry spans open at once (entries in hand, waiting for servers' or clients' answers) per
    /// stream, at most: past it, entries are not traced and the span is counted as dropped.
    pub max_open: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            service_name: "sio-relay".into(),
            max_queue: 2048,
            max_batch: 512,
            batch_delay: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
            max_open: 10_000,
        }
    }
}

impl TelemetryConfig {
    /// Where spans are sent, `None` when traces are off.
    pub fn traces_url(&self) -> Option<String> {
        (!self.otlp_endpoint.is_empty())
            .then(|| format!("{}/v1/traces", self.otlp_endpoint.trim_end_matches('/')))
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.otlp_endpoint.is_empty() {
            return Ok(());
        }
        let key = "telemetry.otlp_endpoint";
        let url = url::Url::parse(&self.otlp_endpoint).map_err(|e| {
            invalid(
                key,
                format!("is not a URL ({e}); an OTLP/HTTP receiver's base, e.g. \"http://localhost:4318\""),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(
                key,
                "must be an http:// or https:// URL with a host (OTLP over HTTP; the relay appends /v1/traces)",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                key,
                "must not have a query or a fragment: the relay appends /v1/traces to it",
            ));
        }
        if self.service_name.is_empty() {
            return Err(invalid("telemetry.service_name", "must not be empty"));
        }
        if self.max_batch > self.max_queue {
            return Err(invalid(
                "telemetry.max_batch",
                format!(
                    "must not be more than telemetry.max_queue ({}), not {}",
                    self.max_queue, self.max_batch
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A config that cannot be used, with the key at fault when there is one.
#[derive(Debug)]
pub struct ConfigError {
    pub key: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "invalid configuration: `{key}`: {}", self.problem),
            None => write!(f, "invalid configuration: {}", self.problem),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why a console token is refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read {path}: {error}")]
    Unreadable { path: String, error: std::io::Error },
    #[error("the token is shorter than {MIN_CONSOLE_TOKEN} characters: use a random one (openssl rand -hex 32)")]
    TooShort,
    #[error("the token holds whitespace or control characters")]
    Whitespace,
    #[error("{path}: {problem}")]
    InFile {
        path: String,
        problem: Box<TokenError>,
    },
}

/// The token in `path`, surrounding whitespace (a file's last newline) removed.
pub fn read_console_token(path: &str) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|error| TokenError::Unreadable {
        path: path.to_owned(),
        error,
    })?;
    let token = text.trim().to_owned();
    check_console_token(&token).map_err(|problem| TokenError::InFile {
        path: path.to_owned(),
        problem: Box::new(problem),
    })?;
    Ok(token)
}

fn check_console_token(token: &str) -> Result<(), TokenError> {
    if token.chars().count() < MIN_CONSOLE_TOKEN {
        return Err(TokenError::TooShort);
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TokenError::Whitespace);
    }
    Ok(())
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: Some(key.to_owned()),
        problem: problem.into(),
    }
}

impl Config {
    /// Reads `path` (when given) and the process environment, then validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(path, None)
    }

    /// As [`Config::load`], with `env` standing in for the process environment when it is `Some`.
    pub fn load_with_env(
        path: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if let Err(e) = std::fs::metadata(path) {
                return Err(ConfigError {
                    key: None,
                    problem: format!("cannot read config file {}: {e}", path.display()),
                });
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                // Values stay the exact text given: `SIO_RELAY_SOURCE__CONSUMER=007` is consumer
                // "007", not 7; numeric keys still accept "2".
                .try_parsing(false)
                .source(env),
        );
        let source_error = |e| ConfigError {
            key: None,
            problem: describe_source_error(e, path),
        };
        let built = builder.build().map_err(source_error)?;
        let confirm_given = built.get_string("delivery.confirm").is_ok();
        let mut cfg: Config = built.try_deserialize().map_err(source_error)?;
        if matches!(
            cfg.target.adapter,
            Adapter::Streams | Adapter::PythonSocketio
        ) && !confirm_given
        {
            // The one way an entry is delivered to these servers, which answer nothing (see
            // `check_streams_target`, `check_python_socketio`): its default there, so that
            // `adapter` alone is enough.
            cfg.delivery.confirm = Confirm::Published;
        }
        if cfg.source.consumer.is_empty() {
            cfg.source.consumer = default_consumer_name();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Range and consistency checks that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_redis_url(&self.redis.url)
            .and_then(|()| check_url(&self.redis.url))
            .map_err(|problem| invalid("redis.url", problem.to_string()))?;
        let tls = self.redis.url.starts_with("rediss://");
        for (key, path) in [
            ("redis.password_file", &self.redis.password_file),
            ("redis.tls_ca_file", &self.redis.tls_ca_file),
            ("redis.tls_cert_file", &self.redis.tls_cert_file),
            ("redis.tls_key_file", &self.redis.tls_key_file),
        ] {
            if path.is_empty() {
                continue;
            }
            if key.starts_with("redis.tls") && !tls {
                return Err(invalid(
                    key,
                    "is set, but redis.url does not start with rediss://",
                ));
            }
            // Read, not just looked at: a directory or a file the relay's user may not read must
            // stop it here, not make it retry forever once running.
            std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {path}: {e}")))?;
        }
        if self.redis.tls_cert_file.is_empty() != self.redis.tls_key_file.is_empty() {
            return Err(invalid(
                "redis.tls_key_file",
                "redis.tls_cert_file and redis.tls_key_file go together: set both or neither",
            ));
        }
        self.check_topology()?;
        self.check_bounds()?;
        self.telemetry.check()?;
        if self.redis.backoff_max < self.redis.backoff_min {
            return Err(invalid(
                "redis.backoff_max",
                "must not be shorter than redis.backoff_min",
            ));
        }
        for (key, value) in [
            ("source.stream", &self.source.stream),
            ("source.group", &self.source.group),
            ("source.consumer", &self.source.consumer),
            ("target.key", &self.target.key),
            ("target.uid", &self.target.uid),
            ("target.channel", &self.target.channel),
            ("dead_letter.stream", &self.dead_letter.stream),
        ] {
            if value.is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
        }
        match self.target.adapter {
            Adapter::Sharded if self.target.parser != Parser::Msgpack => {
                return Err(invalid(
                    "target.parser",
                    "applies to the classic adapter only: the sharded adapter has no parser option (it sends JSON)",
                ))
            }
            Adapter::Classic | Adapter::Streams
                if self.target.subscription_mode != SubscriptionMode::Dynamic =>
            {
                return Err(invalid(
                    "target.subscription_mode",
                    "applies to target.adapter = \"sharded\" only",
                ))
            }
            Adapter::Streams if self.target.parser != Parser::Msgpack => {
                return Err(invalid(
                    "target.parser",
                    "applies to the classic adapter only: the streams adapter writes JSON, or MessagePack when an entry carries bytes",
                ))
            }
            Adapter::PythonSocketio => self.check_python_socketio()?,
            _ => {}
        }
        self.check_streams_target()?;
        if self.target.adapter != Adapter::PythonSocketio
            && self.target.channel != PYTHON_SOCKETIO_CHANNEL
        {
            return Err(invalid(
                "target.channel",
                "applies to target.adapter = \"python-socketio\" only: the Node adapters' channels start with target.key",
            ));
        }
        if !matches!(self.source.start_id.as_str(), "$" | "0") {
            return Err(invalid(
                "source.start_id",
                format!(
                    "must be \"0\" (the whole stream, the default) or \"$\" (only entries added after the group is created), not {:?}",
                    self.source.start_id
                ),
            ));
        }
        if self.delivery.max_held < self.source.batch_size {
            return Err(invalid(
                "delivery.max_held",
                format!(
                    "must be at least source.batch_size ({}), not {}",
                    self.source.batch_size, self.delivery.max_held
                ),
            ));
        }
        self.check_partitions()?;
        if self.dead_letter.stream == self.source.stream {
            return Err(invalid(
                "dead_letter.stream",
                "must differ from source.stream, or dead letters would be read again",
            ));
        }
        let acks = self.acks_stream();
        if acks == self.source.stream || acks == self.dead_letter.stream {
            return Err(invalid(
                "acks.stream",
                "must differ from source.stream and dead_letter.stream: results are entries of their own",
            ));
        }
        if !self.http.listen.is_empty() && self.http.addr().is_none() {
            return Err(invalid(
                "http.listen",
                format!(
                    "must be an address such as \"0.0.0.0:9464\" or empty (off), not {:?}",
                    self.http.listen
                ),
            ));
        }
        self.check_console()?;
        tracing_subscriber::EnvFilter::builder()
            .parse(&self.log.level)
            .map_err(|e| invalid("log.level", format!("not a valid log filter: {e}")))?;
        Ok(())
    }

    /// What the streams adapter's servers can be sent, and how: an entry is delivered once it is
    /// appended to their stream (acknowledged in the same step), so the relay has nothing to ask
    /// them, neither a confirmation nor their clients' acknowledgements.
    fn check_streams_target(&self) -> Result<(), ConfigError> {
        let t = &self.target;
        let defaults = TargetConfig::default();
        if t.adapter != Adapter::Streams {
            for (key, set) in [
                ("target.stream", t.stream != defaults.stream),
                (
                    "target.stream_count",
                    t.stream_count != defaults.stream_count,
                ),
                ("target.use_sharded_pubsub", t.use_sharded_pubsub),
                ("target.max_len", t.max_len != defaults.max_len),
            ] {
                if set {
                    return Err(invalid(key, "applies to target.adapter = \"streams\" only"));
                }
            }
            return Ok(());
        }
        if t.stream.is_empty() {
            return Err(invalid("target.stream", "must not be empty"));
        }
        if !(1..=MAX_STREAM_COUNT).contains(&t.stream_count) {
            return Err(invalid(
                "target.stream_count",
                format!(
                    "must be between 1 and {MAX_STREAM_COUNT} (the servers' streamCount), not {}",
                    t.stream_count
                ),
            ));
        }
        let relays: Vec<String> = self
            .partitions()
            .into_iter()
            .flat_map(|p| [p.source.stream, p.dead_letter.stream])
            .collect();
        if let Some(taken) = self
            .target()
            .streams
            .names()
            .into_iter()
            .find(|stream| relays.contains(stream))
        {
            return Err(invalid(
                "target.stream",
                format!("the servers' stream {taken:?} must differ from the relay's source and dead-letter streams: it is the Socket.IO servers' own"),
            ));
        }
        if self.delivery.confirm != Confirm::Published {
            return Err(invalid(
                "delivery.confirm",
                "must be \"published\" with target.adapter = \"streams\" (its default there): an entry is delivered once appended to the servers' stream, which they read in order and replay to reconnecting clients",
            ));
        }
        if !self.acks.default.is_zero() {
            return Err(invalid(
                "acks.default",
                "must be unset with target.adapter = \"streams\": the relay cannot ask the streams adapter's servers for their clients' acknowledgements",
            ));
        }
        Ok(())
    }

    /// python-socketio's servers take messages and answer none: the relay can neither ask them to
    /// confirm a batch nor hear their clients' acknowledgements, and they have neither a key nor
    /// the Node adapters' options.
    fn check_python_socketio(&self) -> Result<(), ConfigError> {
        let node_only =
            "applies to the Node adapters only, not to target.adapter = \"python-socketio\"";
        if self.target.key != SOCKET_IO_KEY {
            return Err(invalid(
                "target.key",
                format!("{node_only}: python-socketio's servers use target.channel"),
            ));
        }
        if self.target.parser != Parser::Msgpack {
            return Err(invalid("target.parser", node_only));
        }
        if self.target.subscription_mode != SubscriptionMode::Dynamic {
            return Err(invalid("target.subscription_mode", node_only));
        }
        if self.delivery.confirm != Confirm::Published {
            return Err(invalid(
                "delivery.confirm",
                "must be \"published\" with target.adapter = \"python-socketio\" (its default there): its servers cannot answer a request, so the relay knows what Redis wrote to their sockets and no more",
            ));
        }
        if self.acks.default_wait().is_some() {
            return Err(invalid(
                "acks.default",
                "must be zero with target.adapter = \"python-socketio\": its servers cannot carry the clients' acknowledgements of an emit from outside (entries with `ack` are dead-lettered as `unsupported`)",
            ));
        }
        Ok(())
    }

    /// The console needs the listener, and one token at most, long enough not to be guessed.
    fn check_console(&self) -> Result<(), ConfigError> {
        let http = &self.http;
        if http.console && http.listen.is_empty() {
            return Err(invalid(
                "http.console",
                "is true, but http.listen is empty: the console is served on http.listen",
            ));
        }
        if !http.console_token.is_empty() && !http.console_token_file.is_empty() {
            return Err(invalid(
                "http.console_token_file",
                "http.console_token and http.console_token_file are two ways to give one token: set one",
            ));
        }
        if !http.console_token_file.is_empty() {
            read_console_token(&http.console_token_file)
                .map_err(|problem| invalid("http.console_token_file", problem.to_string()))?;
        } else if !http.console_token.is_empty() {
            check_console_token(&http.console_token)
                .map_err(|problem| invalid("http.console_token", problem.to_string()))?;
        }
        Ok(())
    }

    /// Sentinel mode needs sentinels and a master name, cluster mode seed nodes; the nodes listed
    /// share one scheme and one set of credentials (they are asked in turn, as one service).
    /// Standalone mode uses neither key, so setting one there is a mistake worth naming.
    fn check_topology(&self) -> Result<(), ConfigError> {
        let redis = &self.redis;
        let unused = |key: &str, mode: &str, fix: &str| {
            invalid(key, format!("is set, but redis.mode is \"{mode}\"{fix}"))
        };
        match redis.mode {
            RedisMode::Standalone => {
                if !redis.urls.is_empty() {
                    return Err(unused(
                        "redis.urls",
                        "standalone",
                        ": set redis.mode = \"sentinel\" or \"cluster\" to use them",
                    ));
                }
                if !redis.sentinel_master.is_empty() {
                    return Err(unused(
                        "redis.sentinel_master",
                        "standalone",
                        ": set redis.mode = \"sentinel\" to use sentinels",
                    ));
                }
                return Ok(());
            }
            RedisMode::Sentinel => {
                if redis.urls.is_empty() {
                    return Err(invalid(
                        "redis.urls",
                        "must list the sentinels in sentinel mode, e.g. [\"redis://sentinel-1:26379\", \"redis://sentinel-2:26379\"]",
                    ));
                }
                if redis.sentinel_master.is_empty() {
                    return Err(invalid(
                        "redis.sentinel_master",
                        "must name the master in sentinel mode (the name in the sentinels' `sentinel monitor <name> ...`)",
                    ));
                }
            }
            RedisMode::Cluster => {
                if redis.urls.is_empty() {
                    return Err(invalid(
                        "redis.urls",
                        "must list one or more nodes of the cluster in cluster mode, e.g. [\"redis://node-1:6379\", \"redis://node-2:6379\"]",
                    ));
                }
                if !redis.sentinel_master.is_empty() {
                    return Err(unused("redis.sentinel_master", "cluster", ""));
                }
                if url::Url::parse(&redis.url).is_ok_and(|u| !matches!(u.path(), "" | "/" | "/0")) {
                    return Err(invalid(
                        "redis.url",
                        "names a database, but a cluster has only database 0",
                    ));
                }
            }
        }
        let mut first: Option<(String, String, Option<String>)> = None;
        for url in &redis.urls {
            check_redis_url(url)
                .and_then(|()| check_url(url))
                .map_err(|problem| {
                    invalid("redis.urls", format!("{}: {problem}", mask_password(url)))
                })?;
            let parsed = url::Url::parse(url).expect("checked above");
            let access = (
                parsed.scheme().to_owned(),
                parsed.username().to_owned(),
                parsed.password().map(str::to_owned),
            );
            match &first {
                None => first = Some(access),
                Some(known) if *known == access => {}
                Some(_) => {
                    return Err(invalid(
                        "redis.urls",
                        "every node listed must be reached the same way: one scheme (redis:// or rediss://), one user and password",
                    ))
                }
            }
        }
        if let (RedisMode::Cluster, Some((scheme, _, _))) = (redis.mode, first) {
            if !redis.url.starts_with(&format!("{scheme}://")) {
                return Err(invalid(
                    "redis.urls",
                    "in cluster mode the nodes must use the scheme of redis.url (rediss:// for TLS), which also gives their user and password",
                ));
            }
            let key = match self.source.streams.is_empty() {
                true => "source.stream",
                false => "source.streams",
            };
            for partition in self.partitions() {
                partition.check_one_slot(key)?;
            }
        }
        Ok(())
    }

    /// `source.streams` replaces `source.stream` and `dead_letter.stream` (each partition's dead
    /// letters go to `<partition>:dead`): setting those too is a contradiction worth naming.
    fn check_partitions(&self) -> Result<(), ConfigError> {
        let streams = &self.source.streams;
        if streams.is_empty() {
            return Ok(());
        }
        let defaults = Config::default();
        for (key, set) in [
            (
                "source.stream",
                self.source.stream != defaults.source.stream,
            ),
            (
                "dead_letter.stream",
                self.dead_letter.stream != defaults.dead_letter.stream,
            ),
            ("acks.stream", !self.acks.stream.is_empty()),
        ] {
            if set {
                return Err(invalid(
                    key,
                    "is set together with source.streams, which replaces it (each partition's dead letters go to \"<partition>:dead\", its acknowledgement results to \"<partition>:acks\"): keep one of them",
                ));
            }
        }
        if streams.len() > MAX_PARTITIONS {
            return Err(invalid(
                "source.streams",
                format!(
                    "lists {} streams; at most {MAX_PARTITIONS} (each is a relay loop with three connections)",
                    streams.len()
                ),
            ));
        }
        for (i, stream) in streams.iter().enumerate() {
            if stream.is_empty() {
                return Err(invalid("source.streams", "lists an empty stream name"));
            }
            if streams[..i].contains(stream) {
                return Err(invalid("source.streams", format!("lists {stream:?} twice")));
            }
            for (derived, what) in [("dead", "dead-letter"), ("acks", "results")] {
                if streams.contains(&format!("{stream}:{derived}")) {
                    return Err(invalid(
                        "source.streams",
                        format!("lists {stream:?} and its {what} stream \"{stream}:{derived}\""),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The configuration of each partition: `source.stream` and `dead_letter.stream` set to its
    /// stream and `<stream>:dead`; this configuration itself when there is one stream.
    pub fn partitions(&self) -> Vec<Config> {
        if self.source.streams.is_empty() {
            return vec![self.clone()];
        }
        self.source
            .streams
            .iter()
            .map(|stream| {
                let mut partition = self.clone();
                partition.source.streams = Vec::new();
                partition.dead_letter.stream = format!("{stream}:dead");
                partition.source.stream = stream.clone();
                partition
            })
            .collect()
    }

    /// Where the results of acknowledged entries go: `acks.stream`, or `<source.stream>:acks`.
    pub fn acks_stream(&self) -> String {
        match self.acks.stream.as_str() {
            "" => format!("{}:acks", self.source.stream),
            stream => stream.to_owned(),
        }
    }

    /// The stream `entry` goes to (see [`crate::partition`]).
    pub fn stream_for(&self, entry: &crate::entry::Entry) -> &str {
        match self.source.streams.as_slice() {
            [] => &self.source.stream,
            streams => &streams[crate::partition::of(entry, streams.len())],
        }
    }

    /// In a cluster one script publishes, journals and acknowledges, and a script may only touch
    /// keys of one slot: the stream must carry a hash tag, which the keys derived from its name
    /// share, and the dead-letter stream must carry the same one.
    fn check_one_slot(&self, key: &str) -> Result<(), ConfigError> {
        use redis::cluster_routing::Slot;
        let stream = &self.source.stream;
        let example = format!(
            "{}:{{{}#/#}}",
            stream.replace(['{', '}'], ""),
            self.target.key
        );
        if crate::partition::hash_tag(stream).is_none() {
            return Err(invalid(
                key,
                format!(
                    "{stream:?} has no hash tag: in cluster mode every key of the relay must hash to one slot, which a tag in braces gives, e.g. \"{example}\" (with the sharded adapter that tag also puts the namespace channel \"{}#/#\" in the stream's slot)",
                    self.target.key
                ),
            ));
        }
        let slot = Slot::for_key(stream);
        if Slot::for_key(&self.dead_letter.stream) != slot {
            return Err(invalid(
                "dead_letter.stream",
                format!(
                    "must carry the hash tag of source.stream in cluster mode (dead letters move in one script), e.g. \"{stream}:dead\""
                ),
            ));
        }
        if Slot::for_key(self.acks_stream()) != slot {
            return Err(invalid(
                "acks.stream",
                format!(
                    "must carry the hash tag of source.stream in cluster mode (a result is written in the script that acknowledges its entry), e.g. \"{stream}:acks\""
                ),
            ));
        }
        Ok(())
    }

    /// Every duration and number between its bounds: nothing a typo can make absurd (a duration of
    /// 300000000000 years overflows the clock; a batch of a billion entries, memory).
    fn check_bounds(&self) -> Result<(), ConfigError> {
        const MS: Duration = Duration::from_millis(1);
        const SECOND: Duration = Duration::from_secs(1);
        const HOUR: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(86_400);
        const YEAR: Duration = Duration::from_secs(365 * 86_400);
        // (key, value, at least, at most, whether 0 means "off", why the lower bound)
        let durations = [
            (
                "redis.connect_timeout",
                self.redis.connect_timeout,
                MS,
                HOUR,
                false,
                "",
            ),
            (
                "redis.command_timeout",
                self.redis.command_timeout,
                MS,
                HOUR,
                false,
                "",
            ),
            (
                "redis.backoff_min",
                self.redis.backoff_min,
                MS,
                HOUR,
                false,
                "",
            ),
            (
                "redis.backoff_max",
                self.redis.backoff_max,
                MS,
                HOUR,
                false,
                "",
            ),
            (
                "redis.wait_timeout",
                self.redis.wait_timeout,
                MS,
                HOUR,
                false,
                "",
            ),
            ("source.block", self.source.block, 10 * MS, HOUR, false, ""),
            (
                "source.stale_consumer_idle",
                self.source.stale_consumer_idle,
                SECOND,
                YEAR,
                true,
                "",
            ),
            (
                "delivery.claim_idle",
                self.delivery.claim_idle,
                SECOND,
                7 * DAY,
                false,
                ": shorter lets relays steal each other's in-flight entries",
            ),
            (
                "delivery.claim_interval",
                self.delivery.claim_interval,
                MS,
                DAY,
                false,
                "",
            ),
            (
                "delivery.max_age",
                self.delivery.max_age,
                SECOND,
                100 * YEAR,
                true,
                "",
            ),
            (
                "delivery.retry_interval",
                self.delivery.retry_interval,
                MS,
                HOUR,
                false,
                "",
            ),
            (
                "delivery.confirm_timeout",
                self.delivery.confirm_timeout,
                10 * MS,
                HOUR,
                false,
                "",
            ),
            (
                "delivery.release_wait",
                self.delivery.release_wait,
                MS,
                HOUR,
                true,
                "",
            ),
            (
                "acks.retry_interval",
                self.acks.retry_interval,
                10 * MS,
                HOUR,
                false,
                "",
            ),
            (
                "acks.default",
                self.acks.default,
                MS,
                crate::entry::MAX_ACK_TIMEOUT,
                true,
                ": it is one attempt's wait, as an entry's `ack`",
            ),
            (
                "acks.max_age",
                self.acks.max_age,
                SECOND,
                100 * YEAR,
                false,
                "",
            ),
            (
                "shutdown.timeout",
                self.shutdown.timeout,
                MS,
                HOUR,
                false,
                "",
            ),
            (
                "telemetry.batch_delay",
                self.telemetry.batch_delay,
                MS,
                HOUR,
                false,
                "",
            ),
            (
                "telemetry.export_timeout",
                self.telemetry.export_timeout,
                MS,
                HOUR,
                false,
                "",
            ),
        ];
        let show = |d: Duration| humantime::format_duration(d).to_string();
        for (key, value, least, most, zero_is_off, why) in durations {
            if zero_is_off && value.is_zero() {
                continue;
            }
            if value < least || value > most {
                let off = if zero_is_off { ", or 0s (off)" } else { "" };
                return Err(invalid(
                    key,
                    format!(
                        "must be between {} and {}{off}, not {}{why}",
                        show(least),
                        show(most),
                        show(value)
                    ),
                ));
            }
        }
        // (key, value, at least, at most)
        let numbers: [(&str, u64, u64, u64); 16] = [
            (
                "redis.wait_replicas",
                u64::from(self.redis.wait_replicas),
                0,
                100,
            ),
            (
                "source.batch_size",
                self.source.batch_size as u64,
                1,
                MAX_BATCH_SIZE as u64,
            ),
            (
                "delivery.min_receivers",
                u64::from(self.delivery.min_receivers),
                0,
                10_000,
            ),
            (
                "delivery.max_deliveries",
                u64::from(self.delivery.max_deliveries),
                1,
                1_000_000,
            ),
            (
                "delivery.max_held",
                self.delivery.max_held as u64,
                self.source.batch_size as u64,
                10_000_000,
            ),
            (
                "delivery.max_batch_bytes",
                self.delivery.max_batch_bytes as u64,
                *BATCH_BYTES.start() as u64,
                *BATCH_BYTES.end() as u64,
            ),
            (
                "dead_letter.max_len",
                self.dead_letter.max_len,
                0,
                1_000_000_000_000,
            ),
            ("acks.max_len", self.acks.max_len, 0, 1_000_000_000_000),
            (
                "acks.max_waiting",
                self.acks.max_waiting as u64,
                1,
                10_000_000,
            ),
            (
                "limits.max_entry_bytes",
                self.limits.max_entry_bytes as u64,
                1024,
                64 << 20,
            ),
            ("limits.max_fields", self.limits.max_fields as u64, 1, 3900),
            (
                "limits.max_rooms",
                self.limits.max_rooms as u64,
                1,
                1_000_000,
            ),
            (
                "limits.max_json_depth",
                self.limits.max_json_depth as u64,
                *JSON_DEPTHS.start() as u64,
                *JSON_DEPTHS.end() as u64,
            ),
            (
                "telemetry.max_queue",
                self.telemetry.max_queue as u64,
                1,
                1_000_000,
            ),
            (
                "telemetry.max_batch",
                self.telemetry.max_batch as u64,
                1,
                1_000_000,
            ),
            (
                "telemetry.max_open",
                self.telemetry.max_open as u64,
                1,
                10_000_000,
            ),
        ];
        for (key, value, least, most) in numbers {
            if !(least..=most).contains(&value) {
                return Err(invalid(
                    key,
                    format!("must be between {least} and {most}, not {value}"),
                ));
            }
        }
        Ok(())
    }

    pub fn target(&self) -> Target {
        let t = &self.target;
        Target {
            key: match t.adapter {
                Adapter::PythonSocketio => t.channel.clone(),
                Adapter::Classic | Adapter::Sharded | Adapter::Streams => t.key.clone(),
            },
            uid: t.uid.clone(),
            adapter: t.adapter,
            parser: t.parser,
            streams: StreamsOptions {
                name: t.stream.clone(),
                count: t.stream_count,
                max_len: t.max_len,
                sharded_pubsub: t.use_sharded_pubsub,
            },
        }
    }
}

/// The forms of Redis URL the relay takes, said with every URL problem.
const URL_FORMS: &str = "write redis://host:6379, rediss://host:6380 (TLS), redis://user:password@host:6379/0 or redis+unix:///path/to/redis.sock";

/// What is wrong with a Redis URL, said so that the fix is obvious; the URL itself (and any
/// password in it) is not repeated.
#[derive(Debug, thiserror::Error)]
enum UrlProblem {
    #[error("not a URL ({0}): {URL_FORMS}")]
    NotAUrl(url::ParseError),
    #[error("no host name: {URL_FORMS}")]
    NoHost,
    #[error("`{0}:` is not a Redis URL scheme (is a `//` missing, or a port taken for a scheme?): {URL_FORMS}")]
    Scheme(String),
    #[error("the database after the last `/` must be a number, not `{0}`")]
    Database(String),
    #[error("not a usable Redis URL ({0}): {URL_FORMS}")]
    Unusable(String),
    #[error("`#insecure` (no certificate check) is not supported: give the server's CA in redis.tls_ca_file")]
    Insecure,
}

fn check_redis_url(text: &str) -> Result<(), UrlProblem> {
    let parsed = url::Url::parse(text).map_err(UrlProblem::NotAUrl)?;
    match parsed.scheme() {
        "redis" | "rediss" | "valkey" | "valkeys" => {
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(UrlProblem::NoHost);
            }
        }
        "redis+unix" | "unix" => {}
        other => return Err(UrlProblem::Scheme(other.to_owned())),
    }
    if let Some(db) = parsed.path().strip_prefix('/').filter(|p| !p.is_empty()) {
        if parsed.scheme().starts_with("redis")
            && !parsed.scheme().contains("unix")
            && db.parse::<u16>().is_err()
        {
            return Err(UrlProblem::Database(db.to_owned()));
        }
    }
    redis::Client::open(text)
        .map(drop)
        .map_err(|e| UrlProblem::Unusable(e.detail().unwrap_or("invalid").to_owned()))
}

/// `redis://user:secret@host` becomes `redis://user:****@host`.
impl RedisConfig {
    /// Where the relay's Redis is, for logs and messages, passwords masked: the URL, or the master
    /// name and the sentinels.
    pub fn describe(&self) -> String {
        match self.mode {
            RedisMode::Standalone => mask_password(&self.url),
            RedisMode::Sentinel => format!(
                "master {:?} of the sentinels {}",
                self.sentinel_master,
                self.masked_urls()
            ),
            RedisMode::Cluster => format!("the cluster of {}", self.masked_urls()),
        }
    }

    fn masked_urls(&self) -> String {
        self.urls
            .iter()
            .map(|url| mask_password(url))
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub fn mask_password(redis_url: &str) -> String {
    match url::Url::parse(redis_url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => redis_url.to_owned(),
    }
}

/// The config crate names the key for type errors but not always the file; add what it leaves out.
fn describe_source_error(e: config::ConfigError, path: Option<&Path>) -> String {
    let mut text = e.to_string();
    if text.contains("expected a duration") {
        text.push_str(" (write durations as strings with a unit, such as \"30s\" or \"250ms\")");
    }
    match (path, &e) {
        (Some(path), config::ConfigError::FileParse { .. }) => {
            format!("cannot parse {}: {text}", path.display())
        }
        _ => text,
    }
}

/// The pod name in Kubernetes (`HOSTNAME`), else the machine's host name: stable across restarts of
/// the same pod or host, so a restarted relay finds and finishes its own pending entries.
fn default_consumer_name() -> String {
    match std::env::var("HOSTNAME") {
        Ok(name) if !name.is_empty() => name,
        _ => gethostname::gethostname().to_string_lossy().into_owned(),
    }
}

/// The URL parts the relay's reader connects with (it speaks RESP itself, see `reader.rs`):
/// `#insecure` TLS is refused.
fn check_url(url: &str) -> Result<(), UrlProblem> {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    match url.into_connection_info() {
        Ok(info) => match info.addr() {
            ConnectionAddr::TcpTls { insecure: true, .. } => Err(UrlProblem::Insecure),
            _ => Ok(()),
        },
        Err(e) => Err(UrlProblem::Unusable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let f = file(text);
        Config::load_with_env(Some(f.path()), env(vars))
    }

    #[test]
    fn servers_that_answer_nothing_are_delivered_to_when_published_by_default() {
        let cfg = load("[target]\nadapter = \"streams\"\n", &[]).unwrap();
        assert_eq!(cfg.delivery.confirm, Confirm::Published);
        let target = cfg.target();
        assert_eq!(
            (target.streams.name.as_str(), target.streams.max_len),
            ("socket.io", 10_000)
        );
        let cfg = load(
            "[target]\nadapter = \"streams\"\nstream = \"io\"\nmax_len = 0\n",
            &[("SIO_RELAY_DELIVERY__CONFIRM", "published")],
        )
        .unwrap();
        assert_eq!((cfg.target.stream.as_str(), cfg.target.max_len), ("io", 0));
        let cfg = load("[target]\nadapter = \"python-socketio\"\n", &[]).unwrap();
        assert_eq!(cfg.delivery.confirm, Confirm::Published);
        // The other adapters keep theirs.
        let cfg = load("[target]\nadapter = \"sharded\"\n", &[]).unwrap();
        assert_eq!(cfg.delivery.confirm, Confirm::Processed);
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("redis://relay:s3cret@redis:6379/0"),
            "redis://relay:****@redis:6379/0"
        );
        assert_eq!(
            mask_password("rediss://:s3cret@redis"),
            "rediss://:****@redis"
        );
        assert_eq!(
            mask_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn defaults_need_no_file() {
        let cfg = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(cfg.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(cfg.source.stream, "sio-relay");
        assert_eq!(cfg.source.group, "sio-relay");
        assert_eq!(cfg.dead_letter.stream, "sio-relay:dead");
        assert_eq!(cfg.delivery.min_receivers, 1);
        assert!(!cfg.source.consumer.is_empty());
    }

    #[test]
    fn the_shipped_config_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let mut shipped = Config::load_with_env(Some(&path), env(&[])).unwrap();
        let mut defaults = Config::load_with_env(None, env(&[])).unwrap();
        shipped.source.consumer.clear();
        defaults.source.consumer.clear();
        assert_eq!(shipped, defaults);
    }

    #[test]
    fn file_values_and_env_overrides() {
        let cfg = load(
            "[source]\nstream = \"orders\"\nblock = \"250ms\"\n[delivery]\nmax_age = \"1h\"\n",
            &[
                ("SIO_RELAY_REDIS__URL", "redis://10.0.0.1:6380"),
                ("SIO_RELAY_DELIVERY__MIN_RECEIVERS", "2"),
                ("SIO_RELAY_SOURCE__START_ID", "0"),
                ("SIO_RELAY_SOURCE__CONSUMER", "pod-7"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.source.stream, "orders");
        assert_eq!(cfg.source.block, Duration::from_millis(250));
        assert_eq!(cfg.delivery.max_age, Duration::from_secs(3600));
        assert_eq!(cfg.redis.url, "redis://10.0.0.1:6380");
        assert_eq!(cfg.delivery.min_receivers, 2);
        assert_eq!(cfg.source.start_id, "0");
        assert_eq!(cfg.source.consumer, "pod-7");
    }

    #[test]
    fn partitions_are_configured_streams_each_with_its_dead_letters() {
        let cfg = load(
            "",
            &[("SIO_RELAY_SOURCE__STREAMS", "orders:{a}, orders:{b}")],
        )
        .unwrap();
        let streams: Vec<(String, String)> = cfg
            .partitions()
            .into_iter()
            .map(|p| (p.source.stream, p.dead_letter.stream))
            .collect();
        assert_eq!(
            streams,
            [
                ("orders:{a}".into(), "orders:{a}:dead".into()),
                ("orders:{b}".into(), "orders:{b}:dead".into())
            ]
        );
        let single = Config::default().partitions();
        assert_eq!(single, [Config::default()]);
        let too_many: Vec<String> = (0..=MAX_PARTITIONS).map(|i| format!("s{i}")).collect();
        let err = load("", &[("SIO_RELAY_SOURCE__STREAMS", &too_many.join(","))]).unwrap_err();
        assert!(err.to_string().contains("at most 64"), "{err}");
    }

    #[test]
    fn sentinels_come_as_a_list_or_comma_separated_from_the_environment() {
        let from_file = load(
            "[redis]\nmode = \"sentinel\"\nsentinel_master = \"mymaster\"\nurls = [\"redis://s1:26379\", \"redis://s2:26379\"]\n",
            &[],
        )
        .unwrap();
        let from_env = load(
            "",
            &[
                ("SIO_RELAY_REDIS__MODE", "sentinel"),
                ("SIO_RELAY_REDIS__SENTINEL_MASTER", "mymaster"),
                (
                    "SIO_RELAY_REDIS__URLS",
                    "redis://s1:26379, redis://s2:26379",
                ),
            ],
        )
        .unwrap();
        assert_eq!(from_file.redis, from_env.redis);
        assert_eq!(from_env.redis.urls.len(), 2);
        assert_eq!(
            from_env.redis.describe(),
            "master \"mymaster\" of the sentinels redis://s1:26379,redis://s2:26379"
        );
    }

    #[test]
    fn environment_values_stay_the_text_given() {
        let cfg = load(
            "",
            &[
                ("SIO_RELAY_SOURCE__CONSUMER", "007"),
                ("SIO_RELAY_SOURCE__STREAM", "1e3"),
                ("SIO_RELAY_SOURCE__GROUP", "1.50"),
                ("SIO_RELAY_DELIVERY__MIN_RECEIVERS", "2"),
                ("SIO_RELAY_SOURCE__START_ID", "0"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.source.consumer, "007");
        assert_eq!(cfg.source.stream, "1e3");
        assert_eq!(cfg.source.group, "1.50");
        assert_eq!(cfg.delivery.min_receivers, 2);
        assert_eq!(cfg.source.start_id, "0");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = load("[delivery]\nmin_reciever = 1\n", &[]).unwrap_err();
        assert!(err.to_string().contains("min_reciever"), "{err}");
        let err = load("[sourec]\nstream = \"x\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("sourec"), "{err}");
        let err = load("", &[("SIO_RELAY_REDIS__ULR", "redis://x")]).unwrap_err();
        assert!(err.to_string().contains("ulr"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("[source]\nblock = \"soon\"\n", "source.block"),
            ("[source]\nblock = 30\n", "source.block"),
            ("[source]\nbatch_size = 0\n", "source.batch_size"),
            ("[source]\nbatch_size = \"many\"\n", "source.batch_size"),
            ("[source]\nstart_id = \"1-0\"\n", "source.start_id"),
            (
                "[delivery]\nmax_deliveries = 0\n",
                "delivery.max_deliveries",
            ),
            ("[delivery]\nclaim_idle = \"10ms\"\n", "delivery.claim_idle"),
            ("[delivery]\nmax_held = 10\n", "delivery.max_held"),
            ("[source]\nblock = \"300000000000y\"\n", "source.block"),
            (
                "[delivery]\nclaim_interval = \"300000000000y\"\n",
                "delivery.claim_interval",
            ),
            (
                "[delivery]\nretry_interval = \"300000000000y\"\n",
                "delivery.retry_interval",
            ),
            (
                "[delivery]\nmax_age = \"300000000000y\"\n",
                "delivery.max_age",
            ),
            ("[shutdown]\ntimeout = \"0s\"\n", "shutdown.timeout"),
            (
                "[delivery]\nmax_deliveries = 4000000000\n",
                "delivery.max_deliveries",
            ),
            (
                "[delivery]\nmin_receivers = 1000000\n",
                "delivery.min_receivers",
            ),
            ("[redis]\npassword_file = \"/\"\n", "redis.password_file"),
            ("[redis]\nurl = \"http://example\"\n", "redis.url"),
            ("[redis]\nurl = \"redis//localhost\"\n", "not a URL"),
            (
                "[redis]\nurl = \"localhost:6379\"\n",
                "is not a Redis URL scheme",
            ),
            (
                "[redis]\nurl = \"redis://localhost:99999\"\n",
                "invalid port number",
            ),
            ("[redis]\nurl = \"redis:/localhost\"\n", "no host name"),
            (
                "[redis]\nurl = \"redis://localhost/zero\"\n",
                "must be a number",
            ),
            (
                "[dead_letter]\nstream = \"sio-relay\"\n",
                "dead_letter.stream",
            ),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[log]\nlevel = \"info,[\"\n", "log.level"),
            ("[target]\nuid = \"\"\n", "target.uid"),
            ("[target]\nadapter = \"socketio\"\n", "target.adapter"),
            (
                "[target]\nadapter = \"streams\"\n[delivery]\nconfirm = \"processed\"\n",
                "`delivery.confirm`: must be \"published\" with target.adapter = \"streams\"",
            ),
            (
                "[target]\nadapter = \"streams\"\n[acks]\ndefault = \"5s\"\n",
                "`acks.default`: must be unset with target.adapter = \"streams\"",
            ),
            (
                "[target]\nadapter = \"streams\"\nstream = \"sio-relay\"\n",
                "`target.stream`: the servers' stream \"sio-relay\" must differ from the relay's source and dead-letter streams",
            ),
            (
                "[target]\nadapter = \"streams\"\nstream = \"sio-relay:dead\"\n",
                "`target.stream`: the servers' stream \"sio-relay:dead\" must differ",
            ),
            (
                "[source]\nstream = \"io-1\"\n[target]\nadapter = \"streams\"\nstream = \"io\"\nstream_count = 2\n",
                "`target.stream`: the servers' stream \"io-1\" must differ",
            ),
            (
                "[target]\nstream = \"io\"\n",
                "`target.stream`: applies to target.adapter = \"streams\" only",
            ),
            (
                "[target]\nstream_count = 4\n",
                "`target.stream_count`: applies to target.adapter = \"streams\" only",
            ),
            (
                "[target]\nadapter = \"sharded\"\nuse_sharded_pubsub = true\n",
                "`target.use_sharded_pubsub`: applies to target.adapter = \"streams\" only",
            ),
            (
                "[target]\nadapter = \"streams\"\nstream_count = 0\n",
                "`target.stream_count`: must be between 1 and 1024 (the servers' streamCount), not 0",
            ),
            (
                "[target]\nadapter = \"streams\"\nstream_count = 1025\n",
                "`target.stream_count`: must be between 1 and 1024",
            ),
            (
                "[target]\nadapter = \"streams\"\nparser = \"json\"\n",
                "target.parser",
            ),
            (
                "[target]\nadapter = \"python-socketio\"\n[delivery]\nconfirm = \"processed\"\n",
                "`delivery.confirm`: must be \"published\" with target.adapter = \"python-socketio\"",
            ),
            (
                "[target]\nadapter = \"python-socketio\"\n[delivery]\nconfirm = \"clients\"\n",
                "delivery.confirm",
            ),
            (
                "[target]\nadapter = \"python-socketio\"\nkey = \"app\"\n[delivery]\nconfirm = \"published\"\n",
                "target.key",
            ),
            (
                "[target]\nadapter = \"python-socketio\"\nparser = \"json\"\n[delivery]\nconfirm = \"published\"\n",
                "target.parser",
            ),
            (
                "[target]\nadapter = \"python-socketio\"\n[delivery]\nconfirm = \"published\"\n[acks]\ndefault = \"10s\"\n",
                "acks.default",
            ),
            (
                "[target]\nadapter = \"python-socketio\"\nchannel = \"\"\n[delivery]\nconfirm = \"published\"\n",
                "target.channel",
            ),
            ("[target]\nchannel = \"app\"\n", "target.channel"),
            (
                "[target]\nadapter = \"sharded\"\nparser = \"json\"\n",
                "target.parser",
            ),
            (
                "[target]\nsubscription_mode = \"static\"\n",
                "target.subscription_mode",
            ),
            (
                "[target]\nadapter = \"sharded\"\nsubscription_mode = \"private\"\n",
                "target.subscription_mode",
            ),
            ("[redis]\nmode = \"cluster\"\n", "redis.urls"),
            ("[redis]\nmode = \"clustered\"\n", "redis.mode"),
            (
                "[redis]\nmode = \"cluster\"\nurls = [\"redis://n1:6379\"]\n",
                "`source.stream`: \"sio-relay\" has no hash tag",
            ),
            (
                "[redis]\nmode = \"cluster\"\nurls = [\"redis://n1:6379\"]\n[source]\nstream = \"s{}x\"\n",
                "has no hash tag",
            ),
            (
                "[redis]\nmode = \"cluster\"\nurls = [\"redis://n1:6379\"]\n[source]\nstream = \"s:{a}\"\n",
                "`dead_letter.stream`: must carry the hash tag of source.stream in cluster mode (dead letters move in one script), e.g. \"s:{a}:dead\"",
            ),
            (
                "[redis]\nmode = \"cluster\"\nurls = [\"redis://n1:6379\"]\nsentinel_master = \"m\"\n",
                "redis.sentinel_master",
            ),
            (
                "[redis]\nmode = \"cluster\"\nurl = \"redis://n1:6379/2\"\nurls = [\"redis://n1:6379\"]\n",
                "only database 0",
            ),
            (
                "[redis]\nmode = \"cluster\"\nurls = [\"rediss://n1:6379\"]\n",
                "the scheme of redis.url",
            ),
            ("[redis]\nmode = \"sentinel\"\n", "redis.urls"),
            (
                "[redis]\nmode = \"sentinel\"\nurls = [\"redis://s1:26379\"]\n",
                "redis.sentinel_master",
            ),
            (
                "[redis]\nurls = [\"redis://s1:26379\"]\nsentinel_master = \"m\"\n",
                "set redis.mode = \"sentinel\"",
            ),
            (
                "[redis]\nmode = \"sentinel\"\nsentinel_master = \"m\"\nurls = [\"redis://s1:26379\", \"rediss://s2:26379\"]\n",
                "every node listed must be reached the same way",
            ),
            (
                "[redis]\nmode = \"sentinel\"\nsentinel_master = \"m\"\nurls = [\"s1:26379\"]\n",
                "redis.urls`: s1:26379",
            ),
            ("[redis]\nwait_replicas = 101\n", "redis.wait_replicas"),
            (
                "[source]\nstreams = [\"a\", \"b\"]\nstream = \"c\"\n",
                "`source.stream`: is set together with source.streams",
            ),
            (
                "[source]\nstreams = [\"a\"]\n[dead_letter]\nstream = \"d\"\n",
                "`dead_letter.stream`: is set together with source.streams",
            ),
            ("[source]\nstreams = [\"a\", \"a\"]\n", "lists \"a\" twice"),
            (
                "[source]\nstreams = [\"a\", \"a:dead\"]\n",
                "its dead-letter stream",
            ),
            (
                "[redis]\nmode = \"cluster\"\nurls = [\"redis://n1:6379\"]\n[source]\nstreams = [\"s:{a}\", \"s:b\"]\n",
                "`source.streams`: \"s:b\" has no hash tag",
            ),
            ("[http]\nlisten = \"localhost\"\n", "http.listen"),
            (
                "[http]\nconsole = true\n",
                "`http.console`: is true, but http.listen is empty",
            ),
            (
                "[http]\nlisten = \"127.0.0.1:9464\"\nconsole = true\nconsole_token = \"short\"\n",
                "`http.console_token`: the token is shorter than 16 characters",
            ),
            (
                "[http]\nlisten = \"127.0.0.1:9464\"\nconsole_token = \"a token with spaces\"\n",
                "`http.console_token`: the token holds whitespace",
            ),
            (
                "[http]\nconsole_token = \"0123456789abcdef\"\nconsole_token_file = \"/etc/hostname\"\n",
                "`http.console_token_file`: http.console_token and http.console_token_file are two ways",
            ),
            (
                "[http]\nconsole_token_file = \"/nonexistent\"\n",
                "`http.console_token_file`: cannot read /nonexistent",
            ),
            (
                "[redis]\npassword_file = \"/nonexistent\"\n",
                "redis.password_file",
            ),
            (
                "[redis]\ntls_ca_file = \"/etc/hostname\"\n",
                "redis.tls_ca_file",
            ),
        ];
        for (text, key) in cases {
            let err = load(text, &[]).unwrap_err();
            assert!(err.to_string().contains(key), "{text:?} gave: {err}");
        }
    }

    #[test]
    fn missing_and_unparsable_files_are_named() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/relay.toml")), env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/relay.toml"), "{err}");
        let f = file("[source\n");
        let err = Config::load_with_env(Some(f.path()), env(&[])).unwrap_err();
        assert!(
            err.to_string().contains(&*f.path().to_string_lossy()),
            "{err}"
        );
    }
}
