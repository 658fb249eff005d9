//! The command line as users and init systems see it: help, and configurations refused at start
//! with exit status 78 (EX_CONFIG) and the key at fault named, before anything connects.

use std::process::{Command, Output};

use crate::common::sio_relay;

fn relay(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = sio_relay();
    cmd.args(args).env_remove("RUST_LOG");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("run sio-relay")
}

fn refused(args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let out = relay(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{args:?} {env:?}: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{stderr:?} should mention {needle:?}"
        );
    }
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn help_lists_the_run_command() {
    let out = relay(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run"), "{help}");
    let out = relay(&["run", "--help"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
}

#[test]
fn a_missing_config_file_is_refused() {
    refused(
        &["run", "--config", "/nonexistent/sio-relay.toml"],
        &[],
        &["/nonexistent/sio-relay.toml", "No such file"],
    );
}

#[test]
fn unknown_keys_and_bad_values_are_refused_by_name() {
    let typo = config_file("[delivery]\nmin_reciever = 2\n");
    let path = typo.path().to_str().unwrap();
    refused(
        &["run", "--config", path],
        &[],
        &["min_reciever", "delivery"],
    );

    let bare_number = config_file("[source]\nblock = 30\n");
    let path = bare_number.path().to_str().unwrap();
    refused(
        &["run", "--config", path],
        &[],
        &["source.block", "\"30s\""],
    );

    let out_of_range = config_file("[source]\nbatch_size = 0\n");
    let path = out_of_range.path().to_str().unwrap();
    refused(
        &["run", "--config", path],
        &[],
        &["source.batch_size", "between 1 and 4096"],
    );

    refused(
        &["run"],
        &[("SIO_RELAY_DELIVERY__MIN_RECEIVERS", "lots")],
        &["delivery.min_receivers", "environment"],
    );
    refused(
        &["run"],
        &[("SIO_RELAY_SOURCE__BLOK", "1s")],
        &["blok", "source"],
    );
}

/// Absurd durations and numbers are refused at start, never a panic at start or later at run time
/// (`check-config` and `run` agree).
#[test]
fn absurd_durations_and_numbers_are_refused_at_start() {
    for (key, value, name) in [
        ("SIO_RELAY_SOURCE__BLOCK", "300000000000y", "source.block"),
        (
            "SIO_RELAY_DELIVERY__CLAIM_INTERVAL",
            "300000000000y",
            "delivery.claim_interval",
        ),
        (
            "SIO_RELAY_DELIVERY__RETRY_INTERVAL",
            "300000000000y",
            "delivery.retry_interval",
        ),
        (
            "SIO_RELAY_DELIVERY__MAX_HELD",
            "99999999999",
            "delivery.max_held",
        ),
    ] {
        for command in ["check-config", "run"] {
            refused(&[command], &[(key, value)], &[name, "must be between"]);
        }
    }
}

/// A password file the relay cannot read (a directory; a file of mode 000 for a relay that is not
/// root) is refused at start with the file and the reason, instead of a relay that retries for
/// ever.
#[test]
fn an_unreadable_password_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    refused(
        &["run"],
        &[("SIO_RELAY_REDIS__PASSWORD_FILE", path)],
        &["redis.password_file", path, "directory"],
    );

    // As an unprivileged user (root reads any file), when the tests can switch to one.
    let file = dir.path().join("redis-password");
    std::fs::write(&file, "secret").unwrap();
    let mut permissions = std::fs::metadata(&file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o000);
    std::fs::set_permissions(&file, permissions).unwrap();
    let mut dir_permissions = std::fs::metadata(dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut dir_permissions, 0o755);
    std::fs::set_permissions(dir.path(), dir_permissions).unwrap();
    let as_nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let can_switch = Command::new("setpriv")
        .args(as_nobody)
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !can_switch {
        eprintln!("setpriv cannot switch users here: the mode 000 case is not run");
        return;
    }
    let out = Command::new("setpriv")
        .args(as_nobody)
        .arg(crate::common::binary())
        .arg("check-config")
        .env("SIO_RELAY_REDIS__PASSWORD_FILE", &file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("redis.password_file") && stderr.contains("Permission denied"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_config_file_starts() {
    // Valid, so the relay gets as far as connecting; point it at a closed port and stop it.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = sio_relay()
        .args(["run", "--config", shipped])
        .env("SIO_RELAY_REDIS__URL", format!("redis://127.0.0.1:{port}"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It says Redis is unavailable, and keeps trying.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("Redis is unavailable") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "the relay ended"
        );
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running, retrying Redis"
    );
    Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    drop(stderr);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn check_config_prints_the_values_in_force_with_secrets_masked() {
    let file = config_file("[source]\nbatch_size = 64\n");
    let out = relay(
        &["check-config", "--config", file.path().to_str().unwrap()],
        &[
            (
                "SIO_RELAY_REDIS__URL",
                "redis://relay:s3cret@redis.internal:6379",
            ),
            ("SIO_RELAY_SOURCE__CONSUMER", "pod-1"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("batch_size = 64"), "{stdout}");
    assert!(stdout.contains("consumer = \"pod-1\""), "{stdout}");
    assert!(
        stdout.contains("redis://relay:****@redis.internal:6379"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"));
    refused(
        &["check-config"],
        &[("SIO_RELAY_SOURCE__BATCH_SIZE", "0")],
        &["source.batch_size"],
    );
}

/// The README's quick test path sets `FUZZ_SECONDS`; a caller's `SIO_RELAY_*` variable (such as the
/// old `SIO_RELAY_FUZZ_SECONDS`) never reaches the relays the tests start, which would refuse it as
/// an unknown key. The caller is a child run of this test binary with the variable in its
/// environment: setting it in this process would hand it to every test running alongside.
#[test]
fn the_callers_sio_relay_variables_never_reach_the_relays_under_test() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cli::a_relay_started_by_a_caller_with_sio_relay_variables",
            "--include-ignored",
        ])
        .env("SIO_RELAY_FUZZ_SECONDS", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the caller's test ran: {stdout}"
    );
}

/// Run by [`the_callers_sio_relay_variables_never_reach_the_relays_under_test`] with
/// `SIO_RELAY_FUZZ_SECONDS` set; it checks nothing without it.
#[test]
#[ignore = "run by the_callers_sio_relay_variables_never_reach_the_relays_under_test"]
fn a_relay_started_by_a_caller_with_sio_relay_variables() {
    if std::env::var_os("SIO_RELAY_FUZZ_SECONDS").is_none() {
        return;
    }
    let redis = crate::common::RedisServer::start();
    let relay = crate::common::Relay::start(&redis, "relay-1", &[]);
    relay.wait_ready(std::time::Duration::from_secs(10));
}
