// Test functions for the Node.js bootstrap.
exports.asyncHandler = async (event, context) => {
  console.log(`node handling ${context.awsRequestId}`);
  return {
    event,
    requestId: context.awsRequestId,
    functionName: context.functionName,
    remaining: context.getRemainingTimeInMillis(),
    custom: context.clientContext && context.clientContext.custom,
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
