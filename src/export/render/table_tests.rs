//! The table and the JSON as contracts: golden files for fixed views, and the rules every table keeps (within
//! the width, no word broken, each value under its own header).

use std::collections::BTreeSet;

use super::*;
use crate::etcd::endpoint::Endpoint;
use crate::id::Id;
use crate::testing::*;
use crate::view::{Alarm, FailureKind, ProbeResult, build};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// What etcd-sentinel prints when the member's port refuses connections (taken from a real run).
const REFUSED: &str =
    "cannot connect: transport error: tcp connect error: Connection refused (os error 111)";

fn view_of(probes: &[ProbeResult]) -> ClusterView {
    build("prod", probes, polled_at())
}

/// Sizes and latencies as a small production cluster has them.
fn realistic(i: usize, p: ProbeResult) -> ProbeResult {
    let p = with_db(p, 21_495_808 + i as u64 * 4096, 12 * MIB, 2 * GIB);
    let peers: Vec<(usize, f64)> = (0..3)
        .filter(|j| *j != i)
        .map(|j| (j, 0.000_6 + 0.000_2 * j as f64))
        .collect();
    with_latencies(p, 0.002_1, 0.008_5, &peers)
}

fn healthy() -> ClusterView {
    let (members, _) = three();
    let probes: Vec<ProbeResult> = (0..3)
        .map(|i| realistic(i, healthy_probe(i, &members, 0)))
        .collect();
    view_of(&probes)
}

/// m2 is down: its port refuses connections. Its probe took 1.2 ms, which the PROBE column must show.
fn one_down() -> ClusterView {
    let (members, _) = three();
    let mut probes: Vec<ProbeResult> = (0..2)
        .map(|i| realistic(i, healthy_probe(i, &members, 0)))
        .collect();
    probes.push(ProbeResult::unreachable(
        ep(2),
        err(FailureKind::Unreachable, REFUSED),
        0.001_2,
    ));
    view_of(&probes)
}

/// Every member answers, none knows a leader: an election that does not end.
fn leaderless() -> ClusterView {
    let (members, _) = three();
    let probes: Vec<ProbeResult> = (0..3)
        .map(|i| {
            let no_leader = err(FailureKind::NoLeader, "etcdserver: no leader");
            realistic(i, read_failed(i, &members, 0, no_leader))
        })
        .collect();
    view_of(&probes)
}

/// The DB reached its 8 MiB quota: NOSPACE on every member, and m1's disk is slow too.
fn nospace() -> ClusterView {
    let (members, _) = three();
    let alarms: Vec<Alarm> = (1..=3)
        .map(|id| Alarm {
            member_id: Id(id),
            kind: "NOSPACE".into(),
        })
        .collect();
    let probes: Vec<ProbeResult> = (0..3)
        .map(|i| {
            let mut p = with_db(
                healthy_probe(i, &members, 0),
                8 * MIB + 4096,
                7 * MIB,
                8 * MIB,
            );
            p.alarms = Ok(alarms.clone());
            let fsync = if i == 1 { 0.045 } else { 0.003 };
            with_latencies(p, fsync, 0.012, &[((i + 1) % 3, 0.000_9)])
        })
        .collect();
    view_of(&probes)
}

fn views() -> [(&'static str, ClusterView); 4] {
    [
        ("healthy", healthy()),
        ("one_down", one_down()),
        ("leaderless", leaderless()),
        ("nospace", nospace()),
    ]
}

fn at(width: usize) -> TableOptions {
    TableOptions {
        width: Some(width),
        color: false,
        wide: false,
    }
}

const WIDE: TableOptions = TableOptions {
    width: None,
    color: false,
    wide: true,
};

fn snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    // src/export/snapshots/: one folder for the golden files of the export layer.
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(name, text));
}

#[test]
fn golden_tables() {
    for (name, view) in views() {
        snapshot(&format!("table_{name}_80"), &table(&view, &at(80)));
        snapshot(&format!("table_{name}_120"), &table(&view, &at(120)));
        snapshot(&format!("table_{name}_wide"), &table(&view, &WIDE));
    }
}

#[test]
fn golden_json() {
    snapshot("json_healthy", &json(&healthy()));
    snapshot("json_one_down", &json(&one_down()));
    snapshot("json_nospace", &json(&nospace()));
}

fn lines_wider_than(text: &str, width: usize) -> Vec<&str> {
    text.lines().filter(|l| wrap::width(l) > width).collect()
}

#[test]
fn every_line_fits_the_width() {
    for (name, view) in views() {
        for width in [80, 120] {
            let text = table(&view, &at(width));
            let wide = lines_wider_than(&text, width);
            assert!(wide.is_empty(), "{name} at {width}: {wide:#?}\n{text}");
        }
    }
}

