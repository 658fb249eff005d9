//! The `sio-relay` command: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sio_relay::commands::{self, block_on, dead, entry, monitor, send, status};
use sio_relay::config::Config;
use sio_relay::exit::EXIT_CONFIG;
use sio_relay::protocol::ReasonCode;

/// Durable relay from a Redis Stream to Socket.IO servers (@socket.io/redis-adapter).
#[derive(Parser)]
#[command(name = "sio-relay", version, about)]
struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults and SIO_RELAY_* variables apply.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay daemon until SIGTERM or SIGINT (SIGHUP reloads the configuration).
    Run,
    /// Validate the configuration and print the values in force (secrets masked).
    CheckConfig,
    /// Append one entry to the relay's stream, validated first; --direct publishes it instead.
    /// An emit by default; --join, --leave, --disconnect or --server-side for the other
    /// operations.
    Send(Box<SendArgs>),
    /// Print every packet published to the Socket.IO servers, decoded (or in hex if servers
    /// could not decode it).
    Monitor {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// With the sharded adapter, the namespaces to watch (shard channels have no patterns);
        /// repeat it for several. The classic adapter's monitor sees every namespace.
        #[arg(long = "nsp", default_value = "/")]
        nsps: Vec<String>,
        /// Stop after this many packets.
        #[arg(long)]
        count: Option<usize>,
    },
    /// What became of one entry: not read yet, held, in a relay's hands, delivered, or
    /// dead-lettered and why.
    Entry {
        /// The entry's ID, as XADD (or `send`) printed it.
        id: String,
        /// Look in this stream of source.streams only (default: each).
        #[arg(long)]
        stream: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Redis, Socket.IO servers, stream, group, consumers and dead letters; exits 1 if unhealthy.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Inspect and repair the dead-letter stream.
    Dead {
        #[command(subcommand)]
        action: DeadAction,
    },
}

#[derive(Subcommand)]
enum DeadAction {
    /// Show the oldest dead letters with their reasons, each value cut to 1 KiB and 100 fields
    /// (as the console shows them; what was cut is said, with its size).
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back to the source stream (each atomically).
    Replay {
        /// Dead-letter entry IDs.
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Every dead letter present when the command starts (not those added while it runs).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long, value_name = "REASON", help = reason_help())]
        reason: Option<String>,
        /// List what would be replayed, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete dead letters.
    Drop {
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Every dead letter present when the command starts.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long, value_name = "REASON", help = reason_help())]
        reason: Option<String>,
    },
}

/// `sio-relay send`'s arguments.
#[derive(Args)]
struct SendArgs {
    /// Target room (repeat for several). None: every client of the namespace.
    #[arg(long = "room", value_name = "ROOM")]
    rooms: Vec<String>,
    /// Every socket of the namespace: what --join, --leave and --disconnect need without
    /// --room.
    #[arg(long)]
    all: bool,
    /// The selected sockets join this room (repeat for several) instead of an emit.
    #[arg(long, value_name = "ROOM")]
    join: Vec<String>,
    /// The selected sockets leave this room (repeat for several) instead of an emit.
    #[arg(long, value_name = "ROOM")]
    leave: Vec<String>,
    /// Disconnect the selected sockets instead of an emit.
    #[arg(long)]
    disconnect: bool,
    /// With --disconnect: close the underlying connection too.
    #[arg(long, requires = "disconnect")]
    close: bool,
    /// The event goes to the namespace's serverSideEmit listeners on every server.
    #[arg(long)]
    server_side: bool,
    /// Room to leave out (repeat for several).
    #[arg(long, value_name = "ROOM")]
    except: Vec<String>,
    /// Namespace, default "/".
    #[arg(long)]
    nsp: Option<String>,
    /// Servers may drop the event for clients that are not ready for it.
    #[arg(long)]
    volatile: bool,
    /// Per-message compression flag passed to the servers.
    #[arg(long)]
    compress: Option<bool>,
    /// Wait this long (e.g. 10s) for the clients to acknowledge the event, and keep it until
    /// one does (results in acks.stream).
    #[arg(long, value_name = "DURATION", conflicts_with = "direct")]
    ack: Option<String>,
    /// Append the stream entry ID to the event's arguments, for clients to de-duplicate.
    #[arg(long, conflicts_with = "direct")]
    append_id: bool,
    /// Deliver it only within this long (e.g. 30s) of now, by Redis's clock; past that it is
    /// dead-lettered as expired, even while held or waiting for acknowledgements.
    #[arg(long, value_name = "DURATION", conflicts_with = "direct")]
    ttl: Option<String>,
    /// The W3C trace context of the span the relay's spans of this entry belong to
    /// (`00-<trace id>-<span id>-<flags>`).
    #[arg(long, value_name = "TRACEPARENT", conflicts_with = "direct")]
    traceparent: Option<String>,
    /// Publish straight to the Socket.IO servers (no stream, no durability) and print how
    /// many received it.
    #[arg(long)]
    direct: bool,
    /// Then wait up to this long (e.g. 10s) for what becomes of the entry, say it as `entry`
    /// does, and exit 0 only if it was delivered.
    #[arg(long, value_name = "DURATION", conflicts_with = "direct", value_parser = humantime::parse_duration)]
    wait: Option<std::time::Duration>,
    /// The event name (none for --join, --leave and --disconnect).
    event: Option<String>,
    /// Event arguments, each as JSON text ('"text"', '42', '{"a":1}').
    #[arg(value_name = "JSON")]
    args: Vec<String>,
}

