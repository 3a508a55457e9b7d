//! The allow-list (`talks-to`) and the report of what it refused.

use std::collections::HashSet;
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

/// Something the relay refused, reported once per sender and recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub from: GuestId,
    pub from_name: Option<String>,
    pub to: Address,
}

/// Refusals already reported, and where reports go.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    /// Sender/recipient pairs already refused, so each is reported once.
    seen: Mutex<HashSet<(GuestId, Address)>>,
    sink: Mutex<Option<mpsc::Sender<Refusal>>>,
}

impl Refusals {
    pub(super) fn report_to(&self, sink: mpsc::Sender<Refusal>) {
        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// Note that `from` was refused sending to `to`; the first time, say so.
    pub(super) fn refuse(&self, from: &Entry, to: &Address) {
        let first = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((from.id, to.clone()));
        if !first {
            return;
        }
        tracing::info!(
            "refused: {} may not send to {to}",
            from.name
                .as_deref()
                .map_or_else(|| from.id.to_string(), str::to_owned)
        );
        if let Some(sink) = &*self.sink.lock().unwrap_or_else(|e| e.into_inner()) {
            // The report is informational and bounded: when nobody reads it
            // fast enough it is dropped, the refusal itself is not.
            let _ = sink.try_send(Refusal {
                from: from.id,
                from_name: from.name.clone(),
                to: to.clone(),
            });
        }
    }
}
