//! Robust parsing: whatever text reaches the endpoint or configuration parser, the answer is a value or an error
//! that names what it read, never a panic.

use etcd_sentinel::config;
use etcd_sentinel::etcd::endpoint::Endpoint;
use proptest::prelude::*;

/// Pieces a configuration is made of, to get close to valid files more often than random text does.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "listen",
        "name",
        "endpoints",
        "discovery",
        "interval",
        "dial_timeout",
        "command_timeout",
        "metrics_urls",
        "vitals_interval",
        "user",
        "password_file",
        "insecure_transport",
        "api_token_file",
        "tls_cert",
        "bogus",
    ]);
    let value = prop_oneof![
        "\"[a-z0-9:./{}-]{0,24}\"".prop_map(|s| s),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("true".to_string()),
        Just("[\"127.0.0.1:2379\", \"x\"]".to_string()),
        Just("[]".to_string()),
        Just("{ a = 1 }".to_string()),
        "\\PC{0,12}".prop_map(|s| s),
    ];
    let line = prop_oneof![
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        Just("[[cluster]]".to_string()),
        Just("[cluster.tls]".to_string()),
        Just("[cluster.thresholds]".to_string()),
        Just("[cluster.metrics_urls]".to_string()),
        "\\PC{0,20}".prop_map(|s| s),
    ];
    prop::collection::vec(line, 0..14).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn any_endpoint_text_parses_or_is_named_in_the_error(text in "\\PC{0,40}") {
        match Endpoint::parse(&text) {
            Ok(ep) => {
                // A parsed endpoint is a URL that parses back to itself.
                prop_assert_eq!(Endpoint::parse(&ep.url()).unwrap(), ep);
            }
            Err(e) => prop_assert!(e.to_string().starts_with("invalid endpoint")),
        }
    }

    #[test]
    fn endpoints_that_look_like_endpoints(
        scheme in prop::sample::select(vec!["", "http://", "https://", "HTTP://", "ftp://"]),
        host in prop_oneof!["[a-z][a-z0-9.-]{0,20}", "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}", Just("[::1]".to_string())],
        port in prop_oneof![Just(String::new()), (0u32..100_000).prop_map(|p| format!(":{p}"))],
        tail in prop::sample::select(vec!["", "/", "/v3", "?x"]),
    ) {
        let text = format!("{scheme}{host}{port}{tail}");
        if let Err(e) = Endpoint::parse(&text) {
            let message = e.to_string();
            prop_assert!(message.contains(&format!("{text:?}")), "{}", message);
        }
    }

    #[test]
    fn any_configuration_text_gives_a_config_or_an_error_naming_the_file(text in config_text()) {
        if let Err(e) = config::parse("sentinel.toml", &text) {
            prop_assert!(e.to_string().starts_with("sentinel.toml"), "{}", e);
        }
    }

    #[test]
    fn random_text_as_configuration(text in "\\PC{0,200}") {
        if let Err(e) = config::parse("f.toml", &text) {
            prop_assert!(e.to_string().starts_with("f.toml"));
        }
    }
}

/// Lines a member's /metrics page is made of, and lines a hostile one might send instead.
fn metrics_line() -> impl Strategy<Value = String> {
    let family = prop::sample::select(vec![
        "etcd_network_peer_round_trip_time_seconds_bucket",
        "etcd_network_peer_round_trip_time_seconds_sum",
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "etcd_server_quota_backend_bytes",
        "etcd_server_proposals_pending",
        "grpc_server_handled_total",
        "process_open_fds",
        "etcd_unrelated",
    ]);
    let label = prop_oneof![
        Just(String::new()),
        "[0-9a-f]{1,16}".prop_map(|to| format!("{{To=\"{to}\",le=\"0.01\"}}")),
        "\\PC{0,20}".prop_map(|t| format!("{{le=\"{t}\"}}")),
        Just("{le=\"+Inf\"}".to_string()),
        Just("{unclosed=\"".to_string()),
    ];
    let value = prop_oneof![
        any::<f64>().prop_map(|v| format!("{v}")),
        Just("NaN".to_string()),
        Just("+Inf".to_string()),
        "\\PC{0,10}".prop_map(|s| s),
    ];
    prop_oneof![
        (family.clone(), label, value).prop_map(|(f, l, v)| format!("{f}{l} {v}")),
        family.clone().prop_map(|f| format!("# TYPE {f} histogram")),
        family.prop_map(|f| format!("# HELP {f} \\PC")),
        "\\PC{0,80}".prop_map(|s| s),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_metrics_page_parses_or_is_an_error(lines in prop::collection::vec(metrics_line(), 0..40)) {
        let page = lines.join("\n");
        // A value or an error; never a panic.
        let _ = etcd_sentinel::etcd::member_metrics::parse(&page);
    }
}

/// Hostile shapes too large for random generation: a huge line, many series, a huge histogram, deep nesting.
#[test]
fn hostile_metrics_pages_and_configurations_end_in_an_answer() {
    use etcd_sentinel::etcd::member_metrics::parse;
    // One 4 MiB line of a wanted family, as much as a page may hold: read, not a panic or a hang.
    let huge_line = format!(
        "etcd_server_proposals_pending{{x=\"{}\"}} 7\n",
        "a".repeat(4 << 20)
    );
    let parsed = parse(&huge_line).expect("one long but well-formed line");
    assert_eq!(parsed.proposals_pending, Some(7.0));
    // A member claiming a million peers: the peers kept are bounded (they become metric labels).
    let mut many = String::from("# TYPE etcd_network_peer_round_trip_time_seconds histogram\n");
    for i in 0..5_000u64 {
        many.push_str(&format!(
            "etcd_network_peer_round_trip_time_seconds_bucket{{To=\"{i:x}\",le=\"+Inf\"}} 1\n"
        ));
    }
    let parsed = parse(&many).expect("a page of known series");
    assert!(
        parsed.peer_rtt.len() <= etcd_sentinel::etcd::member_metrics::MAX_PEERS,
        "{} peers kept",
        parsed.peer_rtt.len()
    );
    // Deeply nested TOML is an error naming the file, not a stack overflow.
    let deep = format!("listen = {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = config::parse("deep.toml", &deep).unwrap_err();
    assert!(e.to_string().starts_with("deep.toml"), "{e}");
    let deep_tables = format!("x = {}1{}", "{ a = ".repeat(50_000), " }".repeat(50_000));
    assert!(config::parse("deep.toml", &deep_tables).is_err());
}
