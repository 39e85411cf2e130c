// Test functions for the Node.js bootstrap.
exports.asyncHandler = async (event, context) => {
  console.log(`node handling ${context.awsRequestId}`);
  return {
    event,
    requestId: context.awsRequestId,
    functionName: context.functionName,
    remaining: context.getRemainingTimeInMillis(),
    custom: context.clientContext && context.clientContext.custom,
    traceparent: context.traceparent,
    tracestate: context.tracestate,
  };
};

exports.callbackHandler = (event, context, callback) => {
  setTimeout(() => callback(null, { callback: true, event }), 5);
};

exports.failing = async () => {
  throw new TypeError('bad reading');
};

exports.callbackError = (event, context, callback) => {
  callback(new RangeError('out of range'));
};

exports.echo = async (event) => event;

// byEvent does what the event's "do" says: hang (never answers), crash (the
// process exits during the invocation), throw; anything else echoes.
exports.byEvent = async (event) => {
  switch (event.do) {
    case 'hang':
      return new Promise(() => {});
    case 'crash':
      process.exit(5);
    case 'throw':
      throw new Error('asked to throw');
  }
  return event;
};

// context.succeed answers at once (the legacy style).
exports.succeed = (event, context) => {
  context.succeed({ succeeded: event });
};

// context.fail answers with an error at once.
exports.fail = (event, context) => {
  context.fail(new Error('failed through the context'));
};

// A callback with a string error: Lambda types it "string".
exports.callbackString = (event, context, callback) => {
  callback('plain text error');
};

// With callbackWaitsForEmptyEventLoop (Lambda's default) the answer goes
// when the timer the handler left has run, so the result shows its work.
exports.waits = (event, context, callback) => {
  const r = { waits: context.callbackWaitsForEmptyEventLoop, timer: false };
  setTimeout(() => {
    r.timer = true;
  }, 20);
  callback(null, r);
};

// Without it the answer goes at once.
exports.noWait = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = false;
  const r = { timer: false };
  setTimeout(() => {
    r.timer = true;
  }, 20);
  callback(null, r);
};

// A handler that never answers ends with null once its work is done.
exports.silent = (event, context, callback) => {
  setTimeout(() => {}, 5);
};

// context is every member of Lambda's context object, with its type.
exports.context = async (event, context) => {
  const out = {};
  for (const k of Object.keys(context)) out[k] = typeof context[k];
  return {
    types: out,
    memoryLimitInMB: context.memoryLimitInMB,
    invokedFunctionArn: context.invokedFunctionArn,
    logGroupName: context.logGroupName,
    logStreamName: context.logStreamName,
    functionVersion: context.functionVersion,
    callbackWaitsForEmptyEventLoop: context.callbackWaitsForEmptyEventLoop,
    executionEnv: process.env.AWS_EXECUTION_ENV,
    traceId: process.env._X_AMZN_TRACE_ID || null,
  };
};

// A result JSON cannot hold.
exports.circular = async () => {
  const r = {};
  r.self = r;
  return r;
};

// fc is a Function Compute handler: the event is a Buffer, the context FC's.
exports.fc = (event, context, callback) => {
  context.logger.info('fc handling');
  callback(null, {
    isBuffer: Buffer.isBuffer(event),
    text: event.toString(),
    requestId: context.requestId,
    function: context.function,
    service: context.service,
    credentials: context.credentials,
    region: context.region,
    accountId: context.accountId,
    remaining: context.getRemainingTimeInMillis() > 0,
  });
};

// fcText answers FC's way with a string: its bytes, not JSON.
exports.fcText = async (event) => 'plain ' + event.toString();
