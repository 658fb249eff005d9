//! `sio-relay status`: is the relay's world healthy? The report ([`crate::admin::status`]) as text
//! or JSON; the exit status is non-zero when something is wrong.

use std::time::Duration;

use super::{block_on, printable, streams_named};
use crate::admin::status::{gather, Status};
use crate::config::Config;
use crate::exit::{Failure, EXIT_FAILURE};

/// `sio-relay status [--json]`: the report, or, when unhealthy, the report and the failure.
pub fn run(cfg: &Config, json: bool) -> Result<String, (String, Failure)> {
    let status = block_on(async { Ok(gather(cfg).await) }).map_err(|f| (String::new(), f))?;
    let text = if json {
        serde_json::to_string_pretty(&status).expect("status serializes") + "\n"
    } else {
        render(&status)
    };
    if status.healthy {
        Ok(text)
    } else {
        Err((
            text,
            Failure {
                code: EXIT_FAILURE,
                message: "unhealthy".into(),
            },
        ))
    }
}

/// "entry" or "entries", as `n` needs.
fn entries(n: u64) -> &'static str {
    if n == 1 {
        "entry"
    } else {
        "entries"
    }
}

/// The text report.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let mut line = |label: &str, text: String| out.push_str(&format!("{label:<14}{text}\n"));
    line(
        "Redis",
        match (&status.redis.reachable, &status.redis.version) {
            (true, Some(v)) => format!("{} reachable, version {v}", status.redis.url),
            (true, None) => format!("{} reachable", status.redis.url),
            (false, _) => format!("{} unreachable", status.redis.url),
        },
    );
    line(
        "Target",
        match status.target.streams.as_slice() {
            [] => format!(
                "{} on {}",
                status.target.adapter,
                printable(&status.target.channel)
            ),
            streams => format!(
                "{} to {} (servers counted on {})",
                status.target.adapter,
                streams_named(streams),
                printable(&status.target.channel)
            ),
        },
    );
    if status.redis.reachable {
        let servers: Vec<String> = status
            .namespaces
            .iter()
            .map(|n| format!("{}: {} server(s)", printable(&n.nsp), n.servers))
            .collect();
        line(
            "Socket.IO",
            if servers.is_empty() {
                "no server listens".into()
            } else {
                servers.join(", ")
            },
        );
    }
    for stream in &status.streams {
        line(
            "Stream",
            format!(
                "{}: {} {}",
                stream.name,
                stream.length,
                entries(stream.length)
            ),
        );
        if let Some(group) = &stream.group {
            let lag = group.lag.map_or("unknown".to_owned(), |l| l.to_string());
            line(
                "Group",
                format!("{}: lag {lag}, pending {}", group.name, group.pending),
            );
            if let Some(n) = group.reached_no_client {
                line(
                    "No client",
                    format!("{n} delivered {} reached no client", entries(n)),
                );
            }
            for (i, c) in group.consumers.iter().enumerate() {
                line(
                    if i == 0 { "Consumers" } else { "" },
                    format!(
                        "{}: {} pending, idle {}",
                        // Named by whoever read from the group: any client the ACL lets do so.
                        printable(&c.name),
                        c.pending,
                        humantime::format_duration(Duration::from_millis(c.idle_ms))
                    ),
                );
            }
        }
        line(
            "Dead letters",
            format!(
                "{}: {} {}",
                stream.dead_letter_stream,
                stream.dead_letters,
                entries(stream.dead_letters)
            ),
        );
    }
    line(
        "Healthy",
        if status.healthy {
            "yes".into()
        } else {
            format!("no: {}", status.problems.join("; "))
        },
    );
    out
}
