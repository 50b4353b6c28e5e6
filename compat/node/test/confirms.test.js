// Publisher confirms with amqplib's ConfirmChannel: per-publish callbacks,
// waitForConfirms, mandatory returns and channel errors.
const { test, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { connect, Names, getAll, withTimeout } = require('../lib/helpers');

let conn;
let names;

beforeEach(async (t) => {
  names = new Names(t.name);
  conn = await connect();
});

afterEach(async () => {
  await withTimeout(conn.close(), 5000, 'connection close').catch(() => {});
  await names.cleanup();
});

function publishAsync(ch, ex, key, body, opts = {}) {
  return withTimeout(
    new Promise((resolve, reject) => {
      ch.publish(ex, key, body, opts, (err, ok) => (err ? reject(err) : resolve(ok)));
    }),
    5000,
    `confirm of ${key}`,
  );
}

test('every publish callback is called with no error; waitForConfirms resolves', async () => {
  const ch = await conn.createConfirmChannel();
  const queue = names.queue('confirmed');
  await ch.assertQueue(queue, { durable: true });
  const acked = [];
  for (let i = 0; i < 100; i++) {
    ch.sendToQueue(queue, Buffer.from(String(i)), { persistent: true }, (err) => {
      assert.equal(err, null);
      acked.push(i);
    });
  }
  await withTimeout(ch.waitForConfirms(), 5000, 'waitForConfirms');
  assert.equal(acked.length, 100);
  // The broker may ack several publishes at once (multiple=true); callbacks still run in order.
  assert.deepEqual(acked, Array.from({ length: 100 }, (_, i) => i));
  const { messageCount } = await ch.checkQueue(queue);
  assert.equal(messageCount, 100);
});

test('confirms across exchange kinds and the domain topology', async () => {
  const ch = await conn.createConfirmChannel();
  const direct = names.exchange('direct');
  const fanout = names.exchange('fanout');
  const headers = names.exchange('headers');
  await ch.assertExchange(direct, 'direct', { durable: true });
  await ch.assertExchange(fanout, 'fanout', { durable: true });
  await ch.assertExchange(headers, 'headers', { durable: true });
  const q = {};
  for (const n of ['direct1', 'direct2', 'fanout1', 'fanout2', 'headers_all', 'headers_any']) {
    q[n] = names.queue(n);
    await ch.assertQueue(q[n], { durable: true });
  }
  await ch.bindQueue(q.direct1, direct, 'direct1');
  await ch.bindQueue(q.direct2, direct, 'direct2');
  await ch.bindQueue(q.fanout1, fanout, '');
  await ch.bindQueue(q.fanout2, fanout, '');
  await ch.bindQueue(q.headers_all, headers, '', { 'x-match': 'all', a: '1', b: '2' });
  await ch.bindQueue(q.headers_any, headers, '', { 'x-match': 'any', a: '1', b: '2' });

  await publishAsync(ch, direct, 'direct1', Buffer.from('d1'));
  await publishAsync(ch, direct, 'direct2', Buffer.from('d2'));
  await publishAsync(ch, fanout, '', Buffer.from('f'));
  await publishAsync(ch, headers, '', Buffer.from('both'), { headers: { a: '1', b: '2' } });
  await publishAsync(ch, headers, '', Buffer.from('a-only'), { headers: { a: '1' } });

  const got = {};
  for (const [n, queue] of Object.entries(q)) got[n] = (await getAll(ch, queue)).map((m) => m.content.toString());
  assert.deepEqual(got, {
    direct1: ['d1'],
    direct2: ['d2'],
    fanout1: ['f'],
    fanout2: ['f'],
    headers_all: ['both'],
    headers_any: ['both', 'a-only'],
  });
});

test('mandatory unroutable publish is returned, then confirmed', async () => {
  const ch = await conn.createConfirmChannel();
  const ex = names.exchange('nowhere');
  await ch.assertExchange(ex, 'direct');
  const returned = new Promise((resolve) => ch.once('return', resolve));
  await publishAsync(ch, ex, 'no-binding', Buffer.from('lost'), { mandatory: true, messageId: 'r1' });
  const msg = await withTimeout(returned, 5000, 'basic.return');
  assert.equal(msg.fields.replyCode, 312);
  assert.equal(msg.fields.replyText, 'NO_ROUTE');
  assert.equal(msg.fields.exchange, ex);
  assert.equal(msg.fields.routingKey, 'no-binding');
  assert.equal(msg.properties.messageId, 'r1');
  assert.equal(msg.content.toString(), 'lost');
});

test('publishing to a missing exchange fails the confirm and closes the channel with 404', async () => {
  const ch = await conn.createConfirmChannel();
  const errors = [];
  ch.on('error', (e) => errors.push(e));
  const closed = new Promise((resolve) => ch.once('close', resolve));
  const pending = new Promise((resolve) => {
    ch.publish(`${names.prefix}.missing`, 'k', Buffer.from('x'), {}, (err) => resolve(err));
  });
  const err = await withTimeout(pending, 5000, 'publish callback');
  assert.ok(err, 'the publish callback must receive an error');
  await withTimeout(closed, 5000, 'channel close');
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 404);
  assert.match(errors[0].message, /NOT_FOUND/);
  await assert.rejects(ch.waitForConfirms());
  // Other channels on the connection still work.
  const ch2 = await conn.createConfirmChannel();
  await ch2.assertQueue('', { exclusive: true });
});

test('waitForConfirms with a large batch and mixed sizes', async () => {
  const ch = await conn.createConfirmChannel();
  const queue = names.queue('batch');
  await ch.assertQueue(queue);
  let bytes = 0;
  for (let i = 0; i < 500; i++) {
    const body = Buffer.alloc((i * 97) % 20000, i % 256);
    bytes += body.length;
    ch.sendToQueue(queue, body);
  }
  await withTimeout(ch.waitForConfirms(), 10000, 'waitForConfirms');
  const msgs = await getAll(ch, queue);
  assert.equal(msgs.length, 500);
  assert.equal(
    msgs.reduce((n, m) => n + m.content.length, 0),
    bytes,
  );
  msgs.forEach((m, i) => assert.equal(m.content.length, (i * 97) % 20000));
});
