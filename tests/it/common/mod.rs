//! Test harness: real `redis-server` processes on free ports, the real `sio-relay` binary, and a
//! pattern subscriber that stands in for a Socket.IO server's adapter subscription.
//!
//! Every test gets its own Redis in its own temp dir, so tests can kill and restart it, and never touch
//! the shared server on port 6379.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Commands, Value};
use serde_json::json;

mod client_ledger;
mod cluster;
mod failover;
mod otlp;
mod python;
mod sentinel;
pub use client_ledger::*;
pub use cluster::*;
pub use failover::*;
pub use otlp::*;
pub use python::*;
pub use sentinel::*;

pub const STREAM: &str = "sio-relay";

/// The `sio-relay` binary under test: this build's, or `RELAY_TEST_BINARY` when set.
pub fn binary() -> PathBuf {
    std::env::var_os("RELAY_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sio-relay")))
}

/// A command running [`binary`] with none of the caller's `SIO_RELAY_*` variables, nor `RUST_LOG`:
/// what a test sets is all the relay sees.
pub fn sio_relay() -> Command {
    sio_relay_under(&[])
}

/// `sio-relay monitor --json --count <count>` on `redis` with `settings` (`SECTION__KEY`, value),
/// once it has said what it monitors (its first line on stderr, returned).
pub fn start_monitor(
    redis: &RedisServer,
    count: usize,
    settings: &[(&str, &str)],
) -> (Child, String) {
    let mut cmd = sio_relay();
    cmd.args(["monitor", "--json", "--count", &count.to_string()])
        .env("SIO_RELAY_REDIS__URL", redis.url());
    for (key, value) in settings {
        cmd.env(format!("SIO_RELAY_{key}"), value);
    }
    let mut monitor = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(monitor.stderr.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    (monitor, ready)
}

/// As [`sio_relay`], run through `wrapper` (such as `faketime -f +2d`).
pub fn sio_relay_under(wrapper: &[String]) -> Command {
    match wrapper {
        [] => hermetic(binary()),
        [program, args @ ..] => {
            let mut cmd = hermetic(program);
            cmd.args(args).arg(binary());
            cmd
        }
    }
}

/// A command for `program` (a shell that runs the relay, say) without the caller's `SIO_RELAY_*`
/// variables nor `RUST_LOG`.
pub fn hermetic(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SIO_RELAY_") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}
pub const GROUP: &str = "sio-relay";
pub const DEAD: &str = "sio-relay:dead";

/// Polls `check` every 20 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn require(binary: &str, install: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("`{binary}` is not on PATH; the tests need it: {install}"))
}

/// libfaketime's library, where Debian, Ubuntu and a `make install` put it.
pub fn libfaketime() -> PathBuf {
    let candidates = ["/usr/lib", "/usr/local/lib", "/usr/lib64"]
        .into_iter()
        .flat_map(|lib| {
            let arch = std::fs::read_dir(lib)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("faketime"));
            std::iter::once(PathBuf::from(lib).join("faketime")).chain(arch)
        })
        .map(|dir| dir.join("libfaketime.so.1"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .expect("libfaketime is not installed; the tests need it: apt-get install faketime")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free TCP port on 127.0.0.1")
}

/// A `redis-server` owned by one test.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    appendonly: bool,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A server without persistence.
    pub fn start() -> RedisServer {
        RedisServer::launch(false)
    }

    /// A server with `appendonly yes` and `appendfsync always`, so a kill -9 loses no write it
    /// acknowledged: what a deployment that must not lose messages runs.
    pub fn start_persistent() -> RedisServer {
        RedisServer::launch(true)
    }

    /// A server started with extra `redis-server` arguments (TLS ports, certificates, ...).
    pub fn start_with(extra: &[String]) -> RedisServer {
        RedisServer::launch_with(false, extra.to_vec())
    }

    fn launch(appendonly: bool) -> RedisServer {
        RedisServer::launch_with(appendonly, Vec::new())
    }

    fn launch_with(appendonly: bool, extra: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            port: 0,
            dir: tempfile::tempdir().expect("temp dir"),
            appendonly,
            extra,
            child: None,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "redis-server did not start; see {}",
            server.log_path().display()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts the process on `self.port`; false if it exited (port taken) instead of answering.
    fn spawn(&mut self) -> bool {
        let binary = require(
            "redis-server",
            "install Redis 7 (Debian/Ubuntu: apt-get install redis-server)",
        );
        let port = self.port.to_string();
        let dir = self.dir.path().to_str().unwrap().to_owned();
        let log = self.log_path().to_str().unwrap().to_owned();
        let aof = if self.appendonly { "yes" } else { "no" };
        let child = Command::new(binary)
            .args(["--port", &port, "--bind", "127.0.0.1", "--dir", &dir])
            .args(["--save", "", "--appendonly", aof, "--appendfsync", "always"])
            .args(["--logfile", &log, "--daemonize", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                return false;
            }
            // Ours, not another test's that took the port meanwhile (free ports are only free
            // until someone binds them): the server answering must be the process just started.
            if let Ok(mut con) = self.try_connection() {
                let info: redis::RedisResult<redis::InfoDict> =
                    redis::cmd("INFO").arg("server").query(&mut con);
                if let Ok(info) = info {
                    let pid = self.child.as_ref().unwrap().id();
                    if info.get::<u32>("process_id") == Some(pid) {
                        return self.wait_loaded(&mut con, deadline);
                    }
                    if let Some(mut child) = self.child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// Waits until the server has loaded its data (an AOF after a restart): INFO answers while
    /// it loads, the commands of the tests' producers do not (LOADING).
    fn wait_loaded(&self, con: &mut redis::Connection, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            let info: redis::RedisResult<redis::InfoDict> =
                redis::cmd("INFO").arg("persistence").query(con);
            if info.is_ok_and(|info| info.get::<u32>("loading") == Some(0)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not load its data", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process ID of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server running").id()
    }

    /// A server replicating `primary`, once in sync with it.
    pub fn start_replica_of(primary: &RedisServer) -> RedisServer {
        let replica = RedisServer::start_with(&[
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
        ]);
        let mut con = replica.connection();
        wait_until(Duration::from_secs(30), "the replica is in sync", || {
            let info: redis::InfoDict = redis::cmd("INFO")
                .arg("replication")
                .query(&mut con)
                .unwrap();
            info.get::<String>("master_link_status").as_deref() == Some("up")
        });
        replica
    }

    pub fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        client.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// A fresh connection to this server.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection().expect("connect to the test Redis")
    }

    /// SIGKILL: Redis gets no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }
}

/// The one of `nodes` listening on `port`.
pub fn on_port(nodes: &mut [RedisServer], port: u16) -> &mut RedisServer {
    nodes
        .iter_mut()
        .find(|n| n.port == port)
        .expect("a node on that port")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `sio-relay run`, configured through `SIO_RELAY_*` variables.
pub struct Relay {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    config: Option<PathBuf>,
    /// A program the relay runs under (`bash -c 'ulimit ...; exec'`), empty for none.
    wrapper: Vec<String>,
    /// Variables for the process itself, not the relay's `SIO_RELAY_*` (libfaketime's).
    process_env: Vec<(String, String)>,
    /// The process group of the last start: the relay and whatever runs it. Checked empty once the
    /// relay is gone, so that no test leaves a process behind.
    group: Option<u32>,
}

/// The relay's `http.listen` port, when the test did not choose one: `/readyz` is how the harness
/// knows a relay is up, instead of reading its log.
fn probe_port(env: &[(String, String)]) -> Option<u16> {
    env.iter()
        .find(|(k, _)| k == "HTTP__LISTEN")
        .and_then(|(_, v)| v.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
}

impl Relay {
    /// Starts a relay on `redis` as consumer `consumer`; `settings` are `("SECTION__KEY", value)`.
    pub fn start(redis: &RedisServer, consumer: &str, settings: &[(&str, &str)]) -> Relay {
        let mut all = vec![("LOG__LEVEL", "sio_relay=debug,info")];
        all.extend_from_slice(settings);
        Relay::start_with_file(redis, consumer, None, &all)
    }

    /// As [`Relay::start`], with `--config file`, whose values the `settings` override.
    pub fn start_with_file(
        redis: &RedisServer,
        consumer: &str,
        file: Option<&Path>,
        settings: &[(&str, &str)],
    ) -> Relay {
        let mut env = vec![
            ("REDIS__URL".to_owned(), redis.url()),
            ("SOURCE__CONSUMER".to_owned(), consumer.to_owned()),
            (
                "HTTP__LISTEN".to_owned(),
                format!("127.0.0.1:{}", free_port()),
            ),
        ];
        let extra = std::env::var("RELAY_TEST_SETTINGS").unwrap_or_default();
        let extra = extra
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='));
        for (key, value) in extra.chain(settings.iter().copied()) {
            env.retain(|(k, _)| k != key);
            env.push((key.to_string(), value.to_string()));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut relay = Relay {
            child: None,
            log: dir.path().join("relay.log"),
            _dir: dir,
            env,
            config: file.map(Path::to_path_buf),
            wrapper: Vec::new(),
            process_env: Vec::new(),
            group: None,
        };
        relay.spawn();
        relay
    }

    /// As [`Relay::start`], run through `wrapper` (a program and its arguments, which runs the
    /// relay's command line given after them).
    pub fn start_under(
        redis: &RedisServer,
        consumer: &str,
        wrapper: &[&str],
        settings: &[(&str, &str)],
    ) -> Relay {
        let mut relay = Relay::start(redis, consumer, settings);
        relay.kill();
        relay.wrapper = wrapper.iter().map(|w| w.to_string()).collect();
        relay.spawn();
        relay
    }

    /// As [`Relay::start`], with the relay's clock `offset` away from the real one (`+2d`,
    /// `-3h`), through libfaketime, preloaded into the relay itself: Debian's `faketime` wrapper
    /// forks the program and keeps shared memory, so killing it left the relay and
    /// `/dev/shm/faketime_*` behind.
    pub fn start_with_clock(
        redis: &RedisServer,
        consumer: &str,
        offset: &str,
        settings: &[(&str, &str)],
    ) -> Relay {
        let library = libfaketime();
        let mut relay = Relay::start(redis, consumer, settings);
        relay.kill();
        relay.process_env = vec![
            ("LD_PRELOAD".into(), library.to_string_lossy().into_owned()),
            ("FAKETIME".into(), offset.into()),
            // A clock moved for the relay's wall time only: its timers stay real.
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ];
        relay.spawn();
        relay
    }

    /// As [`Relay::start`], with at most `files` open file descriptors (`ulimit -n`).
    pub fn start_with_file_limit(
        redis: &RedisServer,
        consumer: &str,
        files: u32,
        settings: &[(&str, &str)],
    ) -> Relay {
        let script = format!("ulimit -n {files} && exec \"$0\" \"$@\"");
        Relay::start_under(redis, consumer, &["bash", "-c", &script], settings)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("relay log file");
        let mut cmd = sio_relay_under(&self.wrapper);
        cmd.envs(self.process_env.iter().map(|(k, v)| (k, v)));
        // A group of its own: whatever the relay (or its wrapper) leaves running is found there.
        cmd.process_group(0);
        cmd.arg("run");
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (key, value) in &self.env {
            cmd.env(format!("SIO_RELAY_{key}"), value);
        }
        let child = cmd.spawn().expect("spawn sio-relay");
        self.group = Some(child.id());
        self.child = Some(child);
    }

    /// Fails the test when a process of the relay's group outlives the relay (a wrapper's child,
    /// say), after killing it: every process a test starts is gone when it ends.
    fn check_group_empty(&mut self) {
        let Some(group) = self.group.take() else {
            return;
        };
        if self.process_env.iter().any(|(k, _)| k == "LD_PRELOAD") {
            // libfaketime keeps a segment and a semaphore per process, named by its PID (the
            // group's leader), removed at exit: not after a SIGKILL.
            for name in [
                format!("faketime_shm_{group}"),
                format!("sem.faketime_sem_{group}"),
            ] {
                let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
            }
        }
        let alive = |group: u32| {
            Command::new("kill")
                .args(["-0", "--", &format!("-{group}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !alive(group) {
            return;
        }
        let left: String = Command::new("ps")
            .args(["-eo", "pgid=,pid=,args="])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(&group.to_string()))
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .status();
        if !std::thread::panicking() {
            panic!("the relay's process group outlived it; killed:\n{left}");
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port of the relay's `http.listen`.
    pub fn http_port(&self) -> u16 {
        probe_port(&self.env).expect("the relay has an http.listen address")
    }

    /// Waits until this relay process answers `/readyz` with 200: connected, group set up, its own
    /// pending entries recovered.
    pub fn wait_ready(&self, timeout: Duration) {
        let port = self.http_port();
        let pid = self.pid();
        wait_until(timeout, "the relay is ready (/readyz)", || {
            http_get(port, "/readyz").0 == 200 && self.pid() == pid
        });
    }

    /// The relay's metric `name` (as [`reading`] names it: `held_total`,
    /// `entries_read_total{source="reclaimed"}`), if it has that series now.
    pub fn metric(&self, name: &str) -> Option<f64> {
        reading(&http_get(self.http_port(), "/metrics").1, name)
    }

    /// Waits until the relay's metric `name` satisfies `check`; returns its value then.
    pub fn wait_metric(&self, name: &str, timeout: Duration, check: impl Fn(f64) -> bool) -> f64 {
        let mut value = None;
        wait_until(
            timeout,
            &format!("the relay's {name} is as expected"),
            || {
                value = self.metric(name);
                value.is_some_and(&check)
            },
        );
        value.unwrap()
    }

    /// Waits until `/readyz` answers 503 with a reason that contains `reason` (such as `Redis:`,
    /// which the relay says once it has found Redis unavailable).
    pub fn wait_unready(&self, reason: &str, timeout: Duration) {
        let port = self.http_port();
        wait_until(
            timeout,
            &format!("/readyz says the relay is not ready: {reason:?}"),
            || {
                let (status, body) = http_get(port, "/readyz");
                status == 503 && body.contains(reason)
            },
        );
    }

    /// Asserts that the log holds `needle`, once the test has waited on the state the line is
    /// about (a metric, a readiness, an entry acknowledged): the line is written by the same step
    /// that changed that state, a moment after it, so this allows that step 2 s to write it. Not a
    /// way to wait for something to happen.
    pub fn assert_logged(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the relay did not log {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-s", signal, &pid]).status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "kill -s {signal} {pid} failed"
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("relay running").id()
    }

    /// True while the relay process has not exited (a panic, a fatal error).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().is_ok_and(|status| status.is_none()))
    }

    /// Sends `signal` (e.g. "TERM") and waits up to `timeout` for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-s", signal, &pid]).status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "kill -s {signal} {pid} failed"
        );
        self.wait_exit(timeout)
    }

    /// Waits up to `timeout` for the relay to exit, and returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("relay running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the relay") {
                self.check_group_empty();
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the relay did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.check_group_empty();
    }

    /// Starts the same relay (same consumer name and settings) again.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- relay log ---\n{}", self.log());
        }
    }
}

/// One packet as a Socket.IO server's adapter would receive it.
#[derive(Clone, Debug)]
pub struct Message {
    pub channel: String,
    pub payload: Vec<u8>,
}

impl Message {
    /// Decodes the payload as the adapter does: `[uid, packet, opts]`.
    pub fn decode(&self) -> serde_json::Value {
        let value = rmpv::decode::read_value(&mut self.payload.as_slice()).expect("msgpack");
        to_json(&value)
    }

    pub fn event(&self) -> String {
        self.decode()[1]["data"][0].as_str().unwrap().to_owned()
    }

    /// The first argument of the event.
    pub fn arg(&self) -> serde_json::Value {
        self.decode()[1]["data"][1].clone()
    }
}

pub fn to_json(v: &rmpv::Value) -> serde_json::Value {
    use rmpv::Value as M;
    use serde_json::Value as J;
    match v {
        M::Nil => J::Null,
        M::Boolean(b) => J::Bool(*b),
        M::Integer(i) => match i.as_i64() {
            Some(n) => J::from(n),
            None => J::from(i.as_u64().unwrap()),
        },
        M::F32(f) => J::from(*f as f64),
        M::F64(f) => J::from(*f),
        M::String(s) => J::String(s.as_str().expect("utf-8").to_owned()),
        M::Array(items) => J::Array(items.iter().map(to_json).collect()),
        M::Map(pairs) => J::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.as_str().expect("string key").to_owned(), to_json(v)))
                .collect(),
        ),
        other => panic!("unexpected msgpack value {other:?}"),
    }
}

/// A stand-in for a Socket.IO server's adapter on one namespace: it subscribes to
/// `socket.io-request#<nsp>#` (which is how the relay counts servers, like the adapter's own
/// `serverCount()`) and pattern-subscribes to `socket.io#<nsp>#*`, where broadcasts arrive. Or, with
/// [`Subscriber::pattern_only`], a pattern subscriber that is no server (`sio-relay monitor`,
/// `redis-cli PSUBSCRIBE`). It reconnects by itself when Redis restarts.
pub struct Subscriber {
    messages: Arc<Mutex<Vec<Message>>>,
    /// Markers published by [`Subscriber::flush`] and seen, kept apart from the messages.
    markers: Arc<Mutex<Vec<Vec<u8>>>>,
    subscribed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Subscriber {
    pub fn start(redis: &RedisServer, nsp: &str) -> Subscriber {
        let channels = vec![format!("socket.io-request#{nsp}#")];
        Subscriber::launch(redis, format!("socket.io#{nsp}#*"), channels, None)
    }

    /// As [`Subscriber::start`], handing each broadcast's payload to `hook` as it arrives instead
    /// of keeping it ([`Subscriber::messages`] stays empty): for flows too large to keep, such as
    /// the benchmark's.
    pub fn start_with_hook(
        redis: &RedisServer,
        nsp: &str,
        hook: impl Fn(&[u8]) + Send + Sync + 'static,
    ) -> Subscriber {
        let channels = vec![format!("socket.io-request#{nsp}#")];
        let pattern = format!("socket.io#{nsp}#*");
        Subscriber::launch(redis, pattern, channels, Some(Arc::new(hook)))
    }

    /// A pattern subscriber that is not a Socket.IO server.
    pub fn pattern_only(redis: &RedisServer, pattern: &str) -> Subscriber {
        Subscriber::launch(redis, pattern.to_owned(), Vec::new(), None)
    }

    fn launch(
        redis: &RedisServer,
        pattern: String,
        channels: Vec<String>,
        hook: Option<Hook>,
    ) -> Subscriber {
        let url = redis.url();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let markers = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (messages, markers, subscribed, stop, hook) = (
                messages.clone(),
                markers.clone(),
                subscribed.clone(),
                stop.clone(),
                hook.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = subscribe_until_error(
                        &url,
                        &pattern,
                        &channels,
                        (&messages, &markers, &hook),
                        &subscribed,
                        &stop,
                    );
                    subscribed.store(false, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let sub = Subscriber {
            messages,
            markers,
            subscribed,
            stop,
            thread: Some(thread),
        };
        sub.wait_subscribed();
        sub
    }

    pub fn wait_subscribed(&self) {
        wait_until(
            Duration::from_secs(10),
            "the subscriber is subscribed",
            || self.subscribed.load(Ordering::SeqCst),
        );
    }

    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Publishes a marker where this subscriber listens (`socket.io#/#`) and waits until it
    /// arrives: everything published before it has arrived too. Returns how many messages came.
    /// The way to assert that something was *not* published, without sleeping.
    pub fn flush(&self, redis: &RedisServer) -> usize {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let marker = format!(
            "{MARKER}{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        )
        .into_bytes();
        let mut con = redis.connection();
        let _: u64 = con.publish("socket.io#/#", &marker).unwrap();
        wait_until(
            Duration::from_secs(10),
            "the subscriber receives the marker",
            || self.markers.lock().unwrap().contains(&marker),
        );
        self.messages().len()
    }

    pub fn wait_count(&self, n: usize, timeout: Duration) -> Vec<Message> {
        wait_until(timeout, &format!("{n} messages arrive"), || {
            self.messages.lock().unwrap().len() >= n
        });
        self.messages()
    }

    /// Waits until `n` messages arrived or `timeout` passed, and returns what arrived: for
    /// assertions that should report exactly what is missing.
    pub fn collect(&self, n: usize, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        while self.messages.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.messages()
    }

    /// Unsubscribes for good and returns everything received.
    pub fn stop(mut self) -> Vec<Message> {
        self.shutdown();
        self.messages()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What [`Subscriber::flush`] publishes, followed by a number.
const MARKER: &str = "sio-relay-test-marker-";

/// What a [`Subscriber`] hands each broadcast's payload to, instead of keeping it.
pub type Hook = Arc<dyn Fn(&[u8]) + Send + Sync>;

type Inbox<'a> = (
    &'a Mutex<Vec<Message>>,
    &'a Mutex<Vec<Vec<u8>>>,
    &'a Option<Hook>,
);

fn subscribe_until_error(
    url: &str,
    pattern: &str,
    channels: &[String],
    (messages, markers, hook): Inbox,
    subscribed: &AtomicBool,
    stop: &AtomicBool,
) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    con.set_read_timeout(Some(Duration::from_millis(100)))?;
    // Answers as a server's adapter does, on a connection of its own.
    let mut answers = client.get_connection_with_timeout(Duration::from_secs(1))?;
    let mut pubsub = con.as_pubsub();
    pubsub.psubscribe(pattern)?;
    for channel in channels {
        pubsub.subscribe(channel)?;
    }
    subscribed.store(true, Ordering::SeqCst);
    let mut keep = |msg: redis::Msg| {
        if !msg.from_pattern() {
            answer(&mut answers, &msg);
        } else if msg.get_payload_bytes().starts_with(MARKER.as_bytes()) {
            markers
                .lock()
                .unwrap()
                .push(msg.get_payload_bytes().to_vec());
        } else if let Some(hook) = hook {
            hook(msg.get_payload_bytes());
        } else {
            messages.lock().unwrap().push(Message {
                channel: msg.get_channel_name().to_owned(),
                payload: msg.get_payload_bytes().to_vec(),
            })
        }
    };
    while !stop.load(Ordering::SeqCst) {
        match pubsub.get_message() {
            Ok(msg) => keep(msg),
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e),
        }
    }
    // Leave cleanly: what Redis counted as received before the unsubscribe is read, not dropped.
    for channel in channels {
        pubsub.unsubscribe(channel)?;
    }
    pubsub.punsubscribe(pattern)?;
    while let Ok(msg) = pubsub.get_message() {
        keep(msg);
    }
    Ok(())
}

/// Answers a broadcast with acknowledgements on a request channel as a server without sockets in
/// its rooms does (a count of 0), after whatever came before it on the subscription: what the relay
/// confirms its batches by.
fn answer(con: &mut redis::Connection, msg: &redis::Msg) {
    let channel = msg.get_channel_name();
    let Some(nsp) = channel.strip_prefix("socket.io-request#") else {
        return;
    };
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(msg.get_payload_bytes()) else {
        return;
    };
    if request["type"] == 7 {
        let reply = json!({"type": 8, "requestId": request["requestId"], "clientCount": 0});
        let _: redis::RedisResult<u64> =
            con.publish(format!("socket.io-response#{nsp}"), reply.to_string());
    }
}

/// XADDs `total` entries from another thread, 100 per pipeline with a pause between pipelines, so
/// that a flow is under way while a test breaks things; `fields(i)` gives entry `i`'s fields.
pub fn produce_in_background(
    redis: &RedisServer,
    total: usize,
    pause: Duration,
    fields: fn(usize) -> Vec<(&'static str, String)>,
) -> JoinHandle<()> {
    let url = redis.url();
    std::thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        for chunk in (0..total).collect::<Vec<_>>().chunks(100) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                pipe.xadd(STREAM, "*", &fields(i)).ignore();
            }
            pipe.exec(&mut con).unwrap();
            std::thread::sleep(pause);
        }
    })
}

/// XADDs one entry and returns its ID.
pub fn xadd(con: &mut redis::Connection, fields: &[(&str, &str)]) -> String {
    con.xadd(STREAM, "*", fields).expect("XADD")
}

/// A valid entry numbered `i`.
pub fn numbered(i: usize) -> Vec<(&'static str, String)> {
    vec![
        ("event", "n".into()),
        ("data", i.to_string()),
        ("x-seq", i.to_string()),
    ]
}

pub fn add_numbered(con: &mut redis::Connection, range: std::ops::Range<usize>) {
    let mut pipe = redis::pipe();
    for i in range {
        pipe.xadd(STREAM, "*", &numbered(i)).ignore();
    }
    pipe.exec(con).unwrap();
}

pub fn held_record(con: &mut redis::Connection) -> usize {
    con.hlen("sio-relay:held:sio-relay").unwrap()
}

/// Waits until `n` entries are pending and recorded in the held hash: the relay holds them.
pub fn wait_held(con: &mut redis::Connection, n: usize) {
    // Pending as soon as they are read, recorded by the delivery script a moment later: a test
    // that looked at the pending list alone could find the record still empty.
    wait_until(
        Duration::from_secs(10),
        &format!("{n} entries are pending and recorded as held"),
        || pending(con).len() == n && held_record(con) == n,
    );
}

/// XADDs with an explicit ID (e.g. an old timestamp).
pub fn xadd_id(con: &mut redis::Connection, id: &str, fields: &[(&str, &str)]) -> String {
    con.xadd(STREAM, id, fields).expect("XADD")
}

/// The group's pending entries: (id, consumer, times delivered).
pub fn pending(con: &mut redis::Connection) -> Vec<(String, String, u64)> {
    let reply: Value = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(100_000)
        .query(con)
        .or_else(|e| match e.code() {
            Some("NOGROUP") => Ok(Value::Array(Vec::new())),
            _ => Err(e),
        })
        .expect("XPENDING");
    let rows: Vec<(String, String, u64, u64)> =
        redis::FromRedisValue::from_redis_value(reply).expect("XPENDING rows");
    rows.into_iter().map(|(id, c, _, n)| (id, c, n)).collect()
}

/// A stream entry's fields, byte for byte.
pub type RawFields = Vec<(Vec<u8>, Vec<u8>)>;

/// The dead-letter stream as stored: (id, fields).
pub fn stored_dead_letters(con: &mut redis::Connection) -> Vec<(String, RawFields)> {
    con.xrange(DEAD, "-", "+").expect("XRANGE dead")
}

/// The dead-letter stream: (id, fields as text pairs), packed fields unpacked.
pub fn dead_letters(con: &mut redis::Connection) -> Vec<(String, Vec<(String, String)>)> {
    dead_letters_in(con, DEAD)
}

/// [`dead_letters`] of the dead-letter stream `dead`.
pub fn dead_letters_in(
    con: &mut redis::Connection,
    dead: &str,
) -> Vec<(String, Vec<(String, String)>)> {
    con.xrange::<_, _, _, Vec<(String, RawFields)>>(dead, "-", "+")
        .expect("XRANGE dead")
        .into_iter()
        .map(|(id, fields)| {
            let fields = sio_relay::dead_letter::unpacked(&fields)
                .into_iter()
                .map(|(f, v)| {
                    (
                        String::from_utf8_lossy(&f).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect();
            (id, fields)
        })
        .collect()
}

pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.as_str())
}

/// The group's consumers: (name, pending entries, idle milliseconds), as XINFO CONSUMERS gives them.
pub fn consumers(con: &mut redis::Connection) -> Vec<(String, u64, u64)> {
    let rows: Vec<std::collections::HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(STREAM)
        .arg(GROUP)
        .query(con)
        .expect("XINFO CONSUMERS");
    let get = |row: &std::collections::HashMap<String, Value>, key: &str| -> u64 {
        redis::FromRedisValue::from_redis_value(row[key].clone()).unwrap()
    };
    rows.iter()
        .map(|row| {
            let name = redis::FromRedisValue::from_redis_value(row["name"].clone()).unwrap();
            (name, get(row, "pending"), get(row, "idle"))
        })
        .collect()
}

/// Waits until the consumer `name` has been idle for longer than `idle`.
pub fn wait_consumer_idle(con: &mut redis::Connection, name: &str, idle: Duration) {
    wait_until(
        Duration::from_secs(10),
        &format!("{name} is idle for longer than {idle:?}"),
        || {
            consumers(con)
                .iter()
                .any(|(n, _, ms)| n == name && *ms > idle.as_millis() as u64)
        },
    );
}

/// Per command of INFO commandstats: (calls, rejected_calls, failed_calls) so far.
pub fn command_stats(con: &mut redis::Connection) -> std::collections::HashMap<String, [u64; 3]> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let value = |key: &str| -> u64 {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            Some((
                name.to_owned(),
                [
                    value("calls"),
                    value("rejected_calls"),
                    value("failed_calls"),
                ],
            ))
        })
        .collect()
}

/// How often Redis refused or failed `command` so far (rejected_calls + failed_calls).
pub fn command_errors(con: &mut redis::Connection, command: &str) -> u64 {
    command_stats(con)
        .get(command)
        .map_or(0, |[_, rejected, failed]| rejected + failed)
}

/// How many times Socket.IO servers were counted (PUBSUB NUMSUB), which the relay does on every
/// attempt to deliver, retries of held entries included.
pub fn servers_counted(con: &mut redis::Connection) -> u64 {
    command_stats(con)
        .get("pubsub|numsub")
        .map_or(0, |[calls, _, _]| *calls)
}

/// Waits until the relay has counted the servers `n` more times than `before` (a
/// [`servers_counted`]): `n` attempts, retries of held entries included.
pub fn wait_attempts(con: &mut redis::Connection, before: u64, n: u64) {
    wait_until(
        Duration::from_secs(20),
        &format!("{n} more delivery attempts"),
        || servers_counted(con) >= before + n,
    );
}

/// Waits until Redis has refused or failed `command` `n` more times than `before` (a
/// [`command_errors`]): the relay keeps trying while Redis refuses its work.
pub fn wait_refused(con: &mut redis::Connection, command: &str, before: u64, n: u64) {
    wait_until(
        Duration::from_secs(20),
        &format!("Redis refuses {command} {n} more times"),
        || command_errors(con, command) >= before + n,
    );
}

/// XGROUP DESTROY of the relays' group, as an operator's mistake would.
pub fn destroy_group(con: &mut redis::Connection) {
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(STREAM)
        .arg(GROUP)
        .query(con)
        .unwrap();
}

/// Reads entries as consumer `consumer` without acknowledging them: a relay that then dies.
pub fn read_as(con: &mut redis::Connection, consumer: &str, count: usize) {
    let _: Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(con)
        .unwrap_or(Value::Nil);
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(STREAM)
        .arg(">")
        .query(con)
        .expect("XREADGROUP");
}

/// The npm project with the real Socket.IO servers and clients, installed from its lockfile once.
pub fn e2e_dir() -> &'static Path {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e"));
    INSTALL.call_once(|| npm_install(dir));
    dir
}

/// `npm ci` in `dir` unless every dependency of its package.json is installed already.
pub fn npm_install(dir: &Path) {
    require(
        "node",
        "install Node.js 18 or later (Debian/Ubuntu: apt-get install nodejs npm)",
    );
    let npm = require("npm", "install npm (Debian/Ubuntu: apt-get install npm)");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("package.json")).unwrap()).unwrap();
    let installed = manifest["dependencies"]
        .as_object()
        .unwrap()
        .keys()
        .all(|name| {
            dir.join("node_modules")
                .join(name)
                .join("package.json")
                .is_file()
        });
    if installed && dir.join("node_modules/.package-lock.json").is_file() {
        return;
    }
    let status = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .expect("run npm ci");
    assert!(
        status.success(),
        "`npm ci` in {} failed: the tests need the npm registry",
        dir.display()
    );
}

