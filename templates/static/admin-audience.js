// Digest page: while the editor ticks the audience boxes, say how many readers it would reach.
(function () {
  "use strict";
  var form = document.getElementById("audience-form");
  var out = document.getElementById("audience-would");
  if (!form || !out) return;
  var url = form.getAttribute("data-count-url");
  var asked = 0;
  function update() {
    var params = new URLSearchParams();
    var boxes = form.querySelectorAll("input[type=checkbox]:checked");
    for (var i = 0; i < boxes.length; i++) params.append(boxes[i].name, boxes[i].value === "1" ? "true" : boxes[i].value);
    var mine = ++asked;
    fetch(url + "?" + params.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (answer) {
        if (mine !== asked) return;
        out.textContent = answer.ok
          ? "With this audience: " + answer.body.total.toLocaleString("en") + " readers."
          : answer.body.detail;
      })
      .catch(function () { out.textContent = ""; });
  }
  form.addEventListener("change", update);
})();
