use super::*;
use crate::derived::{expr, Definition};
use crate::pattern::Pattern;

/// Receivers for the rules of a test to name.
const RECEIVERS: &str = "\
[[receiver]]
name = \"ops\"
kind = \"webhook\"
url = \"http://127.0.0.1:9000/hook\"
";

fn env(name: &str) -> Option<String> {
    (name == "BESS_WEBHOOK_SECRET").then(|| "s3cret".to_owned())
}

fn parsed(text: &str) -> Result<RuleSet, RulesFileError> {
    parse_with_env(text, Path::new("rules.toml"), &env)
}

fn problems_of(text: &str) -> Vec<ConfigProblem> {
    match parsed(text) {
        Err(RulesFileError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

/// The one problem of `text`, checked for its line, field and a part of
/// its message.
fn assert_one_problem(text: &str, line: usize, field: &str, fragment: &str) -> ConfigProblem {
    let problems = problems_of(text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let problem = problems.into_iter().next().unwrap();
    assert_eq!(
        (problem.line, problem.field.as_str()),
        (line, field),
        "{problem:?}"
    );
    assert!(problem.message.contains(fragment), "{problem:?}");
    problem
}

fn rule(text: &str) -> Rule {
    let set = parsed(&format!("[[rule]]\n{text}\n{RECEIVERS}")).unwrap_or_else(|e| panic!("{e}"));
    set.rules.into_iter().next().unwrap()
}

#[test]
fn the_example_file_parses_to_the_expected_model() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/rules.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let set = parse_with_env(&text, &path, &env).unwrap_or_else(|e| panic!("{e}"));
    let target = |device: &str, point: &str| Target {
        site: Pattern::any(),
        device: Pattern(device.into()),
        point: Pattern(point.into()),
    };
    let plain = |name: &str, target, condition| Rule {
        name: name.into(),
        severity: Severity::Warning,
        summary: String::new(),
        target,
        condition,
        receivers: Vec::new(),
        notify_past: false,
    };
    let expected = RuleSet {
        rules: vec![
            Rule {
                name: "cell-overtemp".into(),
                severity: Severity::Critical,
                summary: "Hottest cell above 45 °C".into(),
                target: target("bms*", "cell_temp_max"),
                condition: Condition::Threshold {
                    bound: Bound::Above(45.0),
                    hysteresis: 2.0,
                    hold: Duration::from_secs(30),
                },
                receivers: vec!["ops".into()],
                notify_past: false,
            },
            plain(
                "soc-jump",
                target("*", "soc"),
                Condition::RateOfChange {
                    max_change: 10.0,
                    window: Duration::from_secs(60),
                },
            ),
            plain(
                "comm-loss",
                target("*", "*"),
                Condition::Stale {
                    after: Duration::from_secs(30),
                },
            ),
            plain(
                "site-silent",
                target("*", "*"),
                Condition::Offline {
                    after: Duration::from_secs(120),
                },
            ),
            plain(
                "cell-spread",
                target("rack-*", "cell_voltage_*"),
                Condition::Deviation {
                    max_spread: 0.05,
                    hysteresis: 0.01,
                    hold: Duration::from_secs(10),
                },
            ),
            plain(
                "pcs-fault",
                target("pcs-*", "status"),
                Condition::Flag {
                    flag: Pattern("fault".into()),
                    hold: Duration::ZERO,
                },
            ),
        ],
        receivers: vec![
            Receiver {
                name: "ops".into(),
                kind: ReceiverKind::Webhook {
                    url: "http://127.0.0.1:9000/hook".into(),
                    secret: Some("s3cret".into()),
                },
            },
            Receiver {
                name: "am".into(),
                kind: ReceiverKind::Alertmanager {
                    url: "http://127.0.0.1:9093".into(),
                },
            },
        ],
        derived: vec![
            Definition {
                point: "power".into(),
                device: "site".into(),
                unit: "kW".into(),
                site: Pattern::any(),
                for_each: None,
                source: "sum(*/active_power) / 1000".into(),
                expression: expr::parse("sum(*/active_power) / 1000").unwrap(),
                every: Duration::from_secs(1),
            },
            Definition {
                point: "{device}.cell_spread".into(),
                device: "derived".into(),
                unit: "V".into(),
                site: Pattern::any(),
                for_each: Some(Pattern("rack-*".into())),
                source: "cell_voltage_max - cell_voltage_min".into(),
                expression: expr::parse("cell_voltage_max - cell_voltage_min").unwrap(),
                every: Duration::from_secs(1),
            },
        ],
    };
    assert_eq!(set, expected);
}

#[test]
fn derived_points_are_checked_field_by_field() {
    let cases = [
        (
            "[[derived]]\nname = \"p\"\nfor_each = \"rack-*\"\nexpression = \"a\"\n",
            "derived[0].name",
            "must contain {device}",
        ),
        (
            "[[derived]]\nname = \"{device}.p\"\nexpression = \"a\"\n",
            "derived[0].name",
            "there is none",
        ),
        (
            "[[derived]]\nname = \"p\"\nexpression = \"bms-1/a +\"\n",
            "derived[0].expression",
            "ends too early",
        ),
        (
            "[[derived]]\nname = \"p\"\nexpression = \"bms-1/a\"\nevery = \"7s\"\n",
            "derived[0].every",
            "divide an hour",
        ),
        (
            "[[derived]]\nname = \"p\"\nexpression = \"bms-1/a\"\nformula = \"x\"\n",
            "derived[0].formula",
            "unknown field",
        ),
        (
            "[[derived]]\nname = \"p\"\nexpression = \"bms-1/a\"\n[[derived]]\nname = \"p\"\nexpression = \"bms-1/b\"\n",
            "derived[1].name",
            "duplicate derived point derived/p",
        ),
    ];
    for (text, field, words) in cases {
        let problems = problems_of(text);
        assert_eq!(problems.len(), 1, "{text}: {problems:?}");
        assert_eq!(problems[0].field, field, "{text}");
        assert!(
            problems[0].message.contains(words),
            "{text}: {}",
            problems[0].message
        );
    }
}

#[test]
fn each_bound_of_a_threshold_maps_to_its_condition() {
    let below = rule("name = \"low-soc\"\nkind = \"threshold\"\nbelow = 5");
    assert_eq!(
        below.condition,
        Condition::Threshold {
            bound: Bound::Below(5.0),
            hysteresis: 0.0,
            hold: Duration::ZERO,
        }
    );
    assert_eq!(below.severity, Severity::Warning);
    assert_eq!(below.target.site, Pattern::any());
    assert!(below.receivers.is_empty());
    let band = rule(
        "name = \"v\"\nkind = \"threshold\"\noutside_low = 700\noutside_high = 900.5\nhysteresis = 5\nfor = \"1m 30s\"\nseverity = \"info\"\nnotify_past = true",
    );
    assert_eq!(
        band.condition,
        Condition::Threshold {
            bound: Bound::Outside {
                low: 700.0,
                high: 900.5
            },
            hysteresis: 5.0,
            hold: Duration::from_secs(90),
        }
    );
    assert_eq!(band.severity, Severity::Info);
    assert!(band.notify_past);
}

#[test]
fn each_kind_maps_to_its_condition() {
    let cases = [
        (
            "rate_of_change",
            "max_change = 3\nwindow = \"10s\"",
            Condition::RateOfChange {
                max_change: 3.0,
                window: Duration::from_secs(10),
            },
        ),
        (
            "stale",
            "after = \"1m\"",
            Condition::Stale {
                after: Duration::from_secs(60),
            },
        ),
        (
            "offline",
            "after = \"30s\"",
            Condition::Offline {
                after: Duration::from_secs(30),
            },
        ),
        (
            "deviation",
            "max_spread = 0.1",
            Condition::Deviation {
                max_spread: 0.1,
                hysteresis: 0.0,
                hold: Duration::ZERO,
            },
        ),
    ];
    for (kind, fields, condition) in cases {
        let rule = rule(&format!("name = \"r\"\nkind = \"{kind}\"\n{fields}"));
        assert_eq!(rule.condition, condition, "{kind}");
        assert_eq!(rule.condition.kind(), kind);
    }
}

#[test]
fn a_file_without_rules_or_receivers_is_an_empty_rule_set() {
    assert_eq!(parsed("").unwrap(), RuleSet::default());
    assert_eq!(parsed("# nothing yet\n").unwrap(), RuleSet::default());
}

#[test]
fn an_unknown_field_is_named_at_its_line_and_column() {
    let p = assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter = \"1m\"\nsevrity = \"info\"\n",
        5,
        "rule[0].sevrity",
        "unknown field, expected one of: name, summary, severity",
    );
    assert_eq!(p.column, 11);
}

#[test]
fn a_field_of_another_kind_does_not_apply() {
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter = \"1m\"\nabove = 3\n",
        5,
        "rule[0].above",
        "does not apply to kind = \"stale\" (its own fields are after)",
    );
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"threshold\"\nabove = 3\nafter = \"1m\"\n",
        5,
        "rule[0].after",
        "does not apply to kind = \"threshold\"",
    );
}