/// A Node process from tests/e2e, killed when dropped; its stdout lines are collected.
pub struct Node {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Node {
    pub fn start(script: &str, args: &[&str]) -> Node {
        let mut command = Command::new("node");
        command.arg(script).args(args).current_dir(e2e_dir());
        Node::spawn(command)
    }

    /// Any program, run as [`Node::start`] runs a script of tests/e2e (the demo's start script).
    pub fn spawn(mut command: Command) -> Node {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Node { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Writes one line to the program's stdin (browser.js reads its commands there).
    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").expect("write to node's stdin");
        stdin.flush().expect("flush node's stdin");
    }

    pub fn wait_line(&self, needle: &str, timeout: Duration) {
        wait_until(timeout, &format!("node prints {needle:?}"), || {
            self.lines().iter().any(|l| l.contains(needle))
        });
    }
}

impl Node {
    /// SIGKILL (which also ends a stopped process), then reaped: gone when this returns.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's ID (node's own: the script is run directly, not through a shell).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` ("STOP", "CONT", ...) without waiting for anything.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }
}

/// `kill -s <signal> <pid>`, which must succeed.
pub fn send_signal(pid: u32, signal: &str) {
    let pid = pid.to_string();
    let sent = Command::new("kill").args(["-s", signal, &pid]).status();
    assert!(
        sent.is_ok_and(|s| s.success()),
        "kill -s {signal} {pid} failed"
    );
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Socket.IO client sockets; `spec` is (name, url, rooms).
pub struct Clients(Node);

impl Clients {
    pub fn connect(spec: &[(&str, String, &[&str])]) -> Clients {
        Clients::start(spec, false)
    }

    /// Clients that print, instead of each event's arguments, the `n` field of the first one.
    pub fn connect_brief(spec: &[(&str, String, &[&str])]) -> Clients {
        Clients::start(spec, true)
    }

    fn start(spec: &[(&str, String, &[&str])], brief: bool) -> Clients {
        let spec: Vec<serde_json::Value> = spec
            .iter()
            .map(|(name, url, rooms)| {
                json!({"name": name, "url": url, "rooms": rooms, "brief": brief})
            })
            .collect();
        Clients::start_specs(spec)
    }

    /// Clients as clients.js describes them, e.g. `{"name", "url", "rooms", "ack": true}` for one
    /// that acknowledges what asks for it.
    pub fn start_specs(spec: Vec<serde_json::Value>) -> Clients {
        let node = Node::start("clients.js", &[&serde_json::Value::Array(spec).to_string()]);
        node.wait_line(r#""ready":true"#, Duration::from_secs(20));
        Clients(node)
    }

    /// Every (event, args) each client received, in order.
    pub fn received(&self) -> BTreeMap<String, Vec<(String, serde_json::Value)>> {
        let mut by_client: BTreeMap<String, Vec<(String, serde_json::Value)>> = BTreeMap::new();
        for line in self.0.lines() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if let (Some(client), Some(_)) = (v["client"].as_str(), v["event"].as_str()) {
                by_client
                    .entry(client.to_owned())
                    .or_default()
                    .push((v["event"].as_str().unwrap().to_owned(), v["args"].clone()));
            }
        }
        by_client
    }

    /// Why each of `client`'s connections ended, in order.
    pub fn disconnections(&self, client: &str) -> Vec<String> {
        self.said(client, "disconnected")
    }

    /// Every line `client` printed, as JSON.
    fn lines_of(&self, client: &str) -> Vec<serde_json::Value> {
        self.0
            .lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|v| v["client"] == client)
            .collect()
    }

    /// The text `client` printed under `key`, line after line.
    fn said(&self, client: &str, key: &str) -> Vec<String> {
        self.lines_of(client)
            .into_iter()
            .filter_map(|v| v[key].as_str().map(str::to_owned))
            .collect()
    }

    /// Each of `client`'s connections, in order: whether the server's connection state recovery
    /// gave it what it missed while away (`socket.recovered`).
    pub fn recoveries(&self, client: &str) -> Vec<bool> {
        self.lines_of(client)
            .into_iter()
            .filter(|v| v["connected"] == true)
            .map(|v| v["recovered"] == true)
            .collect()
    }

    /// How many times `client` joined its rooms: once per connection, so 2 once it has reconnected
    /// after losing its server.
    pub fn joins(&self, client: &str) -> usize {
        self.lines_of(client)
            .into_iter()
            .filter(|v| v.get("joined").is_some())
            .count()
    }

    /// The socket ID `client` had when it last joined its rooms (the room of that one socket).
    pub fn socket_id(&self, client: &str) -> String {
        self.said(client, "id").pop().expect("a joined client")
    }

    /// The events `client` received with an acknowledgement callback, in order.
    pub fn ackable_of(&self, client: &str) -> Vec<String> {
        self.lines_of(client)
            .into_iter()
            .filter(|v| v["ackable"] == true)
            .filter_map(|v| v["event"].as_str().map(str::to_owned))
            .collect()
    }

    /// The events `client` acknowledged, in order.
    pub fn acked_by(&self, client: &str) -> Vec<String> {
        self.said(client, "acked")
    }

    pub fn events_of(&self, client: &str) -> Vec<(String, serde_json::Value)> {
        self.received().remove(client).unwrap_or_default()
    }

    pub fn wait_events(&self, client: &str, n: usize, timeout: Duration) {
        wait_until(timeout, &format!("{client} receives {n} events"), || {
            self.events_of(client).len() >= n
        });
    }
}

/// XADDs an `end` event with `fields` (a room, a namespace) to `stream`, and waits until each of
/// `names` has it: whatever the relay published before it has reached them too (a server gets the
/// relay's packets in order and passes them on in order). How a test knows that something did
/// *not* arrive, without sleeping.
pub fn end_marker(
    con: &mut redis::Connection,
    stream: &str,
    fields: &[(&str, &str)],
    clients: &Clients,
    names: &[&str],
) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let data = json!({ "end": n }).to_string();
    let mut all = vec![("event", "end"), ("data", data.as_str())];
    all.extend_from_slice(fields);
    let _: String = con.xadd(stream, "*", &all).expect("XADD");
    for name in names {
        wait_until(
            Duration::from_secs(20),
            &format!("{name} gets the end marker"),
            || {
                clients
                    .events_of(name)
                    .iter()
                    .any(|(event, args)| event == "end" && args[0]["end"] == n)
            },
        );
    }
}

/// The rooms `user:0` .. `user:<n-1>`, and one client per room (named after it) on `url`.
pub fn one_client_per_room(url: &str, n: usize) -> (Vec<String>, Clients) {
    let rooms: Vec<String> = (0..n).map(|u| format!("user:{u}")).collect();
    let joined: Vec<[&str; 1]> = rooms.iter().map(|room| [room.as_str()]).collect();
    let spec: Vec<(&str, String, &[&str])> = joined
        .iter()
        .map(|room| (room[0], url.to_owned(), &room[..]))
        .collect();
    let clients = Clients::connect(&spec);
    (rooms, clients)
}

/// Entry `i` (data `i`) went to room `i % rooms.len()`: each room's client must get exactly its
/// `per_room` entries, once each and in order. `add(room, fields)` XADDs an entry for `room`
/// where that room's entries go: one `end` entry per room, once its client has it, tells that it
/// has everything the relay sent before it (a duplicate included).
pub fn assert_each_room_in_order(
    clients: &Clients,
    rooms: &[String],
    per_room: usize,
    mut add: impl FnMut(&str, &[(&str, &str)]),
) {
    for room in rooms {
        clients.wait_events(room, per_room, Duration::from_secs(30));
    }
    for room in rooms {
        add(room, &[("event", "end"), ("room", room)]);
    }
    for room in rooms {
        wait_until(
            Duration::from_secs(30),
            &format!("{room} gets `end`"),
            || {
                clients
                    .events_of(room)
                    .iter()
                    .any(|(event, _)| event == "end")
            },
        );
    }
    for (u, room) in rooms.iter().enumerate() {
        let got: Vec<u64> = clients
            .events_of(room)
            .iter()
            .filter(|(event, _)| event == "n")
            .map(|(_, args)| args[0].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (0..per_room)
            .map(|k| (k * rooms.len() + u) as u64)
            .collect();
        assert_eq!(got, expected, "{room}: each once, in order");
    }
}

/// A Socket.IO server process, started and waited for until its adapter listens.
pub struct SocketIoServer {
    pub port: u16,
    node: Node,
    urls: String,
    options: serde_json::Value,
}

impl SocketIoServer {
    pub fn start(redis: &RedisServer) -> SocketIoServer {
        SocketIoServer::start_with(&redis.url(), &Adapter::Classic)
    }

    /// A server on the Redis at `urls` (comma-separated seed nodes for a cluster), with `adapter`.
    pub fn start_with(urls: &str, adapter: &Adapter) -> SocketIoServer {
        SocketIoServer::start_options(urls, &adapter.options())
    }

    /// A server with server.js's `options`.
    pub fn start_options(urls: &str, options: &serde_json::Value) -> SocketIoServer {
        let port = free_port();
        let node = SocketIoServer::spawn(port, urls, options);
        SocketIoServer {
            port,
            node,
            urls: urls.to_owned(),
            options: options.clone(),
        }
    }

    fn spawn(port: u16, urls: &str, options: &serde_json::Value) -> Node {
        let node = Node::start(
            "server.js",
            &[&port.to_string(), urls, &options.to_string()],
        );
        node.wait_line("listening", Duration::from_secs(20));
        node
    }

    /// Kills the server (its clients start reconnecting).
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Sends `signal` to the server's process: "STOP" freezes it with its Redis connections open
    /// (still subscribed, reading nothing), "CONT" thaws it.
    pub fn signal(&self, signal: &str) {
        self.node.signal(signal);
    }

    /// Starts the server again on the same port, where its clients reconnect. The old process is
    /// SIGKILLed (stopped or not) and reaped first.
    pub fn restart(&mut self) {
        self.node.kill();
        self.node = SocketIoServer::spawn(self.port, &self.urls, &self.options);
    }

    pub fn url(&self, nsp: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, nsp)
    }

    /// Each call of the server's `serverSideEmit` listeners: [nsp, event, ...args].
    pub fn server_side_emits(&self) -> Vec<serde_json::Value> {
        self.node
            .lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|v| v.get("serverSideEmit").cloned())
            .collect()
    }
}

