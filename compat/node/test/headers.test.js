// Headers exchange with amqplib, whose field tables carry JavaScript numbers in
// several AMQP types. RabbitMQ compares header values numerically across types.
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

test('x-match all/any with amqplib-encoded headers', async () => {
  const ch = await conn.createConfirmChannel();
  const ex = names.exchange('headers');
  await ch.assertExchange(ex, 'headers');
  const all = (await ch.assertQueue('', { exclusive: true })).queue;
  const any = (await ch.assertQueue('', { exclusive: true })).queue;
  await ch.bindQueue(all, ex, '', { 'x-match': 'all', domain: 'billing', kind: 'invoice' });
  await ch.bindQueue(any, ex, '', { 'x-match': 'any', domain: 'billing', kind: 'invoice' });
  ch.publish(ex, '', Buffer.from('both'), { headers: { domain: 'billing', kind: 'invoice' } });
  ch.publish(ex, '', Buffer.from('one'), { headers: { domain: 'billing', kind: 'refund' } });
  ch.publish(ex, '', Buffer.from('none'), { headers: { domain: 'shipping' } });
  await withTimeout(ch.waitForConfirms(), 5000, 'confirms');
  assert.deepEqual((await getAll(ch, all)).map((m) => m.content.toString()), ['both']);
  assert.deepEqual((await getAll(ch, any)).map((m) => m.content.toString()), ['both', 'one']);
});

test('numeric header values match across AMQP integer and float types', async () => {
  const ch = await conn.createConfirmChannel();
  const ex = names.exchange('headers');
  await ch.assertExchange(ex, 'headers');
  const q = (await ch.assertQueue('', { exclusive: true })).queue;
  await ch.bindQueue(q, ex, '', { 'x-match': 'all', v: 1 });
  const sends = [
    ['number', 1],
    ['long', { '!': 'long', value: 1 }],
    ['byte', { '!': 'byte', value: 1 }],
    ['double', { '!': 'double', value: 1 }],
    ['string', '1'],
    ['two', 2],
  ];
  for (const [name, v] of sends) ch.publish(ex, '', Buffer.from(name), { headers: { v } });
  await withTimeout(ch.waitForConfirms(), 5000, 'confirms');
  assert.deepEqual((await getAll(ch, q)).map((m) => m.content.toString()), ['number', 'long', 'byte', 'double']);
});
