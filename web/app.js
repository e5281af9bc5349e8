// The Collective Memory web app: plain ES modules, no framework, served by cmem itself at `/`.
// It reaches the server through the client library (`/client/index.js`), so it stays live
// behind the same proxies and network changes as any client: one connection, every event once.
//
// Pages are functions of the hash route (`#/search`, `#/activity`, `#/connection`); each
// renders into <main> and returns a cleanup. Everything a page shows from the server is put in
// the DOM as text, never as HTML (search snippets are split on their <b> marks).
import { connect } from '/client/index.js';

const TOKEN_KEY = 'cmem-token';
const FEED_MAX = 10000;

const app = {
  token: localStorage.getItem(TOKEN_KEY),
  client: null,
  feed: [],
  feedListeners: new Set(),
  stateListeners: new Set(),
  cleanup: null,
};

// ---------------------------------------------------------------------------------------------
// helpers

/** Creates an element: `h('a', {href: '#'}, 'text', child)`; strings become text nodes. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    // through the CSSOM: the page's policy forbids inline style attributes
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = {};
  if (app.token) headers.authorization = `Bearer ${app.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  let json = null;
  try { json = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) throw new ApiError(res.status, json?.error || `HTTP ${res.status}`);
  return json?.data ?? json;
}

function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

function time(ts) {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString();
}

/** Tantivy snippets are escaped text with <b> around matches: rebuilt as nodes, never parsed as HTML. */
function snippet(html) {
  // every entity tantivy's escaping emits (`&#x27;` for an apostrophe among them), in one pass
  // so `&amp;lt;` stays the text `&lt;`
  const named = { lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' };
  const decode = (s) => s.replace(/&(#x[0-9a-f]+|#[0-9]+|lt|gt|quot|apos|amp);/gi, (whole, e) => {
    if (e[0] !== '#') return named[e.toLowerCase()] ?? whole;
    const code = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
    return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
  });
  const out = [];
  let bold = false;
  for (const part of String(html).split(/(<b>|<\/b>)/)) {
    if (part === '<b>') bold = true;
    else if (part === '</b>') bold = false;
    else if (part) out.push(bold ? h('mark', {}, decode(part)) : decode(part));
  }
  return out;
}

/** One line saying what an event is about. */
function summary(e) {
  const d = e.data || {};
  switch (e.type) {
    case 'file_changed': return `${d.kind ?? 'changed'}: ${d.path ?? ''}`;
    case 'search_started': return d.query === null ? 'a search' : `“${d.query ?? ''}”`;
    case 'search_completed': {
      const n = d.results_count ?? 0;
      return `${d.query === null ? 'a search' : `“${d.query ?? ''}”`}: ${n} result${n === 1 ? '' : 's'} in ${Math.round((d.search_time_ms ?? 0) * 10) / 10} ms`;
    }
    case 'team_message': return `${d.user ?? '?'} in ${d.workspace ?? '?'}: ${d.text ?? ''}`;
    case 'team_notification': return `${d.workspace ?? '?'}: ${d.title ?? ''}${d.body ? ` — ${d.body}` : ''}`;
    case 'doc_created': return `${d.by ?? '?'} made the document ${d.doc ?? ''} in ${d.workspace ?? ''}`;
    case 'member_joined': case 'member_left': return `${d.user ?? '?'} ${e.type === 'member_joined' ? 'joined' : 'left'} ${d.workspace ?? ''}`;
    case 'indexing_started': return `${d.path || 'the data folder'}: ${d.total_files ?? '?'} files`;
    case 'indexing_progress': return `${d.phase === 'embedding' ? 'embedding: ' : ''}${d.processed_files ?? '?'} of ${d.total_files ?? '?'} files${d.current_file ? ` · ${d.current_file}` : ''}`;
    case 'indexing_completed': return `${d.indexed ?? 0} indexed, ${d.unchanged ?? 0} unchanged, ${d.removed ?? 0} removed, ${d.skipped ?? 0} skipped`;
    case 'system_status': return `cpu ${Math.round(d.cpu_usage ?? 0)}% · memory ${Math.round(d.memory_usage ?? 0)}% · ${d.connected_clients ?? '?'} clients`;
    case 'resync': return `resync: ${d.reason}`;
    default: {
      const s = JSON.stringify(d);
      return s.length > 160 ? `${s.slice(0, 160)}…` : s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// sign-in and the connection

/** The status of an authenticated request made with `token` (or none). */
async function probe(token) {
  const res = await fetch('/system/indexing', { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return res.status;
}

function signOut(message) {
  app.client?.close();
  app.client = null;
  app.token = null;
  localStorage.removeItem(TOKEN_KEY);
  document.getElementById('signout').hidden = true;
  document.getElementById('whoami').textContent = '';
  signInPage(message);
}

function signInPage(message) {
  app.cleanup?.();
  app.cleanup = null;
  const main = document.getElementById('main');
  const error = h('p', { class: 'error', role: 'alert', id: 'signin-error' }, message || '');
  const input = h('input', { id: 'token', type: 'password', name: 'token', autocomplete: 'current-password', required: true, 'aria-describedby': 'signin-help signin-error' });
  const form = h('form', {
    class: 'card signin',
    'aria-labelledby': 'signin-title',
    onsubmit: async (ev) => {
      ev.preventDefault();
      app.token = input.value.trim();
      try {
        await api('/system/indexing');
      } catch (e) {
        app.token = null;
        error.textContent = e.status === 401 ? `That token was not accepted: ${e.message}` : e.message;
        input.focus();
        return;
      }
      localStorage.setItem(TOKEN_KEY, app.token);
      startApp();
    },
  },
  h('h1', { id: 'signin-title' }, 'Sign in'),
  h('p', { id: 'signin-help', class: 'muted' }, 'Paste a token (cm_…). An admin makes one with ', h('code', {}, 'cmem token create <user>'), '.'),
  h('label', { for: 'token' }, 'Token'),
  input,
  h('button', { type: 'submit' }, 'Sign in'),
  error);
  main.replaceChildren(form);
  setConn('signed out');
  input.focus();
}

function setConn(text, tone = 'idle') {
  const el = document.getElementById('conn');
  el.textContent = text;
  el.dataset.tone = tone;
}

async function startApp() {
  document.getElementById('signout').hidden = !app.token;
  // the feed opens with the last 200 events, then goes live
  let from = null;
  try {
    const health = await api('/health');
    const head = health.journal.head;
    from = `${health.journal.epoch}:${Math.max(0, head - 200)}`;
  } catch { /* from now */ }
  try {
    app.me = await api('/api/me');
  } catch {
    app.me = { user: null, admin: false, workspaces: [], open: false };
  }
  document.getElementById('admin-link').hidden = !app.me.admin;
  document.getElementById('whoami').textContent = app.me.user
    ? `signed in as ${app.me.user}${app.me.admin ? ' (admin)' : ''}`
    : app.me.open ? 'open server (no users)' : '';
  // an open server has no memberships: the tab subscribes to every workspace there is, and to
  // those it opens later (kept for every reconnection)
  app.subscribed = new Set(app.me.open ? app.me.workspaces : []);
  const client = connect(location.origin, { token: app.token, from, workspaces: app.subscribed.size ? [...app.subscribed] : null });
  app.client = client;
  client.on('event', (e) => {
    app.feed.push(e);
    if (app.feed.length > FEED_MAX) app.feed.splice(0, app.feed.length - FEED_MAX);
    indexing(e);
    for (const fn of app.feedListeners) fn(e);
  });
  client.on('state', (s) => {
    const labels = { connecting: 'connecting', connected: 'live', reconnecting: 'reconnecting', offline: 'offline', closed: 'closed', failed: 'stopped' };
    const tone = s.state === 'connected' ? 'ok' : s.state === 'offline' || s.state === 'failed' ? 'bad' : 'warn';
    setConn(`${labels[s.state] ?? s.state} · ${s.transport ?? ''}`, tone);
    for (const fn of app.stateListeners) fn(s);
    // acted on by the server's code (its action), never by the words of its message
    const code = s.error?.code;
    const reauth = s.error?.action === 'reauthenticate' || code === 'unauthorized';
    if (app.token && reauth) {
      const why = s.error?.reason && s.error.reason !== 'token_invalid' ? s.error.reason.replaceAll('_', ' ') : 'the token is no longer valid';
      signOut(`You were signed out: ${why}.`);
    } else if (!app.token && reauth) {
      // a tab opened while the server was open: the first user ended that, so it asks at once
      signOut('This server now has users: sign in with a token.');
    }
  });
  route();
}

function indexing(e) {
  const box = document.getElementById('indexing');
  const bar = document.getElementById('indexing-bar');
  const text = document.getElementById('indexing-text');
  const d = e.data || {};
  if (e.type === 'indexing_started') { box.hidden = false; bar.removeAttribute('value'); text.textContent = 'starting…'; }
  if (e.type === 'indexing_progress') {
    const done = d.processed_files ?? 0;
    const total = d.total_files ?? 0;
    box.hidden = false;
    if (total) { bar.max = total; bar.value = done; }
    // the second phase: the vectors of meaning search (no `indexing_completed` of its own)
    const phase = d.phase === 'embedding' ? 'for meaning search: ' : '';
    text.textContent = total ? `${phase}${done} of ${total} files` : `${phase}${done} files`;
    if (phase && done >= total) box.hidden = true;
  }
  if (e.type === 'indexing_completed') box.hidden = true;
}

// ---------------------------------------------------------------------------------------------
// pages

function searchPage(main) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const q = h('input', { type: 'search', id: 'q', name: 'q', 'aria-label': 'Search', placeholder: 'Search the memory…', autocomplete: 'off', value: params.get('q') || '' });
  // suggestions as buttons (a `list` attribute would turn the searchbox into a combobox)
  const suggestions = h('div', { class: 'suggestions', role: 'group', 'aria-label': 'Suggestions' });
  const ext = h('input', { id: 'ext', name: 'extensions', placeholder: 'md, txt', size: 10 });
  const prefix = h('input', { id: 'prefix', name: 'path_prefix', placeholder: 'notes/', size: 14 });
  const meta = h('p', { class: 'meta', 'aria-live': 'polite' });
  const results = h('ol', { class: 'results', 'aria-label': 'Results' });
  const exportButton = h('button', { type: 'button', class: 'quiet', disabled: true, hidden: true }, 'Export as Markdown');
  const prev = h('button', { type: 'button', class: 'quiet', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', class: 'quiet', disabled: true }, 'Next →');
  const paging = h('nav', { class: 'paging', 'aria-label': 'Result pages', hidden: true }, prev, next);
  const LIMIT = 20;
  let offset = 0;
  let inflight = null;

  async function run() {
    const text = q.value.trim();
    history.replaceState(null, '', text ? `#/search?q=${encodeURIComponent(text)}` : '#/search');
    inflight?.abort();
    if (!text) { results.replaceChildren(); meta.textContent = ''; exportButton.hidden = paging.hidden = true; return; }
    inflight = new AbortController();
    // searched as the keys come: the last word also counts as the start of a word, until a
    // space says it is whole
    const typing = !/\s$/.test(q.value);
    const p = new URLSearchParams({ q: text, limit: String(LIMIT), offset: String(offset), typing: String(typing) });
    if (ext.value.trim()) p.set('extensions', ext.value.replace(/\s+/g, ''));
    if (prefix.value.trim()) p.set('path_prefix', prefix.value.trim());
    try {
      const r = await api(`/api/search?${p}`, { signal: inflight.signal });
      meta.textContent = `${r.total} result${r.total === 1 ? '' : 's'} · ${Math.round(r.search_time_ms ?? 0)} ms${r.mode && r.mode !== 'keyword' ? ` · words and meaning` : ''}${r.note ? ` · ${r.note}` : ''}`;
      results.replaceChildren(...r.results.map((x) => h('li', { class: 'result' },
        h('h2', {}, h('a', { href: `#/doc?path=${encodeURIComponent(x.path)}&q=${encodeURIComponent(text)}${x.passage ? `&line=${x.passage.start_line}` : ''}` }, x.title || x.filename)),
        h('div', { class: 'path' }, x.path, x.passage ? h('span', { class: 'passage' }, ` · ${x.passage.heading ? `§ ${x.passage.heading}, ` : ''}lines ${x.passage.start_line}–${x.passage.end_line}`) : null,
          // found by its meaning, not its words: said, since no word is marked
          x.signals && !x.signals.includes('keyword') ? h('span', { class: 'signal', title: 'found by meaning: it shares no searched word' }, ' · by meaning') : null),
        h('p', { class: 'snippet' }, snippet(x.snippet || '')))));
      // Export and paging only when there is something to export or page through
      exportButton.hidden = r.total === 0;
      exportButton.disabled = r.total === 0;
      paging.hidden = r.total <= LIMIT;
      prev.disabled = offset === 0;
      next.disabled = offset + LIMIT >= r.total;
      if (r.total === 0) results.replaceChildren(await noResults(text, p));
    } catch (e) {
      if (e.name === 'AbortError') return;
      meta.textContent = e.message;
      results.replaceChildren();
    }
  }
  /** Why nothing was found, and words to try: the last word's completions in the index. */
  async function noResults(text, params) {
    const words = text.split(/\s+/);
    const filters = [params.get('extensions') && `only ${params.get('extensions')} files`, params.get('path_prefix') && `under ${params.get('path_prefix')}`].filter(Boolean);
    const why = h('p', {}, `No indexed document contains ${words.length > 1 ? 'every word of ' : ''}“${text}”${filters.length ? ` (${filters.join(', ')})` : ''}.`);
    const last = words.at(-1);
    let items = [];
    try {
      const s = await api(`/search/suggestions?q=${encodeURIComponent(last)}&limit=8`);
      items = (s.suggestions || s || []).map((x) => (typeof x === 'string' ? x : x.term)).filter((t) => t !== last);
    } catch { /* suggestions are a nicety */ }
    const head = words.slice(0, -1).join(' ');
    const tryThese = items.length
      ? h('p', {}, `Words in the index that start with “${last}”: `, ...items.slice(0, 8).map((t) => h('button', {
        type: 'button',
        class: 'chip',
        onclick: () => { q.value = head ? `${head} ${t}` : t; offset = 0; run(); q.focus(); },
      }, t)))
      : h('p', {}, words.length > 1 ? 'Try fewer words, or other words for the same thing.' : 'Try another word, or fewer letters.');
    return h('li', { class: 'empty', role: 'status' }, why, tryThese);
  }
  const later = debounce(() => { offset = 0; run(); }, 200);
  const suggest = debounce(async () => {
    const word = q.value.trim().split(/\s+/).pop();
    if (!word || word.length < 2) return;
    try {
      const s = await api(`/search/suggestions?q=${encodeURIComponent(word)}&limit=8`);
      const items = (s.suggestions || s || []).map((x) => (typeof x === 'string' ? x : x.term)).filter((t) => t !== word);
      const head = q.value.trim().split(/\s+/).slice(0, -1).join(' ');
      suggestions.replaceChildren(...items.slice(0, 6).map((t) => h('button', {
        type: 'button',
        class: 'chip',
        onclick: () => { q.value = head ? `${head} ${t}` : t; suggestions.replaceChildren(); offset = 0; run(); q.focus(); },
      }, t)));
    } catch { /* suggestions are a nicety */ }
  }, 150);
  q.addEventListener('input', () => { later(); suggest(); });
  ext.addEventListener('input', later);
  prefix.addEventListener('input', later);
  exportButton.addEventListener('click', async () => {
    const body = { query: q.value.trim(), format: 'markdown', limit: 200 };
    if (ext.value.trim()) body.extensions = ext.value.split(',').map((x) => x.trim()).filter(Boolean);
    if (prefix.value.trim()) body.path_prefix = prefix.value.trim();
    const res = await fetch('/search/export', { method: 'POST', headers: { 'content-type': 'application/json', ...(app.token ? { authorization: `Bearer ${app.token}` } : {}) }, body: JSON.stringify(body) });
    if (!res.ok) { meta.textContent = `Export failed: HTTP ${res.status}`; return; }
    const url = URL.createObjectURL(await res.blob());
    const a = h('a', { href: url, download: 'search-results.md' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  prev.addEventListener('click', () => { offset = Math.max(0, offset - LIMIT); run(); });
  next.addEventListener('click', () => { offset += LIMIT; run(); });

  main.replaceChildren(
    h('form', { role: 'search', class: 'search', onsubmit: (e) => { e.preventDefault(); offset = 0; run(); } },
      q, suggestions,
      h('div', { class: 'filters' },
        h('label', { for: 'ext' }, 'Extensions'), ext,
        h('label', { for: 'prefix' }, 'Path prefix'), prefix)),
    h('div', { class: 'metarow' }, meta, exportButton), results, paging);
  q.focus();
  if (q.value) run();
  return () => inflight?.abort();
}

function activityPage(main) {
  const ROW = 30;
  let paused = false;
  let shown = [];
  const typeSel = h('select', { id: 'type' }, h('option', { value: '' }, 'All types'));
  const wsInput = h('input', { id: 'ws', placeholder: 'any', size: 10 });
  const pause = h('button', { type: 'button', 'aria-pressed': 'false' }, 'Pause');
  const count = h('span', { class: 'muted', 'aria-live': 'off' });
  const spacer = h('div', { class: 'spacer' });
  const viewport = h('div', { class: 'viewport', tabindex: '0', 'aria-label': 'Events, newest first' }, spacer);
  const types = new Set();

  function matches(e) {
    if (typeSel.value && e.type !== typeSel.value) return false;
    const ws = wsInput.value.trim();
    if (ws && e.scope !== `workspace:${ws}`) return false;
    return true;
  }
  function refreshTypes() {
    let added = false;
    for (const e of app.feed) if (!types.has(e.type)) { types.add(e.type); added = true; }
    if (!added) return;
    const current = typeSel.value;
    typeSel.replaceChildren(h('option', { value: '' }, 'All types'), ...[...types].sort().map((t) => h('option', { value: t }, t)));
    typeSel.value = current;
  }
  function filter() {
    shown = app.feed.filter(matches).reverse();
    spacer.style.height = `${shown.length * ROW}px`;
    count.textContent = `${shown.length} of ${app.feed.length} events${paused ? ' · paused' : ''}`;
    draw();
  }
  // only the rows in view exist in the DOM: 10,000 entries cost what 30 do
  function draw() {
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW) - 5);
    const last = Math.min(shown.length, first + Math.ceil(viewport.clientHeight / ROW) + 10);
    const rows = [];
    for (let i = first; i < last; i++) {
      const e = shown[i];
      rows.push(h('div', { class: 'row', style: `top:${i * ROW}px`, role: 'listitem' },
        h('span', { class: 'when' }, time(e.ts)),
        h('span', { class: `type t-${e.type.split('_')[0]}` }, e.type),
        h('span', { class: 'scope' }, e.scope),
        h('span', { class: 'what' }, summary(e))));
    }
    const list = h('div', { role: 'list', class: 'rows' }, rows);
    spacer.replaceChildren(list);
  }
  let frame = 0;
  const onEvent = () => {
    if (paused || frame) return;
    frame = requestAnimationFrame(() => { frame = 0; refreshTypes(); filter(); });
  };
  app.feedListeners.add(onEvent);
  viewport.addEventListener('scroll', () => requestAnimationFrame(draw));
  typeSel.addEventListener('change', filter);
  wsInput.addEventListener('input', filter);
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.setAttribute('aria-pressed', String(paused));
    pause.textContent = paused ? 'Resume' : 'Pause';
    refreshTypes();
    filter();
  });
  main.replaceChildren(h('section', { class: 'activity', 'aria-label': 'Activity' },
    h('div', { class: 'toolbar' },
      h('label', { for: 'type' }, 'Type'), typeSel,
      h('label', { for: 'ws' }, 'Workspace'), wsInput,
      pause, count),
    viewport));
  refreshTypes();
  filter();
  return () => { app.feedListeners.delete(onEvent); cancelAnimationFrame(frame); };
}

function connectionPage(main) {
  const facts = h('dl', { class: 'facts' });
  const rows = h('tbody');
  function render() {
    const c = app.client;
    if (!c) return;
    const cur = c.cursor;
    facts.replaceChildren(
      h('dt', {}, 'State'), h('dd', {}, c.state),
      h('dt', {}, 'Transport'), h('dd', {}, c.transport),
      h('dt', {}, 'Cursor'), h('dd', { class: 'mono' }, cur ? `${cur.epoch}:${cur.id}` : '—'),
      h('dt', {}, 'Events received'), h('dd', {}, String(app.feed.length)));
    rows.replaceChildren(...[...c.history].reverse().map((s) => h('tr', {},
      h('td', {}, new Date(s.at).toLocaleTimeString()),
      h('td', {}, s.state),
      h('td', {}, s.transport ?? ''),
      h('td', {}, s.delay_ms ? `${s.delay_ms} ms` : ''),
      h('td', {}, s.upgraded_from ? `moved up from ${s.upgraded_from}` : s.error ? `${s.error.transport}: ${s.error.message}` : ''))));
  }
  app.stateListeners.add(render);
  const server = h('div', { class: 'admin' });
  main.replaceChildren(h('section', { class: 'card', 'aria-labelledby': 'conn-title' },
    h('h1', { id: 'conn-title' }, 'This tab’s connection'),
    facts,
    h('h2', {}, 'Fallback and reconnect history'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'State'), h('th', {}, 'Transport'), h('th', {}, 'Delay'), h('th', {}, 'Why'))), rows)),
  server);
  render();
  // admins also see the server's side: every connection, and the transport errors it logged
  async function serverSide() {
    let st; let er;
    try { [st, er] = await Promise.all([api('/api/websocket/status'), api('/api/websocket/errors')]); } catch (e) { server.replaceChildren(h('p', { class: 'error' }, e.message)); return; }
    server.replaceChildren(
      h('section', { class: 'card' }, h('table', {}, h('caption', {}, `Server connections (${st.connections.total})`),
        h('thead', {}, h('tr', {}, h('th', {}, 'Id'), h('th', {}, 'Transport'), h('th', {}, 'User'), h('th', {}, 'Since'), h('th', {}, 'Cursor'), h('th', {}, 'From'))),
        h('tbody', {}, st.connections.clients.map((c) => h('tr', {},
          h('td', { class: 'mono' }, c.id), h('td', {}, c.transport), h('td', {}, c.user ?? '—'),
          h('td', {}, new Date(c.connected_at).toLocaleTimeString()), h('td', {}, String(c.cursor)), h('td', { class: 'mono' }, c.remote_addr)))))),
      h('section', { class: 'card' }, h('table', {}, h('caption', {}, `Transport errors (${er.count}; ${er.total_since_start} since start)`),
        h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Transport'), h('th', {}, 'Class'), h('th', {}, 'Cause'), h('th', {}, 'Fix'))),
        h('tbody', {}, er.errors.length ? [...er.errors].reverse().slice(0, 100).map((e) => h('tr', {},
          h('td', {}, new Date(e.ts).toLocaleTimeString()), h('td', {}, e.transport), h('td', {}, e.class),
          h('td', {}, e.cause ?? e.message), h('td', {}, e.fix ?? '—'))) : [h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'none'))]))));
  }
  let timer = null;
  if (app.me?.admin) { serverSide(); timer = setInterval(serverSide, 5000); }
  return () => { app.stateListeners.delete(render); clearInterval(timer); };
}


/**
 * The workspace a page shows (from the route, else the last one used, else the first) and a
 * control to change it; null (with a message in `main`) when the user has none.
 */
function workspaceChoice(main, title, page) {
  const me = app.me || { workspaces: [] };
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const workspaces = me.workspaces || [];
  let ws = params.get('ws') || localStorage.getItem('cmem-workspace') || workspaces[0] || (me.open ? 'general' : '');
  if (!me.open && !workspaces.includes(ws)) ws = workspaces[0] || '';
  if (!ws) {
    main.replaceChildren(h('section', { class: 'card' }, h('h1', {}, title),
      h('p', {}, 'You are in no workspace yet. An admin adds you with ', h('code', {}, 'cmem workspace add-member <workspace> <user>'), '.')));
    return null;
  }
  localStorage.setItem('cmem-workspace', ws);
  const picker = me.open
    ? h('input', { id: 'workspace', value: ws, size: 14 })
    : h('select', { id: 'workspace' }, workspaces.map((w) => h('option', { value: w, selected: w === ws }, w)));
  picker.addEventListener('change', () => { location.hash = `#/${page}?ws=${encodeURIComponent(picker.value.trim())}`; });
  // on an open server the tab may not be subscribed to this workspace yet
  if (me.open && !app.subscribed.has(ws)) {
    app.subscribed.add(ws);
    app.client.setWorkspaces([...app.subscribed]);
    app.client.send('join_workspace', { workspace: ws }).catch(() => {});
  }
  return { ws, picker, params, me };
}

function teamPage(main) {
  const choice = workspaceChoice(main, 'Team', 'team');
  if (!choice) return null;
  const { ws, picker, me } = choice;
  const log = h('ol', { class: 'chat', 'aria-label': 'Messages', 'aria-live': 'polite' });
  const earlier = h('button', { type: 'button', class: 'quiet', hidden: true }, 'Load earlier messages');
  const text = h('input', { id: 'message', 'aria-label': 'Message', placeholder: `Message ${ws}`, autocomplete: 'off', maxlength: 4000 });
  const online = h('ul', { class: 'people', 'aria-label': 'Online' });
  const notes = h('ol', { class: 'notes', 'aria-label': 'Notifications' });
  const shown = new Map(); // message id or client_msg_id → row
  let before = null;

  function row(m, status) {
    const mine = m.user === me.user || (me.open && !m.user);
    const el = h('li', { class: `msg${mine ? ' mine' : ''}` },
      h('div', { class: 'who' }, m.user || 'local', h('span', { class: 'muted' }, ` · ${time(m.ts)}`)),
      h('div', { class: 'text' }, m.text),
      h('div', { class: 'status', 'data-status': status || 'sent' }, status || ''));
    return el;
  }
  function add(m, { atTop = false, status = '' } = {}) {
    const key = m.client_msg_id || `id:${m.id}`;
    const existing = shown.get(key) || shown.get(`id:${m.id}`);
    if (existing) {
      // the server's copy of a message sent from here: it is sent
      const st = existing.querySelector('.status');
      st.dataset.status = 'sent';
      st.textContent = 'sent';
      if (m.id) shown.set(`id:${m.id}`, existing);
      return existing;
    }
    const el = row(m, status);
    shown.set(key, el);
    if (m.id) shown.set(`id:${m.id}`, el);
    if (atTop) log.prepend(el); else log.append(el);
    if (!atTop) el.scrollIntoView?.({ block: 'nearest' });
    return el;
  }
  async function load() {
    try {
      const q = new URLSearchParams({ limit: '50' });
      if (before) q.set('before', String(before));
      const page = await api(`/api/workspaces/${encodeURIComponent(ws)}/messages?${q}`);
      for (const m of page.messages) add(m, { atTop: true });
      before = page.next_before;
      earlier.hidden = !before;
    } catch (e) {
      log.prepend(h('li', { class: 'error' }, e.message));
    }
  }
  async function presence() {
    try {
      const p = await api(`/api/workspaces/${encodeURIComponent(ws)}/presence`);
      const people = (p.online || []).map((o) => o.user ?? o.name ?? o);
      online.replaceChildren(...(people.length ? people.map((u) => h('li', {}, h('span', { class: 'dot', 'aria-hidden': 'true' }, '●'), ` ${u}`)) : [h('li', { class: 'muted' }, me.open ? 'presence needs users' : 'nobody')]));
    } catch { /* the list stays as it was */ }
  }
  async function send(m) {
    const el = add(m, { status: 'sending' });
    const st = el.querySelector('.status');
    st.dataset.status = 'sending';
    st.textContent = 'sending…';
    try {
      const ack = await app.client.send('team_message', { workspace: ws, text: m.text, client_msg_id: m.client_msg_id });
      if (ack.message?.id) shown.set(`id:${ack.message.id}`, el);
      st.dataset.status = 'sent';
      st.textContent = 'sent';
    } catch (e) {
      st.dataset.status = 'failed';
      st.replaceChildren(`failed: ${e.message} `, h('button', { type: 'button', class: 'quiet', onclick: () => send(m) }, 'Retry'));
    }
  }
  const onEvent = (e) => {
    if (e.scope !== `workspace:${ws}`) return;
    if (e.type === 'team_message') add(e.data);
    if (e.type === 'member_joined' || e.type === 'member_left') presence();
    if (e.type === 'team_notification') {
      const d = e.data;
      notes.prepend(h('li', { class: `note ${d.level || 'info'}` }, h('strong', {}, d.title), d.body ? ` — ${d.body}` : '', h('span', { class: 'muted' }, ` · ${time(e.ts)}`)));
      toast(`${d.title}${d.body ? ` — ${d.body}` : ''}`, d.level);
    }
  };
  app.feedListeners.add(onEvent);
  earlier.addEventListener('click', load);
  const form = h('form', {
    class: 'composer',
    onsubmit: (ev) => {
      ev.preventDefault();
      const t = text.value.trim();
      if (!t) return;
      text.value = '';
      send({ workspace: ws, text: t, user: me.user, ts: new Date().toISOString(), client_msg_id: `web-${crypto.randomUUID()}` });
    },
  }, text, h('button', { type: 'submit' }, 'Send'));
  const notify = h('form', {
    class: 'notify',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const title = ev.target.elements.title.value.trim();
      if (!title) return;
      try {
        await app.client.send('team_notification', { workspace: ws, title, level: ev.target.elements.level.value });
        ev.target.reset();
      } catch (e) { toast(e.message, 'error'); }
    },
  }, h('label', { for: 'note-title' }, 'Notify the workspace'),
  h('input', { id: 'note-title', name: 'title', placeholder: 'Title' }),
  h('select', { name: 'level', 'aria-label': 'Level' }, ['info', 'success', 'warning', 'error'].map((l) => h('option', { value: l }, l))),
  h('button', { type: 'submit', class: 'quiet' }, 'Notify'));
  main.replaceChildren(h('div', { class: 'team' },
    h('section', { class: 'card room', 'aria-labelledby': 'team-title' },
      h('div', { class: 'roomhead' }, h('h1', { id: 'team-title' }, 'Team'), h('label', { for: 'workspace' }, 'Workspace'), picker),
      earlier, log, form),
    h('aside', { class: 'side' },
      h('section', { class: 'card', 'aria-labelledby': 'online-title' }, h('h2', { id: 'online-title' }, 'Online'), online),
      h('section', { class: 'card', 'aria-labelledby': 'notes-title' }, h('h2', { id: 'notes-title' }, 'Notifications'), notify, notes))));
  load();
  presence();
  return () => app.feedListeners.delete(onEvent);
}

/** A short-lived message in the corner (notifications, errors). */
function toast(message, level = 'info') {
  let box = document.getElementById('toasts');
  if (!box) {
    box = h('div', { id: 'toasts', class: 'toasts', role: 'status', 'aria-label': 'Notifications', 'aria-live': 'polite' });
    document.body.append(box);
  }
  const t = h('div', { class: `toast ${level}` }, message);
  box.append(t);
  setTimeout(() => t.remove(), 6000);
}

function adminPage(main) {
  if (!app.me?.admin) {
    main.replaceChildren(h('section', { class: 'card' }, h('h1', {}, 'Admin'), h('p', {}, 'Only admins manage the team.')));
    return null;
  }
  const out = h('div', { class: 'admin' });
  const flash = h('div', { class: 'flash', role: 'status', 'aria-live': 'polite' });
  const fail = (e) => { flash.replaceChildren(h('span', { class: 'error' }, e.message)); };

  function secretBox(t) {
    const field = h('input', { id: 'new-secret', readonly: true, value: t.token, class: 'mono', size: 40, 'aria-label': `New token for ${t.user}` });
    return h('div', { class: 'secret' },
      h('p', {}, h('strong', {}, `Token for ${t.user}`), ' — copy it now; it is not shown again.'),
      field,
      h('button', { type: 'button', onclick: async () => {
        try { await navigator.clipboard.writeText(t.token); flash.textContent = 'Copied.'; } catch { field.select(); flash.textContent = 'Select and copy it (the clipboard is not available here).'; }
      } }, 'Copy'));
  }

  async function render() {
    let users; let tokens; let workspaces; let config;
    try {
      [users, tokens, workspaces, config] = await Promise.all([api('/api/admin/users'), api('/api/admin/tokens'), api('/api/admin/workspaces'), api('/config')]);
    } catch (e) { return fail(e); }
    const userForm = h('form', { class: 'inline', onsubmit: async (ev) => {
      ev.preventDefault();
      const f = ev.target.elements;
      try {
        const r = await api('/api/admin/users', { method: 'POST', body: { name: f.name.value.trim(), admin: f.admin.checked, create_token: true } });
        flash.replaceChildren(secretBox({ ...r.token, user: r.user.name }));
        render();
      } catch (e) { fail(e); }
    } },
    h('label', { for: 'new-user' }, 'New user'), h('input', { id: 'new-user', name: 'name', required: true, size: 12 }),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'admin' }), ' admin'),
    h('button', { type: 'submit' }, 'Add user and token'));
    const usersTable = h('table', {}, h('caption', {}, 'Users'),
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Role'), h('th', {}, 'Workspaces'), h('th', {}, 'Actions'))),
      h('tbody', {}, users.map((u) => h('tr', {},
        h('td', {}, u.name), h('td', {}, u.admin ? 'admin' : 'member'), h('td', {}, (u.workspaces || []).join(', ')),
        h('td', {},
          h('button', { type: 'button', class: 'quiet', onclick: async () => {
            try { const t = await api(`/api/admin/users/${encodeURIComponent(u.name)}/tokens`, { method: 'POST', body: {} }); flash.replaceChildren(secretBox(t)); render(); } catch (e) { fail(e); }
          } }, `New token for ${u.name}`),
          u.name === app.me.user ? null : h('button', { type: 'button', class: 'quiet danger', onclick: async () => {
            if (!confirm(`Remove ${u.name}? Their connections close and their tokens stop working.`)) return;
            try { await api(`/api/admin/users/${encodeURIComponent(u.name)}`, { method: 'DELETE' }); render(); } catch (e) { fail(e); }
          } }, `Remove ${u.name}`))))));
    const tokensTable = h('table', {}, h('caption', {}, 'Tokens'),
      h('thead', {}, h('tr', {}, h('th', {}, 'Id'), h('th', {}, 'User'), h('th', {}, 'Created'), h('th', {}, 'Last used'), h('th', {}, 'State'))),
      h('tbody', {}, tokens.map((t) => h('tr', {},
        h('td', { class: 'mono' }, t.id), h('td', {}, t.user), h('td', {}, t.created_at), h('td', {}, t.last_used_at || '—'),
        h('td', {}, t.revoked_at ? `revoked ${t.revoked_at}` : h('button', { type: 'button', class: 'quiet danger', onclick: async () => {
          try { await api(`/api/admin/tokens/${encodeURIComponent(t.id)}/revoke`, { method: 'POST' }); render(); } catch (e) { fail(e); }
        } }, `Revoke ${t.id}`))))));
    const wsForm = h('form', { class: 'inline', onsubmit: async (ev) => {
      ev.preventDefault();
      try { await api('/api/admin/workspaces', { method: 'POST', body: { name: ev.target.elements.name.value.trim() } }); render(); } catch (e) { fail(e); }
    } }, h('label', { for: 'new-ws' }, 'New workspace'), h('input', { id: 'new-ws', name: 'name', required: true, size: 12 }), h('button', { type: 'submit' }, 'Create'));
    const wsTable = h('table', {}, h('caption', {}, 'Workspaces'),
      h('thead', {}, h('tr', {}, h('th', {}, 'Workspace'), h('th', {}, 'Members'), h('th', {}, 'Add a member'))),
      h('tbody', {}, workspaces.map((w) => h('tr', {},
        h('td', {}, w.name),
        h('td', {}, w.members.map((m) => h('span', { class: 'member' }, m, h('button', { type: 'button', class: 'x', 'aria-label': `Remove ${m} from ${w.name}`, onclick: async () => {
          try { await api(`/api/admin/workspaces/${encodeURIComponent(w.name)}/members/${encodeURIComponent(m)}`, { method: 'DELETE' }); render(); } catch (e) { fail(e); }
        } }, '×')))),
        h('td', {}, h('form', { class: 'inline', onsubmit: async (ev) => {
          ev.preventDefault();
          try { await api(`/api/admin/workspaces/${encodeURIComponent(w.name)}/members`, { method: 'POST', body: { user: ev.target.elements.user.value } }); render(); } catch (e) { fail(e); }
        } }, h('select', { name: 'user', 'aria-label': `User to add to ${w.name}` }, users.filter((u) => !w.members.includes(u.name)).map((u) => h('option', { value: u.name }, u.name))),
        h('button', { type: 'submit', class: 'quiet' }, 'Add')))))));
    const cfg = config.config || {};
    const cfgTable = h('table', {}, h('caption', {}, `Configuration (profile ${config.profile}; file ${config.config_file})`),
      h('thead', {}, h('tr', {}, h('th', {}, 'Key'), h('th', {}, 'Value'), h('th', {}, 'Source'))),
      h('tbody', {}, Object.keys(config.sources || {}).sort().map((k) => h('tr', {},
        h('td', { class: 'mono' }, k), h('td', { class: 'mono' }, JSON.stringify(cfg[k])), h('td', {}, config.sources[k])))));
    out.replaceChildren(
      h('section', { class: 'card' }, userForm, usersTable),
      h('section', { class: 'card' }, tokensTable),
      h('section', { class: 'card' }, wsForm, wsTable),
      h('section', { class: 'card' }, cfgTable));
  }
  main.replaceChildren(h('h1', { class: 'pagetitle' }, 'Admin'), flash, out);
  render();
  return null;
}

