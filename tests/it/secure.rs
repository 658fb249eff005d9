//! The relay against a Redis that requires credentials: under exactly the ACL rule
//! docs/05-security.md gives (password from a file), and over TLS with a CA and client
//! certificate made here.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn the_relay_works_under_the_documented_acl_rule() {
    let redis = RedisServer::start();
    let mut admin = redis.connection();
    let rule = documented_acl_rule("s3cret-pw");
    let _: () = redis::cmd(&rule[0])
        .arg(&rule[1..])
        .query(&mut admin)
        .unwrap();
    // Without the default user's powers: the relay must not rely on anything outside the rule.
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, "s3cret-pw\n").unwrap();

    let sub = Subscriber::start(&redis, "/");
    xadd(&mut admin, &[("event", "claimed"), ("data", "0")]);
    read_as(&mut admin, "crashed-pod", 1);
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(STREAM)
        .arg(GROUP)
        .arg("stale-pod")
        .query(&mut admin)
        .unwrap();
    wait_consumer_idle(&mut admin, "stale-pod", Duration::from_millis(1100));

    let url = format!("redis://sio-relay@127.0.0.1:{}", redis.port);
    let password_file = password_file.to_str().unwrap();
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("REDIS__URL", &url),
            ("REDIS__PASSWORD_FILE", password_file),
            ("DELIVERY__CLAIM_IDLE", "1s"),
            ("DELIVERY__CLAIM_INTERVAL", "100ms"),
            ("SOURCE__STALE_CONSUMER_IDLE", "1s"),
        ],
    );
    relay.wait_ready(10 * SECOND);
    xadd(&mut admin, &[("event", "fresh"), ("data", "1")]);
    xadd(&mut admin, &[("event", "disconnect")]);
    let events: Vec<String> = sub
        .wait_count(2, 10 * SECOND)
        .iter()
        .map(|m| m.event())
        .collect();
    assert!(events.contains(&"claimed".to_owned()) && events.contains(&"fresh".to_owned()));
    wait_until(10 * SECOND, "the malformed entry is dead-lettered", || {
        dead_letters(&mut admin).len() == 1
    });
    wait_until(10 * SECOND, "everything is acknowledged", || {
        pending(&mut admin).is_empty()
    });
    wait_until(10 * SECOND, "the stale consumer is removed", || {
        !consumers(&mut admin)
            .iter()
            .any(|(name, _, _)| name == "stale-pod")
    });
    relay.assert_logged("removed consumers");
    let log = relay.log();
    for refused in [
        "NOPERM",
        "unavailable",
        "cannot run CLIENT LIST",
        "cannot read client-output",
    ] {
        assert!(!log.contains(refused), "{refused}: {log}");
    }
}

#[test]
fn a_wrong_password_is_reported_and_retried() {
    let redis = RedisServer::start();
    let mut admin = redis.connection();
    let rule = documented_acl_rule("right");
    let _: () = redis::cmd(&rule[0])
        .arg(&rule[1..])
        .query(&mut admin)
        .unwrap();
    let url = format!("redis://sio-relay:wrong@127.0.0.1:{}", redis.port);
    let relay = Relay::start(&redis, "relay-1", &[("REDIS__URL", &url)]);
    relay.wait_unready("Redis:", 10 * SECOND);
    relay.assert_logged("Redis is unavailable");
    let log = relay.log();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(
        !log.contains("wrong@"),
        "the password is masked in logs: {log}"
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is needed for the TLS test (Debian: apt-get install openssl)");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all in `dir`.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sio-relay test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    for name in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }
}

#[test]
fn the_relay_speaks_tls_with_a_private_ca_and_a_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let path = |name: &str| certs.path().join(name).to_str().unwrap().to_owned();
    let tls_port = free_port();
    let redis = RedisServer::start_with(&[
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        path("server.crt"),
        "--tls-key-file".into(),
        path("server.key"),
        "--tls-ca-cert-file".into(),
        path("ca.crt"),
        "--tls-auth-clients".into(),
        "yes".into(),
    ]);
    let sub = Subscriber::start(&redis, "/");
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let (ca, cert, key) = (path("ca.crt"), path("client.crt"), path("client.key"));
    let relay = Relay::start(
        &redis,
        "relay-1",
        &[
            ("REDIS__URL", &url),
            ("REDIS__TLS_CA_FILE", &ca),
            ("REDIS__TLS_CERT_FILE", &cert),
            ("REDIS__TLS_KEY_FILE", &key),
        ],
    );
    relay.wait_ready(10 * SECOND);
    let mut con = redis.connection();
    xadd(&mut con, &[("event", "over-tls")]);
    assert_eq!(sub.wait_count(1, 10 * SECOND)[0].event(), "over-tls");
    drop(relay);

    // Without the client certificate the server refuses the handshake; the relay says so and retries.
    let relay = Relay::start(
        &redis,
        "relay-2",
        &[("REDIS__URL", &url), ("REDIS__TLS_CA_FILE", &ca)],
    );
    relay.wait_unready("Redis:", 10 * SECOND);
    relay.assert_logged("Redis is unavailable");
}
