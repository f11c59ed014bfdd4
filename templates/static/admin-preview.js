// Digest preview: each frame as tall as the email in it, so nothing is cut off (the frames are
// sandboxed without scripts; allow-same-origin only lets this page measure them).
(function () {
  "use strict";
  function fit(frame) {
    try {
      var doc = frame.contentDocument;
      if (!doc || !doc.documentElement) return;
      frame.style.height = Math.max(doc.documentElement.scrollHeight, doc.body ? doc.body.scrollHeight : 0) + 2 + "px";
    } catch (e) {
      /* not measurable: keep the tall default */
    }
  }
  var frames = document.querySelectorAll("iframe.preview-frame");
  for (var i = 0; i < frames.length; i++) {
    (function (frame) {
      frame.addEventListener("load", function () { fit(frame); });
      fit(frame);
      window.addEventListener("resize", function () { fit(frame); });
    })(frames[i]);
  }
})();
