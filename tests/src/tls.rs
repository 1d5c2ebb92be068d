//! TLS for scenarios: a throwaway PKI made with the `openssl` command, a
//! TLS-terminating proxy (stunnel) that requires and verifies client
//! certificates in front of a broker that has no TLS listener, and a
//! Mosquitto with a TLS listener of its own.
//!
//! Nothing here weakens verification: the proxy and Mosquitto refuse a
//! client without a certificate signed by the test CA, and the servers'
//! certificates name `127.0.0.1` and `localhost`, as a real deployment's
//! name their hosts.

use anyhow::{bail, Context as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, wait_for, Proc};

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything a TLS scenario needs: the CA the servers and the good
/// client trust, the server's identity, and client identities the servers
/// must refuse.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA that signed the server and the good clients.
    pub ca: PathBuf,
    /// A CA that signed nothing the servers present.
    pub other_ca: PathBuf,
    pub server: Identity,
    pub client: Identity,
    /// Signed by `ca`, valid only in January 2020.
    pub expired_client: Identity,
    /// Signed by `other_ca`.
    pub foreign_client: Identity,
}

impl TestPki {
    /// Generate the PKI under `dir/pki`.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir)?;
        let ca = self_signed_ca(&dir, "ca", "BESS test CA")?;
        let other_ca = self_signed_ca(&dir, "other-ca", "Some other CA")?;
        let server = signed(
            &dir,
            "server",
            &ca,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )?;
        let client_ext = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n";
        let client = signed(&dir, "client", &ca, client_ext)?;
        let foreign_client = signed(&dir, "foreign-client", &other_ca, client_ext)?;
        let expired_client = expired(&dir, "expired-client", &ca)?;
        Ok(Self {
            ca: ca.cert,
            other_ca: other_ca.cert,
            server,
            client,
            expired_client,
            foreign_client,
        })
    }
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl (install it: apt-get install openssl)")?;
    if !output.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("non-UTF-8 path")
}

fn self_signed_ca(dir: &Path, name: &str, subject: &str) -> anyhow::Result<Identity> {
    let identity = Identity {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        path_str(&identity.key)?,
        "-out",
        path_str(&identity.cert)?,
        "-days",
        "3",
        "-subj",
        &format!("/CN={subject}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    Ok(identity)
}

/// A new key and its certificate request; returns the request's path.
fn request(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        path_str(&key)?,
        "-out",
        path_str(&csr)?,
        "-subj",
        &format!("/CN={name}"),
    ])?;
    Ok((key, csr))
}

fn signed(dir: &Path, name: &str, ca: &Identity, extensions: &str) -> anyhow::Result<Identity> {
    let (key, csr) = request(dir, name)?;
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, extensions)?;
    let cert = dir.join(format!("{name}.pem"));
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&csr)?,
        "-CA",
        path_str(&ca.cert)?,
        "-CAkey",
        path_str(&ca.key)?,
        "-CAcreateserial",
        "-out",
        path_str(&cert)?,
        "-days",
        "3",
        "-extfile",
        path_str(&ext)?,
    ])?;
    Ok(Identity { cert, key })
}

/// A client certificate whose validity ended long ago (`openssl ca` is the
/// command that takes explicit dates).
fn expired(dir: &Path, name: &str, ca: &Identity) -> anyhow::Result<Identity> {
    let (key, csr) = request(dir, name)?;
    let db = dir.join(format!("{name}-db"));
    std::fs::create_dir_all(&db)?;
    std::fs::write(db.join("index.txt"), "")?;
    std::fs::write(db.join("serial"), "01\n")?;
    let config = db.join("ca.cnf");
    std::fs::write(
        &config,
        format!(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = {0}/index.txt\nnew_certs_dir = {0}\nserial = {0}/serial\ndefault_md = sha256\npolicy = any\nx509_extensions = client\n[any]\ncommonName = supplied\n[client]\nextendedKeyUsage = clientAuth\nbasicConstraints = CA:FALSE\n",
            db.display()
        ),
    )?;
    let cert = dir.join(format!("{name}.pem"));
    openssl(&[
        "ca",
        "-batch",
        "-notext",
        "-config",
        path_str(&config)?,
        "-cert",
        path_str(&ca.cert)?,
        "-keyfile",
        path_str(&ca.key)?,
        "-in",
        path_str(&csr)?,
        "-out",
        path_str(&cert)?,
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200131000000Z",
    ])?;
    Ok(Identity { cert, key })
}

