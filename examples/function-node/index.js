// An edge function written for AWS Lambda's Node.js runtime, unchanged: its
// configuration comes in an environment variable, as Lambda's does.
const config = JSON.parse(process.env.EDGEKIT_FUNCTION_CONFIG || '{}');
const threshold = config.threshold ?? 80;

// A reading is {device, temperature}, or a device report from the
// gateway's bus: {device, time, properties: {temperature, ...}}.
exports.handler = async (event, context) => {
  if (!event || !event.device) throw new Error('reading without a device');
  const temperature = event.properties ? event.properties.temperature : event.temperature;
  console.log(`checking ${event.device}`);
  return { device: event.device, alarm: temperature > threshold, temperature, threshold, requestId: context.awsRequestId };
};
