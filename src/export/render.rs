//! The CLI's rendering of a view: one table with what etcdctl needs four for, fitted to the terminal, or the JSON
//! contract.

mod columns;
mod wrap;

use comfy_table::{Cell, ContentArrangement, Table};

use crate::view::{ClusterView, EndpointState, WarningKind};
use columns::{COLUMNS, Column};

/// No borders, one line under the header: compact, and still easy to read in a terminal or a log. Only the header
/// line: with any vertical component (even a header intersection) comfy-table puts a separator between columns,
/// which would make every gap one wider than `GAP`.
const HEADER_LINE_ONLY: &str = "     ═             ";

/// How to draw the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableOptions {
    /// Columns to fit into (the terminal's, or `$COLUMNS`); `None`: no limit, every column at its natural width.
    pub width: Option<usize>,
    /// Colour the health cells (a terminal); colour never changes a width.
    pub color: bool,
    /// Every column at its natural width and nothing wrapped, whatever the width (`-w wide`).
    pub wide: bool,
}

/// Spaces between two columns.
const GAP: usize = 2;

/// Below this, an ERROR column is too narrow to read (a few words a line): the errors go under the table.
const MIN_ERROR_WIDTH: usize = 24;

/// Which columns a table shows and how its free text (ERROR) fits.
struct Layout {
    columns: Vec<&'static Column>,
    /// The wrapping column (ERROR) wraps at this width; `None`: each of its cells on one line.
    wrap_at: Option<usize>,
    /// The wrapping column is left out of the grid and its texts printed under the table.
    below: Option<&'static Column>,
    /// Headers of the default columns left out because even the short cells did not fit.
    left_out: Vec<&'static str>,
}

/// Natural width of a column: its header or its widest cell, whichever is wider (a wrapping cell on one line).
fn natural_width(column: &Column, endpoints: &[EndpointState]) -> usize {
    endpoints
        .iter()
        .map(|e| wrap::width(&wrap::one_line(&column.text(e))))
        .fold(wrap::width(column.header), usize::max)
}

fn grid_width(widths: &[usize]) -> usize {
    widths.iter().sum::<usize>() + GAP * widths.len().saturating_sub(1)
}

/// The layout rule. Columns keep the order of `COLUMNS`; the default table leaves out an ERROR column with no error
/// in it. Without a width, or with `wide`, every column is at its natural width and nothing wraps. With a width:
/// 1. the short columns (all but ERROR) keep their natural width: numbers, names and single words are unreadable
///    once broken, and together they fit 80 columns with ordinary endpoint URLs;
/// 2. if even they do not fit (very long endpoint URLs), default columns are left out, lowest drop rank first,
///    until they do (or only ENDPOINT and HEALTH are left), and a line under the table says which;
/// 3. ERROR takes the width that is left: whole if its texts fit; wrapped at word boundaries if at least
///    `MIN_ERROR_WIDTH` columns are left and no single word is wider than that; or else the errors are printed
///    under the table, one per endpoint, wrapped to the whole width with a hanging indent.
fn layout(endpoints: &[EndpointState], options: &TableOptions) -> Layout {
    let mut columns: Vec<&'static Column> = COLUMNS
        .iter()
        .filter(|c| options.wide || c.in_default())
        .collect();
    let has_text = |c: &Column| endpoints.iter().any(|e| !c.text(e).trim().is_empty());
    // An ERROR column with nothing in it says nothing; `wide` shows it anyway (every column, always the same).
    let mut free = columns.iter().copied().find(|c| c.wraps);
    if !options.wide && !free.is_some_and(has_text) {
        columns.retain(|c| !c.wraps);
        free = None;
    }
    let mut layout = Layout {
        columns,
        wrap_at: None,
        below: None,
        left_out: Vec::new(),
    };
    let Some(width) = options.width.filter(|_| !options.wide) else {
        return layout;
    };
    let fixed_width = |columns: &[&'static Column]| {
        let widths: Vec<usize> = columns
            .iter()
            .filter(|c| !c.wraps)
            .map(|c| natural_width(c, endpoints))
            .collect();
        grid_width(&widths)
    };
    while fixed_width(&layout.columns) > width {
        let lowest = layout
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((c.drop_rank()?, i)))
            .min();
        let Some((_, i)) = lowest else {
            break;
        };
        layout.left_out.push(layout.columns.remove(i).header);
    }
    let Some(free) = free else {
        return layout;
    };
    let room = width.saturating_sub(fixed_width(&layout.columns) + GAP);
    if natural_width(free, endpoints) <= room {
        return layout;
    }
    let longest = endpoints
        .iter()
        .map(|e| wrap::longest_word(&free.text(e)))
        .max()
        .unwrap_or(0);
    if room >= MIN_ERROR_WIDTH && longest <= room {
        layout.wrap_at = Some(room);
    } else {
        layout.columns.retain(|c| !c.wraps);
        layout.below = Some(free);
    }
    layout
}

/// The grid itself: a header, a line under it, one row per endpoint; no borders, `GAP` spaces between columns.
fn grid(view: &ClusterView, layout: &Layout, color: bool) -> String {
    let mut table = Table::new();
    table
        .load_preset(HEADER_LINE_ONLY)
        // The layout has fitted every cell already; comfy-table must not split anything (it would split words).
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(layout.columns.iter().map(|c| c.header));
    if color {
        // Only the text: padding stays outside the escape codes.
        table.enforce_styling().style_text_only();
    } else {
        table.force_no_tty();
    }
    for e in &view.endpoints {
        table.add_row(layout.columns.iter().map(|c| {
            // One line, as `natural_width` measured it, unless the layout made room to wrap it.
            let text = c.text(e);
            let text = match (c.wraps, layout.wrap_at) {
                (true, Some(at)) => wrap::wrap(&text, at, "", "").join("\n"),
                _ => wrap::one_line(&text),
            };
            match (c.color)(e).filter(|_| color) {
                Some(fg) => Cell::new(text).fg(fg),
                None => Cell::new(text),
            }
        }));
    }
    let last = layout.columns.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        let right = if i == last { 0 } else { GAP as u16 };
        column.set_padding((0, right));
    }
    table.trim_fmt()
}

