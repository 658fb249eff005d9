// sio-relay operator console. Vanilla ES2020, no dependencies, CSP-friendly (no inline code).
// Every string that comes from the API is untrusted (producers write it): it only ever reaches the
// DOM through textContent, text nodes, attribute values or Option(), never through innerHTML, and
// what is shown of it passes through shown() (el, svgEl, setText, Option texts).
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const SVG = 'http://www.w3.org/2000/svg';
  const WINDOW_MS = 10 * 60 * 1000; // the history holds 10 minutes; the time axis always spans them

  let state = null;        // the last /console/state rendered
  let writable = false;    // until the state says otherwise, mutations stay disabled
  let busy = false;        // a replay/drop is in flight: no second one meanwhile

  // ---------- small helpers ----------

  // Text as the page shows it: control characters (C0, DEL, C1), format characters (bidirectional
  // marks, embeddings, overrides and isolates; zero-width ones; the byte-order mark; tags) and the
  // line and paragraph separators are written out as Rust writes them (`\n`, `\t`, `\r`,
  // `\u{202e}`): a producer's U+202E cannot make `exe.txt` read as `txt.exe`, nor a zero-width
  // space hide a difference. This is `sio-relay dead list`'s rule (commands::printable in the
  // crate); tests/it/console.rs holds the two equal on every character it escapes. Only what is
  // shown is escaped: data-* attributes and requests keep the API's values.
  const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
  const NAMED = { '\t': '\\t', '\n': '\\n', '\r': '\\r' };
  const shown = (s) => String(s).replace(INVISIBLE, (c) => NAMED[c] || `\\u{${c.codePointAt(0).toString(16)}}`);
  const setText = (e, s) => { e.textContent = shown(s); };

  // el('td', {class: 'num', data: {field: 'lag'}}, 'text', child...): strings become text nodes.
  function el(tag, props = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === 'class') e.className = v;
      else if (k === 'text') setText(e, v);
      else if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.setAttribute('data-' + dk, String(dv));
      else e.setAttribute(k, v);
    }
    for (const kid of kids) if (kid != null) e.append(typeof kid === 'string' ? shown(kid) : kid);
    return e;
  }

  function svgEl(tag, attrs = {}, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text != null) setText(e, text);
    return e;
  }

  // Plain digits (tests and copy-paste both want no thousands separators).
  const plain = (n) => (n == null ? '–' : String(n));

  // Rates and latencies: a few significant digits, trailing zeros trimmed.
  function num(x) {
    if (x == null || !Number.isFinite(x)) return '–';
    const digits = x >= 100 ? 0 : x >= 10 ? 1 : 2;
    return String(Number(x.toFixed(digits)));
  }

  // Idle times as people read them: 120 ms, 3.2 s, 5 min, 2.5 h, 3 d.
  function human(ms) {
    if (ms == null || !Number.isFinite(ms)) return '–';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${Number(s.toFixed(1))} s`;
    const m = s / 60;
    if (m < 60) return `${Math.round(m)} min`;
    const h = m / 60;
    if (h < 48) return `${Number(h.toFixed(1))} h`;
    return `${Number((h / 24).toFixed(1))} d`;
  }

  function localTime(ms) {
    if (!Number.isFinite(ms)) return '?';
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  // fetch + JSON with a timeout, so a hung request cannot stop the polling loop forever.
  // Throws an Error whose message is the server's {"error": ...} text when it gave one.
  async function request(url, opts = {}) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 15000);
    try {
      const res = await fetch(url, { ...opts, cache: 'no-store', credentials: 'same-origin', signal: ctl.signal });
      const text = await res.text();
      let data = null;
      try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON: handled below */ }
      if (!res.ok) {
        const msg = data && typeof data.error === 'string' ? data.error : `HTTP ${res.status} ${res.statusText}`.trim();
        throw new Error(msg);
      }
      if (data === null || typeof data !== 'object') throw new Error('response is not JSON');
      return data;
    } catch (e) {
      if (e.name === 'AbortError') throw new Error('request timed out');
      if (e instanceof TypeError) throw new Error(`network error (${e.message})`);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  // Replace a tbody's rows; an empty list shows one muted row (without the data-* keys tests look for).
  function fillRows(tbody, rows, emptyText) {
    const cols = tbody.closest('table').querySelectorAll('thead th').length;
    if (rows.length) tbody.replaceChildren(...rows);
    else tbody.replaceChildren(el('tr', {}, el('td', { class: 'empty', colspan: cols, text: emptyText })));
  }

  const td = (field, text, cls) => el('td', { class: cls || '', data: field ? { field } : {} }, text);

  // ---------- live view ----------

  function setBanner(text) {
    const b = $('banner');
    b.hidden = !text;
    setText(b, text || '');
  }

  // Disconnected wins over refusing: the relay keeps the refusing flag across a disconnection.
  function redisState(relay) {
    if (!relay) return 'unknown';
    if (!relay.redis_connected) return 'disconnected';
    return relay.redis_refusing ? 'refusing' : 'connected';
  }

  // Rates per interval between consecutive samples. A counter going down means the relay
  // restarted: that interval has no value rather than a negative one.
  function intervals(history) {
    const out = [];
    for (let i = 1; i < history.length; i++) {
      const a = history[i - 1], b = history[i];
      const dt = (b.t_ms - a.t_ms) / 1000;
      if (!(dt > 0)) continue;
      const d = (k) => { const v = b[k] - a[k]; return Number.isFinite(v) && v >= 0 ? v : null; };
      const per = (k) => { const v = d(k); return v == null ? null : v / dt; };
      const count = d('latency_count'), sum = d('latency_sum');
      out.push({
        t: b.t_ms, in: per('read'), out: per('acknowledged'), dead: per('dead_lettered'),
        latency: count > 0 && sum != null ? (sum / count) * 1000 : null,
      });
    }
    return out;
  }

  // Group lag and pending summed over the streams that have a group, as the status look found
  // them; null without a group. The cards show them, and the lag chart ends on them, so that the
  // two never disagree (the chart's samples are the relay's gauges, refreshed every few seconds).
  function groupTotals(s) {
    const groups = ((s.status && s.status.streams) || []).map((x) => x.group).filter(Boolean);
    if (!groups.length) return null;
    return {
      lag: groups.some((g) => g.lag == null) ? null : groups.reduce((n, g) => n + g.lag, 0),
      pending: groups.reduce((n, g) => n + (g.pending || 0), 0),
    };
  }

  function renderCards(s, iv) {
    const last = iv.length ? iv[iv.length - 1] : null;
    setText($('rate-in'), num(last && last.in));
    setText($('rate-out'), num(last && last.out));
    setText($('rate-dead'), num(last && last.dead));
    setText($('latency'), num(last && last.latency));

    const g = groupTotals(s);
    setText($('lag'), g ? (g.lag == null ? 'unknown' : String(g.lag)) : 'no group');
    setText($('pending'), g ? String(g.pending) : 'no group');
    const relay = s.relay || {};
    setText($('held'), plain(relay.held_entries));
    setText($('parked'), relay.parked_entries ? `parked ${relay.parked_entries}` : '');
    setText($('acks-waiting'), plain(relay.acks_waiting));
  }

  function problemText(p) {
    if (typeof p === 'string') return p;
    if (p && typeof p === 'object') return p.message || p.problem || JSON.stringify(p);
    return String(p);
  }

  function renderHealth(status) {
    const h = $('health');
    const problems = status.problems || [];
    h.className = 'health ' + (status.healthy ? 'ok' : 'bad');
    setText(h, status.healthy ? 'healthy' : `unhealthy: ${problems.length} problem${problems.length === 1 ? '' : 's'}`);
    $('problems').replaceChildren(...problems.map((p) => el('li', { text: problemText(p) })));
  }

  function renderNamespaces(list) {
    fillRows($('namespaces').tBodies[0], (list || []).map((n) =>
      el('tr', { data: { nsp: n.nsp } }, td('nsp', n.nsp, 'mono'), td('servers', plain(n.servers), 'num'))),
    'no Socket.IO servers seen');
  }

  function renderHeld(relay) {
    fillRows($('held-table').tBodies[0], (relay.held_by_namespace || []).map((n) =>
      el('tr', { data: { 'held-nsp': n.nsp } }, td('nsp', n.nsp, 'mono'), td('held', plain(n.held), 'num'))),
    'nothing held');
    const more = relay.held_namespaces_not_shown || 0;
    $('held-more').hidden = !more;
    setText($('held-more'), `${more} more namespace${more === 1 ? '' : 's'} not shown`);
  }

  function renderStreams(streams) {
    fillRows($('streams').tBodies[0], streams.map((x) => {
      const g = x.group;
      const lag = !g ? '–' : g.lag == null ? 'unknown' : String(g.lag);
      return el('tr', { data: { stream: x.name } },
        td('name', x.name, 'mono'), td('length', plain(x.length), 'num'),
        td('group', g ? g.name : 'none', g ? 'mono' : 'empty'), td('lag', lag, 'num'),
        td('pending', g ? plain(g.pending) : '–', 'num'),
        // Counted by relays with delivery.confirm = "clients" only.
        td('reached_no_client', g && g.reached_no_client != null ? plain(g.reached_no_client) : '–', 'num'),
        td('dead_letter_stream', plain(x.dead_letter_stream), 'mono'), td('dead_letters', plain(x.dead_letters), 'num'));
    }), 'no streams');
  }

  function renderConsumers(streams, me) {
    const rows = [];
    for (const x of streams) {
      if (!x.group) continue;
      for (const c of x.group.consumers || []) {
        const name = td('name', c.name, 'mono');
        if (c.name === me) name.append(el('span', { class: 'tag', text: 'this relay' }));
        rows.push(el('tr', { data: { consumer: c.name } }, name, td('stream', x.name, 'mono'),
          td('group', x.group.name, 'mono'), td('pending', plain(c.pending), 'num'), td('idle', human(c.idle_ms), 'num')));
      }
    }
    fillRows($('consumers').tBodies[0], rows, 'no consumers');
  }

  function yesNo(id, value, yes, no, good) {
    const e = $(id);
    setText(e, value == null ? 'unknown' : value ? yes : no);
    e.className = value == null ? '' : value === good ? 'yes' : 'no';
  }

  function renderRedis(redis, relay) {
    setText($('redis-url'), plain(redis.url));
    setText($('redis-version'), redis.version == null ? 'unknown' : redis.version);
    yesNo('redis-reachable', redis.reachable, 'yes', 'no', true);
    setText($('relay-consumer'), plain(relay.consumer));
    yesNo('relay-connected', relay.redis_connected, 'connected', 'disconnected', true);
    yesNo('relay-refusing', relay.redis_refusing, 'yes', 'no', false);
  }

  function renderState(s) {
    const relay = s.relay || {};
    setText($('version'), s.version ? `v${s.version}` : '');
    const rs = redisState(s.relay);
    setText($('redis-state'), rs);
    $('redis-state').dataset.state = rs;
    setWritable(!!s.writable);
    const iv = intervals(s.history || []);
    renderCards(s, iv);
    renderHealth(s.status);
    renderNamespaces(s.status.namespaces);
    // python-socketio counts its servers on one channel, for every namespace: the row `*`.
    const target = s.status.target || {};
    setText($('target'), target.adapter ? `${target.adapter} on ${target.channel}` : '');
    renderHeld(relay);
    renderStreams(s.status.streams || []);
    renderConsumers(s.status.streams || [], relay.consumer);
    renderRedis(s.status.redis || {}, relay);
    renderCharts();
  }

  // Polls one request at a time: the next one is scheduled only once this one settled.
  async function poll() {
    let delay = 2000;
    try {
      const s = await request('/console/state');
      setBanner(null);
      state = s;
      if (Number.isFinite(s.refresh_ms) && s.refresh_ms >= 250) delay = s.refresh_ms;
      try {
        renderState(s);
        body.dataset.loaded = '1';
      } catch (e) {
        // A shape the console does not expect: say so instead of blaming the connection.
        console.error(e);
        setBanner(`console error: ${e.message}`);
      }
    } catch (e) {
      setBanner(`console disconnected: ${e.message}`);
    }
    setTimeout(poll, delay);
  }

  // ---------- charts (hand-drawn SVG) ----------

  // The smallest 1/2/5 x 10^k at or above v, so the max label is a round number.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v * 0.9999) return m * p;
    return 10 * p;
  }

  // series: [{name, color, unit, points: [[t_ms, value|null], ...]}]; null breaks the line.
  function drawChart(svg, legend, series, tEnd) {
    // The viewBox follows the element's real width so text stays crisp and unscaled on any screen.
    const W = Math.max(200, Math.round(svg.clientWidth || 600)), H = 140;
    const L = 44, R = 8, T = 8, B = 18, pw = W - L - R, ph = H - T - B;
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v != null);
    const yMax = niceCeil(Math.max(0, ...values));
    const x = (t) => L + ((t - (tEnd - WINDOW_MS)) / WINDOW_MS) * pw;
    const y = (v) => T + (1 - v / yMax) * ph;
    const kids = [];
    for (const f of [0, 0.5, 1]) kids.push(svgEl('line', { class: f ? 'grid' : 'axis', x1: L, x2: L + pw, y1: y(yMax * f), y2: y(yMax * f) }));
    kids.push(svgEl('line', { class: 'axis', x1: L, x2: L, y1: T, y2: T + ph }));
    kids.push(svgEl('text', { x: L - 4, y: T + 8, 'text-anchor': 'end' }, num(yMax)));
    kids.push(svgEl('text', { x: L - 4, y: T + ph, 'text-anchor': 'end' }, '0'));
    kids.push(svgEl('text', { x: L, y: H - 4, 'text-anchor': 'start' }, '-10 min'));
    kids.push(svgEl('text', { x: L + pw / 2, y: H - 4, 'text-anchor': 'middle' }, '-5 min'));
    kids.push(svgEl('text', { x: L + pw, y: H - 4, 'text-anchor': 'end' }, 'now'));
    if (!values.length) kids.push(svgEl('text', { x: L + pw / 2, y: T + ph / 2, 'text-anchor': 'middle' }, 'no data yet'));
    for (const s of series) {
      let d = '', open = false;
      for (const [t, v] of s.points) {
        if (v == null || t < tEnd - WINDOW_MS) { open = false; continue; }
        // "l0 0" after a fresh move draws a dot (round caps), so lone points stay visible.
        d += open ? `L${x(t).toFixed(1)} ${y(v).toFixed(1)}` : `M${x(t).toFixed(1)} ${y(v).toFixed(1)}l0 0`;
        open = true;
      }
      if (d) kids.push(svgEl('path', { d, stroke: s.color, 'stroke-linecap': 'round' }));
    }
    svg.replaceChildren(...kids);
    legend.replaceChildren(...series.map((s) => {
      const lastPt = [...s.points].reverse().find((p) => p[1] != null);
      const sw = el('span', { class: 'sw' });
      sw.style.background = s.color; // setting style from JS is allowed by the CSP
      return el('span', {}, sw, `${s.name} ${lastPt ? num(lastPt[1]) : '–'}${s.unit || ''}`);
    }));
  }

  function renderCharts() {
    // Hidden charts have no width; they are drawn when the live view is shown again.
    if (!state || body.dataset.view !== 'live') return;
    const h = state.history || [];
    const tEnd = h.length ? h[h.length - 1].t_ms : Date.now();
    const iv = intervals(h);
    const pts = (k) => iv.map((p) => [p.t, p[k]]);
    drawChart($('chart-rates'), $('legend-rates'), [
      { name: 'in', color: '#0969da', unit: '/s', points: pts('in') },
      { name: 'out', color: '#1a7f37', unit: '/s', points: pts('out') },
      { name: 'dead', color: '#cf222e', unit: '/s', points: pts('dead') },
    ], tEnd);
    const lag = h.map((p) => [p.t_ms, p.lag == null ? null : p.lag]);
    const pending = h.map((p) => [p.t_ms, p.pending == null ? null : p.pending]);
    const now = groupTotals(state);
    if (now && h.length) {
      lag.push([tEnd, now.lag]);
      pending.push([tEnd, now.pending]);
    }
    drawChart($('chart-lag'), $('legend-lag'), [
      { name: 'lag', color: '#8250df', points: lag },
      { name: 'pending', color: '#bc4c00', points: pending },
    ], tEnd);
    drawChart($('chart-latency'), $('legend-latency'), [
      { name: 'latency', color: '#0969da', unit: ' ms', points: pts('latency') },
    ], tEnd);
  }

  // ---------- dead letters ----------

  const dead = {
    before: null,   // cursor of the page shown (null: newest, or the time picker's)
    newer: [],      // cursors of the pages before this one, for "Newer"
    next: null,     // next_before of the page shown
    seq: 0,         // a newer load supersedes one still in flight
    loading: false,
    lastJson: '',   // what the page shown was rendered from (auto-refresh skips identical pages)
    reasonsKey: '',
  };

  function timeBefore() {
    const v = $('before-time').value;
    if (!v) return null;
    const ms = new Date(v).getTime(); // a datetime-local value without offset is local time
    return Number.isFinite(ms) ? `${ms}-0` : null;
  }

  // silent: the periodic refresh, which keeps data-dead-loaded and re-renders only on change.
  async function loadDead(silent = false) {
    const seq = ++dead.seq;
    dead.loading = true;
    if (!silent) body.removeAttribute('data-dead-loaded');
    const q = new URLSearchParams();
    if ($('reason').value) q.set('reason', $('reason').value);
    if ($('stream').value) q.set('stream', $('stream').value);
    if (dead.before) q.set('before', dead.before);
    try {
      const d = await request('/console/dead' + (q.toString() ? '?' + q : ''));
      if (seq !== dead.seq) return;
      const json = JSON.stringify(d);
      if (!silent || json !== dead.lastJson) renderDead(d);
      dead.lastJson = json;
      body.dataset.deadLoaded = '1';
    } catch (e) {
      if (seq !== dead.seq || silent) return;
      // The list shown (if any) stays; the failure is said next to the pager.
      setText($('dead-info'), `could not load dead letters: ${e.message}`);
    } finally {
      if (seq === dead.seq) dead.loading = false;
    }
  }

  function renderReasons(reasons) {
    const sel = $('reason');
    const cur = sel.value;
    // The chosen reason stays listed even when no letter of it is left.
    const list = [...new Set([...(reasons || []), ...(cur ? [cur] : [])])];
    const key = JSON.stringify(list);
    if (key === dead.reasonsKey) return; // rebuilding would close a select the user has open
    dead.reasonsKey = key;
    sel.replaceChildren(new Option('all reasons', ''), ...list.map((r) => new Option(shown(r), r)));
    sel.value = cur;
  }

  function fieldRow(f) {
    return el('div', { class: 'field' },
      el('span', { class: 'name', text: f.name }), ' = ', el('span', { class: 'value', text: f.value == null ? '' : f.value }),
      f.truncated ? el('span', { class: 'trunc', text: ` … (${f.bytes} bytes)` }) : null);
  }

  function letterCard(l) {
    const pick = { stream: l.stream, id: l.id };
    const replay = el('button', { type: 'button', class: 'replay', text: 'Replay' });
    const drop = el('button', { type: 'button', class: 'drop danger', text: 'Drop' });
    replay.addEventListener('click', () => replayLetters([pick]));
    drop.addEventListener('click', () => dropLetters([pick]));
    const ms = Number.isFinite(l.time_ms) ? l.time_ms : parseInt(l.id, 10);
    const meta = (label, value, cls) => el('span', { class: 'meta' }, `${label} `, el('code', { class: cls, text: plain(value) }));
    return el('div', { class: 'dead-letter', data: { id: l.id, stream: l.stream, reason: l.reason == null ? '' : l.reason } },
      el('div', { class: 'dl-head' },
        el('input', { type: 'checkbox', class: 'select', 'aria-label': 'select this dead letter' }),
        el('span', { class: 'time', text: localTime(ms) }),
        el('span', { class: 'reason', text: plain(l.reason) }),
        meta('id', l.id, 'id'), meta('source', l.source_id, 'source-id'),
        meta('deliveries', l.deliveries, 'deliveries'), meta('in', l.stream, 'stream'),
        el('span', { class: 'actions' }, replay, drop)),
      el('div', { class: 'error', text: l.error == null ? '' : l.error }),
      ...(l.fields || []).map(fieldRow),
      l.fields_not_shown > 0 ? el('div', { class: 'trunc', text: `… ${l.fields_not_shown} more fields` }) : null);
  }

  // With several partitions, one dead-letter stream at a time.
  function renderStreamChoice(streams) {
    const sel = $('stream');
    const list = streams || [];
    sel.hidden = list.length < 2;
    const key = JSON.stringify(list);
    if (key === dead.streamsKey) return;
    dead.streamsKey = key;
    const cur = sel.value;
    sel.replaceChildren(...list.map((s) => new Option(shown(s), s)));
    if (list.includes(cur)) sel.value = cur;
  }

  function renderDead(d) {
    renderReasons(d.reasons);
    renderStreamChoice(d.streams);
    const letters = d.letters || [];
    $('dead-list').replaceChildren(...(letters.length
      ? letters.map(letterCard)
      : [el('p', { id: 'no-dead', text: 'No dead letters.' })]));
    dead.next = d.next_before || null;
    $('older').disabled = !dead.next;
    $('newer').disabled = !dead.newer.length;
    const page = dead.newer.length ? `page ${dead.newer.length + 1} · ` : '';
    setText($('dead-info'), `${page}${letters.length} shown · ${plain(d.scanned)} scanned` +
      (d.streams && d.streams.length ? ` · ${d.streams.join(', ')}` : ''));
    $('select-all').checked = false;
    updateControls();
  }

  // Back to the newest page of the current filters.
  function reloadFirst() {
    dead.newer = [];
    dead.before = timeBefore();
    loadDead();
  }

  const cards = () => [...document.querySelectorAll('#dead-list .dead-letter')];
  const selectedCards = () => cards().filter((c) => c.querySelector('input.select').checked);
  const picks = (cs) => cs.map((c) => ({ stream: c.dataset.stream, id: c.dataset.id }));

  function updateControls() {
    const can = writable && !busy;
    $('send-submit').disabled = !can;
    for (const b of document.querySelectorAll('#dead-list button')) b.disabled = !can;
    const all = cards(), n = selectedCards().length;
    for (const c of all) c.classList.toggle('selected', c.querySelector('input.select').checked);
    $('replay-selected').disabled = $('drop-selected').disabled = !can || n === 0;
    setText($('replay-selected'), n ? `Replay selected (${n})` : 'Replay selected');
    setText($('drop-selected'), n ? `Drop selected (${n})` : 'Drop selected');
    $('replay-reason').disabled = $('drop-reason').disabled = !can || $('reason').value === '';
    $('select-all').checked = n > 0 && n === all.length;
    $('select-all').indeterminate = n > 0 && n < all.length;
  }

  function setWritable(w) {
    writable = w;
    for (const note of document.querySelectorAll('.read-only')) note.hidden = w;
    $('token-label').hidden = !w;
    updateControls();
  }

  function say(m, outcome, text) {
    if (outcome) m.dataset.outcome = outcome; else m.removeAttribute('data-outcome');
    setText(m, text || '');
  }
  const showMessage = (outcome, text) => say($('message'), outcome, text);

  // Headers of a change: JSON, and the token when one was typed (kept in memory only: never
  // stored, never in a URL).
  function changeHeaders() {
    const token = $('token').value;
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  // Request bodies per dead-letter stream: the API takes one stream per request.
  function byStream(list) {
    const m = new Map();
    for (const p of list) {
      if (!m.has(p.stream)) m.set(p.stream, []);
      m.get(p.stream).push(p.id);
    }
    const out = [];
    // The server takes at most 1000 ids per request; 500 leaves room.
    for (const [stream, ids] of m) for (let i = 0; i < ids.length; i += 500) out.push({ stream, ids: ids.slice(i, i + 500) });
    return out;
  }

  const letters = (n) => `${n} dead letter${n === 1 ? '' : 's'}`;

  // Runs the requests in order, stops at the first refusal, reports, then reloads the page shown.
  async function mutate(kind, bodies) {
    busy = true;
    updateControls();
    showMessage(null, '');
    body.removeAttribute('data-dead-loaded'); // the list is about to change: say so at once
    let moved = 0, dropped = 0, error = null;
    const skipped = [];
    const headers = changeHeaders();
    for (const b of bodies) {
      try {
        const r = await request(`/console/dead/${kind}`, { method: 'POST', headers, body: JSON.stringify(b) });
        moved += (r.moved || []).length;
        skipped.push(...(r.skipped || []));
        dropped += r.dropped || 0;
      } catch (e) {
        error = e.message;
        break;
      }
    }
    let done = kind === 'replay' ? `Replayed ${letters(moved)}.` : `Dropped ${letters(dropped)}.`;
    if (skipped.length) {
      const shown = skipped.slice(0, 5).map(([id, why]) => `${id} (${why})`).join('; ');
      done += ` Skipped ${skipped.length}: ${shown}${skipped.length > 5 ? '; …' : ''}.`;
    }
    busy = false;
    const partial = error && (moved || dropped || skipped.length);
    showMessage(error ? 'error' : 'ok', error ? error + (partial ? ` (before that: ${done})` : '') : done);
    $('select-all').checked = false;
    loadDead();
  }

  function replayLetters(list) {
    if (list.length) mutate('replay', byStream(list));
  }

  function dropLetters(list) {
    if (!list.length) return;
    if (!window.confirm(`Drop ${letters(list.length)}? This cannot be undone.`)) return;
    mutate('drop', byStream(list));
  }

  function allOfReason(kind) {
    const reason = $('reason').value;
    if (!reason) return;
    const ask = kind === 'drop'
      ? `Drop every dead letter with reason "${reason}"? This cannot be undone.`
      : `Replay every dead letter with reason "${reason}"?`;
    if (window.confirm(shown(ask))) mutate(kind, [{ reason, all: true }]);
  }

  // The list refreshes by itself only when that cannot disturb the operator: nothing selected,
  // the newest page, no action or load under way. Unchanged pages are not re-rendered.
  function autoRefreshDead() {
    if (body.dataset.view !== 'dead' || busy || dead.loading || dead.newer.length) return;
    if (document.visibilityState !== 'visible' || selectedCards().length) return;
    if (document.activeElement === $('reason') || !body.dataset.deadLoaded) return;
    loadDead(true);
  }

  // ---------- send ----------

  // The form as `sio-relay send`'s request (admin::send::Request in the crate): empty fields are
  // left out, so the relay's defaults apply; the relay validates the rest and names what is wrong.
  function sendRequest() {
    const text = (id) => $(id).value.trim();
    const lines = (id) => $(id).value.split('\n').map((l) => l.trim()).filter(Boolean);
    const req = { event: $('send-event').value };
    if (text('send-data')) req.args = [text('send-data')];
    for (const [key, id] of [['rooms', 'send-rooms'], ['except', 'send-except']]) {
      const rooms = lines(id);
      if (rooms.length) req[key] = rooms;
    }
    for (const [key, id] of [['nsp', 'send-nsp'], ['ttl', 'send-ttl'], ['ack', 'send-ack'], ['traceparent', 'send-traceparent']]) {
      if (text(id)) req[key] = text(id);
    }
    if ($('send-volatile').checked) req.volatile = true;
    return req;
  }

  async function sendEntry(e) {
    e.preventDefault(); // the request below is the submission; the page stays
    if (!writable || busy) return;
    busy = true;
    updateControls();
    const m = $('send-message');
    say(m, null, '');
    m.removeAttribute('data-id');
    try {
      const r = await request('/console/send', { method: 'POST', headers: changeHeaders(), body: JSON.stringify(sendRequest()) });
      m.dataset.id = r.id;
      say(m, 'ok', `Appended ${r.id} to ${r.stream}.`);
      followEntry(r.id, r.stream);
    } catch (err) {
      say(m, 'error', err.message);
    } finally {
      busy = false;
      updateControls();
    }
  }

  // What became of the entry sent (or looked up) last (`sio-relay entry`'s answer, GET
  // /console/entry), looked at every refresh until it is settled: delivered, dead-lettered, gone.
  const follow = { id: null, stream: null, timer: 0 };
  const UNSETTLED = ['no_group', 'unread', 'held', 'in_hand'];

  function followEntry(id, stream) {
    clearTimeout(follow.timer);
    Object.assign(follow, { id, stream });
    const s = $('send-state');
    s.hidden = false;
    s.removeAttribute('data-state');
    setText(s, '…');
    lookAtEntry();
  }

  async function lookAtEntry() {
    const { id, stream } = follow;
    const s = $('send-state');
    let again = true;
    try {
      const q = new URLSearchParams({ id, stream });
      const w = await request(`/console/entry?${q}`);
      if (follow.id !== id) return;
      s.dataset.state = w.state;
      setText(s, entryState(w));
      again = UNSETTLED.includes(w.state);
    } catch (e) {
      if (follow.id !== id) return;
      setText(s, `could not look it up: ${e.message}`);
    }
    if (again) follow.timer = setTimeout(lookAtEntry, (state && state.refresh_ms) || 2000);
  }

  function entryState(w) {
    const by = () => `${w.consumer}, ${w.deliveries} deliver${w.deliveries === 1 ? 'y' : 'ies'}`;
    switch (w.state) {
      case 'no_group': return 'not read: no relay has read this stream yet';
      case 'unread': return `not read yet: the group has read up to ${w.last_read}`;
      case 'held': return `held (${by()}): no or too few Socket.IO servers listen on its namespace, or it waits behind an older held entry or for its clients to come back`;
      case 'in_hand': return `in a relay's hands (${by()}): being delivered, or waiting for the servers' confirmation or its clients' acknowledgements`;
      case 'dead_lettered': return `dead-lettered as ${w.dead_letter.reason}: ${w.dead_letter.error} (see Dead letters)`;
      case 'delivered': return 'delivered';
      case 'acknowledged': return 'acknowledged (whether it was dead-lettered was not looked up)';
      case 'gone': return 'the stream no longer holds it';
      default: return w.state;
    }
  }

  // ---------- routing and wiring ----------

  function route() {
    const views = ['live', 'dead', 'send'];
    const view = views.find((v) => location.hash === `#${v}`) || 'live';
    body.dataset.view = view;
    for (const v of views) {
      const tab = $(`tab-${v}`);
      $(`view-${v}`).hidden = v !== view;
      tab.classList.toggle('active', v === view);
      if (v === view) tab.setAttribute('aria-current', 'page'); else tab.removeAttribute('aria-current');
    }
    if (view === 'live') renderCharts();
    // Entering the dead view shows fresh letters, unless the operator left a selection there.
    else if (view === 'dead' && !selectedCards().length) loadDead();
  }

  function wire() {
    window.addEventListener('hashchange', route);
    let resizeTimer = 0;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(renderCharts, 150);
    });
    $('reason').addEventListener('change', () => { updateControls(); reloadFirst(); });
    $('stream').addEventListener('change', reloadFirst);
    $('before-time').addEventListener('change', reloadFirst);
    $('refresh').addEventListener('click', reloadFirst);
    $('older').addEventListener('click', () => {
      if (!dead.next) return;
      dead.newer.push(dead.before);
      dead.before = dead.next;
      loadDead();
    });
    $('newer').addEventListener('click', () => {
      if (!dead.newer.length) return;
      dead.before = dead.newer.pop();
      loadDead();
    });
    $('dead-list').addEventListener('change', (e) => {
      if (e.target.matches('input.select')) updateControls();
    });
    $('select-all').addEventListener('change', () => {
      const on = $('select-all').checked;
      for (const c of cards()) c.querySelector('input.select').checked = on;
      updateControls();
    });
    $('replay-selected').addEventListener('click', () => replayLetters(picks(selectedCards())));
    $('drop-selected').addEventListener('click', () => dropLetters(picks(selectedCards())));
    $('replay-reason').addEventListener('click', () => allOfReason('replay'));
    $('drop-reason').addEventListener('click', () => allOfReason('drop'));
    $('send-form').addEventListener('submit', sendEntry);
    // Any entry, by its ID (a customer's complaint, a log line): looked for in every stream.
    $('find-form').addEventListener('submit', (e) => {
      e.preventDefault();
      followEntry($('find-id').value.trim(), '');
    });
    setInterval(autoRefreshDead, 10000);
  }

  wire();
  route();
  poll();
})();
