// A long-lived function written to Link IoT Edge's core SDK documentation:
// it publishes a hello every second; its handler does nothing.
'use strict';
const leSdk = require('linkedge-core-sdk');

const iotData = new leSdk.IoTData();
setInterval(() => {
  iotData.publish({ topic: '/hello/world', payload: 'Hello from Node.js on the edge.' }, (err) => {
    if (err) console.log(err);
  });
}, 1000);

exports.handler = function (event, context, callback) {
  callback(null);
};
