#!/usr/bin/env node
// zygote.js -- an exec kind in plain JavaScript (Debian's node, no npm packages): the
// exec-kind protocol, version 1 (docs/exec-kinds.md), written out by hand, to show that
// a zygote needs nothing of warmpool's but a socket and JSON.
//
//   warmpool --exec-kind 'squares=node examples/node/zygote.js' --kind-config squares=n=100000
//   wp-exec-drive --config n=100000 -- node examples/node/zygote.js
//
// Node cannot fork(), so this zygote cannot hand its children a copy-on-write context:
// for each spawn it starts `node zygote.js` again as the child (child_process.spawn,
// with the channel warmpool passed as the child's descriptor 3), and each child builds
// its own copy of the context. Memory is one context per child, and each new child pays
// the load; the queue, retries, timeouts and the rest of warmpool's semantics are the
// same as for any kind. To receive that descriptor (SCM_RIGHTS), the zygote opens its
// control channel as a libuv IPC pipe through process.binding('pipe_wrap'), an internal
// of Node (deprecated, DEP0111; checked with Node 20, a later Node may drop it); see
// docs/exec-kinds.md.
//
// Config: n=N (default 100000): the context is a Float64Array of the squares 0..N-1.
// Input: {"index": K} -> {"index": K, "square": K*K}; {"op": "sum"} -> {"sum": ...};
//        {"fail": "why"} fails (code bad_input); {"retry": "why"} fails, retryable.
// Validate: the input must be an object.
'use strict';

const net = require('net');
const childProcess = require('child_process');

const PROTOCOL = 1;
let maxFrame = 16 << 20;

function options(config) {
  const opts = { n: 100000 };
  for (const part of (config || '').split(',').filter(Boolean)) {
    const [key, value] = part.split('=');
    if (!(key in opts)) throw new Error(`unknown option ${key} (n=N)`);
    opts[key] = parseInt(value, 10);
  }
  if (!(opts.n >= 1)) throw new Error('n must be at least 1');
  return opts;
}

function load(config) {
  const { n } = options(config);
  const table = new Float64Array(n);
  for (let i = 0; i < n; i++) table[i] = i * i;
  return table;
}

function run(input, table) {
  if (input === null || typeof input !== 'object') throw taskError('bad_input', 'the input must be an object');
  if ('fail' in input) throw taskError('bad_input', String(input.fail));
  if ('retry' in input) throw taskError('retry', String(input.retry), true);
  if ('index' in input) {
    const k = input.index;
    if (!Number.isInteger(k) || k < 0 || k >= table.length) throw taskError('bad_input', `index must be in 0..${table.length - 1}`);
    return { index: k, square: table[k] };
  }
  if (input.op === 'sum') {
    let s = 0;
    for (let i = 0; i < table.length; i++) s += table[i];
    return { sum: s };
  }
  throw taskError('bad_input', 'give index, or op: sum');
}

function validate(input) {
  return input !== null && typeof input === 'object' && !Array.isArray(input) ? null : 'the input must be an object';
}

function taskError(code, message, retryable = false) {
  const e = new Error(message);
  e.code = code;
  e.retryable = retryable;
  return e;
}

// ------------------------------------------------------------------ framing

function frame(msg) {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  if (body.length > maxFrame) throw new Error(`a frame of ${body.length} bytes is over the limit`);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

// Calls onMessage(msg) for each whole frame that arrives on sock; onEnd() at EOF.
function readFrames(sock, onMessage, onEnd) {
  let buf = Buffer.alloc(0);
  sock.on('data', (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= 4) {
      const n = buf.readUInt32BE(0);
      if (n === 0 || n > maxFrame) fatal(`a frame of ${n} bytes (limit ${maxFrame})`);
      if (buf.length < 4 + n) break;
      let msg;
      try {
        msg = JSON.parse(buf.subarray(4, 4 + n).toString('utf8'));
      } catch (e) {
        fatal(`a frame that is not JSON: ${e.message}`);
      }
      buf = buf.subarray(4 + n);
      onMessage(msg);
    }
  });
  sock.on('end', onEnd);
  sock.on('error', onEnd);
}

const FIELDS = {
  hello: ['protocol', 'kind', 'config', 'max_frame_bytes'],
  spawn: [],
  task: ['id', 'attempt', 'timeout_ms', 'deadline_ms', 'input'],
  validate: ['input'],
};

function check(msg, types) {
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) fatal('a frame that is not an object');
  if (!types.includes(msg.type)) fatal(`'${msg.type}' while waiting for ${types.join(' or ')}`);
  const want = FIELDS[msg.type];
  for (const k of Object.keys(msg)) if (k !== 'type' && !want.includes(k)) fatal(`'${msg.type}': unknown field '${k}'`);
  for (const k of want) if (!(k in msg)) fatal(`'${msg.type}' lacks field '${k}'`);
}

function fatal(why) {
  process.stderr.write(`zygote.js[${process.pid}]: protocol error: ${why}\n`);
  process.exit(3);
}

function message(text) {
  // at most 1023 bytes of UTF-8, cut at a character
  let b = Buffer.from(String(text).replace(/\0/g, '\\0'), 'utf8');
  if (b.length <= 1023) return b.toString('utf8');
  let n = 1023;
  while (n > 0 && (b[n] & 0xc0) === 0x80) n--;
  return b.subarray(0, n).toString('utf8');
}

