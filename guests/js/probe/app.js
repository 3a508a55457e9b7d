// The SDK test guest: one command per run, the same as the Python one.
//
// - `args`: print the arguments after the command, one per line.
// - `exit N`: end with exit code N (`exit`).
// - `raise`: throw an error (exit code 1 and a stack).
// - `call ADDRESS TEXT [TIMEOUT_MS]`: call, then print the reply or
//   `error KIND: WHY`.
// - `calls ADDRESS N`: start N calls (`0` .. `N-1`) at once, wait for all,
//   and print the replies in order.
// - `serve`: answer one call twice and a plain message once, printing what
//   each answer gave.

import * as wp from '../wasmproc-guest.js';

const describe = (error) => `error ${error.kind}: ${error.message}`;
const decoder = new TextDecoder();

export const run = wp.entry((argv) => {
  const [command, ...rest] = argv.slice(1);
  switch (command) {
    case 'args':
      for (const arg of rest) console.log(arg);
      break;
    case 'exit':
      wp.exit(Number(rest[0]));
      break;
    case 'raise':
      throw new Error('boom');
    case 'call': {
      const timeout = rest.length > 2 ? Number(rest[2]) : 5000;
      try {
        console.log(decoder.decode(wp.call(rest[0], rest[1], timeout)));
      } catch (error) {
        if (!(error instanceof wp.CallError)) throw error;
        console.log(describe(error));
      }
      break;
    }
    case 'calls': {
      const pending = [...Array(Number(rest[1])).keys()].map((n) => wp.sendRequest(rest[0], String(n)));
      const first = wp.waitAny(pending);
      const replies = pending.map((p) => decoder.decode(p.wait()));
      console.log(`first ended: ${first >= 0 && first < pending.length ? 'True' : 'False'}`);
      console.log(replies.join(' '));
      break;
    }
    case 'serve':
      for (const msg of wp.messages()) {
        try {
          msg.reply(`got ${msg.text}`);
          console.log(`${msg.text}: replied`);
          msg.reply('again');
        } catch (error) {
          if (!(error instanceof wp.ReplyError)) throw error;
          console.log(`${msg.text}: ${describe(error)}`);
        }
        if (!msg.isCall) return;
      }
      break;
    default:
      console.error(`probe: unknown command ${command}`);
      wp.exit(2);
  }
});
