//! `bess-collector token create|list|revoke`: manage API tokens in the
//! database the collector uses.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::time::Duration;

use bess_collector::auth::{self, Role, SiteScope};
use bess_collector::service;

#[derive(Args)]
pub struct TokenArgs {
    #[arg(
        long,
        env = "BESS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/bess",
        global = true
    )]
    database_url: String,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (it is shown only this once).
    #[command(
        after_help = "Examples:\n  bess-collector token create --name acme-ops --sites site-001,site-002 --role read\n  bess-collector token create --name fleet-admin --all-sites --role admin"
    )]
    Create {
        /// A label for the token: who or what uses it.
        #[arg(long)]
        name: String,
        /// Sites the token may see, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "all_sites",
            conflicts_with = "all_sites"
        )]
        sites: Vec<String>,
        /// The token may see every site, present and future.
        #[arg(long)]
        all_sites: bool,
        /// read: view data; operate: also operating actions; admin: everything.
        #[arg(long, value_enum, default_value_t = Role::Read)]
        role: Role,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id (see `token list`); it stops working within seconds.
    Revoke { id: i32 },
}

pub fn token(args: TokenArgs, runtime: tokio::runtime::Runtime) -> anyhow::Result<()> {
    runtime.block_on(async {
        let pool = service::pool(&args.database_url, 1)?;
        service::prepare_database(&pool, Duration::from_secs(5)).await?;
        let client = pool.get().await.context("connecting to the database")?;
        match args.command {
            TokenCommand::Create {
                name,
                sites,
                all_sites,
                role,
            } => {
                let scope = if all_sites {
                    SiteScope::All
                } else {
                    SiteScope::Only(
                        sites
                            .into_iter()
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    )
                };
                let created = auth::create(&client, &name, role, scope).await?;
                eprintln!(
                    "created token {} ({}, role {}, sites {}); it is shown only once:",
                    created.record.id,
                    created.record.name,
                    created.record.role,
                    created.record.sites
                );
                println!("{}", created.secret);
            }
            TokenCommand::List => {
                println!(
                    "{:>4}  {:<24} {:<8} {:<8} {:<22} sites",
                    "id", "name", "role", "state", "created"
                );
                for t in auth::list(&client).await? {
                    let created = bess_collector::time::rfc3339(t.created_at);
                    let state = if t.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:>4}  {:<24} {:<8} {:<8} {:<22} {}",
                        t.id,
                        t.name,
                        t.role,
                        state,
                        &created[..created.len().min(20)],
                        t.sites
                    );
                }
            }
            TokenCommand::Revoke { id } => {
                if !auth::revoke(&client, id).await? {
                    anyhow::bail!("no active token with id {id}");
                }
                println!("revoked token {id}");
            }
        }
        Ok(())
    })
}
