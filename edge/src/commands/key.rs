//! `bess-edge key`: the site's signing key for a technician: created if
//! missing (owner-only), then its public half and the enrolment line.

use std::path::Path;
use std::process::ExitCode;

use bess_edge::config::ValidConfig;
use bess_edge::signing;

pub fn key(config: &Path) -> ExitCode {
    let valid = match ValidConfig::load(config) {
        Ok(valid) => valid,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let path = &valid.signing.key_file;
    match signing::load_or_create(path) {
        Ok(loaded) => {
            if loaded.created {
                println!("created {} (owner-only)", path.display());
            } else {
                println!("key file:    {}", path.display());
            }
            print!("{}", signing::enrolment_text(&valid.site, &loaded.signer));
            if !valid.signing.enabled {
                println!("note: [signing] enabled = false, so the agent does not sign with it yet");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bess-edge: {e}");
            ExitCode::FAILURE
        }
    }
}
