/* Action pages: forms that submit once, and the progress of a bulk action. */
(function () {
  "use strict";

  // A second click while the first request is on its way does nothing. The
  // server is the real guard (the idempotency key); this only spares a round trip.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.matches || !form.matches("form[data-once]")) return;
    if (form.dataset.sent) { ev.preventDefault(); return; }
    form.dataset.sent = "1";
    form.querySelectorAll("button[type=submit]").forEach(function (b) {
      // Disable after the browser has taken the button's own value.
      setTimeout(function () { b.disabled = true; }, 0);
    });
  });

  var box = document.getElementById("action-progress");
  if (!box) return;
  var url = box.dataset.statusUrl;
  var interval = 1000;

  function set(name, value) {
    document.querySelectorAll("[data-field=" + name + "]").forEach(function (el) {
      el.textContent = value;
    });
  }

  function render(s) {
    var total = s.total || 0;
    var pct = function (n) { return total ? (100 * n / total) : 0; };
    set("state", s.state);
    set("done", s.done);
    set("failed", s.failed);
    set("skipped", s.skipped);
    set("total", total);
    set("processed", s.processed);
    set("result", s.result || "");
    set("seconds_left", Math.ceil(s.seconds_left));
    set("pct", total ? Math.floor(pct(s.processed)) + "%" : (s.is_open ? "…" : "100%"));
    var badge = document.querySelector("[data-field-badge=state]");
    if (badge) { badge.className = "badge st-" + s.state; badge.textContent = s.state; }
    [["done", "succeeded"], ["failed", "failed"], ["skipped", "skipped"]].forEach(function (p) {
      var seg = box.querySelector(".seg.st-" + p[1]);
      if (seg) seg.style.width = pct(s[p[0]]) + "%";
    });
    var countdown = document.getElementById("countdown");
    if (countdown) countdown.hidden = s.state !== "pending";
    var list = document.getElementById("messages-live");
    if (list && s.messages) {
      list.innerHTML = "";
      s.messages.forEach(function (m) {
        var li = document.createElement("li");
        li.textContent = m;
        list.appendChild(li);
      });
      list.closest("section").hidden = s.messages.length === 0;
    }
    box.dataset.state = s.state;
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (s) {
        render(s);
        if (s.is_open) {
          setTimeout(poll, interval);
        } else if (box.dataset.initialOpen === "1") {
          // Finished while we watched: reload once to show the submissions and history.
          window.location.reload();
        }
      })
      .catch(function () { setTimeout(poll, interval * 3); });
  }
  if (box.dataset.initialOpen === "1") poll();
})();