/// From the header line down to the warnings: the table and the errors printed under it, not the verdict or
/// the warnings (which repeat some words of the cells and would hide a broken one).
fn table_part(text: &str) -> String {
    text.lines()
        .skip_while(|l| !l.starts_with("ENDPOINT"))
        .take_while(|l| *l != "warnings:")
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines that belong to one endpoint: its row with the row's continuation lines (indented), and its entry in
/// the errors under the table with that entry's continuation lines.
fn lines_of(part: &str, endpoint: &str) -> String {
    let mut out = Vec::new();
    let mut mine = false;
    for line in part.lines() {
        let continuation =
            line.starts_with("    ") || (line.starts_with(' ') && !line.starts_with("  http"));
        if line.starts_with(endpoint) || line.starts_with(&format!("  {endpoint}:")) {
            mine = true;
        } else if !continuation {
            mine = false;
        }
        if mine {
            out.push(line);
        }
    }
    out.join("\n")
}

#[test]
fn no_word_of_a_cell_is_broken() {
    for (name, view) in views() {
        for options in [at(80), at(120), WIDE] {
            let text = table(&view, &options);
            let part = table_part(&text);
            for e in &view.endpoints {
                // Each endpoint's own lines: a word broken in one row cannot hide behind the same word whole
                // in another row.
                let own = lines_of(&part, &e.endpoint);
                assert!(
                    own.starts_with(&e.endpoint),
                    "{name}: no row for {}\n{part}",
                    e.endpoint
                );
                let tokens: BTreeSet<&str> = own.split_whitespace().collect();
                for column in COLUMNS.iter().filter(|c| options.wide || c.in_default()) {
                    for word in (column.cell)(e).split_whitespace() {
                        assert!(
                            tokens.contains(word),
                            "{name} {options:?}: {:?} of {} for {} is not whole in\n{own}\n(table:\n{part})",
                            word,
                            column.header,
                            e.endpoint
                        );
                    }
                }
            }
        }
    }
}

/// The header line's columns: each header's text and the character offset it starts at.
fn header_offsets(header: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = header.chars().collect();
    let mut out: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ' ' {
            i += 1;
            continue;
        }
        let start = i;
        // Headers hold single spaces ("MEMBER ID"); two end them.
        while i < chars.len() && !(chars[i] == ' ' && chars.get(i + 1).is_none_or(|c| *c == ' ')) {
            i += 1;
        }
        out.push((chars[start..i].iter().collect(), start));
    }
    out
}

/// The cells of a row line, by header, cut at the header offsets.
fn cells_by_header(header: &str, row: &str) -> Vec<(String, String)> {
    let offsets = header_offsets(header);
    let chars: Vec<char> = row.chars().collect();
    offsets
        .iter()
        .enumerate()
        .map(|(i, (name, start))| {
            let end = offsets.get(i + 1).map_or(chars.len(), |(_, s)| *s);
            let cell: String = chars[(*start).min(chars.len())..end.min(chars.len())]
                .iter()
                .collect();
            (name.clone(), cell.trim().to_string())
        })
        .collect()
}

fn row_of<'a>(text: &'a str, endpoint: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(endpoint))
        .unwrap_or_else(|| panic!("no row for {endpoint} in\n{text}"))
}

fn header_of(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("ENDPOINT"))
        .expect("a header line")
}

#[test]
fn each_value_sits_under_its_own_header() {
    let view = one_down();
    let text = table(&view, &WIDE);
    let header = header_of(&text);
    let headers: Vec<String> = header_offsets(header).into_iter().map(|(h, _)| h).collect();
    assert_eq!(
        headers,
        COLUMNS.iter().map(|c| c.header).collect::<Vec<_>>(),
        "wide shows every column once, in order"
    );
    let leader = cells_by_header(header, row_of(&text, "http://127.0.0.1:2379 "));
    let down = cells_by_header(header, row_of(&text, "http://127.0.0.1:2399 "));
    let expect = |row: &[(String, String)], h: &str, v: &str| {
        let cell = &row.iter().find(|(name, _)| name == h).expect(h).1;
        assert_eq!(cell, v, "under {h}:\n{text}");
    };
    for (h, v) in [
        ("ENDPOINT", "http://127.0.0.1:2379"),
        ("MEMBER", "m0"),
        ("MEMBER ID", "0000000000000001"),
        ("HEALTH", "healthy"),
        ("ROLE", "leader"),
        ("TERM", "2"),
        ("INDEX", "100"),
        ("APPLIED", "100"),
        ("LAG", "0"),
        ("DB SIZE", "20.5 MiB"),
        ("IN USE", "12.0 MiB"),
        ("QUOTA", "2.0 GiB"),
        ("QUOTA%", "1%"),
        ("VERSION", "3.4.23"),
        ("ALARMS", "-"),
        ("WAL FSYNC p99", "2.1ms"),
        ("BACKEND COMMIT p99", "8.5ms"),
        ("PEER RTT p99", "1.0ms"),
        ("PROBE", "2.0ms"),
        ("ERROR", ""),
    ] {
        expect(&leader, h, v);
    }
    for (h, v) in [
        ("MEMBER", "m2"),
        ("HEALTH", "DOWN"),
        ("PEER RTT p99", "-"),
        ("PROBE", "1.2ms"),
        ("ERROR", REFUSED),
    ] {
        expect(&down, h, v);
    }

    // The default table too, where the error wraps: its first line starts under ERROR, the rest stay there.
    let text = table(&view, &at(120));
    let header = header_of(&text);
    let down = cells_by_header(header, row_of(&text, "http://127.0.0.1:2399 "));
    expect(&down, "HEALTH", "DOWN");
    expect(&down, "QUOTA%", "-");
    let error = &down.iter().find(|(h, _)| h == "ERROR").expect("ERROR").1;
    assert!(
        REFUSED.starts_with(error.as_str()) && error.len() > 10,
        "{text}"
    );
    let at_error = header_offsets(header).last().expect("headers").1;
    let continuation: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("http://127.0.0.1:2399 "))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .collect();
    assert!(!continuation.is_empty(), "the error wraps at 120:\n{text}");
    for line in continuation {
        assert_eq!(line.len() - line.trim_start().len(), at_error, "{text}");
    }

    // And the alarm of a NOSPACE member under ALARMS, its slow disk under WAL FSYNC p99.
    let text = table(&nospace(), &WIDE);
    let m1 = cells_by_header(header_of(&text), row_of(&text, "http://127.0.0.1:2389 "));
    expect(&m1, "ALARMS", "NOSPACE");
    expect(&m1, "WAL FSYNC p99", "45.0ms");
    expect(&m1, "QUOTA%", "100%");
}

