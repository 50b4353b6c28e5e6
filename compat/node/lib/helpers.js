// Shared helpers for the amqplib compatibility tests.
// Every test talks to the broker named by AMQP_URL, uses names unique to the run,
// deletes what it declared, and bounds every wait so a broken broker fails fast.
const amqp = require('amqplib');
const crypto = require('node:crypto');

const AMQP_URL = process.env.AMQP_URL;
const RECEIVE_TIMEOUT_MS = 5000;

async function connect() {
  if (!AMQP_URL) throw new Error('AMQP_URL is not set (e.g. amqp://guest:guest@127.0.0.1:5672/)');
  const conn = await amqp.connect(AMQP_URL, { timeout: 5000 });
  // A connection-level error must fail the test, not crash the runner with an
  // unhandled 'error' event.
  conn.on('error', () => {});
  return conn;
}

class Names {
  constructor(test) {
    const slug = String(test).replace(/[^A-Za-z0-9]+/g, '-').slice(0, 60);
    this.prefix = `compat.node.${slug}.${crypto.randomBytes(4).toString('hex')}`;
    this.queues = [];
    this.exchanges = [];
  }
  queue(name) {
    const full = `${this.prefix}.${name}`;
    this.queues.push(full);
    return full;
  }
  exchange(name) {
    const full = `${this.prefix}.${name}`;
    this.exchanges.push(full);
    return full;
  }
  async cleanup() {
    if (this.queues.length === 0 && this.exchanges.length === 0) return;
    const conn = await connect();
    try {
      for (const q of this.queues) {
        const ch = await conn.createChannel();
        ch.on('error', () => {});
        await ch.deleteQueue(q).catch(() => {});
        await ch.close().catch(() => {});
      }
      for (const x of this.exchanges) {
        const ch = await conn.createChannel();
        ch.on('error', () => {});
        await ch.deleteExchange(x).catch(() => {});
        await ch.close().catch(() => {});
      }
    } finally {
      await conn.close().catch(() => {});
    }
  }
}

// Resolve with `count` messages delivered to `onMessage`-style consumers, or
// reject after RECEIVE_TIMEOUT_MS without progress.
function collector(count, timeoutMs = RECEIVE_TIMEOUT_MS) {
  const got = [];
  let resolve;
  let reject;
  const done = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  let timer = null;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(
      () => reject(new Error(`expected ${count} messages, got ${got.length}: ${JSON.stringify(got.map((m) => m.content.toString()))}`)),
      timeoutMs,
    );
  };
  arm();
  return {
    got,
    done,
    push(msg) {
      got.push(msg);
      if (got.length === count) {
        clearTimeout(timer);
        resolve(got);
      } else {
        arm();
      }
    },
  };
}

// basic.get until get-empty.
async function getAll(ch, queue) {
  const out = [];
  for (let i = 0; i < 10000; i++) {
    const msg = await ch.get(queue, { noAck: true });
    if (msg === false) return out;
    out.push(msg);
  }
  throw new Error(`queue ${queue} did not run dry`);
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

module.exports = { AMQP_URL, RECEIVE_TIMEOUT_MS, connect, Names, collector, getAll, withTimeout };
