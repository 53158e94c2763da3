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
