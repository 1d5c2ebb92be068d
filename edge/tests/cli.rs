//! The `bess-edge` command line as a technician meets it.

use std::process::Command;

fn bess_edge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bess-edge"))
}

#[test]
fn init_writes_a_config_that_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = bess_edge().arg("init").output().unwrap();
    assert!(out.status.success());
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = bess_edge()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains("holding registers 0..17"), "{stdout}");
}

#[test]
fn a_bad_config_names_file_line_and_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let example = String::from_utf8(bess_edge().arg("init").output().unwrap().stdout).unwrap();
    let bad = example.replacen("unit = 2", "unit = 2\ncolour = \"red\"", 1);
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, &bad).unwrap();
    let line = bad.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
    for command in ["check", "run"] {
        let out = bess_edge()
            .args([command, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("{}:{line}:", path.display())),
            "{command}: {stderr}"
        );
        assert!(stderr.contains("colour"), "{command}: {stderr}");
    }
}

#[test]
fn a_missing_config_file_is_named() {
    let out = bess_edge()
        .args(["check", "--config", "/nonexistent/edge.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/edge.toml"));
}

#[test]
fn every_subcommand_has_help() {
    for command in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
        vec!["init", "--help"],
    ] {
        let out = bess_edge().args(&command).output().unwrap();
        assert!(out.status.success(), "{command:?}");
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn every_technician_command_has_help_with_examples() {
    for command in ["read", "scan", "status", "check"] {
        let out = bess_edge().args([command, "--help"]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command}: {stdout}");
        assert!(stdout.contains("Example"), "{command}: {stdout}");
        assert!(
            stdout.contains(&format!("bess-edge {command}")),
            "{command}: {stdout}"
        );
    }
}

#[test]
fn check_offline_prints_the_request_plan_against_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let example = String::from_utf8(bess_edge().arg("init").output().unwrap().stdout).unwrap();
    // Move the heartbeat far away: the fast group now needs two requests.
    let wide = example.replacen("address = 17,", "address = 300,", 1);
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, &wide).unwrap();
    let out = bess_edge()
        .args(["check", "--offline", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "in 2 requests (minimum 2): holding registers 0..16, holding registers 300..300"
        ),
        "{stdout}"
    );
    assert!(
        !stdout.contains("Trying devices"),
        "--offline contacts nothing: {stdout}"
    );
}

#[test]
fn status_without_a_running_agent_says_where_it_looked() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = bess_edge()
        .args(["status", "--url", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&url) && stderr.contains("bess-edge run"),
        "{stderr}"
    );
}
