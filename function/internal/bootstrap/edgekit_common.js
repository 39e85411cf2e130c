// What the Lambda and native Node.js bootstraps share: loading the handler
// named by _HANDLER from LAMBDA_TASK_ROOT, calling it in any of the Lambda
// styles, and describing an error.
'use strict';
const path = require('path');

exports.loadHandler = function loadHandler() {
  const spec = process.env._HANDLER || '';
  const dot = spec.lastIndexOf('.');
  if (dot <= 0) throw new Error(`handler "${spec}" must be file.export`);
  const mod = require(path.resolve(process.env.LAMBDA_TASK_ROOT || '.', spec.slice(0, dot)));
  const fn = mod[spec.slice(dot + 1)];
  if (typeof fn !== 'function') throw new Error(`handler "${spec}": ${spec.slice(dot + 1)} is not an exported function`);
  return fn;
};

// call runs an async handler, one returning a value or a promise, or the
// callback style (event, context, callback).
exports.call = function call(handler, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err, result) => {
      if (settled) return;
      settled = true;
      if (err) reject(err); else resolve(result);
    };
    let r;
    try {
      r = handler(event, context, callback);
    } catch (e) {
      callback(e);
      return;
    }
    if (r && typeof r.then === 'function') r.then((v) => callback(null, v), (e) => callback(e));
    else if (handler.length < 3) callback(null, r);
  });
};

exports.errorFields = function errorFields(err) {
  const e = err instanceof Error ? err : new Error(String(err));
  return { errorType: e.name || 'Error', errorMessage: e.message, stackTrace: (e.stack || '').split('\n').slice(1).map((l) => l.trim()) };
};
