"""The SDK test guest: one command per run, the same as the JavaScript one.

- ``args``: print the arguments after the command, one per line.
- ``exit N``: end with exit code N (``sys.exit``).
- ``raise``: raise an exception (exit code 1 and a traceback).
- ``call ADDRESS TEXT [TIMEOUT_MS]``: call, then print the reply or
  ``error KIND: WHY``.
- ``calls ADDRESS N``: start N calls (``0`` .. ``N-1``) at once, wait for
  all, and print the replies in order.
- ``serve``: answer one call twice and a plain message once, printing what
  each answer gave.
"""

import sys

import wasmproc_guest as wp


def describe(error: Exception) -> str:
    return f"error {error.kind}: {error}"


def main() -> None:
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "args":
        for arg in rest:
            print(arg)
    elif command == "exit":
        sys.exit(int(rest[0]))
    elif command == "raise":
        raise RuntimeError("boom")
    elif command == "call":
        timeout = int(rest[2]) / 1000 if len(rest) > 2 else 5.0
        try:
            print(wp.call(rest[0], rest[1], timeout).decode())
        except wp.CallError as error:
            print(describe(error))
    elif command == "calls":
        pending = [wp.send_request(rest[0], str(n)) for n in range(int(rest[1]))]
        first = wp.wait_any(pending)
        replies = [p.wait().decode() for p in pending]
        print(f"first ended: {first in range(len(pending))}")
        print(" ".join(replies))
    elif command == "serve":
        for msg in wp.messages():
            try:
                msg.reply(f"got {msg.text}")
                print(f"{msg.text}: replied")
                msg.reply("again")
            except wp.ReplyError as error:
                print(f"{msg.text}: {describe(error)}")
            if not msg.is_call:
                return
    else:
        print(f"probe: unknown command {command}", file=sys.stderr)
        sys.exit(2)


Run = wp.entry(main)
