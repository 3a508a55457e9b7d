// Node's side of `make bench`: the same jobs with child_process.fork and
// process.send, children talking through the parent.
//
//   node bench.js spawn N | burst N | rtt N SERIALIZATION | call N | stream N SIZE SERIALIZATION | memory N
//
// Prints one JSON object. SERIALIZATION is `json` (Node's default) or `advanced`.
'use strict';
const { fork } = require('child_process');
const fs = require('fs');
const path = require('path');

const CHILD = path.join(__dirname, 'child.js');
const [mode, a, b, c] = process.argv.slice(2);
const now = () => Number(process.hrtime.bigint()) / 1e3; // µs

function firstMessage(child) {
  return new Promise((resolve) => child.once('message', resolve));
}

async function spawn(n) {
  const samples = [];
  for (let i = 0; i < n; i++) {
    const t = now();
    const child = fork(CHILD, ['hello']);
    await firstMessage(child);
    samples.push(now() - t);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
  return { samples_us: samples };
}

async function burst(n) {
  const t = now();
  const kids = [];
  for (let i = 0; i < n; i++) kids.push(fork(CHILD, ['hello']));
  await Promise.all(kids.map(firstMessage));
  const ms = (now() - t) / 1e3;
  kids.forEach((k) => k.kill('SIGKILL'));
  return { ms };
}

// A's messages → parent → B, and B's → parent → A, until A reports.
async function throughParent(aArgs, bArgs, options) {
  const A = fork(CHILD, aArgs, options);
  const B = fork(CHILD, bArgs, options);
  B.on('message', (m) => A.send(m));
  const result = new Promise((resolve) => {
    A.on('message', (m) => {
      if (m && m.done) resolve(m);
      else B.send(m);
    });
  });
  const r = await result;
  A.kill('SIGKILL');
  B.kill('SIGKILL');
  return r;
}

// A → parent → B → parent → A.
async function rtt(n, serialization) {
  const r = await throughParent(['ping', String(n)], ['pong'], { serialization });
  return { rtt_us: r.us / n };
}

// A calls B through the parent, request/reply by hand (correlation ids and
// a timer per call in A).
async function call(n) {
  const r = await throughParent(['caller', String(n)], ['replier'], {});
  return { rtt_us: r.us / n };
}

// A → parent → B, counted at B.
async function stream(n, size, serialization) {
  const B = fork(CHILD, ['sink', String(n)], { serialization });
  const A = fork(CHILD, ['source', String(n), String(size)], { serialization });
  await new Promise((r) => B.once('message', r)); // B ready
  const t = now();
  A.on('message', (m) => B.send(m));
  A.send('go');
  await new Promise((r) => B.once('message', r)); // B counted n
  const secs = (now() - t) / 1e6;
  A.kill('SIGKILL');
  B.kill('SIGKILL');
  return { msgs_per_s: n / secs, bytes_per_s: (n * size) / secs };
}

function rollup(pid) {
  const out = {};
  for (const line of fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').split('\n')) {
    const m = line.match(/^(Rss|Pss|Anonymous):\s+(\d+) kB/);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

async function memory(n) {
  const kids = [];
  for (let i = 0; i < n; i++) kids.push(fork(CHILD, ['hello']));
  await Promise.all(kids.map(firstMessage));
  await new Promise((r) => setTimeout(r, 500));
  let pss = 0, anon = 0, rss = 0;
  for (const k of kids) {
    const m = rollup(k.pid);
    pss += m.Pss; anon += m.Anonymous; rss += m.Rss;
  }
  kids.forEach((k) => k.kill('SIGKILL'));
  return { guests: n, pss_kib: pss, anon_kib: anon, rss_kib: rss };
}

(async () => {
  let r;
  if (mode === 'spawn') r = await spawn(Number(a));
  else if (mode === 'burst') r = await burst(Number(a));
  else if (mode === 'rtt') r = await rtt(Number(a), b || 'json');
  else if (mode === 'call') r = await call(Number(a));
  else if (mode === 'stream') r = await stream(Number(a), Number(b), c || 'json');
  else if (mode === 'memory') r = await memory(Number(a));
  else throw new Error('unknown mode ' + mode);
  console.log(JSON.stringify(r));
  process.exit(0);
})();
