//! The allow-list (`talks-to`) and the report of what it refused.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use wasmproc_protocol::{Address, GuestId};

use super::Entry;

/// Whether `from` may send to `target`, which means the guests `resolved`.
pub(super) fn allows(from: &Entry, target: &Address, resolved: &[Arc<Entry>]) -> bool {
    let Some(list) = &from.talks_to else {
        return true;
    };
    let listed = |name: &str| list.iter().any(|n| n == name);
    // A listed group covers its members, by name or id.
    let member_of_listed = || {
        !resolved.is_empty()
            && resolved.iter().all(|t| {
                t.name.as_deref().is_some_and(listed) || t.group.as_deref().is_some_and(listed)
            })
    };
    match target {
        Address::Parent => true,
        Address::Name(name) => listed(name) || member_of_listed(),
        Address::Group(group) | Address::Broadcast(group) => listed(group),
        Address::Id(_) => member_of_listed(),
    }
}

/// Something the relay refused, reported once per sender and recipient,
/// for the first [`REPORTED_PER_SENDER`] recipients of each sender; past
/// those, counted and summed up when the sender ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub from: GuestId,
    pub from_name: Option<String>,
    pub to: Refused,
}

/// Whom a [`Refusal`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// One address (its first refusal).
    Address(Address),
    /// The sends to addresses past the first [`REPORTED_PER_SENDER`].
    Others { sends: u64 },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Address(to) => write!(f, "{to}"),
            Refused::Others { sends } => write!(f, "other addresses ({sends} more sends)"),
        }
    }
}

/// Distinct recipients whose refusal is reported one by one, per sender.
pub const REPORTED_PER_SENDER: usize = 64;

/// Refusals already reported, and where reports go. What it keeps per
/// sender is bounded, and forgotten when the sender ends.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    seen: Mutex<HashMap<GuestId, Seen>>,
    sink: Mutex<Option<mpsc::Sender<Refusal>>>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Recipients already reported (at most [`REPORTED_PER_SENDER`]).
    reported: HashSet<Address>,
    /// Refused sends to recipients beyond those.
    more_sends: u64,
}

impl Refusals {
    pub(super) fn report_to(&self, sink: mpsc::Sender<Refusal>) {
        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// Note that `from` was refused sending to `to`; the first time, say so.
    pub(super) fn refuse(&self, from: &Entry, to: &Address) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let seen = seen.entry(from.id).or_default();
            if seen.reported.contains(to) {
                return;
            }
            if seen.reported.len() >= REPORTED_PER_SENDER {
                seen.more_sends += 1;
                return;
            }
            seen.reported.insert(to.clone());
        }
        self.report(from.id, from.name.clone(), Refused::Address(to.clone()));
    }

    /// The sender `id` has ended: forget it, and sum up what was not
    /// reported one by one.
    pub(super) fn forget(&self, id: GuestId, name: Option<String>) {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(seen) = seen
            && seen.more_sends > 0
        {
            let sends = seen.more_sends;
            self.report(id, name, Refused::Others { sends });
        }
    }

    fn report(&self, from: GuestId, from_name: Option<String>, to: Refused) {
        tracing::info!(
            "refused: {} may not send to {to}",
            from_name
                .as_deref()
                .map_or_else(|| from.to_string(), str::to_owned)
        );
        if let Some(sink) = &*self.sink.lock().unwrap_or_else(|e| e.into_inner()) {
            // The report is informational and bounded: when nobody reads it
            // fast enough it is dropped, the refusal itself is not.
            let _ = sink.try_send(Refusal {
                from,
                from_name,
                to,
            });
        }
    }
}
