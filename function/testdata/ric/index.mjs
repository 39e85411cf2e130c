// Handlers as a Lambda function started by aws-lambda-ric has them.
export const handler = async (event, context) => ({
  ric: true,
  event,
  requestId: context.awsRequestId,
  functionName: context.functionName,
  arn: context.invokedFunctionArn,
  memory: context.memoryLimitInMB,
  logGroup: context.logGroupName,
  logStream: context.logStreamName,
  remaining: context.getRemainingTimeInMillis() > 0,
});

export const failing = async () => {
  throw new TypeError('bad reading from the ric');
};