/// The adapter a test's Socket.IO servers use, and the relay settings that match it.
#[derive(Clone, Debug)]
pub enum Adapter {
    Classic,
    /// The classic adapter with a JSON parser.
    ClassicJson,
    /// The classic adapter on ioredis instead of node-redis.
    ClassicIoredis,
    /// socket.io 4.5 with `@socket.io/redis-adapter` 7.2 (classic).
    Classic72,
    /// The sharded adapter in this subscription mode.
    Sharded(&'static str),
    /// `@socket.io/redis-streams-adapter` 0.3.
    Streams,
    /// The streams adapter with `useShardedPubSub`.
    StreamsShardedPubsub,
    /// The streams adapter with `streamCount` 4.
    StreamsFour,
}

impl Adapter {
    /// server.js's options.
    pub fn options(&self) -> serde_json::Value {
        match self {
            Adapter::Classic => json!({}),
            Adapter::ClassicJson => json!({"parser": "json"}),
            Adapter::ClassicIoredis => json!({"client": "ioredis"}),
            Adapter::Classic72 => json!({"stack": "4.5"}),
            Adapter::Sharded(mode) => json!({"adapter": "sharded", "subscriptionMode": mode}),
            Adapter::Streams => json!({"adapter": "streams"}),
            Adapter::StreamsShardedPubsub => {
                json!({"adapter": "streams", "useShardedPubSub": true})
            }
            Adapter::StreamsFour => json!({"adapter": "streams", "streamCount": 4}),
        }
    }

