// An ES module in a .js file under "type": "module", with a nested export.
export const handlers = { temperature: async (event) => ({ module: true, event }) };
