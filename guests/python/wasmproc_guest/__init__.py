"""Write wasmproc guests in Python.

A guest is a WASI program built with componentize-py for the ``command``
world of ``wit/guest.wit``. It talks to its parent and to other guests
only through the host, which relays every message::

    import wasmproc_guest as wp

    def main() -> None:
        for msg in wp.messages():          # until the host asks us to stop
            if msg.is_call:
                msg.reply(msg.payload)     # answer a call
            else:
                wp.send(msg.reply_to, msg.payload)

    Run = wp.entry(main)                   # componentize-py runs this

Addresses are strings read as on the command line: ``"parent"``, a number
(a guest id), ``"group:NAME"`` (one member, round-robin), ``"all:NAME"``
(every member), or any other text (a guest's name).

Payloads are bytes. ``str`` is sent as UTF-8, and the ``*_json`` helpers
encode values as JSON: the encoding every wasmproc SDK (Rust, Python,
JavaScript) speaks, so guests in different languages understand each other.
"""

from __future__ import annotations

import json as _json
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Union

from componentize_py_types import Err
from wit_world import exports as _exports
from wit_world.imports import environment as _environment
from wit_world.imports import exit as _exit
from wit_world.imports import ipc as _ipc
from wit_world.imports import poll as _poll

__all__ = [
    "PARENT_ID", "Address", "Payload", "Message", "Undeliverable", "Down",
    "Shutdown", "InboxItem", "CallError", "ReplyError", "SendError",
    "PendingCall", "entry", "send", "send_json", "call", "call_json",
    "send_request", "wait_any", "reply", "recv", "try_recv", "recv_timeout",
    "inbox", "messages", "monitor", "self_id", "self_name",
    "max_message_size", "parse_address", "format_address",
]

#: The parent's id: messages from the program that started this guest carry it.
PARENT_ID = 0

#: Where a message goes: an address string, a guest id, or a raw WIT address.
Address = Union[str, int, _ipc.Address]

#: What a message carries: bytes, or text sent as UTF-8.
Payload = Union[bytes, bytearray, memoryview, str]

#: The deadline of a call when none is given, in seconds.
DEFAULT_TIMEOUT = 30.0


# --- addresses -------------------------------------------------------------

def parse_address(text: str) -> _ipc.Address:
    """Read an address the way a command line gives it: ``parent``, a
    number (an id), ``group:NAME``, ``all:NAME``, or a name."""
    if text == "parent":
        return _ipc.Address_Parent()
    if text.isdigit():
        return _address_of_id(int(text))
    if text.startswith("group:"):
        return _ipc.Address_Group(text[len("group:"):])
    if text.startswith("all:"):
        return _ipc.Address_Broadcast(text[len("all:"):])
    return _ipc.Address_Name(text)


def format_address(address: _ipc.Address) -> str:
    """An address as ``parse_address`` reads it."""
    if isinstance(address, _ipc.Address_Parent):
        return "parent"
    if isinstance(address, _ipc.Address_Id):
        return str(address.value)
    if isinstance(address, _ipc.Address_Group):
        return f"group:{address.value}"
    if isinstance(address, _ipc.Address_Broadcast):
        return f"all:{address.value}"
    return address.value


def _address_of_id(guest: int) -> _ipc.Address:
    return _ipc.Address_Parent() if guest == PARENT_ID else _ipc.Address_Id(guest)


def _address(to: Address) -> _ipc.Address:
    if isinstance(to, str):
        return parse_address(to)
    if isinstance(to, bool):
        raise TypeError("an address is a string or a guest id, not a bool")
    if isinstance(to, int):
        return _address_of_id(to)
    return to


def _bytes(payload: Payload) -> bytes:
    if isinstance(payload, str):
        return payload.encode()
    return bytes(payload)


def _json_bytes(value: Any) -> bytes:
    return _json.dumps(value, separators=(",", ":")).encode()


# --- errors ----------------------------------------------------------------

