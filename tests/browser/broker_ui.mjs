// End-to-end test of the broker's management UI in headless Chromium.
//
// Drives the UI the way an operator does: log in (and fail to), watch the
// overview charts, create queues and a binding, publish through an exchange,
// see the depth change, get the message back, move a backlog over two
// queues, purge, delete, and manage a user. Every wait has a deadline; any
// page error or unexpected console error fails the run.
//
// Env: BASE_URL (required; the broker's management listener, or the dev
// server), AMQP_URL (required; the same broker's AMQP listener, for the
// connection/consumer step), MQ_USER / MQ_PASS (default guest/guest), SCREENSHOT_DIR (default
// ./screenshots), CHROMIUM (default /usr/bin/chromium), STEP_TIMEOUT_MS
// (default 30000). Exits non-zero with the failing step and reason.

import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';

const BASE_URL = (process.env.BASE_URL ?? '').replace(/\/$/, '');
const USER = process.env.MQ_USER ?? 'guest';
const PASS = process.env.MQ_PASS ?? 'guest';
const SHOTS = path.resolve(process.env.SCREENSHOT_DIR ?? 'screenshots');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const TIMEOUT = Number(process.env.STEP_TIMEOUT_MS ?? 30000);

function die(msg) {
  console.error(`broker_ui: ${msg}`);
  process.exit(2);
}

if (!BASE_URL) die('BASE_URL is not set (the management listener, e.g. http://127.0.0.1:15680)');
if (!existsSync(CHROMIUM)) die(`no Chromium at ${CHROMIUM}: apt-get install -y chromium`);
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  die(`playwright-core is not installed (npm ci --prefix tests/browser): ${e.message}`);
}
const AMQP_URL = process.env.AMQP_URL ?? '';
if (!AMQP_URL) die('AMQP_URL is not set (the same broker\'s AMQP listener, e.g. amqp://guest:guest@127.0.0.1:5673/%2F)');
let amqp;
try {
  amqp = (await import('amqplib')).default;
} catch (e) {
  die(`amqplib is not installed (npm ci --prefix tests/browser): ${e.message}`);
}
mkdirSync(SHOTS, { recursive: true });

const AUTH = `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`;
const prefix = `ui-test-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
const SRC = `${prefix}-src`;
const DST1 = `${prefix}-dst1`;
const DST2 = `${prefix}-dst2`;
const TEST_USER = `${prefix}-user`;
const CONSUMED = `${prefix}-consumed`;

// ------------------------------------------------------------ harness

const consoleProblems = [];
let allowHttpErrors = false;
let currentStep = '';

/** Polls `probe` until `check(value)` holds; throws with the last value at the deadline. */
async function until(what, probe, check, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (check(last)) return last;
    } catch (e) {
      last = `error: ${e.message.split('\n')[0]}`;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}; last seen: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100)); // poll interval, not synchronisation
  }
}

const text = (locator) => locator.innerText({ timeout: 2000 }).then((t) => t.trim());

async function expectText(locator, expected, what, timeout) {
  const ok = (t) => (expected instanceof RegExp ? expected.test(t) : t === expected);
  return until(what, () => text(locator), ok, timeout);
}

const steps = [];
function step(name, fn) {
  steps.push({ name, fn });
}

/** Screenshot of the whole page; the viewport grows to it so the sticky header stays on top. */
async function shot(page, name) {
  const viewport = page.viewportSize();
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.setViewportSize({ width: viewport.width, height: Math.max(viewport.height, Math.min(height, 6000)) });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
  await page.setViewportSize(viewport);
}

// ------------------------------------------------------------ page helpers

let page;
const banner = (kind) => page.locator(`#banners .banner.${kind} .text`);
const queueRow = (name) =>
  page.locator('table[data-table=queues] tbody tr').filter({ has: page.locator('td[data-col=name]', { hasText: new RegExp(`^${name}$`) }) });
const queueCell = (name, col) => queueRow(name).locator(`td[data-col=${col}]`);

async function gotoHash(hash, heading) {
  await page.evaluate((h) => {
    location.hash = h;
  }, hash);
  await expectText(page.locator('main h1').first(), heading, `page heading ${heading}`);
}

async function filterQueues(value) {
  const box = page.locator('main input[name=filter]');
  await box.fill(value);
}

