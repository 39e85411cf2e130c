// edgekit: what a Node.js function asks of the gateway it runs on, standard
// library only. The host puts it on the function's module path
// (require('edgekit')); the methods are package function/fnapi's, spoken
// over the native protocol's pipes, or through the gateway's local API for
// functions on a runtime API.
//
//   const edgekit = require('edgekit');
//   await edgekit.publish('outputs/my-fn/alarm', { temperature: 81 }, { qos: 1 });
//   const { properties } = await edgekit.getProperties('boiler-1', ['temperature']);
//
// Each call returns a promise. It is bounded by the deadline of the
// invocation it was made in (options.timeoutMs bounds it further), and by
// the function's timeout. A refusal rejects with an EdgekitError whose type
// says why: Forbidden (outside the function's permissions), BadRequest,
// Timeout, Unavailable, TooManyCalls, UnknownDevice, UnknownProperty,
// UnknownService, InvalidValue, ReadOnly, Offline, UnknownFunction,
// Throttled, or an invoked function's own error type.
'use strict';
const path = require('path');

const common = require(path.join(__dirname, '..', '..', 'edgekit_common.js'));
const invocations = common.trackInvocations();
const { EdgekitError } = common;

// bytes is a payload as it travels: a Buffer or typed array as it is, a
// string as UTF-8, anything else as JSON.
function bytes(v) {
  if (v === undefined || v === null) return Buffer.alloc(0);
  if (Buffer.isBuffer(v)) return v;
  if (ArrayBuffer.isView(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  return Buffer.from(JSON.stringify(v), 'utf8');
}

async function call(method, args, payload, options) {
  if (!common.calls) {
    throw new EdgekitError('Unavailable', `${method}: no way to the gateway: the native protocol or the gateway's local API (EDGEKIT_API) is needed`);
  }
  if (options && options.noWait && common.callsNoWait) return common.callsNoWait(method, args, bytes(payload), deadlineOf(options));
  return common.calls(method, args, bytes(payload), deadlineOf(options));
}

// deadlineOf is a call's deadline: its invocation's, or options.timeoutMs
// from now when that is sooner.
function deadlineOf(options) {
  const inv = invocations.getStore();
  let deadline = inv ? inv.deadline : 0;
  if (options && options.timeoutMs > 0) {
    const own = Date.now() + options.timeoutMs;
    if (!deadline || own < deadline) deadline = own;
  }
  return deadline;
}

async function json(method, args, options) {
  const out = await call(method, args, null, options);
  return JSON.parse(out.toString('utf8'));
}

// parsed is a result as JSON when it is JSON, else its bytes.
function parsed(buf) {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch {
    return buf;
  }
}

// wireError is an Error as a driver's answer carries it for one property.
function wireError(e) {
  return { errorType: e.type || (e.name && e.name !== 'Error' ? e.name : 'Error'), errorMessage: e.message };
}

// Driver is a device driver written as a continuous function (edgekit
// driver()): the gateway hands it devices to serve and asks it to read,
// write and call them; it reports what its devices tell.
class Driver {
  constructor(impl) {
    this.impl = impl;
    // devices are the devices the gateway gave the driver, by name:
    // {name, tsl (the thing model, TSL), config, labels}.
    this.devices = new Map();
    this.keys = new Map();
    // config is the driver's configuration, once ready has resolved.
    this.config = null;
    // bound are the devices bound to the driver when it said hello, as
    // the gateway told them then (attach comes for each of them too).
    this.bound = [];
    this.ready = json('driver.hello', {}).then((a) => {
      this.config = a.config;
      this.bound = a.devices || [];
      return this;
    });
    // A failed hello leaves the driver unserved; the host sees the
    // rejection as the program's.
    this.ready.catch((e) => console.error('edgekit: the gateway refused the driver:', e));
  }

  // thing is the device name, or refuses it as unknown.
  thing(name) {
    const t = this.devices.get(name);
    if (!t) throw new EdgekitError('UnknownDevice', `device ${name}: not one of this driver's`);
    return t;
  }

  // serve answers one of the gateway's driver ops.
  async serve(op) {
    await this.ready;
    const impl = this.impl;
    switch (op.op) {
      case 'attach':
      case 'update': {
        const t = op.thing;
        const key = JSON.stringify(t);
        const known = this.devices.has(t.name);
        if (known && this.keys.get(t.name) === key) return null;
        if (known && impl.update) await impl.update(t);
        else if (impl.attach) await impl.attach(t);
        this.devices.set(t.name, t);
        this.keys.set(t.name, key);
        return null;
      }
      case 'detach':
        if (!this.devices.has(op.device)) return null;
        this.devices.delete(op.device);
        this.keys.delete(op.device);
        if (impl.detach) await impl.detach(op.device);
        return null;
      case 'get': {
        const t = this.thing(op.device);
        if (!impl.getProperties) throw new EdgekitError('UnknownProperty', `device ${op.device}: the driver reads no properties`);
        const got = (await impl.getProperties(t, op.properties)) || {};
        const out = { properties: {}, errors: {} };
        for (const id of op.properties) {
          const v = got[id];
          if (v instanceof Error) out.errors[id] = wireError(v);
          else if (v !== undefined) out.properties[id] = v;
        }
        return out;
      }
      case 'set': {
        const t = this.thing(op.device);
        if (!impl.setProperties) throw new EdgekitError('ReadOnly', `device ${op.device}: the driver writes no properties`);
        const res = (await impl.setProperties(t, op.values)) || {};
        const out = { errors: {} };
        for (const [id, v] of Object.entries(res)) if (v instanceof Error) out.errors[id] = wireError(v);
        return out;
      }
      case 'call': {
        const t = this.thing(op.device);
        if (!impl.callService) throw new EdgekitError('UnknownService', `device ${op.device}: the driver calls no services`);
        return { output: (await impl.callService(t, op.service, op.input || {})) || {} };
      }
      default:
        throw new EdgekitError('BadRequest', `driver op ${op.op}: unknown`);
    }
  }

  // report hands over property values a device told ({id: value}); it
  // resolves to the values the thing model refused ({id: why}, empty
  // when all were taken). options: time (a Date or Unix ms), timeoutMs.
  async report(device, properties, options = {}) {
    const args = { device, properties };
    if (options.time) args.time = Number(options.time);
    return (await json('driver.report', args, options)).refused || {};
  }

  // event hands over an event with its output, checked against the model.
  async event(device, event, output, options = {}) {
    const args = { device, event };
    if (output) args.output = output;
    if (options.time) args.time = Number(options.time);
    await call('driver.event', args, null, options);
  }

  // online, offline and degraded tell a device's link state. A device is
  // online once its attach resolves, unless the driver says otherwise.
  online(device, options) {
    return this.state(device, 'online', '', options);
  }

  offline(device, cause, options) {
    return this.state(device, 'offline', cause, options);
  }

  degraded(device, cause, options) {
    return this.state(device, 'degraded', cause, options);
  }

  async state(device, state, cause, options) {
    const args = { device, state };
    if (cause) args.cause = String(cause instanceof Error ? cause.message : cause);
    await call('driver.state', args, null, options);
  }
}

module.exports = {
  EdgekitError,
  Driver,

  // driver registers the program as a device driver and says hello to
  // the gateway. impl's callbacks, each optional and each may be async:
  // attach(device) and update(device) (a device to serve, again after a
  // restart: {name, tsl, config, labels}), detach(name),
  // getProperties(device, ids) → {id: value, or an Error for that one},
  // setProperties(device, values) → {id: an Error for one not written},
  // callService(device, service, input) → output. A callback that throws
  // an EdgekitError of a device type (UnknownDevice, UnknownProperty,
  // UnknownService, InvalidValue, ReadOnly, Offline) refuses the request
  // as that. The invocations that carry these requests never reach the
  // handler.
  driver(impl) {
    if (common.driver) throw new EdgekitError('BadRequest', 'edgekit.driver: the program registered a driver already');
    const d = new Driver(impl || {});
    common.driver = (op) => d.serve(op);
    return d;
  },

  // publish sends payload on topic through the gateway's bus. The function
  // may publish under outputs/{its name}/ and on what its permissions list.
  // options: qos (0, 1, 2), retain, contentType, userProperties (an object
  // or [[name, value], ...]), timeoutMs, noWait (resolve once the message
  // is written to the gateway, without waiting for its answer, on the
  // native protocol; elsewhere it waits: messages sent so reach the bus in
  // order, and flush() rejects with what the gateway refused of them).
  async publish(topic, payload, options = {}) {
    const props = options.userProperties;
    const args = { topic };
    if (options.qos) args.qos = options.qos;
    if (options.retain) args.retain = true;
    if (options.contentType) args.contentType = options.contentType;
    if (props) args.userProperties = Array.isArray(props) ? props.map(([k, v]) => [String(k), String(v)]) : Object.entries(props).map(([k, v]) => [k, String(v)]);
    await call('publish', args, payload, options);
  },

  // flush resolves once the gateway has carried out every publish made
  // with noWait before it, and rejects when it refused any of them since
  // the last flush: how many, with the first refusal's type and message.
  async flush(options = {}) {
    if (common.callsNoWait) await call('flush', {}, null, options);
  },

  // invoke calls a function with event and resolves to its result (parsed
  // when JSON, or its bytes with options.raw); options.async queues it and
  // resolves once it is queued.
  async invoke(fn, event, options = {}) {
    const out = await call('invoke', options.async ? { function: fn, async: true } : { function: fn }, event, options);
    if (options.async) return undefined;
    return options.raw ? out : parsed(out);
  },

  // getProperties reads a device's properties (none named: all):
  // { properties: {id: value}, errors: {id: why} }.
  getProperties(device, ids, options) {
    return json('device.get', ids && ids.length ? { device, properties: ids } : { device }, options);
  },

  // setProperties writes a device's properties, each checked against its
  // thing model first; resolves to {id: null when written, else why}.
  async setProperties(device, values, options) {
    return (await json('device.set', { device, properties: values }, options)).results;
  },

  // callService calls a device's service and resolves to its output.
  async callService(device, service, input, options) {
    return (await json('device.call', input ? { device, service, input } : { device, service }, options)).output;
  },

  // listDevices resolves to the devices the function may reach:
  // [{name, state, labels}]; with labels ({key: value}), those that carry
  // every one of them.
  async listDevices(labels, options) {
    return (await json('device.list', labels ? { labels } : {}, options)).devices;
  },

  // log sends a record at level ('debug', 'info', 'warn' or 'error') to
  // the function's log on the gateway.
  log(level, message) {
    const n = { debug: 0, info: 1, warn: 2, error: 3 }[level];
    if (n === undefined) throw new EdgekitError('BadRequest', `log: level ${level} (want debug, info, warn or error)`);
    common.logRecord(n, typeof message === 'string' ? message : JSON.stringify(message));
  },

  // onConfigChange registers listener, called with the configuration each
  // time a deployment changes it while the instance runs, between
  // invocations (native protocol; on a runtime API the instance is
  // restarted with it instead).
  onConfigChange(listener) {
    common.onConfigChange(listener);
  },

  // getConfig resolves to the function's configuration as deployed (null
  // when it has none).
  getConfig(options) {
    return json('config.get', {}, options);
  },
};