class SendError(Exception):
    """``send`` failed at once; nothing left this guest.

    ``kind`` is ``"too-large"`` (``limit`` is this guest's message size
    limit, in bytes) or ``"host-gone"``.
    """

    def __init__(self, kind: str, limit: Optional[int] = None) -> None:
        self.kind = kind
        self.limit = limit
        if kind == "too-large":
            super().__init__(f"too large: this guest's messages are at most {limit} bytes")
        else:
            super().__init__("the host is gone")


_CALL_ERRORS = {
    _ipc.CallError_Timeout: ("timeout", "no reply before the deadline"),
    _ipc.CallError_UnknownRecipient: ("unknown-recipient", "unknown recipient"),
    _ipc.CallError_NotAllowed: ("not-allowed", "not allowed"),
    _ipc.CallError_MailboxFull: ("mailbox-full", "mailbox full"),
    _ipc.CallError_TooLarge: ("too-large", "too large"),
    _ipc.CallError_HostGone: ("host-gone", "the host is gone"),
    _ipc.CallError_InvalidTimeout: ("invalid-timeout", "a call needs a timeout above zero"),
    _ipc.CallError_TooManyCalls: ("too-many-calls", "too many calls in flight"),
}


class CallError(Exception):
    """A call ended without a reply.

    ``kind`` is the WIT case (``"timeout"``, ``"unknown-recipient"``,
    ``"callee-exited"``, ``"not-allowed"``, ``"mailbox-full"``,
    ``"too-large"``, ``"host-gone"``, ``"invalid-timeout"``,
    ``"too-many-calls"``); ``reason`` says why a callee exited.
    ``str(error)`` is the same line the Rust SDK's ``describe`` gives.
    """

    def __init__(self, kind: str, text: str, reason: Optional[str] = None) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(text)

    @classmethod
    def _of(cls, raw: _ipc.CallError) -> "CallError":
        if isinstance(raw, _ipc.CallError_CalleeExited):
            return cls("callee-exited", f"the callee exited: {raw.value}", raw.value)
        kind, text = _CALL_ERRORS[type(raw)]
        return cls(kind, text)


_REPLY_ERRORS = {
    _ipc.ReplyError.EXPIRED: ("expired", "the call has expired"),
    _ipc.ReplyError.ALREADY_REPLIED: ("already-replied", "the request was answered already"),
    _ipc.ReplyError.UNKNOWN_REQUEST: ("unknown-request", "no such request was delivered here"),
}


class ReplyError(Exception):
    """``reply`` sent nothing. ``kind`` is ``"expired"`` (the caller stopped
    waiting), ``"already-replied"`` or ``"unknown-request"``."""

    def __init__(self, kind: str, text: str) -> None:
        self.kind = kind
        super().__init__(text)

    @classmethod
    def _of(cls, raw: _ipc.ReplyError) -> "ReplyError":
        return cls(*_REPLY_ERRORS[raw])


# --- inbox items -----------------------------------------------------------

@dataclass
class Message:
    """A message from the parent or another guest; a call when ``request``
    is set (answer it once with ``reply``)."""

    from_id: int
    from_name: Optional[str]
    request: Optional[int]
    payload: bytes

    @property
    def reply_to(self) -> _ipc.Address:
        """The address that reaches the sender."""
        return _address_of_id(self.from_id)

    @property
    def is_call(self) -> bool:
        """Whether the sender waits for a ``reply``."""
        return self.request is not None

    @property
    def text(self) -> str:
        """The payload as UTF-8 text."""
        return self.payload.decode()

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return _json.loads(self.payload)

    def reply(self, payload: Payload) -> None:
        """Answer this call. Raises ``ReplyError`` (``unknown-request`` for a
        message that is not a call)."""
        if self.request is None:
            raise ReplyError(*_REPLY_ERRORS[_ipc.ReplyError.UNKNOWN_REQUEST])
        reply(self.request, payload)

    def reply_json(self, value: Any) -> None:
        """Answer this call with ``value`` encoded as JSON."""
        self.reply(_json_bytes(value))