async function addQueue(name) {
  await gotoHash('#/queues', 'Queues');
  const form = page.locator('form[data-form=add-queue]');
  await form.locator('[name=vhost]').selectOption('/');
  await form.locator('[name=name]').fill(name);
  await form.locator('[name=durable]').selectOption('true');
  await form.locator('button[type=submit]').click();
  await expectText(banner('notice').last(), `Queue ${name} declared`, `notice for queue ${name}`);
}

async function openQueue(name) {
  await gotoHash(`#/queues/%2F/${encodeURIComponent(name)}`, new RegExp(`^Queue ${name}`));
}

const depth = (key) => page.locator(`dl.props dd[data-prop=${key}]`);

// ------------------------------------------------------------ steps

step('failed log-in shows an error', async () => {
  allowHttpErrors = true; // the browser logs the 401 of the refused log-in
  const res = await page.goto(`${BASE_URL}/`);
  if (!res || res.status() !== 200 || !/text\/html/.test(res.headers()['content-type'] ?? '')) {
    throw new Error(`${BASE_URL}/ answered ${res?.status()} ${res?.headers()['content-type']}: the UI's index.html is not served there`);
  }
  const form = page.locator('form[data-form=login]');
  await form.locator('[name=username]').fill(USER);
  await form.locator('[name=password]').fill(`${PASS}-wrong`);
  await form.locator('[name=password]').press('Enter'); // keyboard submit
  await expectText(page.locator('[data-login-error]'), /^Login failed/, 'the log-in error');
  if (!(await page.locator('#top').isHidden())) throw new Error('navigation shown although the log-in failed');
  await shot(page, 'login-failed');
  allowHttpErrors = false;
});

step('log in and see the overview charts', async () => {
  const form = page.locator('form[data-form=login]');
  await form.locator('[name=password]').fill(PASS);
  await form.locator('button[type=submit]').click();
  await page.locator('#top').waitFor({ state: 'visible', timeout: TIMEOUT });
  await expectText(page.locator('#whoami'), USER, 'the user name in the header');
  await expectText(page.locator('main h1'), 'Overview', 'overview heading');
  for (const chart of ['queued', 'rates']) {
    await until(`chart ${chart} to draw its series`, () => page.locator(`[data-chart=${chart}] svg .series`).count(), (n) => n >= 1);
    await until(`chart ${chart} legend`, () => page.locator(`[data-chart=${chart}] .legend [data-series]`).count(), (n) => n >= 2);
  }
  await expectText(page.locator('[data-tile=queues] .value'), /^\d[\d,]*$/, 'queue count tile');
  // Auto-refresh at the fastest interval so the rest of the run waits less.
  await page.locator('#refresh-select').selectOption('2000');
  await shot(page, 'overview');
});

step('create a queue', async () => {
  await addQueue(SRC);
  await until(`queue ${SRC} in the list of all vhosts`, () => queueRow(SRC).count(), (n) => n === 1);
  // From here on the lists are those of vhost "/" (the /api/queues/%2F form).
  await page.locator('#vhost-select').selectOption('/');
  await filterQueues(prefix);
  await until(`queue ${SRC} in the list`, () => queueRow(SRC).count(), (n) => n === 1);
  await expectText(page.locator('main [data-count]'), /^1–1 of 1 matching/, 'filtered count');
});

step('an API error shows its reason in a banner', async () => {
  allowHttpErrors = true; // the browser logs the 404
  await openQueue(SRC);
  const form = page.locator('form[data-form=bind]');
  await form.locator('[name=source]').fill(`${prefix}-no-such-exchange`);
  await form.locator('button[type=submit]').click();
  await expectText(banner('error').last(), /^Bind: .+\(HTTP 404\)$/, 'error banner with the API reason');
  await page.locator('#banners .banner.error button').last().click();
  allowHttpErrors = false;
});

step('bind the queue to amq.direct', async () => {
  const form = page.locator('form[data-form=bind]');
  await form.locator('[name=source]').fill('amq.direct');
  await form.locator('[name=routing_key]').fill(SRC);
  await form.locator('button[type=submit]').click();
  const row = page.locator('table[data-table=queue-bindings] tbody tr').filter({ hasText: 'amq.direct' });
  await until('the amq.direct binding in the table', () => row.count(), (n) => n === 1);
  await expectText(row.locator('td[data-col=routing_key]'), SRC, 'binding routing key');
});

