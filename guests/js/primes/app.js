// A prime-counting worker: every call is a range `[lo, hi]` in JSON; the
// reply is how many primes are in `lo..hi` (a JSON number). An empty
// message asks it to stop, as does the host's shutdown.

import * as wp from '../wasmproc-guest.js';

function isPrime(n) {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) {
    if (n % d === 0) return false;
  }
  return true;
}

function countPrimes(lo, hi) {
  let count = 0;
  for (let n = lo; n < hi; n++) if (isPrime(n)) count++;
  return count;
}

export const run = wp.entry(() => {
  for (const msg of wp.messages()) {
    if (msg.payload.length === 0) return;
    let range;
    try {
      range = msg.json();
    } catch (error) {
      range = undefined;
    }
    if (!Array.isArray(range) || range.length !== 2 || !range.every(Number.isSafeInteger)) {
      const error = `${JSON.stringify(msg.text.slice(0, 64))} is not a range [lo, hi] of safe integers`;
      console.error(`primes: ${error}`);
      if (msg.isCall) msg.replyJson({ error });
      continue;
    }
    const [lo, hi] = range;
    try {
      msg.replyJson(countPrimes(lo, hi));
    } catch (error) {
      console.error(`primes: answer to ${lo}..${hi} failed: ${error.message}`);
    }
  }
});
