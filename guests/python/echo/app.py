"""Answers every message with the same bytes, to whoever sent it (a call
with its reply), until it is asked to shut down."""

import wasmproc_guest as wp


def main() -> None:
    for msg in wp.messages():
        if msg.is_call:
            msg.reply(msg.payload)
        else:
            wp.send(msg.reply_to, msg.payload)


Run = wp.entry(main)
