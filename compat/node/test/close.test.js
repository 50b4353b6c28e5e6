// Closing a connection right after acking. amqplib writes connection.close on
// channel 0 ahead of basic.ack frames still queued on the channel, so the broker
// receives acks after connection.close. RabbitMQ replies close-ok and keeps
// reading (and discarding) until the client closes the socket; a broker that
// drops the socket at once resets the connection, the client's pending writes
// fail with EPIPE and amqplib's close() promise never settles.
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { connect, Names, withTimeout } = require('../lib/helpers');

let names;

afterEach(async () => {
  await names.cleanup();
});

test('close() right after acks resolves cleanly', async (t) => {
  names = new Names(t.name);
  const setup = await connect();
  const queue = names.queue('q');
  const sch = await setup.createConfirmChannel();
  await sch.assertQueue(queue);
  const rounds = 10;
  const perRound = 20;
  for (let i = 0; i < rounds * perRound; i++) sch.sendToQueue(queue, Buffer.from(String(i)));
  await withTimeout(sch.waitForConfirms(), 5000, 'confirms');
  await setup.close();

  const errors = [];
  for (let round = 0; round < rounds; round++) {
    const conn = await connect();
    conn.on('error', (e) => errors.push(e.message));
    const ch = await conn.createChannel();
    await ch.prefetch(perRound);
    const closed = new Promise((resolve, reject) => {
      let n = 0;
      ch.consume(queue, (msg) => {
        ch.ack(msg);
        n += 1;
        if (n === perRound) conn.close().then(resolve, reject);
      });
    });
    await withTimeout(closed, 5000, `connection.close-ok in round ${round}`);
  }
  assert.deepEqual(errors, [], 'the connection must not be reset while closing');
});
