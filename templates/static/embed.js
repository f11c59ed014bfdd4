// The optional script of the "subscribe here" box on a publisher's page: it sends the box's form in the
// background and shows the answer in place, so the reader never leaves the article. Without it (or when
// the request fails) the form posts as plain HTML and the reader sees the newsletter's own page.
(function () {
  "use strict";
  // The one word the script shows before the newsletter answers (the answer itself is translated there).
  var SENDING = { en: "Sending…", es: "Enviando…" };
  function attach(form) {
    if (form.getAttribute("data-newsletter-ready")) { return; }
    form.setAttribute("data-newsletter-ready", "1");
    var status = document.createElement("p");
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    status.className = "newsletter-status";
    form.insertAdjacentElement("afterend", status);
    form.addEventListener("submit", function (event) {
      if (!window.fetch || !window.URLSearchParams) { return; }
      event.preventDefault();
      var data = new FormData(form);
      try { data.set("timezone", Intl.DateTimeFormat().resolvedOptions().timeZone || ""); } catch (e) { /* keep the default */ }
      data.set("return_to", window.location.href);
      // The answer comes in the box's language (its `lang` field), else the publisher's page's.
      if (!data.get("lang") && document.documentElement.lang) { data.set("lang", document.documentElement.lang); }
      var lang = String(data.get("lang") || "").toLowerCase().split("-")[0];
      var button = form.querySelector("button[type=submit], button:not([type])");
      if (button) { button.disabled = true; }
      status.textContent = SENDING[lang] || SENDING.en;
      fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(data),
        headers: { "Accept": "application/json" },
        credentials: "omit",
        mode: "cors"
      }).then(function (response) {
        return response.json().then(function (answer) { return [response, answer]; });
      }).then(function (pair) {
        var answer = pair[1];
        status.textContent = answer.title + ": " + answer.message;
        if (answer.ok) { form.hidden = true; }
        if (button) { button.disabled = false; }
      }).catch(function () {
        // Blocked or offline: send the plain form instead, to the newsletter's own page.
        status.textContent = "";
        form.submit();
      });
    });
  }
  function start() {
    var forms = document.querySelectorAll("form[data-newsletter-box]");
    for (var i = 0; i < forms.length; i++) { attach(forms[i]); }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
