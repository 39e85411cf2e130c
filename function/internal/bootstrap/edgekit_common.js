// What the runtime-API and native Node.js bootstraps share: loading the
// handler named by _HANDLER (CommonJS or ESM), the context object of the
// function's service (Lambda's or Function Compute's, EDGEKIT_SERVICE),
// calling the handler in every style that service allows, and the shapes of
// its results and errors. Standard library only.
'use strict';
const fs = require('fs');
const path = require('path');
const { pathToFileURL } = require('url');
const util = require('util');

const service = process.env.EDGEKIT_SERVICE === 'fc' ? 'fc' : 'lambda';
exports.service = service;

if (service === 'lambda') {
  // What Lambda's managed runtime says of itself.
  process.env.AWS_EXECUTION_ENV = `AWS_Lambda_nodejs${process.versions.node.split('.')[0]}.x`;
}

function named(err, name) {
  err.name = name;
  return err;
}

// The code root: LAMBDA_TASK_ROOT, FC_FUNC_CODE_PATH, else the directory
// the host started the process in.
function codeRoot() {
  return process.env.LAMBDA_TASK_ROOT || process.env.FC_FUNC_CODE_PATH || process.cwd();
}

// isESM tells whether a .js file is an ES module: the nearest package.json
// above it, within the code root, says "type": "module".
function isESM(file, root) {
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, 'utf8')).type === 'module';
      } catch {
        return false;
      }
    }
    if (dir === root || dir === path.dirname(dir)) return false;
  }
}

// loadHandler loads the handler as Lambda's Node.js runtime does: the
// handler "dir/module.fn.nested" is fn.nested of dir/module.js (CommonJS,
// or ESM under "type": "module"), dir/module.mjs (ESM) or dir/module.cjs
// (CommonJS). Errors are Runtime.ImportModuleError, Runtime.HandlerNotFound,
// Runtime.MalformedHandlerName or Runtime.UserCodeSyntaxError, as Lambda
// names them.
exports.loadHandler = async function loadHandler() {
  const spec = process.env._HANDLER || process.env.FC_FUNCTION_HANDLER || '';
  const slash = spec.lastIndexOf('/');
  const base = spec.slice(slash + 1);
  const dot = base.indexOf('.');
  if (dot <= 0 || dot === base.length - 1) {
    throw named(new Error(`Bad handler ${spec}: it must be module.function`), 'Runtime.MalformedHandlerName');
  }
  const root = codeRoot();
  const stem = path.resolve(root, spec.slice(0, slash + 1) + base.slice(0, dot));
  const fnPath = base.slice(dot + 1).split('.');
  let mod;
  try {
    if (fs.existsSync(stem + '.js')) {
      mod = isESM(stem + '.js', root) ? await import(pathToFileURL(stem + '.js').href) : require(stem + '.js');
    } else if (fs.existsSync(stem + '.mjs')) {
      mod = await import(pathToFileURL(stem + '.mjs').href);
    } else if (fs.existsSync(stem + '.cjs')) {
      mod = require(stem + '.cjs');
    } else {
      mod = require(require.resolve(base.slice(0, dot), { paths: [path.dirname(stem)] }));
    }
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND' && String(e.message).includes(base.slice(0, dot))) {
      throw named(new Error(`Cannot find module '${base.slice(0, dot)}' in ${path.dirname(stem)}`), 'Runtime.ImportModuleError');
    }
    if (e instanceof SyntaxError) throw named(new Error(`${e.message} (in ${spec})`), 'Runtime.UserCodeSyntaxError');
    throw e;
  }
  let fn = mod;
  for (const k of fnPath) fn = fn == null ? undefined : fn[k];
  if (typeof fn !== 'function') {
    throw named(new Error(`${spec} is undefined or not exported`), 'Runtime.HandlerNotFound');
  }
  return fn;
};

// setTraceId sets _X_AMZN_TRACE_ID to the invocation's X-Ray trace id, or
// removes it when the invocation has none. It is touched only when that
// changes something: each change of the environment is a call into the C
// library, which an invocation without a trace should not pay.
let traced = false;
exports.setTraceId = function setTraceId(id) {
  if (id) {
    process.env._X_AMZN_TRACE_ID = id;
    traced = true;
  } else if (traced) {
    delete process.env._X_AMZN_TRACE_ID;
    traced = false;
  }
};

