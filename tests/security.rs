//! TLS, client certificates and etcd users against real etcd: the right credentials work for status and the
//! daemon (members' /metrics included); each wrong one fails fast with its own message; no secret leaks.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_sentinel::etcd::connect::Connector;
use etcd_sentinel::etcd::endpoint::Endpoint;
use etcd_sentinel::probe::poller::ClusterPoller;
use etcd_sentinel::settings::Target;
use serde_json::Value;
use support::daemon::Daemon;
use support::{EtcdCluster, sentinel, wait_for};

fn status(url: &str, extra: &[&str]) -> (i32, Value, Duration) {
    let started = Instant::now();
    let mut args = vec![
        "status",
        "-w",
        "json",
        "--dial-timeout",
        "1s",
        "--command-timeout",
        "2s",
        "--endpoints",
        url,
    ];
    args.extend_from_slice(extra);
    let out = sentinel(&args, &[]);
    let elapsed = started.elapsed();
    let view = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), view, elapsed)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn tls_cluster_with_the_right_certificates() {
    let cluster = EtcdCluster::builder().members(3).tls().start().await;
    let pki = cluster.pki.as_ref().unwrap();
    let creds = [
        "--cacert",
        p(&pki.ca),
        "--cert",
        p(&pki.client_cert),
        "--key",
        p(&pki.client_key),
    ];
    let (code, view, _) = status(
        &cluster.client_url(0),
        &[&creds[..], &["--cluster"]].concat(),
    );
    assert_eq!(code, 0, "{view:#}");
    assert_eq!(view["endpoints"].as_array().unwrap().len(), 3);
    for e in view["endpoints"].as_array().unwrap() {
        assert!(e["endpoint"].as_str().unwrap().starts_with("https://"));
        // The members' /metrics were read over TLS with the same client certificate.
        assert!(e["db_quota_bytes"].as_u64().is_some(), "{e:#}");
        assert!(e["vitals"]["wal_fsync_seconds"].is_object(), "{e:#}");
        assert_eq!(e["metrics_error"], Value::Null);
    }
    // As etcdctl: with TLS files, an endpoint without a scheme is spoken to over TLS; and ETCDCTL_* work.
    let bare = cluster.client_url(0).replace("https://", "");
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-sentinel"))
        .args(["status", "--endpoints", &bare])
        .env("ETCDCTL_CACERT", &pki.ca)
        .env("ETCDCTL_CERT", &pki.client_cert)
        .env("ETCDCTL_KEY", &pki.client_key)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Skipping verification needs no CA (the client certificate is still required by the server).
    let (code, _, _) = status(
        &cluster.client_url(0),
        &[
            "--insecure-skip-tls-verify",
            "--cert",
            p(&pki.client_cert),
            "--key",
            p(&pki.client_key),
        ],
    );
    assert_eq!(code, 0);
}

