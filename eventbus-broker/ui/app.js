// eventbus broker management UI.
//
// One ES module, no dependencies. It speaks RabbitMQ's management HTTP API
// (relative `/api/...` paths, basic auth from the log-in form kept in
// sessionStorage) plus our one extension, `POST /api/queues/{vhost}/{name}/move`.
// Pages are hash routes; each page mounts its static parts (forms) once and
// refreshes only its data parts on the selected interval, so typing into a
// form is never disturbed by the auto-refresh.

const AUTH_KEY = 'eventbus.auth';
const USER_KEY = 'eventbus.user';
const REFRESH_KEY = 'eventbus.refresh';
const VHOST_KEY = 'eventbus.vhost';

const state = {
  auth: sessionStorage.getItem(AUTH_KEY),
  user: sessionStorage.getItem(USER_KEY),
  refreshMs: Number(localStorage.getItem(REFRESH_KEY) ?? 5000),
  vhost: sessionStorage.getItem(VHOST_KEY) ?? '',
  vhosts: [],
  page: null,
  timer: null,
  generation: 0,
};

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, error, reason) {
    super(reason || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
    this.reason = reason;
  }
}

function basicToken(user, pass) {
  const bytes = new TextEncoder().encode(`${user}:${pass}`);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** Calls the management API; throws ApiError with RabbitMQ's `reason` on failure. */
async function api(method, path, body, auth = state.auth) {
  // No Accept header: RabbitMQ answers 406 to `Accept: application/json` on
  // endpoints that return no body (DELETE .../contents).
  const headers = {};
  if (auth) headers.Authorization = `Basic ${auth}`;
  // credentials: 'omit' keeps the browser from answering the API's
  // `WWW-Authenticate: Basic` 401 with its own password prompt (which would
  // also stall the request): our log-in form owns authentication.
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(`/api${path}`, init);
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach the broker (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!res.ok) {
    const err = data && typeof data === 'object' ? data : {};
    const reason = err.reason ?? (typeof data === 'string' ? data.slice(0, 300) : res.statusText);
    throw new ApiError(res.status, err.error, reason);
  }
  return data;
}

const enc = encodeURIComponent;
const vq = (vhost, name) => `${enc(vhost)}/${enc(name)}`;

// ---------------------------------------------------------------- DOM helpers

/** h('div', {class: 'x', onclick: fn}, child, ...) builds an element. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'style') el.style.cssText = v; // CSSOM, allowed under a strict style-src CSP
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' || k === 'checked' || k === 'selected') {
      el[k] = v;
      // Also as the default, so form.reset() returns to it.
      if (k === 'value' && tag === 'input') el.setAttribute('value', v);
      if (k === 'checked') el.defaultChecked = v;
      if (k === 'selected') el.defaultSelected = v;
    }
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let idCounter = 0;
const uid = (p) => `${p}-${++idCounter}`;

/** A labelled form field: returns [label, control] for a two-column form grid. */
function field(label, control, hint) {
  if (!control.id) control.id = uid('f');
  const wrap = hint ? h('div', {}, control, h('div', { class: 'hint' }, hint)) : control;
  return [h('label', { for: control.id }, label), wrap];
}

function input(name, attrs = {}) {
  return h('input', { type: 'text', name, autocomplete: 'off', ...attrs });
}

function select(name, options, value) {
  return h(
    'select',
    { name },
    options.map((o) => {
      const [v, l] = Array.isArray(o) ? o : [o, o];
      return h('option', { value: v, selected: v === value }, l);
    }),
  );
}

function checkbox(name, label, checked = false) {
  const box = h('input', { type: 'checkbox', name, checked });
  box.id = uid('c');
  return h('label', { class: 'check', for: box.id }, box, label);
}

// ---------------------------------------------------------------- formatting

const nf = new Intl.NumberFormat('en-US');
const nf1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1, minimumFractionDigits: 1 });

function fmtNum(n) {
  return n === undefined || n === null || Number.isNaN(n) ? '–' : nf.format(n);
}

function fmtRate(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  return `${n >= 100 ? nf.format(Math.round(n)) : nf1.format(n)}/s`;
}

