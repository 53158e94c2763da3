//! How long one member's /metrics page takes to parse (recorded etcd 3.4 page). `cargo run --release --example parse_cost`
use std::time::Instant;

fn main() {
    let text = include_str!("../tests/fixtures/etcd-3.4-metrics-after.txt");
    let rounds = 300;
    let started = Instant::now();
    for _ in 0..rounds {
        let m = etcd_sentinel::etcd::member_metrics::parse(text).expect("parse");
        std::hint::black_box(m);
    }
    let per = started.elapsed().as_secs_f64() / rounds as f64;
    println!(
        "member_metrics::parse: {:.3} ms per {} KB page",
        per * 1e3,
        text.len() / 1024
    );
}
