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
