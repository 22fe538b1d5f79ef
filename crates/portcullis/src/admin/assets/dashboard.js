// Portcullis dashboard: reads the admin API with the session cookie; sends the
// session's CSRF token (from <meta name="csrf-token">) with every change.
// No framework, no network beyond this origin, nothing inline.
'use strict';

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const SVG = 'http://www.w3.org/2000/svg';
const MAX_ROWS = 200;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells, className) {
  const tr = el('tr', null, className);
  for (const cell of cells) {
    if (cell instanceof Node) {
      const td = el('td');
      td.appendChild(cell);
      tr.appendChild(td);
    } else {
      tr.appendChild(el('td', cell));
    }
  }
  return tr;
}

function fill(tableId, rows, empty) {
  const body = document.querySelector('#' + tableId + ' tbody');
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = el('tr');
    const td = el('td', empty, 'note');
    td.colSpan = document.querySelectorAll('#' + tableId + ' thead th').length;
    tr.appendChild(td);
    body.appendChild(tr);
    return;
  }
  for (const r of rows) body.appendChild(r);
}

async function api(path, options) {
  const init = Object.assign({ credentials: 'same-origin', headers: {} }, options || {});
  if (init.method && init.method !== 'GET') init.headers['X-CSRF-Token'] = csrf;
  const response = await fetch(path, init);
  if (response.status === 401) {
    window.location.assign('/');
    throw new Error('signed out');
  }
  return response;
}

function time(text) {
  const d = new Date(text);
  return isNaN(d) ? String(text) : d.toLocaleTimeString();
}

// --- Readiness -------------------------------------------------------------
async function readiness() {
  const status = document.getElementById('readiness');
  try {
    const response = await fetch('/ready', { credentials: 'same-origin' });
    const body = await response.json();
    const failing = Object.entries(body.checks || {}).filter(([, ok]) => !ok).map(([name]) => name);
    status.textContent = body.ready ? 'Ready' : 'Not ready: ' + failing.join(', ');
    status.className = 'status ' + (body.ready ? 'ok' : 'bad');
  } catch (e) {
    status.textContent = 'Admin API unreachable';
    status.className = 'status bad';
  }
}

// --- Charts ----------------------------------------------------------------
const defenceClass = new Map();
function classFor(defence) {
  if (!defenceClass.has(defence)) defenceClass.set(defence, 'd' + (defenceClass.size % 8));
  return defenceClass.get(defence);
}

function rect(svg, x, y, w, h, className, title) {
  const r = document.createElementNS(SVG, 'rect');
  r.setAttribute('x', x.toFixed(2));
  r.setAttribute('y', y.toFixed(2));
  r.setAttribute('width', Math.max(w, 0.5).toFixed(2));
  r.setAttribute('height', Math.max(h, 0).toFixed(2));
  r.setAttribute('class', className);
  const t = document.createElementNS(SVG, 'title');
  t.textContent = title;
  r.appendChild(t);
  svg.appendChild(r);
}

function axis(svg, peak, unit) {
  const line = document.createElementNS(SVG, 'line');
  line.setAttribute('x1', '0'); line.setAttribute('x2', '600');
  line.setAttribute('y1', '159'); line.setAttribute('y2', '159');
  line.setAttribute('class', 'axis');
  svg.appendChild(line);
  const label = document.createElementNS(SVG, 'text');
  label.setAttribute('x', '4');
  label.setAttribute('y', '14');
  label.setAttribute('class', 'peak');
  label.textContent = 'peak ' + peak + ' ' + unit + '/min';
  svg.appendChild(label);
}

function drawCharts(stats) {
  const now = Math.floor(Date.now() / 60000) * 60;
  const slots = 60;
  const width = 600 / slots;
  const byMinute = new Map(stats.minutes.map(m => [m.at, m]));
  const requests = document.getElementById('requests-chart');
  const denials = document.getElementById('denials-chart');
  requests.replaceChildren();
  denials.replaceChildren();
  let maxRequests = 1;
  let maxDenials = 1;
  for (const m of stats.minutes) {
    maxRequests = Math.max(maxRequests, m.requests);
    maxDenials = Math.max(maxDenials, Object.values(m.denials).reduce((a, b) => a + b, 0));
  }
  axis(requests, maxRequests, 'requests');
  axis(denials, maxDenials, 'denials');
  const seen = new Set();
  for (let i = 0; i < slots; i++) {
    const at = now - (slots - 1 - i) * 60;
    const m = byMinute.get(at);
    if (!m) continue;
    const label = new Date(at * 1000).toLocaleTimeString();
    const h = (m.requests / maxRequests) * 150;
    rect(requests, i * width + 1, 159 - h, width - 2, h, 'bar', label + ': ' + m.requests + ' requests');
    let y = 159;
    for (const [defence, count] of Object.entries(m.denials).sort()) {
      seen.add(defence);
      const dh = (count / maxDenials) * 150;
      y -= dh;
      rect(denials, i * width + 1, y, width - 2, dh, classFor(defence), label + ': ' + count + ' ' + defence);
    }
  }
  const legend = document.getElementById('denials-legend');
  legend.replaceChildren();
  for (const defence of [...seen].sort()) {
    const li = el('li');
    li.appendChild(el('span', null, 'swatch ' + classFor(defence)));
    li.appendChild(document.createTextNode(defence));
    legend.appendChild(li);
  }
  if (seen.size === 0) legend.appendChild(el('li', 'No denials in the last hour'));
  fill('top-clients', stats.top_clients.map(c => row([c.client_ip, c.denials])), 'No client denied in the last hour');
}

