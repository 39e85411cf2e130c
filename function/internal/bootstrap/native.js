// edgekit native-protocol bootstrap for Node.js functions, standard library
// only: invocations on fd 3 (from the host), replies on fd 4, metrics and
// calls of the gateway on fd 5 (to the host), the calls' answers on fd 6,
// as package function/native documents. Handlers,
// context, results and errors as in bootstrap.js (edgekit_common.js).
'use strict';
const fs = require('fs');
const net = require('net');
const path = require('path');
const common = require(path.join(__dirname, 'edgekit_common.js'));

function frame(type, body, fd = 4) {
  const out = Buffer.allocUnsafe(5 + body.length);
  out.writeUInt32LE(body.length + 1, 0);
  out[4] = type.charCodeAt(0);
  body.copy(out, 5);
  let off = 0;
  while (off < out.length) off += fs.writeSync(fd, out, off);
}

// wrote is set when the function writes to stdout or stderr (console
// and process.stdout/stderr go through write): the reply then says so
// ('W'), and the host makes sure those lines are logged before the
// invocation's REPORT. Output of the function's own child processes is not
// counted; it is logged as it comes.
let wrote = false;
for (const stream of [process.stdout, process.stderr]) {
  const write = stream.write;
  stream.write = function countedWrite(...args) {
    wrote = true;
    return write.apply(this, args);
  };
}

// seqFrame writes a frame of seq and payload (a Buffer, or a string sent
// as UTF-8, written straight into the frame), after a 'W' frame when the
// invocation wrote output.
function seqFrame(type, seq, payload) {
  const w = wrote ? 13 : 0;
  wrote = false;
  const text = typeof payload === 'string';
  const n = text ? Buffer.byteLength(payload) : payload.length;
  const out = Buffer.allocUnsafe(w + 13 + n);
  if (w) {
    out.writeUInt32LE(9, 0);
    out[4] = 87; // 'W'
    out.writeBigUInt64LE(seq, 5);
  }
  out.writeUInt32LE(9 + n, w);
  out[w + 4] = type.charCodeAt(0);
  out.writeBigUInt64LE(seq, w + 5);
  if (text) out.write(payload, w + 13);
  else payload.copy(out, w + 13);
  let off = 0;
  while (off < out.length) off += fs.writeSync(4, out, off);
}

function errorJSON(err) {
  return JSON.stringify(common.errorFields(err));
}

// metric sends a metric frame on fd 5.
function metric(name, value) {
  const n = Buffer.from(String(name));
  const body = Buffer.allocUnsafe(2 + n.length + 8);
  body.writeUInt16LE(n.length, 0);
  n.copy(body, 2);
  body.writeDoubleLE(Number(value), 2 + n.length);
  frame('M', body, 5);
}

function context(deadline, meta) {
  return common.contextFor({
    requestId: meta.requestId,
    deadline,
    clientContext: meta.source ? { custom: meta.source } : undefined,
    traceparent: meta.traceparent,
    tracestate: meta.tracestate,
    metric,
  });
}

// xray is the W3C trace context in the X-Ray form Lambda puts in
// _X_AMZN_TRACE_ID.
function xray(tp) {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(tp || '');
  if (!m) return null;
  return `Root=1-${m[1].slice(0, 8)}-${m[1].slice(8)};Parent=${m[2]};Sampled=${Number.parseInt(m[3], 16) & 1}`;
}