/** The words of a query worth marking in a document: no operators, fields or quotes. */
function queryWords(q) {
  return (q || '').split(/\s+/)
    .map((w) => w.replace(/^[-+]/, '').replace(/^\w+:/, '').replace(/["()*]/g, ''))
    .filter((w) => w.length > 1 && !['AND', 'OR', 'NOT'].includes(w));
}

function docPage(main) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const path = params.get('path') || '';
  const q = params.get('q') || '';
  const back = h('a', { href: q ? `#/search?q=${encodeURIComponent(q)}` : '#/search' }, '← Back to results');
  const head = h('div', { class: 'dochead' }, back);
  const body = h('pre', { class: 'doc', tabindex: '0', 'aria-label': `Contents of ${path}` }, 'Loading…');
  main.replaceChildren(h('article', { class: 'card reader', 'aria-labelledby': 'doc-title' }, head, h('h1', { id: 'doc-title', class: 'mono' }, path), body));
  (async () => {
    try {
      const d = await api(`/api/document?path=${encodeURIComponent(path)}`);
      head.append(h('span', { class: 'muted' }, ` · ${d.size} bytes · modified ${d.last_modified ? new Date(d.last_modified).toLocaleString() : '?'}`));
      const words = queryWords(q);
      const re = words.length ? new RegExp(`(${words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})`, 'gi') : null;
      // one element a line, so a passage's first line can be scrolled to
      const line = Number(params.get('line')) || 0;
      body.replaceChildren(...d.text.split('\n').map((text, i) => {
        const parts = re ? text.split(re) : [text];
        return h('span', { class: 'line', id: `L${i + 1}` }, ...parts.map((p, j) => (j % 2 ? h('mark', {}, p) : p)), '\n');
      }));
      const target = (line && body.querySelector(`#L${line}`)) || body.querySelector('mark');
      target?.scrollIntoView({ block: line ? 'start' : 'center' });
    } catch (e) {
      body.replaceChildren(h('span', { class: 'error', role: 'alert' }, e.message));
    }
  })();
  return null;
}

/** A small line chart of the last values, with its reading as its name. */
function sparkline(values, { max = null, label }) {
  const W = 240; const H = 48;
  if (values.length === 1) values = [values[0], values[0]];
  const top = max ?? Math.max(1, ...values);
  const pts = values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * W},${H - 2 - (Math.min(v, top) / top) * (H - 4)}`).join(' ');
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('class', 'spark');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', pts);
  svg.append(line);
  return svg;
}

function bytes(n) {
  if (n === null || n === undefined) return '?';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 && i ? 1 : 0)} ${u[i]}`;
}

function systemPage(main) {
  const KEEP = 60;
  const series = { cpu: [], mem: [], disk: [], conns: [], rate: [] };
  let last = null;
  let retention = null;
  const tiles = h('div', { class: 'tiles' });
  const facts = h('dl', { class: 'facts' });
  const push = (k, v) => { series[k].push(v); if (series[k].length > KEEP) series[k].shift(); };
  function tile(title, value, chart) {
    return h('section', { class: 'card tile', 'aria-label': title }, h('h2', {}, title), h('div', { class: 'big' }, value), chart);
  }
  async function sample() {
    let st;
    try { st = await api('/system/status'); } catch (e) { facts.replaceChildren(h('dt', {}, 'Error'), h('dd', { class: 'error' }, e.message)); return; }
    const now = Date.now();
    const head = st.journal?.head ?? 0;
    const rate = last ? Math.max(0, (head - last.head) / ((now - last.at) / 1000)) : 0;
    last = { head, at: now };
    push('cpu', st.cpu_usage ?? 0);
    push('mem', st.memory_usage ?? 0);
    push('disk', st.disk_usage ?? 0);
    push('conns', st.connected_clients ?? 0);
    push('rate', rate);
    const latencies = app.feed.filter((e) => e.type === 'search_completed').slice(-KEEP).map((e) => e.data.search_time_ms ?? 0);
    const byTransport = Object.entries(st.connections_by_transport || {}).filter(([, n]) => n > 0).map(([t, n]) => `${t} ${n}`).join(' · ') || 'none';
    const pct = (v) => `${Math.round(v ?? 0)}%`;
    tiles.replaceChildren(
      tile('CPU', pct(st.cpu_usage), sparkline(series.cpu, { max: 100, label: `CPU ${pct(st.cpu_usage)}` })),
      tile('Memory', `${pct(st.memory_usage)} · cmem ${bytes(st.process_memory_bytes)}`, sparkline(series.mem, { max: 100, label: `Memory ${pct(st.memory_usage)}` })),
      tile('Disk', `${pct(st.disk_usage)} · ${bytes(st.disk_available_bytes)} free`, sparkline(series.disk, { max: 100, label: `Disk ${pct(st.disk_usage)}` })),
      tile('Connections', `${st.connected_clients ?? 0} (${byTransport})`, sparkline(series.conns, { label: `${st.connected_clients ?? 0} connections` })),
      tile('Events/s', rate.toFixed(1), sparkline(series.rate, { label: `${rate.toFixed(1)} events per second` })),
      tile('Search latency', latencies.length ? `${Math.round(latencies.at(-1) * 10) / 10} ms` : 'no searches yet', sparkline(latencies.length ? latencies : [0], { label: latencies.length ? `last search ${latencies.at(-1)} ms` : 'no searches yet' })));
    const idx = st.indexing || {};
    facts.replaceChildren(
      h('dt', {}, 'Indexing'), h('dd', {}, idx.running ? `running (${idx.processed_files ?? '?'} of ${idx.total_files ?? '?'} files)` : `idle${idx.finished_at ? `, last run finished ${new Date(idx.finished_at).toLocaleString()}` : ''}`),
      h('dt', {}, 'Index'), h('dd', {}, `${st.index_docs ?? '?'} documents, ${bytes(st.index_bytes)}`),
      h('dt', {}, 'Journal'), h('dd', { class: 'mono' }, `epoch ${st.journal?.epoch ?? '?'} · head ${head} · oldest ${st.journal?.oldest ?? '?'}`),
      h('dt', {}, 'Retention'), h('dd', {}, retention ?? 'shown to admins'),
      h('dt', {}, 'Events published'), h('dd', {}, String(st.events_published ?? '?')),
      h('dt', {}, 'Uptime'), h('dd', {}, `${Math.floor((st.uptime_s ?? 0) / 3600)} h ${Math.floor(((st.uptime_s ?? 0) % 3600) / 60)} min`));
  }
  main.replaceChildren(h('h1', { class: 'pagetitle' }, 'System'), tiles, h('section', { class: 'card', 'aria-label': 'State' }, facts), assistantCard());
  if (app.me?.admin) {
    api('/config').then((c) => {
      const n = c.config.retention_max_events; const a = c.config.retention_max_age_s;
      retention = `${n ? `${n} events` : 'any number of events'}, ${a ? `${Math.round(a / 86400 * 10) / 10} days` : 'for ever'}`;
    }).catch(() => {});
  }
  sample();
  const timer = setInterval(sample, 2000);
  return () => clearInterval(timer);
}

/** How to give an AI assistant this memory: the MCP server at /mcp (README: AI assistants). */
function assistantCard() {
  const entry = { type: 'http', url: `${location.origin}/mcp` };
  if (!app.me?.open) entry.headers = { Authorization: 'Bearer <your token>' };
  const json = JSON.stringify({ mcpServers: { 'team-memory': entry } }, null, 2);
  return h('section', { class: 'card assistant', 'aria-labelledby': 'mcp-title' },
    h('h2', { id: 'mcp-title' }, 'Connect an AI assistant'),
    h('p', {}, 'This server is an MCP server: an assistant that reads an mcp.json (Claude, Cursor, VS Code) can search these documents, read them, follow what changed and post to your workspaces, as you. Add:'),
    h('pre', { class: 'mono', tabindex: '0', 'aria-label': 'mcp.json entry' }, json),
    h('p', { class: 'muted' }, app.me?.open
      ? 'For an assistant that starts a local process instead: cmem mcp --data <this folder>.'
      : 'Use a token of your own (an admin makes one with cmem token create). For an assistant that starts a local process: cmem mcp --data <the folder>, with CM_TOKEN set.'));
}

function documentsPage(main) {
  const choice = workspaceChoice(main, 'Documents', 'documents');
  if (!choice) return null;
  const { ws, picker, params } = choice;
  const name = params.get('doc');
  const list = h('ul', { class: 'doclist', 'aria-label': 'Documents' });
  const status = h('span', { class: 'muted', role: 'status', 'aria-label': 'Saving' });
  const editor = h('div', { class: 'editor' });
  const create = h('form', {
    class: 'inline',
    onsubmit: (ev) => {
      ev.preventDefault();
      const n = ev.target.elements.name.value.trim();
      if (n) location.hash = `#/documents?ws=${encodeURIComponent(ws)}&doc=${encodeURIComponent(n)}`;
    },
  }, h('label', { for: 'new-doc' }, 'New document'), h('input', { id: 'new-doc', name: 'name', size: 14, placeholder: 'plan', pattern: '[A-Za-z0-9._\\-]+', title: 'letters, digits, dot, dash and underscore' }), h('button', { type: 'submit', class: 'quiet' }, 'Open'));
  main.replaceChildren(h('div', { class: 'docs' },
    h('aside', { class: 'card' }, h('div', { class: 'roomhead' }, h('h1', {}, 'Documents'), h('label', { for: 'workspace' }, 'Workspace'), picker), list, create),
    h('section', { class: 'card', 'aria-label': name ? `Document ${name}` : 'No document open' },
      name ? h('div', { class: 'roomhead' }, h('h2', { class: 'mono' }, name), status) : h('p', { class: 'muted' }, 'Open a document, or make a new one: everyone in the workspace edits it together, live.'),
      editor)));
  const refresh = () => api(`/api/workspaces/${encodeURIComponent(ws)}/documents`).then((r) => {
    const names = r.documents.includes(name) || !name ? r.documents : [name, ...r.documents];
    list.replaceChildren(...(names.length ? names.map((d) => h('li', {}, h('a', {
      href: `#/documents?ws=${encodeURIComponent(ws)}&doc=${encodeURIComponent(d)}`,
      'aria-current': d === name ? 'page' : false,
    }, d))) : [h('li', { class: 'muted' }, 'none yet')]));
  }).catch((e) => list.replaceChildren(h('li', { class: 'error' }, e.message)));
  refresh();
  // a document another member makes appears at once
  const onEvent = (e) => { if (e.type === 'doc_created' && e.scope === `workspace:${ws}`) refresh(); };
  app.feedListeners.add(onEvent);
  if (!name) return () => app.feedListeners.delete(onEvent);
  let unmount = null;
  let gone = false;
  import('/app/docs.js').then((mod) => {
    if (gone) return;
    if (!mod.available) { editor.replaceChildren(h('p', { class: 'error', role: 'alert' }, mod.reason)); return; }
    unmount = mod.mount(editor, {
      client: app.client,
      workspace: ws,
      doc: name,
      onStatus: (text) => { status.textContent = text; },
    });
  }).catch((e) => editor.replaceChildren(h('p', { class: 'error', role: 'alert' }, `The editor could not be loaded: ${e.message}`)));
  return () => { gone = true; unmount?.(); app.feedListeners.delete(onEvent); };
}

const PAGES = { documents: documentsPage, system: systemPage, doc: docPage, search: searchPage, activity: activityPage, team: teamPage, connection: connectionPage, admin: adminPage };

function route() {
  if (!app.client) return;
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1] || 'search';
  const page = PAGES[name] || searchPage;
  for (const a of document.querySelectorAll('nav a[data-page]')) {
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  app.cleanup?.();
  const main = document.getElementById('main');
  app.cleanup = page(main) || null;
}

window.addEventListener('hashchange', route);
document.getElementById('signout').addEventListener('click', () => signOut('Signed out.'));

(async () => {
  try {
    // a saved token is tried first (a request without one would be a 401 on every load)
    if (app.token && (await probe(app.token)) !== 401) return startApp();
    // an open server (no users) answers without a token: nothing to ask
    if ((await probe(null)) !== 401) {
      app.token = null;
      localStorage.removeItem(TOKEN_KEY);
      return startApp();
    }
    if (!app.token) return signInPage();
    return signOut('Your saved token is no longer valid. Sign in again.');
  } catch (e) {
    document.getElementById('main').replaceChildren(h('p', { class: 'error', role: 'alert' }, `The server could not be reached: ${e.message}`));
  }
})();