#[test]
fn errors_go_under_the_table_when_there_is_no_room_beside_it() {
    let view = one_down();
    let narrow = table(&view, &at(80));
    assert!(!header_of(&narrow).contains("ERROR"), "{narrow}");
    let below: Vec<&str> = narrow
        .lines()
        .skip_while(|l| *l != "errors:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .collect();
    assert_eq!(
        below.first().copied(),
        Some("  http://127.0.0.1:2399: cannot connect: transport error: tcp connect error:"),
        "{narrow}"
    );
    assert!(
        below[1..].iter().all(|l| l.starts_with("      ")),
        "hanging indent: {narrow}"
    );
    // With room, the same error is in the table.
    let roomy = table(&view, &at(120));
    assert!(header_of(&roomy).ends_with("ERROR") && !roomy.contains("errors:"));
    // Without a width (a pipe), on one line in its row.
    let piped = table(&view, &TableOptions::default());
    assert!(
        row_of(&piped, "http://127.0.0.1:2399 ").ends_with(REFUSED),
        "{piped}"
    );
}

#[test]
fn long_endpoints_leave_out_columns_and_say_which() {
    let (mut members, _) = three();
    let url = |i: usize| format!("https://etcd-{i}.eu-west-1.prod.example.net:2379");
    for (i, m) in members.iter_mut().enumerate() {
        m.client_urls = vec![url(i)];
    }
    let probes: Vec<ProbeResult> = (0..3)
        .map(|i| {
            let mut p = realistic(i, healthy_probe(i, &members, 0));
            p.endpoint = Endpoint::parse(&url(i)).expect("a valid URL");
            p
        })
        .collect();
    let view = view_of(&probes);
    let text = table(&view, &at(80));
    assert!(lines_wider_than(&text, 80).is_empty(), "{text}");
    let headers: Vec<String> = header_offsets(header_of(&text))
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    // The lowest ranks go first: INDEX, DB SIZE, ROLE; what is left is whole.
    assert_eq!(
        headers,
        ["ENDPOINT", "MEMBER", "HEALTH", "LAG", "QUOTA%"],
        "{text}"
    );
    assert!(
        text.contains(
            "(left out to fit 80 columns: INDEX, DB SIZE, ROLE; -w wide shows every column)"
        ),
        "{text}"
    );
    // Wide still shows them.
    assert!(header_of(&table(&view, &WIDE)).contains("INDEX"));
    assert!(!table(&view, &at(200)).contains("left out"));
}

#[test]
fn wide_is_never_narrowed() {
    for (name, view) in views() {
        let natural = table(&view, &WIDE);
        let in_80 = table(
            &view,
            &TableOptions {
                width: Some(80),
                ..WIDE
            },
        );
        assert_eq!(natural, in_80, "{name}");
        assert!(
            lines_wider_than(&natural, 150).len() > 1,
            "{name}: {natural}"
        );
    }
}

/// The text without its ANSI escape sequences (ESC [ … final letter).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn colour_marks_health_without_moving_anything() {
    for (name, view) in views() {
        for plain in [at(80), at(120), WIDE] {
            let colored = table(
                &view,
                &TableOptions {
                    color: true,
                    ..plain
                },
            );
            assert!(colored.contains('\u{1b}'), "{name}: no colour");
            assert_eq!(
                strip_ansi(&colored),
                table(&view, &plain),
                "{name} {plain:?}"
            );
        }
    }
    let colored = table(
        &one_down(),
        &TableOptions {
            color: true,
            ..at(80)
        },
    );
    let down = row_of(&colored, "http://127.0.0.1:2399 ");
    // crossterm's red, around the word only: the padding stays plain.
    assert!(down.contains("\u{1b}[38;5;9mDOWN\u{1b}[39m "), "{down:?}");
    assert!(
        !table(&one_down(), &at(80)).contains('\u{1b}'),
        "no colour unless asked"
    );
}
