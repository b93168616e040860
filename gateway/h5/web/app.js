// flashgate's claim page. No framework, no HTML parsing of data: everything an admin, a partner or
// the server writes is set with textContent, as a validated colour, or as an https image
// address (the page's CSP allows no inline script or style either).
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var parts = location.pathname.split('/');
  var campaign = decodeURIComponent(parts[2] || '');
  var partner = new URLSearchParams(location.search).get('partner') || '';
  var HEX = /^#[0-9a-fA-F]{6}$/;

  // --- identity from the embedding app -----------------------------------------------
  // The app either sets window.flashgate = {token: '...', user: '...'} before the page's
  // script runs (a JS bridge), or opens the page with a #token=...&user=... fragment. A
  // fragment never reaches a server or a log; it is read here and removed from the
  // address at once. Tokens are never taken from the query string.
  function b64url(s) {
    s = s.replace(/-/g, '+').replace(/_/g, '/');
    while (s.length % 4) s += '=';
    return atob(s);
  }
  function identity() {
    var bridge = window.flashgate || {};
    var token = bridge.token || '';
    var user = bridge.user || '';
    if (location.hash.length > 1) {
      var f = new URLSearchParams(location.hash.slice(1));
      token = f.get('token') || token;
      user = f.get('user') || user;
      history.replaceState(null, '', location.pathname + location.search);
    }
    if (token) sessionStorage.setItem('fg.token', token); else token = sessionStorage.getItem('fg.token') || '';
    if (user) sessionStorage.setItem('fg.user', user); else user = sessionStorage.getItem('fg.user') || '';
    if (!user && token) {
      // The user a JWT names (the server checks the token; this is only the default).
      try { user = JSON.parse(b64url(token.split('.')[1])).sub || ''; } catch (e) { user = ''; }
    }
    var device = localStorage.getItem('fg.device');
    if (!device) {
      device = 'd-' + randomHex(12);
      localStorage.setItem('fg.device', device);
    }
    return { token: token, user: user, device: device };
  }
  function randomHex(n) {
    var a = new Uint8Array(n);
    crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  }
  var me = identity();
  function headers(json) {
    var h = {};
    if (json) h['Content-Type'] = 'application/json';
    if (me.token) h['Authorization'] = 'Bearer ' + me.token;
    return h;
  }

  // --- the server's clock ----------------------------------------------------------------
  // offset = server time - this phone's time, from the sample with the shortest round
  // trip, taking the server's answer as made half-way through it. Re-measured every
  // minute. The phone's own clock only measures short intervals.
  var offset = 0, synced = false;
  function serverNow() { return Date.now() + offset; }
  function syncClock() {
    var best = null, n = 0;
    function one() {
      var t0 = Date.now();
      return fetch('/v1/time', { cache: 'no-store' }).then(function (r) { return r.json(); }).then(function (j) {
        var t1 = Date.now(), rtt = t1 - t0;
        var off = j.now_ms + rtt / 2 - t1;
        if (!best || rtt < best.rtt) best = { rtt: rtt, off: off };
      }).catch(function () {}).then(function () {
        if (++n < 5) return one();
        if (best) { offset = best.off; synced = true; }
      });
    }
    return one();
  }

  // --- the campaign and its theme -------------------------------------------------------
  var cfg = null, sku = '';
  function applyTheme(p) {
    var root = document.documentElement.style;
    var c = p.colors || {};
    if (HEX.test(c.primary || '')) root.setProperty('--primary', c.primary);
    if (HEX.test(c.background || '')) root.setProperty('--bg', c.background);
    if (HEX.test(c.text || '')) root.setProperty('--text', c.text);
    $('title').textContent = p.title || cfg.name;
    document.title = p.title || cfg.name;
    $('name').textContent = cfg.name !== p.title ? cfg.name : '';
    if (typeof p.banner_url === 'string' && p.banner_url.indexOf('https://') === 0) {
      $('banner').src = p.banner_url;
      $('banner').hidden = false;
    }
    if (p.rules_text) {
      $('rules').textContent = p.rules_text;
      $('rules-card').hidden = false;
    }
  }
  function loadConfig() {
    var q = partner ? '?partner=' + encodeURIComponent(partner) : '';
    return fetch('/h5/' + encodeURIComponent(campaign) + '/config.json' + q, { cache: 'no-store' }).then(function (r) {
      if (r.status === 404) throw new Error('missing');
      if (!r.ok) throw new Error('busy');
      return r.json();
    }).then(function (j) {
      cfg = j;
      cfg.start = Date.parse(j.starts_at);
      cfg.end = Date.parse(j.ends_at);
      applyTheme(j.page || {});
      var sel = $('sku');
      (j.skus || []).forEach(function (s) {
        var o = document.createElement('option');
        o.value = s.sku;
        o.textContent = s.sku + ' (' + s.value + ')';
        sel.appendChild(o);
      });
      sku = j.skus && j.skus.length ? j.skus[0].sku : '';
      if (j.skus && j.skus.length > 1) $('sku-row').hidden = false;
      sel.addEventListener('change', function () { sku = sel.value; });
    });
  }

  // --- countdown ------------------------------------------------------------------------
  var answered = false, busy = false;
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function fmt(ms) {
    var s = Math.ceil(ms / 1000), h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60);
    return (h ? h + ':' : '') + pad(m) + ':' + pad(s % 60);
  }
  function tick() {
    if (!cfg || !synced) return;
    var now = serverNow();
    $('clock').textContent = 'Server time ' + new Date(now).toISOString().slice(11, 19) + ' UTC';
    var btn = $('claim');
    if (now < cfg.start) {
      $('phase').textContent = 'Opens in';
      $('countdown').textContent = fmt(cfg.start - now);
      btn.disabled = true;
      btn.textContent = 'Claim';
    } else if (now >= cfg.end) {
      $('phase').textContent = 'This sale has ended';
      $('countdown').textContent = '';
      btn.disabled = true;
    } else {
      $('phase').textContent = cfg.paused ? 'Paused' : 'Open now';
      $('countdown').textContent = '00:00';
      if (!busy) btn.disabled = false;
      btn.textContent = 'Claim now';
    }
  }

  // --- claiming ---------------------------------------------------------------------------
  // A request_id lives until its claim has a final answer: every retry of a 503, a
  // network error or a 429 sends the same one (the gateway answers a retry of a made
  // claim with that claim), with backoff honouring Retry-After.
  var WORDS = {
    sold_out: 'Sold out.',
    budget_exhausted: 'Sold out.',
    user_limit: 'Already claimed: you have this voucher.',
    not_started: 'Not open yet.',
    ended: 'This sale has ended.',
    paused: 'Paused for a moment: try again shortly.',
    not_eligible: 'Not available for your account.',
    blocked: 'Not available for this device or account.',
    unknown_campaign: 'This offer is not available.',
    unknown_sku: 'This offer is not available.'
  };
  function say(text, kind) {
    var el = $('status');
    el.textContent = text;
    el.className = 'status' + (kind ? ' ' + kind : '');
  }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }
  function ridKey() { return 'fg.rid.' + campaign + '.' + sku + '.' + me.user; }

  function claim() {
    if (busy) return;
    if (!me.user) { say('Open this page from the app to claim.', 'bad'); return; }
    busy = true;
    $('claim').disabled = true;
    var rid = sessionStorage.getItem(ridKey());
    if (!rid) { rid = 'h5-' + randomHex(12); sessionStorage.setItem(ridKey(), rid); }
    var attempt = 0;
    say('Claiming…');
    function done() { busy = false; tick(); }
    function once() {
      var body = JSON.stringify({ campaign_id: campaign, sku: sku, user_id: me.user, device_id: me.device, request_id: rid });
      return fetch('/v1/claims', { method: 'POST', headers: headers(true), body: body, cache: 'no-store' })
        .then(function (r) { return r.json().catch(function () { return {}; }).then(function (j) { return { r: r, j: j }; }); },
          function () { return { r: null, j: {} }; })
        .then(function (a) {
          var st = a.r ? a.r.status : 0, j = a.j;
          if (st === 200 && j.result === 'accepted') {
            sessionStorage.removeItem(ridKey());
            remember(j.claim_id);
            say('Got it! Your voucher is below.', 'ok');
            answered = true;
            renderVouchers();
            return done();
          }
          if (st === 0 || st === 429 || st === 502 || st === 503 || st === 504 || st === 408) {
            attempt++;
            if (attempt > 8) { say('Try again: the service is busy.', 'bad'); return done(); }
            var ra = a.r ? parseFloat(a.r.headers.get('Retry-After')) : NaN;
            var wait = ra > 0 ? ra * 1000 : Math.min(4000, 250 * Math.pow(2, attempt - 1)) * (0.5 + Math.random() / 2);
            say(st === 429 ? 'Slow down: trying again in ' + Math.ceil(wait / 1000) + ' s.' : 'Busy: trying again…');
            return sleep(wait).then(once);
          }
          // A final answer: the next tap is a new request.
          sessionStorage.removeItem(ridKey());
          if (j.reason === 'not_started' && serverNow() >= cfg.start - 2000 && serverNow() < cfg.start + 3000 && attempt < 5) {
            // Tapped at the opening second and the gateway's clock was a hair behind.
            attempt++;
            rid = 'h5-' + randomHex(12);
            sessionStorage.setItem(ridKey(), rid);
            return sleep(300).then(once);
          }
          if (st === 401) { say('Please sign in again in the app.', 'bad'); return done(); }
          say(WORDS[j.reason] || WORDS[j.error] || 'Try again.', 'bad');
          return done();
        });
    }
    once();
  }

  // --- my vouchers ------------------------------------------------------------------------
  function vkey() { return 'fg.claims.' + me.user; }
  function known() {
    try { return JSON.parse(localStorage.getItem(vkey()) || '[]'); } catch (e) { return []; }
  }
  function remember(id) {
    var l = known();
    if (l.indexOf(id) < 0) { l.unshift(id); localStorage.setItem(vkey(), JSON.stringify(l.slice(0, 50))); }
  }
  var STATES = { pending: 'Pending', settled: 'Ready to use', redeemed: 'Used', expired: 'Expired' };
  function renderVouchers() {
    var ids = known();
    var mine = me.token ? fetch('/v1/me/claims', { headers: headers(false), cache: 'no-store' })
      .then(function (r) { return r.ok ? r.json() : null; }).catch(function () { return null; }) : Promise.resolve(null);
    return mine.then(function (list) {
      var rows = list && Array.isArray(list.claims) ? list.claims : null;
      if (rows) return rows;
      return Promise.all(ids.map(function (id) {
        return fetch('/v1/claims/' + encodeURIComponent(id) + (me.token ? '' : '?user_id=' + encodeURIComponent(me.user)), { headers: headers(false), cache: 'no-store' })
          .then(function (r) { return r.ok ? r.json() : { claim_id: id, state: 'unknown' }; })
          .catch(function () { return { claim_id: id, state: 'unknown' }; });
      }));
    }).then(function (rows) {
      var ul = $('vouchers');
      while (ul.firstChild) ul.removeChild(ul.firstChild);
      var pending = false;
      rows.forEach(function (v) {
        var li = document.createElement('li');
        li.setAttribute('data-state', v.state || '');
        var what = document.createElement('span');
        what.textContent = (v.sku || '') + (v.value != null ? ' · ' + v.value : '');
        var st = document.createElement('span');
        st.className = 'state';
        st.textContent = STATES[v.state] || v.state || '';
        var exp = document.createElement('span');
        exp.className = 'sub';
        exp.textContent = v.expires_at ? 'Expires ' + new Date(v.expires_at).toLocaleString() : '';
        var id = document.createElement('span');
        id.className = 'id';
        id.textContent = v.claim_id || '';
        li.appendChild(what); li.appendChild(st); li.appendChild(exp); li.appendChild(id);
        ul.appendChild(li);
        if (v.state === 'pending') pending = true;
      });
      $('no-vouchers').hidden = rows.length > 0;
      if (pending) setTimeout(renderVouchers, 2000);
    });
  }

  // --- start ----------------------------------------------------------------------------
  $('claim').addEventListener('click', claim);
  loadConfig().then(syncClock).then(function () {
    tick();
    setInterval(tick, 100);
    setInterval(syncClock, 60000);
    renderVouchers();
  }).catch(function (e) {
    $('phase').textContent = e && e.message === 'missing' ? 'No such campaign.' : 'Could not load: pull to refresh.';
    $('title').textContent = 'flashgate';
  });
}());
