/* Huizhen: keeping a Socket.IO namespace connected and joined, shared by room.js, notes.js and call.js.

   - A connect the server refuses as 'unavailable' (its database failed) is not retried by
     socket.io-client on its own: it is retried here after a jittered, capped backoff, the page
     saying "Server busy, retrying in 4 s" (t(): the page's language). A transport that drops is retried by socket.io-client
     itself ("Reconnecting…"), and one the server closed (an ended session) is connected again here.
     'unauthorized' (the session ended) sends the user to sign in.
   - A join (or any request) that failed for a reason worth retrying — no ack, a server error, a
     rate limit — is tried again with the same backoff; a refusal (404, 403, bad input) is not.
   - resync(fn, seconds): fn runs every `seconds`, and at once when the tab becomes visible again or
     the network comes back; each page uses it to ask for what it may have missed. */
(function () {
  "use strict";
  var CAP_MS = 15000;        // never wait longer than this between two attempts

  function backoff(attempt, firstMs) {            // full range [d/2, d], d doubling up to CAP_MS
    var d = Math.min(CAP_MS, (firstMs || 1000) * Math.pow(2, attempt));
    return Math.round(d / 2 + Math.random() * d / 2);
  }

  function retryable(err, ack) {
    return !!err || !ack || (!ack.ok && (ack.error === "rate_limited" || ack.error === "server_error" ||
                                          (ack.status || 0) >= 500));
  }

  function signIn() {
    window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
  }

  // Keep `socket` connected; `status(kind, text)` shows what is happening ("down" while not connected).
  function keep(socket, status) {
    var attempts = 0, joinAttempts = 0, timer = null, ticker = null;

    function stopWaiting() { clearTimeout(timer); clearInterval(ticker); timer = ticker = null; }

    function wait(ms, what, then) {
      stopWaiting();
      var until = Date.now() + ms;
      function tick() {
        // Translators: what failed ("Server busy", "Could not join the room"), then the seconds left
        status("down", t("%(what)s, retrying in %(seconds)s s",
                         { what: what, seconds: Math.max(1, Math.ceil((until - Date.now()) / 1000)) }));
      }
      tick();
      ticker = setInterval(tick, 1000);
      timer = setTimeout(function () { stopWaiting(); then(); }, ms);
    }

    socket.on("connect", function () { attempts = 0; stopWaiting(); });
    socket.on("connect_error", function (err) {
      var reason = err && err.message;
      if (reason === "unauthorized") {
        status("down", t("Your session has ended — taking you to sign in…"));
        socket.disconnect();
        signIn();
        return;
      }
      if (socket.active) { status("down", t("Reconnecting…")); return; }  // socket.io-client retries by itself
      var first = err && err.data && err.data.retry_after_ms;
      wait(backoff(attempts++, first), reason === "unavailable" ? t("Server busy") : t("Cannot connect"),
           function () { status("down", t("Reconnecting…")); socket.connect(); });
    });

    // The server closed the connection itself (the session ended, or access to the consult was
    // withdrawn: webapp/sessionbus.py). socket.io-client does not reconnect after that; connect
    // again, so an ended session is answered 'unauthorized' (sign in) and a withdrawn consult is
    // refused at join, and the page says which.
    socket.on("disconnect", function (reason) {
      if (reason !== "io server disconnect") return;
      wait(backoff(attempts++), t("Disconnected by the server"), function () { status("down", t("Reconnecting…")); socket.connect(); });
    });

    window.addEventListener("online", function () {  // the network is back: do not sit out a backoff
      if (!socket.connected && !socket.active) { stopWaiting(); socket.connect(); }
    });

    return {
      // Run `fn` again later (the join failed for a reason worth retrying); only while connected.
      later: function (what, fn) {
        wait(backoff(joinAttempts++), what, function () { if (socket.connected) fn(); });
      },
      joined: function () { joinAttempts = 0; stopWaiting(); },
    };
  }

  function resync(fn, seconds) {
    var ms = Math.max(1, Number(seconds) || 5) * 1000;
    setInterval(function () { if (!document.hidden) fn(); }, ms);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) fn(); });
    window.addEventListener("online", fn);
  }

  window.HuizhenLive = { keep: keep, retryable: retryable, backoff: backoff, resync: resync };
})();
