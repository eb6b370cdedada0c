// sae-explain's static dashboard (lib/explain/dashboard.h; docs/explain.md, "The dashboard").
//
// Files written into the directory:
//   index.html             the summary, the density histogram (inline SVG) and the latent table,
//                          rendered by the page's own script from data/index.js
//   latent.html            the one viewer page: latent.html#N shows latent N
//   data/index.js          saeIndex({"rows": [[latent, density, fires, max, mean, [token ids], explanation, score], ...]})
//   data/tokens.js         saeTokens({"ID": "display text", ...}) for the ids the pages show
//   data/latents-CCCC.js   saeChunk({"chunk": C, "prev": L, "next": L, "latents": [{...}, ...]}) for
//                          the reported latents N with N / 64 == C
// Every data file is a script that calls a global function (JSONP style): a page opened from
// file:// may load scripts beside it, but not fetch() them. The JSON inside each call is plain
// JSON, with '<', '>' and '&' escaped as \u003c etc. The CSS and the scripts are in this file and
// written inline into the two pages, so an installed binary needs nothing from the source tree.
#include "explain/dashboard.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string_view>

#include "base/errors.h"
#include "base/svg.h"
#include "base/utf8.h"
#include "explain/json_text.h"

namespace sae {

namespace {

// ---- the text of the pages -------------------------------------------------------------------

const char* const kCss = R"CSS(
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em 2em;color:#222;line-height:1.35}
a{color:#0645ad;text-decoration:none}a:hover{text-decoration:underline}
h1{font-size:1.5em;margin:.2em 0 .4em}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1em 0 .3em;color:#444}
table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3;font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.muted{color:#777}
.summary td:first-child{color:#555}
.controls{margin:1em 0;display:flex;flex-wrap:wrap;gap:.6em 1.2em;align-items:center}
.controls input{padding:3px 6px;font:inherit}
#q{width:22em}.dens{width:8em}
#latents th{cursor:pointer;user-select:none;white-space:nowrap}
#latents th.asc::after{content:" \25B2";font-size:.8em}
#latents th.desc::after{content:" \25BC";font-size:.8em}
.pager{margin:.6em 0}.pager button{font:inherit;margin-right:.5em}
.tokl{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f2f2f2;border-radius:3px;padding:0 3px;margin:0 3px 0 0;white-space:pre}
.nav{display:flex;gap:1.5em;align-items:baseline;margin-bottom:.5em}
.nav .off{color:#aaa}
.expl{font-size:1.1em;margin:.3em 0 .8em}
.ctx{display:flex;gap:1em;align-items:baseline;padding:1px 0;border-bottom:1px solid #f0f0f0;font-size:13px}
.ctx .val{width:5.5em;flex:none;text-align:right;color:#555;font-variant-numeric:tabular-nums}
.ctx .toks{flex:1;white-space:pre;overflow-x:auto;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.ctx .where{flex:none;color:#999;font-size:11px}
.tok{border-right:1px solid #eee}
.tok.peak{outline:2px solid #b00020;outline-offset:-1px}
.tok.unk,.tok.empty{color:#555;font-style:italic}
.grid{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}
.grid table caption{text-align:left;font-weight:600;padding:2px 0}
.error{background:#fdd;border:1px solid #c00;padding:.5em;margin:.5em 0}
svg text{font-family:system-ui,sans-serif;font-size:11px}
)CSS";

// Shared by both pages, before any data file: the receivers of the JSONP calls, the display of a
// token string, number formatting, and a visible, logged error for a data file that fails to load.
const char* const kCommonJs = R"JS(
var SAE_T = {}, SAE_ROWS = [];
function saeTokens(t) { SAE_T = t; }
function saeIndex(d) { SAE_ROWS = d.rows; }
function saeFail(msg) {
  console.error(msg);
  var p = document.createElement('p');
  p.className = 'error';
  p.textContent = msg;
  document.body.insertBefore(p, document.body.firstChild);
}
// A data file that cannot be loaded (a chunk of an unreported latent is handled by the viewer).
window.addEventListener('error', function (e) {
  var t = e.target;
  if (t && t !== window && t.tagName === 'SCRIPT' && !t.hasAttribute('data-chunk'))
    saeFail('cannot load ' + t.getAttribute('src') + ': the dashboard is incomplete');
}, true);
// Token text made visible: newline as a return arrow, tab as a tab arrow, other control
// characters as \xNN; spaces stay (the pages show tokens with white-space: pre).
function saeVis(s) {
  return s.replace(/[\x00-\x1f\x7f]/g, function (c) {
    if (c === '\n') return '\u21b5';
    if (c === '\t') return '\u21e5';
    if (c === '\r') return '\u240d';
    return '\\x' + ('0' + c.charCodeAt(0).toString(16)).slice(-2);
  });
}
// A token in a list (logit tables, the index): spaces as middle dots, so " the" and "the" differ.
function saeListText(id) {
  var s = SAE_T[id];
  if (s === undefined) return '[' + id + ']';
  if (s === '') return '\u2205';
  return saeVis(s).replace(/ /g, '\u00b7');
}
function saeFmt(v) {
  if (v === null || v === undefined) return '\u2013';
  if (v === 0) return '0';
  var a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
  return String(+v.toPrecision(4));
}
function saeDensity(v) {
  if (v === null || v === undefined) return '\u2013';
  return v === 0 ? '0' : v.toExponential(2);
}
function saeEl(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
)JS";

const char* const kIndexJs = R"JS(
(function () {
  'use strict';
  var PAGE = 500;
  var R = SAE_ROWS;
  // Row layout (data/index.js): [latent, density, fires, max, mean, [token ids], explanation, score].
  R.forEach(function (r) {
    r.tokText = r[5].map(saeListText).join(' ');
    r.search = (r[5].map(function (id) { return SAE_T[id] === undefined ? '' : SAE_T[id]; }).join('\u0001') +
                '\u0001' + (r[6] || '')).toLowerCase();
  });
  var hasExpl = R.some(function (r) { return r[6] !== null; });
  var hasScore = R.some(function (r) { return r[7] !== null; });
  var cols = [
    {name: 'latent', num: true, get: function (r) { return r[0]; }},
    {name: 'density', num: true, get: function (r) { return r[1]; }},
    {name: 'fires', num: true, get: function (r) { return r[2]; }},
    {name: 'max act', num: true, get: function (r) { return r[3]; }},
    {name: 'mean act', num: true, get: function (r) { return r[4]; }},
    {name: 'top logit tokens', num: false, get: function (r) { return r.tokText; }}
  ];
  if (hasExpl) cols.push({name: 'explanation', num: false, get: function (r) { return r[6]; }});
  if (hasScore) cols.push({name: 'score', num: true, get: function (r) { return r[7]; }});

  var table = document.getElementById('latents');
  var tbody = table.tBodies[0];
  var headRow = table.tHead.rows[0];
  var sortCol = 0, sortDir = 1, page = 0, view = R.slice();
  if (hasScore) { sortCol = cols.length - 1; sortDir = -1; }  // autointerp: the best scores first
  cols.forEach(function (c, i) {
    var th = saeEl('th', c.num ? 'num' : '', c.name);
    th.title = 'sort by ' + c.name;
    th.addEventListener('click', function () {
      if (sortCol === i) sortDir = -sortDir;
      else { sortCol = i; sortDir = c.num && i !== 0 ? -1 : 1; }
      sortView();
      page = 0;
      render();
    });
    headRow.appendChild(th);
  });

  var q = document.getElementById('q'), dmin = document.getElementById('dmin'), dmax = document.getElementById('dmax');
  function num(input) {
    var v = input.value.trim();
    if (v === '') return null;
    v = Number(v);
    return isFinite(v) ? v : null;
  }
  function filter() {
    var s = q.value.trim(), lo = num(dmin), hi = num(dmax), m, test;
    if ((m = /^#?(\d+)$/.exec(s))) { var n = +m[1]; test = function (r) { return r[0] === n; }; }
    else if ((m = /^(\d+)\s*-\s*(\d+)$/.exec(s))) { var a = +m[1], b = +m[2]; test = function (r) { return r[0] >= a && r[0] <= b; }; }
    else if (s !== '') { var low = s.toLowerCase(); test = function (r) { return r.search.indexOf(low) >= 0; }; }
    view = R.filter(function (r) {
      if (lo !== null && !(r[1] >= lo)) return false;
      if (hi !== null && !(r[1] <= hi)) return false;
      return !test || test(r);
    });
    sortView();
    page = 0;
    render();
  }
  function sortView() {
    var get = cols[sortCol].get, dir = sortDir;
    view.sort(function (x, y) {
      var a = get(x), b = get(y);
      var an = a === null || a === undefined || a === '', bn = b === null || b === undefined || b === '';
      if (an || bn) return an === bn ? x[0] - y[0] : (an ? 1 : -1);  // missing values last
      if (a < b) return -dir;
      if (a > b) return dir;
      return x[0] - y[0];
    });
  }
  function render() {
    for (var i = 0; i < headRow.cells.length; i++) {
      headRow.cells[i].classList.toggle('asc', i === sortCol && sortDir > 0);
      headRow.cells[i].classList.toggle('desc', i === sortCol && sortDir < 0);
    }
    var pages = Math.max(1, Math.ceil(view.length / PAGE));
    page = Math.min(page, pages - 1);
    var start = page * PAGE, end = Math.min(view.length, start + PAGE);
    var frag = document.createDocumentFragment();
    for (var k = start; k < end; k++) {
      var r = view[k], tr = document.createElement('tr');
      var td = saeEl('td', 'num'), a = saeEl('a', '', String(r[0]));
      a.href = 'latent.html#' + r[0];
      td.appendChild(a);
      tr.appendChild(td);
      tr.appendChild(saeEl('td', 'num', saeDensity(r[1])));
      tr.appendChild(saeEl('td', 'num', String(r[2])));
      tr.appendChild(saeEl('td', 'num', saeFmt(r[3])));
      tr.appendChild(saeEl('td', 'num', saeFmt(r[4])));
      var tt = saeEl('td');
      r[5].forEach(function (id) { tt.appendChild(saeEl('span', 'tokl', saeListText(id))); });
      tr.appendChild(tt);
      if (hasExpl) tr.appendChild(saeEl('td', '', r[6] === null ? '' : r[6]));
      if (hasScore) tr.appendChild(saeEl('td', 'num', saeFmt(r[7])));
      frag.appendChild(tr);
    }
    tbody.textContent = '';
    tbody.appendChild(frag);
    document.getElementById('count').textContent = view.length + ' of ' + R.length + ' latents' +
      (view.length > PAGE ? ', showing ' + (start + 1) + '\u2013' + end : '');
    var pager = document.getElementById('pager');
    pager.hidden = pages <= 1;
    document.getElementById('pageinfo').textContent = 'page ' + (page + 1) + ' of ' + pages;
    document.getElementById('prevpage').disabled = page === 0;
    document.getElementById('nextpage').disabled = page >= pages - 1;
  }
  document.getElementById('prevpage').addEventListener('click', function () { page--; render(); });
  document.getElementById('nextpage').addEventListener('click', function () { page++; render(); window.scrollTo(0, table.offsetTop); });
  [q, dmin, dmax].forEach(function (e) { e.addEventListener('input', filter); });
  filter();
})();
)JS";

const char* const kLatentJs = R"JS(
(function () {
  'use strict';
  var CHUNK = SAE_CHUNK, FIRST = SAE_FIRST;
  var chunks = {}, failed = {}, loading = {}, current = null;
  var main = document.getElementById('main');
  window.saeChunk = function (c) {
    chunks[c.chunk] = c;
    loading[c.chunk] = false;
    if (current !== null && Math.floor(current / CHUNK) === c.chunk) show(current);
  };
  function chunkFile(c) {
    var s = String(c);
    while (s.length < 4) s = '0' + s;
    return 'data/latents-' + s + '.js';
  }
  function route() {
    var m = /^#(\d+)$/.exec(location.hash);
    current = m ? parseInt(m[1], 10) : FIRST;
    var c = Math.floor(current / CHUNK);
    if (chunks[c]) return show(current);
    if (failed[c]) return missing(current, null);
    main.textContent = 'Loading latent ' + current + '\u2026';
    if (loading[c]) return;
    loading[c] = true;
    var s = document.createElement('script');
    s.setAttribute('data-chunk', String(c));
    s.onerror = function () {
      failed[c] = true;
      loading[c] = false;
      if (Math.floor(current / CHUNK) === c) missing(current, null);
    };
    s.src = chunkFile(c);
    document.body.appendChild(s);
  }
  function link(id, n, text) {
    var a = document.getElementById(id);
    a.textContent = text;
    if (n === null || n === undefined) { a.removeAttribute('href'); a.className = 'off'; }
    else { a.href = '#' + n; a.className = ''; }
  }
  function setNav(c, n) {
    // The reported latents around n: from the chunk, else the chunk's neighbours (its prev and next).
    var prev = c ? c.prev : null, next = c ? c.next : null, found = false;
    if (c) c.latents.forEach(function (d) {
      if (d.latent < n) prev = d.latent;
      else if (d.latent > n && !found) { next = d.latent; found = true; }
    });
    link('prev', prev, '\u2190 previous' + (prev === null || prev === undefined ? '' : ' (' + prev + ')'));
    link('next', next, 'next' + (next === null || next === undefined ? '' : ' (' + next + ')') + ' \u2192');
  }
  function missing(n, c) {
    setNav(c, n);
    main.textContent = '';
    main.appendChild(saeEl('h1', '', 'Latent ' + n));
    main.appendChild(saeEl('p', 'muted', 'Latent ' + n + ' is not in this dashboard.'));
    document.title = 'Latent ' + n;
  }
  function show(n) {
    var c = chunks[Math.floor(n / CHUNK)], d = null;
    for (var i = 0; i < c.latents.length; i++) if (c.latents[i].latent === n) d = c.latents[i];
    if (!d) return missing(n, c);
    setNav(c, n);
    render(d);
    window.scrollTo(0, 0);
  }

  function shade(a, max) {
    var f = max > 0 ? Math.min(1, Math.abs(a) / max) : 1;
    var alpha = (0.12 + 0.88 * f).toFixed(3);
    return a > 0 ? 'rgba(255, 140, 0, ' + alpha + ')' : 'rgba(60, 120, 255, ' + alpha + ')';
  }
  // One context: [row, doc, peak, activation, [token ids], [activations]].
  function context(ex, kind, max) {
    var row = ex[0], doc = ex[1], peak = ex[2], act = ex[3], toks = ex[4], acts = ex[5];
    var div = saeEl('div', 'ctx ' + kind);
    div.appendChild(saeEl('span', 'val', saeFmt(act)));
    var ts = saeEl('span', 'toks');
    for (var i = 0; i < toks.length; i++) {
      var id = toks[i], a = acts[i] || 0, raw = SAE_T[id];
      var cls = 'tok' + (i === peak ? ' peak' : '');
      var text;
      if (raw === undefined) { cls += ' unk'; text = '[' + id + ']'; }
      else if (raw === '') { cls += ' empty'; text = '\u2205'; }
      else text = saeVis(raw);
      var sp = saeEl('span', cls, text);
      if (a !== 0) sp.style.background = shade(a, max);
      sp.title = saeFmt(a) + '  \u00b7  token ' + id + ' ' + JSON.stringify(raw === undefined ? '[' + id + ']' : raw) +
                 (i === peak ? '  \u00b7  peak' : '');
      ts.appendChild(sp);
    }
    div.appendChild(ts);
    div.appendChild(saeEl('span', 'where', 'doc ' + doc + ', row ' + row));
    return div;
  }
  function contexts(parent, list, kind, max, none) {
    if (!list.length) { parent.appendChild(saeEl('p', 'muted', none)); return; }
    list.forEach(function (ex) { parent.appendChild(context(ex, kind, max)); });
  }
  var NS = 'http://www.w3.org/2000/svg';
  function svgEl(tag, attrs, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  // Bars over the log-spaced bins [edges[b], edges[b+1]), on a log x axis.
  function histogram(edges, counts) {
    if (!counts.length || edges.length !== counts.length + 1) return saeEl('p', 'muted', 'No activations: the latent never fired.');
    var logx = edges.every(function (e) { return e > 0; });
    var X = edges.map(function (e) { return logx ? Math.log10(e) : e; });
    var W = 620, H = 220, L = 56, Rm = 16, Tm = 12, B = 42;
    var x0 = X[0], x1 = X[X.length - 1], cmax = Math.max.apply(null, counts) || 1;
    var sx = function (v) { return L + (v - x0) / ((x1 - x0) || 1) * (W - L - Rm); };
    var sy = function (c) { return Tm + (1 - c / cmax) * (H - Tm - B); };
    var svg = svgEl('svg', {width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, 'class': 'hist'});
    var g = svgEl('g', {fill: '#e08000'});
    for (var b = 0; b < counts.length; b++) {
      var xa = sx(X[b]), xb = sx(X[b + 1]), y = sy(counts[b]);
      var r = svgEl('rect', {x: xa.toFixed(2), y: y.toFixed(2), width: Math.max(0.5, xb - xa - 0.5).toFixed(2),
                             height: (H - B - y).toFixed(2)});
      r.appendChild(svgEl('title', {}, '[' + saeFmt(edges[b]) + ', ' + saeFmt(edges[b + 1]) + '): ' + counts[b]));
      g.appendChild(r);
    }
    svg.appendChild(g);
    var axes = svgEl('g', {stroke: '#444', 'stroke-width': 1});
    axes.appendChild(svgEl('line', {x1: L, y1: H - B, x2: W - Rm, y2: H - B}));
    axes.appendChild(svgEl('line', {x1: L, y1: Tm, x2: L, y2: H - B}));
    svg.appendChild(axes);
    // Ticks at the powers of ten inside the range (log axis), and at both ends unless one is close.
    var ticks = [];
    if (logx) for (var t = Math.ceil(x0); t <= Math.floor(x1); t++) ticks.push(t);
    var gap = (x1 - x0) / 12;
    [x0, x1].forEach(function (e) {
      if (!ticks.some(function (t) { return Math.abs(t - e) < gap; })) ticks.push(e);
    });
    ticks.forEach(function (t) {
      var x = +sx(t).toFixed(2);
      svg.appendChild(svgEl('line', {x1: x, y1: H - B, x2: x, y2: H - B + 4, stroke: '#444'}));
      svg.appendChild(svgEl('text', {x: x, y: H - B + 16, 'text-anchor': 'middle'}, saeFmt(logx ? Math.pow(10, t) : t)));
    });
    [0, cmax].forEach(function (c) {
      svg.appendChild(svgEl('text', {x: L - 6, y: sy(c) + 4, 'text-anchor': 'end'}, String(c)));
    });
    svg.appendChild(svgEl('text', {x: (L + W - Rm) / 2, y: H - 6, 'text-anchor': 'middle'},
                          'activation' + (logx ? ' (log scale)' : '')));
    svg.appendChild(svgEl('text', {x: 14, y: (Tm + H - B) / 2, 'text-anchor': 'middle',
                                   transform: 'rotate(-90 14 ' + (Tm + H - B) / 2 + ')'}, 'rows'));
    return svg;
  }
  function tokenTable(title, list) {
    var t = saeEl('table', 'logits');
    t.appendChild(saeEl('caption', '', title));
    list.forEach(function (p) {
      var tr = document.createElement('tr');
      var td = saeEl('td');
      td.appendChild(saeEl('span', 'tokl', saeListText(p[0])));
      tr.appendChild(td);
      tr.appendChild(saeEl('td', 'num', saeFmt(p[1])));
      t.appendChild(tr);
    });
    return t;
  }
  function neighbours(title, list, what) {
    var box = saeEl('div');
    box.appendChild(saeEl('h3', '', title));
    if (!list.length) { box.appendChild(saeEl('p', 'muted', 'none')); return box; }
    var ul = saeEl('ul', 'neighbours');
    list.forEach(function (p) {
      var li = saeEl('li'), a = saeEl('a', '', 'latent ' + p[0]);
      a.href = '#' + p[0];
      li.appendChild(a);
      li.appendChild(document.createTextNode('  ' + what + ' ' + saeFmt(p[1])));
      ul.appendChild(li);
    });
    box.appendChild(ul);
    return box;
  }
  function section(id, title) {
    var s = saeEl('section');
    s.id = id;
    s.appendChild(saeEl('h2', '', title));
    main.appendChild(s);
    return s;
  }
  function render(d) {
    main.textContent = '';
    document.title = 'Latent ' + d.latent + ' \u00b7 ' + SAE_NAME;
    main.appendChild(saeEl('h1', '', 'Latent ' + d.latent));
    if (d.explanation !== undefined)
      main.appendChild(saeEl('p', 'expl', d.explanation + (d.score !== undefined ? '  (score ' + saeFmt(d.score) + ')' : '')));
    else if (d.score !== undefined) main.appendChild(saeEl('p', 'expl', 'score ' + saeFmt(d.score)));
    // autointerp (docs/autointerp.md): why there is no explanation, or each scoring method's metrics.
    if (d.autointerp && d.autointerp.failed !== undefined)
      main.appendChild(saeEl('p', 'muted', 'no explanation: ' + d.autointerp.failed));
    if (d.autointerp && d.autointerp.scores) {
      var at = saeEl('table', 'stats');
      at.className = 'stats autointerp';
      at.style.marginBottom = '0.8em';
      Object.keys(d.autointerp.scores).forEach(function (m) {
        var s = d.autointerp.scores[m], parts = [];
        Object.keys(s).forEach(function (k) { if (k !== 'n' && k !== 'failed') parts.push(k.replace(/_/g, ' ') + ' ' + saeFmt(s[k])); });
        var tr = document.createElement('tr');
        tr.appendChild(saeEl('td', '', m));
        tr.appendChild(saeEl('td', '', parts.join(', ') + ' (' + s.n + ' held-out contexts' + (s.failed ? ', ' + s.failed + ' unanswered' : '') + ')'));
        at.appendChild(tr);
      });
      main.appendChild(at);
    }
    var st = saeEl('table', 'stats');
    [['fires', String(d.fires) + ' of ' + d.rows + ' rows'], ['density', saeDensity(d.density)],
     ['max activation', saeFmt(d.max)], ['mean activation (when firing)', saeFmt(d.mean)]].forEach(function (kv) {
      var tr = document.createElement('tr');
      tr.appendChild(saeEl('td', '', kv[0]));
      tr.appendChild(saeEl('td', 'num', kv[1]));
      st.appendChild(tr);
    });
    var top = saeEl('div', 'grid');
    top.appendChild(st);
    top.appendChild(histogram(d.hist[0], d.hist[1]));
    main.appendChild(top);

    contexts(section('top', 'Top activations (' + d.top.length + ')'), d.top, 'top', d.max, 'none: the latent never fired');
    var qs = section('quantiles', 'Samples across the activation range, lowest group first');
    if (!d.quantiles.length) qs.appendChild(saeEl('p', 'muted', 'none'));
    d.quantiles.forEach(function (q, g) {
      var label = 'Group ' + (g + 1) + ' of ' + d.quantiles.length;
      if (q.lo !== undefined) label += ': activation ' + saeFmt(q.lo) + ' \u2013 ' + saeFmt(q.hi);
      label += ' (' + q.ex.length + ' example' + (q.ex.length === 1 ? '' : 's') + ')';
      var h = saeEl('h3', 'qgroup', label);
      qs.appendChild(h);
      contexts(qs, q.ex, 'quantile', d.max, 'no examples in this group');
    });
    contexts(section('contrast', 'Contrast: random contexts where it does not fire (' + d.contrast.length + ')'),
             d.contrast, 'contrast', d.max, 'none');
    var ls = section('logits', 'Logit lens of the decoder direction');
    if (d.logits) {
      var grid = saeEl('div', 'grid');
      grid.appendChild(tokenTable('promoted', d.logits[0]));
      grid.appendChild(tokenTable('suppressed', d.logits[1]));
      grid.appendChild(tokenTable('promoted, frequency-corrected', d.logits[2]));
      grid.appendChild(tokenTable('suppressed, frequency-corrected', d.logits[3]));
      ls.appendChild(grid);
    } else ls.appendChild(saeEl('p', 'muted', 'Not computed (no model unembedding).'));
    var ns = section('neighbours', 'Neighbours');
    var ng = saeEl('div', 'grid');
    ng.appendChild(neighbours('by decoder cosine', d.decoder, 'cosine'));
    ng.appendChild(neighbours('by co-firing (Jaccard)', d.cofire, 'Jaccard'));
    ns.appendChild(ng);
  }
  window.addEventListener('hashchange', route);
  route();
})();
)JS";

// ---- fast text output ------------------------------------------------------------------------

// The data files' JSON is HTML-safe: it may be pasted into a page's <script> element.
struct Buf : JsonText {
  void str(std::string_view v) { string(v, true); }
};

std::string valid_utf8(const std::string& s) {
  return utf8_find_invalid(s) == std::string_view::npos ? s : utf8_replace_invalid(s);
}

std::string html(const std::string& s) { return svg::escape(valid_utf8(s)); }

void write_whole(const std::string& path, std::string_view data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  size_t n = data.empty() ? 0 : std::fwrite(data.data(), 1, data.size(), f);
  int err = n == data.size() ? 0 : errno;
  if (std::fclose(f) != 0 && err == 0) err = errno ? errno : EIO;
  if (n != data.size() && err == 0) err = EIO;
  if (err) throw InputError(path + ": write failed: " + std::strerror(err));
}

constexpr int kDigits = 4;       // significant digits of the numbers in the data files
constexpr size_t kIndexTokens = 5;  // top logit tokens per row of the index

}  // namespace

std::string dashboard_chunk_file(int64_t latent) {
  char b[48];
  std::snprintf(b, sizeof b, "data/latents-%04lld.js", static_cast<long long>(latent / kDashboardChunk));
  return b;
}

struct DashboardWriter::Impl {
  std::string dir;
  ExplainSummary summary;
  std::vector<std::string> tokens;  // display texts, valid UTF-8
  std::vector<uint8_t> used;        // ids the pages show

  struct Row {
    int64_t latent, fires;
    double density, max, mean;
    std::vector<int32_t> toks;
    std::optional<std::string> explanation;
    std::optional<double> score;
  };
  std::vector<Row> rows;

  Buf chunk;                       // the current chunk's text, without its end
  int64_t chunk_id = -1;           // -1: none open
  int64_t last = -1;               // the last latent added
  int64_t prev_of_chunk = -1;      // the last latent before the open chunk
  bool finished = false;

  void use(int32_t id) {
    if (id >= 0 && size_t(id) < used.size()) used[size_t(id)] = 1;
  }
  void example(const ContextExample& e) {
    Buf& b = chunk;
    b.ch('[');
    b.i64(e.row);
    b.ch(',');
    b.i64(e.doc);
    b.ch(',');
    b.i64(e.peak);
    b.ch(',');
    b.real(e.activation, kDigits);
    b.raw(",[");
    for (size_t i = 0; i < e.tokens.size(); i++) {
      if (i) b.ch(',');
      b.i64(e.tokens[i]);
      use(e.tokens[i]);
    }
    b.raw("],[");
    for (size_t i = 0; i < e.acts.size(); i++) {
      if (i) b.ch(',');
      b.real(e.acts[i], kDigits);
    }
    b.raw("]]");
  }
  void examples(const std::vector<ContextExample>& v) {
    chunk.ch('[');
    for (size_t i = 0; i < v.size(); i++) {
      if (i) chunk.ch(',');
      example(v[i]);
    }
    chunk.ch(']');
  }
  void scores(const std::vector<TokenScore>& v) {
    chunk.ch('[');
    for (size_t i = 0; i < v.size(); i++) {
      if (i) chunk.ch(',');
      chunk.ch('[');
      chunk.i64(v[i].token);
      chunk.ch(',');
      chunk.real(v[i].score, kDigits);
      chunk.ch(']');
      use(v[i].token);
    }
    chunk.ch(']');
  }
  void neighbours(const std::vector<Neighbour>& v) {
    chunk.ch('[');
    for (size_t i = 0; i < v.size(); i++) {
      if (i) chunk.ch(',');
      chunk.ch('[');
      chunk.i64(v[i].latent);
      chunk.ch(',');
      chunk.real(v[i].score, kDigits);
      chunk.ch(']');
    }
    chunk.ch(']');
  }

  void open_chunk(int64_t id) {
    chunk.s.clear();
    chunk.raw("saeChunk({\"chunk\":");
    chunk.i64(id);
    chunk.raw(",\"prev\":");
    if (prev_of_chunk >= 0) chunk.i64(prev_of_chunk);
    else chunk.raw("null");
    chunk.raw(",\"latents\":[\n");
    chunk_id = id;
  }
  void close_chunk(int64_t next) {
    if (chunk_id < 0) return;
    chunk.raw("],\"next\":");
    if (next >= 0) chunk.i64(next);
    else chunk.raw("null");
    chunk.raw("});\n");
    write_whole(dir + "/" + dashboard_chunk_file(chunk_id * kDashboardChunk), chunk.s);
    prev_of_chunk = last;
    chunk_id = -1;
  }

  void add(const LatentReport& r) {
    if (finished) throw std::logic_error("DashboardWriter::add after finish");
    if (r.latent < 0 || r.latent <= last)
      throw std::invalid_argument("DashboardWriter::add: latent " + std::to_string(r.latent) +
                                  " after latent " + std::to_string(last) + " (latents must come in ascending order)");
    const int64_t id = r.latent / kDashboardChunk;
    if (chunk_id >= 0 && chunk_id != id) close_chunk(r.latent);
    const bool first_in_chunk = chunk_id < 0;
    if (first_in_chunk) open_chunk(id);
    Buf& b = chunk;
    if (!first_in_chunk) b.raw(",\n");
    b.raw("{\"latent\":");
    b.i64(r.latent);
    b.raw(",\"fires\":");
    b.i64(r.fires);
    b.raw(",\"rows\":");
    b.i64(r.rows);
    b.raw(",\"density\":");
    b.real(r.density, kDigits);
    b.raw(",\"max\":");
    b.real(r.max_activation, kDigits);
    b.raw(",\"mean\":");
    b.real(r.mean_activation, kDigits);
    b.raw(",\"hist\":[[");
    for (size_t i = 0; i < r.hist_edges.size(); i++) {
      if (i) b.ch(',');
      b.real(r.hist_edges[i], 6);
    }
    b.raw("],[");
    for (size_t i = 0; i < r.hist_counts.size(); i++) {
      if (i) b.ch(',');
      b.i64(r.hist_counts[i]);
    }
    b.raw("]],\"top\":");
    examples(r.top);
    b.raw(",\"quantiles\":[");
    for (size_t g = 0; g < r.quantiles.size(); g++) {
      if (g) b.ch(',');
      b.ch('{');
      double lo, hi;
      if (quantile_bounds(r, g, lo, hi)) {
        b.raw("\"lo\":");
        b.real(lo, kDigits);
        b.raw(",\"hi\":");
        b.real(hi, kDigits);
        b.ch(',');
      }
      b.raw("\"ex\":");
      examples(r.quantiles[g]);
      b.ch('}');
    }
    b.raw("],\"contrast\":");
    examples(r.contrast);
    b.raw(",\"logits\":");
    if (r.has_logit_lens) {
      b.ch('[');
      scores(r.logit_top);
      b.ch(',');
      scores(r.logit_bottom);
      b.ch(',');
      scores(r.logit_top_corrected);
      b.ch(',');
      scores(r.logit_bottom_corrected);
      b.ch(']');
    } else {
      b.raw("null");
    }
    b.raw(",\"decoder\":");
    neighbours(r.decoder_neighbours);
    b.raw(",\"cofire\":");
    neighbours(r.cofire_neighbours);
    Row row{r.latent, r.fires, r.density, r.max_activation, r.mean_activation, {}, std::nullopt, std::nullopt};
    if (r.explanation) {
      row.explanation = valid_utf8(*r.explanation);
      b.raw(",\"explanation\":");
      b.str(*row.explanation);
    }
    if (r.score) {
      row.score = *r.score;
      b.raw(",\"score\":");
      b.real(*r.score, kDigits);
    }
    if (r.autointerp) {  // docs/autointerp.md: the explanation's failure or the scores of each method
      b.raw(",\"autointerp\":");
      b.raw(autointerp_json(*r.autointerp).dump());
    }
    b.ch('}');
    for (size_t i = 0; i < r.logit_top.size() && i < kIndexTokens; i++) row.toks.push_back(r.logit_top[i].token);
    rows.push_back(std::move(row));
    last = r.latent;
  }

  void write_tokens() {
    Buf b;
    b.raw("saeTokens({");
    bool first = true;
    for (size_t id = 0; id < tokens.size(); id++) {
      if (!used[id]) continue;
      if (!first) b.ch(',');
      first = false;
      b.ch('"');
      b.i64(int64_t(id));
      b.raw("\":");
      b.str(tokens[id]);
      if (id % 16 == 15) b.ch('\n');
    }
    b.raw("});\n");
    write_whole(dir + "/data/tokens.js", b.s);
  }

  void write_index_data() {
    Buf b;
    b.raw("saeIndex({\"rows\":[\n");
    for (size_t i = 0; i < rows.size(); i++) {
      const Row& r = rows[i];
      if (i) b.raw(",\n");
      b.ch('[');
      b.i64(r.latent);
      b.ch(',');
      b.real(r.density, kDigits);
      b.ch(',');
      b.i64(r.fires);
      b.ch(',');
      b.real(r.max, kDigits);
      b.ch(',');
      b.real(r.mean, kDigits);
      b.raw(",[");
      for (size_t k = 0; k < r.toks.size(); k++) {
        if (k) b.ch(',');
        b.i64(r.toks[k]);
      }
      b.raw("],");
      if (r.explanation) b.str(*r.explanation);
      else b.raw("null");
      b.ch(',');
      if (r.score) b.real(*r.score, kDigits);
      else b.raw("null");
      b.ch(']');
    }
    b.raw("]});\n");
    write_whole(dir + "/data/index.js", b.s);
  }

  std::string head(const std::string& title) const {
    return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
           html(title) + "</title>\n<style>" + kCss + "</style>\n</head>\n<body>\n";
  }

  std::string sae_name() const { return summary.sae.empty() ? std::string("SAE") : summary.sae; }

  void write_index_html() {
    const ExplainSummary& s = summary;
    std::string h = head("sae-explain: " + sae_name());
    h += "<h1>sae-explain: " + html(sae_name()) + "</h1>\n<table class=\"summary\">\n";
    auto row = [&](const std::string& k, const std::string& v) {
      if (!v.empty()) h += "<tr><td>" + html(k) + "</td><td>" + html(v) + "</td></tr>\n";
    };
    row("SAE", s.sae);
    row("architecture", s.architecture);
    row("model", s.model);
    row("hook", s.hook);
    row("d_in \u00d7 d_sae", std::to_string(s.d_in) + " \u00d7 " + std::to_string(s.d_sae));
    row("rows (tokens) processed", std::to_string(s.rows));
    if (s.documents > 0) row("documents", std::to_string(s.documents));
    row("latents reported", std::to_string(s.latents_reported));
    row("dead (never fired)", std::to_string(s.dead));
    // autointerp (docs/autointerp.md): each scoring method's two means, side by side.
    if (s.autointerp.is_object())
      for (const auto& [method, a] : s.autointerp.items()) {
        auto num = [](const nlohmann::json& v) {
          if (!v.is_number()) return std::string("-");
          char b[32];
          std::snprintf(b, sizeof b, "%.3f", v.get<double>());
          return std::string(b);
        };
        auto ci = [&](const nlohmann::json& v) {
          return v.is_array() && v.size() == 2 ? " [" + num(v[0]) + ", " + num(v[1]) + "]" : std::string();
        };
        row("autointerp: " + method + " " + a.value("metric", std::string()),
            "uniform mean " + num(a["uniform_mean"]) + ci(a["uniform_ci95"]) + " \u00b7 weighted by firing " +
                num(a["weighted_mean"]) + ci(a["weighted_ci95"]) + " \u00b7 " + std::to_string(a.value("latents", 0)) +
                " latents");
      }
    h += "</table>\n<h2>Firing density</h2>\n";
    if (!s.density_counts.empty() && s.density_edges.size() == s.density_counts.size() + 1) {
      svg::Plot p;
      p.title = "Firing density of the reported latents";
      p.xlabel = "log10(density): the fraction of rows where the latent fires";
      p.ylabel = "latents";
      if (s.dead > 0) p.caption = std::to_string(s.dead) + " dead latents (density 0) are not shown";
      p.width = 640;
      p.height = 320;
      std::vector<double> counts(s.density_counts.begin(), s.density_counts.end());
      h += "<div class=\"density\">" + svg::histogram(s.density_edges, counts, p) + "</div>\n";
    } else {
      h += "<p class=\"muted\">No latent fired.</p>\n";
    }
    h += "<h2>Latents</h2>\n<div class=\"controls\">"
         "<label>filter <input id=\"q\" type=\"search\" placeholder=\"latent (12, 10-20), token or explanation text\"></label>"
         "<label>density from <input id=\"dmin\" class=\"dens\" placeholder=\"e.g. 1e-5\"></label>"
         "<label>to <input id=\"dmax\" class=\"dens\" placeholder=\"e.g. 0.1\"></label>"
         "<span id=\"count\" class=\"muted\"></span></div>\n"
         "<table id=\"latents\"><thead><tr></tr></thead><tbody></tbody></table>\n"
         "<div id=\"pager\" class=\"pager\" hidden><button id=\"prevpage\" type=\"button\">\u2190 previous page</button>"
         "<button id=\"nextpage\" type=\"button\">next page \u2192</button><span id=\"pageinfo\" class=\"muted\"></span></div>\n"
         "<p class=\"muted\">Click a column header to sort. Tokens: a middle dot stands for a space, \u21b5 for a newline. "
         "Written by sae-explain; latents.jsonl beside this page holds every number.</p>\n";
    h += std::string("<script>") + kCommonJs + "</script>\n";
    h += "<script src=\"data/tokens.js\"></script>\n<script src=\"data/index.js\"></script>\n";
    h += std::string("<script>") + kIndexJs + "</script>\n</body></html>\n";
    write_whole(dir + "/index.html", h);
  }

  void write_latent_html() {
    std::string h = head("Latent \u00b7 " + sae_name());
    h += "<div class=\"nav\"><a href=\"index.html\">\u2191 all latents</a><a id=\"prev\">\u2190 previous</a>"
         "<a id=\"next\">next \u2192</a><span class=\"muted\">" + html(sae_name()) +
         (summary.hook.empty() ? "" : " \u00b7 " + html(summary.hook)) + "</span></div>\n<div id=\"main\"></div>\n";
    Buf cfg;
    cfg.raw("var SAE_CHUNK = ");
    cfg.i64(kDashboardChunk);
    cfg.raw(", SAE_FIRST = ");
    cfg.i64(rows.empty() ? 0 : rows.front().latent);
    cfg.raw(", SAE_NAME = ");
    cfg.str(valid_utf8(sae_name()));
    cfg.raw(";\n");
    h += std::string("<script>") + kCommonJs + cfg.s + "</script>\n";
    h += "<script src=\"data/tokens.js\"></script>\n";
    h += std::string("<script>") + kLatentJs + "</script>\n</body></html>\n";
    write_whole(dir + "/latent.html", h);
  }
};

DashboardWriter::DashboardWriter(const std::string& dir, const ExplainSummary& summary,
                                 const std::vector<std::string>& token_text)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.dir = dir;
  m.summary = summary;
  m.tokens.reserve(token_text.size());
  for (const std::string& t : token_text) m.tokens.push_back(valid_utf8(t));
  m.used.assign(token_text.size(), 0);
  m.chunk.s.reserve(size_t(4) << 20);
  const std::string data = dir + "/data";
  if (::mkdir(data.c_str(), 0777) != 0 && errno != EEXIST)
    throw InputError(data + ": cannot create directory (" + std::strerror(errno) + ")");
}

DashboardWriter::~DashboardWriter() = default;

void DashboardWriter::add(const LatentReport& r) { impl_->add(r); }

void DashboardWriter::finish() {
  Impl& m = *impl_;
  if (m.finished) return;
  m.close_chunk(-1);
  m.write_tokens();
  m.write_index_data();
  m.write_index_html();
  m.write_latent_html();
  m.finished = true;
}

}  // namespace sae