step('publish to the exchange and see the depth become 1', async () => {
  await page.locator('table[data-table=queue-bindings] a', { hasText: 'amq.direct' }).click();
  await expectText(page.locator('main h1'), /^Exchange amq\.direct/, 'exchange page');
  const row = page.locator('table[data-table=exchange-source-bindings] tbody tr').filter({ hasText: SRC });
  await until('the binding on the exchange page', () => row.count(), (n) => n === 1);
  const form = page.locator('form[data-form=publish]');
  await form.locator('[name=routing_key]').fill(SRC);
  await form.locator('[name=payload]').fill(`hello from ${prefix}`);
  await form.locator('button[type=submit]').click();
  await expectText(form.locator('[data-result=publish]'), 'Message published and routed.', 'publish result');
  await shot(page, 'exchange');
  await gotoHash('#/queues', 'Queues');
  await filterQueues(prefix);
  await expectText(queueCell(SRC, 'messages_ready'), '1', `ready count of ${SRC} in the list`);
  await expectText(queueCell(SRC, 'messages'), '1', `total of ${SRC} in the list`);
  await shot(page, 'queues');
});

step('get the message back and see the depth drop', async () => {
  await queueRow(SRC).locator('a').click();
  await expectText(page.locator('main h1'), new RegExp(`^Queue ${SRC}`), 'queue page');
  await expectText(depth('total'), '1', 'queue depth on the detail page');
  const form = page.locator('form[data-form=get]');
  await form.locator('[name=ackmode]').selectOption('ack_requeue_false');
  await form.locator('button[type=submit]').click();
  await expectText(page.locator('[data-messages] [data-payload]').first(), `hello from ${prefix}`, 'the payload of the message');
  await expectText(depth('total'), '0', 'queue depth after the get');
});

step('publish a backlog of 10 (test data)', async () => {
  await gotoHash('#/exchanges/%2F/amq.direct', /^Exchange amq\.direct/);
  const form = page.locator('form[data-form=publish]');
  await form.locator('[name=routing_key]').fill(SRC);
  await form.locator('[name=payload]').fill('{"n": {{n}}}');
  await form.locator('[name=properties]').fill('content_type=application/json');
  await form.locator('[name=repeat]').fill('10');
  await form.locator('button[type=submit]').click();
  await expectText(form.locator('[data-result=publish]'), 'Published 10 messages, 10 routed.', 'publish result', TIMEOUT * 2);
  await openQueue(SRC);
  await expectText(depth('total'), '10', 'backlog depth');
  await shot(page, 'queue-detail');
});

step('create two more queues and sort the list', async () => {
  await addQueue(DST1);
  await addQueue(DST2);
  await filterQueues(prefix);
  const names = () => page.locator('table[data-table=queues] tbody td[data-col=name]').allInnerTexts();
  await until('three queues sorted by name', names, (n) => n.join() === [DST1, DST2, SRC].join());
  const nameHeader = page.locator('table[data-table=queues] th', { hasText: 'Name' });
  await nameHeader.locator('button').click();
  await until('name header marked descending', () => nameHeader.getAttribute('aria-sort'), (v) => v === 'descending');
  await until('three queues sorted by name, descending', names, (n) => n.join() === [SRC, DST2, DST1].join());
  await nameHeader.locator('button').press('Enter'); // sortable from the keyboard too
  await until('three queues sorted by name again', names, (n) => n.join() === [DST1, DST2, SRC].join());
});

step('move the backlog spread over the two queues', async () => {
  await openQueue(SRC);
  await expectText(depth('total'), '10', 'backlog depth before the move');
  const form = page.locator('form[data-form=move]');
  await form.locator('input[name=destination]').nth(0).fill(DST1);
  await form.getByRole('button', { name: '+ Add destination' }).click();
  await form.locator('input[name=destination]').nth(1).fill(DST2);
  await form.locator('button[type=submit]').click();
  await expectText(form.locator('[data-result=move]'), `Moved 10 messages to ${DST1}, ${DST2}`, 'move result', TIMEOUT * 2);
  await expectText(depth('total'), '0', 'source depth after the move');
  await gotoHash('#/queues', 'Queues');
  await filterQueues(prefix);
  await expectText(queueCell(DST1, 'messages_ready'), '5', `${DST1} depth`);
  await expectText(queueCell(DST2, 'messages_ready'), '5', `${DST2} depth`);
  await expectText(queueCell(SRC, 'messages'), '0', `${SRC} depth`);
  await shot(page, 'queues-after-move');
});

