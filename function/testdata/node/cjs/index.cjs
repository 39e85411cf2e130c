// A CommonJS handler in a .cjs file.
exports.handler = async (event) => ({ cjs: true, event });
