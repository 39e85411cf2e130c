// The function the invoker calls: it answers with what it was sent.
'use strict';

exports.handler = function (event, context, callback) {
  callback(null, 'Returned from the invokee: ' + event.toString());
};