// The gateway API (the edgekit module; package function/fnapi names the
// methods). calls is the bootstrap's transport, call(method, args,
// payload, deadline) resolving to the answer's bytes, or null where the
// bootstrap has none. invocations, made when the edgekit module is first
// loaded (so that functions which never call pay nothing for it), carries
// the invocation's deadline into whatever the handler starts: a call from
// a timer that outlives its invocation is refused as late, one from work
// started outside any invocation is bounded by the function's timeout
// alone.
exports.calls = null;
// callsNoWait(method, args, payload, deadline) makes a call that wants no
// answer, where the transport has such calls (the native protocol's id 0).
exports.callsNoWait = null;
exports.invocations = null;
// logRecord(level, text) sends a record at level (0 debug, 1 info, 2 warn,
// 3 error) to the host; the native bootstrap replaces it with a log frame.
// Here it is a line on stdout, or stderr from warn up, which the host logs
// at info or warn.
exports.logRecord = (level, text) => (level >= 2 ? process.stderr : process.stdout).write(`${text}\n`);
exports.trackInvocations = function trackInvocations() {
  if (!exports.invocations) exports.invocations = new (require('async_hooks').AsyncLocalStorage)();
  return exports.invocations;
};

// configListeners are called, in turn, with the function's configuration
// each time a deployment changes it while the instance runs (native
// protocol: the instance is not restarted for it).
const configListeners = [];
exports.onConfigChange = (f) => configListeners.push(f);
exports.configChanged = async function configChanged(cfg) {
  for (const f of configListeners) {
    try {
      await f(cfg);
    } catch (e) {
      console.error('edgekit: a configuration listener failed:', e);
    }
  }
};

// driver serves the gateway's driver ops (package fnapi's DriverOp) once
// the program has registered one (edgekit.driver); serveDriverOp answers
// an invocation whose source is the gateway's driver (source type
// 'edgekit-driver', set only by the gateway).
exports.driver = null;
exports.isDriverOp = (source) => Boolean(source && source.type === 'edgekit-driver');
exports.serveDriverOp = async function serveDriverOp(payload) {
  if (!exports.driver) throw new EdgekitError('Unavailable', 'the gateway asked a driver, and the program registered none (edgekit.driver)');
  return exports.driver(JSON.parse(Buffer.from(payload).toString('utf8')));
};

// EdgekitError is a call the gateway refused or that failed: type is the
// error type (Forbidden, BadRequest, Timeout, Unavailable, TooManyCalls,
// UnknownDevice, InvalidValue, ..., or an invoked function's own).
class EdgekitError extends Error {
  constructor(type, message, stackTrace) {
    super(message);
    this.name = type;
    this.type = type;
    if (stackTrace) this.stackTrace = stackTrace;
  }
}
exports.EdgekitError = EdgekitError;

// httpCalls is the gateway API's transport over the gateway's local API
// (POST {base}/v1/calls/{method}, the function's own bearer token), for
// the runtime-API bootstrap; answers and errors as the native transport's.
exports.httpCalls = function httpCalls(base, token) {
  const http = require('http');
  const url = new URL(base);
  const prefix = url.pathname.replace(/\/$/, '');
  // Idle keep-alive sockets are unref'd by the agent.
  const agent = new http.Agent({ keepAlive: true });
  return (method, args, payload, deadline) => new Promise((resolve, reject) => {
    if (deadline && Date.now() >= deadline) {
      reject(new EdgekitError('Timeout', `${method}: the invocation's deadline has passed`));
      return;
    }
    const body = JSON.stringify({ args, payload: payload.toString('base64') });
    const headers = { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Authorization: `Bearer ${token}` };
    if (deadline) headers['Edgekit-Deadline-Ms'] = String(deadline);
    const req = http.request({ agent, host: url.hostname, port: url.port, method: 'POST', path: `${prefix}/v1/calls/${encodeURIComponent(method)}`, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const b = Buffer.concat(chunks);
        if (res.statusCode === 200) {
          resolve(b);
          return;
        }
        let e = {};
        try {
          e = JSON.parse(b.toString('utf8'));
        } catch {
          // not JSON: the status says it
        }
        reject(new EdgekitError(e.errorType || e.error_type || 'Error', e.errorMessage || e.error || `${method}: HTTP ${res.statusCode}`, e.stackTrace));
      });
    });
    if (deadline) req.setTimeout(Math.max(1, deadline - Date.now()), () => req.destroy(new EdgekitError('Timeout', `${method}: no answer by the deadline`)));
    req.on('error', (err) => reject(err instanceof EdgekitError ? err : new EdgekitError('Unavailable', `${method}: the local API: ${err.message}`)));
    req.end(body);
  });
};

