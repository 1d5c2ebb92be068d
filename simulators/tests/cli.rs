//! The `bess-sim` binary: config errors name file, line and field; a fleet
//! announces every site in its ready file; fault events are logged under
//! the `bess_sim::fault` target.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

const BIN: &str = env!("CARGO_BIN_EXE_bess-sim");

#[test]
fn bad_config_is_refused_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.toml");
    std::fs::write(
        &path,
        "[site]\nunits = 2\n\n[[fault]]\nname = \"x\"\nkind = \"meltdown\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["site", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:6:8: fault[0].kind: unknown fault kind `meltdown`",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn fleet_lists_every_site_and_logs_fault_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sim.toml");
    std::fs::write(
        &config,
        "[[fault]]\nname = \"busy\"\nkind = \"exception\"\ncode = 6\nunits = [1]\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args([
            "fleet",
            "--sites",
            "3",
            "--units",
            "2",
            "--base-port",
            "0",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let lines: Vec<String> = stdout.lines().take(6).map(Result::unwrap).collect();
    assert!(
        lines[0].starts_with("bess-sim: site-001 unit 1 on 127.0.0.1:"),
        "{lines:?}"
    );
    assert!(
        lines[5].starts_with("bess-sim: site-003 unit 2 on 127.0.0.1:"),
        "{lines:?}"
    );
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let fault_lines: Vec<String> = stderr
        .lines()
        .map(Result::unwrap)
        .filter(|l| l.contains("bess_sim::fault"))
        .take(3)
        .collect();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        fault_lines
            .iter()
            .all(|l| l.contains("fault busy started") && l.contains("units=[1]")),
        "{fault_lines:?}"
    );
    for site in ["site-001", "site-002", "site-003"] {
        assert!(
            fault_lines.iter().any(|l| l.contains(site)),
            "{site} in {fault_lines:?}"
        );
    }
}
