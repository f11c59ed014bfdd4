// Digest page: poll the progress endpoint while a digest sends, update the bar, counts and report.
(function () {
  "use strict";
  var box = document.getElementById("progress");
  if (!box) return;
  var url = box.getAttribute("data-url");
  var status = box.getAttribute("data-status");
  var DONE = { sent: true, cancelled: true };
  var IDLE = { draft: true };
  if (DONE[status] || IDLE[status]) return;

  function set(selector, value) {
    var nodes = box.querySelectorAll(selector);
    for (var i = 0; i < nodes.length; i++) nodes[i].textContent = String(value);
  }

  function show(data) {
    var bar = document.getElementById("progress-bar");
    // Counted in emails, not whole percent: the bar moves with the first recorded batch.
    bar.max = data.planned || 100;
    bar.value = data.planned ? data.done : data.percent;
    bar.textContent = data.percent + "%";
    ["percent", "planned", "sent", "failed", "pending", "claimed", "waiting", "phase"].forEach(function (k) {
      set('[data-field="' + k + '"]', data[k]);
    });
    Object.keys(data.report).forEach(function (k) {
      set('[data-report="' + k + '"]', data.report[k]);
    });
    var label = document.getElementById("digest-status");
    if (label) label.textContent = data.status;
    // Actions that no longer apply (send, schedule, cancel) go once the status moves on.
    var actions = document.querySelectorAll("[data-open]");
    for (var i = 0; i < actions.length; i++) {
      var open = actions[i].getAttribute("data-open").split(" ");
      actions[i].hidden = open.indexOf(data.status) < 0;
    }
    box.setAttribute("data-status", data.status);
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("progress: HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        show(data);
        if (!data.finished) window.setTimeout(poll, 700);
      })
      .catch(function () {
        window.setTimeout(poll, 5000);
      });
  }

  poll();
})();
