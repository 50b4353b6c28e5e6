// Benchmark: AMQP throughput of a broker with and without its management UI
// open in a browser (refreshing every 5 s, the UI's default), in one run.
//
// Declares QUEUES idle queues (so the UI's lists have something to render),
// then runs the same load twice for DURATION_S seconds each: one amqplib
// publisher → one consumer on a work queue (transient, no confirms,
// autoack off, prefetch 1000). Run A has no browser; run B has headless
// Chromium logged into the UI, on the overview and then the queue list,
// refreshing every 5 s. Prints msgs/s of both runs and the ratio.
//
// Env: BASE_URL (management URL, required), AMQP_URL (required),
// MQ_USER / MQ_PASS (guest/guest), DURATION_S (20), QUEUES (1000),
// CHROMIUM (/usr/bin/chromium).
//
// Run against the built-in broker (release build):
//   eventbus-broker --amqp-listen 127.0.0.1:5690 --management-listen 127.0.0.1:15690 --data-dir $(mktemp -d) &
//   BASE_URL=http://127.0.0.1:15690 AMQP_URL=amqp://guest:guest@127.0.0.1:5690 node tests/browser/ui-load.mjs

import amqp from 'amqplib';
import { chromium } from 'playwright-core';

const BASE_URL = (process.env.BASE_URL ?? '').replace(/\/$/, '');
const AMQP_URL = process.env.AMQP_URL ?? '';
if (!BASE_URL || !AMQP_URL) {
  console.error('ui-load: BASE_URL and AMQP_URL are required');
  process.exit(2);
}
const USER = process.env.MQ_USER ?? 'guest';
const PASS = process.env.MQ_PASS ?? 'guest';
const DURATION_S = Number(process.env.DURATION_S ?? 20);
const QUEUES = Number(process.env.QUEUES ?? 1000);
const PREFIX = `ui-load-${Date.now().toString(36)}`;
const WORK = `${PREFIX}-work`;
const BODY = Buffer.alloc(16, 'x');

/** Publishes as fast as the socket drains and counts consumed messages for `seconds`. */
async function measure(conn, seconds) {
  const pub = await conn.createChannel();
  const sub = await conn.createChannel();
  await sub.prefetch(1000);
  let consumed = 0;
  const { consumerTag } = await sub.consume(WORK, (m) => {
    consumed += 1;
    if (consumed % 100 === 0) sub.ack(m, true);
  });
  const until = Date.now() + seconds * 1000;
  let stop = false;
  let published = 0;
  const publisher = (async () => {
    while (!stop) {
      published += 1;
      if (!pub.sendToQueue(WORK, BODY)) await new Promise((r) => pub.once('drain', r));
      // Stay at most ~5,000 messages ahead of the consumer: throughput, not a backlog.
      while (!stop && published - consumed > 5000) await new Promise((r) => setTimeout(r, 1));
      if (published % 256 === 0) await new Promise((r) => setImmediate(r));
    }
  })();
  const start = Date.now();
  const startCount = consumed;
  await new Promise((r) => setTimeout(r, until - Date.now()));
  const rate = ((consumed - startCount) * 1000) / (Date.now() - start);
  stop = true;
  await publisher;
  await sub.cancel(consumerTag);
  await pub.close();
  await sub.close();
  return rate;
}

const conn = await amqp.connect(AMQP_URL);
const admin = await conn.createChannel();
for (let i = 0; i < QUEUES; i++) await admin.assertQueue(`${PREFIX}-idle-${i}`, { durable: false });
await admin.assertQueue(WORK, { durable: false });

console.log(`ui-load: ${QUEUES} idle queues, ${DURATION_S} s per run, 16-byte transient messages`);
const without = await measure(conn, DURATION_S);
await admin.purgeQueue(WORK);
console.log(`ui-load: without the UI: ${Math.round(without)} msg/s`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
});
let withUi;
let polls = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1360, height: 820 } });
  page.on('request', (r) => { if (r.url().includes('/api/')) polls += 1; });
  await page.goto(`${BASE_URL}/`);
  await page.fill('form[data-form=login] [name=username]', USER);
  await page.fill('form[data-form=login] [name=password]', PASS);
  await page.click('form[data-form=login] button[type=submit]');
  await page.locator('#top').waitFor({ state: 'visible' });
  await page.locator('#refresh-select').selectOption('5000');
  const run = measure(conn, DURATION_S);
  // Half the run on the overview, half on the queue list.
  await new Promise((r) => setTimeout(r, (DURATION_S * 1000) / 2));
  await page.evaluate(() => (location.hash = '#/queues'));
  withUi = await run;
} finally {
  await browser.close();
}
console.log(`ui-load: with the UI open (refresh 5 s, ${polls} API requests): ${Math.round(withUi)} msg/s`);
console.log(`ui-load: ratio with/without ${(withUi / without).toFixed(3)}`);

for (let i = 0; i < QUEUES; i++) await admin.deleteQueue(`${PREFIX}-idle-${i}`);
await admin.deleteQueue(WORK);
await conn.close();
