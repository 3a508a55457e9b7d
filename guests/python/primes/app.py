"""A prime-counting worker: every call is a range ``[lo, hi]`` in JSON; the
reply is how many primes are in ``lo..hi`` (a JSON number). An empty
message asks it to stop, as does the host's shutdown."""

import json
import sys

import wasmproc_guest as wp


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    d = 3
    while d * d <= n:
        if n % d == 0:
            return False
        d += 2
    return True


def main() -> None:
    for msg in wp.messages():
        if not msg.payload:
            return
        try:
            lo, hi = msg.json()
            if not (type(lo) is int and type(hi) is int):
                raise ValueError
        except (ValueError, TypeError):
            error = f"{json.dumps(msg.payload[:64].decode(errors='replace'))} is not a range [lo, hi]"
            print(f"primes: {error}", file=sys.stderr)
            if msg.is_call:
                msg.reply_json({"error": error})
            continue
        try:
            msg.reply_json(sum(1 for n in range(lo, hi) if is_prime(n)))
        except wp.ReplyError as err:
            print(f"primes: answer to {lo}..{hi} failed: {err}", file=sys.stderr)


Run = wp.entry(main)
