// Basic consume / ack round trips with the amqplib promise API.
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

test('sendToQueue, consume with manual ack, cancel', async () => {
  const ch = await conn.createChannel();
  const queue = names.queue('work');
  const ok = await ch.assertQueue(queue, { durable: true });
  assert.equal(ok.queue, queue);
  assert.equal(ok.messageCount, 0);

  for (let i = 0; i < 10; i++) {
    assert.equal(ch.sendToQueue(queue, Buffer.from(`msg ${i}`), { persistent: true, messageId: `id-${i}` }), true);
  }
  await ch.prefetch(1);
  const c = collector(10);
  const { consumerTag } = await ch.consume(queue, (msg) => {
    assert.notEqual(msg, null, 'consumer cancelled by server');
    c.push(msg);
    ch.ack(msg);
  });
  assert.match(consumerTag, /^amq\.ctag-/);
  const got = await c.done;
  assert.deepEqual(
    got.map((m) => m.content.toString()),
    Array.from({ length: 10 }, (_, i) => `msg ${i}`),
  );
  assert.deepEqual(
    got.map((m) => m.properties.messageId),
    Array.from({ length: 10 }, (_, i) => `id-${i}`),
  );
  assert.ok(got.every((m) => m.properties.deliveryMode === 2));
  assert.ok(got.every((m) => m.fields.redelivered === false));
  assert.ok(got.every((m) => m.fields.consumerTag === consumerTag));

  const cancel = await ch.cancel(consumerTag);
  assert.equal(cancel.consumerTag, consumerTag);
  const after = await ch.checkQueue(queue);
  assert.equal(after.messageCount, 0);
  assert.equal(after.consumerCount, 0);
});

test('nack with requeue redelivers with the redelivered flag', async () => {
  const ch = await conn.createChannel();
  const queue = names.queue('nack');
  await ch.assertQueue(queue);
  ch.sendToQueue(queue, Buffer.from('again'));

  const first = collector(1);
  const second = collector(1);
  let seen = 0;
  await ch.consume(queue, (msg) => {
    seen += 1;
    if (seen === 1) {
      first.push(msg);
      ch.nack(msg, false, true);
    } else {
      second.push(msg);
      ch.ack(msg);
    }
  });
  const [m1] = await first.done;
  const [m2] = await second.done;
  assert.equal(m1.fields.redelivered, false);
  assert.equal(m2.fields.redelivered, true);
  assert.equal(m2.content.toString(), 'again');
});

test('named consumer tag, noAck consumer and server-named exclusive queue', async () => {
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  assert.match(queue, /^amq\.gen-/);
  const c = collector(3);
  const { consumerTag } = await ch.consume(queue, (msg) => c.push(msg), { noAck: true, consumerTag: 'my-tag' });
  assert.equal(consumerTag, 'my-tag');
  for (const body of ['a', 'b', 'c']) ch.sendToQueue(queue, Buffer.from(body), { headers: { n: body } });
  const got = await c.done;
  assert.deepEqual(got.map((m) => m.content.toString()), ['a', 'b', 'c']);
  assert.deepEqual(got.map((m) => m.properties.headers.n), ['a', 'b', 'c']);
});

test('basic.get and get-empty', async () => {
  const ch = await conn.createChannel();
  const queue = names.queue('get');
  await ch.assertQueue(queue);
  assert.equal(await ch.get(queue), false);
  const cch = await conn.createConfirmChannel();
  cch.sendToQueue(queue, Buffer.from('one'));
  cch.sendToQueue(queue, Buffer.from('two'));
  await withTimeout(cch.waitForConfirms(), 5000, 'confirms');
  const m = await ch.get(queue, { noAck: false });
  assert.equal(m.content.toString(), 'one');
  assert.equal(m.fields.messageCount, 1);
  ch.ack(m);
  assert.deepEqual((await getAll(ch, queue)).map((x) => x.content.toString()), ['two']);
});

test('large message split across frames', async () => {
  const ch = await conn.createChannel();
  const queue = names.queue('big');
  await ch.assertQueue(queue);
  const body = require('node:crypto').randomBytes(1024 * 1024 + 3);
  ch.sendToQueue(queue, body);
  const c = collector(1);
  await ch.consume(queue, (msg) => c.push(msg), { noAck: true });
  const [m] = await c.done;
  assert.equal(m.content.length, body.length);
  assert.ok(m.content.equals(body));
});

test('passive check of a missing queue closes the channel with 404', async () => {
  const ch = await conn.createChannel();
  const errors = [];
  ch.on('error', (e) => errors.push(e));
  await assert.rejects(ch.checkQueue(`${names.prefix}.missing`), (err) => {
    assert.equal(err.code, 404);
    assert.match(err.message, /NOT_FOUND/);
    return true;
  });
  // The connection survives a channel exception.
  const ch2 = await conn.createChannel();
  await ch2.assertQueue('', { exclusive: true });
});

test('deleting the queue cancels the consumer (callback receives null)', async () => {
  const ch = await conn.createChannel();
  const queue = names.queue('doomed');
  await ch.assertQueue(queue);
  const cancelled = new Promise((resolve) => {
    ch.consume(queue, (msg) => {
      if (msg === null) resolve(true);
    });
  });
  const other = await conn.createChannel();
  const { messageCount } = await other.deleteQueue(queue);
  assert.equal(messageCount, 0);
  assert.equal(await withTimeout(cancelled, 5000, 'basic.cancel from the broker'), true);
  // The channel stays open after a server-side cancel.
  await ch.checkExchange('amq.direct');
});

test('prefetch bounds unacked deliveries; acking releases more', async () => {
  const ch = await conn.createChannel();
  const queue = names.queue('prefetch');
  await ch.assertQueue(queue);
  for (let i = 0; i < 6; i++) ch.sendToQueue(queue, Buffer.from(String(i)));
  await ch.prefetch(2);
  const held = [];
  const firstTwo = collector(2);
  const rest = collector(4);
  await ch.consume(queue, (msg) => {
    held.push(msg);
    if (held.length <= 2) firstTwo.push(msg);
    else {
      rest.push(msg);
      ch.ack(msg);
    }
  });
  await firstTwo.done;
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(held.length, 2, 'prefetch(2) allows only two unacked deliveries');
  ch.ack(held[1], true); // acks both
  const more = await rest.done;
  assert.deepEqual(more.map((m) => m.content.toString()), ['2', '3', '4', '5']);
});