#[test]
fn a_rule_without_a_name_is_reported_at_its_table() {
    let p = assert_one_problem(
        "\n[[rule]]\nkind = \"stale\"\nafter = \"1m\"\n",
        2,
        "rule[0].name",
        "missing field",
    );
    assert_eq!(p.column, 1);
}

#[test]
fn a_duplicate_rule_name_points_at_the_second_rule() {
    let stale = "kind = \"stale\"\nafter = \"1m\"\n";
    assert_one_problem(
        &format!("[[rule]]\nname = \"r\"\n{stale}\n[[rule]]\nname = \"r\"\n{stale}"),
        7,
        "rule[1].name",
        "duplicate rule name \"r\"",
    );
}

#[test]
fn a_rule_name_keeps_to_its_characters_and_length() {
    let stale = "kind = \"stale\"\nafter = \"1m\"\n";
    assert_one_problem(
        &format!("[[rule]]\nname = \"cell temp\"\n{stale}"),
        2,
        "rule[0].name",
        "A-Z a-z 0-9 _ . -",
    );
    let long = "x".repeat(MAX_RULE_NAME_LEN + 1);
    assert_one_problem(
        &format!("[[rule]]\nname = \"{long}\"\n{stale}"),
        2,
        "rule[0].name",
        "must be 1 to 100",
    );
}

