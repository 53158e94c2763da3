//! A helper server of the tests (Prometheus, Alertmanager, moto's S3) on a free loopback port, in a temp dir
//! named `etcd-sentinel-e2e-*`, killed with the test (and by the kernel if the test process dies first).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_ports;

/// What to start: the program, its configuration file (written as `config.yml` in its dir), the path that
/// answers 2xx once it is ready, extra environment, and its arguments for a dir and a port.
pub struct Launch<'a> {
    pub bin: &'a str,
    pub config: Option<&'a str>,
    pub ready: &'a str,
    pub env: &'a [(&'a str, &'a str)],
}

/// A running server, its URL and its log.
pub struct Server {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub async fn start(launch: Launch<'_>, args: impl Fn(&Path, u16) -> Vec<String>) -> Server {
        // A port taken between choosing it and the server binding it: start again on another.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("etcd-sentinel-e2e-")
                .tempdir()
                .expect("temp dir");
            if let Some(config) = launch.config {
                std::fs::write(dir.path().join("config.yml"), config).expect("write config");
            }
            let port = free_ports(1)[0];
            let log = dir.path().join("server.log");
            let mut cmd = Command::new(launch.bin);
            cmd.args(args(dir.path(), port))
                .envs(launch.env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"));
            // SAFETY: prctl is async-signal-safe; the server dies with the test thread that started it.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (scripts/install-deps installs it): {e}",
                    launch.bin
                )
            });
            let mut server = Server {
                child,
                url: format!("http://127.0.0.1:{port}"),
                dir,
                log,
            };
            if server.wait_ready(launch.ready).await {
                return server;
            }
        }
        panic!("{} did not start on three ports", launch.bin);
    }

    /// Whether it became ready (false: it exited, e.g. its port was taken).
    async fn wait_ready(&mut self, path: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(r) = client
                .get(format!("{}{path}", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("not ready within 30s:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
