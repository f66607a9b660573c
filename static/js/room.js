/* Huizhen consult room: chat over Socket.IO. Every message is persisted before it is
   acknowledged; unsent messages wait in an outbox (kept across reloads, per user and consult)
   and are retried with the same client id, so a lost ack never duplicates a message. The outbox
   is sent one message at a time in the order it was written, each numbered (client_seq), so a
   newer message never overtakes an older one; a message the server refuses for good is shown as
   NOT SENT with the reason. History comes in pages: a first join shows the latest page, older
   pages load when the reader scrolls to the top (or presses "Load earlier messages"); after a
   reconnect or any gap in sequence numbers the client fetches every missing page, tracking the
   highest sequence number up to which it has shown everything (never just the highest it has
   seen). Text is rendered as text only. */
(function () {
  "use strict";
  var root = document.getElementById("room");
  if (!root) return;
  var ref = root.dataset.ref;
  var me = Number(root.dataset.me);
  var readOnly = root.dataset.readOnly === "true";
  var list = document.getElementById("messages");
  var banner = document.getElementById("conn-banner");
  var peopleEl = document.getElementById("people");
  var typingEl = document.getElementById("typing");
  var form = document.getElementById("chat-form");
  var input = document.getElementById("chat-input");
  var fileInput = document.getElementById("chat-file");
  var errorEl = document.getElementById("chat-error");

  var lastSeq = 0;           // every message from firstSeq up to lastSeq is shown (no gap below it)
  var firstSeq = 0;          // the oldest message of that run (0: no history page taken yet)
  var maxSeq = 0;            // the newest sequence number known to exist (shown, acked or announced)
  var hasOlder = false;      // the server holds messages before firstSeq
  var moreAfter = false;     // the server said more messages follow the last page it gave
  var caughtUp = false;      // every message up to maxSeq is shown
  var catchingUp = false, loadingOlder = false, epoch = 0, catchUpTries = 0, announceCaughtUp = false;
  var inPage = false;        // taking a page: its caller fetches what is missing once it is done
  var seqs = [];             // every shown sequence number, ascending
  var bySeq = {};            // seq -> element
  var pendingEls = {};       // client_id -> element
  var receipts = {};         // user id -> last read seq
  var names = {};            // user id -> name
  var roles = {};            // user id -> role in this consult (requester, lead_specialist, …, coordinator)
  var joined = false;
  var everConnected = false;
  // this user's outbox for this consult; static/js/session.js removes other users' keys and
  // clears this one at sign-out (after saying what is unsent)
  var outboxKey = "huizhen:outbox:" + me + ":" + ref;
  var box = loadOutbox();      // {next: the next client_seq, items: [{payload, preview, queuedAt, failed?}]}
  var outbox = box.items;
  var inFlight = null;         // the item sent and not answered yet: nothing else goes meanwhile
  var retryTimer = null;
  var connGen = 0;             // answers from a connection that has since dropped are ignored
  var storing = true;          // false once signing out: nothing is written back

  var socket = io("/room", { transports: ["websocket", "polling"], reconnectionDelayMax: 5000 });
  window.huizhenRoom = { socket: socket, state: function () {
    return { lastSeq: lastSeq, outbox: outbox.length, joined: joined,
             failed: outbox.filter(function (o) { return o.failed; }).length };
  } };
  window.huizhenRoom.history = function () {
    return { firstSeq: firstSeq, lastSeq: lastSeq, maxSeq: maxSeq, hasOlder: hasOlder, caughtUp: caughtUp,
             loadingOlder: loadingOlder, shown: seqs.length };
  };

  function loadOutbox() {
    var saved = null;
    try { saved = JSON.parse(localStorage.getItem(outboxKey) || "null"); } catch (e) { saved = null; }
    if (!saved || !Array.isArray(saved.items)) return { next: 1, items: [] };
    var items = saved.items.filter(function (o) {  // only well-formed items of this consult
      return o && o.payload && typeof o.payload.client_id === "string" && o.payload.ref === ref;
    });
    return { next: Math.max(1, Number(saved.next) || 1), items: items };
  }
  function saveOutbox() {
    if (!storing) return;
    try { localStorage.setItem(outboxKey, JSON.stringify(box)); } catch (e) { /* storage full: keep in memory */ }
  }
  document.addEventListener("huizhen:signout", function () { storing = false; });
  function newClientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "c" + Date.now().toString(36) + Math.random().toString(36).slice(2, 12);
  }
  // The page's language, the viewer's zone (<html data-tz>), 24-hour: as the server writes times.
  function fmtTime(iso) { return HZ.fmtTime(iso); }
  function showBanner(kind, text) {
    banner.hidden = false;
    banner.className = "conn-banner " + kind;
    banner.textContent = text;
    if (kind === "up") setTimeout(function () { if (banner.classList.contains("up")) banner.hidden = true; }, 3000);
  }
  function emptyState() {
    var empty = list.querySelector(".empty-chat");
    var hasMessages = list.querySelector(".msg");
    if (!hasMessages && !empty) {
      var li = document.createElement("li");
      li.className = "empty-chat";
      li.textContent = t("No messages yet.");
      list.appendChild(li);
    } else if (hasMessages && empty) {
      empty.remove();
    }
  }

  // A participant's role in words (the people list; a trainee's messages carry the label too).
  function roleLabel(role) {
    switch (role) {
      case "requester": return t("Requesting doctor");
      case "lead_specialist": return t("Lead specialist");
      case "specialist": return t("Invited specialist");
      case "trainee": return t("Trainee");
      case "coordinator": return t("Coordinator");
      default: return "";
    }
  }

  // "A, B and C" in the page's language.
  function nameList(list) {
    try { return new Intl.ListFormat(HZ.lang, { style: "long", type: "conjunction" }).format(list); }
    catch (e) { return list.join(", "); }
  }

  function bubble(m, pending) {
    var li = document.createElement("li");
    var trainee = (m.sender_role || (m.sender_id === me ? roles[me] : null)) === "trainee";
    li.className = "msg" + (m.sender_id === me ? " mine" : "") + (pending ? " pending" : "") + (trainee ? " trainee" : "");
    var meta = document.createElement("div");
    meta.className = "meta";
    var who = document.createElement("span");
    who.textContent = m.sender_id === me ? t("You") : (m.sender_name || "");
    if (trainee) {  // a trainee's question: marked for everyone, from the role it was written in
      var label = document.createElement("span");
      label.className = "badge trainee-label";
      label.textContent = t("Trainee");
      who.appendChild(document.createTextNode(" "));
      who.appendChild(label);
    }
    var when = document.createElement("span");
    when.textContent = pending ? t("sending…") : fmtTime(m.created_at);
    meta.appendChild(who);
    meta.appendChild(when);
    li.appendChild(meta);
    if (m.body) {
      var body = document.createElement("div");
      body.className = "body";
      body.textContent = m.body;
      li.appendChild(body);
    }
    if (m.attachment) {
      var a = document.createElement("a");
      a.href = m.attachment.url;
      a.target = "_blank";
      a.rel = "noopener";
      if (m.attachment.content_type.indexOf("image/") === 0) {
        var img = document.createElement("img");
        img.className = "chat-thumb";
        img.src = m.attachment.url;
        img.alt = m.attachment.name;
        img.loading = "lazy";
        img.addEventListener("load", function () {  // the bubble grew: stay at the bottom if we were
          if (list.scrollHeight - list.scrollTop - list.clientHeight < img.clientHeight + 80) list.scrollTop = list.scrollHeight;
        });
        a.appendChild(img);
      } else {
        a.textContent = "📄 " + m.attachment.name;
      }
      li.appendChild(a);
    }
    if (m.sender_id === me) {
      var seen = document.createElement("div");
      seen.className = "seen";
      li.appendChild(seen);
    }
    li.dataset.clientId = m.client_id;
    if (m.seq) li.dataset.seq = m.seq;
    return li;
  }

  // --- the message list: ordered by sequence number, each message once ---------------------------
  function insertOrdered(li, seq) {
    var lo = 0, hi = seqs.length;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (seqs[mid] < seq) lo = mid + 1; else hi = mid; }
    if (lo < seqs.length) list.insertBefore(li, bySeq[seqs[lo]]);
    else {
      var firstPending = list.querySelector(".msg.pending");
      if (firstPending) list.insertBefore(li, firstPending); else list.appendChild(li);
    }
    seqs.splice(lo, 0, seq);
  }

  function advance() {                         // extend the run of shown messages as far as it goes
    if (!firstSeq) return;
    while (bySeq[lastSeq + 1]) lastSeq++;
  }

  function accept(m) {
    // One of ours, now stored: its pending bubble goes, also when the message is already shown (its
    // first ack was lost with a dropped connection and the rejoin's flush showed the bubble again).
    var pendingEl = m.sender_id === me ? pendingEls[m.client_id] : null;
    if (pendingEl) { pendingEl.remove(); delete pendingEls[m.client_id]; }
    if (bySeq[m.seq]) { emptyState(); return; }  // already shown: never twice
    var li = bubble(m, false);
    insertOrdered(li, m.seq);
    bySeq[m.seq] = li;
    if (m.seq > maxSeq) maxSeq = m.seq;
    advance();
    emptyState();
    renderEdge();
    if (joined && !inPage && maxSeq > lastSeq) catchUp();  // a gap below it: fetch every missing page
  }

  function nearBottom() { return list.scrollHeight - list.scrollTop - list.clientHeight < 60; }
  function toBottom() { list.scrollTop = list.scrollHeight; }

  function acceptAll(messages, stick) {
    var follow = stick || nearBottom();
    inPage = true;
    try { messages.slice().sort(function (a, b) { return a.seq - b.seq; }).forEach(accept); } finally { inPage = false; }
    if (follow) toBottom();
    renderReceipts();
    markRead();
  }

  // A page read forwards from `after` holds every message after it up to its last one.
  function takeForward(after, messages, stick) {
    acceptAll(messages, stick);
    if (messages.length && after <= lastSeq) lastSeq = Math.max(lastSeq, messages[messages.length - 1].seq);
    advance();
  }

  function setCaughtUp(value) {
    caughtUp = value;
    if (value && announceCaughtUp) { announceCaughtUp = false; showBanner("up", t("Connection restored. Messages are up to date.")); }
  }

  // Fetch page after page after lastSeq until every message up to maxSeq (and whatever the server
  // says follows) is shown. One request at a time; a reconnect starts a new round (epoch).
  function catchUp() {
    if (catchingUp || !joined) return;
    if (lastSeq >= maxSeq && !moreAfter) { setCaughtUp(true); return; }
    setCaughtUp(false);
    catchingUp = true;
    var after = lastSeq, mine = epoch;
    socket.timeout(15000).emit("backfill", { ref: ref, after_seq: after }, function (err, ack) {
      if (mine !== epoch) return;              // a reconnect began a new round meanwhile
      catchingUp = false;
      if (err || !ack || !ack.ok) {            // retry, backing off; a reconnect retries at once
        catchUpTries++;
        setTimeout(function () { if (mine === epoch) catchUp(); }, Math.min(30000, 1000 * Math.pow(2, catchUpTries)));
        return;
      }
      catchUpTries = 0;
      moreAfter = !!ack.more;
      if (ack.last_seq > maxSeq) maxSeq = ack.last_seq;
      takeForward(after, ack.messages, false);
      if (!ack.messages.length && !ack.more) maxSeq = lastSeq;  // the server has nothing after lastSeq
      catchUp();
    });
  }

  function backfill() { catchUp(); }           // kept for callers: fetch whatever is missing

  // The resync check: live events can be lost without a disconnect (the message queue between
  // nodes was down), so every RESYNC_SECONDS, and when the tab is shown again or the network
  // returns, ask this node for the room's latest stored seq and fetch anything not shown yet.
  var resyncSeconds = Number(root.dataset.resyncSeconds) || 5;
  function checkHead() {
    if (!joined || catchingUp) return;
    socket.timeout(10000).emit("head", { ref: ref }, function (err, ack) {
      if (err || !ack || !ack.ok || !joined) return;  // the next check asks again
      if (ack.last_seq > maxSeq) maxSeq = ack.last_seq;
      catchUp();
    });
  }
  HuizhenLive.resync(checkHead, resyncSeconds);

  // The join ack: the latest page (first join, nothing shown yet), or the page after lastSeq.
  function takeJoinBacklog(ack, reconnected) {
    epoch++;
    catchingUp = false;
    loadingOlder = false;
    catchUpTries = 0;
    announceCaughtUp = reconnected;
    var messages = ack.messages.slice().sort(function (a, b) { return a.seq - b.seq; });
    if (ack.last_seq > maxSeq) maxSeq = ack.last_seq;
    moreAfter = !!ack.more;
    if (!lastSeq) {                            // nothing shown yet: the latest page is where we start
      firstSeq = messages.length ? messages[0].seq : 1;
      lastSeq = messages.length ? messages[messages.length - 1].seq : 0;
      hasOlder = !!ack.has_more;
      acceptAll(messages, true);
      advance();
    } else {
      takeForward(lastSeq, messages, false);
    }
    emptyState();
    renderEdge();
    catchUp();
    fillViewport();
  }

  // --- older pages: scrolled to the top, or the "Load earlier messages" button ----------------------
  var edge = document.createElement("li");
  edge.className = "history-edge";
  edge.hidden = true;
  var olderBtn = document.createElement("button");
  olderBtn.type = "button";
  olderBtn.className = "btn secondary small";
  olderBtn.id = "load-earlier";
  var edgeNote = document.createElement("span");
  edgeNote.className = "muted small";
  edge.appendChild(olderBtn);
  edge.appendChild(edgeNote);
  list.insertBefore(edge, list.firstChild);
  olderBtn.addEventListener("click", loadOlder);
  list.addEventListener("scroll", function () { if (list.scrollTop < 80) loadOlder(); });

  function renderEdge() {
    edge.hidden = seqs.length === 0;
    olderBtn.hidden = !hasOlder;
    olderBtn.disabled = loadingOlder;
    olderBtn.textContent = loadingOlder ? t("Loading earlier messages…") : t("Load earlier messages");
    if (!hasOlder) edgeNote.textContent = t("This is the start of the conversation.");
  }

  function fillViewport() {                    // a short page that cannot be scrolled: load more at once
    if (hasOlder && list.scrollHeight <= list.clientHeight) loadOlder();
  }

  function loadOlder() {
    if (loadingOlder || !hasOlder || !joined || !firstSeq) return;
    loadingOlder = true;
    edgeNote.textContent = "";
    renderEdge();
    var before = firstSeq, mine = epoch;
    socket.timeout(15000).emit("history", { ref: ref, before_seq: before }, function (err, ack) {
      if (mine !== epoch) return;
      loadingOlder = false;
      if (err || !ack || !ack.ok) {
        edgeNote.textContent = t("Earlier messages could not be loaded; try again.");
        renderEdge();
        return;
      }
      var fromBottom = list.scrollHeight - list.scrollTop;  // keep what the reader sees where it is
      inPage = true;
      try { ack.messages.forEach(accept); } finally { inPage = false; }
      if (ack.messages.length) firstSeq = Math.min(firstSeq, ack.messages[0].seq);
      hasOlder = !!ack.has_more;
      renderEdge();
      list.scrollTop = list.scrollHeight - fromBottom;
      renderReceipts();
      catchUp();
      fillViewport();
    });
  }

  // Under my messages: who has read up to them. From the newest of my messages back, a message says
  // "Seen by …" when more people have seen it than the next newer one of mine (so each reader is
  // counted under the latest message they reached). One reader: "Seen by <name>"; more: "Seen by N",
  // the names on hover (title) and, for screen readers and keyboard focus, in the text itself.
  function renderReceipts() {
    var others = Object.keys(receipts).filter(function (uid) { return Number(uid) !== me; });
    var mine = list.querySelectorAll(".msg.mine[data-seq]");
    list.querySelectorAll(".msg.mine .seen").forEach(function (el) {
      el.textContent = ""; el.removeAttribute("title"); el.removeAttribute("tabindex");
    });
    var shown = 0;
    for (var i = mine.length - 1; i >= 0; i--) {
      var seq = Number(mine[i].dataset.seq);
      var readers = others.filter(function (uid) { return receipts[uid] >= seq; });
      if (readers.length <= shown) continue;
      shown = readers.length;
      var el = mine[i].querySelector(".seen");
      var who = readers.map(function (uid) { return names[uid] || t("another participant"); });
      if (readers.length === 1) {
        el.textContent = names[readers[0]] ? t("Seen by %(name)s", { name: names[readers[0]] }) : t("Seen by the other doctor");
        continue;
      }
      var all = t("Seen by %(name)s", { name: nameList(who) });
      el.title = all;
      el.tabIndex = 0;  // focus shows the names, as hovering does
      var count = document.createElement("span");
      count.className = "seen-count";
      count.setAttribute("aria-hidden", "true");
      count.textContent = t("Seen by %(count)s", { count: readers.length });
      var full = document.createElement("span");
      full.className = "seen-names";
      full.textContent = all;
      el.appendChild(count);
      el.appendChild(full);
    }
  }

  var lastReadSent = 0;
  function markRead() {
    if (!joined || document.hidden || lastSeq <= lastReadSent) return;
    var seq = lastSeq;
    socket.emit("read", { ref: ref, seq: seq }, function (ack) { if (ack && ack.ok) lastReadSent = seq; });
  }
  document.addEventListener("visibilitychange", markRead);

  function renderPeople(people) {
    peopleEl.textContent = "";
    people.forEach(function (p) {
      names[p.user_id] = p.name;
      if (p.role) roles[p.user_id] = p.role;
      var li = document.createElement("li");
      li.className = "online";
      li.dataset.userId = p.user_id;
      var name = document.createElement("span");
      name.className = "person-name";
      name.textContent = p.user_id === me ? t("%(name)s (you)", { name: p.name }) : p.name;
      li.appendChild(name);
      var role = roleLabel(p.role || roles[p.user_id]);
      if (role) {
        var r = document.createElement("span");
        r.className = "role";
        r.textContent = role;
        li.appendChild(document.createTextNode(" "));
        li.appendChild(r);
      }
      peopleEl.appendChild(li);
    });
  }

  // The consult's participants, present or not (the join's answer): names and roles of readers.
  function takeParticipants(participants) {
    (participants || []).forEach(function (p) {
      if (!names[p.user_id]) names[p.user_id] = p.name;
      roles[p.user_id] = p.role;
    });
  }

  function removeItem(clientId) {
    var idx = outbox.findIndex(function (o) { return o.payload.client_id === clientId; });
    if (idx >= 0) outbox.splice(idx, 1);
    saveOutbox();
  }
  function pendingBubble(item) {
    var li = pendingEls[item.payload.client_id];
    if (!li) {
      li = bubble({ sender_id: me, body: item.payload.body, client_id: item.payload.client_id, attachment: item.preview }, true);
      pendingEls[item.payload.client_id] = li;
      list.appendChild(li);
      emptyState();
    }
    return li;
  }
  function setWhen(item, text) {
    var el = pendingEls[item.payload.client_id];
    if (el) el.querySelector(".meta span:last-child").textContent = text;
  }
  function copyText(text, button) {
    function done() { button.textContent = t("Copied"); }
    function fallback() {  // no clipboard API (or refused): select it in a textarea and copy
      var ta = document.createElement("textarea");
      ta.value = text;
      ta.setAttribute("readonly", "");
      ta.className = "copy-buffer";
      document.body.appendChild(ta);
      ta.select();
      try { if (document.execCommand("copy")) done(); } catch (e) { /* the text stays selectable in the bubble */ }
      ta.remove();
    }
    if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(done, fallback);
    else fallback();
  }
  // A message that can no longer be sent stays in the chat (and in the outbox, until dismissed)
  // marked NOT SENT with the server's reason, with its text to copy.
  function showFailed(item) {
    var li = pendingBubble(item);
    li.classList.remove("pending");
    li.classList.add("failed");
    setWhen(item, t("NOT SENT"));
    if (li.querySelector(".not-sent")) return;
    var note = document.createElement("div");
    note.className = "not-sent";
    var why = document.createElement("span");
    why.className = "reason";
    why.textContent = t("Not sent: %(reason)s", { reason: item.failed });  // the server's reason, already translated
    var copy = document.createElement("button");
    copy.type = "button";
    copy.className = "linkish";
    copy.textContent = t("Copy text");
    copy.addEventListener("click", function () { copyText(item.payload.body || (item.preview && item.preview.name) || "", copy); });
    var dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "linkish";
    dismiss.textContent = t("Dismiss");
    dismiss.addEventListener("click", function () {
      removeItem(item.payload.client_id);
      delete pendingEls[item.payload.client_id];
      li.remove();
      emptyState();
    });
    note.appendChild(why);
    note.appendChild(copy);
    note.appendChild(dismiss);
    li.appendChild(note);
  }
  function renumberFrom(last) {
    // The server has a message of ours numbered `last` (another window, or a browser whose
    // counter was cleared at sign-out): number what is still waiting after it, in the same order.
    box.next = Math.max(box.next, last + 1);
    outbox.forEach(function (o) { if (!o.failed) o.payload.client_seq = box.next++; });
    saveOutbox();
  }
  function retryLater(wait) {
    retryTimer = setTimeout(function () { retryTimer = null; pump(); }, wait);
  }

  // Send the outbox ONE message at a time, oldest first: the next goes only when the server has
  // answered for this one, so the sender's order is the order the messages were written.
  function pump() {
    if (!joined || inFlight || retryTimer) return;
    var item = outbox.find(function (o) { return !o.failed; });
    if (!item) return;
    inFlight = item;
    var gen = connGen;
    var payload = Object.assign({}, item.payload, { waited_ms: Math.max(0, Date.now() - (item.queuedAt || Date.now())) });
    socket.timeout(10000).emit("send", payload, function (err, ack) {
      if (gen !== connGen) return;                // that connection dropped: the rejoin sends it again
      inFlight = null;
      if (err) { retryLater(2000); return; }      // no answer: try the same message again
      if (ack && ack.ok) {
        item.tries = 0;
        removeItem(item.payload.client_id);
        var before = lastSeq;  // a gap below our own message: fetch it (accept() moves lastSeq)
        accept(ack.message);
        if (ack.message.seq > before + 1) backfill(before);
        renderReceipts();
        pump();
      } else if (ack && ack.error === "out_of_order" && typeof ack.last_client_seq === "number"
                 && (item.renumbered || 0) < 3) {
        item.renumbered = (item.renumbered || 0) + 1;
        renumberFrom(ack.last_client_seq);
        pump();
      } else if (ack && (ack.error === "rate_limited" || ack.status >= 500)) {
        // Not refused, only not stored yet (too fast, or the server failed): keep it at the head
        // of the outbox and try again, backing off; the client id makes a repeat harmless.
        item.tries = (item.tries || 0) + 1;
        if (ack.error !== "rate_limited") setWhen(item, t("retrying…"));
        retryLater(ack.error === "rate_limited" ? 1200 : Math.min(30000, 1000 * Math.pow(2, item.tries - 1)));
      } else {
        item.failed = (ack && ack.message) || t("The message could not be sent.");
        saveOutbox();
        showFailed(item);
        if (errorEl) errorEl.textContent = item.failed;
        pump();
      }
    });
  }

  function flushOutbox() {
    outbox.forEach(function (item) { if (item.failed) showFailed(item); else pendingBubble(item); });
    pump();
  }

  function queue(payload, preview) {
    payload.client_seq = box.next++;
    var item = { payload: payload, preview: preview || null, queuedAt: Date.now() };
    outbox.push(item);
    saveOutbox();
    pendingBubble(item);
    list.scrollTop = list.scrollHeight;
    pump();
  }

  // Reconnect after a refused connect, retry a failed join, both with backoff (static/js/live.js).
  var live = HuizhenLive.keep(socket, showBanner);
  function join() {
    socket.timeout(15000).emit("join", { ref: ref, after_seq: lastSeq }, function (err, ack) {
      if (joined || !socket.connected) return;  // a late answer, or the connection went meanwhile
      if (HuizhenLive.retryable(err, ack)) { live.later(t("Could not join the room"), join); return; }
      if (!ack.ok) {
        showBanner("down", ack.message || t("You cannot join this room."));
        return;
      }
      live.joined();
      joined = true;
      receipts = {};
      Object.keys(ack.receipts).forEach(function (k) { receipts[k] = ack.receipts[k]; });
      takeParticipants(ack.participants);
      presenceRev = ack.presence_rev || 0;
      renderPeople(ack.people);
      if (everConnected) showBanner("sync", t("Connection restored. Fetching missed messages…"));
      takeJoinBacklog(ack, everConnected);
      everConnected = true;
      flushOutbox();  // also when read-only: the server says for each whether it was stored
    });
  }
  socket.on("connect", join);
  socket.on("disconnect", function () {
    joined = false;
    connGen++;            // the message in flight (if any) is sent again after the rejoin
    inFlight = null;
    clearTimeout(retryTimer);
    retryTimer = null;
    clearTyping();  // nobody's presence or typing is known while we are cut off
    peopleEl.querySelectorAll("li").forEach(function (li) { li.classList.remove("online"); });
    showBanner("down", t("Connection lost — reconnecting. Messages you write will be sent when it is back."));
  });
  socket.on("message", function (m) {
    if (m.sender_id !== me) clearTyping(m.sender_id);  // the message they were typing has arrived
    var follow = nearBottom();
    accept(m);                                 // a gap below it: every missing page is fetched, in order
    if (follow) toBottom();
    markRead();
  });
  // Each node sends the room's people across the cluster with the revision it read them at; a list
  // sent by one node can arrive after a newer one sent by another, so an older revision is ignored.
  var presenceRev = 0;
  socket.on("presence", function (data) {
    if (data.rev) {
      if (data.rev < presenceRev) return;
      presenceRev = data.rev;
    }
    renderPeople(data.people);
  });
  socket.on("read", function (data) {
    receipts[data.user_id] = Math.max(receipts[data.user_id] || 0, data.seq);
    renderReceipts();
  });
  // Who is typing, each for 5 s after their last signal (or until their message or "stopped" arrives).
  var typingTimers = {};
  var typers = [];           // [{id, name}] in the order they started
  function showTyping() {
    var who = typers.map(function (p) { return p.name; });
    typingEl.textContent = !who.length ? "" : who.length === 1 ? t("%(name)s is typing…", { name: who[0] })
      : t("%(names)s are typing…", { names: nameList(who) });
  }
  function clearTyping(userId) {
    if (userId === undefined) {
      Object.keys(typingTimers).forEach(function (k) { clearTimeout(typingTimers[k]); });
      typingTimers = {};
      typers = [];
    } else {
      clearTimeout(typingTimers[userId]);
      delete typingTimers[userId];
      typers = typers.filter(function (p) { return p.id !== userId; });
    }
    showTyping();
  }
  socket.on("typing", function (data) {
    if (!data.typing) { clearTyping(data.user_id); return; }
    clearTimeout(typingTimers[data.user_id]);
    if (!typers.some(function (p) { return p.id === data.user_id; })) typers.push({ id: data.user_id, name: data.name });
    showTyping();
    typingTimers[data.user_id] = setTimeout(function () { clearTyping(data.user_id); }, 5000);
  });

  if (form && !readOnly) {
    var typingSent = 0, stopTimer = null;
    input.addEventListener("input", function () {
      var now = Date.now();
      if (joined && now - typingSent > 2000) { socket.emit("typing", { ref: ref, typing: true }); typingSent = now; }
      clearTimeout(stopTimer);
      stopTimer = setTimeout(function () { if (joined) socket.emit("typing", { ref: ref, typing: false }); typingSent = 0; }, 3000);
    });
    input.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      errorEl.textContent = "";
      var text = input.value.trim();
      if (!text) return;
      clearTimeout(stopTimer);  // sent: no longer typing
      if (joined && typingSent) socket.emit("typing", { ref: ref, typing: false });
      typingSent = 0;
      queue({ ref: ref, client_id: newClientId(), body: text });
      input.value = "";
    });
    fileInput.addEventListener("change", function () {
      var file = fileInput.files[0];
      if (!file) return;
      errorEl.textContent = t("Uploading %(name)s…", { name: file.name });
      var data = new FormData();
      data.append("file", file);
      data.append("csrf_token", root.dataset.csrf);
      fetch(root.dataset.uploadUrl, { method: "POST", body: data, headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
        .then(function (res) {
          fileInput.value = "";
          if (!res.ok) { errorEl.textContent = res.body.message || t("Upload refused."); return; }
          errorEl.textContent = "";
          queue({ ref: ref, client_id: newClientId(), body: "", attachment_id: res.body.id },
                { url: res.body.url, name: res.body.name, content_type: res.body.content_type });
        })
        .catch(function () { errorEl.textContent = t("Upload failed: check the connection and try again."); });
    });
  }
  flushOutbox();  // what waits from before a reload is shown at once (sent after the join)
  emptyState();
})();