step('purge a queue', async () => {
  await openQueue(DST1);
  await expectText(depth('total'), '5', `${DST1} depth before the purge`);
  await page.getByRole('button', { name: 'Purge messages' }).click();
  await expectText(banner('notice').last(), new RegExp(`^Queue ${DST1} purged`), 'purge notice');
  await expectText(depth('total'), '0', `${DST1} depth after the purge`);
});

step('delete the queues', async () => {
  for (const q of [SRC, DST1, DST2]) {
    await openQueue(q);
    await page.locator('form[data-form=delete-queue] button[type=submit]').click();
    await expectText(page.locator('main h1'), 'Queues', 'back on the queue list');
  }
  await filterQueues(prefix);
  await expectText(page.locator('table[data-table=queues] tbody td.empty'), 'No queues match.', 'no test queues left');
});

step('exchanges list filters and sorts on the client', async () => {
  await gotoHash('#/exchanges', 'Exchanges');
  const names = () => page.locator('table[data-table=exchanges] tbody td[data-col=name]').allInnerTexts();
  await page.locator('main input[name=filter]').fill('amq.');
  const builtIn = ['amq.direct', 'amq.fanout', 'amq.topic'];
  await until('the built-in amq.* exchanges, sorted by name', names, (n) => builtIn.every((b) => n.includes(b)) && n.every((x) => x.startsWith('amq.')) && n.join() === [...n].sort((a, b) => a.localeCompare(b)).join());
  const typeHeader = page.locator('table[data-table=exchanges] th', { hasText: 'Type' });
  await typeHeader.locator('button').click();
  const types = () => page.locator('table[data-table=exchanges] tbody td[data-col=type]').allInnerTexts();
  await until('exchanges sorted by type', types, (t) => t.length >= 3 && t.join() === [...t].sort((a, b) => a.localeCompare(b)).join());
  await expectText(page.locator('main [data-count]'), /^\d+ of \d+ items$/, 'filtered count');
  await shot(page, 'exchanges');
});

step('admin: add a user, set permissions, delete the user', async () => {
  await gotoHash('#/admin', 'Admin');
  await page.getByText('Add or update a user').click();
  const uf = page.locator('form[data-form=add-user]');
  await uf.locator('[name=name]').fill(TEST_USER);
  await uf.locator('[name=password]').fill('s3cret-pass');
  await uf.locator('[name=tags]').fill('management');
  await uf.locator('button[type=submit]').click();
  const userRow = page.locator('table[data-table=users] tbody tr').filter({ has: page.locator('td[data-col=name]', { hasText: new RegExp(`^${TEST_USER}$`) }) });
  await until('the new user in the table', () => userRow.count(), (n) => n === 1);
  await expectText(userRow.locator('td[data-col=tags]'), 'management', 'user tags');
  await page.getByText('Set permissions').click();
  const pf = page.locator('form[data-form=set-permission]');
  await pf.locator('[name=user]').fill(TEST_USER);
  await pf.locator('[name=vhost]').selectOption('/');
  await pf.locator('[name=configure]').fill(`^${prefix}`);
  await pf.locator('button[type=submit]').click();
  const permRow = page.locator('table[data-table=permissions] tbody tr').filter({ hasText: TEST_USER });
  await until('the permission row', () => permRow.count(), (n) => n === 1);
  await expectText(permRow.locator('td[data-col=configure]'), `^${prefix}`, 'configure regexp');
  await shot(page, 'admin');
  await userRow.getByRole('button', { name: 'Delete' }).click();
  await until('the user to disappear', () => userRow.count(), (n) => n === 0);
});

