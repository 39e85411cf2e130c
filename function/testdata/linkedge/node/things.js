// A function written to Link IoT Edge's core SDK documentation: it sets a
// thing's property, reads it back, calls a service and finds things by
// tag, and answers what it got. The event names the thing.
'use strict';
const leSdk = require('linkedge-core-sdk');

const iotData = new leSdk.IoTData();

function promised(f, params) {
  return new Promise((resolve, reject) => f.call(iotData, params, (err, data) => (err ? reject(err) : resolve(data))));
}

exports.handler = function (event, context, callback) {
  const thing = JSON.parse(event.toString());
  const got = {};
  promised(iotData.setThingProperties, { productKey: thing.productKey, deviceName: thing.deviceName, payload: { setpoint: 65 } })
    .then((data) => {
      got.set = data;
      return promised(iotData.getThingProperties, { productKey: thing.productKey, deviceName: thing.deviceName, payload: ['setpoint'] });
    })
    .then((data) => {
      got.get = data;
      return promised(iotData.callThingService, { productKey: thing.productKey, deviceName: thing.deviceName, service: 'reboot', payload: { delay: 1 } });
    })
    .then((data) => {
      got.service = data;
      return promised(iotData.getThingsWithTags, { payload: [{ room: 'cellar' }] });
    })
    .then((things) => {
      got.things = things;
      callback(null, JSON.stringify(got));
    })
    .catch((err) => callback(null, JSON.stringify({ error: err.message, type: err.type })));
};