// ------------------------------------------------------------------ the child

function child() {
  const fd = parseInt(process.env.WARMPOOL_EXEC_FD, 10);
  maxFrame = parseInt(process.env.WARMPOOL_EXEC_MAX_FRAME, 10) || maxFrame;
  const table = load(process.env.WARMPOOL_EXEC_CONFIG || null);  // its own copy: no fork in Node
  const sock = new net.Socket({ fd, readable: true, writable: true });
  let stopping = false;
  const stop = () => {
    // tasks run synchronously, so a signal is handled between tasks: the task in hand
    // has answered; flush that answer, then leave
    if (stopping) return;
    stopping = true;
    sock.end(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // no PR_SET_PDEATHSIG in Node: leave if the zygote goes (warmpool also kills by pid)
  const parent = process.ppid;
  setInterval(() => { if (process.ppid !== parent) process.exit(0); }, 1000).unref();
  readFrames(sock, (msg) => {
    check(msg, ['task', 'validate']);
    let reply;
    if (msg.type === 'validate') {
      const why = validate(msg.input, table);
      reply = why === null ? { type: 'valid' } : { type: 'invalid', message: message(why) };
    } else {
      try {
        reply = { type: 'result', id: msg.id, result: run(msg.input, table) };
      } catch (e) {
        const code = /^[a-z0-9_]{1,63}$/.test(e.code || '') ? e.code : 'exception';
        reply = { type: 'error', id: msg.id, code, message: message(`${e.name}: ${e.message}`), retryable: !!e.retryable };
      }
    }
    let out;
    try {
      out = frame(reply);
    } catch (e) {
      out = frame({ type: 'error', id: msg.id, code: 'result_too_large', message: message(e.message), retryable: false });
    }
    sock.write(out);
  }, () => process.exit(0));
}

// ------------------------------------------------------------------ the zygote

function zygote() {
  const { Pipe, constants } = process.binding('pipe_wrap');
  const pipe = new Pipe(constants.IPC);      // an IPC pipe reads SCM_RIGHTS descriptors
  const rc = pipe.open(parseInt(process.env.WARMPOOL_EXEC_FD, 10));
  if (rc !== 0) fatal(`cannot open the control channel (${rc})`);
  const sock = new net.Socket({ handle: pipe, readable: true, writable: true });
  process.on('SIGTERM', () => {});            // warmpool ends a zygote by EOF
  process.on('SIGINT', () => {});
  const handles = [];                         // descriptors received, oldest first
  const children = new Set();
  sock.on('data', () => {
    if (pipe.pendingHandle) {
      handles.push(pipe.pendingHandle);
      pipe.pendingHandle = null;
    }
  });
  let config = null;
  let state = 'hello';
  readFrames(sock, (msg) => {
    if (state === 'hello') {
      check(msg, ['hello']);
      if (msg.protocol !== PROTOCOL) {
        sock.write(frame({ type: 'load_failed', message: `warmpool speaks protocol ${msg.protocol}; this zygote speaks ${PROTOCOL}` }));
        sock.end(() => process.exit(2));
        return;
      }
      maxFrame = msg.max_frame_bytes;
      config = msg.config;
      const t0 = Date.now();
      let size;
      try {
        size = load(config).byteLength;     // check the config now: each child loads its own
      } catch (e) {
        sock.write(frame({ type: 'load_failed', message: message(`${e.name}: ${e.message}`) }));
        sock.end(() => process.exit(1));
        return;
      }
      state = 'serving';
      sock.write(frame({ type: 'ready', protocol: PROTOCOL, context_bytes: size, load_ms: Date.now() - t0, validate: true }));
      return;
    }
    check(msg, ['spawn']);
    const handle = handles.shift();
    if (!handle) {
      sock.write(frame({ type: 'spawn_failed', message: 'a spawn needs one descriptor; none came' }));
      return;
    }
    const env = { ...process.env, WARMPOOL_EXEC_ROLE: 'child', WARMPOOL_EXEC_FD: '3', WARMPOOL_EXEC_MAX_FRAME: String(maxFrame) };
    if (config !== null) env.WARMPOOL_EXEC_CONFIG = config;
    else delete env.WARMPOOL_EXEC_CONFIG;
    const c = childProcess.spawn(process.execPath, [__filename], { stdio: ['ignore', 'inherit', 'inherit', handle.fd], env });
    c.on('spawn', () => {
      handle.close();
      children.add(c);
      sock.write(frame({ type: 'spawned', pid: c.pid }));
    });
    c.on('error', (e) => {
      handle.close();
      sock.write(frame({ type: 'spawn_failed', message: message(`spawn: ${e.message}`) }));
    });
    c.on('exit', () => children.delete(c));
  }, () => {
    // EOF: warmpool is done with this zygote; its children go with it
    for (const c of children) c.kill('SIGKILL');
    process.exit(0);
  });
}

if (process.env.WARMPOOL_EXEC_FD === undefined) {
  process.stderr.write('zygote.js: WARMPOOL_EXEC_FD is not set: this is an exec kind, started by warmpool (or wp-exec-drive)\n');
  process.exit(2);
}
if (process.env.WARMPOOL_EXEC_ROLE === 'child') child();
else zygote();
