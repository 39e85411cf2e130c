// edgekit bootstrap for Node.js functions: the runtime API loop of the
// function's service — Lambda's (AWS_LAMBDA_RUNTIME_API, 2018-06-01) or
// Function Compute's (FC_RUNTIME_API, 2020-11-11) — standard library only.
// The host runs `node bootstrap.js` in the code directory with _HANDLER
// ("file.export"); edgekit_common.js has the handler styles, the context
// and the shapes of results and errors.
'use strict';
const http = require('http');
const path = require('path');
const common = require(path.join(__dirname, 'edgekit_common.js'));

const fc = common.service === 'fc';
// The gateway API over the local API (the gateway gives each function its
// address and a token of its own).
if (process.env.EDGEKIT_API && process.env.EDGEKIT_API_TOKEN) {
  common.calls = common.httpCalls(process.env.EDGEKIT_API, process.env.EDGEKIT_API_TOKEN);
}
const profile = fc
  ? { addr: process.env.FC_RUNTIME_API, prefix: '/2020-11-11/runtime', ok: 200, id: 'x-fc-request-id', deadline: 'x-fc-function-deadline' }
  : { addr: process.env.AWS_LAMBDA_RUNTIME_API, prefix: '/2018-06-01/runtime', ok: 202, id: 'lambda-runtime-aws-request-id', deadline: 'lambda-runtime-deadline-ms' };

// The address is host:port, optionally followed by a path prefix (the
// instance's secret on edgekit): host:port/prefix.
const slash = profile.addr.indexOf('/');
const [host, port] = (slash < 0 ? profile.addr : profile.addr.slice(0, slash)).split(':');
// Idle keep-alive sockets are unref'd by the agent: between requests they
// do not keep the event loop from emptying.
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const base = (slash < 0 ? '' : profile.addr.slice(slash)) + profile.prefix;

function request(method, urlPath, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path: base + urlPath, agent, headers: headers || {} }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function postError(urlPath, err) {
  const fields = common.errorFields(err);
  return request('POST', urlPath, JSON.stringify(fields), {
    'Content-Type': 'application/json',
    'Lambda-Runtime-Function-Error-Type': fields.errorType,
  });
}

function context(h) {
  const f = { requestId: h[profile.id], deadline: Number(h[profile.deadline]) };
  if (fc) {
    f.headers = h;
  } else {
    f.arn = h['lambda-runtime-invoked-function-arn'];
    f.clientContext = h['lambda-runtime-client-context'];
    f.identity = h['lambda-runtime-cognito-identity'];
  }
  return common.contextFor(f);
}

async function main() {
  let handler;
  try {
    handler = await common.loadHandler();
  } catch (e) {
    console.error(e);
    if (!fc) await postError('/init/error', e);
    process.exit(1);
  }
  for (;;) {
    const next = await request('GET', '/invocation/next');
    if (next.status !== 200) {
      console.error(`runtime API /next answered ${next.status}: ${next.body}`);
      process.exit(1);
    }
    const h = next.headers;
    const id = h[profile.id];
    if (!fc) {
      common.setTraceId(h['lambda-runtime-trace-id']);
    }
    let posted;
    try {
      const run = () => common.invoke(handler, common.decodeEvent(next.body), context(h));
      const inv = common.invocations;
      const deadline = Number(h[profile.deadline]) || 0;
      const [body, type] = common.encodeResult(await (inv ? inv.run({ deadline }, run) : run()));
      posted = await request('POST', `/invocation/${id}/response`, body, { 'Content-Type': type });
    } catch (e) {
      posted = await postError(`/invocation/${id}/error`, e);
    }
    if (posted.status !== profile.ok) {
      console.error(`runtime API refused the result (${posted.status}): ${posted.body}`);
      process.exit(1);
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
