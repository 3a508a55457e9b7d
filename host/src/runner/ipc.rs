//! The `wasmproc:guest/ipc` interface, implemented for guests: version
//! 0.3, and the versions before it for the guests built against them.
//!
//! 0.3 and 0.2 differ only in one reason of an `undeliverable` item,
//! `unknown-outcome` (0.3): one implementation serves both (`serve_ipc!`),
//! and a 0.2 guest is never shown an item with that reason (the host has
//! counted and logged it already). 0.1, from before calls, sees a call as a
//! plain message and is served by the 0.2 implementation.
//!
//! This is the one `bindgen!` of the host: it reads the same `wit/` folder
//! the guests build from.

use std::sync::Arc;
use std::time::Duration;

use wasmproc_protocol as proto;
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{DynPollable, Pollable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::link::Link;

wasmtime::component::bindgen!({
    inline: "
        package wasmproc:runner;
        world runner {
            include wasmproc:guest/guest@0.3.0;
            import wasmproc:guest/ipc@0.2.0;
            import wasmproc:guest/ipc@0.1.0;
        }
    ",
    path: "../wit",
    world: "wasmproc:runner/runner",
    with: {
        "wasi": wasmtime_wasi::p2::bindings,
        "wasmproc:guest/ipc@0.3.0.pending-call": PendingCall,
        "wasmproc:guest/ipc@0.2.0.pending-call": PendingCall,
    },
    imports: { default: async | trappable },
});

use self::wasmproc::guest0_1_0::ipc as v0_1;
use self::wasmproc::guest0_2_0::ipc as v0_2;
use self::wasmproc::guest0_3_0::ipc::{self, UndeliverableReason};

/// What a component guest's store holds.
pub struct GuestState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub link: Arc<Link>,
    pub limiter: super::guest::MemoryLimiter,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Add every version of `ipc` to a linker that already has WASI.
///
/// # Errors
///
/// When the linker already defines the interface.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    ipc::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |state| state)?;
    v0_2::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |state| state)?;
    v0_1::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |state| state)
}

/// A call in flight, behind a guest's `pending-call` handle.
pub struct PendingCall {
    link: Arc<Link>,
    call: u64,
}

#[wasmtime_wasi::async_trait]
impl Pollable for PendingCall {
    async fn ready(&mut self) {
        self.link.call_ready(self.call).await;
    }
}

/// The pollable behind `subscribe`: ready while the inbox holds an item.
struct InboxReady(Arc<Link>);

#[wasmtime_wasi::async_trait]
impl Pollable for InboxReady {
    async fn ready(&mut self) {
        self.0.ready().await;
    }
}

/// Wait for the next inbox item that `shown` lets this guest's version see
/// (what it cannot see is taken and passed over).
async fn recv_as<T>(link: &Link, shown: fn(proto::InboxItem) -> Option<T>) -> T {
    loop {
        if let Some(item) = shown(link.recv().await) {
            return item;
        }
    }
}

/// The next inbox item `shown` lets through, if one is waiting.
fn try_recv_as<T>(link: &Link, shown: fn(proto::InboxItem) -> Option<T>) -> Option<T> {
    std::iter::from_fn(|| link.try_recv()).find_map(shown)
}

/// Wait at most `timeout_ns` for the next item `shown` lets through.
async fn recv_timeout_as<T>(
    link: &Link,
    timeout_ns: u64,
    shown: fn(proto::InboxItem) -> Option<T>,
) -> Option<T> {
    let wait = recv_as(link, shown);
    tokio::time::timeout(Duration::from_nanos(timeout_ns), wait)
        .await
        .ok()
}

