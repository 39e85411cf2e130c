// An edge function written for AWS Lambda's Node.js runtime, unchanged.
exports.handler = async (event, context) => {
  const threshold = 80;
  if (!event || !event.device) throw new Error('reading without a device');
  console.log(`checking ${event.device}`);
  return { device: event.device, alarm: event.temperature > threshold, threshold, requestId: context.awsRequestId };
};