// The one pending "when the event loop is empty" action, as Lambda's
// runtime keeps it: a callback with callbackWaitsForEmptyEventLoop set, or
// a handler that returned without answering, finishes when nothing the
// handler started is left. idle holds the bootstrap's own hooks that let
// the loop empty while it waits (the native bootstrap unrefs its pipe).
let onEmpty = null;
const idle = { pause() {}, resume() {} };
exports.setIdleHooks = (pause, resume) => {
  idle.pause = pause;
  idle.resume = resume;
};
process.on('beforeExit', () => {
  const f = onEmpty;
  if (!f) return;
  onEmpty = null;
  idle.resume();
  f();
});
function whenEmpty(f) {
  if (!onEmpty) idle.pause();
  onEmpty = f;
}
function cancelEmpty(f) {
  if (onEmpty === f) {
    onEmpty = null;
    idle.resume();
  }
}

// invoke calls handler with event and context in any of the styles the
// service allows, and resolves to its result or rejects with its error:
//   - async, or returning a promise: its outcome, at once;
//   - the callback style (event, context, callback): the callback's
//     outcome, once the event loop is empty when
//     context.callbackWaitsForEmptyEventLoop is true (Lambda's default),
//     at once when false;
//   - context.succeed(result), context.fail(error), context.done(error,
//     result): at once;
//   - returning without answering: null once the event loop is empty;
//   - edgekit's own: a synchronous handler of one or two parameters that
//     returns a value answers with it.
// The first answer counts; later ones are ignored.
exports.invoke = function invoke(handler, event, context) {
  return new Promise((resolve, reject) => {
    let done = false;
    let pending = null;
    const finish = (failed, value) => {
      if (done) return;
      done = true;
      if (pending) cancelEmpty(pending);
      if (failed) reject(value);
      else resolve(value);
    };
    const later = (failed, value) => {
      if (done) return;
      if (pending) cancelEmpty(pending);
      pending = () => finish(failed, value);
      whenEmpty(pending);
    };
    const callback = (err, result) => {
      if (err !== null && err !== undefined) {
        if (context.callbackWaitsForEmptyEventLoop) later(true, err);
        else finish(true, err);
      } else if (context.callbackWaitsForEmptyEventLoop) later(false, result);
      else finish(false, result);
    };
    context.succeed = (result) => finish(false, result);
    context.fail = (err) => finish(true, err);
    context.done = (err, result) => (err !== null && err !== undefined ? finish(true, err) : finish(false, result));
    let r;
    try {
      r = handler(event, context, callback);
    } catch (e) {
      finish(true, e);
      return;
    }
    if (r && typeof r.then === 'function') {
      r.then((v) => finish(false, v), (e) => finish(true, e));
    } else if (handler.length < 3 && r !== undefined) {
      finish(false, r);
    } else if (!done && !pending) {
      later(false, null);
    }
  });
};

// errorFields is an error as the service's Node.js runtime reports it:
// Lambda {errorType, errorMessage, trace}, FC {errorType, errorMessage,
// stackTrace}; the stack keeps its first line. A thrown value that is not
// an Error is typed by typeof, as Lambda does (callback('text') is a
// "string" error).
exports.errorFields = function errorFields(err) {
  let out;
  if (err instanceof Error) {
    out = { errorType: err.name || 'Error', errorMessage: err.message, stack: String(err.stack || '').split('\n') };
  } else {
    let msg;
    try {
      msg = typeof err === 'object' && err !== null ? JSON.stringify(err) : String(err);
    } catch {
      msg = String(err);
    }
    out = { errorType: typeof err, errorMessage: msg, stack: [] };
  }
  const key = service === 'fc' ? 'stackTrace' : 'trace';
  return { errorType: out.errorType, errorMessage: out.errorMessage, [key]: out.stack };
};

// encodeResult is a handler's result as the service returns it — a Buffer,
// or a string to be sent as UTF-8 — and its content type: Lambda JSON
// (undefined is null); FC a Buffer or string as its bytes, anything else
// JSON. A result JSON cannot hold throws a Runtime.MarshalError.
exports.encodeResult = function encodeResult(value) {
  if (service === 'fc') {
    if (Buffer.isBuffer(value)) return [value, 'application/octet-stream'];
    if (typeof value === 'string') return [value, 'text/plain; charset=utf-8'];
  }
  let s;
  try {
    s = JSON.stringify(value === undefined ? null : value);
  } catch (e) {
    throw named(new Error(`Unable to stringify response body: ${e.message}`), 'Runtime.MarshalError');
  }
  return [s === undefined ? 'null' : s, 'application/json'];
};