// nativeCalls is the gateway API's transport: call frames on fd 5, their
// answers (result or error frames whose seq is the call's id) on fd 6,
// read by a socket opened at the first call and counted by the event loop
// only while a call waits.
function nativeCalls() {
  let next = 0n;
  const pending = new Map();
  let answers = null;
  let buf = Buffer.alloc(0);
  const settle = (id, f) => {
    const p = pending.get(id);
    if (!p) return;
    pending.delete(id);
    if (p.timer) clearTimeout(p.timer);
    if (pending.size === 0) answers.unref();
    f(p);
  };
  const failAll = (why) => {
    for (const id of [...pending.keys()]) settle(id, (p) => p.reject(new common.EdgekitError('Unavailable', why)));
  };
  function open() {
    answers = new net.Socket({ fd: 6, readable: true, writable: false });
    answers.on('data', (chunk) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 4) {
        const n = buf.readUInt32LE(0);
        if (buf.length < 4 + n) break;
        const body = buf.subarray(4, 4 + n);
        buf = buf.subarray(4 + n);
        if (n < 9) continue;
        const ok = body[0] === 79; // 'O'; else 'E'
        const payload = Buffer.from(body.subarray(9));
        settle(body.readBigUInt64LE(1), (p) => {
          if (ok) return p.resolve(payload);
          let e;
          try {
            e = JSON.parse(payload.toString('utf8'));
          } catch {
            e = { errorType: 'Error', errorMessage: payload.toString('utf8') };
          }
          p.reject(new common.EdgekitError(e.errorType || 'Error', e.errorMessage, e.stackTrace));
        });
      }
    });
    answers.on('error', (err) => failAll(`the gateway's answers: ${err.message}`));
    answers.on('end', () => failAll('the gateway closed its answers'));
  }
  // callBody is a call frame's body: id 0 wants no answer.
  const callBody = (id, method, args, payload, deadline) => {
    const m = Buffer.from(method);
    const a = Buffer.from(JSON.stringify(args));
    const body = Buffer.allocUnsafe(18 + m.length + 4 + a.length + payload.length);
    body.writeBigUInt64LE(id, 0);
    body.writeBigInt64LE(BigInt(deadline || 0), 8);
    body.writeUInt16LE(m.length, 16);
    m.copy(body, 18);
    body.writeUInt32LE(a.length, 18 + m.length);
    a.copy(body, 22 + m.length);
    payload.copy(body, 22 + m.length + a.length);
    return body;
  };
  const late = (method, deadline) => deadline && Date.now() >= deadline
    ? new common.EdgekitError('Timeout', `${method}: the invocation's deadline has passed`) : null;
  // callsNoWait makes a call that wants no answer: the gateway carries such calls
  // out in order and keeps their refusals for the next flush call.
  common.callsNoWait = (method, args, payload, deadline) => {
    const e = late(method, deadline);
    if (e) throw e;
    frame('C', callBody(0n, method, args, payload, deadline), 5);
  };
  return function call(method, args, payload, deadline) {
    const e = late(method, deadline);
    if (e) return Promise.reject(e);
    if (!answers) open();
    next += 1n;
    const id = next;
    const body = callBody(id, method, args, payload, deadline);
    return new Promise((resolve, reject) => {
      const p = { resolve, reject, timer: null };
      if (deadline) {
        p.timer = setTimeout(() => settle(id, (q) => q.reject(new common.EdgekitError('Timeout', `${method}: no answer by the deadline`))), deadline - Date.now());
      }
      if (pending.size === 0) answers.ref();
      pending.set(id, p);
      frame('C', body, 5);
    });
  };
}
common.calls = nativeCalls();
common.logRecord = (level, text) => {
  const t = Buffer.from(String(text));
  const body = Buffer.allocUnsafe(1 + t.length);
  body[0] = level;
  t.copy(body, 1);
  frame('L', body, 5);
};

async function invoke(handler, seq, deadline, meta, payload) {
  if (common.service === 'lambda') common.setTraceId(meta.traceparent ? xray(meta.traceparent) : null);
  try {
    const run = common.isDriverOp(meta.source)
      ? () => common.serveDriverOp(payload)
      : () => common.invoke(handler, common.decodeEvent(payload), context(deadline, meta));
    const inv = common.invocations;
    const [body] = common.encodeResult(await (inv ? inv.run({ deadline }, run) : run()));
    seqFrame('O', seq, body);
  } catch (e) {
    seqFrame('E', seq, errorJSON(e));
  }
}

async function main() {
  let handler;
  try {
    handler = await common.loadHandler();
  } catch (e) {
    frame('I', Buffer.from(errorJSON(e)));
    process.exit(1);
  }
  wrote = false; // what loading printed is not an invocation's
  // Frames arrive on fd 3; invocations run one at a time, in order.
  let pending = Buffer.alloc(0);
  let chain = Promise.resolve();
  // A socket, not fs.createReadStream: its reads wait in the event loop,
  // not on the thread pool, which costs tens of microseconds per frame.
  const input = new net.Socket({ fd: 3, readable: true, writable: false });
  // While an invocation waits for the event loop to empty, the pipe does
  // not count.
  common.setIdleHooks(() => input.unref(), () => input.ref());
  input.on('data', (chunk) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= 4) {
      const n = pending.readUInt32LE(0);
      if (pending.length < 4 + n) break;
      const body = pending.subarray(4, 4 + n);
      pending = pending.subarray(4 + n);
      if (body[0] === 75) { // 'K': the configuration changed, between invocations
        const text = body.subarray(1).toString('utf8');
        process.env.EDGEKIT_FUNCTION_CONFIG = text === 'null' ? '' : text; // what later invocations read
        const cfg = JSON.parse(text || 'null');
        chain = chain.then(() => common.configChanged(cfg));
        continue;
      }
      if (body[0] !== 'V'.charCodeAt(0)) continue;
      const seq = body.readBigUInt64LE(1);
      const deadline = Number(body.readBigInt64LE(9));
      const m = body.readUInt32LE(17);
      const meta = JSON.parse(body.subarray(21, 21 + m).toString('utf8') || '{}');
      // Lambda's event is parsed from the frame in place; FC's handler
      // gets the bytes, copied so as not to hold the whole read.
      const view = body.subarray(21 + m);
      const payload = common.service === 'fc' ? Buffer.from(view) : view;
      chain = chain.then(() => invoke(handler, seq, deadline, meta, payload));
    }
  });
  input.on('end', () => process.exit(0));
  frame('R', Buffer.from('counts-output'));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
