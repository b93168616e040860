// Browser scenarios of the claim page and the console, in Debian's chromium driven by
// playwright-core. Run by browser_test.go (so by `make test`), which starts a gateway
// and a settler and passes their addresses:
//   FG_PUBLIC, FG_ADMIN   base URLs of the gateway's listeners
//   FG_TOKEN              the admin token
//   FG_BL                 the business line to create (the settler's recovery is kept to it)
//   FG_SHOTS              a folder to write the screenshots to (optional)
// Prints one JSON line {"ok":true,...} for the Go test to check against Postgres; any
// failed expectation exits 1 with the reason.
'use strict';
const path = require('path');
const { chromium } = require('playwright-core');

const PUB = process.env.FG_PUBLIC, ADM = process.env.FG_ADMIN, TOKEN = process.env.FG_TOKEN;
const SHOTS = process.env.FG_SHOTS || '';
if (!PUB || !ADM || !TOKEN) { console.error('FG_PUBLIC, FG_ADMIN and FG_TOKEN are required'); process.exit(2); }

function fail(msg) { throw new Error(msg); }
function expect(cond, msg) { if (!cond) fail(msg); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rid = (p) => p + '-' + Math.random().toString(16).slice(2, 14);
function log(...a) { console.error('[browser]', ...a); }

async function admin(method, p, body) {
  const r = await fetch(ADM + p, { method, headers: { Authorization: 'Bearer ' + TOKEN, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined });
  const t = await r.text();
  if (!r.ok) fail(`${method} ${p}: ${r.status} ${t}`);
  return JSON.parse(t);
}

async function waitFor(what, ms, fn) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e.message; }
    await sleep(100);
  }
  fail(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

// The hostile theme: markup and script in every text field an admin or partner writes.
const HOSTILE_TITLE = '<img src=x onerror=window.__pwned=1></script><script>__pwned=2</script>';
const HOSTILE_RULES = '1. One per person.\n2. <b onmouseover=window.__pwned=3>bold?</b>\n3. </textarea><svg onload=window.__pwned=4>';

(async () => {
  const bl = process.env.FG_BL || rid('bl-h5');
  await admin('PUT', '/admin/v1/business-lines/' + bl, { budget: 1_000_000 });
  // A: the opening second. One voucher in stock: the first user gets it, the late one
  // is told it is sold out. Opens a few seconds from now, after the browser is up.
  // launch() gives the browser a fresh temporary --user-data-dir (playwright refuses one
  // in args), and each newContext() is a phone of its own: its own storage and cookies.
  const browser = await chromium.launch({
    executablePath: process.env.FG_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
  const phone = () => browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const result = { ok: false };
  try {
    const A = rid('cmp-h5');
    const startMs = Math.ceil((Date.now() + 9000) / 1000) * 1000;
    await admin('PUT', '/admin/v1/campaigns/' + A, {
      name: 'Opening second', business_line: bl, starts_at: new Date(startMs).toISOString(),
      ends_at: new Date(startMs + 3600e3).toISOString(), per_user_limit: 1, budget: 10000, voucher_ttl: '72h',
      skus: [{ sku: 'rp-50', stock: 1, value: 50 }],
    });
    // A hostile theme is stored as given (it is text) ...
    await admin('PUT', `/admin/v1/campaigns/${A}/page`, { title: HOSTILE_TITLE, rules_text: HOSTILE_RULES,
      colors: { primary: '#0a7d55', background: '#f3fbf7', text: '#10241b' } });
    // ... but a script URL or a CSS injection is refused, naming the field.
    for (const [body, field] of [[{ title: 't', banner_url: 'javascript:window.__pwned=5' }, 'banner_url'],
      [{ title: 't', colors: { primary: 'red;background:url(https://evil.example/x)' } }, 'colors.primary']]) {
      const r = await fetch(`${ADM}/admin/v1/campaigns/${A}/page`, { method: 'PUT',
        headers: { Authorization: 'Bearer ' + TOKEN }, body: JSON.stringify(body) });
      const j = await r.json();
      expect(r.status === 400 && (j.message || '').startsWith(field + ':'), `hostile ${field}: ${r.status} ${JSON.stringify(j)}`);
    }

    const userA = rid('u-first'), userB = rid('u-late');
    const page = await (await phone()).newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    // Chromium logs every 4xx/5xx answer ("Failed to load resource"); those are the
    // answers under test. Anything else the page logs as an error fails the test.
    page.on('console', (m) => { if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) errors.push(m.text()); });
    // The phone's clock is an hour fast: the countdown must follow the server's anyway.
    await page.addInitScript(() => {
      const real = Date.now.bind(Date);
      Date.now = () => real() + 3600e3;
    });
    const claims = [];
    page.on('request', (r) => { if (r.url().endsWith('/v1/claims') && r.method() === 'POST') claims.push({ body: JSON.parse(r.postData()) }); });
    page.on('response', async (r) => {
      if (r.url().endsWith('/v1/claims') && r.request().method() === 'POST') {
        const c = claims.find((x) => x.status === undefined);
        if (c) { c.status = r.status(); c.retryAfter = r.headers()['retry-after']; }
      }
    });
    await page.goto(`${PUB}/h5/${A}#user=${userA}`);
    // The fragment is read and taken out of the address bar (and so out of history).
    await waitFor('the fragment to be removed', 5000, async () => !page.url().includes('#'));
    expect(!page.url().includes(userA), 'the user id stayed in the URL: ' + page.url());

    // The hostile theme is shown as text: nothing ran, no element was made from it.
    await waitFor('the title', 5000, async () => (await page.textContent('#title')) === HOSTILE_TITLE);
    expect(await page.textContent('#rules') === HOSTILE_RULES, 'rules text not shown verbatim');
    expect(await page.evaluate(() => window.__pwned) === undefined, 'hostile theme ran script');
    expect(await page.evaluate(() => document.querySelectorAll('img:not(#banner), script:not([src]), svg, b').length) === 0,
      'hostile theme made elements');
    expect(await page.evaluate(() => getComputedStyle(document.body).backgroundColor) === 'rgb(243, 251, 247)', 'theme colour not applied');
    const csp = (await (await fetch(`${PUB}/h5/${A}`)).headers.get('content-security-policy')) || '';
    expect(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline'), 'CSP missing or weak: ' + csp);

    // It counts down on the server's clock (the phone is an hour fast).
    const c1 = await waitFor('the countdown', 5000, async () => {
      const t = await page.textContent('#countdown');
      return /^\d\d:\d\d$/.test(t) && t !== '00:00' ? t : null;
    });
    const secs = (t) => +t.split(':')[0] * 60 + +t.split(':')[1];
    const left = (startMs - Date.now()) / 1000;
    expect(Math.abs(secs(c1) - left) <= 1.5, `countdown shows ${c1}, the server says ${left.toFixed(1)} s to go`);
    expect(await page.isDisabled('#claim'), 'claim button enabled before the opening');
    await sleep(1100);
    const c2 = await page.textContent('#countdown');
    expect(secs(c2) < secs(c1), `countdown did not move: ${c1} then ${c2}`);

    // One tap at the opening second.
    await page.waitForSelector('#claim:not([disabled])', { timeout: startMs - Date.now() + 5000 });
    const enabledAt = Date.now();
    expect(enabledAt >= startMs - 300 && enabledAt < startMs + 1500, `button enabled ${enabledAt - startMs} ms from the opening`);
    await page.tap('#claim');
    // The gateway makes the claim but its answer is lost (FLASH_FAULT_CLAIM_503=1): the
    // page retries with the same request_id after Retry-After and gets the claim back.
    await waitFor('"Got it"', 15000, async () => /Got it/.test(await page.textContent('#status')));
    log('claim requests', JSON.stringify(claims));
    expect(claims.length >= 2, 'no retry after the 503: ' + JSON.stringify(claims));
    expect(claims[0].status === 503 && claims[0].retryAfter === '1', 'the first answer was not the 503: ' + JSON.stringify(claims[0]));
    expect(claims[claims.length - 1].status === 200, 'the last answer is not 200');
    expect(new Set(claims.map((c) => c.body.request_id)).size === 1, 'the retry used another request_id: ' + JSON.stringify(claims));
    expect(claims.every((c) => c.body.user_id === userA && c.body.campaign_id === A), 'claim body wrong');
    const claimedAt = Date.now();
    expect(claimedAt - startMs < 6000, `claimed ${claimedAt - startMs} ms after the opening`);

    // "My vouchers" shows it, with its state and expiry; it turns settled.
    const voucher = await waitFor('the voucher to settle', 20000, async () => {
      const v = await page.$$eval('#vouchers li', (ls) => ls.map((l) => ({ state: l.getAttribute('data-state'), text: l.textContent })));
      return v.length === 1 && v[0].state === 'settled' ? v[0] : null;
    });
    expect(/rp-50/.test(voucher.text) && /Expires/.test(voucher.text) && /Ready to use/.test(voucher.text), 'voucher row: ' + voucher.text);
    if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'h5-claim-page.png') });

    // A late user on another phone: sold out, said plainly.
    const late = await (await phone()).newPage();
    await late.goto(`${PUB}/h5/${A}#user=${userB}`);
    await late.waitForSelector('#claim:not([disabled])', { timeout: 10000 });
    await late.tap('#claim');
    await waitFor('"Sold out"', 10000, async () => (await late.textContent('#status')) === 'Sold out.');
    expect(await late.$$eval('#vouchers li', (l) => l.length) === 0, 'the late user has a voucher');
    await late.close();
    expect(errors.length === 0, 'page errors: ' + errors.join(' | '));

    // --- the console: a live sale's figures move, and it is paused -------------------
    const B = rid('cmp-live');
    await admin('PUT', '/admin/v1/campaigns/' + B, {
      name: 'Live sale', business_line: bl, starts_at: new Date(Date.now() + 1500).toISOString(),
      ends_at: new Date(Date.now() + 3600e3).toISOString(), per_user_limit: 1, budget: 100000, voucher_ttl: '72h',
      skus: [{ sku: 'rp-10', stock: 5000, value: 10 }],
    });
    await sleep(1600);
    let sent = 0, stop = false;
    const load = (async () => {
      while (!stop && sent < 400) {
        const u = rid('u-load');
        await fetch(PUB + '/v1/claims', { method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ campaign_id: B, sku: 'rp-10', user_id: u, device_id: 'd-' + u, request_id: rid('r') }) }).catch(() => {});
        sent++;
        await sleep(40);
      }
    })();
    // The console's data needs the token; its files do not.
    expect((await fetch(ADM + '/admin/v1/console/overview')).status === 401, 'console data served without the token');
    const con = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    const conErrors = [];
    con.on('pageerror', (e) => conErrors.push(e.message));
    await con.goto(`${ADM}/console/`);
    await con.fill('#token', 'wrong-token');
    await con.click('#signin-form button');
    await waitFor('the refusal', 5000, async () => /refused/.test(await con.textContent('#signin-error')));
    await con.fill('#token', TOKEN);
    await con.click('#signin-form button');
    expect(!con.url().includes(TOKEN), 'the token is in the URL');
    expect(await con.evaluate(() => sessionStorage.getItem('fg.admin.token')) === TOKEN, 'the token is not in sessionStorage');
    expect(await con.evaluate((t) => localStorage.length === 0 && !document.cookie.includes(t), TOKEN), 'the token leaked to localStorage or a cookie');
    const card = `section[data-campaign="${B}"]`;
    await con.waitForSelector(card, { timeout: 10000 });
    const acc = async () => +(await con.textContent(`${card} [data-testid=accepted]`));
    const a1 = await waitFor('accepted claims', 10000, async () => { const n = await acc(); return n > 0 ? n : null; });
    const a2 = await waitFor('the figures to move', 10000, async () => { const n = await acc(); return n > a1 + 5 ? n : null; });
    await waitFor('a rate', 5000, async () => +(await con.textContent(`${card} [data-testid=rate]`)) > 0);
    expect(await con.textContent(`${card} [data-testid=state]`) === 'open', 'live sale not shown open');
    await waitFor('a chart', 5000, async () => (await con.$$(`${card} .uplot`)).length === 1);
    log('console accepted', a1, '->', a2);
    if (SHOTS) { await sleep(6000); await con.screenshot({ path: path.join(SHOTS, 'console.png'), fullPage: false }); }

    // Pause, with a confirmation: Cancel changes nothing, Confirm pauses.
    await con.click(`${card} [data-testid=pause]`);
    await con.waitForSelector('#confirm[open]');
    expect(/Pause "Live sale"/.test(await con.textContent('#confirm-text')), 'confirmation text');
    await con.click('#confirm-cancel');
    await sleep(1200);
    expect((await admin('GET', '/admin/v1/campaigns/' + B)).paused === false, 'Cancel paused the campaign');
    await con.click(`${card} [data-testid=pause]`);
    await con.click('#confirm-ok');
    await waitFor('the paused badge', 5000, async () => (await con.textContent(`${card} [data-testid=state]`)) === 'paused');
    expect((await admin('GET', '/admin/v1/campaigns/' + B)).paused === true, 'the campaign is not paused');
    await waitFor('claims answered paused', 5000, async () => {
      const r = await fetch(PUB + '/v1/claims', { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ campaign_id: B, sku: 'rp-10', user_id: rid('u'), device_id: 'd-x', request_id: rid('r') }) });
      return (await r.json()).reason === 'paused';
    });
    await waitFor('paused in the outcomes', 5000, async () => /paused/.test(await con.textContent(`${card} [data-testid=reasons]`)));
    stop = true;
    await load;
    expect(conErrors.length === 0, 'console errors: ' + conErrors.join(' | '));
    Object.assign(result, { ok: true, campaign: A, user: userA, late_user: userB, request_id: claims[0].body.request_id,
      live_campaign: B, console_accepted: [a1, a2] });
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(result));
})().catch((e) => { console.error('[browser] FAILED:', e.message); process.exit(1); });
