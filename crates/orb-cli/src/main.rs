//! `orb`: the one binary. Parses the command line ([`cli`]), sets up logging, runs the chosen
//! command and turns its outcome into a documented exit code ([`exit`]).
#![forbid(unsafe_code)]

/// `println!` for results: a closed stdout (`orb send ... | head -1`) ends the process quietly
/// with status 141, as a shell reports SIGPIPE, instead of panicking.
macro_rules! outln {
    () => { $crate::render::write_out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::render::write_out(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` with the same treatment of a closed stdout.
macro_rules! out {
    ($($t:tt)*) => { $crate::render::write_out(format_args!($($t)*)) };
}

mod agent;
mod audit;
#[cfg(feature = "server")]
mod bench;
#[cfg(feature = "server")]
mod cert;
mod cli;
mod commands;
mod config;
mod connect;
mod context;
#[cfg(feature = "server")]
mod crashcheck;
mod credentials;
#[cfg(feature = "server")]
mod demo;
mod devices;
mod exec;
mod exit;
mod help;
mod hints;
mod input;
mod jobs;
mod logging;
mod man;
mod meta;
mod online;
mod output;
mod private_file;
mod pubsub;
mod pushed;
mod render;
mod results;
mod rollout;
mod schedule;
mod send;
#[cfg(feature = "server")]
mod serve;
mod signal;
mod standalone;
mod sysmetrics;
mod telemetry;
mod tokens;

fn main() -> std::process::ExitCode {
    // One crypto provider for everything TLS in this process (decision 0022).
    orb_io::tls::install_default_provider();
    let cli = help::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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

async fn run(mut cli: cli::Cli) -> Result<u8, exit::Failure> {
    // Client commands find their configuration file themselves (see `config::client_config_path`).
    if let Some(connect) = cli.command.connect_mut() {
        connect.config.clone_from(&cli.config);
    }
    let config = cli.config.as_deref();
    // Daemons configure their own logging from the configuration file; the rest print results
    // on stdout, with only warnings on stderr unless asked.
    let client_logging = || {
        let directive = std::env::var("ORB_LOG").unwrap_or_else(|_| {
            match cli.verbose {
                0 => "warn",
                1 => "debug",
                _ => "trace",
            }
            .to_owned()
        });
        logging::init(&directive, None).map_err(|e| exit::Failure::new(exit::CONFIG, e))
    };
    match cli.command {
        #[cfg(feature = "server")]
        cli::Command::Serve(args) => serve::run(args, config, cli.verbose).await,
        cli::Command::Agent(args) => agent::run(args, config, cli.verbose).await,
        cli::Command::Send(args) => {
            client_logging()?;
            send::run(*args).await
        }
        cli::Command::Devices(args) => {
            client_logging()?;
            devices::run(args).await
        }
        cli::Command::Tokens(args) => {
            client_logging()?;
            tokens::run(args).await
        }
        cli::Command::Commands(args) => {
            client_logging()?;
            commands::run(args).await
        }
        cli::Command::Audit(args) => {
            client_logging()?;
            audit::run(args).await
        }
        cli::Command::Jobs(args) => {
            client_logging()?;
            jobs::run(args).await
        }
        cli::Command::Signal(args) => {
            client_logging()?;
            signal::run(args).await
        }
        cli::Command::Pub(args) => {
            client_logging()?;
            pubsub::publish(args).await
        }
        cli::Command::Sub(args) => {
            client_logging()?;
            pubsub::subscribe(args).await
        }
        cli::Command::Tail(args) => {
            client_logging()?;
            pubsub::tail(args).await
        }
        #[cfg(feature = "server")]
        cli::Command::Demo(args) => {
            client_logging()?;
            demo::run(args).await
        }
        cli::Command::Schedule(cmd) => {
            client_logging()?;
            schedule::run(cmd).await
        }
        cli::Command::Context(cmd) => context::run(cmd, config),
        cli::Command::Config(cmd) => meta::config(cmd, config),
        #[cfg(feature = "server")]
        cli::Command::Cert(cmd) => cert::run(cmd),
        #[cfg(feature = "server")]
        cli::Command::Bench(cmd) => {
            client_logging()?;
            bench::run(cmd).await
        }
        #[cfg(feature = "server")]
        cli::Command::BenchSwarm(args) => {
            client_logging()?;
            bench::swarm::run(args).await
        }
        #[cfg(feature = "server")]
        cli::Command::Crashcheck(args) => {
            client_logging()?;
            crashcheck::run(args).await
        }
        #[cfg(feature = "server")]
        cli::Command::CrashcheckAgent(args) => crashcheck::agent::run(args).await,
        cli::Command::Version { json } => Ok(meta::version(json)),
        cli::Command::Completions { shell } => Ok(meta::completions(shell)),
        cli::Command::Man(args) => man::run(args),
    }
}
