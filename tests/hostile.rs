//! Hostile and careless input: pages that never end, connections that never speak, secrets that rotate, values
//! that make no sense. Each test is a failure a user saw on an earlier main.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::EtcdCluster;
use support::daemon::{Daemon, config_for};

/// How an endless /metrics page is delimited.
#[derive(Clone, Copy, Debug)]
enum Endless {
    /// `Transfer-Encoding: chunked`, chunks forever.
    Chunked,
    /// HTTP/1.0, no length: the body ends when the connection closes, which it never does.
    CloseDelimited,
}

/// Serves a /metrics page that never ends, as fast as the client reads it, to every connection; each connection
/// stops after 20 s or 4 GiB, so a broken client cannot keep the test running.
fn endless_metrics(kind: Endless) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_endless(stream, kind));
        }
    });
    port
}

fn serve_endless(mut stream: TcpStream, kind: Endless) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head: &[u8] = match kind {
        Endless::Chunked => {
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        }
        Endless::CloseDelimited => {
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        }
    };
    if stream.write_all(head).is_err() {
        return;
    }
    let line = b"etcd_server_has_leader 1\n";
    let body: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 2600)
        .collect();
    let chunk = match kind {
        Endless::Chunked => {
            let mut c = format!("{:x}\r\n", body.len()).into_bytes();
            c.extend_from_slice(&body);
            c.extend_from_slice(b"\r\n");
            c
        }
        Endless::CloseDelimited => body,
    };
    let started = Instant::now();
    let mut sent = 0usize;
    while started.elapsed() < Duration::from_secs(20) && sent < 4 << 30 {
        if stream.write_all(&chunk).is_err() {
            return;
        }
        sent += chunk.len();
    }
}

/// Runs the binary and returns its exit code, stdout, and peak resident memory in KiB (from wait4).
// The child is waited for with wait4, which `Child` does not know of.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str]) -> (i32, String, i64) {
    let child = Command::new(env!("CARGO_BIN_EXE_etcd-sentinel"))
        .args(args)
        .env_remove("COLUMNS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 on our own child fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child spawned above (not yet waited for: `Child` was consumed, never waited).
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, reader.join().unwrap(), usage.ru_maxrss)
}

/// Before: the size cap was checked after the whole body was read, so a page without a declared size was
/// buffered without limit (2.7 GiB in 8 s, then an allocation failure that took every cluster's monitoring down).
#[tokio::test]
async fn an_endless_metrics_page_costs_bounded_memory_and_the_poll_goes_on() {
    let cluster = EtcdCluster::start(1).await;
    for kind in [Endless::Chunked, Endless::CloseDelimited] {
        let port = endless_metrics(kind);
        let url = format!("http://127.0.0.1:{port}/metrics");
        let started = Instant::now();
        let (code, out, max_rss_kib) = run_measured(&[
            "status",
            "-w",
            "json",
            "--endpoints",
            &cluster.endpoints(),
            "--metrics-url",
            &url,
            "--command-timeout",
            "8s",
        ]);
        let took = started.elapsed();
        let view: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{kind:?}: no JSON ({e}): {out}"));
        let e = &view["endpoints"][0];
        let error = e["metrics_error"].as_str().unwrap_or_default();
        assert!(error.contains("larger than"), "{kind:?}: {e:#}");
        assert_eq!(
            e["healthy"], true,
            "{kind:?}: health does not depend on /metrics"
        );
        assert_eq!(code, 0, "{kind:?}");
        assert!(
            took < Duration::from_secs(6),
            "{kind:?}: stopped at the size limit, not the timeout: {took:?}"
        );
        assert!(
            max_rss_kib < 64 * 1024,
            "{kind:?}: peak RSS {} MiB",
            max_rss_kib / 1024
        );
        eprintln!(
            "HOSTILE endless {kind:?}: peak RSS {} KiB, {took:?}",
            max_rss_kib
        );
    }
}

/// Reads from a raw connection until the server closes it or `within` passes; returns how long that took.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