#[test]
fn a_bad_duration_names_its_field_and_value() {
    let text = "[[rule]]\nname = \"a\"\nkind = \"stale\"\nafter = \"1m\"\n\n[[rule]]\nname = \"b\"\nkind = \"threshold\"\nabove = 1\nfor = \"30 parsecs\"\n";
    let p = assert_one_problem(text, 10, "rule[1].for", "not a duration");
    assert_eq!(p.column, 7);
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter = \"0s\"\n",
        4,
        "rule[0].after",
        "must be greater than zero",
    );
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter = 30\n",
        4,
        "rule[0].after",
        "expected a string, found an integer",
    );
}

#[test]
fn a_band_needs_low_below_high() {
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"threshold\"\noutside_low = 5\noutside_high = 5\n",
        4,
        "rule[0].outside_low",
        "must be less than `outside_high` (5 >= 5)",
    );
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"threshold\"\noutside_high = 5\n",
        1,
        "rule[0].outside_low",
        "missing field",
    );
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"threshold\"\noutside_low = 0\noutside_high = 10\nhysteresis = 5\n",
        6,
        "rule[0].hysteresis",
        "less than half the band",
    );
}

#[test]
fn a_threshold_needs_exactly_one_bound() {
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"threshold\"\n",
        1,
        "rule[0].above",
        "needs `above`, `below`, or `outside_low` and `outside_high`",
    );
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"threshold\"\nabove = 5\nbelow = 1\n",
        5,
        "rule[0].below",
        "exactly one of",
    );
}

#[test]
fn a_negative_hysteresis_is_refused() {
    let p = assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"threshold\"\nabove = 45\nhysteresis = -2\n",
        5,
        "rule[0].hysteresis",
        "must be zero or more",
    );
    assert_eq!(p.column, 14);
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"deviation\"\nmax_spread = 0.05\nhysteresis = 0.05\n",
        5,
        "rule[0].hysteresis",
        "less than `max_spread`",
    );
}

#[test]
fn numbers_must_be_finite_and_limits_positive() {
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"threshold\"\nabove = nan\n",
        4,
        "rule[0].above",
        "must be a finite number",
    );
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"rate_of_change\"\nmax_change = 0\nwindow = \"1m\"\n",
        4,
        "rule[0].max_change",
        "must be greater than zero",
    );
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"deviation\"\nmax_spread = \"0.1\"\n",
        4,
        "rule[0].max_spread",
        "expected a number, found a string",
    );
}

#[test]
fn an_unknown_receiver_is_named_with_its_index() {
    assert_one_problem(
        &format!("[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter = \"1m\"\nreceivers = [\"ops\", \"pager\"]\n\n{RECEIVERS}"),
        5,
        "rule[0].receivers[1]",
        "no [[receiver]] named \"pager\" (known: ops)",
    );
}

#[test]
fn an_offline_rule_takes_no_point_or_device() {
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"offline\"\npoint = \"soc\"\nafter = \"1m\"\n",
        4,
        "rule[0].point",
        "whole sites",
    );
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"offline\"\ndevice = \"bms-1\"\nafter = \"1m\"\n",
        4,
        "rule[0].device",
        "whole sites",
    );
}

#[test]
fn an_offline_rule_waits_at_least_30_seconds() {
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"offline\"\nafter = \"29s\"\n",
        4,
        "rule[0].after",
        "must be at least 30s",
    );
}

