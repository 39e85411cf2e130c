// edgekit native-protocol bootstrap for Node.js functions, standard library
// only: invocations on fd 3 (from the host), replies on fd 4 and metrics on
// fd 5 (to the host), as package function/native documents. Handlers as in bootstrap.js: async, returning
// a value or a promise, or the callback style.
'use strict';
const fs = require('fs');
const net = require('net');
const path = require('path');
const { loadHandler, call, errorFields } = require(path.join(__dirname, 'edgekit_common.js'));

function frame(type, body, fd = 4) {
  const out = Buffer.allocUnsafe(5 + body.length);
  out.writeUInt32LE(body.length + 1, 0);
  out[4] = type.charCodeAt(0);
  body.copy(out, 5);
  let off = 0;
  while (off < out.length) off += fs.writeSync(fd, out, off);
}

function seqFrame(type, seq, payload) {
  const body = Buffer.allocUnsafe(8 + payload.length);
  body.writeBigUInt64LE(seq, 0);
  payload.copy(body, 8);
  frame(type, body);
}

function errorJSON(err) {
  return Buffer.from(JSON.stringify(errorFields(err)));
}

let handler;
try {
  handler = loadHandler();
} catch (e) {
  frame('I', errorJSON(e));
  process.exit(1);
}
frame('R', Buffer.alloc(0));

async function invoke(seq, deadline, meta, payload) {
  let event;
  try { event = JSON.parse(payload.toString('utf8')); } catch { event = payload.toString('utf8'); }
  const context = {
    awsRequestId: meta.requestId,
    functionName: meta.function,
    functionVersion: meta.version,
    clientContext: meta.source ? { custom: meta.source } : null,
    traceparent: meta.traceparent || null,
    tracestate: meta.tracestate || null,
    getRemainingTimeInMillis: () => deadline - Date.now(),
    metric: (name, value) => {
      const n = Buffer.from(String(name));
      const body = Buffer.allocUnsafe(2 + n.length + 8);
      body.writeUInt16LE(n.length, 0);
      n.copy(body, 2);
      body.writeDoubleLE(Number(value), 2 + n.length);
      frame('M', body, 5);
    },
  };
  try {
    const result = await call(handler, event, context);
    seqFrame('O', seq, Buffer.from(JSON.stringify(result === undefined ? null : result)));
  } catch (e) {
    seqFrame('E', seq, errorJSON(e));
  }
}

// Frames arrive on fd 3; invocations run one at a time, in order.
let pending = Buffer.alloc(0);
let chain = Promise.resolve();
// A socket, not fs.createReadStream: its reads wait in the event loop, not
// on the thread pool, which costs tens of microseconds per frame.
const input = new net.Socket({ fd: 3, readable: true, writable: false });
input.on('data', (chunk) => {
  pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
  while (pending.length >= 4) {
    const n = pending.readUInt32LE(0);
    if (pending.length < 4 + n) break;
    const body = pending.subarray(4, 4 + n);
    pending = pending.subarray(4 + n);
    if (body[0] !== 'V'.charCodeAt(0)) continue;
    const seq = body.readBigUInt64LE(1);
    const deadline = Number(body.readBigInt64LE(9));
    const m = body.readUInt32LE(17);
    const meta = JSON.parse(body.subarray(21, 21 + m).toString('utf8') || '{}');
    const payload = Buffer.from(body.subarray(21 + m));
    chain = chain.then(() => invoke(seq, deadline, meta, payload));
  }
});
input.on('end', () => process.exit(0));