/// Wait until something accepts connections on `addr`.
async fn wait_for_port(what: &str, addr: SocketAddr) -> anyhow::Result<()> {
    wait_for(what, Duration::from_secs(30), || async move {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .ok()
            .map(|_| ())
    })
    .await
}

/// stunnel on `port`, terminating TLS for `upstream`: it presents
/// the PKI's server certificate and requires a client certificate signed
/// by the PKI's CA.
pub struct TlsProxy {
    pub addr: SocketAddr,
    pub process: Proc,
}

impl TlsProxy {
    pub fn binary() -> PathBuf {
        std::env::var_os("BESS_STUNNEL_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/stunnel4"))
    }

    pub async fn start(
        dir: &Path,
        pki: &TestPki,
        port: u16,
        upstream: SocketAddr,
    ) -> anyhow::Result<Self> {
        let config = dir.join(format!("stunnel-{port}.conf"));
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\ndebug = notice\n\n[broker]\naccept = 127.0.0.1:{port}\nconnect = {upstream}\ncert = {}\nkey = {}\nCAfile = {}\nrequireCert = yes\nverifyChain = yes\n",
                pki.server.cert.display(),
                pki.server.key.display(),
                pki.ca.display()
            ),
        )?;
        let process = Proc::spawn("stunnel", &Self::binary(), &[path_str(&config)?], dir).context(
            "no stunnel: install it with `apt-get install stunnel4` (deploy/local/test.sh does)",
        )?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_for_port("the TLS proxy's port", addr)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", process.log_tail(20)))?;
        Ok(Self { addr, process })
    }

    /// The proxy's log: which handshakes it refused and why.
    pub fn log(&self) -> String {
        self.process.log_tail(200)
    }
}

/// A Mosquitto with only a TLS listener on a free port, requiring client
/// certificates signed by the PKI's CA.
pub struct TlsMosquitto {
    pub port: u16,
    pub process: Proc,
}

impl TlsMosquitto {
    pub async fn start(dir: &Path, pki: &TestPki) -> anyhow::Result<Self> {
        let port = free_port();
        let config = dir.join(format!("mosquitto-{port}.conf"));
        // Run as root, Mosquitto would switch to its own user, which cannot
        // read this test's key: stay the user that made it.
        let user = current_user()?;
        std::fs::write(
            &config,
            format!(
                "user {user}\npersistence false\nallow_anonymous true\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\nlistener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                pki.ca.display(),
                pki.server.cert.display(),
                pki.server.key.display()
            ),
        )?;
        let program = std::env::var_os("BESS_MOSQUITTO_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("mosquitto"));
        let process = Proc::spawn("mosquitto-tls", &program, &["-c", path_str(&config)?], dir)
            .context("no mosquitto: install it with `apt-get install mosquitto`")?;
        wait_for_port("Mosquitto's TLS port", ([127, 0, 0, 1], port).into())
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", process.log_tail(20)))?;
        Ok(Self { port, process })
    }
}

/// The `[kafka.tls]` / `[mqtt_uplink.tls]` table of an edge config.
pub fn edge_tls_table(table: &str, ca: &Path, client: Option<&Identity>) -> String {
    let mut text = format!("\n[{table}]\nca_file = \"{}\"\n", ca.display());
    if let Some(client) = client {
        text.push_str(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            client.cert.display(),
            client.key.display()
        ));
    }
    text
}

fn current_user() -> anyhow::Result<String> {
    let output = Command::new("id").arg("-un").output()?;
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}