#[test]
fn an_unknown_severity_or_kind_is_refused() {
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nseverity = \"page\"\nkind = \"stale\"\nafter = \"1m\"\n",
        3,
        "rule[0].severity",
        "must be info, warning or critical",
    );
    assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"spike\"\nafter = \"1m\"\n",
        3,
        "rule[0].kind",
        "must be one of: threshold, rate_of_change, stale, offline, deviation",
    );
}

#[test]
fn an_unset_or_empty_secret_variable_is_refused() {
    let text = |variable: &str| {
        format!("[[receiver]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"https://h/x\"\nsecret_env = \"{variable}\"\n")
    };
    assert_one_problem(
        &text("BESS_UNSET"),
        5,
        "receiver[0].secret_env",
        "the environment variable BESS_UNSET is unset or empty",
    );
    let empty = parse_with_env(&text("E"), Path::new("r.toml"), &|_| Some(String::new()));
    assert!(
        matches!(empty, Err(RulesFileError::Invalid { .. })),
        "{empty:?}"
    );
}

#[test]
fn a_receiver_needs_an_http_url_and_its_kind_own_fields() {
    assert_one_problem(
        "[[receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"ftp://h\"\n",
        4,
        "receiver[0].url",
        "must be an http or https URL",
    );
    assert_one_problem(
        "[[receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://h:9093\"\nsecret_env = \"S\"\n",
        5,
        "receiver[0].secret_env",
        "does not apply to kind = \"alertmanager\" (no other fields)",
    );
    assert_one_problem(
        &format!("{RECEIVERS}{RECEIVERS}"),
        6,
        "receiver[1].name",
        "duplicate receiver name \"ops\"",
    );
}

#[test]
fn a_toml_syntax_error_names_its_line_and_key() {
    let p = assert_one_problem(
        "[[rule]]\nname = \"r\"\nkind = \"stale\"\nafter =\n",
        4,
        "after",
        "invalid string",
    );
    assert_eq!(p.column, 8);
}

#[test]
fn an_unknown_table_is_named() {
    assert_one_problem(
        "[[rules]]\nname = \"r\"\n",
        1,
        "rules",
        "unknown field `rules`, expected one of `rule`, `receiver`, `derived`",
    );
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let text = "\
[[rule]]
name = \"a\"
kind = \"stale\"
after = \"soon\"
above = 1

[[rule]]
name = \"a\"
kind = \"threshold\"
below = 1
receivers = [\"nobody\"]

[[receiver]]
name = \"ops\"
kind = \"email\"
url = \"http://h\"
";
    let problems = problems_of(text);
    let found: Vec<_> = problems
        .iter()
        .map(|p| (p.line, p.field.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (4, "rule[0].after"),
            (5, "rule[0].above"),
            (8, "rule[1].name"),
            (11, "rule[1].receivers[0]"),
            (15, "receiver[0].kind"),
        ],
        "{problems:#?}"
    );
}

#[test]
fn display_gives_one_path_line_column_field_line_per_problem() {
    let text =
        "[[rule]]\nname = \"r\"\nkind = \"threshold\"\nabove = 1\nhysteresis = -1\nfor = \"x\"\n";
    let error = parsed(text).unwrap_err();
    let shown = error.to_string();
    let lines: Vec<_> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert_eq!(
        lines[0],
        "rules.toml:5:14: rule[0].hysteresis: must be zero or more"
    );
    assert!(
        lines[1].starts_with("rules.toml:6:7: rule[0].for: not a duration"),
        "{shown}"
    );
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let error = load(Path::new("/nonexistent/rules.toml")).unwrap_err();
    assert!(matches!(error, RulesFileError::Read { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/rules.toml: cannot read:"),
        "{error}"
    );
}

#[test]
fn a_flag_rule_names_its_flag() {
    let set = parsed(
        "[[rule]]\nname = \"f\"\nkind = \"flag\"\npoint = \"status\"\nflag = \"*fault*\"\nfor = \"5s\"\n",
    )
    .unwrap();
    assert_eq!(
        set.rules[0].condition,
        Condition::Flag {
            flag: Pattern("*fault*".into()),
            hold: Duration::from_secs(5),
        }
    );
    assert_one_problem(
        "[[rule]]\nname = \"f\"\nkind = \"flag\"\n",
        1,
        "rule[0].flag",
        "missing field",
    );
}

#[test]
fn the_demo_rules_parse() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/demo-rules.toml");
    let set = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((set.rules.len(), set.derived.len()), (5, 2));
}
