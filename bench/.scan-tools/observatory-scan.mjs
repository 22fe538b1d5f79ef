import { scan } from "./node_modules/@mdn/mdn-http-observatory/src/scanner/scan-with-options.js";
const [host, httpPort, httpsPort, path] = process.argv.slice(2);
try {
  const result = await scan(host, { httpPort, httpsPort, path });
  const tests = Object.fromEntries(Object.entries(result.tests).map(([k, t]) => { const { scoreDescription, ...rest } = t; return [k, rest]; }));
  console.log(JSON.stringify({ scan: result.scan, tests }, null, 2));
} catch (e) {
  console.log(JSON.stringify({ error: e instanceof Error ? e.message : String(e) }));
  process.exit(1);
}
