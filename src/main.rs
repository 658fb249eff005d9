//! The `sio-relay` command: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sio_relay::commands;
use sio_relay::config::Config;

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
}

/// Exit status for a configuration the relay refuses to start with (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("sio-relay: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Command::CheckConfig => {
            print!("{}", commands::check_config::render(&cfg));
            ExitCode::SUCCESS
        }
        Command::Run => run(cfg, cli.config),
    }
}

fn run(cfg: Config, config_path: Option<PathBuf>) -> ExitCode {
    let level = match sio_relay::logging::init(&cfg.log) {
        Ok(level) => level,
        Err(e) => {
            eprintln!("sio-relay: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sio-relay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sio_relay::run(cfg, config_path, level)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sio-relay: {e}");
            ExitCode::FAILURE
        }
    }
}