async function refreshStats() {
  const response = await api('/stats');
  if (response.ok) drawCharts(await response.json());
}

// --- Bans ------------------------------------------------------------------
async function refreshBans() {
  const response = await api('/bans');
  if (!response.ok) return;
  const body = await response.json();
  fill('bans', body.bans.map(ban => {
    const button = el('button', 'Lift', 'secondary');
    button.type = 'button';
    button.setAttribute('aria-label', 'Lift the ban on ' + ban.target);
    button.addEventListener('click', () => lift(ban.target));
    return row([ban.target, ban.rule, time(ban.until), button]);
  }), 'No active ban');
}

async function lift(target) {
  const status = document.getElementById('bans-status');
  const response = await api('/bans/' + encodeURIComponent(target), { method: 'DELETE' });
  status.textContent = response.status === 204 ? 'Lifted the ban on ' + target + '.' : 'Could not lift the ban on ' + target + ' (' + response.status + ').';
  await refreshBans();
}

// --- Upstreams and audit -----------------------------------------------------
async function refreshUpstreams() {
  const response = await api('/upstreams');
  if (!response.ok) return;
  const body = await response.json();
  fill('upstreams', body.targets.map(t => row([
    t.upstream,
    t.target,
    el('span', t.healthy ? 'healthy' : 'failing (retry in ' + t.retry_in_seconds + ' s)', t.healthy ? 'healthy' : 'unhealthy'),
  ])), 'No upstream');
}

async function refreshAudit() {
  const status = document.getElementById('audit-status');
  const response = await api('/audit?limit=10');
  if (!response.ok) {
    status.textContent = 'The audit trail is unavailable (' + response.status + ').';
    return;
  }
  const body = await response.json();
  status.textContent = '';
  fill('audit', (body.entries || []).map(e => row([time(e.at), e.actor, e.action, e.target || '', e.outcome])), 'No audit entry');
}

// --- Live events -------------------------------------------------------------
let source = null;

function eventRow(e) {
  return row([time(e.time), e.client_ip, e.reason, e.action, e.status, e.route || '', e.path], e.action + ' fresh');
}

function addEvent(e) {
  const body = document.querySelector('#events tbody');
  const placeholder = body.querySelector('td.note');
  if (placeholder) body.replaceChildren();
  const previous = body.querySelector('tr.fresh');
  if (previous) previous.classList.remove('fresh');
  body.insertBefore(eventRow(e), body.firstChild);
  while (body.children.length > MAX_ROWS) body.removeChild(body.lastChild);
}

async function startStream() {
  if (source) source.close();
  const params = new URLSearchParams();
  for (const name of ['reason', 'client', 'route']) {
    const value = document.getElementById('f-' + name).value.trim();
    if (value) params.set(name, value);
  }
  const status = document.getElementById('stream-status');
  const page = await api('/events?limit=50&' + params.toString());
  if (!page.ok) {
    status.textContent = 'Filter refused (' + page.status + '): ' + ((await page.json()).message || '');
    return;
  }
  const recent = (await page.json()).events;
  fill('events', recent.map(e => eventRow(e)), 'No event yet');
  const after = recent.length ? recent[0].id : 0;
  params.set('after', String(after));
  source = new EventSource('/events?' + params.toString());
  source.onopen = () => { status.textContent = 'Live'; };
  source.onerror = () => { status.textContent = 'Reconnecting…'; };
  source.onmessage = message => addEvent(JSON.parse(message.data));
  source.addEventListener('lagged', message => {
    status.textContent = 'Live (' + message.data + ' events skipped: too many to show)';
  });
}

document.getElementById('event-filter').addEventListener('submit', event => {
  event.preventDefault();
  startStream();
});

document.getElementById('logout').addEventListener('submit', async event => {
  event.preventDefault();
  await api('/logout', { method: 'POST' });
  window.location.assign('/');
});

async function refreshAll() {
  await Promise.allSettled([readiness(), refreshStats(), refreshBans(), refreshUpstreams(), refreshAudit()]);
}

refreshAll();
startStream();
setInterval(refreshAll, 5000);