    /// The relay's settings for it.
    pub fn settings(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            Adapter::Classic | Adapter::ClassicIoredis | Adapter::Classic72 => vec![],
            Adapter::ClassicJson => vec![("TARGET__PARSER", "json")],
            Adapter::Sharded(mode) => vec![
                ("TARGET__ADAPTER", "sharded"),
                ("TARGET__SUBSCRIPTION_MODE", mode),
            ],
            Adapter::Streams => vec![("TARGET__ADAPTER", "streams")],
            Adapter::StreamsShardedPubsub => vec![
                ("TARGET__ADAPTER", "streams"),
                ("TARGET__USE_SHARDED_PUBSUB", "true"),
            ],
            Adapter::StreamsFour => vec![
                ("TARGET__ADAPTER", "streams"),
                ("TARGET__STREAM_COUNT", "4"),
            ],
        }
    }

    /// PUBSUB subcommand and channel whose subscribers are the servers of `nsp`.
    pub fn servers_channel(&self, nsp: &str) -> (&'static str, String) {
        match self {
            Adapter::Classic
            | Adapter::ClassicJson
            | Adapter::ClassicIoredis
            | Adapter::Classic72 => ("NUMSUB", format!("socket.io-request#{nsp}#")),
            Adapter::Sharded(_) | Adapter::StreamsShardedPubsub => {
                ("SHARDNUMSUB", format!("socket.io#{nsp}#"))
            }
            Adapter::Streams | Adapter::StreamsFour => ("NUMSUB", format!("socket.io#{nsp}#")),
        }
    }
}