/// The help of `--reason`, naming every reason there is.
fn reason_help() -> String {
    format!(
        "Only dead letters with this reason ({})",
        ReasonCode::listed()
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("sio-relay: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let outcome = match cli.command {
        Command::Run => return run(cfg, cli.config),
        Command::CheckConfig => Ok(commands::check_config::render(&cfg)),
        Command::Send(send_args) => {
            let SendArgs {
                rooms,
                all,
                join,
                leave,
                disconnect,
                close,
                server_side,
                except,
                nsp,
                volatile,
                compress,
                ack,
                append_id,
                ttl,
                traceparent,
                direct,
                wait,
                event,
                args,
            } = *send_args;
            let request = send::Request {
                event,
                args,
                rooms,
                except,
                nsp,
                volatile,
                compress,
                all,
                join,
                leave,
                disconnect,
                close,
                server_side,
                ack,
                append_id,
                ttl,
                traceparent,
            };
            let mode = match (direct, wait) {
                (true, _) => send::Mode::Direct,
                (false, Some(wait)) => send::Mode::AppendAndWait(wait),
                (false, None) => send::Mode::Append,
            };
            send::run(&cfg, &request, mode).map_err(|(text, failure)| {
                emit(&text);
                failure
            })
        }
        Command::Monitor { json, nsps, count } => block_on(monitor::run(
            &cfg,
            &nsps,
            json,
            count,
            &mut std::io::stdout(),
        ))
        .map(|()| String::new()),
        Command::Entry { id, stream, json } => entry::run(&cfg, &id, stream.as_deref(), json),
        Command::Status { json } => status::run(&cfg, json).map_err(|(text, failure)| {
            emit(&text);
            failure
        }),
        Command::Dead { action } => match action {
            DeadAction::List { limit, json } => {
                dead::list(&cfg, limit, json, &mut std::io::stdout()).map(|()| String::new())
            }
            DeadAction::Replay {
                ids,
                all,
                reason,
                dry_run,
            } => dead::run(
                &cfg,
                dead::Command::Replay {
                    chosen: dead::Chosen { ids, all, reason },
                    dry_run,
                },
            ),
            DeadAction::Drop { ids, all, reason } => dead::run(
                &cfg,
                dead::Command::Drop {
                    chosen: dead::Chosen { ids, all, reason },
                },
            ),
        },
    };
    match outcome {
        Ok(text) => {
            emit(&text);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("sio-relay: {failure}");
            ExitCode::from(failure.code)
        }
    }
}

/// Writes a command's output. A reader that went away (`sio-relay dead list | head`) is a normal
/// end, not an error, and not a panic as `print!` would make it.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn run(cfg: Config, config_path: Option<PathBuf>) -> ExitCode {
    let level = match sio_relay::logging::init(&cfg.log) {
        Ok(level) => level,
        Err(e) => {
            eprintln!("sio-relay: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match block_on(sio_relay::run(cfg, config_path, level)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("sio-relay: {failure}");
            ExitCode::from(failure.code)
        }
    }
}
