// Answers every message with the same bytes, to whoever sent it (a call
// with its reply), until it is asked to shut down.

import * as wp from '../wasmproc-guest.js';

export const run = wp.entry(() => {
  for (const msg of wp.messages()) {
    if (msg.isCall) msg.reply(msg.payload);
    else wp.send(msg.replyTo, msg.payload);
  }
});