function fmtBytes(n) {
  if (n === undefined || n === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${nf.format(v)} B` : `${nf1.format(v)} ${units[i]}`;
}

function fmtTime(ms) {
  return new Date(ms).toLocaleTimeString('en-GB', { hour12: false });
}

/** Reads `obj.a.b.c` for the path "a.b.c". */
function dig(obj, path) {
  return path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

const rate = (obj, stat) => dig(obj, `message_stats.${stat}_details.rate`);

function argsText(args) {
  const entries = Object.entries(args || {});
  return entries.length ? entries.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ') : '';
}

/** Parses "key=value" lines; numbers and booleans become JSON numbers/booleans. */
function parseKeyValues(text) {
  const out = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`expected key=value, got "${line}"`);
    const key = line.slice(0, eq).trim();
    const val = line.slice(eq + 1).trim();
    if (/^-?\d+(\.\d+)?$/.test(val)) out[key] = Number(val);
    else if (val === 'true' || val === 'false') out[key] = val === 'true';
    else out[key] = val.replace(/^"(.*)"$/, '$1');
  }
  return out;
}

function featureTags(o) {
  const tags = [];
  if (o.durable) tags.push(['D', 'durable']);
  if (o.auto_delete) tags.push(['AD', 'auto-delete']);
  if (o.exclusive) tags.push(['Excl', 'exclusive']);
  if (o.internal) tags.push(['I', 'internal']);
  const a = o.arguments || {};
  const abbrev = {
    'x-message-ttl': 'TTL',
    'x-expires': 'Exp',
    'x-max-length': 'Lim',
    'x-max-length-bytes': 'Lim B',
    'x-dead-letter-exchange': 'DLX',
    'x-dead-letter-routing-key': 'DLK',
    'x-max-priority': 'Pri',
    'x-single-active-consumer': 'SAC',
    'x-overflow': 'Ovfl',
    'alternate-exchange': 'AE',
  };
  for (const k of Object.keys(a)) tags.push([abbrev[k] ?? k, `${k}: ${JSON.stringify(a[k])}`]);
  return tags.map(([t, title]) => h('span', { class: 'tag', title }, t));
}

function stateCell(s) {
  return h('span', { class: `state-${s ?? 'ok'}` }, s ?? '–');
}

const exchangeLabel = (name) => (name === '' ? '(AMQP default)' : name);
const exchangeRoute = (vhost, name) => `#/exchanges/${vq(vhost, name === '' ? 'amq.default' : name)}`;
const queueRoute = (vhost, name) => `#/queues/${vq(vhost, name)}`;

// ---------------------------------------------------------------- banners

function banner(kind, text, ttlMs) {
  const box = document.getElementById('banners');
  const el = h(
    'div',
    { class: `banner ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('div', { class: 'text' }, text),
    h('button', { type: 'button', 'aria-label': 'Dismiss', onclick: () => el.remove() }, '×'),
  );
  // A notice replaces the previous notice; an error replaces the same error.
  for (const old of box.querySelectorAll('.banner')) {
    if ((kind === 'notice' && old.classList.contains('notice')) || old.querySelector('.text').textContent === text) old.remove();
  }
  box.append(el);
  if (ttlMs) setTimeout(() => el.remove(), ttlMs);
  return el;
}

function showError(e, context) {
  if (e instanceof ApiError && e.status === 401) {
    logout('Your session is no longer authorised; please log in again.');
    return;
  }
  const prefix = context ? `${context}: ` : '';
  const status = e instanceof ApiError && e.status ? ` (HTTP ${e.status})` : '';
  banner('error', `${prefix}${e.message}${status}`);
}

const notice = (text) => banner('notice', text, 8000);

function clearBanners(onlyErrors = false) {
  const box = document.getElementById('banners');
  if (onlyErrors) box.querySelectorAll('.banner.error').forEach((b) => b.remove());
  else box.replaceChildren();
}

/** Wraps a form submit: prevents the navigation, disables the button, reports errors. */
function onSubmit(form, context, handler) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const buttons = form.querySelectorAll('button[type=submit]');
    buttons.forEach((b) => (b.disabled = true));
    try {
      await handler(new FormData(form), ev.submitter);
    } catch (e) {
      showError(e, context);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
  return form;
}

// ---------------------------------------------------------------- tables

/**
 * A sortable data table. Columns: {key, label, num, render(row), value(row), sort(server key), nosort}.
 * With `server: true` sorting is delegated to `onSort` (the API's sort/sort_reverse).
 */
class DataTable {
  constructor({ columns, rowKey, empty = 'Nothing here.', server = false, onSort, sortKey, sortReverse = false, name }) {
    this.columns = columns.filter(Boolean);
    this.rowKey = rowKey;
    this.empty = empty;
    this.server = server;
    this.onSort = onSort;
    this.sortKey = sortKey ?? null;
    this.sortReverse = sortReverse;
    this.filter = null;
    this.rows = [];
    this.tbody = h('tbody');
    this.headRow = h('tr');
    this.el = h(
      'div',
      { class: 'table-wrap' },
      h('table', { class: 'data', dataset: { table: name ?? '' } }, h('thead', {}, this.headRow), this.tbody),
    );
    this.renderHead();
  }

  renderHead() {
    clear(
      this.headRow,
      this.columns.map((c) => {
        const key = c.sort ?? c.key;
        const th = h('th', { class: c.num ? 'num' : '', scope: 'col' });
        if (c.nosort) {
          th.append(c.label);
        } else {
          if (this.sortKey === key) th.setAttribute('aria-sort', this.sortReverse ? 'descending' : 'ascending');
          th.append(h('button', { type: 'button', class: 'sort', onclick: () => this.toggleSort(key) }, c.label));
        }
        return th;
      }),
    );
  }

  toggleSort(key) {
    if (this.sortKey === key) this.sortReverse = !this.sortReverse;
    else {
      this.sortKey = key;
      this.sortReverse = false;
    }
    this.renderHead();
    // Keep keyboard focus on the header that was activated.
    const idx = this.columns.findIndex((c) => (c.sort ?? c.key) === key);
    this.headRow.children[idx]?.querySelector('button')?.focus();
    if (this.server) this.onSort?.(this.sortKey, this.sortReverse);
    else this.renderBody();
  }

  setFilter(fn) {
    this.filter = fn;
    this.renderBody();
  }

  setRows(rows) {
    this.rows = rows;
    this.renderBody();
  }

  sortedRows() {
    let rows = this.filter ? this.rows.filter(this.filter) : this.rows.slice();
    if (this.server || !this.sortKey) return rows;
    const col = this.columns.find((c) => (c.sort ?? c.key) === this.sortKey);
    const value = col?.value ?? ((r) => dig(r, this.sortKey));
    rows.sort((a, b) => {
      const x = value(a);
      const y = value(b);
      if (x === y) return 0;
      if (x === undefined || x === null) return 1;
      if (y === undefined || y === null) return -1;
      const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
      return this.sortReverse ? -c : c;
    });
    return rows;
  }

  renderBody() {
    const rows = this.sortedRows();
    if (!rows.length) {
      clear(this.tbody, h('tr', {}, h('td', { class: 'empty', colspan: this.columns.length }, this.empty)));
      return;
    }
    clear(
      this.tbody,
      rows.map((r) =>
        h(
          'tr',
          { dataset: { key: this.rowKey(r) } },
          this.columns.map((c) => {
            const v = c.render ? c.render(r) : dig(r, c.key);
            const cell = h('td', { class: [c.num ? 'num' : '', c.wrap ? 'wrap' : ''].join(' ').trim(), dataset: { col: c.key } });
            append(cell, [v === undefined || v === null || v === '' ? (c.num ? '–' : '') : v]);
            return cell;
          }),
        ),
      ),
    );
  }
}

/** A filter box with a regex toggle; calls onChange(text, isRegex) debounced. */
function filterBox(onChange, placeholder = 'Filter by name') {
  const text = h('input', { type: 'search', name: 'filter', placeholder, 'aria-label': placeholder });
  const regex = h('input', { type: 'checkbox', name: 'regex' });
  regex.id = uid('rx');
  let t = null;
  const fire = () => {
    clearTimeout(t);
    t = setTimeout(() => onChange(text.value, regex.checked), 200);
  };
  text.addEventListener('input', fire);
  regex.addEventListener('change', fire);
  return h('span', { class: 'filter' }, text, ' ', h('label', { for: regex.id, class: 'check' }, regex, ' regex'));
}

/** Client-side matcher for a filter box value. */
function nameMatcher(text, isRegex, pick = (r) => r.name) {
  if (!text) return null;
  if (isRegex) {
    let rx;
    try {
      rx = new RegExp(text);
    } catch {
      return () => false;
    }
    return (r) => rx.test(pick(r));
  }
  const needle = text.toLowerCase();
  return (r) => pick(r).toLowerCase().includes(needle);
}

/** Client-side list page body: toolbar with filter + count, sortable table. */
function clientList(table, pick) {
  const count = h('span', { class: 'muted', dataset: { count: '' } });
  const update = () => {
    const shown = table.sortedRows().length;
    const items = (n) => `${fmtNum(n)} ${n === 1 ? 'item' : 'items'}`;
    count.textContent = shown === table.rows.length ? items(shown) : `${fmtNum(shown)} of ${items(table.rows.length)}`;
  };
  const box = filterBox((text, rx) => {
    table.setFilter(nameMatcher(text, rx, pick));
    update();
  });
  return {
    el: h('div', {}, h('div', { class: 'toolbar' }, box, h('span', { class: 'spacer' }), count), table.el),
    setRows(rows) {
      table.setRows(rows);
      update();
    },
  };
}

function vhostPath(base) {
  return state.vhost ? `${base}/${enc(state.vhost)}` : base;
}

function vhostOptions(selected) {
  const names = state.vhosts.length ? state.vhosts : ['/'];
  return select('vhost', names, selected ?? (state.vhost || names[0]));
}

// ---------------------------------------------------------------- charts

const COLORS = ['#2f6fde', '#e0742b', '#1f8a4c', '#9b4dca', '#c53030', '#0f9fb5'];

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * A small SVG line chart. `series`: [{name, points: [[tMs, value]], format}].
 * Draws grid, y ticks, time ticks, one path per series and a legend with the latest values.
 */
function lineChart(container, series, { windowMs = 600000, format = fmtNum } = {}) {
  const W = 600;
  const H = 190;
  const pad = { l: 48, r: 10, t: 10, b: 22 };
  const now = Date.now();
  const t0 = now - windowMs;
  const NS = 'http://www.w3.org/2000/svg';
  const s = (tag, attrs = {}, ...kids) => {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    for (const k of kids) el.append(k);
    return el;
  };
  const all = series.flatMap((x) => x.points.filter(([t]) => t >= t0).map(([, v]) => v));
  const max = niceMax(Math.max(0, ...all));
  const x = (t) => pad.l + ((t - t0) / windowMs) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - (v / max) * (H - pad.t - pad.b);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
  const grid = s('g', { class: 'grid' });
  const axis = s('g', { class: 'axis' });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    grid.append(s('line', { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v) }));
    axis.append(s('text', { x: pad.l - 6, y: y(v) + 3, 'text-anchor': 'end' }, format(v)));
  }
  const stepMs = windowMs / 5;
  for (let i = 0; i <= 5; i++) {
    const t = t0 + i * stepMs;
    const secs = Math.round((now - t) / 1000);
    const label = secs < 120 ? `-${secs}s` : `-${Math.round(secs / 60)}m`;
    axis.append(s('text', { x: x(t), y: H - 6, 'text-anchor': i === 0 ? 'start' : i === 5 ? 'end' : 'middle' }, i === 5 ? 'now' : label));
  }
  svg.append(grid, axis);
  let drawn = 0;
  series.forEach((ser, i) => {
    const pts = ser.points.filter(([t]) => t >= t0);
    if (!pts.length) return;
    drawn++;
    const color = COLORS[i % COLORS.length];
    if (pts.length === 1) {
      svg.append(s('circle', { class: 'series', cx: x(pts[0][0]), cy: y(pts[0][1]), r: 2.5, fill: color, stroke: color, 'data-series': ser.name }));
    } else {
      const d = pts.map(([t, v], j) => `${j ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join('');
      svg.append(s('path', { class: 'series', d, stroke: color, 'vector-effect': 'non-scaling-stroke', 'data-series': ser.name }));
    }
  });
  if (!drawn) svg.append(s('text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'waiting for samples…'));
  const legend = h(
    'div',
    { class: 'legend' },
    series.map((ser, i) => {
      const last = ser.points.at(-1);
      return h(
        'span',
        { dataset: { series: ser.name } },
        h('span', { class: 'swatch', style: `background:${COLORS[i % COLORS.length]}` }),
        ser.name,
        h('b', {}, last ? format(last[1]) : '–'),
      );
    }),
  );
  clear(container, svg, legend);
}

/** Series from RabbitMQ `*_details.samples` (newest first) if the server returned them. */
function samplesSeries(details, asRate) {
  const samples = details?.samples;
  if (!Array.isArray(samples) || samples.length < 2) return null;
  const asc = samples.slice().sort((a, b) => a.timestamp - b.timestamp);
  if (!asRate) return asc.map((p) => [p.timestamp, p.sample]);
  const out = [];
  for (let i = 1; i < asc.length; i++) {
    const dt = (asc[i].timestamp - asc[i - 1].timestamp) / 1000;
    if (dt > 0) out.push([asc[i].timestamp, Math.max(0, (asc[i].sample - asc[i - 1].sample) / dt)]);
  }
  return out;
}

// ---------------------------------------------------------------- pages

/** Overview history survives page switches so charts keep their samples. */
const history = { points: [], last: null };

function recordOverview(ov) {
  const now = Date.now();
  const ms = ov.message_stats || {};
  const qt = ov.queue_totals || {};
  const counters = { publish: ms.publish ?? 0, deliver_get: ms.deliver_get ?? 0, ack: ms.ack ?? 0 };
  // Without the server's `*_details.rate`, rates come from counter deltas
  // over at least a second (polls closer together would give noise).
  const dt = history.last ? (now - history.last.t) / 1000 : 0;
  const rates = {};
  for (const k of Object.keys(counters)) {
    const given = ms[`${k}_details`]?.rate;
    if (typeof given === 'number') rates[k] = given;
    else if (dt >= 1) rates[k] = Math.max(0, (counters[k] - history.last.counters[k]) / dt);
    else rates[k] = history.points.at(-1)?.rates[k] ?? 0;
  }
  if (!history.last || dt >= 1) history.last = { t: now, counters };
  history.points.push({ t: now, ready: qt.messages_ready ?? 0, unacked: qt.messages_unacknowledged ?? 0, rates });
  const cutoff = now - 600000;
  while (history.points.length && history.points[0].t < cutoff) history.points.shift();
  return rates;
}

function overviewPage(root) {
  const tiles = h('div', { class: 'tiles', dataset: { tiles: '' } });
  const queuedChart = h('div', { class: 'chart', dataset: { chart: 'queued' } });
  const ratesChart = h('div', { class: 'chart', dataset: { chart: 'rates' } });
  const info = h('dl', { class: 'props' });
  const listeners = new DataTable({
    name: 'listeners',
    rowKey: (r) => `${r.protocol}:${r.port}`,
    columns: [
      { key: 'protocol', label: 'Protocol' },
      { key: 'ip_address', label: 'Bound to' },
      { key: 'port', label: 'Port', num: true },
    ],
    empty: 'No listeners reported.',
  });
  clear(
    root,
    h('h1', {}, 'Overview'),
    tiles,
    h(
      'div',
      { class: 'grid2' },
      h('section', { class: 'panel' }, h('h2', {}, 'Queued messages'), queuedChart),
      h('section', { class: 'panel' }, h('h2', {}, 'Message rates'), ratesChart),
    ),
    h('div', { class: 'grid2 spaced' }, h('section', { class: 'panel' }, h('h2', {}, 'Node'), info), h('section', { class: 'panel' }, h('h2', {}, 'Listeners'), listeners.el)),
  );
  return {
    async refresh() {
      const ov = await api('GET', '/overview?lengths_age=600&lengths_incr=5&msg_rates_age=600&msg_rates_incr=5');
      const rates = recordOverview(ov);
      const ot = ov.object_totals || {};
      const qt = ov.queue_totals || {};
      const ms = ov.message_stats || {};
      const tile = (label, value, key) => h('div', { class: 'tile', dataset: { tile: key } }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value));
      clear(
        tiles,
        tile('Connections', fmtNum(ot.connections), 'connections'),
        tile('Channels', fmtNum(ot.channels), 'channels'),
        tile('Exchanges', fmtNum(ot.exchanges), 'exchanges'),
        tile('Queues', fmtNum(ot.queues), 'queues'),
        tile('Consumers', fmtNum(ot.consumers), 'consumers'),
        tile('Ready', fmtNum(qt.messages_ready ?? 0), 'ready'),
        tile('Unacked', fmtNum(qt.messages_unacknowledged ?? 0), 'unacked'),
        tile('Publish', fmtRate(rates.publish), 'publish'),
        tile('Deliver / get', fmtRate(rates.deliver_get), 'deliver'),
        tile('Ack', fmtRate(rates.ack), 'ack'),
      );
      const pts = history.points;
      // Server samples cover 10 minutes; our own polls cover the time since
      // the page opened, so their window grows from 1 up to 10 minutes.
      const span = pts.length ? Date.now() - pts[0].t : 0;
      const ownWindow = Math.min(600000, Math.max(60000, Math.ceil((span * 1.15) / 60000) * 60000));
      const queuedSamples = samplesSeries(qt.messages_ready_details, false);
      const rateSamples = samplesSeries(ms.publish_details, true);
      lineChart(queuedChart, [
        { name: 'Ready', points: samplesSeries(qt.messages_ready_details, false) ?? pts.map((p) => [p.t, p.ready]) },
        { name: 'Unacked', points: samplesSeries(qt.messages_unacknowledged_details, false) ?? pts.map((p) => [p.t, p.unacked]) },
      ], { windowMs: queuedSamples ? 600000 : ownWindow });
      lineChart(
        ratesChart,
        [
          { name: 'Publish', points: samplesSeries(ms.publish_details, true) ?? pts.map((p) => [p.t, p.rates.publish]) },
          { name: 'Deliver / get', points: samplesSeries(ms.deliver_get_details, true) ?? pts.map((p) => [p.t, p.rates.deliver_get]) },
          { name: 'Ack', points: samplesSeries(ms.ack_details, true) ?? pts.map((p) => [p.t, p.rates.ack]) },
        ],
        { format: (v) => `${v >= 100 ? nf.format(Math.round(v)) : nf1.format(v)}/s`, windowMs: rateSamples ? 600000 : ownWindow },
      );
      const prop = (k, v) => [h('dt', {}, k), h('dd', {}, v ?? '–')];
      clear(
        info,
        prop('Product', [ov.product_name, ov.product_version].filter(Boolean).join(' ') || undefined),
        prop('Node', ov.node),
        prop('Cluster', ov.cluster_name),
        prop('Management API', ov.management_version),
        prop('Logged in as', state.user),
      );
      listeners.setRows(ov.listeners || []);
    },
  };
}

function connectionsPage(root) {
  const table = new DataTable({
    name: 'connections',
    rowKey: (r) => r.name,
    sortKey: 'name',
    columns: [
      {
        key: 'name',
        label: 'Name',
        wrap: true,
        render: (r) => [r.name, r.client_properties?.connection_name ? h('div', { class: 'muted', dataset: { connectionName: '' } }, r.client_properties.connection_name) : null],
      },
      !state.vhost && { key: 'vhost', label: 'Virtual host' },
      { key: 'user', label: 'User' },
      { key: 'client', label: 'Client', value: (r) => clientName(r), render: (r) => clientName(r) },
      { key: 'protocol', label: 'Protocol' },
      { key: 'channels', label: 'Channels', num: true, render: (r) => fmtNum(r.channels) },
      { key: 'state', label: 'State', render: (r) => stateCell(r.state) },
      { key: 'recv_oct_details.rate', label: 'From client', num: true, value: (r) => r.recv_oct_details?.rate, render: (r) => bytesRate(r.recv_oct_details?.rate) },
      { key: 'send_oct_details.rate', label: 'To client', num: true, value: (r) => r.send_oct_details?.rate, render: (r) => bytesRate(r.send_oct_details?.rate) },
      {
        key: 'actions',
        label: '',
        nosort: true,
        render: (r) =>
          h(
            'button',
            {
              type: 'button',
              class: 'small danger',
              onclick: async () => {
                if (!confirm(`Force-close connection ${r.name}?`)) return;
                try {
                  await api('DELETE', `/connections/${enc(r.name)}`);
                  notice(`Connection ${r.name} closed`);
                  refreshNow();
                } catch (e) {
                  showError(e, 'Close connection');
                }
              },
            },
            'Close',
          ),
      },
    ],
    empty: 'No connections.',
  });
  const list = clientList(table, (r) => `${r.name} ${r.client_properties?.connection_name ?? ''}`);
  clear(root, h('h1', {}, 'Connections'), h('section', { class: 'panel' }, list.el));
  return {
    async refresh() {
      list.setRows(await api('GET', state.vhost ? `/vhosts/${enc(state.vhost)}/connections` : '/connections'));
    },
  };
}

function clientName(r) {
  const cp = r.client_properties || {};
  return [cp.product, cp.version].filter(Boolean).join(' ') || (r.peer_host ? `${r.peer_host}:${r.peer_port}` : '');
}

const bytesRate = (v) => (v === undefined || v === null ? '–' : `${fmtBytes(Math.round(v))}/s`);

function channelsPage(root) {
  const table = new DataTable({
    name: 'channels',
    rowKey: (r) => r.name,
    sortKey: 'name',
    columns: [
      { key: 'name', label: 'Channel', wrap: true },
      !state.vhost && { key: 'vhost', label: 'Virtual host' },
      { key: 'user', label: 'User' },
      { key: 'mode', label: 'Mode', value: (r) => channelMode(r), render: (r) => channelMode(r) },
      { key: 'prefetch_count', label: 'Prefetch', num: true, render: (r) => fmtNum(r.prefetch_count) },
      { key: 'messages_unacknowledged', label: 'Unacked', num: true, render: (r) => fmtNum(r.messages_unacknowledged) },
      { key: 'consumer_count', label: 'Consumers', num: true, render: (r) => fmtNum(r.consumer_count) },
      { key: 'state', label: 'State', render: (r) => stateCell(r.state) },
      { key: 'publish', label: 'Publish', num: true, value: (r) => rate(r, 'publish'), render: (r) => fmtRate(rate(r, 'publish')) },
      { key: 'deliver_get', label: 'Deliver / get', num: true, value: (r) => rate(r, 'deliver_get'), render: (r) => fmtRate(rate(r, 'deliver_get')) },
      { key: 'ack', label: 'Ack', num: true, value: (r) => rate(r, 'ack'), render: (r) => fmtRate(rate(r, 'ack')) },
    ],
    empty: 'No channels.',
  });
  const list = clientList(table);
  clear(root, h('h1', {}, 'Channels'), h('section', { class: 'panel' }, list.el));
  return {
    async refresh() {
      list.setRows(await api('GET', state.vhost ? `/vhosts/${enc(state.vhost)}/channels` : '/channels'));
    },
  };
}

function channelMode(r) {
  return [r.confirm ? 'confirm' : '', r.transactional ? 'tx' : ''].filter(Boolean).join(', ');
}

const EXCHANGE_TYPES = ['direct', 'fanout', 'topic', 'headers', 'x-consistent-hash'];

function exchangesPage(root) {
  const table = new DataTable({
    name: 'exchanges',
    rowKey: (r) => `${r.vhost}\u0000${r.name}`,
    sortKey: 'name',
    columns: [
      !state.vhost && { key: 'vhost', label: 'Virtual host' },
      { key: 'name', label: 'Name', render: (r) => h('a', { href: exchangeRoute(r.vhost, r.name) }, exchangeLabel(r.name)) },
      { key: 'type', label: 'Type' },
      { key: 'features', label: 'Features', nosort: true, render: (r) => featureTags(r) },
      { key: 'publish_in', label: 'Rate in', num: true, value: (r) => rate(r, 'publish_in'), render: (r) => fmtRate(rate(r, 'publish_in')) },
      { key: 'publish_out', label: 'Rate out', num: true, value: (r) => rate(r, 'publish_out'), render: (r) => fmtRate(rate(r, 'publish_out')) },
    ],
    empty: 'No exchanges.',
  });
  const list = clientList(table, (r) => exchangeLabel(r.name));
  const form = h(
    'form',
    { class: 'form', dataset: { form: 'add-exchange' } },
    field('Virtual host', vhostOptions()),
    field('Name', input('name', { required: true })),
    field('Type', select('type', EXCHANGE_TYPES, 'direct')),
    field('Durability', select('durable', [['true', 'Durable'], ['false', 'Transient']], 'true')),
    h('span'),
    h('div', {}, checkbox('auto_delete', 'Auto-delete'), ' ', checkbox('internal', 'Internal')),
    field('Arguments', h('textarea', { name: 'arguments', rows: 2, placeholder: 'alternate-exchange=my-ae' }), 'one key=value per line'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add exchange')),
  );
  onSubmit(form, 'Add exchange', async (fd) => {
    const name = fd.get('name').trim();
    await api('PUT', `/exchanges/${vq(fd.get('vhost'), name)}`, {
      type: fd.get('type'),
      durable: fd.get('durable') === 'true',
      auto_delete: fd.has('auto_delete'),
      internal: fd.has('internal'),
      arguments: parseKeyValues(fd.get('arguments')),
    });
    notice(`Exchange ${name} declared`);
    form.reset();
    refreshNow();
  });
  clear(root, h('h1', {}, 'Exchanges'), h('section', { class: 'panel' }, list.el), h('details', { class: 'panel' }, h('summary', {}, 'Add a new exchange'), form));
  return {
    async refresh() {
      list.setRows(await api('GET', vhostPath('/exchanges')));
    },
  };
}

function queuesPage(root) {
  const view = { page: 1, pageSize: Number(localStorage.getItem('eventbus.pageSize') ?? 50), name: '', regex: false, sort: 'name', reverse: false };
  const table = new DataTable({
    name: 'queues',
    server: true,
    sortKey: view.sort,
    rowKey: (r) => `${r.vhost}\u0000${r.name}`,
    onSort: (key, reverse) => {
      view.sort = key;
      view.reverse = reverse;
      refreshNow();
    },
    columns: [
      !state.vhost && { key: 'vhost', label: 'Virtual host' },
      { key: 'name', label: 'Name', render: (r) => h('a', { href: queueRoute(r.vhost, r.name) }, r.name) },
      { key: 'type', label: 'Type', render: (r) => r.type ?? 'classic' },
      { key: 'features', label: 'Features', nosort: true, render: (r) => featureTags(r) },
      { key: 'state', label: 'State', render: (r) => stateCell(r.state) },
      { key: 'messages_ready', label: 'Ready', num: true, render: (r) => fmtNum(r.messages_ready) },
      { key: 'messages_unacknowledged', label: 'Unacked', num: true, render: (r) => fmtNum(r.messages_unacknowledged) },
      { key: 'messages', label: 'Total', num: true, render: (r) => fmtNum(r.messages) },
      { key: 'publish', sort: 'message_stats.publish_details.rate', label: 'Incoming', num: true, render: (r) => fmtRate(rate(r, 'publish')) },
      { key: 'deliver_get', sort: 'message_stats.deliver_get_details.rate', label: 'Deliver / get', num: true, render: (r) => fmtRate(rate(r, 'deliver_get')) },
      { key: 'ack', sort: 'message_stats.ack_details.rate', label: 'Ack', num: true, render: (r) => fmtRate(rate(r, 'ack')) },
      { key: 'consumers', label: 'Consumers', num: true, render: (r) => fmtNum(r.consumers) },
    ],
    empty: 'No queues match.',
  });
  const count = h('span', { class: 'muted', dataset: { count: '' } });
  const pageLabel = h('span', { class: 'muted' });
  const prev = h('button', { type: 'button', class: 'small', onclick: () => { view.page = Math.max(1, view.page - 1); refreshNow(); } }, '‹ Prev');
  const next = h('button', { type: 'button', class: 'small', onclick: () => { view.page += 1; refreshNow(); } }, 'Next ›');
  const size = select('page_size', ['20', '50', '100', '500'], String(view.pageSize));
  size.setAttribute('aria-label', 'Page size');
  size.addEventListener('change', () => {
    view.pageSize = Number(size.value);
    view.page = 1;
    localStorage.setItem('eventbus.pageSize', size.value);
    refreshNow();
  });
  const box = filterBox((text, rx) => {
    view.name = text;
    view.regex = rx;
    view.page = 1;
    refreshNow();
  });
  const form = h(
    'form',
    { class: 'form', dataset: { form: 'add-queue' } },
    field('Virtual host', vhostOptions()),
    field('Name', input('name', { required: true })),
    field('Durability', select('durable', [['true', 'Durable'], ['false', 'Transient']], 'true')),
    h('span'),
    h('div', {}, checkbox('auto_delete', 'Auto-delete')),
    field('Arguments', h('textarea', { name: 'arguments', rows: 3, placeholder: 'x-message-ttl=60000\nx-dead-letter-exchange=dlx' }), 'one key=value per line: x-message-ttl, x-expires, x-max-length, x-max-length-bytes, x-overflow, x-dead-letter-exchange, x-dead-letter-routing-key, x-max-priority, x-single-active-consumer'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add queue')),
  );
  onSubmit(form, 'Add queue', async (fd) => {
    const name = fd.get('name').trim();
    await api('PUT', `/queues/${vq(fd.get('vhost'), name)}`, {
      durable: fd.get('durable') === 'true',
      auto_delete: fd.has('auto_delete'),
      arguments: parseKeyValues(fd.get('arguments')),
    });
    notice(`Queue ${name} declared`);
    form.querySelector('[name=name]').value = '';
    refreshNow();
  });
  clear(
    root,
    h('h1', {}, 'Queues'),
    h(
      'section',
      { class: 'panel' },
      h('div', { class: 'toolbar' }, box, h('span', { class: 'spacer' }), count, h('span', { class: 'pager' }, prev, pageLabel, next, h('label', {}, 'Page size ', size))),
      table.el,
    ),
    h('details', { class: 'panel', open: true }, h('summary', {}, 'Add a new queue'), form),
  );
  return {
    async refresh() {
      const q = new URLSearchParams({ page: view.page, page_size: view.pageSize, sort: view.sort ?? 'name', sort_reverse: view.reverse });
      if (view.name) {
        q.set('name', view.name);
        q.set('use_regex', view.regex);
      }
      let res = pageOf(await api('GET', `${vhostPath('/queues')}?${q}`));
      if (res.page_count > 0 && view.page > res.page_count) {
        view.page = res.page_count;
        q.set('page', view.page);
        res = pageOf(await api('GET', `${vhostPath('/queues')}?${q}`));
      }
      table.setRows(res.items || []);
      const from = res.item_count ? (res.page - 1) * res.page_size + 1 : 0;
      const to = from ? from + res.item_count - 1 : 0;
      count.textContent = !view.name ? `${fmtNum(from)}–${fmtNum(to)} of ${fmtNum(res.total_count)} queues` : `${fmtNum(from)}–${fmtNum(to)} of ${fmtNum(res.filtered_count)} matching (${fmtNum(res.total_count)} total)`;
      pageLabel.textContent = `page ${fmtNum(res.page)} of ${fmtNum(Math.max(1, res.page_count))}`;
      prev.disabled = view.page <= 1;
      next.disabled = view.page >= res.page_count;
    },
  };
}

/** A paginated list answer; a server that ignored `page` and sent the whole array counts as one page. */
function pageOf(res) {
  if (!Array.isArray(res)) return res;
  return { items: res, page: 1, page_count: 1, page_size: res.length, item_count: res.length, filtered_count: res.length, total_count: res.length };
}

/** The publish form shared by queue and exchange detail pages. */
function publishForm({ vhost, exchange, fixedKey, repeat }) {
  const form = h(
    'form',
    { class: 'form', dataset: { form: 'publish' } },
    fixedKey === undefined ? field('Routing key', input('routing_key')) : [],
    field('Delivery mode', select('delivery_mode', [['1', '1 — non-persistent'], ['2', '2 — persistent']], '2')),
    field('Headers', h('textarea', { name: 'headers', rows: 2, placeholder: 'x-tenant=acme' }), 'one key=value per line'),
    field('Properties', h('textarea', { name: 'properties', rows: 2, placeholder: 'content_type=application/json\ncorrelation_id=abc' }), 'content_type, content_encoding, priority, correlation_id, reply_to, expiration, message_id, timestamp, type, user_id, app_id'),
    field('Payload', h('textarea', { name: 'payload', rows: 4 })),
    repeat ? field('Repeat', input('repeat', { type: 'number', min: 1, max: 100000, value: '1' }), 'publish this many messages; {{n}} in the payload or routing key becomes 1, 2, 3… (test data)') : [],
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Publish message'), h('span', { class: 'muted', dataset: { result: 'publish' } })),
  );
  const result = form.querySelector('[data-result=publish]');
  onSubmit(form, 'Publish', async (fd) => {
    const properties = parseKeyValues(fd.get('properties'));
    properties.delivery_mode = Number(fd.get('delivery_mode'));
    const headers = parseKeyValues(fd.get('headers'));
    if (Object.keys(headers).length) properties.headers = headers;
    const n = repeat ? Math.max(1, Number(fd.get('repeat') || 1)) : 1;
    const key = fixedKey ?? fd.get('routing_key');
    const payload = fd.get('payload');
    let routed = 0;
    result.textContent = n > 1 ? 'publishing…' : '';
    for (let i = 1; i <= n; i++) {
      const sub = (s) => (n > 1 ? s.replaceAll('{{n}}', String(i)) : s.replaceAll('{{n}}', '1'));
      const res = await api('POST', `/exchanges/${vq(vhost, exchange === '' ? 'amq.default' : exchange)}/publish`, {
        properties,
        routing_key: sub(key),
        payload: sub(payload),
        payload_encoding: 'string',
      });
      if (res?.routed) routed++;
      if (n > 1 && i % 50 === 0) result.textContent = `publishing… ${fmtNum(i)} of ${fmtNum(n)}`;
    }
    const text = n === 1 ? (routed ? 'Message published and routed.' : 'Message published, but not routed to any queue.') : `Published ${fmtNum(n)} messages, ${fmtNum(routed)} routed.`;
    result.textContent = text;
    if (routed === n) notice(text);
    else banner('error', text);
    refreshNow();
  });
  return form;
}

/** Bindings table with an unbind button; `side` = which end to show as the link. */
function bindingsTable(vhost, { name, showSource, showDest, onChange }) {
  return new DataTable({
    name,
    rowKey: (r) => `${r.source}\u0000${r.destination_type}\u0000${r.destination}\u0000${r.properties_key}`,
    columns: [
      showSource && { key: 'source', label: 'From exchange', render: (r) => h('a', { href: exchangeRoute(vhost, r.source) }, exchangeLabel(r.source)) },
      showDest && {
        key: 'destination',
        label: 'To',
        render: (r) => [h('span', { class: 'tag' }, r.destination_type), h('a', { href: r.destination_type === 'queue' ? queueRoute(vhost, r.destination) : exchangeRoute(vhost, r.destination) }, r.destination)],
      },
      { key: 'routing_key', label: 'Routing key', render: (r) => h('span', { class: 'mono' }, r.routing_key) },
      { key: 'arguments', label: 'Arguments', nosort: true, render: (r) => h('span', { class: 'mono' }, argsText(r.arguments)) },
      {
        key: 'unbind',
        label: '',
        nosort: true,
        render: (r) =>
          r.source === ''
            ? h('span', { class: 'muted' }, 'implicit')
            : h(
                'button',
                {
                  type: 'button',
                  class: 'small danger',
                  onclick: async () => {
                    try {
                      const dt = r.destination_type === 'queue' ? 'q' : 'e';
                      await api('DELETE', `/bindings/${enc(vhost)}/e/${enc(r.source)}/${dt}/${enc(r.destination)}/${enc(r.properties_key)}`);
                      notice(`Unbound ${r.destination} from ${exchangeLabel(r.source)}`);
                      onChange();
                    } catch (e) {
                      showError(e, 'Unbind');
                    }
                  },
                },
                'Unbind',
              ),
      },
    ].filter(Boolean),
    empty: 'No bindings.',
  });
}

function queueDetailPage(root, vhost, name) {
  const props = h('dl', { class: 'props' });
  const depth = h('dl', { class: 'props' });
  const consumers = new DataTable({
    name: 'consumers',
    rowKey: (r) => `${r.channel_details?.name}\u0000${r.consumer_tag}`,
    columns: [
      { key: 'consumer_tag', label: 'Consumer tag' },
      { key: 'channel_details.name', label: 'Channel', wrap: true },
      { key: 'ack_required', label: 'Ack required', render: (r) => (r.ack_required ? 'yes' : 'no') },
      { key: 'exclusive', label: 'Exclusive', render: (r) => (r.exclusive ? 'yes' : 'no') },
      { key: 'prefetch_count', label: 'Prefetch', num: true, render: (r) => fmtNum(r.prefetch_count) },
      { key: 'active', label: 'Active', render: (r) => (r.active === false ? 'no' : 'yes') },
    ],
    empty: 'No consumers.',
  });
  const bindings = bindingsTable(vhost, { name: 'queue-bindings', showSource: true, onChange: () => refreshNow() });
  const exchangeList = h('datalist', { id: uid('exchanges') });
  const queueList = h('datalist', { id: uid('queues') });

  const bindForm = h(
    'form',
    { class: 'form', dataset: { form: 'bind' } },
    field('From exchange', input('source', { required: true, list: exchangeList.id })),
    field('Routing key', input('routing_key')),
    field('Arguments', h('textarea', { name: 'arguments', rows: 2 }), 'one key=value per line'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Bind')),
  );
  onSubmit(bindForm, 'Bind', async (fd) => {
    const source = fd.get('source').trim();
    await api('POST', `/bindings/${enc(vhost)}/e/${enc(source)}/q/${enc(name)}`, { routing_key: fd.get('routing_key'), arguments: parseKeyValues(fd.get('arguments')) });
    notice(`Bound ${name} to ${source}`);
    bindForm.reset();
    refreshNow();
  });

  const messages = h('div', { class: 'messages', dataset: { messages: '' } });
  const getForm = h(
    'form',
    { class: 'form', dataset: { form: 'get' } },
    field(
      'Ack mode',
      select(
        'ackmode',
        [
          ['ack_requeue_true', 'Peek: nack, requeue'],
          ['reject_requeue_true', 'Reject, requeue'],
          ['ack_requeue_false', 'Get: ack, remove from queue'],
          ['reject_requeue_false', 'Reject, no requeue (dead-letter)'],
        ],
        'ack_requeue_true',
      ),
    ),
    field('Encoding', select('encoding', [['auto', 'Auto: string if valid UTF-8, else base64'], ['base64', 'base64']], 'auto')),
    field('Messages', input('count', { type: 'number', min: 1, value: '1' })),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Get messages')),
  );
  onSubmit(getForm, 'Get messages', async (fd) => {
    const res = await api('POST', `/queues/${vq(vhost, name)}/get`, {
      count: Math.max(1, Number(fd.get('count') || 1)),
      ackmode: fd.get('ackmode'),
      encoding: fd.get('encoding'),
      truncate: 50000,
    });
    renderMessages(messages, res || []);
    refreshNow();
  });

  const destBox = h('div', { class: 'dest-list' });
  const addDest = (value = '') => {
    const inp = input('destination', { list: queueList.id, value, 'aria-label': `Destination queue ${destBox.children.length + 1}` });
    const row = h('div', { class: 'row' }, inp, h('button', { type: 'button', class: 'small', 'aria-label': 'Remove destination', onclick: () => { if (destBox.children.length > 1) row.remove(); } }, '−'));
    destBox.append(row);
    return inp;
  };
  addDest();
  const moveForm = h(
    'form',
    { class: 'form', dataset: { form: 'move' } },
    field('Destinations', destBox, 'messages go round-robin over these queues (same virtual host)'),
    h('span'),
    h('div', {}, h('button', { type: 'button', class: 'small', onclick: () => addDest().focus() }, '+ Add destination')),
    field('How many', input('count', { type: 'number', min: 1, placeholder: 'all ready messages' })),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Move messages'), h('span', { class: 'muted', dataset: { result: 'move' } })),
  );
  onSubmit(moveForm, 'Move messages', async (fd) => {
    const destinations = fd.getAll('destination').map((d) => d.trim()).filter(Boolean);
    if (!destinations.length) throw new Error('name at least one destination queue');
    if (destinations.includes(name)) throw new Error('a queue cannot be moved into itself');
    const body = { destinations };
    if (fd.get('count')) body.count = Number(fd.get('count'));
    const res = await api('POST', `/queues/${vq(vhost, name)}/move`, body);
    const text = `Moved ${fmtNum(res?.moved ?? 0)} messages to ${destinations.join(', ')}`;
    moveForm.querySelector('[data-result=move]').textContent = text;
    notice(text);
    refreshNow();
  });

  const purge = h('button', {
    type: 'button',
    class: 'danger',
    onclick: async () => {
      if (!confirm(`Purge all ready messages of queue ${name}?`)) return;
      try {
        const res = await api('DELETE', `/queues/${vq(vhost, name)}/contents`);
        notice(`Queue ${name} purged${res?.message_count !== undefined ? ` (${fmtNum(res.message_count)} messages)` : ''}`);
        refreshNow();
      } catch (e) {
        showError(e, 'Purge');
      }
    },
  }, 'Purge messages');
  const delForm = h(
    'form',
    { class: 'toolbar', dataset: { form: 'delete-queue' } },
    h('button', { type: 'submit', class: 'danger' }, 'Delete queue'),
    checkbox('if_empty', 'only if empty'),
    checkbox('if_unused', 'only if unused'),
  );
  onSubmit(delForm, 'Delete queue', async (fd) => {
    if (!confirm(`Delete queue ${name}?`)) return;
    const q = new URLSearchParams();
    if (fd.has('if_empty')) q.set('if-empty', 'true');
    if (fd.has('if_unused')) q.set('if-unused', 'true');
    await api('DELETE', `/queues/${vq(vhost, name)}${q.size ? `?${q}` : ''}`);
    notice(`Queue ${name} deleted`);
    location.hash = '#/queues';
  });

  clear(
    root,
    exchangeList,
    queueList,
    h('h1', {}, 'Queue ', h('span', { class: 'mono', dataset: { name: '' } }, name), h('span', { class: 'sub' }, `in virtual host ${vhost}`)),
    h('div', { class: 'grid2' }, h('section', { class: 'panel' }, h('h2', {}, 'Details'), props), h('section', { class: 'panel' }, h('h2', {}, 'Messages'), depth)),
    h(
      'div',
      { class: 'grid2 spaced' },
      h('section', { class: 'panel' }, h('h2', {}, 'Consumers'), consumers.el),
      h('section', { class: 'panel' }, h('h2', {}, 'Bindings'), bindings.el, h('h2', { class: 'spaced' }, 'Add binding to this queue'), bindForm),
    ),
    h('section', { class: 'panel spaced' }, h('h2', {}, 'Get messages'), getForm, messages),
    h(
      'div',
      { class: 'grid2 spaced' },
      h('section', { class: 'panel' }, h('h2', {}, 'Publish message'), h('p', { class: 'hint' }, `Published through the default exchange with routing key "${name}".`), publishForm({ vhost, exchange: '', fixedKey: name })),
      h(
        'div',
        { class: 'stack' },
        h('section', { class: 'panel' }, h('h2', {}, 'Move messages'), h('p', { class: 'hint' }, 'Spread this queue\'s backlog over one or more queues.'), moveForm),
        h('section', { class: 'panel' }, h('h2', {}, 'Purge and delete'), h('div', { class: 'toolbar' }, purge), delForm),
      ),
    ),
  );
  let listsLoaded = false;
  return {
    async refresh() {
      const [q, b] = await Promise.all([api('GET', `/queues/${vq(vhost, name)}`), api('GET', `/queues/${vq(vhost, name)}/bindings`)]);
      const prop = (k, v, key) => [h('dt', {}, k), h('dd', { dataset: key ? { prop: key } : {} }, v ?? '–')];
      clear(
        props,
        prop('Type', q.type ?? 'classic'),
        prop('State', stateCell(q.state)),
        prop('Features', featureTags(q)),
        prop('Arguments', h('span', { class: 'mono' }, argsText(q.arguments) || '–')),
        prop('Exclusive owner', q.owner_pid_details?.name ?? (q.exclusive ? 'yes' : 'none')),
        prop('Consumers', fmtNum(q.consumers)),
        prop('Node', q.node),
      );
      clear(
        depth,
        prop('Ready', fmtNum(q.messages_ready), 'ready'),
        prop('Unacked', fmtNum(q.messages_unacknowledged), 'unacked'),
        prop('Total', fmtNum(q.messages), 'total'),
        prop('Bytes', fmtBytes(q.message_bytes)),
        prop('Incoming', fmtRate(rate(q, 'publish'))),
        prop('Deliver / get', fmtRate(rate(q, 'deliver_get'))),
        prop('Ack', fmtRate(rate(q, 'ack'))),
      );
      consumers.setRows(q.consumer_details || []);
      bindings.setRows(b || []);
      if (!listsLoaded) {
        listsLoaded = true;
        const [ex, qs] = await Promise.all([api('GET', `/exchanges/${enc(vhost)}?columns=name`), api('GET', `/queues/${enc(vhost)}?columns=name`)]);
        clear(exchangeList, (ex || []).filter((e) => e.name !== '').map((e) => h('option', { value: e.name })));
        clear(queueList, (qs || []).filter((x) => x.name !== name).map((x) => h('option', { value: x.name })));
      }
    },
  };
}

function renderMessages(container, msgs) {
  if (!msgs.length) {
    clear(container, h('p', { class: 'muted' }, 'Queue is empty.'));
    return;
  }
  clear(
    container,
    msgs.map((m, i) =>
      h(
        'div',
        { class: 'message', dataset: { message: String(i + 1) } },
        h(
          'div',
          { class: 'meta' },
          h('b', {}, `Message ${i + 1}`),
          h('span', {}, 'Exchange: ', h('span', { class: 'mono' }, exchangeLabel(m.exchange))),
          h('span', {}, 'Routing key: ', h('span', { class: 'mono' }, m.routing_key)),
          h('span', {}, `Redelivered: ${m.redelivered ? 'yes' : 'no'}`),
          h('span', {}, `Remaining in queue: ${fmtNum(m.message_count)}`),
          h('span', {}, `Payload: ${fmtNum(m.payload_bytes)} bytes, ${m.payload_encoding}`),
          Object.keys(m.properties || {}).length ? h('span', { class: 'mono' }, `Properties: ${JSON.stringify(m.properties)}`) : null,
        ),
        h('pre', { dataset: { payload: '' } }, m.payload),
      ),
    ),
  );
}

function exchangeDetailPage(root, vhost, routeName) {
  const name = routeName === 'amq.default' ? '' : routeName;
  const props = h('dl', { class: 'props' });
  const refresh = () => refreshNow();
  const outgoing = bindingsTable(vhost, { name: 'exchange-source-bindings', showDest: true, onChange: refresh });
  const incoming = bindingsTable(vhost, { name: 'exchange-destination-bindings', showSource: true, onChange: refresh });
  const destList = h('datalist', { id: uid('dests') });
  const bindForm = h(
    'form',
    { class: 'form', dataset: { form: 'bind' } },
    field('To', select('destination_type', [['q', 'Queue'], ['e', 'Exchange']], 'q')),
    field('Name', input('destination', { required: true, list: destList.id })),
    field('Routing key', input('routing_key')),
    field('Arguments', h('textarea', { name: 'arguments', rows: 2 }), 'one key=value per line (headers exchanges: x-match=all|any)'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Bind')),
  );
  onSubmit(bindForm, 'Bind', async (fd) => {
    const dest = fd.get('destination').trim();
    await api('POST', `/bindings/${enc(vhost)}/e/${enc(name)}/${fd.get('destination_type')}/${enc(dest)}`, { routing_key: fd.get('routing_key'), arguments: parseKeyValues(fd.get('arguments')) });
    notice(`Bound ${dest} to ${exchangeLabel(name)}`);
    bindForm.reset();
    refreshNow();
  });
  const deletable = name !== '' && !name.startsWith('amq.');
  const del = h(
    'button',
    {
      type: 'button',
      class: 'danger',
      disabled: !deletable,
      onclick: async () => {
        if (!confirm(`Delete exchange ${name}?`)) return;
        try {
          await api('DELETE', `/exchanges/${vq(vhost, name)}`);
          notice(`Exchange ${name} deleted`);
          location.hash = '#/exchanges';
        } catch (e) {
          showError(e, 'Delete exchange');
        }
      },
    },
    'Delete exchange',
  );
  clear(
    root,
    destList,
    h('h1', {}, 'Exchange ', h('span', { class: 'mono', dataset: { name: '' } }, exchangeLabel(name)), h('span', { class: 'sub' }, `in virtual host ${vhost}`)),
    h('section', { class: 'panel' }, h('h2', {}, 'Details'), props),
    h('div', { class: 'grid2' }, h('section', { class: 'panel' }, h('h2', {}, 'Bindings from this exchange'), outgoing.el), h('section', { class: 'panel' }, h('h2', {}, 'Bindings to this exchange'), incoming.el)),
    name === '' ? null : h('section', { class: 'panel spaced' }, h('h2', {}, 'Add binding from this exchange'), bindForm),
    h('section', { class: name === '' ? 'panel spaced' : 'panel' }, h('h2', {}, 'Publish message'), publishForm({ vhost, exchange: name, repeat: true })),
    h('section', { class: 'panel' }, h('h2', {}, 'Delete'), del, deletable ? null : h('span', { class: 'hint' }, ' built-in exchanges cannot be deleted')),
  );
  let listsLoaded = false;
  return {
    async refresh() {
      const path = `/exchanges/${vq(vhost, routeName)}`;
      const [x, src, dst] = await Promise.all([api('GET', path), api('GET', `${path}/bindings/source`), api('GET', `${path}/bindings/destination`)]);
      const prop = (k, v) => [h('dt', {}, k), h('dd', {}, v ?? '–')];
      clear(
        props,
        prop('Type', x.type),
        prop('Features', featureTags(x)),
        prop('Arguments', h('span', { class: 'mono' }, argsText(x.arguments) || '–')),
        prop('Rate in', fmtRate(rate(x, 'publish_in'))),
        prop('Rate out', fmtRate(rate(x, 'publish_out'))),
      );
      outgoing.setRows(src || []);
      incoming.setRows(dst || []);
      if (!listsLoaded) {
        listsLoaded = true;
        const qs = await api('GET', `/queues/${enc(vhost)}?columns=name`);
        clear(destList, (qs || []).map((q) => h('option', { value: q.name })));
      }
    },
  };
}

function adminPage(root) {
  const refresh = () => refreshNow();
  const delButton = (label, path, what, after) =>
    h(
      'button',
      {
        type: 'button',
        class: 'small danger',
        onclick: async () => {
          if (!confirm(`Delete ${what}?`)) return;
          try {
            await api('DELETE', path);
            notice(`Deleted ${what}`);
            await after?.();
            refresh();
          } catch (e) {
            showError(e, 'Delete');
          }
        },
      },
      label,
    );
  const users = new DataTable({
    name: 'users',
    rowKey: (r) => r.name,
    sortKey: 'name',
    columns: [
      { key: 'name', label: 'Name' },
      { key: 'tags', label: 'Tags', value: (r) => tagList(r.tags).join(','), render: (r) => tagList(r.tags).map((t) => h('span', { class: 'tag' }, t)) },
      { key: 'password_hash', label: 'Password', value: (r) => (r.password_hash ? 1 : 0), render: (r) => (r.password_hash ? 'set' : 'none') },
      { key: 'actions', label: '', nosort: true, render: (r) => delButton('Delete', `/users/${enc(r.name)}`, `user ${r.name}`) },
    ],
    empty: 'No users.',
  });
  const vhosts = new DataTable({
    name: 'vhosts',
    rowKey: (r) => r.name,
    sortKey: 'name',
    columns: [
      { key: 'name', label: 'Name' },
      { key: 'description', label: 'Description' },
      { key: 'messages_ready', label: 'Ready', num: true, render: (r) => fmtNum(r.messages_ready) },
      { key: 'messages_unacknowledged', label: 'Unacked', num: true, render: (r) => fmtNum(r.messages_unacknowledged) },
      { key: 'messages', label: 'Total', num: true, render: (r) => fmtNum(r.messages) },
      { key: 'actions', label: '', nosort: true, render: (r) => delButton('Delete', `/vhosts/${enc(r.name)}`, `virtual host ${r.name} and everything in it`, loadVhosts) },
    ],
    empty: 'No virtual hosts.',
  });
  const perms = new DataTable({
    name: 'permissions',
    rowKey: (r) => `${r.user}\u0000${r.vhost}`,
    sortKey: 'user',
    columns: [
      { key: 'user', label: 'User' },
      { key: 'vhost', label: 'Virtual host' },
      { key: 'configure', label: 'Configure', render: (r) => h('span', { class: 'mono' }, r.configure) },
      { key: 'write', label: 'Write', render: (r) => h('span', { class: 'mono' }, r.write) },
      { key: 'read', label: 'Read', render: (r) => h('span', { class: 'mono' }, r.read) },
      { key: 'actions', label: '', nosort: true, render: (r) => delButton('Clear', `/permissions/${enc(r.vhost)}/${enc(r.user)}`, `permissions of ${r.user} on ${r.vhost}`) },
    ],
    empty: 'No permissions.',
  });
  const userList = clientList(users);
  const vhostList = clientList(vhosts);
  const permList = clientList(perms, (r) => `${r.user} ${r.vhost}`);

  const userForm = h(
    'form',
    { class: 'form', dataset: { form: 'add-user' } },
    field('Name', input('name', { required: true })),
    field('Password', h('input', { type: 'password', name: 'password', autocomplete: 'new-password' }), 'leave empty for a user that cannot log in with a password'),
    field('Tags', input('tags', { placeholder: 'management, monitoring, policymaker, administrator' }), 'comma-separated'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add / update user')),
  );
  onSubmit(userForm, 'Add user', async (fd) => {
    const name = fd.get('name').trim();
    const body = { tags: fd.get('tags').split(',').map((t) => t.trim()).filter(Boolean).join(',') };
    if (fd.get('password')) body.password = fd.get('password');
    else body.password_hash = '';
    await api('PUT', `/users/${enc(name)}`, body);
    notice(`User ${name} saved`);
    userForm.reset();
    refresh();
  });
  const vhostForm = h(
    'form',
    { class: 'form', dataset: { form: 'add-vhost' } },
    field('Name', input('name', { required: true })),
    field('Description', input('description')),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add virtual host')),
  );
  onSubmit(vhostForm, 'Add virtual host', async (fd) => {
    const name = fd.get('name').trim();
    await api('PUT', `/vhosts/${enc(name)}`, { description: fd.get('description') });
    notice(`Virtual host ${name} created`);
    vhostForm.reset();
    await loadVhosts();
    refresh();
  });
  const userSelect = h('input', { type: 'text', name: 'user', required: true, autocomplete: 'off' });
  const permForm = h(
    'form',
    { class: 'form', dataset: { form: 'set-permission' } },
    field('User', userSelect),
    field('Virtual host', vhostOptions()),
    field('Configure regexp', input('configure', { value: '.*' })),
    field('Write regexp', input('write', { value: '.*' })),
    field('Read regexp', input('read', { value: '.*' })),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Set permission')),
  );
  onSubmit(permForm, 'Set permission', async (fd) => {
    const user = fd.get('user').trim();
    await api('PUT', `/permissions/${enc(fd.get('vhost'))}/${enc(user)}`, { configure: fd.get('configure'), write: fd.get('write'), read: fd.get('read') });
    notice(`Permissions of ${user} on ${fd.get('vhost')} set`);
    refresh();
  });

  clear(
    root,
    h('h1', {}, 'Admin'),
    h('section', { class: 'panel' }, h('h2', {}, 'Users'), userList.el, h('details', { class: 'panel inner' }, h('summary', {}, 'Add or update a user'), userForm)),
    h('section', { class: 'panel' }, h('h2', {}, 'Virtual hosts'), vhostList.el, h('details', { class: 'panel inner' }, h('summary', {}, 'Add a virtual host'), vhostForm)),
    h('section', { class: 'panel' }, h('h2', {}, 'Permissions'), permList.el, h('details', { class: 'panel inner' }, h('summary', {}, 'Set permissions'), permForm)),
  );
  return {
    async refresh() {
      const [u, v, p] = await Promise.all([api('GET', '/users'), api('GET', '/vhosts'), api('GET', '/permissions')]);
      userList.setRows(u || []);
      vhostList.setRows(v || []);
      permList.setRows(p || []);
    },
  };
}

function tagList(tags) {
  if (Array.isArray(tags)) return tags;
  return String(tags ?? '').split(',').map((t) => t.trim()).filter(Boolean);
}

function loginPage(root, message) {
  const err = h('div', { class: 'banner error', role: 'alert', hidden: !message, dataset: { loginError: '' } }, h('div', { class: 'text' }, message ?? ''));
  const form = h(
    'form',
    { class: 'form', dataset: { form: 'login' } },
    field('Username', input('username', { required: true, autocomplete: 'username' })),
    field('Password', h('input', { type: 'password', name: 'password', autocomplete: 'current-password' })),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Log in')),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const fd = new FormData(form);
    const user = fd.get('username');
    const token = basicToken(user, fd.get('password'));
    const btn = form.querySelector('button');
    btn.disabled = true;
    try {
      const who = await api('GET', '/whoami', undefined, token);
      state.auth = token;
      state.user = who?.name ?? user;
      sessionStorage.setItem(AUTH_KEY, token);
      sessionStorage.setItem(USER_KEY, state.user);
      if (!location.hash || location.hash === '#/login') location.hash = '#/';
      await start();
    } catch (e) {
      err.querySelector('.text').textContent = e instanceof ApiError && e.status === 401 ? `Login failed: ${e.reason ?? 'not authorised'}` : `Login failed: ${e.message}`;
      err.hidden = false;
      form.querySelector('[name=password]').select();
    } finally {
      btn.disabled = false;
    }
  });
  clear(root, h('div', { class: 'login panel' }, h('h1', {}, 'eventbus broker'), err, form));
  form.querySelector('[name=username]').focus();
}

// ---------------------------------------------------------------- routing and refresh

const ROUTES = [
  [/^#?\/?$/, 'overview', (root) => overviewPage(root)],
  [/^#\/connections$/, 'connections', (root) => connectionsPage(root)],
  [/^#\/channels$/, 'channels', (root) => channelsPage(root)],
  [/^#\/exchanges$/, 'exchanges', (root) => exchangesPage(root)],
  [/^#\/exchanges\/([^/]+)\/([^/]+)$/, 'exchanges', (root, v, n) => exchangeDetailPage(root, v, n)],
  [/^#\/queues$/, 'queues', (root) => queuesPage(root)],
  [/^#\/queues\/([^/]+)\/([^/]+)$/, 'queues', (root, v, n) => queueDetailPage(root, v, n)],
  [/^#\/admin$/, 'admin', (root) => adminPage(root)],
];

function route() {
  clearTimeout(state.timer);
  state.generation++;
  const root = document.getElementById('main');
  const hash = location.hash || '#/';
  for (const [rx, nav, make] of ROUTES) {
    const m = hash.match(rx);
    if (!m) continue;
    document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('active', a.dataset.nav === nav));
    let args;
    try {
      args = m.slice(1).map(decodeURIComponent);
    } catch {
      break;
    }
    state.page = make(root, ...args);
    document.title = `${nav[0].toUpperCase()}${nav.slice(1)} — eventbus broker`;
    refreshNow();
    return;
  }
  clear(root, h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/' }, 'Go to the overview.')));
}

/** Refreshes the current page now and schedules the next auto-refresh. */
async function refreshNow() {
  clearTimeout(state.timer);
  const gen = state.generation;
  const page = state.page;
  if (!page) return;
  try {
    await page.refresh();
    document.getElementById('foot').textContent = `Updated ${fmtTime(Date.now())}`;
  } catch (e) {
    if (gen === state.generation) showError(e, 'Refresh');
  }
  if (gen === state.generation && state.refreshMs > 0) {
    clearTimeout(state.timer);
    state.timer = setTimeout(refreshNow, state.refreshMs);
  }
}

async function loadVhosts() {
  const list = await api('GET', '/vhosts');
  state.vhosts = (list || []).map((v) => v.name).sort();
  const sel = document.getElementById('vhost-select');
  if (state.vhost && !state.vhosts.includes(state.vhost)) state.vhost = '';
  clear(sel, h('option', { value: '' }, 'All'), state.vhosts.map((v) => h('option', { value: v, selected: v === state.vhost }, v)));
}

function logout(message) {
  clearTimeout(state.timer);
  state.generation++;
  state.page = null;
  state.auth = null;
  sessionStorage.removeItem(AUTH_KEY);
  sessionStorage.removeItem(USER_KEY);
  document.getElementById('top').hidden = true;
  clearBanners();
  loginPage(document.getElementById('main'), message);
}

async function start() {
  if (!state.auth) {
    logout();
    return;
  }
  document.getElementById('top').hidden = false;
  document.getElementById('whoami').textContent = state.user ?? '';
  clearBanners();
  try {
    await loadVhosts();
  } catch (e) {
    showError(e, 'Loading virtual hosts');
    if (!state.auth) return;
  }
  route();
}

function init() {
  const refreshSel = document.getElementById('refresh-select');
  if (![...refreshSel.options].some((o) => Number(o.value) === state.refreshMs)) state.refreshMs = 5000;
  refreshSel.value = String(state.refreshMs);
  refreshSel.addEventListener('change', () => {
    state.refreshMs = Number(refreshSel.value);
    localStorage.setItem(REFRESH_KEY, refreshSel.value);
    refreshNow();
  });
  document.getElementById('vhost-select').addEventListener('change', (ev) => {
    state.vhost = ev.target.value;
    sessionStorage.setItem(VHOST_KEY, state.vhost);
    route();
  });
  document.getElementById('logout').addEventListener('click', () => logout());
  window.addEventListener('hashchange', () => {
    if (state.auth) {
      clearBanners(true);
      route();
    }
  });
  start();
}

init();
