// flashgate's operations console. The admin token lives in sessionStorage (this tab
// only) and travels in the Authorization header; it never appears in a URL. Every
// value from the server is set with textContent.
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var KEY = 'fg.admin.token';
  var HISTORY = 120; // seconds kept on the charts

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function token() { return sessionStorage.getItem(KEY); }
  function api(method, path) {
    var h = {};
    var t = token();
    if (t) h['Authorization'] = 'Bearer ' + t;
    return fetch(path, { method: method, headers: h, cache: 'no-store' }).then(function (r) {
      if (r.status === 401) { signOut('The token was refused.'); throw new Error('unauthorized'); }
      return r.json().then(function (j) { if (!r.ok) throw new Error(j.message || j.error || ('HTTP ' + r.status)); return j; });
    });
  }

  // --- sign-in --------------------------------------------------------------------------
  var timer = null, riskTimer = null;
  function signOut(msg) {
    sessionStorage.removeItem(KEY);
    clearInterval(timer); clearInterval(riskTimer);
    $('main').hidden = true; $('signout').hidden = true; $('signin').hidden = false;
    $('signin-error').textContent = msg || '';
    $('live').textContent = '';
  }
  function signedIn() {
    $('signin').hidden = true; $('main').hidden = false; $('signout').hidden = false;
    refresh();
    timer = setInterval(refresh, 1000);
    riskRefresh();
    riskTimer = setInterval(riskRefresh, 10000);
  }
  $('signin-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $('token').value);
    $('token').value = '';
    api('GET', '/admin/v1/console/overview').then(signedIn, function (e) {
      if (e.message !== 'unauthorized') signOut('Could not reach the admin API: ' + e.message);
    });
  });
  $('signout').addEventListener('click', function () { signOut(''); });

  // --- figures --------------------------------------------------------------------------
  var prev = null;
  var gHist = { t: [], p50: [], p99: [] };
  var gChart = null;
  var cards = {};

  function quantile(bounds, cur, old, total, q) {
    if (total <= 0) return null;
    var want = q * total, below = 0, lo = 0;
    for (var i = 0; i < bounds.length; i++) {
      var n = cur[i] - (old ? old[i] : 0);
      if (n >= want) {
        var inb = n - below;
        var frac = inb > 0 ? (want - below) / inb : 1;
        return (lo + (bounds[i] - lo) * frac) * 1000;
      }
      below = n; lo = bounds[i];
    }
    return lo * 1000;
  }
  function sum(m) { var s = 0; for (var k in m) s += m[k]; return s; }
  function fmt(n, d) { return n == null || isNaN(n) ? '–' : n.toFixed(d || 0); }
  function push(arr, v) { arr.push(v); if (arr.length > HISTORY) arr.shift(); }
  function chartOpts(title, series, w) {
    return {
      title: title, width: w, height: 160, cursor: { show: false }, legend: { show: true },
      // The last HISTORY seconds, whatever has been collected so far.
      scales: { x: { time: true, range: function (u, min, max) { return [max - HISTORY, max]; } } }, axes: [{}, { size: 50 }],
      series: [{}].concat(series)
    };
  }

  function refresh() {
    api('GET', '/admin/v1/console/overview').then(function (o) {
      var dt = prev ? (o.at_ms - prev.at_ms) / 1000 : 0;
      $('live').textContent = 'live · ' + new Date(o.at_ms).toLocaleTimeString();
      // Gateway-wide rates and latency (this gateway's /metrics).
      if (prev && dt > 0) {
        $('g-rate').textContent = fmt((sum(o.gateway_claims_by_outcome) - sum(prev.gateway_claims_by_outcome)) / dt, 1);
        $('g-503').textContent = fmt(((o.gateway_claims_by_outcome.unavailable || 0) - (prev.gateway_claims_by_outcome.unavailable || 0)) / dt, 1);
        var L = o.claim_latency, P = prev.claim_latency;
        var n = L.count - (P.count || 0);
        var p50 = L.le ? quantile(L.le, L.counts, P.counts, n, 0.5) : null;
        var p99 = L.le ? quantile(L.le, L.counts, P.counts, n, 0.99) : null;
        $('g-p50').textContent = p50 == null ? '–' : fmt(p50, 1) + ' ms';
        $('g-p99').textContent = p99 == null ? '–' : fmt(p99, 1) + ' ms';
        push(gHist.t, o.at_ms / 1000); push(gHist.p50, p50); push(gHist.p99, p99);
        if (window.uPlot) {
          if (!gChart) gChart = new uPlot(chartOpts('claim latency (ms)', [{ label: 'p50', stroke: '#2f6fed' }, { label: 'p99', stroke: '#c62828' }], Math.min(900, $('main').clientWidth - 40)), [[], [], []], $('latency-chart'));
          gChart.setData([gHist.t, gHist.p50, gHist.p99]);
        }
      }
      $('g-fenced').textContent = String(o.fenced_business_lines || 0);
      var seen = {};
      o.campaigns.forEach(function (c) {
        seen[c.campaign_id] = true;
        var old = prev && prev.byId ? prev.byId[c.campaign_id] : null;
        update(card(c), c, old, dt, o.at_ms);
      });
      Object.keys(cards).forEach(function (id) { if (!seen[id]) { cards[id].root.remove(); delete cards[id]; } });
      $('no-campaigns').hidden = o.campaigns.length > 0;
      o.byId = {};
      o.campaigns.forEach(function (c) { o.byId[c.campaign_id] = c; });
      prev = o;
    }).catch(function (e) {
      if (e.message !== 'unauthorized') $('live').textContent = 'not updating: ' + e.message;
    });
  }

  function card(c) {
    var k = cards[c.campaign_id];
    if (k) return k;
    k = { hist: { t: [], acc: [], rej: [] } };
    var root = el('section', 'panel');
    root.setAttribute('data-campaign', c.campaign_id);
    var h = el('h2');
    k.name = el('span', null, c.name);
    k.state = el('span', 'badge');
    k.state.setAttribute('data-testid', 'state');
    k.recon = el('span', 'badge');
    k.recon.setAttribute('data-testid', 'recon');
    k.btn = el('button', 'danger', 'Pause');
    k.btn.setAttribute('data-testid', 'pause');
    var act = el('span', 'actions');
    act.appendChild(k.btn);
    h.appendChild(k.name); h.appendChild(el('span', 'id', c.campaign_id)); h.appendChild(k.state); h.appendChild(k.recon); h.appendChild(act);
    root.appendChild(h);
    var row = el('div', 'row');
    function stat(label, id) {
      var s = el('div', 'stat');
      s.appendChild(el('span', 'k', label));
      var v = el('span', 'v', '–');
      v.setAttribute('data-testid', id);
      s.appendChild(v); row.appendChild(s);
      return v;
    }
    k.accepted = stat('accepted', 'accepted');
    k.rate = stat('accepted/s', 'rate');
    k.rejRate = stat('rejected/s', 'rej-rate');
    k.budget = stat('budget left', 'budget-left');
    k.lag = stat('settle lag', 'lag');
    k.settled = stat('settled', 'settled');
    root.appendChild(row);
    k.skus = el('table');
    root.appendChild(k.skus);
    k.reasons = el('table');
    k.reasons.setAttribute('data-testid', 'reasons');
    root.appendChild(k.reasons);
    k.chartEl = el('div', 'chart');
    root.appendChild(k.chartEl);
    k.risk = el('div');
    root.appendChild(k.risk);
    k.btn.addEventListener('click', function () { pauseResume(c.campaign_id, k); });
    k.root = root;
    $('campaigns').appendChild(root);
    cards[c.campaign_id] = k;
    return k;
  }

  function rows(table, head, list) {
    while (table.firstChild) table.removeChild(table.firstChild);
    var tr = el('tr');
    head.forEach(function (x) { tr.appendChild(el('th', null, x)); });
    table.appendChild(tr);
    list.forEach(function (r) {
      var tr = el('tr');
      r.forEach(function (x, i) { tr.appendChild(el('td', i ? 'n' : null, String(x))); });
      table.appendChild(tr);
    });
  }

  function update(k, c, old, dt, at) {
    var now = at;
    var starts = Date.parse(c.starts_at), ends = Date.parse(c.ends_at);
    var state = c.paused ? 'paused' : now < starts ? 'not started' : now >= ends ? 'ended' : 'open';
    k.state.textContent = state;
    k.state.className = 'badge ' + (state === 'open' ? 'open' : state === 'paused' ? 'paused' : '');
    var r = c.reconciliation || {};
    var rs = r.state === 'recovering' ? 'fenced' : (r.state || '?');
    k.recon.textContent = rs;
    k.recon.className = 'badge ' + rs;
    k.paused = c.paused;
    k.btn.textContent = c.paused ? 'Resume' : 'Pause';
    k.btn.className = c.paused ? '' : 'danger';
    k.accepted.textContent = String(c.accepted);
    k.settled.textContent = String(c.settled);
    k.budget.textContent = String(c.budget_left);
    k.lag.textContent = r.lag_ms != null ? fmt(r.lag_ms / 1000, 1) + ' s' : '–';
    var rej = sum(c.rejections || {});
    if (old && dt > 0) {
      var ar = (c.accepted - old.accepted) / dt, rr = (rej - sum(old.rejections || {})) / dt;
      k.rate.textContent = fmt(ar, 1);
      k.rejRate.textContent = fmt(rr, 1);
      push(k.hist.t, at / 1000); push(k.hist.acc, ar); push(k.hist.rej, rr);
      if (window.uPlot) {
        if (!k.chart) k.chart = new uPlot(chartOpts('claims/s', [{ label: 'accepted', stroke: '#11663a' }, { label: 'rejected', stroke: '#c62828' }], Math.max(300, k.root.clientWidth - 32)), [[], [], []], k.chartEl);
        k.chart.setData([k.hist.t, k.hist.acc, k.hist.rej]);
      }
    }
    rows(k.skus, ['sku', 'stock', 'stock left', 'accepted', 'settled'], (c.skus || []).map(function (s) {
      return [s.sku, s.stock, s.stock_left, s.accepted, s.settled];
    }));
    var reasons = Object.keys(c.rejections || {}).sort();
    rows(k.reasons, ['outcome', 'count', 'per s'], [['accepted', c.accepted, old && dt > 0 ? fmt((c.accepted - old.accepted) / dt, 1) : '–']].concat(
      reasons.map(function (x) {
        var o = old && old.rejections ? old.rejections[x] || 0 : null;
        return [x, c.rejections[x], o != null && dt > 0 ? fmt((c.rejections[x] - o) / dt, 1) : '–'];
      })));
  }

  // --- pause / resume, confirmed ----------------------------------------------------------
  function pauseResume(id, k) {
    var verb = k.paused ? 'resume' : 'pause';
    $('confirm-text').textContent = (k.paused ? 'Resume ' : 'Pause ') + '"' + k.name.textContent + '" (' + id + ')? ' +
      (k.paused ? 'Claims are decided again at once.' : 'Every claim is answered "paused" until it is resumed.');
    $('confirm-ok').textContent = k.paused ? 'Resume' : 'Pause';
    var d = $('confirm');
    d.showModal();
    function close() { d.close(); $('confirm-ok').onclick = null; $('confirm-cancel').onclick = null; }
    $('confirm-cancel').onclick = close;
    $('confirm-ok').onclick = function () {
      close();
      api('POST', '/admin/v1/campaigns/' + encodeURIComponent(id) + '/' + verb).then(refresh, function (e) {
        $('live').textContent = verb + ' failed: ' + e.message;
      });
    };
  }

  // --- risk top ---------------------------------------------------------------------------
  function riskRefresh() {
    api('GET', '/admin/v1/console/risk').then(function (j) {
      Object.keys(cards).forEach(function (id) {
        var k = cards[id], v = (j.campaigns || {})[id];
        while (k.risk.firstChild) k.risk.removeChild(k.risk.firstChild);
        if (!v) return;
        k.risk.appendChild(el('h3', 'sub', 'Risk top (last 2 min)'));
        ['devices', 'ips', 'users'].forEach(function (kind) {
          var t = el('table');
          rows(t, [kind, 'attempts', 'accepted', 'rejected'], (v[kind] || []).map(function (r) {
            var rej = Object.keys(r.rejected_by_reason || {}).map(function (x) { return x + ' ' + r.rejected_by_reason[x]; }).join(', ');
            return [r.value, r.attempts, r.accepted, rej || '0'];
          }));
          k.risk.appendChild(t);
        });
      });
    }).catch(function () {});
  }

  if (token() !== null) signedIn(); else signOut('');
}());