/// `ipc` of version `$ipc` (0.3 or 0.2), served for guests: the two declare
/// the same functions and types, and differ only in the reasons `$reason`
/// can name.
macro_rules! serve_ipc {
    ($ipc:ident, $reason:path) => {
        impl $ipc::HostPendingCall for GuestState {
            async fn subscribe(
                &mut self,
                call: Resource<PendingCall>,
            ) -> wasmtime::Result<Resource<DynPollable>> {
                wasmtime_wasi::p2::subscribe(&mut self.table, call)
            }

            async fn take_reply(
                &mut self,
                call: Resource<PendingCall>,
            ) -> wasmtime::Result<Option<Result<Vec<u8>, $ipc::CallError>>> {
                let call = self.table.get(&call)?.call;
                let answer = self.link.take_answer(call).await;
                Ok(answer.map(|answer| answer.map_err(Into::into)))
            }

            async fn drop(&mut self, call: Resource<PendingCall>) -> wasmtime::Result<()> {
                let call = self.table.delete(call)?;
                call.link.abandon(call.call).await;
                Ok(())
            }
        }

        impl $ipc::Host for GuestState {
            async fn send(
                &mut self,
                to: $ipc::Address,
                payload: Vec<u8>,
            ) -> wasmtime::Result<Result<(), $ipc::SendError>> {
                let limit = self.link.limits.max_message_size;
                if payload.len() as u64 > limit {
                    return Ok(Err($ipc::SendError::TooLarge(limit)));
                }
                Ok(self
                    .link
                    .queue_send(to.into(), payload)
                    .await
                    .map_err(|_| $ipc::SendError::HostGone))
            }

            async fn call(
                &mut self,
                to: $ipc::Address,
                payload: Vec<u8>,
                timeout_ms: u64,
            ) -> wasmtime::Result<Result<Vec<u8>, $ipc::CallError>> {
                let answer = self.link.call(to.into(), payload, timeout_ms).await;
                Ok(answer.map_err(Into::into))
            }

            async fn send_request(
                &mut self,
                to: $ipc::Address,
                payload: Vec<u8>,
                timeout_ms: u64,
            ) -> wasmtime::Result<Result<Resource<PendingCall>, $ipc::CallError>> {
                let call = match self.link.start_call(to.into(), payload, timeout_ms).await {
                    Ok(call) => call,
                    Err(error) => return Ok(Err(error.into())),
                };
                let link = self.link.clone();
                Ok(Ok(self.table.push(PendingCall { link, call })?))
            }

            async fn reply(
                &mut self,
                request: u64,
                payload: Vec<u8>,
            ) -> wasmtime::Result<Result<(), $ipc::ReplyError>> {
                let replied = self.link.reply(proto::RequestId(request), payload).await;
                Ok(replied.map_err(Into::into))
            }

            async fn recv(&mut self) -> wasmtime::Result<$ipc::InboxItem> {
                Ok(recv_as(&self.link, $ipc::InboxItem::shown).await)
            }

            async fn try_recv(&mut self) -> wasmtime::Result<Option<$ipc::InboxItem>> {
                // A guest that polls between pieces of work lets the reader in.
                self.link.turn().await;
                Ok(try_recv_as(&self.link, $ipc::InboxItem::shown))
            }

            async fn recv_timeout(
                &mut self,
                timeout_ns: u64,
            ) -> wasmtime::Result<Option<$ipc::InboxItem>> {
                Ok(recv_timeout_as(&self.link, timeout_ns, $ipc::InboxItem::shown).await)
            }

            async fn subscribe(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
                let ready = self.table.push(InboxReady(self.link.clone()))?;
                wasmtime_wasi::p2::subscribe(&mut self.table, ready)
            }

            async fn monitor(&mut self, name: String) -> wasmtime::Result<()> {
                // If the host is gone there is nobody to watch for; the
                // reader task is about to end this process anyway.
                let _ = self
                    .link
                    .queue(&proto::RunnerToHost::Monitor { name })
                    .await;
                Ok(())
            }

            async fn max_message_size(&mut self) -> wasmtime::Result<u64> {
                Ok(self.link.limits.max_message_size)
            }

            async fn self_id(&mut self) -> wasmtime::Result<u64> {
                Ok(self.link.id.0)
            }

            async fn self_name(&mut self) -> wasmtime::Result<Option<String>> {
                Ok(self.link.name.clone())
            }
        }

        impl From<$ipc::Address> for proto::Address {
            fn from(address: $ipc::Address) -> Self {
                use $ipc::Address as A;
                match address {
                    A::Parent | A::Id(0) => proto::Address::Parent,
                    A::Id(id) => proto::Address::Id(proto::GuestId(id)),
                    A::Name(name) => proto::Address::Name(name),
                    A::Group(group) => proto::Address::Group(group),
                    A::Broadcast(group) => proto::Address::Broadcast(group),
                }
            }
        }

        impl From<proto::Address> for $ipc::Address {
            fn from(address: proto::Address) -> Self {
                use $ipc::Address as A;
                match address {
                    proto::Address::Parent => A::Parent,
                    proto::Address::Id(id) => A::Id(id.0),
                    proto::Address::Name(name) => A::Name(name),
                    proto::Address::Group(group) => A::Group(group),
                    proto::Address::Broadcast(group) => A::Broadcast(group),
                }
            }
        }

        impl From<proto::CallError> for $ipc::CallError {
            fn from(error: proto::CallError) -> Self {
                use $ipc::CallError as E;
                match error {
                    proto::CallError::Timeout => E::Timeout,
                    proto::CallError::UnknownRecipient => E::UnknownRecipient,
                    proto::CallError::CalleeExited(reason) => E::CalleeExited(reason),
                    proto::CallError::NotAllowed => E::NotAllowed,
                    proto::CallError::MailboxFull => E::MailboxFull,
                    proto::CallError::TooLarge => E::TooLarge,
                    proto::CallError::HostGone => E::HostGone,
                    proto::CallError::InvalidTimeout => E::InvalidTimeout,
                    proto::CallError::TooManyCalls => E::TooManyCalls,
                }
            }
        }

        impl From<proto::ReplyError> for $ipc::ReplyError {
            fn from(error: proto::ReplyError) -> Self {
                use $ipc::ReplyError as E;
                match error {
                    proto::ReplyError::Expired => E::Expired,
                    proto::ReplyError::AlreadyReplied => E::AlreadyReplied,
                    proto::ReplyError::UnknownRequest => E::UnknownRequest,
                }
            }
        }

        impl $ipc::InboxItem {
            /// `item` as this version shows it; `None` for an item it
            /// cannot (a reason it does not know).
            fn shown(item: proto::InboxItem) -> Option<Self> {
                Some(match item {
                    proto::InboxItem::Message {
                        from,
                        from_name,
                        request,
                        payload,
                    } => $ipc::InboxItem::Message($ipc::Message {
                        from_id: from.0,
                        from_name,
                        request: request.map(|r| r.0),
                        payload,
                    }),
                    proto::InboxItem::Undeliverable {
                        to,
                        reason,
                        payload_len,
                    } => $ipc::InboxItem::Undeliverable($ipc::Undeliverable {
                        to: to.into(),
                        reason: $reason(reason)?,
                        payload_len,
                    }),
                    proto::InboxItem::Down { id, name, reason } => {
                        $ipc::InboxItem::Down($ipc::Down {
                            id: id.0,
                            name,
                            reason,
                        })
                    }
                    proto::InboxItem::Shutdown => $ipc::InboxItem::Shutdown,
                })
            }
        }
    };
}

