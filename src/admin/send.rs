//! One entry sent by an operator, from `sio-relay send` or the console's send form: validated first,
//! against the configured limits, exactly as the relay will validate it, so that a typo never
//! reaches the stream; then appended to the relay's stream, or (`--direct`) published straight
//! through the adapter protocol, without durability.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::admin::{connect_all_nodes, connection_to};
use crate::config::Config;
use crate::entry::{Entry, Limits};
use crate::exit::{Failure, EXIT_DATA, EXIT_FAILURE};
use crate::servers;

/// What to send, as on the command line (and as the console's `POST /console/send` body, in JSON):
/// an emit, or another operation.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Request {
    /// The event: emitted to sockets, or to the servers' listeners with `server_side`.
    pub event: Option<String>,
    /// Each argument as JSON text: none, one (`data`) or several (`args`).
    pub args: Vec<String>,
    pub rooms: Vec<String>,
    pub except: Vec<String>,
    pub nsp: Option<String>,
    pub volatile: bool,
    pub compress: Option<bool>,
    /// Every socket of the namespace (needed by join, leave and disconnect without rooms).
    pub all: bool,
    /// Rooms the selected sockets join, or leave.
    pub join: Vec<String>,
    pub leave: Vec<String>,
    pub disconnect: bool,
    pub close: bool,
    /// `event` is for the namespace's `serverSideEmit` listeners.
    pub server_side: bool,
    /// Wait this long (e.g. `10s`) for the clients' acknowledgements, and keep the entry until one
    /// comes.
    pub ack: Option<String>,
    /// Append the stream entry ID to the arguments.
    pub append_id: bool,
    /// The entry's lifetime (e.g. `30s`), after which it is dead-lettered rather than delivered.
    pub ttl: Option<String>,
    /// The producer's W3C trace context: the relay's spans of the entry join its trace.
    pub traceparent: Option<String>,
}

impl Request {
    /// The stream fields a producer would XADD for this operation. Contradictions (an event and a
    /// join) are passed on for [`Entry::parse`] to name, exactly as the relay would.
    pub fn fields(&self) -> Result<Vec<(String, String)>, Failure> {
        let mut fields = Vec::new();
        if let Some(event) = &self.event {
            let field = if self.server_side {
                "server_emit"
            } else {
                "event"
            };
            fields.push((field.to_owned(), event.clone()));
        }
        for (field, rooms) in [("join", &self.join), ("leave", &self.leave)] {
            if !rooms.is_empty() {
                fields.push((field.to_owned(), json_strings(rooms)));
            }
        }
        let flags = [
            ("disconnect", self.disconnect),
            ("close", self.close),
            ("all", self.all),
        ];
        for (field, _) in flags.iter().filter(|(_, set)| *set) {
            fields.push(((*field).to_owned(), "true".to_owned()));
        }
        match self.args.as_slice() {
            [] => {}
            [one] => fields.push(("data".into(), one.clone())),
            many => {
                let mut parsed = Vec::with_capacity(many.len());
                for (i, arg) in many.iter().enumerate() {
                    parsed.push(serde_json::from_str::<serde_json::Value>(arg).map_err(|e| {
                        Failure {
                            code: EXIT_DATA,
                            message: format!("argument {} is not valid JSON: {e}", i + 1),
                        }
                    })?);
                }
                fields.push(("args".into(), serde_json::Value::Array(parsed).to_string()));
            }
        }
        match self.rooms.as_slice() {
            [] => {}
            [one] => fields.push(("room".into(), one.clone())),
            many => fields.push(("rooms".into(), json_strings(many))),
        }
        if !self.except.is_empty() {
            fields.push(("except".into(), json_strings(&self.except)));
        }
        if let Some(nsp) = &self.nsp {
            fields.push(("nsp".into(), nsp.clone()));
        }
        if self.volatile {
            fields.push(("volatile".into(), "true".into()));
        }
        if let Some(compress) = self.compress {
            fields.push(("compress".into(), compress.to_string()));
        }
        if let Some(ack) = &self.ack {
            fields.push(("ack".into(), ack.clone()));
        }
        if self.append_id {
            fields.push(("append_id".into(), "true".into()));
        }
        if let Some(ttl) = &self.ttl {
            fields.push(("ttl".into(), ttl.clone()));
        }
        if let Some(traceparent) = &self.traceparent {
            // The relay ignores a trace context it cannot read; typed here, it is a typo.
            if crate::traces::TraceParent::parse(traceparent).is_none() {
                return Err(Failure {
                    code: EXIT_DATA,
                    message: format!("not sent: --traceparent {traceparent:?} is not a W3C trace context (00-<32 hex digits>-<16 hex digits>-<2 hex digits>, lowercase, IDs not all zeros)"),
                });
            }
            fields.push(("traceparent".into(), traceparent.clone()));
        }
        Ok(fields)
    }

