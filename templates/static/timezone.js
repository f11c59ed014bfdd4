// Fill the hidden time-zone field with the browser's zone; without JavaScript the server's default stays.
(function () {
  var field = document.getElementById("timezone");
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (field && zone) { field.value = zone; }
  } catch (e) { /* old browser: keep the default */ }
})();
