//! `bess-collector site enroll|keys|revoke`: the sites' signing keys in
//! the database the collector uses. Every instance follows a change within
//! about a second.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::time::Duration;
use time::OffsetDateTime;

use bess_collector::service;
use bess_collector::site_keys::{store, Enrolment, SiteKeyRecord};
use bess_protocol::signature::{format_public_key, parse_public_key};
use bess_protocol::KeyId;

#[derive(Args)]
pub struct SiteArgs {
    #[arg(
        long,
        env = "BESS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/bess",
        global = true
    )]
    database_url: String,
    #[command(subcommand)]
    command: SiteCommand,
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Enroll a site's public key: its signed batches are stored from now on.
    #[command(
        after_help = "Examples (the key comes from `bess-edge key` on the site PC):\n  bess-collector site enroll site-001 --public-key ed25519:6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=\n  # rotate: enroll the new key, then end the old one's window\n  bess-collector site enroll site-001 --public-key ed25519:... --valid-from 2026-12-01T00:00:00Z"
    )]
    Enroll {
        site: String,
        /// `ed25519:` and the key's base64, as `bess-edge key` prints it.
        #[arg(long)]
        public_key: String,
        /// The key signs readings from this time on (RFC 3339; default: any time).
        #[arg(long, value_parser = parse_time)]
        valid_from: Option<OffsetDateTime>,
        /// The key signs readings before this time only (RFC 3339; default: no end).
        #[arg(long, value_parser = parse_time)]
        valid_until: Option<OffsetDateTime>,
        /// Free text kept with the key (who installed it, where).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List the keys of one site, or of every site.
    Keys { site: Option<String> },
    /// Revoke a key: batches it signed are set aside from now on, on every instance.
    Revoke {
        site: String,
        /// The key id (16 hex digits, see `site keys`).
        key_id: String,
    },
}

fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (2026-12-01T00:00:00Z): {e}"))
}

pub fn site(args: SiteArgs, runtime: tokio::runtime::Runtime) -> anyhow::Result<()> {
    runtime.block_on(async {
        let pool = service::pool(&args.database_url, 1)?;
        service::prepare_database(&pool, Duration::from_secs(5)).await?;
        let mut client = pool.get().await.context("connecting to the database")?;
        let by = format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        );
        match args.command {
            SiteCommand::Enroll {
                site,
                public_key,
                valid_from,
                valid_until,
                note,
            } => {
                bess_protocol::SiteId::new(&site).map_err(|e| anyhow::anyhow!("{e}"))?;
                let public_key = parse_public_key(&public_key)?;
                let record = store::enrol(
                    &mut client,
                    &Enrolment {
                        site,
                        public_key,
                        valid_from,
                        valid_until,
                        note,
                        by,
                    },
                )
                .await?;
                println!("enrolled key {} for site {}", record.key_id, record.site);
            }
            SiteCommand::Keys { site } => {
                let keys = store::list(&**client, site.as_deref()).await?;
                print_keys(&keys);
            }
            SiteCommand::Revoke { site, key_id } => {
                let key_id = KeyId::parse(&key_id)?;
                let record = store::revoke(&mut client, &site, key_id, &by).await?;
                println!(
                    "revoked key {} of site {}: its batches are set aside from now on",
                    record.key_id, record.site
                );
            }
        }
        Ok(())
    })
}

fn print_keys(keys: &[SiteKeyRecord]) {
    if keys.is_empty() {
        println!("no keys enrolled");
        return;
    }
    let when = |t: Option<OffsetDateTime>| {
        t.map(bess_collector::time::rfc3339)
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{:<20} {:<16} {:<8} {:<21} {:<21} public key",
        "SITE", "KEY ID", "STATE", "VALID FROM", "VALID UNTIL"
    );
    for k in keys {
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        println!(
            "{:<20} {:<16} {:<8} {:<21} {:<21} {}",
            k.site,
            k.key_id.to_string(),
            state,
            when(k.valid_from),
            when(k.valid_until),
            format_public_key(&k.public_key)
        );
    }
}
