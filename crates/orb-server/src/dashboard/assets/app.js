// orb dashboard: the live event list from /v1/events (Server-Sent Events, signed in by the
// session cookie), and the panels a publication concerns asked to refresh themselves.
(function () {
  "use strict";
  var MAX_LINES = 200;
  var feed = document.getElementById("feed");
  var state = document.getElementById("feed-state");
  if (!feed) return;

  function refresh(id) {
    var el = document.getElementById(id);
    if (el && window.htmx) window.htmx.trigger(el, "refresh");
  }

  function describe(p) {
    var body = p.body;
    if (p.topic.indexOf("$orb.presence.") === 0 && body && typeof body === "object") {
      var id = p.topic.slice("$orb.presence.".length);
      return id + " is " + (body.status || body.state || "?") + (body.reason ? " (" + body.reason + ")" : "");
    }
    if (p.topic.indexOf("$orb.job.") === 0 && body && typeof body === "object") {
      var job = String(body.job || p.topic.slice("$orb.job.".length)).slice(0, 8);
      if (body.device) {
        return "job " + job + ": " + body.device + " " + body.status +
          (typeof body.elapsed_ms === "number" ? " in " + body.elapsed_ms + " ms" : "");
      }
      if (body.ended && body.summary) {
        var parts = [];
        for (var k in body.summary) if (body.summary[k] > 0) parts.push(body.summary[k] + " " + k);
        return "job " + job + " ended: " + (parts.join(", ") || "no targets");
      }
    }
    var text = body === null || body === undefined ? "" : JSON.stringify(body);
    if (text.length > 160) text = text.slice(0, 160) + "…";
    return text;
  }

  function add(p) {
    var li = document.createElement("li");
    var time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    var topic = document.createElement("code");
    topic.textContent = p.topic;
    var text = document.createElement("span");
    text.textContent = " " + describe(p);
    li.appendChild(time);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(topic);
    li.appendChild(text);
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > MAX_LINES) feed.removeChild(feed.lastChild);
  }

  var source = new EventSource("/v1/events?pattern=" + encodeURIComponent("$orb.>"));
  source.onopen = function () {
    state.textContent = "live";
    state.className = "state live";
  };
  source.onerror = function () {
    state.textContent = "reconnecting…";
    state.className = "state down";
  };
  source.addEventListener("pub", function (e) {
    var p;
    try { p = JSON.parse(e.data); } catch (_) { return; }
    if (!p || typeof p.topic !== "string") return;
    add(p);
    if (p.topic.indexOf("$orb.presence.") === 0) refresh("devices");
    if (p.topic.indexOf("$orb.job.") === 0) refresh("jobs");
  });
})();
