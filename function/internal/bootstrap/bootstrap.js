// edgekit bootstrap for Node.js functions: the Lambda Runtime API loop,
// standard library only. The host runs `node bootstrap.js` with
// LAMBDA_TASK_ROOT (the code directory) and _HANDLER ("file.export").
// Handlers: `async (event, context)`, `(event, context)` returning a value
// or a promise, or the callback style `(event, context, callback)`.
'use strict';
const http = require('http');
const path = require('path');
const { loadHandler, call, errorFields } = require(path.join(__dirname, 'edgekit_common.js'));

// The address is host:port, optionally followed by a path prefix (the
// instance's secret on edgekit): host:port/prefix.
const api = process.env.AWS_LAMBDA_RUNTIME_API;
const slash = api.indexOf('/');
const [host, port] = (slash < 0 ? api : api.slice(0, slash)).split(':');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const base = (slash < 0 ? '' : api.slice(slash)) + '/2018-06-01/runtime';

function request(method, urlPath, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path: base + urlPath, agent, headers: headers || {} }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function errorBody(err) {
  return JSON.stringify(errorFields(err));
}

async function main() {
  let handler;
  try {
    handler = loadHandler();
  } catch (e) {
    await request('POST', '/init/error', errorBody(e), { 'Lambda-Runtime-Function-Error-Type': 'Runtime.ImportModuleError' });
    process.exit(1);
  }
  for (;;) {
    const next = await request('GET', '/invocation/next');
    if (next.status !== 200) {
      console.error(`runtime API /next answered ${next.status}: ${next.body}`);
      process.exit(1);
    }
    const id = next.headers['lambda-runtime-aws-request-id'];
    const deadline = Number(next.headers['lambda-runtime-deadline-ms']);
    let clientContext;
    try { clientContext = JSON.parse(next.headers['lambda-runtime-client-context'] || 'null'); } catch { clientContext = null; }
    const context = {
      awsRequestId: id,
      invokedFunctionArn: next.headers['lambda-runtime-invoked-function-arn'],
      functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
      functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
      memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
      clientContext,
      callbackWaitsForEmptyEventLoop: false,
      getRemainingTimeInMillis: () => deadline - Date.now(),
    };
    let event;
    try { event = JSON.parse(next.body); } catch { event = next.body; }
    let posted;
    try {
      const result = await call(handler, event, context);
      posted = await request('POST', `/invocation/${id}/response`, JSON.stringify(result === undefined ? null : result), { 'Content-Type': 'application/json' });
    } catch (e) {
      posted = await request('POST', `/invocation/${id}/error`, errorBody(e), { 'Lambda-Runtime-Function-Error-Type': (e && e.name) || 'Error' });
    }
    if (posted.status !== 202) {
      console.error(`runtime API refused the result (${posted.status}): ${posted.body}`);
      process.exit(1);
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
