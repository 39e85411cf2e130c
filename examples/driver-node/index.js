// A device driver written as a continuous Node.js function against
// edgekit's driver API (docs/FUNCTION-API.md, Drivers): it serves
// simulated thermometers, one per device a deployment binds to the app
// (examples/gateway/deployment.json binds hall-thermometer).
//
// The driver's configuration (the app's config): interval, the
// milliseconds between reports. A device's config: start, its first
// temperature; drift, how far it wanders per report. Thing model:
// temperature (r), alarmAt (rw), the service calibrate {offset}, and the
// event overheat {temperature} when temperature passes alarmAt.
'use strict';
const edgekit = require('edgekit');

// thermometers are the simulated devices, by name.
const thermometers = new Map();

function simulate(device, keep) {
  const c = device.config || {};
  const old = thermometers.get(device.name);
  thermometers.set(device.name, {
    temperature: keep && old ? old.temperature : c.start ?? 20,
    alarmAt: keep && old ? old.alarmAt : 30,
    offset: keep && old ? old.offset : 0,
    drift: c.drift ?? 0.5,
    step: 0,
  });
}

const driver = edgekit.driver({
  // attach is called for each device the gateway gives the driver, and
  // again for each after a restart of the driver.
  attach(device) {
    simulate(device, false);
  },
  update(device) {
    simulate(device, true);
  },
  detach(name) {
    thermometers.delete(name);
  },
  getProperties(device, ids) {
    const t = thermometers.get(device.name);
    const out = {};
    for (const id of ids) out[id] = id === 'temperature' ? t.temperature + t.offset : t[id];
    return out;
  },
  setProperties(device, values) {
    // Values arrive checked against the thing model: only alarmAt is
    // writable.
    Object.assign(thermometers.get(device.name), values);
  },
  callService(device, service, input) {
    if (service !== 'calibrate') throw new edgekit.EdgekitError('UnknownService', service);
    thermometers.get(device.name).offset = input.offset;
    return { offset: input.offset };
  },
});

// Each interval every thermometer wanders a little and reports; one above
// its alarm point raises overheat.
async function report(name, t) {
  t.step += 1;
  t.temperature = Math.round((t.temperature + t.drift * Math.sin(t.step / 3)) * 100) / 100;
  const temperature = t.temperature + t.offset;
  await driver.report(name, { temperature });
  if (temperature > t.alarmAt) await driver.event(name, 'overheat', { temperature });
}

driver.ready.then(() => {
  const every = (driver.config && driver.config.interval) || 2000;
  setInterval(() => {
    for (const [name, t] of thermometers) {
      report(name, t).catch((e) => console.error(`reporting ${name}: ${e.type}: ${e.message}`));
    }
  }, every);
});

// The handler is not used: the gateway's requests go to the callbacks.
exports.handler = async () => ({ thermometers: [...thermometers.keys()] });