/// Makes Redis hold every client's write commands (the relay's reads and scripts) for up to 30 s.
pub fn pause_writes(con: &mut redis::Connection) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(30_000)
        .arg("WRITE")
        .query(con)
        .unwrap();
}

/// Runs `f` while Redis holds every client's write commands (the relay's reads and scripts), then
/// lets them through: servers and clients started in `f` are all there before the relay acts.
pub fn with_writes_paused<T>(redis: &RedisServer, f: impl FnOnce() -> T) -> T {
    let mut con = redis.connection();
    pause_writes(&mut con);
    let result = f();
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut con).unwrap();
    result
}

/// Waits until `n` servers' adapters subscribe to each namespace (as the adapter counts servers).
pub fn wait_servers(redis: &RedisServer, n: i64) {
    wait_adapter_servers(redis, &Adapter::Classic, n);
}

/// As [`wait_servers`], for servers with `adapter`.
pub fn wait_adapter_servers(redis: &RedisServer, adapter: &Adapter, n: i64) {
    wait_namespace_servers(redis, adapter, &["/", "/admin"], n);
}

/// As [`wait_adapter_servers`], on each of `nsps`.
pub fn wait_namespace_servers(redis: &RedisServer, adapter: &Adapter, nsps: &[&str], n: i64) {
    let mut con = redis.connection();
    for &nsp in nsps {
        let (command, channel) = adapter.servers_channel(nsp);
        wait_until(
            Duration::from_secs(20),
            &format!("{n} servers listen on {nsp}"),
            || {
                let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                    .arg(command)
                    .arg(&channel)
                    .query(&mut con)
                    .unwrap();
                counts[0].1 == n
            },
        );
    }
}