step('a live AMQP consumer shows in connections, channels and the queue page; close it from the UI', async () => {
  const conn = await amqp.connect(AMQP_URL, { clientProperties: { connection_name: `${prefix}-conn` } });
  let closed = false;
  conn.on('error', () => {}); // the forced close below arrives as an error event
  conn.on('close', () => {
    closed = true;
  });
  try {
    const ch = await conn.createChannel();
    await ch.prefetch(7);
    await ch.assertQueue(CONSUMED, { exclusive: true });
    await ch.consume(CONSUMED, () => {}, { noAck: false, consumerTag: `${prefix}-tag` });

    await gotoHash('#/connections', 'Connections');
    await page.locator('main input[name=filter]').fill(`${prefix}-conn`);
    const connRow = page.locator('table[data-table=connections] tbody tr').filter({ hasText: `${prefix}-conn` });
    await until('our connection in the list', () => connRow.count(), (n) => n === 1);
    await expectText(connRow.locator('td[data-col=user]'), USER, 'connection user');
    await expectText(connRow.locator('td[data-col=channels]'), '1', 'channel count of the connection');
    const connName = (await connRow.locator('td[data-col=name]').innerText()).split('\n')[0].trim();
    await shot(page, 'connections');

    await gotoHash('#/channels', 'Channels');
    await page.locator('main input[name=filter]').fill(connName);
    const chanRow = page.locator('table[data-table=channels] tbody tr').first();
    await expectText(chanRow.locator('td[data-col=consumer_count]'), '1', 'consumer count of the channel');
    await expectText(chanRow.locator('td[data-col=prefetch_count]'), '7', 'prefetch of the channel');
    await shot(page, 'channels');

    await openQueue(CONSUMED);
    const consumer = page.locator('table[data-table=consumers] tbody tr').filter({ hasText: `${prefix}-tag` });
    await until('the consumer on the queue page', () => consumer.count(), (n) => n === 1);
    await expectText(consumer.locator('td[data-col=ack_required]'), 'yes', 'consumer ack mode');
    await expectText(consumer.locator('td[data-col=prefetch_count]'), '7', 'consumer prefetch');

    await gotoHash('#/connections', 'Connections');
    await page.locator('main input[name=filter]').fill(`${prefix}-conn`);
    await connRow.getByRole('button', { name: 'Close' }).click();
    await until('the client to see its connection closed', () => closed, (c) => c === true);
    await until('the connection to leave the list', () => connRow.count(), (n) => n === 0);
  } finally {
    if (!closed) await conn.close().catch(() => {});
  }
});

step('log out', async () => {
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.locator('form[data-form=login]').waitFor({ timeout: TIMEOUT });
  const stored = await page.evaluate(() => sessionStorage.getItem('eventbus.auth'));
  if (stored) throw new Error('credentials still in sessionStorage after log-out');
});

// ------------------------------------------------------------ run

async function cleanup() {
  const call = (method, p) => fetch(`${BASE_URL}/api${p}`, { method, headers: { Authorization: AUTH } }).catch(() => null);
  await Promise.all([SRC, DST1, DST2, CONSUMED].map((q) => call('DELETE', `/queues/%2F/${encodeURIComponent(q)}`)));
  await call('DELETE', `/users/${encodeURIComponent(TEST_USER)}`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
});
let passed = 0;
let failed = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  page.on('pageerror', (e) => consoleProblems.push(`[${currentStep}] page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    const t = m.text();
    if (allowHttpErrors && /Failed to load resource: the server responded with a status of 4\d\d/.test(t)) return;
    consoleProblems.push(`[${currentStep}] console ${m.type()}: ${t}`);
  });
  for (const [i, s] of steps.entries()) {
    currentStep = s.name;
    const t0 = Date.now();
    try {
      await s.fn();
      if (consoleProblems.length) throw new Error(`console/page errors:\n  ${consoleProblems.join('\n  ')}`);
      passed++;
      console.log(`ok ${i + 1} - ${s.name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${i + 1} - ${s.name}: ${e.message}`);
      await shot(page, `failure-${i + 1}`).catch(() => {});
      console.log(`broker_ui: screenshot of the failure in ${path.join(SHOTS, `failure-${i + 1}.png`)}`);
      break;
    }
  }
} finally {
  await browser.close();
  await cleanup();
}
const skipped = steps.length - passed - failed;
console.log(`broker_ui: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} not run` : ''}; screenshots in ${SHOTS}`);
process.exit(failed || skipped ? 1 : 0);