    /// Validates the operation exactly as the relay will, within `limits` (the configured ones).
    pub fn validate(&self, limits: &Limits) -> Result<(Vec<(String, String)>, Entry), Failure> {
        let fields = self.fields()?;
        let raw: Vec<(Vec<u8>, Vec<u8>)> = fields
            .iter()
            .map(|(f, v)| (f.clone().into_bytes(), v.clone().into_bytes()))
            .collect();
        let entry = Entry::parse_within(&raw, limits).map_err(|e| Failure {
            code: EXIT_DATA,
            message: format!("not sent: {e}"),
        })?;
        Ok((fields, entry))
    }
}

fn json_strings(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialize")
}

/// An entry appended: its ID, and the stream it went to.
#[derive(Debug, Serialize)]
pub struct Appended {
    pub id: String,
    pub stream: String,
}

/// Appends the entry to `source.stream`, or to its partition among `source.streams` (see
/// [`crate::partition`]).
pub async fn to_stream(cfg: &Config, emit: &Request) -> Result<Appended, Failure> {
    let (fields, entry) = emit.validate(&cfg.limits)?;
    let stream = cfg.stream_for(&entry);
    // In a cluster, to the primary that serves that stream.
    let client = crate::connection::client_for(cfg, stream)
        .await
        .map_err(|e| crate::admin::unreachable(cfg, e))?;
    let mut con = connection_to(cfg, &client).await?;
    let id = con.xadd(stream, "*", &fields).await?;
    Ok(Appended {
        id,
        stream: stream.to_owned(),
    })
}

