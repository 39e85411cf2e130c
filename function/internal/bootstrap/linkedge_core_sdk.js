// linkedge-core-sdk: Link IoT Edge's core SDK for Node.js functions, as its
// documentation describes it (IoTData, FCClient), on edgekit's function
// API (the edgekit module beside it). Code written for Link IoT Edge that
// requires it runs unchanged. Standard library only; edgekit's own code.
//
// How the calls map:
//   - IoTData.publish({topic, payload}): a publish; the function's
//     permissions must allow the topic.
//   - getThingProperties / setThingProperties / callThingService
//     ({productKey, deviceName, [service], payload}): the device named
//     deviceName (its label productKey, when it has one, names its
//     product); the result is {code: 0, message: 'success', output}.
//   - getThingsWithTags({payload: [{key: value}, ...]}): the devices that
//     carry every label, as [{productKey, deviceName}].
//   - FCClient.invokeFunction({functionId | serviceName + functionName,
//     invocationType, payload}): the function of that name (functionId or
//     functionName); the result is {statusCode, functionError, payload}.
// Callbacks get (err, data) as the SDK's do; an error is the gateway's
// refusal (an EdgekitError, whose type says why) or a missing parameter.
'use strict';
const edgekit = require('edgekit');

function required(params, name) {
  if (!params || params[name] === undefined || params[name] === null) {
    throw new Error(`Can't find required parameter "${name}".`);
  }
  return params[name];
}

// settle runs f and hands its outcome to callback (when given), and
// returns the promise too.
function settle(f, callback) {
  let p;
  try {
    p = Promise.resolve(f());
  } catch (e) {
    p = Promise.reject(e);
  }
  if (typeof callback === 'function') p.then((v) => callback(null, v), (e) => callback(e));
  else p.catch(() => {}); // the caller asked for no answer
  return p;
}

class IoTData {
  publish(params, callback) {
    return settle(async () => {
      const topic = required(params, 'topic');
      await edgekit.publish(topic, required(params, 'payload'));
    }, callback);
  }

  getThingProperties(params, callback) {
    return settle(() => this.thing(params, 'get', required(params, 'payload')), callback);
  }

  setThingProperties(params, callback) {
    return settle(() => this.thing(params, 'set', required(params, 'payload')), callback);
  }

  callThingService(params, callback) {
    return settle(() => this.thing(params, required(params, 'service'), params && params.payload), callback);
  }

  async thing(params, service, payload) {
    required(params, 'productKey');
    const device = required(params, 'deviceName');
    let output;
    if (service === 'get') {
      output = (await edgekit.getProperties(device, payload)).properties;
    } else if (service === 'set') {
      const results = await edgekit.setProperties(device, payload);
      const failed = Object.entries(results).filter(([, why]) => why !== null);
      if (failed.length) throw new edgekit.EdgekitError('InvalidValue', failed.map(([id, why]) => `${id}: ${why}`).join('; '));
      output = {};
    } else {
      const input = typeof payload === 'string' || Buffer.isBuffer(payload) ? JSON.parse(payload.toString()) : payload;
      output = await edgekit.callService(device, service, input || undefined);
    }
    return { code: 0, message: 'success', output };
  }

  getThingsWithTags(params, callback) {
    return settle(async () => {
      const labels = Object.assign({}, ...required(params, 'payload'));
      const devices = await edgekit.listDevices(labels);
      return devices.map((d) => ({ productKey: (d.labels && d.labels.productKey) || '', deviceName: d.name }));
    }, callback);
  }
}

class FCClient {
  invokeFunction(params, callback) {
    return settle(async () => {
      const name = (params && params.functionId) || required(params, 'functionName');
      const type = (params && params.invocationType) || 'Sync';
      if (type !== 'Sync' && type !== 'Async') throw new Error(`invocationType ${type}: want Sync or Async`);
      const payload = params.payload === undefined ? '' : params.payload;
      if (type === 'Async') {
        await edgekit.invoke(name, payload, { async: true });
        return { statusCode: 202, functionError: '', payload: Buffer.alloc(0) };
      }
      try {
        return { statusCode: 200, functionError: '', payload: await edgekit.invoke(name, payload, { raw: true }) };
      } catch (e) {
        // The function's own error, as Lambda's and FC's are: in the payload.
        if (!(e instanceof edgekit.EdgekitError) || ['Forbidden', 'BadRequest', 'Timeout', 'Unavailable', 'TooManyCalls', 'UnknownFunction', 'Throttled'].includes(e.type)) throw e;
        const body = { errorType: e.type, errorMessage: e.message, stackTrace: e.stackTrace || [] };
        return { statusCode: 200, functionError: 'Unhandled', payload: Buffer.from(JSON.stringify(body)) };
      }
    }, callback);
  }
}

module.exports = { IoTData, FCClient };
