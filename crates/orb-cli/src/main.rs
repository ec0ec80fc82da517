//! `orb`: the one binary. Parses the command line ([`cli`]), sets up logging, runs the chosen
//! command and turns its outcome into a documented exit code ([`exit`]).
#![forbid(unsafe_code)]

mod agent;
mod cli;
mod connect;
#[cfg(feature = "server")]
mod demo;
mod devices;
mod exit;
mod input;
mod render;
mod send;
#[cfg(feature = "server")]
mod serve;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // Client commands and the demo print results; only warnings belong next to them by default.
    let quiet = !matches!(cli.command, cli::Command::Agent(_)) && !is_serve(&cli.command);
    init_logging(cli.verbose, quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(exit::SOFTWARE);
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Background tasks (agents, listeners) must not keep the process alive past the outcome.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match outcome {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", e.message);
            std::process::ExitCode::from(e.code)
        }
    }
}

async fn run(cli: cli::Cli) -> Result<u8, exit::Failure> {
    match cli.command {
        #[cfg(feature = "server")]
        cli::Command::Serve(args) => serve::run(args).await,
        cli::Command::Agent(args) => agent::run(args).await,
        cli::Command::Send(args) => send::run(args).await,
        cli::Command::Devices(args) => devices::run(args).await,
        #[cfg(feature = "server")]
        cli::Command::Demo(args) => demo::run(args).await,
    }
}

#[cfg(feature = "server")]
fn is_serve(c: &cli::Command) -> bool {
    matches!(c, cli::Command::Serve(_))
}

#[cfg(not(feature = "server"))]
fn is_serve(_: &cli::Command) -> bool {
    false
}

/// Logs go to stderr; `ORB_LOG` (an env-filter directive) wins over `-v`.
fn init_logging(verbose: u8, quiet: bool) {
    let default = match verbose {
        0 if quiet => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
