//! `bess-collector check-rules`: a good file is summed up, a bad one is
//! refused with file, line and field of every problem.

use std::process::Command;

fn check_rules(file: &std::path::Path) -> std::process::Output {
    Command::new(bess_tests::binary("bess-collector"))
        .arg("check-rules")
        .arg(file)
        .output()
        .expect("bess-collector runs")
}

#[test]
fn a_good_rules_file_is_summed_up_and_a_bad_one_names_each_problem() {
    let demo = bess_tests::workspace_root().join("deploy/local/demo-rules.toml");
    let out = check_rules(&demo);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("5 rules, 0 receivers, 2 derived points"),
        "{stdout}"
    );

    let scratch = bess_tests::Scratch::new("check-rules");
    let bad = scratch.path("rules.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"hot\"\nkind = \"threshold\"\nabove = \"45\"\n\n[[rule]]\nname = \"hot\"\nkind = \"stale\"\nafter = \"soon\"\n",
    )
    .unwrap();
    let out = check_rules(&bad);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    for expected in [
        format!("{file}:4:9: rule[0].above: expected a number"),
        format!("{file}:7:8: rule[1].name: duplicate rule name \"hot\""),
        format!("{file}:9:9: rule[1].after: not a duration"),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} not in:\n{stderr}");
    }
}
