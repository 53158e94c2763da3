//! Hostile and careless input: pages that never end, connections that never speak, secrets that rotate, values
//! that make no sense. Each test is a failure a user saw on an earlier main.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::EtcdCluster;

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
    let body: Vec<u8> = line.iter().copied().cycle().take(line.len() * 2600).collect();
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
        assert_eq!(e["healthy"], true, "{kind:?}: health does not depend on /metrics");
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
        eprintln!("HOSTILE endless {kind:?}: peak RSS {} KiB, {took:?}", max_rss_kib);
    }
}
