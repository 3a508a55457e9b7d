//! The `wasmproc:guest/ipc` interface, implemented for guests: version
//! 0.2 (with calls), and 0.1 for guests built before calls, which sees a
//! call as a plain message and is served by the 0.2 implementation.
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
            include wasmproc:guest/guest@0.2.0;
            import wasmproc:guest/ipc@0.1.0;
        }
    ",
    path: "../wit",
    world: "wasmproc:runner/runner",
    with: {
        "wasi": wasmtime_wasi::p2::bindings,
        "wasmproc:guest/ipc@0.2.0.pending-call": PendingCall,
    },
    imports: { default: async | trappable },
});

use self::wasmproc::guest0_1_0::ipc as v0_1;
use self::wasmproc::guest0_2_0::ipc::{
    self, Address, CallError, InboxItem, ReplyError, SendError, UndeliverableReason,
};

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

/// Add both versions of `ipc` to a linker that already has WASI.
///
/// # Errors
///
/// When the linker already defines the interface.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    ipc::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |state| state)?;
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

impl ipc::HostPendingCall for GuestState {
    async fn subscribe(
        &mut self,
        call: Resource<PendingCall>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(&mut self.table, call)
    }

    async fn take_reply(
        &mut self,
        call: Resource<PendingCall>,
    ) -> wasmtime::Result<Option<Result<Vec<u8>, CallError>>> {
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

/// The pollable behind `subscribe`: ready while the inbox holds an item.
struct InboxReady(Arc<Link>);

#[wasmtime_wasi::async_trait]
impl Pollable for InboxReady {
    async fn ready(&mut self) {
        self.0.ready().await;
    }
}

impl ipc::Host for GuestState {
    async fn send(
        &mut self,
        to: Address,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), SendError>> {
        let limit = self.link.limits.max_message_size;
        if payload.len() as u64 > limit {
            return Ok(Err(SendError::TooLarge(limit)));
        }
        Ok(self
            .link
            .queue_send(to.into(), payload)
            .await
            .map_err(|_| SendError::HostGone))
    }

    async fn call(
        &mut self,
        to: Address,
        payload: Vec<u8>,
        timeout_ms: u64,
    ) -> wasmtime::Result<Result<Vec<u8>, CallError>> {
        let answer = self.link.call(to.into(), payload, timeout_ms).await;
        Ok(answer.map_err(Into::into))
    }

    async fn send_request(
        &mut self,
        to: Address,
        payload: Vec<u8>,
        timeout_ms: u64,
    ) -> wasmtime::Result<Result<Resource<PendingCall>, CallError>> {
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
    ) -> wasmtime::Result<Result<(), ReplyError>> {
        let replied = self.link.reply(proto::RequestId(request), payload).await;
        Ok(replied.map_err(Into::into))
    }

    async fn recv(&mut self) -> wasmtime::Result<InboxItem> {
        Ok(self.link.recv().await.into())
    }

    async fn try_recv(&mut self) -> wasmtime::Result<Option<InboxItem>> {
        // A guest that polls between pieces of work lets the reader in.
        self.link.turn().await;
        Ok(self.link.try_recv().map(Into::into))
    }

    async fn recv_timeout(&mut self, timeout_ns: u64) -> wasmtime::Result<Option<InboxItem>> {
        let wait = self.link.recv();
        Ok(
            match tokio::time::timeout(Duration::from_nanos(timeout_ns), wait).await {
                Ok(item) => Some(item.into()),
                Err(_) => None,
            },
        )
    }

    async fn subscribe(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.table.push(InboxReady(self.link.clone()))?;
        wasmtime_wasi::p2::subscribe(&mut self.table, ready)
    }

    async fn monitor(&mut self, name: String) -> wasmtime::Result<()> {
        // If the host is gone there is nobody to watch for; the reader task
        // is about to end this process anyway.
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

impl From<Address> for proto::Address {
    fn from(address: Address) -> Self {
        match address {
            Address::Parent => proto::Address::Parent,
            Address::Id(0) => proto::Address::Parent,
            Address::Id(id) => proto::Address::Id(proto::GuestId(id)),
            Address::Name(name) => proto::Address::Name(name),
            Address::Group(group) => proto::Address::Group(group),
            Address::Broadcast(group) => proto::Address::Broadcast(group),
        }
    }
}

impl From<proto::Address> for Address {
    fn from(address: proto::Address) -> Self {
        match address {
            proto::Address::Parent => Address::Parent,
            proto::Address::Id(id) => Address::Id(id.0),
            proto::Address::Name(name) => Address::Name(name),
            proto::Address::Group(group) => Address::Group(group),
            proto::Address::Broadcast(group) => Address::Broadcast(group),
        }
    }
}

impl From<proto::CallError> for CallError {
    fn from(error: proto::CallError) -> Self {
        match error {
            proto::CallError::Timeout => CallError::Timeout,
            proto::CallError::UnknownRecipient => CallError::UnknownRecipient,
            proto::CallError::CalleeExited(reason) => CallError::CalleeExited(reason),
            proto::CallError::NotAllowed => CallError::NotAllowed,
            proto::CallError::MailboxFull => CallError::MailboxFull,
            proto::CallError::TooLarge => CallError::TooLarge,
            proto::CallError::HostGone => CallError::HostGone,
            proto::CallError::InvalidTimeout => CallError::InvalidTimeout,
            proto::CallError::TooManyCalls => CallError::TooManyCalls,
        }
    }
}

impl From<proto::ReplyError> for ReplyError {
    fn from(error: proto::ReplyError) -> Self {
        match error {
            proto::ReplyError::Expired => ReplyError::Expired,
            proto::ReplyError::AlreadyReplied => ReplyError::AlreadyReplied,
            proto::ReplyError::UnknownRequest => ReplyError::UnknownRequest,
        }
    }
}

impl From<proto::UndeliverableReason> for UndeliverableReason {
    fn from(reason: proto::UndeliverableReason) -> Self {
        match reason {
            proto::UndeliverableReason::UnknownRecipient => UndeliverableReason::UnknownRecipient,
            proto::UndeliverableReason::RecipientExited => UndeliverableReason::RecipientExited,
            proto::UndeliverableReason::NotAllowed => UndeliverableReason::NotAllowed,
            proto::UndeliverableReason::MailboxFull => UndeliverableReason::MailboxFull,
            proto::UndeliverableReason::TooLarge => UndeliverableReason::TooLarge,
        }
    }
}

impl From<proto::InboxItem> for InboxItem {
    fn from(item: proto::InboxItem) -> Self {
        match item {
            proto::InboxItem::Message {
                from,
                from_name,
                request,
                payload,
            } => InboxItem::Message(ipc::Message {
                from_id: from.0,
                from_name,
                request: request.map(|r| r.0),
                payload,
            }),
            proto::InboxItem::Undeliverable {
                to,
                reason,
                payload_len,
            } => InboxItem::Undeliverable(ipc::Undeliverable {
                to: to.into(),
                reason: reason.into(),
                payload_len,
            }),
            proto::InboxItem::Down { id, name, reason } => InboxItem::Down(ipc::Down {
                id: id.0,
                name,
                reason,
            }),
            proto::InboxItem::Shutdown => InboxItem::Shutdown,
        }
    }
}

/// Version 0.1, served by the 0.2 implementation: the same functions
/// without calls, and messages without their request.
impl v0_1::Host for GuestState {
    async fn send(
        &mut self,
        to: v0_1::Address,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), v0_1::SendError>> {
        let sent = ipc::Host::send(self, v0_2_address(to), payload).await?;
        Ok(sent.map_err(|err| match err {
            SendError::TooLarge(limit) => v0_1::SendError::TooLarge(limit),
            SendError::HostGone => v0_1::SendError::HostGone,
        }))
    }

    async fn recv(&mut self) -> wasmtime::Result<v0_1::InboxItem> {
        Ok(v0_1_item(self.link.recv().await))
    }

    async fn try_recv(&mut self) -> wasmtime::Result<Option<v0_1::InboxItem>> {
        Ok(self.link.try_recv().map(v0_1_item))
    }

    async fn recv_timeout(&mut self, timeout_ns: u64) -> wasmtime::Result<Option<v0_1::InboxItem>> {
        let wait = self.link.recv();
        let item = tokio::time::timeout(Duration::from_nanos(timeout_ns), wait).await;
        Ok(item.ok().map(v0_1_item))
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

fn v0_2_address(address: v0_1::Address) -> Address {
    match address {
        v0_1::Address::Parent => Address::Parent,
        v0_1::Address::Id(id) => Address::Id(id),
        v0_1::Address::Name(name) => Address::Name(name),
        v0_1::Address::Group(group) => Address::Group(group),
        v0_1::Address::Broadcast(group) => Address::Broadcast(group),
    }
}

fn v0_1_address(address: Address) -> v0_1::Address {
    match address {
        Address::Parent => v0_1::Address::Parent,
        Address::Id(id) => v0_1::Address::Id(id),
        Address::Name(name) => v0_1::Address::Name(name),
        Address::Group(group) => v0_1::Address::Group(group),
        Address::Broadcast(group) => v0_1::Address::Broadcast(group),
    }
}

/// An inbox item as a 0.1 guest sees it: a call is a plain message.
fn v0_1_item(item: proto::InboxItem) -> v0_1::InboxItem {
    match InboxItem::from(item) {
        InboxItem::Message(m) => v0_1::InboxItem::Message(v0_1::Message {
            from_id: m.from_id,
            from_name: m.from_name,
            payload: m.payload,
        }),
        InboxItem::Undeliverable(u) => v0_1::InboxItem::Undeliverable(v0_1::Undeliverable {
            to: v0_1_address(u.to),
            reason: match u.reason {
                UndeliverableReason::UnknownRecipient => {
                    v0_1::UndeliverableReason::UnknownRecipient
                }
                UndeliverableReason::RecipientExited => v0_1::UndeliverableReason::RecipientExited,
                UndeliverableReason::NotAllowed => v0_1::UndeliverableReason::NotAllowed,
                UndeliverableReason::MailboxFull => v0_1::UndeliverableReason::MailboxFull,
                UndeliverableReason::TooLarge => v0_1::UndeliverableReason::TooLarge,
            },
            payload_len: u.payload_len,
        }),
        InboxItem::Down(d) => v0_1::InboxItem::Down(v0_1::Down {
            id: d.id,
            name: d.name,
            reason: d.reason,
        }),
        InboxItem::Shutdown => v0_1::InboxItem::Shutdown,
    }
}