/// The table: the verdict, one row per endpoint, then the warnings; every line fitted to `options.width`.
pub fn table(view: &ClusterView, options: &TableOptions) -> String {
    // Wide ignores the width: a table wider than the terminal anyway is read with `less -S` or a pipe, where
    // wrapped lines only get in the way.
    let max = options
        .width
        .filter(|_| !options.wide)
        .unwrap_or(usize::MAX);
    let mut lines: Vec<String> = Vec::new();
    let add = |lines: &mut Vec<String>, text: &str, first: &str, rest: &str| {
        lines.extend(wrap::wrap(&wrap::printable(text), max, first, rest));
    };

    let verdict = if view.healthy { "HEALTHY" } else { "UNHEALTHY" };
    let leader = view.leader().map_or_else(
        || {
            view.leader_id
                .map_or_else(|| "none".to_string(), |id| id.to_string())
        },
        |m| format!("{} ({})", m.display_name(), m.id),
    );
    let q = &view.quorum;
    let quorum = if view.members.is_empty() {
        "membership unknown (no member answered)".to_string()
    } else {
        let tolerance = q.tolerance_text();
        let stale = if view.members_stale {
            " (member list as last read)"
        } else {
            ""
        };
        format!(
            "quorum {}/{} voting members healthy (needs {}), failure tolerance {tolerance}{stale}",
            q.healthy_voting_members, q.voting_members, q.quorum_size
        )
    };
    let cluster_id = view
        .cluster_id
        .map_or_else(|| "-".to_string(), |id| id.to_string());
    add(
        &mut lines,
        &format!("cluster {} ({cluster_id}): {verdict}", view.cluster),
        "",
        "  ",
    );
    add(&mut lines, &format!("leader {leader}, {quorum}"), "", "  ");
    if let Some(c) = &view.consistency {
        add(
            &mut lines,
            &format!("consistency {}: {}", c.state.as_str(), c.message),
            "",
            "  ",
        );
    }
    if let Some(line) = upgrade_line(view) {
        add(&mut lines, &line, "", "  ");
    }

    let layout = layout(&view.endpoints, options);
    let grid = grid(view, &layout, options.color);
    lines.extend(grid.lines().map(str::to_string));
    if !layout.left_out.is_empty() {
        add(
            &mut lines,
            &format!(
                "(left out to fit {max} columns: {}; -w wide shows every column)",
                layout.left_out.join(", ")
            ),
            "",
            " ",
        );
    }
    if let Some(column) = layout.below {
        add(&mut lines, "errors:", "", "");
        for e in &view.endpoints {
            let text = column.text(e);
            if !text.trim().is_empty() {
                add(
                    &mut lines,
                    &format!("{}: {text}", e.endpoint),
                    "  ",
                    "      ",
                );
            }
        }
    }
    if !view.warnings.is_empty() {
        add(&mut lines, "warnings:", "", "");
        for w in &view.warnings {
            add(
                &mut lines,
                &format!("[{}] {}", w.kind.as_str(), w.message),
                "  ",
                "      ",
            );
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Whether the cluster may be upgraded to the next minor version, in one line: what stands in the way (the
/// warnings say the details), `ready` with the version every member runs, or `unknown` while some member's
/// version is not known. `None` when no version is known at all.
fn upgrade_line(view: &ClusterView) -> Option<String> {
    let ours = || view.endpoints.iter().filter(|e| !view.is_foreign(e));
    // Without blockers there is no version skew: any member's version is every member's.
    let version = ours().find_map(|e| e.version.as_deref())?;
    let mut blockers: Vec<&str> = Vec::new();
    for w in &view.warnings {
        let what = match w.kind {
            WarningKind::KnownBadVersion => "a version with a known defect",
            WarningKind::UpgradeNotReady => "a version to upgrade (patch) before the next minor",
            WarningKind::VersionSkew => "members on different versions",
            WarningKind::LearnerPresent => "a learner not promoted",
            WarningKind::MembershipDrift => "members that disagree about the membership",
            WarningKind::DataInconsistent => "members that hold different data",
            _ => continue,
        };
        if !blockers.contains(&what) {
            blockers.push(what);
        }
    }
    // Members no endpoint reached this poll (not probed, or down) have no version known either.
    let mut silent: Vec<String> = ours()
        .filter(|e| e.version.is_none())
        .map(|e| e.member_name.clone().unwrap_or_else(|| e.endpoint.clone()))
        .collect();
    for m in &view.members {
        let answered = ours().any(|e| e.member_id == Some(m.id) && e.version.is_some());
        let name = m.display_name();
        if !answered && !silent.contains(&name) {
            silent.push(name);
        }
    }
    Some(if !blockers.is_empty() {
        format!(
            "upgrade readiness: not ready: {} (see warnings)",
            blockers.join(", ")
        )
    } else if !silent.is_empty() || !view.healthy {
        let why = if silent.is_empty() {
            "the cluster is not healthy".to_string()
        } else {
            format!("no version known for {}", silent.join(", "))
        };
        format!("upgrade readiness: unknown ({why})")
    } else {
        format!("upgrade readiness: ready (every member runs {version})")
    })
}

pub fn json(view: &ClusterView) -> String {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_string_pretty(view).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod table_tests;