async fn connect(port: u16) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the daemon")
}

/// Before: connections that sent part of their headers, and idle keep-alive ones, stayed open for good (100 s and
/// counting), and 1,100 of them under `ulimit -n 1024` made every scrape time out.
#[tokio::test]
async fn half_open_and_idle_connections_are_closed_and_a_scraper_always_gets_through() {
    use tokio::io::AsyncWriteExt;
    let cluster = EtcdCluster::start(1).await;
    let daemon = Daemon::start(&format!(
        "max_connections = 20\nheader_timeout = \"1s\"\n{}",
        config_for(&[("h", &cluster, "interval = \"1s\"")])
    ));
    daemon.wait_ready().await;

    // A head that never ends, and a keep-alive connection left idle after its request: both closed after
    // header_timeout.
    let mut partial = connect(daemon.port).await;
    partial
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut partial, Duration::from_secs(5)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(3)),
        "half-open connection still open: {took:?}"
    );
    let mut idle = connect(daemon.port).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(3)),
        "idle keep-alive still open: {took:?}"
    );

    // Three times the cap of connections that never finish their head, on a daemon whose header timeout is long
    // (so that only eviction can make room): the scraper still gets its page, at once, and the room was made by
    // closing held connections.
    let patient = Daemon::start(&format!(
        "max_connections = 20\nheader_timeout = \"30s\"\n{}",
        config_for(&[("h", &cluster, "interval = \"1s\"")])
    ));
    patient.wait_ready().await;
    let mut held = Vec::new();
    for _ in 0..60 {
        let mut s = connect(patient.port).await;
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n").await;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for path in ["/metrics", "/healthz"] {
        let started = Instant::now();
        let (code, body) = patient.get(path).await;
        assert_eq!(code, 200, "{path} while the cap is hit: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    let mut closed = 0;
    for s in &mut held {
        if closed_within(s, Duration::from_millis(200)).await.is_some() {
            closed += 1;
        }
    }
    assert!(
        (40..60).contains(&closed),
        "{closed} of 60 held connections closed: the cap is 20, and room is made by closing the oldest"
    );
}

/// Before: a rewritten `api_token_file` and a reload left the old token valid and the new one refused.
#[tokio::test]
async fn a_rotated_api_token_takes_effect_at_the_reload_and_the_old_one_stops_working() {
    let cluster = EtcdCluster::start(1).await;
    let files = tempfile::tempdir().unwrap();
    let token_file = files.path().join("api.token");
    std::fs::write(&token_file, "first-token\n").unwrap();
    let daemon = Daemon::start(&format!(
        "api_token_file = {:?}\n{}",
        token_file.display().to_string(),
        config_for(&[("t", &cluster, "interval = \"1s\"")])
    ));
    daemon.wait_ready().await;
    let client = reqwest::Client::new();
    let reload = |token: &'static str| {
        let request = client
            .post(daemon.url("/api/v1/reload"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10));
        async move {
            request
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(reload("first-token").await, 200);
    std::fs::write(&token_file, "second-token\n").unwrap();
    // The reload is allowed by the token in force when it is asked; from then on only the new one works.
    assert_eq!(reload("first-token").await, 200);
    assert_eq!(
        reload("first-token").await,
        403,
        "the old token still works"
    );
    assert_eq!(reload("second-token").await, 200);
    // SIGHUP reads it too.
    std::fs::write(&token_file, "third-token\n").unwrap();
    daemon.signal(libc::SIGHUP);
    support::wait_for("the SIGHUP reload", Duration::from_secs(10), || async {
        (reload("third-token").await == 200).then_some(())
    })
    .await;
    assert_eq!(reload("second-token").await, 403);
    let log = daemon.log_text();
    assert!(log.contains("API token replaced"), "{log}");
    for secret in ["first-token", "second-token", "third-token"] {
        assert!(!log.contains(secret), "the log shows a token");
    }
}

/// Before: `check-config` accepted a missing `api_token_file` or `tls_cert` that `run` refused, and `run` named
/// `--tls-cert` for a path written in the file.
#[test]
fn check_config_refuses_what_run_refuses_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[[cluster]]\nname = \"a\"\nendpoints = [\"127.0.0.1:2379\"]\n";
    for (head, says) in [
        (
            "api_token_file = \"/nonexistent/token\"\n",
            "api_token_file: cannot read /nonexistent/token",
        ),
        (
            "tls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n",
            "tls_cert, tls_key: certificate /nonexistent/c.pem",
        ),
        (
            "max_connections = 0\n",
            "max_connections: 0: between 1 and 100000",
        ),
        (
            "api_token_file = \"/dev/zero\"\n",
            "api_token_file: /dev/zero: not a regular file",
        ),
        (
            "header_timeout = \"1ms\"\n",
            "header_timeout: must be at least 100ms",
        ),
        (
            "header_timeout = \"2days\"\n",
            "header_timeout: \"2days\": longer than 1day",
        ),
    ] {
        let path = dir.path().join("s.toml");
        std::fs::write(&path, format!("{head}{base}")).unwrap();
        let path = path.to_str().unwrap();
        let (code, checked) = support::sentinel_output(&["check-config", path]);
        assert_eq!(code, 2, "check-config: {checked}");
        assert!(
            checked.contains(says) && checked.contains("s.toml"),
            "check-config: {checked}"
        );
        let (code, ran) =
            support::sentinel_output(&["run", "--listen", "127.0.0.1:0", "--config", path]);
        assert_eq!(code, 2, "run: {ran}");
        assert!(ran.contains(says), "run: {ran}");
        assert!(
            !ran.contains("--tls-cert"),
            "run named a flag for a file's key: {ran}"
        );
    }
}

/// Before: `--log-level infoo` silenced the daemon; `.` and `..` were cluster names; a newline vanished from an
/// endpoint; absurd and negative durations were accepted or misreported.
#[test]
fn careless_values_are_refused_naming_them() {
    for (args, says) in [
        (
            &["status", "--log-level", "infoo"][..],
            "--log-level \"infoo\": unknown level or target",
        ),
        (
            &["status", "--log-level", "verbose"],
            "unknown level or target",
        ),
        (
            &["status", "--endpoints", "a\nb:2379"],
            "contains a space or a control character",
        ),
        (
            &["status", "--dial-timeout", "-1s"],
            "a duration cannot be negative",
        ),
        (
            &["status", "--dial-timeout", "1000000000h"],
            "longer than 1day",
        ),
        (&["run", "--name", ".."], "--name \"..\""),
        (&["run", "--name", "."], "--name \".\""),
    ] {
        let (code, out) = support::sentinel_output(args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(says), "{args:?}: {out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    for (text, says) in [
        (
            "[[cluster]]\nname = \"..\"\nendpoints = [\"a:1\"]\n",
            "cluster[0].name",
        ),
        (
            "[[cluster]]\nname = \"a\"\nendpoints = [\"a:1\"]\ninterval = \"500000000000years\"\n",
            "cluster[0].interval: \"500000000000years\"",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, out) = support::sentinel_output(&["check-config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{text}: {out}");
        assert!(out.contains(says), "{text}: {out}");
    }
}

/// A ready daemon whose API token is `token` (through --api-token-file; the directory holding it is returned to
/// be kept alive).
async fn daemon_with_token(cluster: &EtcdCluster, token: &str) -> (Daemon, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let token_file = files.path().join("api.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let daemon = Daemon::start_with(
        &config_for(&[("e", cluster, "interval = \"1s\"")]),
        &["--api-token-file".as_ref(), token_file.as_os_str()],
    );
    daemon.wait_ready().await;
    (daemon, files)
}

/// Before: 413 was plain text, a bad path plain-text 400, and 414 and 431 had empty bodies.
#[tokio::test]
async fn every_error_the_api_answers_is_json() {
    let cluster = EtcdCluster::start(1).await;
    let (daemon, _files) = daemon_with_token(&cluster, "t0ken").await;
    // A connection per request: the server closes one whose request it refused unread.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let long_path = format!("/api/v1/clusters/{}", "x".repeat(10_000));
    let cases: Vec<(u16, reqwest::RequestBuilder)> = vec![
        (404, client.get(daemon.url("/nope"))),
        (405, client.delete(daemon.url("/metrics"))),
        (400, client.get(daemon.url("/api/v1/clusters/%ff"))),
        (414, client.get(daemon.url(&long_path))),
        (
            431,
            client
                .get(daemon.url("/healthz"))
                .header("x-filler", "y".repeat(40_000)),
        ),
        (401, client.post(daemon.url("/api/v1/reload"))),
        (
            403,
            client
                .post(daemon.url("/api/v1/reload"))
                .bearer_auth("wrong"),
        ),
    ];
    for (expected, request) in cases {
        let response = request.timeout(Duration::from_secs(10)).send().await;
        let Ok(response) = response else {
            panic!("{expected}: no response: {response:?}");
        };
        let code = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(code, expected, "{body}");
        assert!(
            kind.starts_with("application/json"),
            "{expected}: {kind} {body}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{expected}: {e}: {body}"));
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{expected}: {body}"
        );
    }
}

/// The body limit, asked on a raw connection: the head announces a body larger than the limit and the answer is
/// read before any of it is sent (a client that writes the body first may see the connection cut instead).
#[tokio::test]
async fn an_oversized_body_is_refused_with_json() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = EtcdCluster::start(1).await;
    let (daemon, _files) = daemon_with_token(&cluster, "t0ken").await;
    let mut s = connect(daemon.port).await;
    s.write_all(
        b"POST /api/v1/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\n\
          Content-Length: 100000\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("application/json"), "{text}");
    assert!(
        text.contains("{\"error\":\"request body larger than 65536 bytes\"}"),
        "{text}"
    );
}

/// Before: logs written to a file carried ANSI colour codes, and "Address already in use (os error 98)" appeared
/// twice in one message.
#[test]
fn logs_fit_their_sink() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (code, out) = support::sentinel_output(&[
        "run",
        "--endpoints",
        "127.0.0.1:2379",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--log-level",
        "debug",
    ]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("Address already in use").count(), 1, "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "colour codes in a non-terminal log: {out:?}"
    );
}

