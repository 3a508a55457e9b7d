// Write wasmproc guests in JavaScript.
//
// A guest is an ES module built with componentize-js for the `command`
// world of `wit/guest.wit` (with `--disable http fetch-event`: the host
// gives guests no HTTP). It talks to its parent and to other guests only
// through the host, which relays every message:
//
//     import * as wp from './wasmproc-guest.js';
//
//     export const run = wp.entry(() => {
//       for (const msg of wp.messages()) {     // until the host asks us to stop
//         if (msg.isCall) msg.reply(msg.payload);
//         else wp.send(msg.replyTo, msg.payload);
//       }
//     });
//
// Addresses are strings read as on the command line: `parent`, a number (a
// guest id), `group:NAME` (one member, round-robin), `all:NAME` (every
// member), or any other text (a guest's name). Guest ids are BigInts.
//
// Payloads are bytes (`Uint8Array`). A string is sent as UTF-8, and the
// `*Json` helpers encode values as JSON: the encoding every wasmproc SDK
// (Rust, Python, JavaScript) speaks, so guests in different languages
// understand each other.

import * as raw from 'wasmproc:guest/ipc@0.3.0';
import { getArguments } from 'wasi:cli/environment@0.2.12';
import { exitWithCode } from 'wasi:cli/exit@0.2.12';
import { poll } from 'wasi:io/poll@0.2.12';

/** The parent's id: messages from the program that started this guest carry it. */
export const PARENT_ID = 0n;

/** The deadline of a call when none is given, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 30_000;

/**
 * @typedef {{tag: 'parent'} | {tag: 'id', val: bigint} | {tag: 'name', val: string}
 *   | {tag: 'group', val: string} | {tag: 'broadcast', val: string}} RawAddress
 * @typedef {string | number | bigint | RawAddress} Address
 * @typedef {Uint8Array | ArrayBuffer | string} Payload
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Read an address the way a command line gives it.
 * @param {string} text
 * @returns {RawAddress}
 */
export function parseAddress(text) {
  if (text === 'parent') return { tag: 'parent' };
  if (/^[0-9]+$/.test(text)) return addressOfId(BigInt(text));
  if (text.startsWith('group:')) return { tag: 'group', val: text.slice('group:'.length) };
  if (text.startsWith('all:')) return { tag: 'broadcast', val: text.slice('all:'.length) };
  return { tag: 'name', val: text };
}

/**
 * An address as `parseAddress` reads it.
 * @param {RawAddress} address
 * @returns {string}
 */
export function formatAddress(address) {
  switch (address.tag) {
    case 'parent': return 'parent';
    case 'id': return String(address.val);
    case 'group': return `group:${address.val}`;
    case 'broadcast': return `all:${address.val}`;
    default: return address.val;
  }
}

/** @param {bigint} id @returns {RawAddress} */
function addressOfId(id) {
  return id === PARENT_ID ? { tag: 'parent' } : { tag: 'id', val: id };
}

/** @param {Address} to @returns {RawAddress} */
function address(to) {
  if (typeof to === 'string') return parseAddress(to);
  if (typeof to === 'number') return addressOfId(BigInt(to));
  if (typeof to === 'bigint') return addressOfId(to);
  return to;
}

/** @param {Payload} payload @returns {Uint8Array} */
function bytes(payload) {
  if (typeof payload === 'string') return encoder.encode(payload);
  if (payload instanceof Uint8Array) return payload;
  return new Uint8Array(payload);
}

/** @param {unknown} value @returns {Uint8Array} */
function jsonBytes(value) {
  return encoder.encode(JSON.stringify(value));
}

/** @param {number} ms @returns {bigint} */
function millis(ms) {
  return ms <= 0 ? 0n : BigInt(Math.ceil(ms));
}

// --- errors ----------------------------------------------------------------

/** `send` failed at once: `kind` is `too-large` (`limit` in bytes) or `host-gone`. */
export class SendError extends Error {
  /** @param {{tag: string, val?: bigint}} raw */
  constructor(raw) {
    super(raw.tag === 'too-large'
      ? `too large: this guest's messages are at most ${raw.val} bytes`
      : 'the host is gone');
    this.name = 'SendError';
    this.kind = raw.tag;
    this.limit = raw.tag === 'too-large' ? raw.val : undefined;
  }
}

const CALL_ERRORS = {
  'timeout': 'no reply before the deadline',
  'unknown-recipient': 'unknown recipient',
  'not-allowed': 'not allowed',
  'mailbox-full': 'mailbox full',
  'too-large': 'too large',
  'host-gone': 'the host is gone',
  'invalid-timeout': 'a call needs a timeout above zero',
  'too-many-calls': 'too many calls in flight',
};

/**
 * A call ended without a reply. `kind` is the WIT case (`timeout`,
 * `unknown-recipient`, `callee-exited`, ...); `reason` says why a callee
 * exited. The message is the line the Rust SDK's `describe` gives.
 */
