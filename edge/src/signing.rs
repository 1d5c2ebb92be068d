//! The site's signing key: created once, owner-only, beside the buffer;
//! checked at every start; handed to the buffer, which signs each batch as
//! it seals (or rewrites) it, so what waits on disk is already signed and
//! the key is never needed at send time.
//!
//! Also the permission checks on the other files that hold something a
//! stranger should not read or change (the config, the buffer).

use std::io::Write;
use std::path::{Path, PathBuf};

use bess_protocol::signature::{format_public_key, KeyError};
use bess_protocol::{SiteId, SiteSigner};

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("signing key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {path}: {source}")]
    Invalid { path: PathBuf, source: KeyError },
    #[error(
        "signing key {path} can be read by other users (mode {mode:o}); \
         it must be owner-only: chmod 600 {path}"
    )]
    NotOwnerOnly { path: PathBuf, mode: u32 },
    #[error("creating signing key {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating signing key {path}: {source}")]
    Generate { path: PathBuf, source: KeyError },
}

/// A key loaded, and whether this call created it.
#[derive(Debug)]
pub struct LoadedKey {
    pub signer: SiteSigner,
    pub created: bool,
}

/// Load the key at `path`, creating it (mode 0600, never overwriting) if
/// there is none. An existing key that others can read is refused, as ssh
/// refuses such a private key: it may already be copied.
pub fn load_or_create(path: &Path) -> Result<LoadedKey, SigningKeyError> {
    match load(path) {
        Ok(signer) => Ok(LoadedKey {
            signer,
            created: false,
        }),
        Err(SigningKeyError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            match create(path) {
                Ok(signer) => Ok(LoadedKey {
                    signer,
                    created: true,
                }),
                // Another process created it a moment ago: use that one.
                Err(SigningKeyError::Create { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    load(path).map(|signer| LoadedKey {
                        signer,
                        created: false,
                    })
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Load an existing key.
pub fn load(path: &Path) -> Result<SiteSigner, SigningKeyError> {
    let read = |source| SigningKeyError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read)?;
    if let Some(mode) = group_or_other_access(&metadata) {
        return Err(SigningKeyError::NotOwnerOnly {
            path: path.to_owned(),
            mode,
        });
    }
    let pem = std::fs::read_to_string(path).map_err(read)?;
    SiteSigner::from_pkcs8_pem(&pem).map_err(|source| SigningKeyError::Invalid {
        path: path.to_owned(),
        source,
    })
}

fn create(path: &Path) -> Result<SiteSigner, SigningKeyError> {
    let signer = SiteSigner::generate().map_err(|source| SigningKeyError::Generate {
        path: path.to_owned(),
        source,
    })?;
    let failed = |source| SigningKeyError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(signer.to_pkcs8_pem().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    Ok(signer)
}

/// The lines a technician needs to get this site's key enrolled.
pub fn enrolment_text(site: &SiteId, signer: &SiteSigner) -> String {
    let public = format_public_key(&signer.public_key());
    format!(
        "site:        {site}\npublic key:  {public}\nkey id:      {}\nenroll it on the collector side:\n  bess-collector site enroll {site} --public-key {public}\n",
        signer.key_id()
    )
}

/// The permission bits other than the owner's, when any are set.
#[cfg(unix)]
fn group_or_other_access(metadata: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn group_or_other_access(_: &std::fs::Metadata) -> Option<u32> {
    None
}

/// A warning when `path` (the config, which may hold broker passwords, or
/// the buffer, which holds the readings) can be read or written by other
/// users; `None` when it cannot or does not exist.
pub fn permission_warning(what: &str, path: &Path) -> Option<String> {
    let metadata = std::fs::metadata(path).ok()?;
    let mode = group_or_other_access(&metadata)?;
    // Group read alone is common (a service's group); warn on what
    // strangers can do: any bit for other users, or group write.
    (mode & 0o027 != 0).then(|| {
        format!(
            "{what} {} can be read or changed by other users (mode {mode:o}); consider chmod 600",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_owner_only_once_and_loads_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/site.key");
        let first = load_or_create(&path).unwrap();
        assert!(first.created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let again = load_or_create(&path).unwrap();
        assert!(!again.created);
        assert_eq!(again.signer.key_id(), first.signer.key_id());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_is_refused_and_says_how_to_fix_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.key");
        load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(matches!(
            e,
            SigningKeyError::NotOwnerOnly { mode: 0o644, .. }
        ));
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_key_is_a_clear_error_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.key");
        std::fs::write(&path, "not a key").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let e = load_or_create(&path).unwrap_err();
        assert!(matches!(e, SigningKeyError::Invalid { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }

    #[cfg(unix)]
    #[test]
    fn files_strangers_can_read_get_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(permission_warning("config", &path), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = permission_warning("config", &path).unwrap();
        assert!(warning.contains("644"), "{warning}");
    }
}
