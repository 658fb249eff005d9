//! `sio-relay monitor`: subscribes to the adapter's broadcast channels and prints every packet,
//! decoded (namespace, rooms, except, flags, event, arguments), one line each, as text or JSON.
//! Packets that a server could not decode are shown too, in hex: those are the ones that crash
//! Socket.IO servers, whoever published them.

use std::io::Write;

use futures_util::StreamExt;

use super::{printable, Failure, EXIT_FAILURE};
use crate::config::Config;
use crate::connection;
use crate::packet::{self, Decoded};

/// Prints packets to `out` until `count` were seen (forever when `None`).
pub async fn run(
    cfg: &Config,
    json: bool,
    count: Option<usize>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let client = connection::client(cfg).map_err(|e| Failure {
        code: EXIT_FAILURE,
        message: format!("redis.url: {e}"),
    })?;
    let mut pubsub = client.get_async_pubsub().await?;
    let pattern = format!("{}#*", cfg.target.key);
    pubsub.psubscribe(&pattern).await?;
    eprintln!("monitoring {pattern} (Ctrl-C to stop)");
    let mut messages = pubsub.on_message();
    let mut seen = 0;
    while count.is_none_or(|n| seen < n) {
        let Some(message) = messages.next().await else {
            return Err(Failure {
                code: EXIT_FAILURE,
                message: "the connection to Redis closed".into(),
            });
        };
        let line = describe(
            message.get_channel_name(),
            message.get_payload_bytes(),
            json,
        );
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader went away (`sio-relay monitor | head`): a normal end for a tool.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => {
                return Err(Failure {
                    code: EXIT_FAILURE,
                    message: format!("cannot write: {e}"),
                })
            }
        }
        seen += 1;
    }
    Ok(())
}

/// One output line for the packet `payload` seen on `channel`.
pub fn describe(channel: &str, payload: &[u8], json: bool) -> String {
    match (packet::decode(payload), json) {
        (Ok(decoded), true) => {
            serde_json::json!({ "channel": channel, "packet": decoded }).to_string()
        }
        (Ok(decoded), false) => text(channel, &decoded),
        (Err(error), true) => serde_json::json!({
            "channel": channel,
            "error": error,
            "hex": packet::hex(payload),
        })
        .to_string(),
        (Err(error), false) => format!(
            "{} UNDECODABLE ({error}) hex={}",
            printable(channel),
            packet::hex(payload)
        ),
    }
}

fn text(channel: &str, p: &Decoded) -> String {
    let list = |items: &[String]| serde_json::to_string(items).expect("strings serialize");
    format!(
        "{} nsp={} rooms={} except={} flags={} event={} args={}",
        printable(channel),
        printable(&p.nsp),
        list(&p.rooms),
        list(&p.except),
        serde_json::Value::Object(p.flags.clone()),
        printable(&p.event),
        serde_json::Value::Array(p.args.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Entry;

    #[test]
    fn lines_show_the_packet_or_why_it_is_undecodable() {
        let fields = vec![
            (b"event".to_vec(), b"chat".to_vec()),
            (b"data".to_vec(), br#"{"text":"hi"}"#.to_vec()),
            (b"room".to_vec(), b"lobby".to_vec()),
        ];
        let packet = Config::default()
            .target()
            .encode(&Entry::parse(&fields).unwrap());
        assert_eq!(
            describe(&packet.channel, &packet.payload, false),
            r#"socket.io#/#lobby# nsp=/ rooms=["lobby"] except=[] flags={} event=chat args=[{"text":"hi"}]"#
        );
        let json: serde_json::Value =
            serde_json::from_str(&describe(&packet.channel, &packet.payload, true)).unwrap();
        assert_eq!(json["packet"]["event"], "chat");
        assert_eq!(json["packet"]["rooms"][0], "lobby");

        assert_eq!(
            describe("socket.io#/#", b"{}", false),
            "socket.io#/# UNDECODABLE (1 trailing bytes after the packet (notepack throws on them)) hex=7b7d"
        );
        let json: serde_json::Value =
            serde_json::from_str(&describe("socket.io#/#", b"{}", true)).unwrap();
        assert_eq!(json["hex"], "7b7d");
    }
}