/// Where each of `total` numbered entries ended up: entries carry their number in `x-seq` (kept in
/// dead letters) and, when valid, as their `data` argument (what subscribers see).
pub struct Ledger {
    pub produced: usize,
    pub delivered: Vec<u32>,
    pub dead: Vec<u32>,
    /// Entries the test itself deleted from the stream: neither delivery nor loss is required.
    pub excused: Vec<bool>,
}

impl Ledger {
    /// Waits (up to 30 s) until every entry was delivered or dead-lettered and nothing is pending,
    /// then counts.
    pub fn settle(sub: &Subscriber, redis: &RedisServer, total: usize) -> Ledger {
        Ledger::settle_excusing(sub, redis, total, &[], &[])
    }

    /// As [`Ledger::settle`], also counting `earlier` messages (of a subscriber that left) and
    /// excusing the `excused` entries.
    pub fn settle_excusing(
        sub: &Subscriber,
        redis: &RedisServer,
        total: usize,
        excused: &[usize],
        earlier: &[Message],
    ) -> Ledger {
        Ledger::count_once_settled(sub, redis, total, excused, earlier, 0)
    }

    /// As [`Ledger::settle`], where `left_pending` other entries stay pending (held for a
    /// namespace without listeners).
    pub fn settle_waiting(
        sub: &Subscriber,
        redis: &RedisServer,
        total: usize,
        left_pending: usize,
    ) -> Ledger {
        Ledger::count_once_settled(sub, redis, total, &[], &[], left_pending)
    }