#[tokio::test]
async fn each_wrong_credential_fails_fast_with_its_own_message() {
    let cluster = EtcdCluster::builder().members(1).tls().start().await;
    let pki = cluster.pki.as_ref().unwrap();
    let url = cluster.client_url(0);
    let good_client = ["--cert", p(&pki.client_cert), "--key", p(&pki.client_key)];
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "no CA given",
            good_client.to_vec(),
            "not signed by a trusted CA",
        ),
        (
            "another CA",
            [&["--cacert", p(&pki.stranger_ca)][..], &good_client].concat(),
            "not signed by a trusted CA",
        ),
        (
            "no client certificate",
            vec!["--cacert", p(&pki.ca)],
            "requires a client certificate",
        ),
        (
            "expired client certificate",
            vec![
                "--cacert",
                p(&pki.ca),
                "--cert",
                p(&pki.expired_cert),
                "--key",
                p(&pki.expired_key),
            ],
            "rejected our client certificate",
        ),
        (
            "client certificate of another CA",
            vec![
                "--cacert",
                p(&pki.ca),
                "--cert",
                p(&pki.stranger_cert),
                "--key",
                p(&pki.stranger_key),
            ],
            "rejected our client certificate",
        ),
        (
            "name mismatch",
            [
                &["--cacert", p(&pki.ca), "--tls-server-name", "etcd.example"][..],
                &good_client,
            ]
            .concat(),
            "name mismatch",
        ),
    ];
    for (what, args, expected) in cases {
        let (code, view, elapsed) = status(&url, &args);
        assert_eq!(code, 1, "{what}");
        let error = view["endpoints"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(expected), "{what}: {error}");
        assert!(elapsed < Duration::from_secs(4), "{what} took {elapsed:?}");
    }
    // Plain text to a TLS member, and TLS to a plain-text member, say so.
    let (code, view, _) = status(&url.replace("https://", "http://"), &[]);
    assert_eq!(code, 1);
    let error = view["endpoints"][0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("https://"), "{error}");
    let plain = EtcdCluster::start(1).await;
    let (code, view, _) = status(
        &plain.client_url(0).replace("http://", "https://"),
        &["--cacert", p(&pki.ca)],
    );
    assert_eq!(code, 1);
    assert!(
        view["endpoints"][0]["error"]
            .as_str()
            .unwrap()
            .contains("does not speak TLS"),
        "{view:#}"
    );
    // --insecure-transport=false refuses plain text outright.
    let (code, view, _) = status(&plain.client_url(0), &["--insecure-transport=false"]);
    assert_eq!(code, 1);
    assert!(
        view["endpoints"][0]["error"]
            .as_str()
            .unwrap()
            .contains("plain-text endpoint refused")
    );
}