@dataclass
class Undeliverable:
    """A message this guest sent could not be delivered. ``reason`` is the
    WIT case: ``unknown-recipient``, ``recipient-exited``, ``not-allowed``,
    ``mailbox-full``, ``too-large`` or ``unknown-outcome`` (sent to a guest
    on another host that neither confirmed the take nor refused it: it may
    or may not have been taken)."""

    to: _ipc.Address
    reason: str
    payload_len: int

    def __str__(self) -> str:
        return f"to {format_address(self.to)}: {self.reason.replace('-', ' ')}"


@dataclass
class Down:
    """A guest this guest monitors has ended, and why."""

    id: int
    name: Optional[str]
    reason: str


@dataclass
class Shutdown:
    """The host asks this guest to finish its work and exit."""


InboxItem = Union[Message, Undeliverable, Down, Shutdown]


def _item(raw: _ipc.InboxItem) -> InboxItem:
    if isinstance(raw, _ipc.InboxItem_Message):
        m = raw.value
        return Message(m.from_id, m.from_name, m.request, bytes(m.payload))
    if isinstance(raw, _ipc.InboxItem_Undeliverable):
        u = raw.value
        reason = u.reason.name.lower().replace("_", "-")
        return Undeliverable(u.to, reason, u.payload_len)
    if isinstance(raw, _ipc.InboxItem_Down):
        d = raw.value
        return Down(d.id, d.name, d.reason)
    return Shutdown()


# --- sending and calling ---------------------------------------------------

def send(to: Address, payload: Payload) -> None:
    """Queue ``payload`` for ``to`` and return at once. The host decides
    delivery later: a message it cannot deliver comes back as an
    ``Undeliverable`` item. Raises ``SendError``."""
    try:
        _ipc.send(_address(to), _bytes(payload))
    except Err as err:
        if isinstance(err.value, _ipc.SendError_TooLarge):
            raise SendError("too-large", err.value.value) from None
        raise SendError("host-gone") from None


def send_json(to: Address, value: Any) -> None:
    """``send`` ``value`` encoded as JSON."""
    send(to, _json_bytes(value))