serve_ipc!(ipc, v0_3_reason);
serve_ipc!(v0_2, v0_2_reason);

/// A reason as 0.3 names it: every one.
fn v0_3_reason(reason: proto::UndeliverableReason) -> Option<UndeliverableReason> {
    Some(match reason {
        proto::UndeliverableReason::UnknownRecipient => UndeliverableReason::UnknownRecipient,
        proto::UndeliverableReason::RecipientExited => UndeliverableReason::RecipientExited,
        proto::UndeliverableReason::NotAllowed => UndeliverableReason::NotAllowed,
        proto::UndeliverableReason::MailboxFull => UndeliverableReason::MailboxFull,
        proto::UndeliverableReason::TooLarge => UndeliverableReason::TooLarge,
        proto::UndeliverableReason::UnknownOutcome => UndeliverableReason::UnknownOutcome,
    })
}

/// A reason as 0.2 (and 0.1) names it: all but `unknown-outcome`, which a
/// guest of those versions is not told (its host counts it: `ps`, `top`).
fn v0_2_reason(reason: proto::UndeliverableReason) -> Option<v0_2::UndeliverableReason> {
    use v0_2::UndeliverableReason as R;
    Some(match reason {
        proto::UndeliverableReason::UnknownRecipient => R::UnknownRecipient,
        proto::UndeliverableReason::RecipientExited => R::RecipientExited,
        proto::UndeliverableReason::NotAllowed => R::NotAllowed,
        proto::UndeliverableReason::MailboxFull => R::MailboxFull,
        proto::UndeliverableReason::TooLarge => R::TooLarge,
        proto::UndeliverableReason::UnknownOutcome => return None,
    })
}

