// Flowmetal web view: local times, confirmations, JSON checks, live states and the live log.
// Reading works without this script; it only adds what needs a browser.
"use strict";
(function () {
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d)) return;
      t.textContent = d.toLocaleString(undefined, {year: "numeric", month: "short", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit"});
      t.title = "UTC " + t.getAttribute("datetime");
    });
  }
  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (ev) {
        var field = f.getAttribute("data-json-field");
        if (field) {
          var area = f.elements[field], err = f.querySelector(".field-error");
          var text = area.value.trim() || "null";
          try { JSON.parse(text); err.hidden = true; }
          catch (e) { ev.preventDefault(); err.textContent = "Not JSON: " + e.message; err.hidden = false; area.focus(); return; }
        }
        if (!window.confirm(f.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
  }
  function countdowns() {
    var els = document.querySelectorAll(".countdown[data-until]");
    if (!els.length) return;
    function tick() {
      els.forEach(function (el) {
        var left = parseFloat(el.getAttribute("data-until")) - Date.now() / 1000;
        el.textContent = left > 0 ? "(in " + Math.ceil(left) + " s)" : "(due)";
      });
    }
    tick(); setInterval(tick, 1000);
  }
  function busy() {
    var a = document.activeElement;
    return a && (a.tagName === "TEXTAREA" || a.tagName === "INPUT" || a.tagName === "SELECT");
  }
  function liveStates() {
    var table = document.querySelector("[data-live-states]");
    if (!table) return;
    var rows = Array.prototype.slice.call(table.querySelectorAll("tr[data-run]"));
    var ids = rows.map(function (r) { return r.getAttribute("data-run"); });
    if (!ids.length) return;
    function poll() {
      fetch("/ui/states?ids=" + encodeURIComponent(ids.join(",")), {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (states) {
          if (!states) return;
          rows.forEach(function (row) {
            var s = states[row.getAttribute("data-run")], el = row.querySelector(".state");
            if (s && el && el.getAttribute("data-state") !== s.state) {
              el.className = "state s-" + s.state; el.setAttribute("data-state", s.state); el.textContent = s.state;
            }
          });
        }).catch(function () {});
    }
    setInterval(poll, 1500);
  }
  function runPage() {
    var page = document.querySelector("[data-run-page]");
    if (!page) return;
    var log = document.getElementById("log");
    if (log && window.EventSource) {
      var es = new EventSource(log.getAttribute("data-src"));
      es.addEventListener("log", function (ev) {
        var line = JSON.parse(ev.data);
        var stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        var div = document.createElement("div");
        div.className = "line " + line.stream;
        div.textContent = line.line;
        log.appendChild(div);
        if (stick) log.scrollTop = log.scrollHeight;
      });
      es.addEventListener("end", function () { es.close(); });
      es.addEventListener("shutdown", function () { es.close(); });
    }
    if (page.getAttribute("data-ended") === "1") return;
    var id = page.getAttribute("data-run-page");
    setInterval(function () {
      if (busy()) return;
      fetch("/ui/runs/" + id + "/state", {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) {
          if (s && (s.state !== page.getAttribute("data-state") || String(s.entries) !== page.getAttribute("data-entries"))) {
            window.location.reload();
          }
        }).catch(function () {});
    }, 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document); confirmations(); countdowns(); liveStates(); runPage();
  });
})();