def _millis(timeout: float) -> int:
    if timeout <= 0:
        return 0
    return max(1, int(-(-timeout * 1000 // 1)))


def call(to: Address, payload: Payload, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Call ``to`` and wait for its reply, at most ``timeout`` seconds. A
    group's call goes to one member. If the callee ends first, the call
    fails at once (``callee-exited``). Raises ``CallError``."""
    try:
        return bytes(_ipc.call(_address(to), _bytes(payload), _millis(timeout)))
    except Err as err:
        raise CallError._of(err.value) from None


def call_json(to: Address, value: Any, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """``call`` with ``value`` encoded as JSON; the reply decoded as JSON."""
    return _json.loads(call(to, _json_bytes(value), timeout))


class PendingCall:
    """A call in flight, from ``send_request``. ``close()`` (or leaving a
    ``with`` block) gives it up: the callee's reply then gets ``expired``."""

    def __init__(self, raw: _ipc.PendingCall) -> None:
        self._raw: Optional[_ipc.PendingCall] = raw
        self._answer: Optional[Union[bytes, CallError]] = None

    def done(self) -> bool:
        """Whether the call has ended (without waiting)."""
        return self._take() or self._answer is not None

    def wait(self) -> bytes:
        """Wait for the reply. Raises ``CallError``."""
        while self._answer is None:
            if self._raw is None:
                raise ValueError("the call was given up")
            with self._raw.subscribe() as ready:
                ready.block()
            self._take()
        if isinstance(self._answer, CallError):
            raise self._answer
        return self._answer

    def wait_json(self) -> Any:
        """Wait for the reply and decode it as JSON."""
        return _json.loads(self.wait())

    def close(self) -> None:
        if self._raw is not None:
            self._raw.__exit__(None, None, None)
            self._raw = None

    def __enter__(self) -> "PendingCall":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _take(self) -> bool:
        if self._answer is not None or self._raw is None:
            return False
        answer = self._raw.take_reply()
        if answer is None:
            return False
        if isinstance(answer, Err):
            self._answer = CallError._of(answer.value)
        else:
            self._answer = bytes(answer.value)
        self.close()
        return True


def send_request(to: Address, payload: Payload, timeout: float = DEFAULT_TIMEOUT) -> PendingCall:
    """Start a call without waiting for it, to keep several in flight.
    Errors known at once raise ``CallError`` here; the rest come from
    ``PendingCall.wait``."""
    try:
        return PendingCall(_ipc.send_request(_address(to), _bytes(payload), _millis(timeout)))
    except Err as err:
        raise CallError._of(err.value) from None


def wait_any(calls: List[PendingCall]) -> int:
    """Wait until one of ``calls`` has ended; return its index."""
    if not calls:
        raise ValueError("wait_any needs at least one call")
    while True:
        for index, pending in enumerate(calls):
            if pending.done():
                return index
        waiting = [c._raw.subscribe() for c in calls if c._raw is not None]
        if not waiting:
            raise ValueError("every call was given up before it ended")
        try:
            _poll.poll(waiting)
        finally:
            for pollable in waiting:
                pollable.__exit__(None, None, None)


def reply(request: int, payload: Payload) -> None:
    """Answer the request ``request`` (from ``Message.request``), once.
    Raises ``ReplyError``: ``expired`` when the caller stopped waiting."""
    try:
        _ipc.reply(request, _bytes(payload))
    except Err as err:
        raise ReplyError._of(err.value) from None


# --- receiving -------------------------------------------------------------

def recv() -> InboxItem:
    """Wait for the next inbox item."""
    return _item(_ipc.recv())


def try_recv() -> Optional[InboxItem]:
    """The next inbox item, if one is waiting."""
    raw = _ipc.try_recv()
    return None if raw is None else _item(raw)


def recv_timeout(seconds: float) -> Optional[InboxItem]:
    """Wait at most ``seconds`` for the next inbox item."""
    raw = _ipc.recv_timeout(max(0, int(seconds * 1e9)))
    return None if raw is None else _item(raw)


def inbox() -> Iterator[InboxItem]:
    """Every inbox item, forever (a ``Shutdown`` included)."""
    while True:
        yield recv()


def messages() -> Iterator[Message]:
    """The messages in the inbox, until the host asks this guest to shut
    down. Undeliverable notices and ``down`` items are written to stderr."""
    for item in inbox():
        if isinstance(item, Message):
            yield item
        elif isinstance(item, Shutdown):
            return
        elif isinstance(item, Undeliverable):
            print(f"{_me()}: undeliverable {item}", file=sys.stderr)
        else:
            print(f"{_me()}: {item.name or item.id} is down: {item.reason}", file=sys.stderr)


def monitor(name: str) -> None:
    """Ask for a ``Down`` item when the guest called ``name`` ends."""
    _ipc.monitor(name)


def self_id() -> int:
    """This guest's id."""
    return _ipc.self_id()


def self_name() -> Optional[str]:
    """This guest's name, if it has one."""
    return _ipc.self_name()


def max_message_size() -> int:
    """The largest payload ``send`` accepts from this guest, in bytes."""
    return _ipc.max_message_size()


def _me() -> str:
    return self_name() or f"guest {self_id()}"


# --- the entry point -------------------------------------------------------

def entry(main: Callable[[], Any]) -> type:
    """The class componentize-py runs: ``Run = entry(main)``.

    ``sys.argv`` holds the guest's arguments. ``main`` returning (or
    ``sys.exit(0)``) ends the guest with exit code 0, ``sys.exit(n)`` with
    ``n``; an exception is printed with its traceback and ends it with 1,
    as CPython does.
    """

    class Run(_exports.Run):
        def run(self) -> None:
            sys.argv = list(_environment.get_arguments())
            try:
                main()
            except SystemExit as stop:
                code = stop.code
                if code is None or code == 0:
                    return
                if not isinstance(code, int):
                    print(code, file=sys.stderr)
                    code = 1
                _flush()
                _exit.exit_with_code(code & 0xFF or 1)
            except BaseException:
                traceback.print_exc()
                _flush()
                _exit.exit_with_code(1)
            _flush()

    Run.__qualname__ = Run.__name__ = f"Run[{getattr(main, '__name__', 'main')}]"
    return Run


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
