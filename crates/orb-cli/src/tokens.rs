//! `orb tokens`: the operator tokens (`$orb.tokens.list`) in the `-o` formats, and `add`
//! (prints the new token once: text, JSON, YAML, or the token alone with `-o name`) and `revoke`.
//! Admin only; the server's refusals (`forbidden`, `id_taken`, `not_found`) exit 1 with its
//! message.

use std::time::Duration;

use orb_proto::message::commands;
use orb_proto::tokens::{Access, TokenAdd, TokenCreated, TokenInfo, TokenRef};

use crate::cli::{TokensArgs, TokensCommand};
use crate::connect;
use crate::exit::{self, Failure};
use crate::output::{self, Format};

/// How long an answer may take.
const ANSWER: Duration = Duration::from_secs(30);

/// Runs `orb tokens`.
pub async fn run(args: TokensArgs) -> Result<u8, Failure> {
    let client = connect::operator(&args.connect).await?;
    let format = args.output.format();
    let answer = match &args.action {
        None => {
            let tokens: Result<Vec<TokenInfo>, _> = client.call_json(commands::TOKENS_LIST, &(), ANSWER).await;
            tokens.map_err(Failure::from).and_then(|t| list(&t, format, args.output.no_headers))
        }
        Some(TokensCommand::Add { name, role, expires }) => {
            let role = Access::parse(role).ok_or_else(|| Failure::new(exit::USAGE, format!("unknown role {role}")))?;
            let expires_in_ms = expires.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let add = TokenAdd { name: name.clone(), role, expires_in_ms };
            let made: Result<TokenCreated, _> = client.call_json(commands::TOKENS_ADD, &add, ANSWER).await;
            made.map_err(Failure::from).and_then(|t| created(&t, format))
        }
        Some(TokensCommand::Revoke { name }) => {
            let gone: Result<TokenInfo, _> =
                client.call_json(commands::TOKENS_REVOKE, &TokenRef { name: name.clone() }, ANSWER).await;
            gone.map_err(Failure::from).and_then(|t| {
                match format {
                    f @ (Format::Json | Format::Yaml) => output::print_structured(&t, f)?,
                    _ => outln!("token {} revoked", t.name),
                }
                Ok(())
            })
        }
    };
    client.close().await;
    answer.map(|()| exit::OK)
}

fn list(tokens: &[TokenInfo], format: Format, no_headers: bool) -> Result<(), Failure> {
    match format {
        f @ (Format::Json | Format::Yaml) => output::print_structured(&tokens, f)?,
        Format::Name => tokens.iter().for_each(|t| outln!("{}", t.name)),
        Format::Table | Format::Wide => {
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    let revoked = t.revoked_at.clone().unwrap_or_else(|| "-".into());
                    let expires = t.expires_at.clone().unwrap_or_else(|| "never".into());
                    vec![t.name.clone(), t.role.to_string(), t.created_at.clone(), expires, revoked]
                })
                .collect();
            let header = ["NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED"];
            outln!("{}", output::plain_table((!no_headers).then_some(&header[..]), &rows).trim_end());
        }
    }
    Ok(())
}

fn created(t: &TokenCreated, format: Format) -> Result<(), Failure> {
    match format {
        f @ (Format::Json | Format::Yaml) => output::print_structured(t, f)?,
        Format::Name => outln!("{}", t.token),
        Format::Table | Format::Wide => {
            outln!("name     {}", t.name);
            outln!("role     {}", t.role);
            outln!("expires  {}", t.expires_at.as_deref().unwrap_or("never"));
            outln!("token    {}", t.token);
        }
    }
    eprintln!(
        "token {} ({}) added. It is shown only this once; the server keeps only its hash. Use it as \
         ORB_TOKEN / --token-file, or sign in to the dashboard with it.",
        t.name, t.role
    );
    Ok(())
}
