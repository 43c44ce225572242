// confsum's consumer page: verify the workload's attestation, then read
// only answers its attested key signed. Every check runs here, with
// WebCrypto; see "What this page checks" on the page.
'use strict';

const LEEWAY_S = 60;
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

// The attested signing key, only while the last verification passed.
let trusted = null;
// Bumped on every verification, so late answers of an older one are dropped.
let generation = 0;

const $ = (id) => document.getElementById(id);

function b64urlDecode(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]*$/.test(text)) {
    throw new Error('not base64url');
  }
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function b64urlEncode(bytes) {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

// JSON with sorted keys, to compare two parsed values.
function canonical(value) {
  if (Array.isArray(value)) return '[' + value.map(canonical).join(',') + ']';
  if (value && typeof value === 'object') {
    return '{' + Object.keys(value).sort()
      .map((k) => JSON.stringify(k) + ':' + canonical(value[k])).join(',') + '}';
  }
  return JSON.stringify(value);
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children) node.append(c);
  return node;
}

async function fetchJson(url) {
  const response = await fetch(url, { cache: 'no-store', credentials: 'omit' });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

// An RS256 JWT: header and claims, and whether one of the JWKS's keys signed it.
async function verifyToken(token, jwks) {
  const parts = token.trim().split('.');
  if (parts.length !== 3) throw new Error('the token is not a compact JWT');
  const header = JSON.parse(dec.decode(b64urlDecode(parts[0])));
  const claims = JSON.parse(dec.decode(b64urlDecode(parts[1])));
  if (header.alg !== 'RS256') return { header, claims, signed: false, why: `alg ${header.alg}, not RS256` };
  const candidates = (jwks.keys || []).filter((k) => k.kty === 'RSA' && (!header.kid || k.kid === header.kid));
  const input = enc.encode(parts[0] + '.' + parts[1]);
  const signature = b64urlDecode(parts[2]);
  for (const jwk of candidates) {
    try {
      const key = await crypto.subtle.importKey(
        'jwk', { kty: 'RSA', n: jwk.n, e: jwk.e, alg: 'RS256', ext: true },
        { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['verify']);
      if (await crypto.subtle.verify('RSASSA-PKCS1-v1_5', key, signature, input)) {
        return { header, claims, signed: true, why: `signed by key ${jwk.kid || '(no kid)'}` };
      }
    } catch (_) { /* not a usable key: try the next */ }
  }
  return {
    header, claims, signed: false,
    why: candidates.length ? 'no key of the issuer verifies the signature' : `the issuer has no RSA key with kid ${header.kid}`,
  };
}

// The first ES256 key with key_ops "verify" whose kid is its thumbprint.
async function signingKey(runtime) {
  for (const k of (runtime && Array.isArray(runtime.keys)) ? runtime.keys : []) {
    if (k.kty !== 'EC' || k.crv !== 'P-256' || !Array.isArray(k.key_ops) || !k.key_ops.includes('verify')) continue;
    const thumb = b64urlEncode(await sha256(enc.encode(
      `{"crv":"P-256","kty":"EC","x":"${k.x}","y":"${k.y}"}`)));
    if (k.kid !== undefined && k.kid !== thumb) continue;
    try {
      const key = await crypto.subtle.importKey(
        'jwk', { kty: 'EC', crv: 'P-256', x: k.x, y: k.y, ext: true },
        { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
      return { kid: thumb, key };
    } catch (_) { /* not a P-256 point */ }
  }
  return null;
}

// A flattened JWS from the workload: its payload, only if the attested key signed it.
async function openSigned(signed, verifier) {
  const header = JSON.parse(dec.decode(b64urlDecode(signed.protected)));
  if (header.alg !== 'ES256') throw new Error(`answer signed with ${header.alg}, not ES256`);
  if (header.kid !== verifier.kid) throw new Error(`answer signed by key ${header.kid}, not the attested key ${verifier.kid}`);
  const ok = await crypto.subtle.verify(
    { name: 'ECDSA', hash: 'SHA-256' }, verifier.key, b64urlDecode(signed.signature),
    enc.encode(signed.protected + '.' + signed.payload));
  if (!ok) throw new Error('the signature does not verify with the attested key');
  return JSON.parse(dec.decode(b64urlDecode(signed.payload)));
}

function setVerdict(kind, label, text) {
  const verdict = $('verdict');
  verdict.className = 'verdict ' + kind;
  verdict.textContent = label;
  $('verdict-text').textContent = text;
  $('status').className = 'card ' + kind;
}

function showFacts(facts) {
  const dl = $('facts');
  dl.replaceChildren();
  for (const [name, value, cls] of facts) {
    dl.append(el('dt', { textContent: name }), el('dd', { textContent: value, className: cls || '' }));
  }
}

function showChecks(checks) {
  const body = $('checks').querySelector('tbody');
  body.replaceChildren();
  for (const c of checks) {
    body.append(el('tr', { className: c.passed ? 'pass' : 'fail' },
      el('td', { textContent: c.passed ? '✓' : '✗' }),
      el('td', { textContent: c.name }),
      el('td', { textContent: c.expected }),
      el('td', { textContent: c.actual })));
  }
  $('checks').hidden = checks.length === 0;
}

function resetReading() {
  trusted = null;
  $('documents').hidden = true;
  $('documents').querySelector('tbody').replaceChildren();
  $('summarize').disabled = true;
  $('progress').hidden = true;
  $('summaries').replaceChildren();
  $('summaries-note').textContent = 'None yet.';
  $('documents-note').textContent = 'Verify the workload first.';
}

async function verify() {
  const mine = ++generation;
  resetReading();
  const pinned = $('host-data').value.trim().toLowerCase();
  const issuer = $('issuer').value.trim();
  const allowEmulated = $('allow-emulated').checked;
  const checks = [];
  const add = (name, passed, expected, actual) => { checks.push({ name, passed, expected, actual }); return passed; };
  setVerdict('pending', 'checking…', '');
  showChecks([]);
  showFacts([]);

  if (!/^[0-9a-f]{64}$/.test(pinned) || !issuer) {
    setVerdict('refused', 'REFUSED', 'Pin the host_data you expect (64 hex digits) and the attestation service you trust: without them nothing can be verified.');
    return;
  }
  let doc, jwks;
  try {
    doc = await fetchJson('/v1/attestation');
  } catch (e) {
    setVerdict('refused', 'REFUSED', `Cannot get this workload's attestation: ${e.message}`);
    return;
  }
  const certs = issuer.replace(/\/+$/, '') + '/certs';
  try {
    jwks = await fetchJson(certs);
  } catch (e) {
    setVerdict('refused', 'REFUSED', `Cannot fetch the attestation service's keys from ${certs}: ${e.message}`);
    return;
  }
  if (mine !== generation) return;

  let token;
  try {
    token = await verifyToken(doc.token, jwks);
  } catch (e) {
    add('token signature', false, `RS256, a key of ${certs}`, `unreadable token: ${e.message}`);
    token = null;
  }
  let ok = !!token && add('token signature', token.signed, `RS256, a key of ${certs}`, token.why);
  const claims = token ? token.claims : {};
  const now = Math.floor(Date.now() / 1000);
  if (ok) {
    ok = add('issuer', claims.iss === issuer, issuer, String(claims.iss)) && ok;
    const valid = typeof claims.exp === 'number' && now <= claims.exp + LEEWAY_S &&
      (typeof claims.nbf !== 'number' || claims.nbf <= now + LEEWAY_S);
    ok = add('validity', valid, 'now within nbf…exp',
      typeof claims.exp === 'number' ? `expires ${new Date(claims.exp * 1000).toISOString()}` : 'no exp') && ok;
    const hostData = String(claims['x-ms-sevsnpvm-hostdata'] || '').toLowerCase();
    ok = add('host_data', hostData === pinned, pinned, hostData || '(none)') && ok;
    const debuggable = claims['x-ms-sevsnpvm-is-debuggable'];
    ok = add('debug', debuggable === false, 'false', String(debuggable)) && ok;
    const vmpl = claims['x-ms-sevsnpvm-vmpl'];
    ok = add('vmpl', vmpl === 0, '0', String(vmpl)) && ok;
    const emulated = claims['x-confsum-insecure-emulated'] === true;
    ok = add('emulated', !emulated || allowEmulated,
      allowEmulated ? 'hardware or emulated (emulated allowed)' : 'hardware evidence',
      emulated ? 'INSECURE emulated evidence' : 'hardware evidence') && ok;

    // report_data commits to the runtime data shown, which is the token's.
    const reportData = String(claims['x-ms-sevsnpvm-reportdata'] || '').toLowerCase();
    const shown = String(doc.runtime_data || '').trim();
    const digest = hex(await sha256(enc.encode(shown)));
    let same = false;
    try { same = canonical(JSON.parse(shown)) === canonical(claims['x-ms-runtime']); } catch (_) { same = false; }
    const bound = reportData === digest + '0'.repeat(64) && same;
    ok = add('runtime binding', bound, 'report_data = SHA-256(runtime data) ‖ 32 zero bytes; runtime data = the token\'s',
      bound ? 'bound' : (same ? `report_data ${reportData.slice(0, 16)}… ≠ SHA-256 ${digest.slice(0, 16)}…` : 'the runtime data shown is not the token\'s')) && ok;

    const key = await signingKey(claims['x-ms-runtime']);
    ok = add('signing key', !!key, 'an ES256 key with key_ops ["verify"] in the token\'s runtime data',
      key ? `kid ${key.kid}` : 'none') && ok;
    if (mine !== generation) return;
    showFacts([
      ['host_data', hostData || '(none)', hostData === pinned ? 'good' : 'bad'],
      ['issuer', String(claims.iss), claims.iss === issuer ? 'good' : 'bad'],
      ['debug', String(debuggable), debuggable === false ? 'good' : 'bad'],
      ['evidence', emulated ? 'INSECURE emulated TEE' : 'SEV-SNP hardware', emulated ? 'warn' : 'good'],
      ['expires', typeof claims.exp === 'number' ? new Date(claims.exp * 1000).toISOString() : '(none)', valid ? '' : 'bad'],
      ['signing key', key ? key.kid : '(none)', key ? '' : 'bad'],
    ]);
    if (ok) trusted = key;
  }
  if (mine !== generation) return;
  showChecks(checks);
  if (!trusted) {
    const failed = checks.filter((c) => !c.passed).map((c) => `${c.name}: expected ${c.expected}, found ${c.actual}`);
    setVerdict('refused', 'REFUSED', 'This workload is not the one you pinned, so nothing it says is shown. ' + failed.join('; '));
    $('documents-note').textContent = 'Not shown: the workload is not verified.';
    $('summaries-note').textContent = 'Not shown: the workload is not verified.';
    return;
  }
  setVerdict(claims['x-confsum-insecure-emulated'] ? 'verified warn' : 'verified', 'verified',
    'The token is the pinned attestation service\'s, the workload runs the pinned policy without debug at VMPL 0, and its answers are signed by an attested key.' +
    (claims['x-confsum-insecure-emulated'] ? ' WARNING: the evidence is from the INSECURE emulated TEE and proves nothing about hardware.' : ''));
  await loadDocuments(mine);
}

async function loadDocuments(mine) {
  let list;
  try {
    list = await openSigned(await fetchJson('/v1/documents'), trusted);
  } catch (e) {
    if (mine !== generation) return;
    $('documents-note').textContent = `REFUSED the document list: ${e.message}`;
    $('documents-note').className = 'bad';
    return;
  }
  if (mine !== generation) return;
  const body = $('documents').querySelector('tbody');
  body.replaceChildren();
  for (const d of list.documents || []) {
    const box = el('input', { type: 'checkbox', value: d.id, checked: true });
    box.setAttribute('aria-label', d.id);
    body.append(el('tr', {}, el('td', {}, box), el('td', { textContent: d.id }),
      el('td', { textContent: `${Number(d.bytes).toLocaleString('en')} bytes` })));
  }
  $('documents').hidden = false;
  $('select-all').checked = true;
  $('documents-note').className = 'muted';
  $('documents-note').textContent = `${(list.documents || []).length} documents (signed list, verified). Their text never leaves the workload.`;
  $('summarize').disabled = (list.documents || []).length === 0;
}

// One request per document, sent together: the workload batches them, and
// the bar moves as each verified answer comes back.
async function summarize() {
  const mine = generation;
  const verifier = trusted;
  if (!verifier) return;
  const ids = Array.from($('documents').querySelectorAll('tbody input:checked'), (b) => b.value);
  if (ids.length === 0) return;
  $('summarize').disabled = true;
  $('summaries').replaceChildren();
  $('summaries-note').textContent = '';
  $('progress').hidden = false;
  const bar = $('progress-bar');
  bar.max = ids.length;
  bar.value = 0;
  let done = 0;
  const started = performance.now();
  const tick = () => { $('progress-text').textContent = `${done} of ${ids.length} summarized · ${((performance.now() - started) / 1000).toFixed(1)} s`; };
  tick();
  const timer = setInterval(tick, 200);
  const cards = new Map(ids.map((id) => {
    const card = el('article', { className: 'summary pending' },
      el('h3', { textContent: id }), el('p', { className: 'muted', textContent: 'summarizing…' }));
    $('summaries').append(card);
    return [id, card];
  }));
  await Promise.all(ids.map(async (id) => {
    const card = cards.get(id);
    const body = JSON.stringify({ documents: [id] });
    try {
      const want = hex(await sha256(enc.encode(body)));
      const response = await fetch('/v1/summaries', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body, credentials: 'omit',
      });
      const answer = await response.json();
      if (!response.ok) throw new Error((answer.error && answer.error.message) || `status ${response.status}`);
      const payload = await openSigned(answer, verifier);
      if (payload.request_sha256 !== want) throw new Error('the answer is for another request (request_sha256 differs)');
      if (mine !== generation) return;
      const parts = [el('h3', { textContent: id })];
      if (payload.note) parts.push(el('p', { className: 'note', textContent: `NOTE: ${payload.note}` }));
      for (const s of payload.summaries || []) parts.push(el('p', { className: 'text', textContent: s.summary }));
      parts.push(el('p', { className: 'proof',
        textContent: `✓ signature verified: ES256 by the attested key ${verifier.kid}; request_sha256 ${want.slice(0, 16)}… matches what this page sent; model ${payload.model}` }));
      card.replaceChildren(...parts);
      card.className = 'summary verified';
    } catch (e) {
      if (mine !== generation) return;
      card.replaceChildren(el('h3', { textContent: id }), el('p', { className: 'bad', textContent: `REFUSED: ${e.message}` }));
      card.className = 'summary refused';
    } finally {
      done += 1;
      bar.value = done;
    }
  }));
  clearInterval(timer);
  if (mine !== generation) return;
  tick();
  $('summarize').disabled = false;
  const verified = $('summaries').querySelectorAll('.summary.verified').length;
  $('summaries-note').textContent = `${verified} of ${ids.length} answers verified.`;
}

function init() {
  const params = new URLSearchParams(location.search);
  $('host-data').value = params.get('host_data') || '';
  $('issuer').value = params.get('issuer') || '';
  $('allow-emulated').checked = params.get('allow_emulated') === '1';
  $('verify').addEventListener('click', () => { verify().catch((e) => setVerdict('refused', 'REFUSED', `Verification failed: ${e.message}`)); });
  $('summarize').addEventListener('click', () => { summarize(); });
  $('select-all').addEventListener('change', (e) => {
    for (const box of $('documents').querySelectorAll('tbody input')) box.checked = e.target.checked;
  });
  // Editing what is pinned drops what the old pins verified.
  for (const id of ['host-data', 'issuer', 'allow-emulated']) {
    $(id).addEventListener('input', () => { generation += 1; resetReading(); setVerdict('pending', 'not checked yet', 'The pins changed: verify again.'); showChecks([]); showFacts([]); });
  }
  if ($('host-data').value && $('issuer').value) $('verify').click();
}

document.addEventListener('DOMContentLoaded', init);
