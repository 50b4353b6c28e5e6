// Authentication with amqplib: PLAIN (the default), AMQPLAIN, and a wrong password.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const amqp = require('amqplib');
const { AMQP_URL } = require('../lib/helpers');

function urlParts() {
  const u = new URL(AMQP_URL);
  return {
    user: decodeURIComponent(u.username || 'guest'),
    pass: decodeURIComponent(u.password || 'guest'),
    hostUrl: `${u.protocol}//${u.host}${u.pathname}`,
  };
}

async function roundTrip(conn) {
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  ch.sendToQueue(queue, Buffer.from('auth-ok'));
  for (let i = 0; i < 50; i++) {
    const msg = await ch.get(queue, { noAck: true });
    if (msg) return msg.content.toString();
    await new Promise((r) => setTimeout(r, 20));
  }
  return null;
}

test('AMQPLAIN mechanism', async () => {
  const { user, pass, hostUrl } = urlParts();
  const conn = await amqp.connect(hostUrl, {
    credentials: amqp.credentials.amqplain(user, pass),
    timeout: 5000,
  });
  try {
    assert.equal(await roundTrip(conn), 'auth-ok');
  } finally {
    await conn.close();
  }
});

test('PLAIN mechanism with explicit credentials', async () => {
  const { user, pass, hostUrl } = urlParts();
  const conn = await amqp.connect(hostUrl, { credentials: amqp.credentials.plain(user, pass), timeout: 5000 });
  try {
    assert.equal(await roundTrip(conn), 'auth-ok');
  } finally {
    await conn.close();
  }
});

test('wrong password is refused with ACCESS_REFUSED', async () => {
  const { user, hostUrl } = urlParts();
  await assert.rejects(
    amqp.connect(hostUrl, { credentials: amqp.credentials.plain(user, 'definitely-wrong'), timeout: 5000 }),
    (err) => {
      assert.match(String(err.message), /ACCESS_REFUSED|403/);
      return true;
    },
  );
});