/// Before: a FIFO as a secret file blocked a reload (and SIGTERM behind it) until written to, `/dev/zero` was read
/// until the machine ran out of memory, and a token of spaces locked the API (HTTP trims header values).
#[test]
fn secret_files_must_be_small_regular_files_and_tokens_presentable() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let spaces = dir.path().join("spaces");
    std::fs::write(&spaces, "   \n").unwrap();
    let inner = dir.path().join("inner");
    std::fs::write(&inner, "tok en\n").unwrap();
    let base = "[[cluster]]\nname = \"a\"\nendpoints = [\"127.0.0.1:2379\"]\n";
    for (head, says) in [
        (
            format!("api_token_file = {:?}\n", fifo.display().to_string()),
            "not a regular file",
        ),
        (
            format!("api_token_file = {:?}\n", spaces.display().to_string()),
            "is empty",
        ),
        (
            format!("api_token_file = {:?}\n", inner.display().to_string()),
            "visible ASCII without spaces",
        ),
    ] {
        let path = dir.path().join("s.toml");
        std::fs::write(&path, format!("{head}{base}")).unwrap();
        let started = Instant::now();
        let (code, out) = support::sentinel_output(&["check-config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains(says) && out.contains("api_token_file"),
            "{out}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "blocked on {head}"
        );
    }
    let password = format!(
        "[[cluster]]\nname = \"a\"\nendpoints = [\"127.0.0.1:2379\"]\nuser = \"u\"\npassword_file = {:?}\n",
        fifo.display().to_string()
    );
    let path = dir.path().join("p.toml");
    std::fs::write(&path, password).unwrap();
    let (code, out) = support::sentinel_output(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("password_file") && out.contains("not a regular file"),
        "{out}"
    );
}
