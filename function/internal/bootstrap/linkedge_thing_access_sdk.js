// linkedge-thing-access-sdk: Link IoT Edge's thing access SDK for Node.js
// drivers, as its documentation describes it (Config, ThingInfo,
// ThingAccessClient), on edgekit's driver API (edgekit.driver). A driver
// written for Link IoT Edge that requires it runs unchanged, deployed as
// a driver app. Standard library only; edgekit's own code.
//
// How it maps:
//   - Config.get() resolves to the driver's configuration: getThingInfos()
//     are the devices bound to the driver app ({productKey, deviceName,
//     custom}: the device's name, its label productKey, its config),
//     getDriverInfo() the app's configuration ({"json": {...}},
//     {"kv": [...]} or whatever the deployment gives).
//   - Config.registerChangedCallback(f): f gets the configuration, as a
//     JSON string, each time the app's configuration or its devices change.
//   - new ThingAccessClient(thingInfo, {getProperties, setProperties,
//     callService}): registerAndOnline() brings the device online, and the
//     gateway's reads, writes and service calls for it reach the callbacks,
//     whose {code, message, params} answer them (a code other than 0 fails
//     the request with its message); reportProperties and reportEvent hand
//     values over, checked against the device's thing model; online,
//     offline, getTsl, cleanup and unregister as documented.
'use strict';
const edgekit = require('edgekit');

const PRODUCT_KEY = 'productKey';
const DEVICE_NAME = 'deviceName';
const LOCAL_NAME = 'localName';
const SET_PROPERTIES = 'setProperties';
const GET_PROPERTIES = 'getProperties';
const CALL_SERVICE = 'callService';
const RESULT_SUCCESS = 0;
const RESULT_FAILURE = -3;

// clients are the registered ThingAccessClients, by device name.
const clients = new Map();
const listeners = [];

// things are the devices bound to the driver, by name: those it was given
// at hello, then as the gateway attaches and detaches them.
const things = new Map();

function thingInfo(t) {
  return {
    productKey: (t.labels && t.labels.productKey) || t.name,
    deviceName: t.name,
    custom: t.config === undefined || t.config === null ? undefined : t.config,
  };
}

// configString is the driver's configuration as Link IoT Edge's config
// manager holds it.
function configString() {
  return JSON.stringify({
    config: driver.config,
    deviceList: [...things.values()].map((t) => {
      const info = thingInfo(t);
      return { productKey: info.productKey, deviceName: info.deviceName, custom: info.custom === undefined ? undefined : JSON.stringify(info.custom) };
    }),
  });
}

function changed() {
  const s = configString();
  for (const f of listeners) {
    try {
      f(s);
    } catch (e) {
      console.error('linkedge-thing-access-sdk: a changed callback failed:', e);
    }
  }
}

// answer is a callback's {code, message, params} as the gateway takes it.
async function answer(what, name, f) {
  const r = (await f()) || {};
  if (r.code !== undefined && r.code !== RESULT_SUCCESS) {
    throw new edgekit.EdgekitError('Error', `${what} of ${name}: ${r.message || `code ${r.code}`}`);
  }
  return r.params || {};
}

function clientOf(name) {
  const c = clients.get(name);
  if (!c) throw new edgekit.EdgekitError('Offline', `device ${name}: no ThingAccessClient registered it`);
  return c;
}

const driver = edgekit.driver({
  async attach(t) {
    const fresh = !things.has(t.name);
    things.set(t.name, t);
    if (!clients.has(t.name)) await driver.offline(t.name, 'the driver has not registered it');
    if (fresh && !driver.bound.some((b) => b.name === t.name)) changed();
  },
  update(t) {
    things.set(t.name, t);
    changed();
  },
  detach(name) {
    things.delete(name);
    changed();
  },
  getProperties(t, ids) {
    return answer('getProperties', t.name, () => clientOf(t.name).callbacks.getProperties(ids));
  },
  async setProperties(t, values) {
    await answer('setProperties', t.name, () => clientOf(t.name).callbacks.setProperties(values));
    return {};
  },
  callService(t, name, args) {
    return answer(`callService ${name}`, t.name, () => clientOf(t.name).callbacks.callService(name, args));
  },
});
driver.ready.then(() => {
  for (const t of driver.bound) things.set(t.name, t);
}, () => {});
edgekit.onConfigChange((cfg) => {
  driver.config = cfg;
  changed();
});

// Config is the driver's configuration.
class Config {
  static get() {
    return driver.ready.then(() => new Config(configString()));
  }

  static registerChangedCallback(callback) {
    listeners.push(callback);
  }

  static unregisterChangedCallback(callback) {
    const i = listeners.indexOf(callback);
    if (i >= 0) listeners.splice(i, 1);
  }

  constructor(string) {
    let config;
    try {
      config = JSON.parse(string);
    } catch {
      throw new Error('Config is not JSON string!');
    }
    this.driverInfo = config.config;
    this.thingInfos = (config.deviceList || []).map((d) => {
      let custom;
      try {
        custom = d.custom === undefined ? undefined : JSON.parse(d.custom);
      } catch {
        custom = undefined;
      }
      return { productKey: d.productKey, deviceName: d.deviceName, custom };
    });
  }

  getThingInfos() {
    return this.thingInfos;
  }

  getDriverInfo() {
    return this.driverInfo;
  }
}

// ThingAccessClient connects one device.
class ThingAccessClient {
  constructor(config, callbacks) {
    if (!callbacks || !callbacks.getProperties || !callbacks.setProperties || !callbacks.callService) {
      throw new Error('Illegal callbacks');
    }
    if (!config || !config.productKey || (!config.deviceName && !config.localName)) {
      throw new Error('Illegal config');
    }
    this.config = config;
    this.callbacks = callbacks;
    this.name = config.deviceName || config.localName;
  }

  setup() {
    return driver.ready.then(() => undefined);
  }

  async registerAndOnline() {
    await driver.ready;
    clients.set(this.name, this);
    await driver.online(this.name);
  }

  online() {
    return driver.online(this.name);
  }

  offline() {
    return driver.offline(this.name, 'the driver took it offline');
  }

  reportProperties(properties) {
    driver.report(this.name, properties).then((refused) => {
      if (Object.keys(refused).length) console.warn(`reportProperties of ${this.name}: refused ${JSON.stringify(refused)}`);
    }, (e) => console.warn(`reportProperties of ${this.name}: ${e.message}`));
  }

  reportEvent(eventName, args) {
    driver.event(this.name, eventName, args).catch((e) => console.warn(`reportEvent ${eventName} of ${this.name}: ${e.message}`));
  }

  async getTsl() {
    await driver.ready;
    const t = things.get(this.name);
    if (!t) throw new Error(`device ${this.name}: not bound to this driver`);
    return JSON.stringify(t.tsl);
  }

  async cleanup() {
    if (clients.get(this.name) === this) clients.delete(this.name);
    await driver.offline(this.name, 'the driver cleaned it up').catch(() => {});
  }

  unregister() {
    return this.cleanup();
  }
}

module.exports = {
  PRODUCT_KEY,
  DEVICE_NAME,
  LOCAL_NAME,
  SET_PROPERTIES,
  GET_PROPERTIES,
  CALL_SERVICE,
  RESULT_SUCCESS,
  RESULT_FAILURE,
  Config,
  ThingAccessClient,
};
