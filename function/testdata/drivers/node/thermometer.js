// A driver written as a continuous Node.js function against edgekit's
// driver API: simulated thermometers, one per device the gateway attaches.
// Device config: start (the first temperature), slow (reads take 2 s).
// Driver config: interval (ms between reports), threshold (an overheat
// event above it). Services: reset, heat {to}, crash (the process exits),
// hang (the event loop stops). The handler lets a test speak the driver
// API directly: {do: "report"|"event"|"state"|"flood", ...}.
'use strict';
const edgekit = require('edgekit');

const things = new Map();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setUp(t, keep) {
  const c = t.config || {};
  const old = things.get(t.name);
  things.set(t.name, keep && old ? { ...old, slow: Boolean(c.slow) } : { temperature: c.start ?? 20, setpoint: 50, slow: Boolean(c.slow) });
}

const driver = edgekit.driver({
  attach(t) {
    setUp(t, false);
  },
  update(t) {
    setUp(t, true);
  },
  detach(name) {
    things.delete(name);
  },
  async getProperties(t, ids) {
    const s = things.get(t.name);
    if (s.slow) await sleep(2000);
    const out = {};
    for (const id of ids) {
      if (id === 'temperature' || id === 'setpoint') out[id] = s[id];
      else out[id] = new edgekit.EdgekitError('UnknownProperty', `${id}: this thermometer has none`);
    }
    return out;
  },
  setProperties(t, values) {
    const s = things.get(t.name);
    for (const [id, v] of Object.entries(values)) s[id] = v;
  },
  async callService(t, service, input) {
    const s = things.get(t.name);
    switch (service) {
      case 'reset':
        s.temperature = 20;
        return { ok: true };
      case 'heat':
        s.temperature = input.to;
        await tell(t.name);
        return { ok: true };
      case 'crash':
        process.exit(3);
        break;
      case 'hang':
        for (;;);
      default:
        throw new edgekit.EdgekitError('UnknownService', service);
    }
  },
});

// tell reports a device's temperature, and an overheat event above the
// driver's threshold.
async function tell(name) {
  const s = things.get(name);
  if (!s) return;
  await driver.report(name, { temperature: s.temperature });
  const threshold = driver.config && driver.config.threshold;
  if (threshold !== undefined && s.temperature > threshold) {
    await driver.event(name, 'overheat', { temperature: s.temperature });
  }
}

driver.ready.then(() => {
  const every = driver.config && driver.config.interval;
  if (!every) return;
  setInterval(() => {
    for (const name of things.keys()) tell(name).catch((e) => console.error('report', name, e.type, e.message));
  }, every);
});

exports.handler = async (event) => {
  try {
    switch (event.do) {
      case 'report':
        return { refused: await driver.report(event.device, event.properties) };
      case 'event':
        await driver.event(event.device, event.event, event.output);
        return { ok: true };
      case 'state':
        await driver.state(event.device, event.state, event.cause);
        return { ok: true };
      case 'flood': {
        // n reports, `inFlight` at a time (a benchmark's).
        let next = 0;
        const one = async () => {
          while (next < event.n) {
            next += 1;
            await driver.report(event.device, { temperature: 20 + (next % 10) });
          }
        };
        await Promise.all(Array.from({ length: event.inFlight || 1 }, one));
        return { ok: true };
      }
      default:
        return { devices: [...things.keys()] };
    }
  } catch (e) {
    return { type: e.type, message: e.message };
  }
};
