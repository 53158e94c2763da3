//! Membership drift: every member answers MemberList from its own store, so members can disagree about the
//! membership (in etcd 3.5 before 3.5.20 a learner promotion could be missing from one store). The lists read
//! in one poll are compared with the one most members give; each member whose list differs is named with the
//! difference. Pure.

use std::collections::BTreeMap;

use crate::id::Id;

use super::{Member, ProbeResult};

/// What one member's list says of one member, normalised (URL order does not matter).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
    is_learner: bool,
}

type List = BTreeMap<Id, Entry>;

fn normalise(members: &[Member]) -> List {
    members
        .iter()
        .map(|m| {
            let mut peer_urls = m.peer_urls.clone();
            peer_urls.sort();
            let mut client_urls = m.client_urls.clone();
            client_urls.sort();
            let entry = Entry {
                name: m.name.clone(),
                peer_urls,
                client_urls,
                is_learner: m.is_learner,
            };
            (m.id, entry)
        })
        .collect()
}

/// One member whose member list differs from the majority's; or, when no list is held by a majority, all of
/// them at once (`member_id` and `endpoint` are then `None`: no member can be blamed).
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    pub member_id: Option<Id>,
    pub endpoint: Option<String>,
    /// How many of the members compared give the majority's list, and how many were compared.
    pub agreeing: usize,
    pub compared: usize,
    /// What it says against what the majority says, one difference each.
    pub differences: Vec<String>,
}

/// Compares the member lists of the probes of this poll that answered for the cluster: stale rows (the last
/// poll's) are left out, they may predate a change the others have applied.
pub(super) fn compare(probes: &[ProbeResult], cluster_id: Option<Id>) -> Vec<Drift> {
    let lists: Vec<(Id, String, List)> = probes
        .iter()
        .filter(|p| !p.stale && p.answers_for(cluster_id))
        .filter_map(|p| {
            let id = p.status.as_ref().ok()?.member_id;
            let members = p.members.as_ref().ok()?;
            Some((id, p.endpoint.url(), normalise(members)))
        })
        .collect();
    // One list per member (a member reached through two endpoints answers twice).
    let mut seen = std::collections::BTreeSet::new();
    let lists: Vec<(Id, String, List)> = lists
        .into_iter()
        .filter(|(id, _, _)| seen.insert(*id))
        .collect();
    if lists.len() < 2 {
        return Vec::new();
    }
    // The list most members give, ties to the first read.
    let mut counts: Vec<(&List, usize)> = Vec::new();
    for (_, _, list) in &lists {
        match counts.iter_mut().find(|(l, _)| *l == list) {
            Some((_, n)) => *n += 1,
            None => counts.push((list, 1)),
        }
    }
    let agreeing = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let Some(&(majority, _)) = counts.iter().find(|(_, n)| *n == agreeing) else {
        return Vec::new();
    };
    if 2 * agreeing <= lists.len() {
        // No majority (two members that disagree, or three different lists): which one is right cannot be told;
        // each list is set against the first most common one.
        let holder = lists
            .iter()
            .find(|(_, _, l)| l == majority)
            .map_or_else(String::new, |(id, _, _)| label(majority, *id));
        let differences = lists
            .iter()
            .filter(|(_, _, list)| list != majority)
            .map(|(id, _, list)| {
                format!(
                    "{} against {holder}: {}",
                    label(majority, *id),
                    differences(list, majority).join(", ")
                )
            })
            .collect();
        return vec![Drift {
            member_id: None,
            endpoint: None,
            agreeing,
            compared: lists.len(),
            differences,
        }];
    }
    lists
        .iter()
        .filter(|(_, _, list)| list != majority)
        .map(|(id, endpoint, list)| Drift {
            member_id: Some(*id),
            endpoint: Some(endpoint.clone()),
            agreeing,
            compared: lists.len(),
            differences: differences(list, majority),
        })
        .collect()
}

/// A member's name as `list` gives it, or its id while it has none.
fn name(list: &List, id: Id) -> String {
    list.get(&id)
        .map(|e| e.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id.to_string())
}

/// `name (id)`, or the id alone for a member without a name.
fn label(list: &List, id: Id) -> String {
    match list.get(&id).filter(|e| !e.name.is_empty()) {
        Some(e) => format!("{} ({id})", e.name),
        None => id.to_string(),
    }
}

/// What `theirs` says that `majority` does not, in words.
fn differences(theirs: &List, majority: &List) -> Vec<String> {
    let mut out = Vec::new();
    for (id, m) in majority {
        match theirs.get(id) {
            None => out.push(format!("lacks member {}", label(majority, *id))),
            Some(t) if t != m => {
                let who = name(majority, *id);
                if t.is_learner != m.is_learner {
                    let role = |learner: bool| if learner { "a learner" } else { "a voter" };
                    out.push(format!(
                        "member {who}: {} here, {} for the majority",
                        role(t.is_learner),
                        role(m.is_learner)
                    ));
                }
                if t.name != m.name {
                    out.push(format!(
                        "member {id}: name {:?} here, {:?} for the majority",
                        t.name, m.name
                    ));
                }
                if t.peer_urls != m.peer_urls {
                    out.push(format!(
                        "member {who}: peer URLs {} here, {} for the majority",
                        t.peer_urls.join(","),
                        m.peer_urls.join(",")
                    ));
                }
                if t.client_urls != m.client_urls {
                    out.push(format!(
                        "member {who}: client URLs {} here, {} for the majority",
                        t.client_urls.join(","),
                        m.client_urls.join(",")
                    ));
                }
            }
            Some(_) => {}
        }
    }
    for (id, t) in theirs {
        if !majority.contains_key(id) {
            let name = if t.name.is_empty() {
                "(unstarted)"
            } else {
                &t.name
            };
            out.push(format!(
                "lists member {name} ({id}) that the majority does not"
            ));
        }
    }
    out
}
