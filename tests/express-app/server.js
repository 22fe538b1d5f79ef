// A real Express upstream for Portcullis's bypass tests (crates/portcullis/tests/bypass.rs).
//
// Usage: node server.js [port]   (0 or absent: an ephemeral port, on 127.0.0.1 only)
//
// Once listening it prints one JSON line on stdout, {"url": "http://127.0.0.1:<port>"},
// which the test harness reads. It exits when its stdin closes, so a test process that
// dies without running its destructors leaves no server behind.
//
// Routing is Express's default: case-insensitive, non-strict (a trailing slash is
// ignored), matched against the raw, still percent-encoded path.
//   ALL /admin, /admin/*   the protected handler: records {method, originalUrl} and
//                          answers 200 "admin <originalUrl>"
//   GET /__calls           the recorded calls as JSON. For the test only: the test's
//                          gateway configuration refuses this path to every client.
//   GET /orders/broken     throws the error a MySQL driver reports for a broken query;
//                          Express's default error handler (not in production mode)
//                          answers 500 with it and the stack trace in HTML
//   GET /orders/streamed   200 text/plain written in two chunks 20 ms apart (chunked
//                          transfer encoding), the second leaking the same error
//   anything else          200 "echo <originalUrl>"
'use strict';

const express = require('express');

const port = Number(process.argv[2] ?? 0);
const calls = [];

const app = express();

app.all(['/admin', '/admin/*splat'], (req, res) => {
  calls.push({ method: req.method, originalUrl: req.originalUrl });
  res.type('text/plain').send(`admin ${req.originalUrl}`);
});

const MYSQL_ERROR = "ER_PARSE_ERROR: You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near '' at line 1";

app.get('/orders/broken', () => {
  throw new Error(MYSQL_ERROR);
});

app.get('/orders/streamed', (req, res) => {
  res.type('text/plain');
  res.write('order 1042: 2 items\n');
  setTimeout(() => res.end(`lookup failed: ${MYSQL_ERROR}\n`), 20);
});

app.get('/__calls', (req, res) => {
  res.json(calls);
});

app.use((req, res) => {
  res.type('text/plain').send(`echo ${req.originalUrl}`);
});

const server = app.listen(port, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${server.address().port}` })}\n`);
});
server.on('error', (err) => {
  console.error(err);
  process.exit(1);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
