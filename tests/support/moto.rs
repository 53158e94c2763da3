//! moto's S3-compatible server on a free loopback port (`scripts/moto-server`), killed with the test. Without
//! authentication it accepts any credentials (the S3 round trip); with it, every request needs credentials that
//! its IAM knows, and none do: what wrong credentials look like.

use super::server::{Launch, Server};

pub struct Moto {
    /// Held for its drop, which stops moto.
    server: Server,
    pub endpoint: String,
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
        let launch = Launch {
            bin: concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/moto-server"),
            config: None,
            ready: "/moto-api/",
            env: if auth {
                &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]
            } else {
                &[]
            },
        };
        let server = Server::start(launch, |_, port| {
            vec![
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ]
        })
        .await;
        Moto {
            endpoint: server.url.clone(),
            server,
        }
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
