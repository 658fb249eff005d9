//! Python in the tests: a virtualenv per pinned requirements file, and python-socketio servers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

/// A virtualenv in the tests' temporary directory named `name`, with exactly the packages pinned in
/// `requirements` (`--no-deps`: a dependency missing from the pins fails `pip check`, instead of
/// coming in unpinned); its python. Made again when the pins change.
pub fn python_venv(name: &str, requirements: &Path) -> PathBuf {
    let python = require("python3", "apt-get install python3 python3-venv");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    // The requirements the venv was made with: a changed pin makes a new one.
    let stamp = venv.join("requirements.txt");
    let wanted = std::fs::read(requirements).unwrap();
    if std::fs::read(&stamp).ok().as_ref() == Some(&wanted) {
        return venv.join("bin/python");
    }
    let created = Command::new(&python)
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .expect("run python3 -m venv");
    assert!(
        created.success(),
        "python3 -m venv failed: apt-get install python3-venv"
    );
    let pip = |args: &[&str]| {
        Command::new(venv.join("bin/pip"))
            .args(["--disable-pip-version-check", "--quiet"])
            .args(args)
            .status()
            .expect("run pip")
            .success()
    };
    let requirements_arg = requirements.to_str().expect("a UTF-8 path");
    assert!(
        pip(&["install", "--no-deps", "-r", requirements_arg]),
        "pip install -r {} failed: the tests need PyPI",
        requirements.display()
    );
    assert!(
        pip(&["check"]),
        "{} does not pin every dependency",
        requirements.display()
    );
    std::fs::write(&stamp, wanted).unwrap();
    venv.join("bin/python")
}

/// examples/python-socketio: the python-socketio servers and their pins.
fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python-socketio")
}

/// The venv of examples/python-socketio/requirements.txt, made once per test binary: tests in parallel would
/// otherwise make it side by side in one directory.
fn servers_python() -> &'static Path {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        python_venv(
            "python-socketio-venv",
            &python_dir().join("requirements.txt"),
        )
    })
}

/// Which python-socketio server examples/python-socketio/server.py runs.
#[derive(Clone, Copy, Debug)]
pub enum PythonStack {
    /// `socketio.AsyncServer` with `AsyncRedisManager`, under uvicorn.
    Async,
    /// Flask-SocketIO with a Redis `message_queue` (`RedisManager`, threads).
    Flask,
}

/// A python-socketio server process (examples/python-socketio/server.py) on a Redis, killed when
/// dropped.
pub struct PythonServer {
    pub port: u16,
    stack: PythonStack,
    url: String,
    process: Node,
}

impl PythonServer {
    pub fn start(redis: &RedisServer, stack: PythonStack) -> PythonServer {
        let port = free_port();
        let process = PythonServer::spawn(stack, port, &redis.url());
        PythonServer {
            port,
            stack,
            url: redis.url(),
            process,
        }
    }

    fn spawn(stack: PythonStack, port: u16, url: &str) -> Node {
        let mode = match stack {
            PythonStack::Async => "async",
            PythonStack::Flask => "flask",
        };
        let mut command = Command::new(servers_python());
        command
            .arg(python_dir().join("server.py"))
            .args([mode, &port.to_string(), url])
            .env("PYTHONUNBUFFERED", "1");
        let process = Node::spawn(command);
        process.wait_line("listening", Duration::from_secs(30));
        process
    }

    pub fn url(&self, nsp: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, nsp)
    }

    /// SIGKILL: its clients start reconnecting.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port, where its clients reconnect.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = PythonServer::spawn(self.stack, self.port, &self.url);
    }
}

/// Waits until `n` python-socketio servers subscribe to the `socketio` channel: those with a
/// client (they subscribe when their first one connects).
pub fn wait_python_servers(redis: &RedisServer, n: i64) {
    let mut con = redis.connection();
    wait_until(
        Duration::from_secs(20),
        &format!("{n} python-socketio servers subscribe"),
        || {
            let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("socketio")
                .query(&mut con)
                .unwrap();
            counts[0].1 == n
        },
    );
}