    fn count_once_settled(
        sub: &Subscriber,
        redis: &RedisServer,
        total: usize,
        excused: &[usize],
        earlier: &[Message],
        left_pending: usize,
    ) -> Ledger {
        let con = &mut redis.connection();
        let mut excused_flags = vec![false; total];
        for &i in excused {
            excused_flags[i] = true;
        }
        let count = |con: &mut redis::Connection| {
            let mut ledger = Ledger {
                produced: total,
                delivered: vec![0; total],
                dead: vec![0; total],
                excused: excused_flags.clone(),
            };
            for message in sub.messages().iter().chain(earlier) {
                if let Some(n) = message.arg().as_u64() {
                    ledger.delivered[n as usize] += 1;
                }
            }
            for (_, fields) in dead_letters(con) {
                if let Some(n) = field(&fields, "x-seq").and_then(|n| n.parse::<usize>().ok()) {
                    ledger.dead[n] += 1;
                }
            }
            ledger
        };
        // Settled once nothing is missing and nothing is pending any more (so no late reclaim can
        // add a duplicate), and everything published has reached the subscriber.
        let deadline = Instant::now() + Duration::from_secs(30);
        while (count(con).lost() > 0 || pending(con).len() > left_pending)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        sub.flush(redis);
        count(con)
    }

