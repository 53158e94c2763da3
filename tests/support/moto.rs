//! moto's S3-compatible server on a free loopback port (`scripts/moto-server`), killed with the test. Without
//! authentication it accepts any credentials (the S3 round trip); with it, every request needs credentials that
//! its IAM knows, and none do: what wrong credentials look like.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_ports;

pub struct Moto {
    child: Child,
    pub endpoint: String,
    log: tempfile::NamedTempFile,
}

impl Moto {
    pub async fn start() -> Moto {
        Moto::start_with(false).await
    }

    /// A server that refuses every request's credentials.
    pub async fn refusing_credentials() -> Moto {
        Moto::start_with(true).await
    }

    async fn start_with(auth: bool) -> Moto {
        // A port taken between choosing it and moto binding it: start again on another.
        for _ in 0..3 {
            let port = free_ports(1)[0];
            let log = tempfile::NamedTempFile::new().expect("moto log");
            let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/moto-server"));
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.reopen().expect("log"))
                .stderr(log.reopen().expect("log"));
            if auth {
                cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
            }
            // SAFETY: prctl is async-signal-safe; moto dies with the test thread that started it.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .expect("start moto (scripts/install-deps installs moto[server])");
            let mut moto = Moto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
                log,
            };
            if moto.wait_up().await {
                return moto;
            }
        }
        panic!("moto did not start on three ports");
    }

    /// Whether it answers (false: it exited, e.g. its port was taken).
    async fn wait_up(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if client
                .get(format!("{}/moto-api/", self.endpoint))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "moto did not answer within 30s:\n{}",
            std::fs::read_to_string(self.log.path()).unwrap_or_default()
        );
    }

    /// Creates a bucket (path style, unsigned: moto without authentication takes it).
    pub async fn create_bucket(&self, name: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .expect("create bucket");
        assert!(
            r.status().is_success(),
            "create bucket {name}: {}",
            r.status()
        );
    }

    /// Writes an object directly (to plant a foreign or damaged one).
    pub async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}/{key}", self.endpoint))
            .body(body)
            .send()
            .await
            .expect("put object");
        assert!(r.status().is_success(), "put {key}: {}", r.status());
    }

    /// Every key in the bucket (an unsigned listing, which moto without authentication answers).
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let text = reqwest::Client::new()
            .get(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .expect("list bucket")
            .text()
            .await
            .expect("listing");
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// An object's bytes (of one uploaded with signed requests: moto refuses anonymous reads of the others).
    pub async fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let r = reqwest::Client::new()
            .get(format!("{}/{bucket}/{key}", self.endpoint))
            .send()
            .await
            .expect("get object");
        if r.status().is_success() {
            Some(r.bytes().await.expect("body").to_vec())
        } else {
            None
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
