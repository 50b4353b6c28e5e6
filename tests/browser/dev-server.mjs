// Development server for the broker's management UI (node, no dependencies).
//
// Serves eventbus-broker/ui/ (index.html, app.js, style.css) and proxies
// /api/* to a management API, by default RabbitMQ's on 127.0.0.1:15672, so
// the UI can be developed and tested against the real RabbitMQ API.
//
// DEV-ONLY EMULATION: with --emulate-move (or EMULATE_MOVE=1) it answers our
// extension POST /api/queues/{vhost}/{name}/move, which RabbitMQ does not
// have, by getting messages with ackmode ack_requeue_false and republishing
// them through amq.default, round-robin over the destinations. It is not
// atomic (a failed publish after the get loses that message) and is only
// for developing the UI against RabbitMQ; the real move is our broker's.
//
// Usage: node dev-server.mjs [--port 15680] [--target http://127.0.0.1:15672] [--emulate-move]
// Env:   PORT, TARGET, EMULATE_MOVE=1. Port 0 picks a free port; the chosen
//        address is printed as "dev-server: listening on http://127.0.0.1:PORT".

import http from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const UI_DIR = path.resolve(here, '../../eventbus-broker/ui');
const STATIC = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'],
};
// The UI needs nothing beyond its own origin; serving it under this strict
// policy makes any inline script/style or outside fetch a console error,
// which fails the browser test.
export const UI_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";
const MOVE_RX = /^\/api\/queues\/([^/]+)\/([^/]+)\/move$/;

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

/** Starts the server; resolves to {server, url}. */
export function startDevServer({ port = 15680, target = 'http://127.0.0.1:15672', emulateMove = false, host = '127.0.0.1' } = {}) {
  const base = new URL(target);
  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://dev');
      if (req.method === 'POST' && emulateMove && MOVE_RX.test(url.pathname)) {
        await emulateMoveRequest(req, res, base, url.pathname);
      } else if (url.pathname.startsWith('/api/')) {
        await proxy(req, res, base);
      } else if ((req.method === 'GET' || req.method === 'HEAD') && STATIC[url.pathname]) {
        const [file, type] = STATIC[url.pathname];
        // Read on every request so edits show up on reload.
        const body = await readFile(path.join(UI_DIR, file));
        res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store', 'content-security-policy': UI_CSP });
        res.end(req.method === 'HEAD' ? undefined : body);
      } else {
        send(res, 404, { error: 'not_found', reason: 'Not Found' });
      }
    } catch (e) {
      if (!res.headersSent) send(res, 502, { error: 'bad_gateway', reason: `dev-server: ${e.message}` });
      else res.destroy(e);
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const { port: bound } = server.address();
      resolve({ server, url: `http://${host}:${bound}` });
    });
  });
}

function send(res, status, obj, extra = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks);
}

async function proxy(req, res, base) {
  const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : await readBody(req);
  const headers = {};
  for (const h of ['authorization', 'content-type', 'accept']) if (req.headers[h]) headers[h] = req.headers[h];
  const upstream = await fetch(new URL(req.url, base), { method: req.method, headers, body, redirect: 'manual' });
  const out = {};
  for (const h of ['content-type', 'www-authenticate', 'location']) {
    const v = upstream.headers.get(h);
    if (v) out[h] = v;
  }
  const buf = Buffer.from(await upstream.arrayBuffer());
  out['content-length'] = buf.length;
  res.writeHead(upstream.status, out);
  res.end(buf);
}

/** Dev-only emulation of POST /api/queues/{vhost}/{name}/move against RabbitMQ (see the header). */
async function emulateMoveRequest(req, res, base, pathname) {
  const [, vhostEnc, nameEnc] = pathname.match(MOVE_RX);
  let spec;
  try {
    spec = JSON.parse((await readBody(req)).toString('utf8') || '{}');
  } catch {
    return send(res, 400, { error: 'bad_request', reason: 'body is not JSON' });
  }
  const dests = spec.destinations;
  if (!Array.isArray(dests) || !dests.length || dests.some((d) => typeof d !== 'string' || !d)) {
    return send(res, 400, { error: 'bad_request', reason: 'destinations must be a non-empty list of queue names' });
  }
  if (spec.count !== undefined && !(Number.isInteger(spec.count) && spec.count >= 0)) {
    return send(res, 400, { error: 'bad_request', reason: 'count must be a non-negative integer' });
  }
  const auth = req.headers.authorization;
  const call = async (method, p, body) => {
    const r = await fetch(new URL(`/api${p}`, base), {
      method,
      headers: { authorization: auth ?? '', 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    const data = text ? JSON.parse(text) : null;
    if (!r.ok) {
      const e = new Error(data?.reason ?? `HTTP ${r.status}`);
      e.status = r.status;
      e.body = data;
      throw e;
    }
    return data;
  };
  const label = { 'x-eventbus-dev-emulation': 'move (get + republish via amq.default; not atomic)' };
  try {
    // Destinations must exist, like the real endpoint requires.
    for (const d of dests) await call('GET', `/queues/${vhostEnc}/${encodeURIComponent(d)}`);
    const limit = spec.count ?? Infinity;
    let moved = 0;
    while (moved < limit) {
      const batch = Math.min(100, limit - moved);
      const msgs = await call('POST', `/queues/${vhostEnc}/${nameEnc}/get`, { count: batch, ackmode: 'ack_requeue_false', encoding: 'base64' });
      if (!msgs.length) break;
      for (const m of msgs) {
        const dest = dests[moved % dests.length];
        await call('POST', `/exchanges/${vhostEnc}/amq.default/publish`, {
          properties: m.properties ?? {},
          routing_key: dest,
          payload: m.payload,
          payload_encoding: 'base64',
        });
        moved++;
      }
    }
    console.log(`dev-server: EMULATED move of ${moved} messages from ${decodeURIComponent(nameEnc)} to ${dests.join(', ')}`);
    send(res, 200, { moved }, label);
  } catch (e) {
    send(res, e.status ?? 502, e.body ?? { error: 'move_failed', reason: e.message }, label);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const emulateMove = process.argv.includes('--emulate-move') || process.env.EMULATE_MOVE === '1';
  const { url } = await startDevServer({
    port: Number(arg('port', process.env.PORT ?? 15680)),
    target: arg('target', process.env.TARGET ?? 'http://127.0.0.1:15672'),
    emulateMove,
  });
  console.log(`dev-server: serving ${UI_DIR}, proxying /api to ${arg('target', process.env.TARGET ?? 'http://127.0.0.1:15672')}`);
  if (emulateMove) console.log('dev-server: EMULATING POST /api/queues/{vhost}/{name}/move for development (RabbitMQ has no such endpoint)');
  console.log(`dev-server: listening on ${url}`);
}