// decodeEvent is the event as the service hands it over: Lambda parses
// JSON (a payload that is not JSON stays a string); FC gives the bytes.
exports.decodeEvent = function decodeEvent(buf) {
  if (service === 'fc') return buf;
  const s = buf.toString('utf8');
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
};

function parseJSON(s) {
  if (!s) return undefined;
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

// What the contexts take from the environment, read once: each read of
// process.env is a call into the C library.
const env = {
  functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
  functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
  arn: process.env.EDGEKIT_FUNCTION_ARN,
  memory: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
  logGroup: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
  logStream: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
  fcName: process.env.FC_FUNCTION_NAME,
  fcHandler: process.env.FC_FUNCTION_HANDLER,
  fcMemory: process.env.FC_FUNCTION_MEMORY_SIZE,
  fcTimeout: process.env.EDGEKIT_FUNCTION_TIMEOUT,
  fcService: process.env.FC_SERVICE_NAME,
  fcQualifier: process.env.FC_QUALIFIER,
  fcVersion: process.env.FC_FUNCTION_VERSION,
  fcRegion: process.env.FC_REGION,
  fcAccount: process.env.FC_ACCOUNT_ID,
};

// lambdaMembers are Lambda's own context members for one invocation
// (f.clientContext: the runtime API's JSON header, or the object itself).
function lambdaMembers(f) {
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: env.functionName,
    functionVersion: env.functionVersion,
    invokedFunctionArn: f.arn || env.arn,
    memoryLimitInMB: env.memory,
    awsRequestId: f.requestId,
    logGroupName: env.logGroup,
    logStreamName: env.logStream,
    identity: parseJSON(f.identity),
    clientContext: typeof f.clientContext === 'string' ? parseJSON(f.clientContext) : f.clientContext,
  };
}

function logger(requestId) {
  const line = (level, stream) => (...args) => {
    stream.write(`${new Date().toISOString()} ${requestId} [${level}] ${util.format(...args)}\n`);
  };
  return {
    debug: line('DEBUG', process.stdout),
    info: line('INFO', process.stdout),
    log: line('INFO', process.stdout),
    warn: line('WARNING', process.stderr),
    error: line('ERROR', process.stderr),
  };
}

// fcMembers are Function Compute's own context members for one
// invocation. The credentials are empty: the edge has no STS.
function fcMembers(f) {
  const h = f.headers || {};
  const num = (v) => (v === undefined || v === '' ? undefined : Number(v));
  return {
    callbackWaitsForEmptyEventLoop: false,
    requestId: f.requestId,
    credentials: {
      accessKeyId: h['x-fc-access-key-id'] || '',
      accessKeySecret: h['x-fc-access-key-secret'] || '',
      securityToken: h['x-fc-security-token'] || '',
    },
    function: {
      name: h['x-fc-function-name'] || env.fcName,
      handler: h['x-fc-function-handler'] || env.fcHandler,
      memory: num(h['x-fc-function-memory'] || env.fcMemory),
      timeout: num(h['x-fc-function-timeout'] || env.fcTimeout),
    },
    service: {
      name: h['x-fc-service-name'] || env.fcService,
      logProject: '',
      logStore: '',
      qualifier: h['x-fc-qualifier'] || env.fcQualifier,
      versionId: env.fcVersion,
    },
    region: h['x-fc-region'] || env.fcRegion,
    accountId: h['x-fc-account-id'] || env.fcAccount,
    retryCount: 0,
    logger: logger(f.requestId),
  };
}

const serviceMembers = service === 'fc' ? fcMembers : lambdaMembers;

// contextFor is the service's context object for one invocation (f: its
// request id, deadline and what came with it). Every member is there from
// the start (invoke sets succeed, fail and done; the native bootstrap
// brings traceparent, tracestate and metric): an object whose shape does
// not change stays on V8's fast path. The shared members are added to the
// service's object, not spread into a new one: a spread costs five times
// the rest of the context.
exports.contextFor = function contextFor(f) {
  const c = serviceMembers(f);
  c.succeed = null;
  c.fail = null;
  c.done = null;
  c.traceparent = f.traceparent || null;
  c.tracestate = f.tracestate || null;
  c.metric = f.metric;
  c.getRemainingTimeInMillis = () => f.deadline - Date.now();
  return c;
};