/// Publishes the packet directly (to the streams adapter: appends it to the servers' stream);
/// returns how many Socket.IO servers received it. Servers are
/// counted first, as the relay counts them (see [`crate::servers`]): with none, nothing is
/// published, since PUBLISH's own count would include monitors and other pattern subscribers.
pub async fn direct(cfg: &Config, emit: &Request) -> Result<u64, Failure> {
    let (_, entry) = emit.validate(&cfg.limits)?;
    let target = cfg.target();
    let packet = target.encode(&entry).map_err(|e| Failure {
        code: EXIT_DATA,
        message: format!("not sent: {e}"),
    })?;
    let mut con = connect_all_nodes(cfg).await?;
    let nsp = entry.nsp().to_owned();
    let servers = servers::count(&mut con, &target, std::slice::from_ref(&nsp)).await?[0];
    if servers == 0 {
        let hint = servers::other_adapter(&mut con, &target, &nsp)
            .await?
            .map_or_else(String::new, |other| format!("; {other}"));
        return Err(Failure {
            code: EXIT_FAILURE,
            message: format!(
                "no Socket.IO server listens on namespace {nsp} (nobody subscribes to {}): nothing was published{hint}",
                target.servers_channel(&nsp)
            ),
        });
    }
    let sent: redis::Value = target.send(&packet).query_async(&mut con).await?;
    Ok(match sent {
        redis::Value::Int(receivers) => (receivers.max(0) as u64).min(servers),
        // An XADD's entry ID: appended where the servers counted read it.
        _ => servers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_emits_become_the_producers_fields() {
        let emit = Request {
            event: Some("promo".into()),
            args: vec!["1".into(), r#""two""#.into()],
            rooms: vec!["a".into(), "b".into()],
            except: vec!["c".into()],
            nsp: Some("/admin".into()),
            volatile: true,
            compress: Some(false),
            ..Request::default()
        };
        let (fields, entry) = emit.validate(&Limits::default()).unwrap();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let asked = Request {
            event: Some("paid".into()),
            ack: Some("10s".into()),
            append_id: true,
            ttl: Some("30s".into()),
            traceparent: Some(traceparent.into()),
            ..Request::default()
        };
        let (asked_fields, asked) = asked.validate(&Limits::default()).unwrap();
        assert_eq!(
            asked_fields,
            [
                ("event", "paid"),
                ("ack", "10s"),
                ("append_id", "true"),
                ("ttl", "30s"),
                ("traceparent", traceparent)
            ]
            .map(|(f, v)| (f.to_owned(), v.to_owned()))
        );
        assert_eq!(asked.ack(None), Some(std::time::Duration::from_secs(10)));
        assert_eq!(
            asked.ttl().map(crate::entry::Ttl::get),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            fields,
            [
                ("event", "promo"),
                ("args", r#"[1,"two"]"#),
                ("rooms", r#"["a","b"]"#),
                ("except", r#"["c"]"#),
                ("nsp", "/admin"),
                ("volatile", "true"),
                ("compress", "false"),
            ]
            .map(|(f, v)| (f.to_owned(), v.to_owned()))
        );
        assert_eq!(entry.rooms(), ["a", "b"]);
    }

    #[test]
    fn invalid_emits_are_refused_before_redis() {
        let reserved = Request {
            event: Some("disconnect".into()),
            ..Request::default()
        };
        let err = reserved.validate(&Limits::default()).unwrap_err();
        assert_eq!(err.code, EXIT_DATA);
        assert!(err.message.contains("reserved"), "{}", err.message);
        let bad_json = Request {
            event: Some("e".into()),
            args: vec!["{oops".into()],
            ..Request::default()
        };
        assert!(bad_json
            .validate(&Limits::default())
            .unwrap_err()
            .message
            .contains("`data` is not valid JSON"));
        let forever = Request {
            event: Some("e".into()),
            ttl: Some("30d".into()),
            ..Request::default()
        };
        assert!(forever
            .validate(&Limits::default())
            .unwrap_err()
            .message
            .contains("`ttl` must be a duration between 1ms and 7days"));
        // The relay would ignore it; on the command line it is a typo.
        let bad_context = Request {
            event: Some("e".into()),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7".into()),
            ..Request::default()
        };
        let err = bad_context.validate(&Limits::default()).unwrap_err();
        assert_eq!(err.code, EXIT_DATA);
        assert!(
            err.message.contains("not a W3C trace context"),
            "{}",
            err.message
        );
    }

    /// The configured limits, not the defaults: what the relay would dead-letter is not sent.
    #[test]
    fn the_configured_limits_apply() {
        let nested = Request {
            event: Some("e".into()),
            args: vec!["[[[1]]]".into()],
            ..Request::default()
        };
        assert!(nested.validate(&Limits::default()).is_ok());
        let shallow = Limits {
            max_json_depth: 2,
            ..Limits::default()
        };
        let err = nested.validate(&shallow).unwrap_err();
        assert_eq!(err.code, EXIT_DATA);
        assert!(
            err.message
                .contains("nested deeper than limits.max_json_depth = 2"),
            "{}",
            err.message
        );
        let small = Limits {
            max_entry_bytes: 8,
            ..Limits::default()
        };
        let err = nested.validate(&small).unwrap_err();
        assert!(
            err.message.contains("limits.max_entry_bytes = 8"),
            "{}",
            err.message
        );
    }

    /// The console's body is the same request, in JSON; a misspelt key is named, not ignored.
    #[test]
    fn the_console_sends_the_same_request_in_json() {
        let request: Request = serde_json::from_str(
            r#"{"event":"paid","args":["{\"id\":7}"],"rooms":["user:42"],"ttl":"30s"}"#,
        )
        .unwrap();
        let (fields, _) = request.validate(&Limits::default()).unwrap();
        assert_eq!(
            fields,
            [
                ("event", "paid"),
                ("data", r#"{"id":7}"#),
                ("room", "user:42"),
                ("ttl", "30s")
            ]
            .map(|(f, v)| (f.to_owned(), v.to_owned()))
        );
        let typo = serde_json::from_str::<Request>(r#"{"event":"e","tll":"30s"}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field `tll`"), "{typo}");
    }

    #[test]
    fn every_operation_has_its_flags() {
        let fields = |emit: Request| emit.validate(&Limits::default()).map(|(fields, _)| fields);
        let join = Request {
            join: vec!["game:7".into()],
            rooms: vec!["user:42".into()],
            ..Request::default()
        };
        assert_eq!(
            fields(join).unwrap(),
            [("join", r#"["game:7"]"#), ("room", "user:42")]
                .map(|(f, v)| (f.to_owned(), v.to_owned()))
        );
        let everyone = Request {
            disconnect: true,
            close: true,
            all: true,
            ..Request::default()
        };
        assert_eq!(
            fields(everyone).unwrap(),
            [("disconnect", "true"), ("close", "true"), ("all", "true")]
                .map(|(f, v)| (f.to_owned(), v.to_owned()))
        );
        let server = Request {
            event: Some("cache:flush".into()),
            server_side: true,
            args: vec![r#""prices""#.into()],
            ..Request::default()
        };
        assert_eq!(fields(server).unwrap()[0].0, "server_emit");
        let nobody = Request {
            disconnect: true,
            ..Request::default()
        };
        assert!(fields(nobody).unwrap_err().message.contains("needs `room`"));
        let two = Request {
            event: Some("e".into()),
            leave: vec!["r".into()],
            all: true,
            ..Request::default()
        };
        assert!(fields(two)
            .unwrap_err()
            .message
            .contains("cannot both be present"));
    }
}
