//! The `wasmproc:guest/ipc` interface, implemented for guests.
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
    path: "../wit",
    world: "wasmproc:guest/guest",
    with: {
        "wasi": wasmtime_wasi::p2::bindings,
    },
    imports: { default: async | trappable },
});

use self::wasmproc::guest::ipc::{self, Address, InboxItem, SendError, UndeliverableReason};

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

/// Add `ipc` to a linker that already has WASI.
///
/// # Errors
///
/// When the linker already defines the interface.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    ipc::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |state| state)
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

    async fn recv(&mut self) -> wasmtime::Result<InboxItem> {
        Ok(self.link.recv().await.into())
    }

    async fn try_recv(&mut self) -> wasmtime::Result<Option<InboxItem>> {
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
                payload,
            } => InboxItem::Message(ipc::Message {
                from_id: from.0,
                from_name,
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
