//! Commands about orb itself: `config default|check|show`, `version`, `completions` (`man` is in
//! [`crate::man`]).

use std::path::Path;

use crate::cli::ConfigCommand;
use crate::config::{self, Layers};
use crate::exit::{self, Failure};

/// `orb config ...`.
pub fn config(cmd: ConfigCommand, config_flag: Option<&Path>) -> Result<u8, Failure> {
    match cmd {
        ConfigCommand::Default => {
            out!("{}", config::DEFAULT_TOML);
            Ok(exit::OK)
        }
        ConfigCommand::Check { file } => {
            let mut layers = Layers::defaults();
            layers.file(&file);
            match layers.finish() {
                Ok(_) => {
                    outln!("{}: ok", file.display());
                    Ok(exit::OK)
                }
                Err(problems) => {
                    for p in &problems {
                        outln!("{p}");
                    }
                    Err(Failure::new(exit::CONFIG, format!("{}: {} problem(s)", file.display(), problems.len())))
                }
            }
        }
        ConfigCommand::Show { effective: _ } => {
            let settings = config::layered(config::config_path(config_flag).as_deref())
                .finish()
                .map_err(|p| Failure::new(exit::CONFIG, format!("invalid configuration:\n  {}", p.join("\n  "))))?;
            out!("{}", settings.redacted_toml());
            Ok(exit::OK)
        }
    }
}

/// `orb version [--json]`.
pub fn version(json: bool) -> u8 {
    let features: Vec<&str> =
        [cfg!(feature = "server").then_some("server"), Some("agent"), Some("client")].into_iter().flatten().collect();
    if json {
        let v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "git_revision": env!("ORB_GIT_REVISION"),
            "protocol_version": orb_proto::PROTOCOL_VERSION,
            "min_protocol_version": orb_proto::MIN_PROTOCOL_VERSION,
            "codecs": orb_proto::Codec::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "transports": ["tcp", "ws", "tls", "wss"],
            "features": features,
        });
        outln!("{v}");
    } else {
        outln!("orb {}", crate::cli::VERSION);
        outln!(
            "protocol {} (accepts {}..={})",
            orb_proto::PROTOCOL_VERSION,
            orb_proto::MIN_PROTOCOL_VERSION,
            orb_proto::PROTOCOL_VERSION
        );
        outln!("features {}", features.join(", "));
    }
    exit::OK
}

/// `orb completions SHELL`. Rendered first, then written like every result (a closed stdout
/// exits 141 instead of panicking inside clap_complete).
pub fn completions(shell: clap_complete::Shell) -> u8 {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut crate::help::command(), "orb", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    exit::OK
}