#[test]
fn unreadable_tls_files_are_usage_errors_naming_the_file() {
    let out = sentinel(
        &[
            "status",
            "--endpoints",
            "https://127.0.0.1:1",
            "--cacert",
            "/nonexistent/ca.pem",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/ca.pem") && err.contains("CA certificate"),
        "{err}"
    );
    let out = sentinel(&["status", "--cert", "/tmp/x.crt"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key"));
}

#[tokio::test]
async fn a_read_only_monitoring_user_can_do_everything_monitoring_needs() {
    let cluster = EtcdCluster::builder().members(3).auth().start().await;
    let url = cluster.client_url(0);
    let (code, view, _) = status(&url, &["--cluster", "--user", "monitor:monitorpw"]);
    assert_eq!(code, 0, "{view:#}");
    assert_eq!(view["members"].as_array().unwrap().len(), 3);
    assert_eq!(view["quorum"]["failure_tolerance"], 1);
    for e in view["endpoints"].as_array().unwrap() {
        assert_eq!(e["healthy"], true, "{e:#}");
        assert!(e["vitals"].is_object());
    }
    // The same with --password and the etcdctl variables.
    let (code, _, _) = status(&url, &["--user", "monitor", "--password", "monitorpw"]);
    assert_eq!(code, 0);

    let (code, view, _) = status(&url, &["--user", "monitor:wrong"]);
    assert_eq!(code, 1);
    let error = view["endpoints"][0]["auth_error"].as_str().unwrap();
    assert!(
        error.contains("authentication as \"monitor\" failed"),
        "{error}"
    );
    assert!(
        !serde_json::to_string(&view).unwrap().contains("wrong\""),
        "no password in the output"
    );

    let (code, view, _) = status(&url, &[]);
    assert_eq!(code, 1, "without a user the sentinel cannot do its work");
    let e = &view["endpoints"][0];
    assert!(
        e["auth_error"]
            .as_str()
            .unwrap()
            .contains("authentication enabled and no user was given"),
        "{view:#}"
    );
    assert_eq!(
        e["healthy"], true,
        "etcd served the read before it refused the key: the member is healthy"
    );
    assert_eq!(view["quorum"]["state"], "ok", "{view:#}");
}

#[tokio::test]
async fn tokens_are_renewed_without_a_restart() {
    // Tokens live one second, and the auth store changes under the poller's feet.
    let cluster = EtcdCluster::builder()
        .members(1)
        .auth()
        .arg("--auth-token-ttl=1")
        .start()
        .await;
    let mut settings = cluster.connect_settings(Duration::from_secs(2));
    settings.credentials =
        Some(etcd_sentinel::secret::Credentials::parse("monitor:monitorpw", None).unwrap());
    let endpoints = Endpoint::parse_list(&cluster.endpoints()).unwrap();
    let mut poller = ClusterPoller::new(
        Target::new("auth", endpoints),
        Arc::new(Connector::new(settings).unwrap()),
    );
    assert!(poller.poll().await.healthy);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let view = poller.poll().await;
    assert!(view.healthy, "expired token: {:?}", view.endpoints[0].error);
    // A change of users bumps the auth revision: old tokens are refused as "old".
    let mut root = cluster.client(0).await;
    root.user_add("someone", "pw", None).await.unwrap();
    let view = poller.poll().await;
    assert!(
        view.healthy,
        "old auth revision: {:?}",
        view.endpoints[0].error
    );
}

#[tokio::test]
async fn the_daemon_over_tls_with_a_user_leaks_no_secret() {
    let cluster = EtcdCluster::builder().members(1).tls().auth().start().await;
    let pki = cluster.pki.as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("monitor.password");
    std::fs::write(&password_file, "monitorpw\n").unwrap();
    let config = format!(
        "[[cluster]]\nname = \"secure\"\nendpoints = [\"{}\"]\ninterval = \"300ms\"\n\
         user = \"monitor\"\npassword_file = \"{}\"\n[cluster.tls]\ncacert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cluster.client_url(0),
        password_file.display(),
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let daemon = Daemon::start_with(&config, &["--log-level".as_ref(), "debug".as_ref()]);
    let metrics = wait_for(
        "healthy metrics over TLS with a user",
        Duration::from_secs(20),
        || async {
            let (_, m) = daemon.get("/metrics").await;
            m.contains("etcd_sentinel_cluster_healthy{cluster=\"secure\"} 1")
                .then_some(m)
        },
    )
    .await;
    assert!(
        metrics.contains("etcd_sentinel_db_quota_bytes{"),
        "members' /metrics read over TLS"
    );
    assert!(metrics.contains("etcd_sentinel_wal_fsync_duration_seconds_count{"));
    let mut seen = metrics;
    for path in [
        "/api/v1/clusters",
        "/api/v1/clusters/secure",
        "/api/v1/clusters/secure/events",
    ] {
        seen.push_str(&daemon.get(path).await.1);
    }
    seen.push_str(&daemon.log_text());
    drop(daemon);
    // The password file was read and used: the daemon authenticated as the monitoring user.
    assert!(
        seen.lines()
            .any(|l| l.contains("authenticated") && l.contains("monitor")),
        "no authentication as monitor in the log"
    );
    let key = std::fs::read_to_string(&pki.client_key).unwrap();
    let key_body = key.lines().nth(1).unwrap();
    assert!(!seen.contains("monitorpw"), "the password leaked");
    assert!(!seen.contains(key_body), "the private key leaked");
    assert!(!seen.contains("rootpw"));
}

/// A daemon with an API token (or none), optionally serving TLS.
struct GuardedDaemon {
    _daemon: Daemon,
    _files: tempfile::TempDir,
    base: String,
    log: std::path::PathBuf,
    config: std::path::PathBuf,
}

fn guarded_daemon(
    cluster: &EtcdCluster,
    token: Option<&str>,
    tls: Option<(&Path, &Path)>,
) -> GuardedDaemon {
    let config = format!(
        "[[cluster]]\nname = \"a\"\nendpoints = [\"{}\"]\ninterval = \"300ms\"\n",
        cluster.client_url(0)
    );
    let files = tempfile::tempdir().unwrap();
    let token_file = files.path().join("api.token");
    let mut args: Vec<std::ffi::OsString> = vec!["--log-level".into(), "debug".into()];
    if let Some(t) = token {
        std::fs::write(&token_file, format!("{t}\n")).unwrap();
        args.extend(["--api-token-file".into(), token_file.into_os_string()]);
    }
    if let Some((cert, key)) = tls {
        args.extend([
            "--tls-cert".into(),
            cert.as_os_str().to_owned(),
            "--tls-key".into(),
            key.as_os_str().to_owned(),
        ]);
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let daemon = Daemon::start_with(&config, &refs);
    GuardedDaemon {
        base: daemon.url(""),
        log: daemon.log.clone(),
        config: daemon.config.clone(),
        _daemon: daemon,
        _files: files,
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, bool) {
    let mut request = client.post(url).body(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.expect("POST");
    let challenge = response.headers().contains_key("www-authenticate");
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
        challenge,
    )
}

#[tokio::test]
async fn mutating_endpoints_need_a_configured_token() {
    let cluster = EtcdCluster::start(1).await;
    let client = reqwest::Client::new();

    // No token configured: the endpoint is never served.
    let open = guarded_daemon(&cluster, None, None);
    let reload = format!("{}/api/v1/reload", open.base);
    wait_for("the daemon", Duration::from_secs(10), || async {
        reqwest::get(format!("{}/healthz", open.base))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let (code, body, _) = post(&client, &reload, Some("anything"), vec![]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("no API token is configured"));

    let token = "s3cr3t-t0ken-value";
    let guarded = guarded_daemon(&cluster, Some(token), None);
    let reload = format!("{}/api/v1/reload", guarded.base);
    wait_for("the daemon", Duration::from_secs(10), || async {
        reqwest::get(format!("{}/readyz", guarded.base))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    let (code, _, challenge) = post(&client, &reload, None, vec![]).await;
    assert_eq!(code, 401);
    assert!(challenge, "401 carries WWW-Authenticate");
    let (code, body, _) = post(&client, &reload, Some("s3cr3t-t0ken-valuX"), vec![]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("invalid API token"));
    // The right token: the reload happens, and a bad file is refused with its reason.
    let (code, body, _) = post(&client, &reload, Some(token), vec![]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"reloaded\":true"));
    std::fs::write(
        &guarded.config,
        "[[cluster]]\nname = \"a\"\nendpoints = [\"nope\"]\n",
    )
    .unwrap();
    let (code, body, _) = post(&client, &reload, Some(token), vec![]).await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("cluster[0].endpoints[0]"), "{body}");
    // Bodies are bounded: 413, or — when the server answers before the client has finished writing the body
    // and closes — the connection cut under the client's write (a race in which the 413 cannot be read).
    let oversized = client
        .post(&reload)
        .bearer_auth(token)
        .body(vec![b'x'; 1024 * 1024])
        .send()
        .await;
    match oversized {
        Ok(response) => assert_eq!(response.status().as_u16(), 413),
        Err(e) => {
            let text = format!("{e:?}");
            assert!(
                text.contains("BrokenPipe") || text.contains("ConnectionReset"),
                "the oversized body was neither refused with 413 nor cut: {text}"
            );
        }
    }
    // Reads stay open; the token is nowhere in the log.
    assert_eq!(
        reqwest::get(format!("{}/api/v1/clusters", guarded.base))
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        !std::fs::read_to_string(&guarded.log)
            .unwrap()
            .contains(token)
    );
}

#[tokio::test]
async fn the_api_can_be_served_over_tls() {
    let cluster = EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::create(dir.path());
    let daemon = guarded_daemon(&cluster, None, Some((&pki.server_cert, &pki.server_key)));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("{}/readyz", daemon.base);
    wait_for("the API over TLS", Duration::from_secs(15), || async {
        client
            .get(&url)
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    let metrics = client
        .get(format!("{}/metrics", daemon.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("etcd_sentinel_cluster_healthy{cluster=\"a\"} 1"));
    // Plain HTTP to the TLS port gets nothing useful.
    let plain = reqwest::get(url.replace("https://", "http://")).await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}
