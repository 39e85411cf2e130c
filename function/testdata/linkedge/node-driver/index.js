// A Link IoT Edge driver written from its thing access SDK's
// documentation, unchanged: a thermometer per device in the driver's
// configuration, reporting its temperature every two seconds and raising
// high_temperature above the threshold in the driver's json
// configuration; a change of configuration is logged.
'use strict';

const {
  RESULT_SUCCESS,
  RESULT_FAILURE,
  Config,
  ThingAccessClient,
} = require('linkedge-thing-access-sdk');

Config.registerChangedCallback((config) => {
  console.log(`config changed: ${config}`);
});

Config.get()
  .then((config) => {
    const driverInfo = config.getDriverInfo() || {};
    const threshold = (driverInfo.json && driverInfo.json.threshold) || 30;
    config.getThingInfos().forEach((thingInfo) => {
      const thermometer = { temperature: (thingInfo.custom && thingInfo.custom.start) || 25 };
      const client = new ThingAccessClient(thingInfo, {
        setProperties: function (properties) {
          return { code: RESULT_FAILURE, message: 'The property is read-only.' };
        },
        getProperties: function (keys) {
          if (keys.includes('temperature')) {
            return { code: RESULT_SUCCESS, message: 'success', params: { temperature: thermometer.temperature } };
          }
          return { code: RESULT_FAILURE, message: 'The requested properties does not exist.' };
        },
        callService: function (name, args) {
          return { code: RESULT_FAILURE, message: 'The requested service does not exist.' };
        },
      });
      client.registerAndOnline()
        .then(() => {
          setInterval(() => {
            thermometer.temperature = thermometer.temperature >= 35 ? 25 : thermometer.temperature + 1;
            client.reportProperties({ temperature: thermometer.temperature });
            if (thermometer.temperature > threshold) {
              client.reportEvent('high_temperature', { temperature: thermometer.temperature });
            }
          }, 2000);
        })
        .catch((err) => {
          console.log(err);
          client.cleanup();
        });
    });
  })
  .catch((err) => {
    console.log(err);
  });

module.exports.handler = function (event, context, callback) {
  callback(null);
};