    pub fn reached(&self, i: usize) -> u32 {
        self.delivered[i] + self.dead[i]
    }

    pub fn lost(&self) -> usize {
        (0..self.produced)
            .filter(|&i| self.reached(i) == 0 && !self.excused[i])
            .count()
    }

    pub fn duplicated(&self) -> usize {
        (0..self.produced).filter(|&i| self.reached(i) > 1).count()
    }

    /// The one-line summary the chaos suite prints per scenario.
    pub fn summary(&self, scenario: &str) -> String {
        let delivered = self.delivered.iter().filter(|&&n| n > 0).count();
        let dead = self.dead.iter().filter(|&&n| n > 0).count();
        let excused = self.excused.iter().filter(|&&e| e).count();
        let mut line = format!(
            "chaos {scenario}: produced {}, delivered {delivered}, dead-lettered {dead}, lost {}, duplicated {}",
            self.produced,
            self.lost(),
            self.duplicated()
        );
        if excused > 0 {
            line.push_str(&format!(" (trimmed by the test: {excused})"));
        }
        line
    }

    pub fn assert_exactly_once(&self) {
        let first = |pred: &dyn Fn(usize) -> bool| -> Vec<usize> {
            (0..self.produced).filter(|&i| pred(i)).take(10).collect()
        };
        assert!(
            self.lost() == 0 && self.duplicated() == 0,
            "lost {} (first {:?}), duplicated {} (first {:?})",
            self.lost(),
            first(&|i| self.reached(i) == 0 && !self.excused[i]),
            self.duplicated(),
            first(&|i| self.reached(i) > 1),
        );
    }
}

/// `GET path` over plain HTTP/1.0: (status, body); status 0 when nothing listens yet.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(port, &format!("GET {path}"), &[], "")
}

/// One request over plain HTTP/1.0 (`request_line` such as `POST /path`), with `headers` (a
/// `Host` of 127.0.0.1 unless they have one) and `body`: (status, body); status 0 when nothing
/// listens or answers.
pub fn http_request(
    port: u16,
    request_line: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("{request_line} HTTP/1.0\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let mut response = String::new();
    let answered = stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.read_to_string(&mut response));
    // No answer (not accepted yet, closed): status 0.
    if answered.is_err() || response.len() < 12 {
        return (0, String::new());
    }
    let status = response[9..12].parse().expect("a status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Headless Chromium on `pages` (tests/e2e/browser.js, which says what a page spec holds), once
/// the last one is ready.
pub fn browser(pages: &serde_json::Value) -> Node {
    let chromium = require(
        "chromium",
        "install Debian's Chromium (apt-get install chromium)",
    );
    let mut command = Command::new("node");
    command
        .arg("browser.js")
        .arg(pages.to_string())
        .env("CHROMIUM", &chromium)
        .current_dir(e2e_dir());
    let browser = Node::spawn(command);
    let last = pages.as_array().map_or(0, |p| p.len().saturating_sub(1));
    browser.wait_line(
        &format!("{{\"ready\":{last}}}"),
        60 * Duration::from_secs(1),
    );
    browser
}

/// Makes the dead-letter stream refuse every XADD (its last ID is the largest there is), so that
/// an entry that must be dead-lettered is parked instead.
pub fn exhaust_dead_letter_stream(con: &mut redis::Connection) {
    let _: () = con.del(DEAD).unwrap();
    let _: String = con
        .xadd(
            DEAD,
            "18446744073709551615-18446744073709551615",
            &[("f", "v")],
        )
        .unwrap();
}

/// Every series of `/metrics` named `sio_relay_<name>` (a histogram counts by its `_count`) that
/// carries the labels `name` gives, if any, whatever its others (`dead_lettered_total{reason=
/// "malformed"}` sums that reason over every stream), summed: what "it moved" is judged on.
pub fn reading(body: &str, name: &str) -> Option<f64> {
    let (base, wanted) = series_of(name);
    let base = format!("sio_relay_{base}");
    let count = format!("{base}_count");
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = series_of(series);
        if (name == base || name == count) && wanted.iter().all(|l| labels.contains(l)) {
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            let value = if value.is_nan() { -1.0 } else { value };
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// A series' name and labels: `name{a="x",b="y"}` gives `name` and `[(a, x), (b, y)]`, values
/// unescaped.
pub fn series_of(series: &str) -> (&str, Vec<(String, String)>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series, Vec::new());
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let key = key.trim_start_matches([',', ' ']).to_owned();
        if key.is_empty() || key == "}" || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => value.extend(chars.next()),
                c => value.push(c),
            }
        }
        labels.push((key, value));
    }
    (name, labels)
}

/// The sum of every series `name` (`sio_relay_...`, with some of its labels if given), as
/// [`reading`] reads it, or a panic naming it.
pub fn metric(body: &str, name: &str) -> f64 {
    find_metric(body, name).unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

/// The sum of every series `name` (`sio_relay_...`, with some of its labels if given), as
/// [`reading`] reads it, if the body has one.
pub fn find_metric(body: &str, name: &str) -> Option<f64> {
    let name = name
        .strip_prefix("sio_relay_")
        .expect("a sio_relay_ metric");
    reading(body, name)
}

/// The ACL rule of docs/05-security.md ("Secure Redis"), with `password` instead of the
/// placeholder.
pub fn documented_acl_rule(password: &str) -> Vec<String> {
    let chapter = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/05-security.md"));
    let line = chapter
        .lines()
        .find(|l| l.starts_with("ACL SETUSER sio-relay "))
        .expect("the ACL rule is in docs/05-security.md");
    line.replace(">CHANGE-ME", &format!(">{password}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// This machine's clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
