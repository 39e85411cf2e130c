// A Node.js function that makes the gateway API call its event names and
// answers {answer} or {error: {type, message, is, stack}}, as the native Go
// test function's api behaviour does (function/internal/testfunctions).
const edgekit = require('edgekit');

// A changed configuration is published on outputs/{name}/config.
edgekit.onConfigChange((cfg) => edgekit.publish(`outputs/${process.env.AWS_LAMBDA_FUNCTION_NAME}/config`, cfg));

exports.handler = async (c, context) => {
  try {
    let answer;
    switch (c.call) {
      case 'publish':
        for (let i = 0; i < Math.max(c.repeat || 0, 1); i++) {
          await edgekit.publish(c.topic, c.repeat ? String(i) : (c.payload || ''), { qos: c.qos, userProperties: { from: 'node' }, noWait: c.noWait });
        }
        if (c.noWait) await edgekit.flush();
        break;
      case 'invoke':
        answer = await edgekit.invoke(c.function, c.payload);
        break;
      case 'invoke-async':
        await edgekit.invoke(c.function, c.payload, { async: true });
        break;
      case 'get':
        for (let i = 0; i < Math.max(c.repeat || 0, 1); i++) answer = await edgekit.getProperties(c.device, c.ids);
        break;
      case 'set':
        answer = await edgekit.setProperties(c.device, c.values);
        break;
      case 'service':
        answer = await edgekit.callService(c.device, c.service, c.values);
        break;
      case 'list':
        answer = await edgekit.listDevices(c.labels);
        break;
      case 'log':
        edgekit.log(c.level || 'warn', c.payload);
        break;
      case 'config':
        answer = await edgekit.getConfig();
        break;
      case 'late':
        // A timer the invocation started calls after its deadline.
        setTimeout(() => {
          edgekit.publish(c.topic, 'late').then(
            () => console.log('late call: taken'),
            (e) => console.log(`late call: ${e.type}`));
        }, context.getRemainingTimeInMillis() + 20);
        answer = 'scheduled';
        break;
      default:
        throw new Error(`unknown call ${c.call}`);
    }
    return { answer: answer === undefined ? null : answer };
  } catch (e) {
    if (!(e instanceof edgekit.EdgekitError)) throw e;
    return { error: { type: e.type, message: e.message, is: e.type, stack: e.stackTrace || null } };
  }
};
