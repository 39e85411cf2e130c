// An ES module handler, as new Lambda functions are written.
export const handler = async (event, context) => ({ esm: true, event, requestId: context.awsRequestId });