export class CallError extends Error {
  /** @param {{tag: string, val?: string}} raw */
  constructor(raw) {
    super(raw.tag === 'callee-exited' ? `the callee exited: ${raw.val}` : CALL_ERRORS[raw.tag] ?? raw.tag);
    this.name = 'CallError';
    this.kind = raw.tag;
    this.reason = raw.tag === 'callee-exited' ? raw.val : undefined;
  }
}

const REPLY_ERRORS = {
  'expired': 'the call has expired',
  'already-replied': 'the request was answered already',
  'unknown-request': 'no such request was delivered here',
};

/** `reply` sent nothing: `kind` is `expired`, `already-replied` or `unknown-request`. */
export class ReplyError extends Error {
  /** @param {string} kind */
  constructor(kind) {
    super(REPLY_ERRORS[kind] ?? kind);
    this.name = 'ReplyError';
    this.kind = kind;
  }
}

/** The error value of a WIT `result`, thrown by the bindings as a ComponentError. */
function payloadOf(error) {
  if (error && typeof error === 'object' && 'payload' in error) return error.payload;
  throw error;
}

// --- inbox items -----------------------------------------------------------

/** A message from the parent or another guest; a call when `request` is set. */
export class Message {
  constructor(raw) {
    /** @type {bigint} */ this.fromId = raw.fromId;
    /** @type {string | undefined} */ this.fromName = raw.fromName;
    /** @type {bigint | undefined} */ this.request = raw.request;
    /** @type {Uint8Array} */ this.payload = raw.payload;
  }
  /** The kind of inbox item. */
  get kind() { return 'message'; }
  /** The address that reaches the sender. @returns {RawAddress} */
  get replyTo() { return addressOfId(this.fromId); }
  /** Whether the sender waits for a `reply`. */
  get isCall() { return this.request !== undefined; }
  /** The payload as UTF-8 text. */
  get text() { return decoder.decode(this.payload); }
  /** The payload decoded as JSON. */
  json() { return JSON.parse(this.text); }
  /** Answer this call (throws `ReplyError`). @param {Payload} payload */
  reply(payload) {
    if (this.request === undefined) throw new ReplyError('unknown-request');
    reply(this.request, payload);
  }
  /** Answer this call with `value` encoded as JSON. */
  replyJson(value) { this.reply(jsonBytes(value)); }
}

/** A message this guest sent could not be delivered. */
export class Undeliverable {
  constructor(raw) {
    /** @type {RawAddress} */ this.to = raw.to;
    /**
     * `unknown-recipient`, `recipient-exited`, `not-allowed`, `mailbox-full`,
     * `too-large` or `unknown-outcome` (sent to a guest on another host that
     * neither confirmed the take nor refused it: it may or may not have been taken).
     */
    this.reason = raw.reason;
    /** @type {bigint} */ this.payloadLen = raw.payloadLen;
  }
  get kind() { return 'undeliverable'; }
  toString() { return `to ${formatAddress(this.to)}: ${this.reason.replaceAll('-', ' ')}`; }
}

/** A guest this guest monitors has ended, and why. */
export class Down {
  constructor(raw) {
    /** @type {bigint} */ this.id = raw.id;
    /** @type {string | undefined} */ this.name = raw.name;
    /** @type {string} */ this.reason = raw.reason;
  }
  get kind() { return 'down'; }
}

/** The host asks this guest to finish its work and exit. */
export class Shutdown {
  get kind() { return 'shutdown'; }
}

/** @typedef {Message | Undeliverable | Down | Shutdown} InboxItem */

/** @returns {InboxItem} */
function item(rawItem) {
  switch (rawItem.tag) {
    case 'message': return new Message(rawItem.val);
    case 'undeliverable': return new Undeliverable(rawItem.val);
    case 'down': return new Down(rawItem.val);
    default: return new Shutdown();
  }
}

// --- sending and calling ---------------------------------------------------

/**
 * Queue `payload` for `to` and return at once. A message the host cannot
 * deliver comes back as an `Undeliverable` item. Throws `SendError`.
 * @param {Address} to @param {Payload} payload
 */
export function send(to, payload) {
  try {
    raw.send(address(to), bytes(payload));
  } catch (error) {
    throw new SendError(payloadOf(error));
  }
}

/** `send` `value` encoded as JSON. @param {Address} to */
export function sendJson(to, value) {
  send(to, jsonBytes(value));
}

/**
 * Call `to` and wait for its reply, at most `timeoutMs`. A group's call
 * goes to one member. If the callee ends first, the call fails at once
 * (`callee-exited`). Throws `CallError`.
 * @param {Address} to @param {Payload} payload @param {number} [timeoutMs]
 * @returns {Uint8Array}
 */
export function call(to, payload, timeoutMs = DEFAULT_TIMEOUT_MS) {
  try {
    return raw.call(address(to), bytes(payload), millis(timeoutMs));
  } catch (error) {
    throw new CallError(payloadOf(error));
  }
}

/** `call` with `value` encoded as JSON; the reply decoded as JSON. @param {Address} to */
export function callJson(to, value, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return JSON.parse(decoder.decode(call(to, jsonBytes(value), timeoutMs)));
}

