'use strict';
// A member of a Node.js cluster-client cluster, for the benchmark: it speaks the Go
// agents' protocol (one JSON request per line on stdin, one JSON answer per line on
// stdout) and does the same work: an echo invoke, whoami, and a publish/subscribe
// broker in the real client, which only the Leader builds.
const util = require('util');
const readline = require('readline');

const toStderr = (...a) => process.stderr.write(util.format(...a) + '\n');
console.log = console.info = console.debug = toStderr; // stdout is the protocol's

const cluster = require('cluster-client');
const sdkBase = require('sdk-base'); // cluster-client's own dependency
const Base = sdkBase.Base || sdkBase;

const mono = () => process.hrtime.bigint(); // CLOCK_MONOTONIC, as the Go agents use

class EchoClient extends Base {
  constructor() {
    super();
    this.subs = new Map();
    this.ready(true);
  }

  subscribe(reg, listener) {
    let s = this.subs.get(reg.topic);
    if (!s) {
      s = new Set();
      this.subs.set(reg.topic, s);
    }
    s.add(listener);
  }

  unSubscribe(reg, listener) {
    const s = this.subs.get(reg.topic);
    if (s) s.delete(listener);
  }

  publish(reg) {
    const s = this.subs.get(reg.topic);
    if (s) for (const l of s) l(reg.data);
  }

  async echo(x) { return x; }

  async whoami() { return process.pid; }
}

const quiet = { info() {}, debug() {}, warn: toStderr, error: toStderr };
const client = cluster(EchoClient, {
  name: 'bench',
  port: Number(process.env.BENCH_PORT),
  responseTimeout: 10000,
  logger: quiet,
})
  .delegate('echo', 'invoke')
  .delegate('whoami', 'invoke')
  .create();

const subs = { lat: [], first: 0, last: 0 };
const pad = n => 'x'.repeat(Math.max(n, 0));
const yieldLoop = () => new Promise(r => setImmediate(r));

async function handle(req) {
  switch (req.op) {
    case 'role':
      return { pid: process.pid, leader: !!client.isClusterClientLeader };
    case 'seq': {
      const lat = [];
      const arg = pad(req.size);
      const end = Date.now() + (req.ms || 3600e3);
      for (let i = 0; i < req.n; i++) {
        const t0 = mono();
        await client.echo(arg);
        lat.push(Number(mono() - t0));
        if (Date.now() > end) break;
      }
      return { lat };
    }
    case 'tput': {
      let calls = 0;
      const arg = pad(req.size);
      const t0 = mono();
      const end = Date.now() + req.ms;
      const loop = async () => {
        while (Date.now() < end) {
          await client.echo(arg);
          calls++;
        }
      };
      await Promise.all(Array.from({ length: req.conc }, loop));
      return { calls, ns: Number(mono() - t0) };
    }
    case 'sub':
      client.subscribe({ topic: req.topic }, data => {
        const now = mono();
        if (subs.lat.length === 0) subs.first = Number(now);
        subs.last = Number(now);
        subs.lat.push(Number(now - BigInt(data.t)));
      });
      return {};
    case 'subcount':
      return { calls: subs.lat.length };
    case 'substats': {
      const r = { calls: subs.lat.length, lat: subs.lat, first: subs.first, last: subs.last };
      subs.lat = [];
      subs.first = subs.last = 0;
      return r;
    }
    case 'pub': {
      const t0 = mono();
      const p = pad(req.size - 24);
      for (let i = 0; i < req.n; i++) {
        if (req.intervalUs > 0) {
          const at = t0 + BigInt(i * req.intervalUs * 1000);
          while (mono() < at) await yieldLoop();
        } else if (i % 64 === 63) {
          await yieldLoop(); // let the writes go out
        }
        client.publish({ topic: req.topic, data: { t: String(mono()), p } });
      }
      return { calls: req.n, ns: Number(mono() - t0) };
    }
    case 'probe':
      for (;;) {
        try {
          const pid = await client.whoami();
          if (pid !== req.oldpid) return { t: Number(mono()), pid };
        } catch (err) {
          await yieldLoop();
        }
      }
    default:
      return { err: 'unknown op ' + req.op };
  }
}

(async () => {
  await client.ready();
  const write = o => process.stdout.write(JSON.stringify(o) + '\n');
  write({ ready: true, pid: process.pid, leader: !!client.isClusterClientLeader });
  const rl = readline.createInterface({ input: process.stdin });
  const queue = [];
  let busy = false;
  const next = async () => {
    if (busy) return;
    busy = true;
    while (queue.length > 0) {
      const line = queue.shift();
      let out;
      try {
        out = await handle(JSON.parse(line));
      } catch (err) {
        out = { err: String(err && err.stack || err) };
      }
      write(out);
    }
    busy = false;
  };
  rl.on('line', line => { queue.push(line); next(); });
  rl.on('close', () => process.exit(0));
})().catch(err => {
  toStderr(err);
  process.exit(1);
});
