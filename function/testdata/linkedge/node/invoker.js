// A function written to Link IoT Edge's core SDK documentation: it invokes
// another function with a string and answers what that one returned.
'use strict';
const leSdk = require('linkedge-core-sdk');

const fc = new leSdk.FCClient();

exports.handler = function (event, context, callback) {
  const invokerContext = Buffer.from(JSON.stringify({ custom: { data: 'from the invoker' } })).toString('base64');
  fc.invokeFunction({ functionId: 'link-invokee', invocationType: 'Sync', invokerContext, payload: 'String message from the invoker.' }, (err, data) => {
    if (err) callback(err);
    else callback(null, JSON.stringify({ statusCode: data.statusCode, functionError: data.functionError, payload: data.payload.toString() }));
  });
};
