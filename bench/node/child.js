// The children of bench.js.
'use strict';
const [mode, a, b] = process.argv.slice(2);
const now = () => Number(process.hrtime.bigint()) / 1e3;

if (mode === 'hello') {
  process.send('hello');
  setInterval(() => {}, 1 << 30); // stay alive, idle
} else if (mode === 'pong') {
  process.on('message', (m) => process.send(m));
} else if (mode === 'ping') {
  const n = Number(a);
  const payload = 'x'.repeat(32);
  let i = 0;
  let t = 0;
  process.on('message', () => {
    i += 1;
    if (i === 1000) t = now(); // after a warm-up of 1000
    if (i === n + 1000) {
      process.send({ done: true, us: now() - t });
    } else {
      process.send(payload);
    }
  });
  process.send(payload);
} else if (mode === 'caller') {
  // Request/reply by hand, as Node leaves it: a correlation id per call, a
  // table of pending calls and a timer per call for its deadline.
  const n = Number(a);
  const pending = new Map();
  let next = 0;
  const call = (payload, ms) => new Promise((resolve, reject) => {
    const id = next++;
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error(`call ${id} timed out`));
    }, ms);
    pending.set(id, (reply) => {
      clearTimeout(timer);
      resolve(reply);
    });
    process.send({ id, payload });
  });
  process.on('message', (m) => {
    const done = pending.get(m.id);
    if (done) {
      pending.delete(m.id);
      done(m.reply);
    }
  });
  (async () => {
    const payload = 'x'.repeat(8);
    for (let i = 0; i < 1000; i++) await call(payload, 60000); // warm-up
    const t = now();
    for (let i = 0; i < n; i++) await call(payload, 60000);
    process.send({ done: true, us: now() - t });
  })();
} else if (mode === 'replier') {
  process.on('message', (m) => process.send({ id: m.id, reply: m.payload }));
} else if (mode === 'sink') {
  const n = Number(a);
  let i = 0;
  process.on('message', () => {
    i += 1;
    if (i === n) process.send('done');
  });
  process.send('ready');
} else if (mode === 'source') {
  const n = Number(a);
  const payload = Buffer.alloc(Number(b), 7).toString('latin1');
  process.once('message', async () => {
    for (let i = 0; i < n; i++) {
      // Respect back-pressure, as a real sender must.
      if (!process.send(payload)) await new Promise((r) => setImmediate(r));
    }
  });
}
