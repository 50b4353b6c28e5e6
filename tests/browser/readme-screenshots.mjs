// Takes the README's management-UI screenshots (docs/img/ui-*.png).
//
// Declares a few demo queues and an exchange through the management API,
// drives traffic through HTTP publish/get for DURATION_S seconds while the
// overview is open (so the charts have a history on any server), then shoots
// the overview, the queue list and a queue's page, and removes the demo
// objects (KEEP=1 keeps them).
//
// Env: BASE_URL (required), MQ_USER / MQ_PASS (guest/guest),
// OUT_DIR (default docs/img of the repository), DURATION_S (default 90).

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const BASE_URL = (process.env.BASE_URL ?? '').replace(/\/$/, '');
if (!BASE_URL) {
  console.error('readme-screenshots: BASE_URL is not set');
  process.exit(2);
}
const USER = process.env.MQ_USER ?? 'guest';
const PASS = process.env.MQ_PASS ?? 'guest';
const OUT = path.resolve(process.env.OUT_DIR ?? path.join(here, '../../docs/img'));
const DURATION_S = Number(process.env.DURATION_S ?? 90);
const AUTH = `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`;
const V = '%2F';

async function api(method, p, body) {
  const res = await fetch(`${BASE_URL}/api${p}`, {
    method,
    headers: { Authorization: AUTH, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${p}: HTTP ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const EXCHANGE = 'demo.orders';
const QUEUES = [
  ['demo.orders.billing', 'orders.#', {}],
  ['demo.orders.shipping', 'orders.created', { 'x-max-length': 50000 }],
  ['demo.orders.audit', 'orders.*', { 'x-message-ttl': 3600000 }],
  ['demo.orders.dead', 'orders.failed', {}],
  ['demo.email.outbox', null, { 'x-dead-letter-exchange': EXCHANGE, 'x-dead-letter-routing-key': 'orders.failed' }],
];

async function setup() {
  await api('PUT', `/exchanges/${V}/${EXCHANGE}`, { type: 'topic', durable: true, auto_delete: false, internal: false, arguments: {} });
  for (const [q, key, args] of QUEUES) {
    await api('PUT', `/queues/${V}/${q}`, { durable: true, auto_delete: false, arguments: args });
    if (key) await api('POST', `/bindings/${V}/e/${EXCHANGE}/q/${q}`, { routing_key: key, arguments: {} });
  }
}

async function cleanup() {
  for (const [q] of QUEUES) await api('DELETE', `/queues/${V}/${q}`).catch(() => {});
  await api('DELETE', `/exchanges/${V}/${EXCHANGE}`).catch(() => {});
}

let orderNo = 1000;
async function publishOrder(kind) {
  const n = orderNo++;
  await api('POST', `/exchanges/${V}/${EXCHANGE}/publish`, {
    properties: { delivery_mode: 2, content_type: 'application/json', message_id: `order-${n}`, headers: { 'x-tenant': 'acme' } },
    routing_key: `orders.${kind}`,
    payload: JSON.stringify({ order_id: n, kind, amount_cents: 1999 + (n % 7) * 250, currency: 'EUR' }),
    payload_encoding: 'string',
  });
}

async function traffic(seconds) {
  const end = Date.now() + seconds * 1000;
  let tick = 0;
  while (Date.now() < end) {
    const t0 = Date.now();
    const wave = Math.round(6 + 5 * Math.sin(tick / 6));
    const jobs = [];
    for (let i = 0; i < wave; i++) jobs.push(publishOrder(i % 5 === 0 ? 'paid' : 'created'));
    jobs.push(api('POST', `/exchanges/${V}/amq.default/publish`, { properties: {}, routing_key: 'demo.email.outbox', payload: `{"to":"customer-${tick}@example.com"}`, payload_encoding: 'string' }));
    await Promise.all(jobs);
    // Consumers that keep up with part of the flow.
    await api('POST', `/queues/${V}/demo.orders.billing/get`, { count: Math.max(1, wave - 3), ackmode: 'ack_requeue_false', encoding: 'auto' });
    if (tick % 2) await api('POST', `/queues/${V}/demo.orders.shipping/get`, { count: wave, ackmode: 'ack_requeue_false', encoding: 'auto' });
    tick++;
    const spent = Date.now() - t0;
    if (spent < 1000) await new Promise((r) => setTimeout(r, 1000 - spent)); // pacing of the demo load
  }
}

async function shot(page, name) {
  const viewport = page.viewportSize();
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.setViewportSize({ width: viewport.width, height: Math.max(viewport.height, Math.min(height, 4000)) });
  await page.screenshot({ path: path.join(OUT, name) });
  await page.setViewportSize(viewport);
  console.log(`readme-screenshots: wrote ${path.join(OUT, name)}`);
}

mkdirSync(OUT, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
});
try {
  await cleanup();
  await setup();
  const page = await browser.newPage({ viewport: { width: 1360, height: 820 } });
  page.on('dialog', (d) => d.accept());
  await page.goto(`${BASE_URL}/`);
  await page.fill('form[data-form=login] [name=username]', USER);
  await page.fill('form[data-form=login] [name=password]', PASS);
  await page.click('form[data-form=login] button[type=submit]');
  await page.locator('#top').waitFor({ state: 'visible' });
  await page.locator('#refresh-select').selectOption('2000');
  await traffic(DURATION_S);
  await page.locator('[data-chart=rates] svg path.series').first().waitFor();
  await page.waitForFunction(() => /Updated/.test(document.getElementById('foot').textContent));
  await shot(page, 'ui-overview.png');

  await page.evaluate(() => (location.hash = '#/queues'));
  await page.locator('main input[name=filter]').fill('demo.');
  await page.locator('main [data-count]', { hasText: 'matching' }).waitFor();
  await page.locator('table[data-table=queues] tbody td[data-col=name]', { hasText: 'demo.orders.billing' }).waitFor();
  await page.locator('details.panel > summary', { hasText: 'Add a new queue' }).click(); // fold the form away
  await shot(page, 'ui-queues.png');

  await page.evaluate(() => (location.hash = '#/queues/%2F/demo.orders.audit'));
  await page.locator('dl.props dd[data-prop=total]').waitFor();
  await page.locator('form[data-form=get] [name=count]').fill('2');
  await page.click('form[data-form=get] button[type=submit]');
  await page.locator('[data-messages] [data-payload]').nth(1).waitFor();
  await shot(page, 'ui-queue.png');
} finally {
  await browser.close();
  if (process.env.KEEP !== '1') await cleanup();
}