/// Version 0.1, served by the 0.2 implementation: the same functions
/// without calls, and messages without their request.
impl v0_1::Host for GuestState {
    async fn send(
        &mut self,
        to: v0_1::Address,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), v0_1::SendError>> {
        let sent = v0_2::Host::send(self, v0_2_address(to), payload).await?;
        Ok(sent.map_err(|err| match err {
            v0_2::SendError::TooLarge(limit) => v0_1::SendError::TooLarge(limit),
            v0_2::SendError::HostGone => v0_1::SendError::HostGone,
        }))
    }

    async fn recv(&mut self) -> wasmtime::Result<v0_1::InboxItem> {
        Ok(recv_as(&self.link, v0_1_item).await)
    }

    async fn try_recv(&mut self) -> wasmtime::Result<Option<v0_1::InboxItem>> {
        Ok(try_recv_as(&self.link, v0_1_item))
    }

    async fn recv_timeout(&mut self, timeout_ns: u64) -> wasmtime::Result<Option<v0_1::InboxItem>> {
        Ok(recv_timeout_as(&self.link, timeout_ns, v0_1_item).await)
    }

    async fn subscribe(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        ipc::Host::subscribe(self).await
    }

    async fn monitor(&mut self, name: String) -> wasmtime::Result<()> {
        ipc::Host::monitor(self, name).await
    }

    async fn max_message_size(&mut self) -> wasmtime::Result<u64> {
        ipc::Host::max_message_size(self).await
    }

    async fn self_id(&mut self) -> wasmtime::Result<u64> {
        ipc::Host::self_id(self).await
    }

    async fn self_name(&mut self) -> wasmtime::Result<Option<String>> {
        ipc::Host::self_name(self).await
    }
}

fn v0_2_address(address: v0_1::Address) -> v0_2::Address {
    match address {
        v0_1::Address::Parent => v0_2::Address::Parent,
        v0_1::Address::Id(id) => v0_2::Address::Id(id),
        v0_1::Address::Name(name) => v0_2::Address::Name(name),
        v0_1::Address::Group(group) => v0_2::Address::Group(group),
        v0_1::Address::Broadcast(group) => v0_2::Address::Broadcast(group),
    }
}

fn v0_1_address(address: v0_2::Address) -> v0_1::Address {
    match address {
        v0_2::Address::Parent => v0_1::Address::Parent,
        v0_2::Address::Id(id) => v0_1::Address::Id(id),
        v0_2::Address::Name(name) => v0_1::Address::Name(name),
        v0_2::Address::Group(group) => v0_1::Address::Group(group),
        v0_2::Address::Broadcast(group) => v0_1::Address::Broadcast(group),
    }
}

/// An inbox item as a 0.1 guest sees it: a call is a plain message, and
/// an `unknown-outcome` is not shown (as for 0.2).
fn v0_1_item(item: proto::InboxItem) -> Option<v0_1::InboxItem> {
    use v0_2::UndeliverableReason as R;
    Some(match v0_2::InboxItem::shown(item)? {
        v0_2::InboxItem::Message(m) => v0_1::InboxItem::Message(v0_1::Message {
            from_id: m.from_id,
            from_name: m.from_name,
            payload: m.payload,
        }),
        v0_2::InboxItem::Undeliverable(u) => v0_1::InboxItem::Undeliverable(v0_1::Undeliverable {
            to: v0_1_address(u.to),
            reason: match u.reason {
                R::UnknownRecipient => v0_1::UndeliverableReason::UnknownRecipient,
                R::RecipientExited => v0_1::UndeliverableReason::RecipientExited,
                R::NotAllowed => v0_1::UndeliverableReason::NotAllowed,
                R::MailboxFull => v0_1::UndeliverableReason::MailboxFull,
                R::TooLarge => v0_1::UndeliverableReason::TooLarge,
            },
            payload_len: u.payload_len,
        }),
        v0_2::InboxItem::Down(d) => v0_1::InboxItem::Down(v0_1::Down {
            id: d.id,
            name: d.name,
            reason: d.reason,
        }),
        v0_2::InboxItem::Shutdown => v0_1::InboxItem::Shutdown,
    })
}
