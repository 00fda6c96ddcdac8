/* prodmon log viewer: live refresh, "show full line", and #L<n> links to lines
   on another page. No dependencies. Log text only ever reaches the DOM through
   textContent; class names come from the server's fixed vocabulary and are
   checked again here. */
(function () {
  "use strict";
  var view = document.getElementById("logview");
  if (!view) return;
  var log = document.getElementById("log");
  var status = document.getElementById("lv-status");
  var linesUrl = view.getAttribute("data-lines-url");
  var SAFE_CLASS = /^[a-z0-9 -]*$/;
  var POLL_MS = 5000;
  var MAX_ROWS = 6000;

  function safeClass(css) { return SAFE_CLASS.test(css || "") ? css : ""; }

  function fillText(span, segments) {
    while (span.firstChild) span.removeChild(span.firstChild);
    segments.forEach(function (seg) {
      var text = String(seg[0]), css = safeClass(seg[1]), hit = seg[2];
      if (!css && !hit) { span.appendChild(document.createTextNode(text)); return; }
      var el = document.createElement(hit ? "mark" : "span");
      if (css) el.className = css;
      el.textContent = text;
      span.appendChild(el);
    });
  }

  function fmtBytes(n) {
    if (n < 1024) return n + " bytes";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KB";
    return (n / 1048576).toFixed(1) + " MB";
  }

  function buildRow(line) {
    var n = Number(line.n), row = document.createElement("div");
    var level = ["info", "warning", "error"].indexOf(line.level) >= 0 ? line.level : "info";
    row.className = "ln lv-" + level + (line.gap ? " gap" : "") + (line.partial ? " partial" : "");
    row.id = "L" + n;
    row.setAttribute("data-offset", String(Number(line.offset)));
    row.setAttribute("data-n", String(n));
    var a = document.createElement("a");
    a.className = "n";
    a.href = "#L" + n;
    a.textContent = String(n);
    row.appendChild(a);
    var t = document.createElement("span");
    t.className = "t";
    fillText(t, line.segments || []);
    if (line.truncated) {
      var cut = document.createElement("span");
      cut.className = "cut";
      cut.textContent = "…";
      t.appendChild(cut);
    }
    row.appendChild(t);
    if (line.truncated) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "more";
      b.setAttribute("data-offset", String(Number(line.offset)));
      b.setAttribute("data-n", String(n));
      b.textContent = "show full line (" + fmtBytes(Number(line.content_length)) + ")";
      row.appendChild(b);
    }
    return row;
  }

  function getJSON(params) {
    var url = linesUrl + "?" + new URLSearchParams(params).toString();
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); });
  }

  /* "show full line": fetch the line (capped server-side) and render it in place */
  view.addEventListener("click", function (ev) {
    var btn = ev.target.closest("button.more");
    if (!btn) return;
    btn.disabled = true;
    btn.textContent = "loading…";
    getJSON({ offset: btn.getAttribute("data-offset"), line: btn.getAttribute("data-n"), full: "1" })
      .then(function (data) {
        var line = data.lines[0], row = btn.parentNode, t = row.querySelector(".t");
        if (!line) { btn.textContent = "gone"; return; }
        fillText(t, line.segments || []);
        t.classList.add("full");
        if (line.truncated) {
          var note = document.createElement("span");
          note.className = "cut";
          note.textContent = " … (first " + fmtBytes(data.cap) + " shown; download the log for the rest)";
          t.appendChild(note);
        }
        btn.remove();
      })
      .catch(function (err) { btn.disabled = false; btn.textContent = "retry (" + err.message + ")"; });
  });

  /* a #L<n> link to a line that is not on this page: open the page that has it */
  function followHash() {
    var m = /^#L(\d+)$/.exec(location.hash);
    if (!m || document.getElementById("L" + m[1])) return;
    var params = new URLSearchParams(location.search);
    if (params.get("line") === m[1]) return;
    params.delete("from");
    params.set("line", m[1]);
    location.replace(view.getAttribute("data-viewer-url") + "?" + params.toString() + location.hash);
  }
  window.addEventListener("hashchange", followHash);
  followHash();
  // The last page opens at its end, like `tail`, unless a line was linked.
  if (log && !location.hash && view.getAttribute("data-tail") === "1") {
    log.scrollTop = log.scrollHeight;
  }

  /* live refresh while the job runs and the last page is shown */
  if (view.getAttribute("data-live") !== "1") return;
  var nextOffset = Number(view.getAttribute("data-next-offset"));
  var nextLine = Number(view.getAttribute("data-next-line"));
  var container = log;
  if (!container) {
    container = document.createElement("div");
    container.className = "log";
    container.id = "log";
    container.setAttribute("role", "log");
    view.insertBefore(container, status);
  }

  function setStatus(text, live) {
    while (status.firstChild) status.removeChild(status.firstChild);
    if (live) {
      var dot = document.createElement("span");
      dot.className = "live-dot";
      status.appendChild(dot);
    }
    status.appendChild(document.createTextNode(text));
  }

  function poll() {
    if (document.hidden) { setTimeout(poll, POLL_MS); return; }
    var atBottom = container.scrollTop + container.clientHeight >= container.scrollHeight - 8;
    getJSON({ offset: nextOffset, line: nextLine, limit: 2000 })
      .then(function (data) {
        container.querySelectorAll(".ln.partial").forEach(function (row) { row.remove(); });
        var frag = document.createDocumentFragment();
        data.lines.forEach(function (line) { frag.appendChild(buildRow(line)); });
        container.appendChild(frag);
        while (container.children.length > MAX_ROWS) container.removeChild(container.firstChild);
        nextOffset = data.next_offset;
        nextLine = data.next_line;
        var range = document.getElementById("lv-range");
        var rows = container.querySelectorAll(".ln");
        if (range && rows.length) {
          range.textContent = "lines " + rows[0].getAttribute("data-n") + "–" +
            rows[rows.length - 1].getAttribute("data-n") + " · " + fmtBytes(data.log_bytes);
        }
        if (atBottom) container.scrollTop = container.scrollHeight;
        var when = new Date().toISOString().slice(11, 19);
        if (data.running || data.more) {
          setStatus("following the running job · updated " + when + " UTC", true);
          setTimeout(poll, data.more ? 200 : POLL_MS);
        } else {
          setStatus("the job has ended · reload for the final view", false);
        }
      })
      .catch(function (err) {
        setStatus("live refresh paused (" + err.message + "); retrying", false);
        setTimeout(poll, POLL_MS * 3);
      });
  }
  setTimeout(poll, POLL_MS);
})();