/** A call in flight, from `sendRequest`. */
export class PendingCall {
  constructor(handle) {
    this.handle = handle;
    /** @type {{ok: Uint8Array} | {err: CallError} | undefined} */
    this.answer = undefined;
  }
  /** Whether the call has ended (without waiting). */
  done() {
    this.take();
    return this.answer !== undefined;
  }
  /** Wait for the reply. Throws `CallError`. @returns {Uint8Array} */
  wait() {
    while (!this.done()) poll([this.handle.subscribe()]);
    if ('err' in this.answer) throw this.answer.err;
    return this.answer.ok;
  }
  /** Wait for the reply and decode it as JSON. */
  waitJson() { return JSON.parse(decoder.decode(this.wait())); }
  take() {
    if (this.answer !== undefined) return;
    const answer = this.handle.takeReply();
    if (answer === undefined) return;
    this.answer = answer.tag === 'ok' ? { ok: answer.val } : { err: new CallError(answer.val) };
  }
}

/**
 * Start a call without waiting for it, to keep several in flight. Errors
 * known at once throw `CallError` here; the rest come from `wait`.
 * @param {Address} to @param {Payload} payload @param {number} [timeoutMs]
 */
export function sendRequest(to, payload, timeoutMs = DEFAULT_TIMEOUT_MS) {
  try {
    return new PendingCall(raw.sendRequest(address(to), bytes(payload), millis(timeoutMs)));
  } catch (error) {
    throw new CallError(payloadOf(error));
  }
}

/** Wait until one of `calls` has ended; return its index. @param {PendingCall[]} calls */
export function waitAny(calls) {
  if (calls.length === 0) throw new RangeError('waitAny needs at least one call');
  for (;;) {
    const ended = calls.findIndex((c) => c.done());
    if (ended >= 0) return ended;
    poll(calls.map((c) => c.handle.subscribe()));
  }
}

/**
 * Answer the request `request` (from `Message.request`), once. Throws
 * `ReplyError`: `expired` when the caller stopped waiting.
 * @param {bigint} request @param {Payload} payload
 */
export function reply(request, payload) {
  try {
    raw.reply(request, bytes(payload));
  } catch (error) {
    throw new ReplyError(payloadOf(error));
  }
}

// --- receiving -------------------------------------------------------------

/** Wait for the next inbox item. @returns {InboxItem} */
export function recv() {
  return item(raw.recv());
}

/** The next inbox item, if one is waiting. @returns {InboxItem | undefined} */
export function tryRecv() {
  const next = raw.tryRecv();
  return next === undefined ? undefined : item(next);
}

/** Wait at most `ms` for the next inbox item. @returns {InboxItem | undefined} */
export function recvTimeout(ms) {
  const next = raw.recvTimeout(BigInt(Math.max(0, Math.round(ms * 1e6))));
  return next === undefined ? undefined : item(next);
}

/** Every inbox item, forever (a `Shutdown` included). @returns {Generator<InboxItem>} */
export function* inbox() {
  for (;;) yield recv();
}

/**
 * The messages in the inbox, until the host asks this guest to shut down.
 * Undeliverable notices and `down` items are written to stderr.
 * @returns {Generator<Message>}
 */
export function* messages() {
  for (const next of inbox()) {
    if (next instanceof Message) yield next;
    else if (next instanceof Shutdown) return;
    else if (next instanceof Undeliverable) console.error(`${me()}: undeliverable ${next}`);
    else console.error(`${me()}: ${next.name ?? next.id} is down: ${next.reason}`);
  }
}

/** Ask for a `Down` item when the guest called `name` ends. @param {string} name */
export function monitor(name) {
  raw.monitor(name);
}

/** This guest's id. @returns {bigint} */
export function selfId() {
  return raw.selfId();
}

/** This guest's name, if it has one. @returns {string | undefined} */
export function selfName() {
  return raw.selfName();
}

/** The largest payload `send` accepts from this guest, in bytes. @returns {bigint} */
export function maxMessageSize() {
  return raw.maxMessageSize();
}

/** The guest's arguments, its program name first. @returns {string[]} */
export function args() {
  return getArguments();
}

function me() {
  return selfName() ?? `guest ${selfId()}`;
}

// --- the entry point -------------------------------------------------------

/** Thrown by `exit` to end `main` with a code. */
class Exit {
  constructor(code) { this.code = code; }
}

/** End the guest with exit code `code`, from anywhere inside `main`. @param {number} code */
export function exit(code) {
  throw new Exit(code);
}

/**
 * The `wasi:cli/run` export componentize-js runs: `export const run = entry(main)`.
 * `main` returning ends the guest with exit code 0, `exit(n)` with `n`; an
 * uncaught exception is printed with its stack and ends it with 1, as Node does.
 * @param {(args: string[]) => void} main
 */
export function entry(main) {
  return {
    run() {
      let code = 0;
      try {
        main(args());
      } catch (error) {
        if (error instanceof Exit) {
          code = error.code;
        } else {
          console.error(error instanceof Error ? (error.stack ? `${error}\n${error.stack}` : String(error)) : `Uncaught ${String(error)}`);
          code = 1;
        }
      }
      if (code !== 0) exitWithCode(code & 0xff || 1);
    },
  };
}
