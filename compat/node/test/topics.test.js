// RabbitMQ tutorial 5 (topics) with amqplib: `*` matches one word, `#` zero or more.
const { test, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { connect, Names, collector, getAll, withTimeout } = require('../lib/helpers');

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

const CASES = [
  // [routing key, to Q1 (*.orange.*), to Q2 (*.*.rabbit, lazy.#)]
  ['quick.orange.rabbit', true, true],
  ['lazy.orange.elephant', true, true],
  ['quick.orange.fox', true, false],
  ['lazy.brown.fox', false, true],
  ['lazy.pink.rabbit', false, true],
  ['quick.brown.fox', false, false],
  ['orange', false, false],
  ['quick.orange.male.rabbit', false, false],
  ['lazy.orange.male.rabbit', false, true],
  ['lazy', false, true],
];

test('tutorial topic table via consumers', async () => {
  const ch = await conn.createChannel();
  const ex = names.exchange('topic_logs');
  await ch.assertExchange(ex, 'topic', { durable: false });
  const q1 = (await ch.assertQueue('', { exclusive: true })).queue;
  const q2 = (await ch.assertQueue('', { exclusive: true })).queue;
  await ch.bindQueue(q1, ex, '*.orange.*');
  await ch.bindQueue(q2, ex, '*.*.rabbit');
  await ch.bindQueue(q2, ex, 'lazy.#');

  // Each queue's expected keys, then a sentinel that matches both queues and,
  // arriving last, proves nothing else is coming.
  const sentinel = 'end.orange.rabbit';
  const want1 = [...CASES.filter((c) => c[1]).map((c) => c[0]), sentinel];
  const want2 = [...CASES.filter((c) => c[2]).map((c) => c[0]), sentinel];
  const untilSentinel = () => {
    const got = [];
    const c = collector(1);
    return {
      got,
      done: c.done.then(() => got),
      push(m) {
        got.push(m.fields.routingKey);
        if (m.content.toString() === sentinel) c.push(m);
      },
    };
  };
  const c1 = untilSentinel();
  const c2 = untilSentinel();
  await ch.consume(q1, (m) => c1.push(m), { noAck: true });
  await ch.consume(q2, (m) => c2.push(m), { noAck: true });

  for (const [key] of CASES) ch.publish(ex, key, Buffer.from(key));
  ch.publish(ex, sentinel, Buffer.from(sentinel));
  assert.deepEqual(await c1.done, want1);
  assert.deepEqual(await c2.done, want2);
});

test('tutorial topic table via confirms and basic.get', async () => {
  const ch = await conn.createConfirmChannel();
  const ex = names.exchange('topic_logs');
  await ch.assertExchange(ex, 'topic');
  const q1 = names.queue('q1');
  const q2 = names.queue('q2');
  await ch.assertQueue(q1);
  await ch.assertQueue(q2);
  await ch.bindQueue(q1, ex, '*.orange.*');
  await ch.bindQueue(q2, ex, '*.*.rabbit');
  await ch.bindQueue(q2, ex, 'lazy.#');
  for (const [key] of CASES) ch.publish(ex, key, Buffer.from(key));
  await withTimeout(ch.waitForConfirms(), 5000, 'confirms');
  const got1 = (await getAll(ch, q1)).map((m) => m.content.toString());
  const got2 = (await getAll(ch, q2)).map((m) => m.content.toString());
  assert.deepEqual(got1, CASES.filter((c) => c[1]).map((c) => c[0]));
  assert.deepEqual(got2, CASES.filter((c) => c[2]).map((c) => c[0]));
});

test('domain topic exchange: topic1.# and topic2.#', async () => {
  const ch = await conn.createConfirmChannel();
  const ex = names.exchange('topic');
  await ch.assertExchange(ex, 'topic', { durable: true });
  const t1 = names.queue('topic1');
  const t2 = names.queue('topic2');
  await ch.assertQueue(t1, { durable: true });
  await ch.assertQueue(t2, { durable: true });
  await ch.bindQueue(t1, ex, 'topic1.#');
  await ch.bindQueue(t2, ex, 'topic2.#');
  for (const key of ['topic1', 'topic1.created', 'topic1.a.b', 'topic2.x', 'topic3.x', 'topic12']) {
    ch.publish(ex, key, Buffer.from(key), { persistent: true });
  }
  await withTimeout(ch.waitForConfirms(), 5000, 'confirms');
  assert.deepEqual(
    (await getAll(ch, t1)).map((m) => m.content.toString()),
    ['topic1', 'topic1.created', 'topic1.a.b'],
  );
  assert.deepEqual((await getAll(ch, t2)).map((m) => m.content.toString()), ['topic2.x']);
  await ch.unbindQueue(t2, ex, 'topic2.#');
  ch.publish(ex, 'topic2.y', Buffer.from('after unbind'));
  await withTimeout(ch.waitForConfirms(), 5000, 'confirms');
  assert.deepEqual(await getAll(ch, t2), []);
});
