/* Huizhen video call: peer-to-peer WebRTC between the consult's two doctors, signaled through
   the /call Socket.IO namespace with trickle ICE and "perfect negotiation" (the rural doctor is
   the polite peer). ICE servers (STUN/TURN with short-lived credentials) come from Huizhen.
   The call restarts ICE when the network drops, re-negotiates when the other side reloads,
   can fall back to audio only, and reports setup time, relay use and quality to the server. */
(function () {
  "use strict";
  var root = document.getElementById("call");
  if (!root) return;
  var ref = root.dataset.ref;
  var forceRelay = root.dataset.forceRelay === "true";
  var el = function (id) { return document.getElementById(id); };
  var localVideo = el("call-local"), remoteVideo = el("call-remote");
  var statusEl = el("call-status"), peerStateEl = el("call-peer-state"), qualityEl = el("call-quality");
  var joinBtn = el("call-join"), leaveBtn = el("call-leave"), muteBtn = el("call-mute"), camBtn = el("call-camera");
  var audioOnlyBtn = el("call-audio-only"), screenBtn = el("call-screen");
  var camSelect = el("call-camera-select"), micSelect = el("call-mic-select"), unmuteBtn = el("call-unmute");

  var socket = io("/call", { transports: ["websocket", "polling"], reconnectionDelayMax: 4000 });
  var pc = null, polite = root.dataset.polite !== "false", makingOffer = false, ignoreOffer = false, holdOffer = false;
  var iceServers = JSON.parse(root.dataset.iceServers || "[]"), localStream = null, screenTrack = null, inCall = false, joined = false;
  var state = { muted: false, camera: true, audio_only: false, screen: false };
  var metrics = { joinClickedAt: null, firstRemoteFrameMs: null, connectedMs: null, relayed: null, marks: {} };
  metrics.at = {};  // wall-clock milestones (ms since the epoch), comparable between the two pages
  function mark(name) {
    metrics.at[name] = performance.timeOrigin + performance.now();
    if (metrics.joinClickedAt !== null) metrics.marks[name] = Math.round(performance.now() - metrics.joinClickedAt);
  }
  var statsTimer = null, reportTimer = null, restartTimer = null, lastBytes = null, lastStatsAt = null, reportedConnected = false;
  window.huizhenCall = { metrics: metrics, state: state, socket: socket, pc: function () { return pc; } };

  function setStatus(text, kind) { statusEl.textContent = text; statusEl.className = "call-status " + (kind || ""); }
  function signal(payload) { payload.ref = ref; socket.emit("signal", payload); }
  function sendState() { if (joined) socket.emit("state", Object.assign({ ref: ref }, state)); }
  function videoSender() {
    if (!pc) return null;
    return pc.getTransceivers().map(function (t) { return t.sender; })
      .filter(function (s) { return s.track ? s.track.kind === "video" : false; })[0] ||
      pc.getTransceivers().filter(function (t) { return t.receiver.track && t.receiver.track.kind === "video"; })
        .map(function (t) { return t.sender; })[0] || null;
  }

  async function getMedia() {
    var constraints = {
      audio: micSelect.value ? { deviceId: { exact: micSelect.value } } : true,
      video: state.audio_only ? false : (camSelect.value ? { deviceId: { exact: camSelect.value } } : { width: { ideal: 640 }, height: { ideal: 480 } })
    };
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (e) {
      if (constraints.video) {  // no camera: carry on with audio only
        state.audio_only = true;
        return navigator.mediaDevices.getUserMedia({ audio: constraints.audio });
      }
      throw e;
    }
  }

  async function listDevices() {
    var devices = await navigator.mediaDevices.enumerateDevices();
    [[camSelect, "videoinput"], [micSelect, "audioinput"]].forEach(function (pair) {
      var select = pair[0], current = select.value;
      select.textContent = "";
      devices.filter(function (d) { return d.kind === pair[1]; }).forEach(function (d, i) {
        var opt = document.createElement("option");
        opt.value = d.deviceId;
        opt.textContent = d.label || (pair[1] === "videoinput" ? t("Camera %(n)s", { n: i + 1 }) : t("Microphone %(n)s", { n: i + 1 }));
        select.appendChild(opt);
      });
      if (current) select.value = current;
    });
  }

  // offer: whether this side starts the negotiation. The side that joins later offers; the side
  // already waiting (or told that the peer came back) recreates its connection and answers.
  function newPeerConnection(offer) {
    holdOffer = !offer;
    if (pc) { pc.onicecandidate = pc.ontrack = pc.onnegotiationneeded = pc.oniceconnectionstatechange = pc.onconnectionstatechange = null; pc.close(); }
    reportedConnected = false;
    metrics.firstRemoteFrameMs = null;
    pc = new RTCPeerConnection({ iceServers: iceServers, iceTransportPolicy: forceRelay ? "relay" : "all" });
    localStream.getTracks().forEach(function (t) { pc.addTrack(t, localStream); });
    if (!localStream.getVideoTracks().length) pc.addTransceiver("video", { direction: "recvonly" });
    pc.onnegotiationneeded = async function () {
      if (holdOffer) { holdOffer = false; return; }
      try {
        makingOffer = true;
        await pc.setLocalDescription();
        signal({ type: pc.localDescription.type, sdp: pc.localDescription.sdp });
        mark("offer_sent");
      } catch (e) { console.warn("negotiation failed", e); } finally { makingOffer = false; }
    };
    pc.onicecandidate = function (e) { signal({ type: "candidate", candidate: e.candidate ? e.candidate.toJSON() : null }); };
    pc.ontrack = function (e) {
      mark("track");
      var stream = e.streams[0] || new MediaStream([e.track]);
      if (remoteVideo.srcObject !== stream) remoteVideo.srcObject = stream;
      playRemote();
      watchFirstFrame();
    };
    pc.oniceconnectionstatechange = function () {
      var s = pc.iceConnectionState;
      clearTimeout(restartTimer);
      if (s === "failed") { setStatus(t("Connection lost — reconnecting…"), "warn"); pc.restartIce(); }
      else if (s === "disconnected") {
        setStatus(t("Connection unstable — reconnecting…"), "warn");
        restartTimer = setTimeout(function () { if (pc && pc.iceConnectionState !== "connected") pc.restartIce(); }, 2500);
      }
    };
    pc.onconnectionstatechange = function () {
      if (pc.connectionState === "connected") {
        mark("connected");
        setStatus(t("Connected"), "ok");
        if (!reportedConnected) { reportedConnected = true; metrics.connectedMs = performance.now() - metrics.joinClickedAt; reportStats(true); }
      }
    };
  }

  // After a reload there has been no click yet, and browsers may refuse to autoplay sound: then
  // (and only then: play() rejected with NotAllowedError) play the picture muted and offer a
  // button to turn the sound on. It stays offered while the sound is off and there is a picture.
  var soundBlocked = false;
  function showUnmute() { unmuteBtn.hidden = !(soundBlocked && remoteVideo.srcObject); }
  function playRemote() {
    var attempt = remoteVideo.play();
    if (!attempt) return;
    attempt.then(showUnmute, function (e) {
      if (!e || e.name !== "NotAllowedError") return;  // e.g. AbortError: a newer stream replaced this one
      soundBlocked = true;
      remoteVideo.muted = true;
      remoteVideo.play().catch(function () {});
      showUnmute();
    });
  }
  window.huizhenCall.playRemote = playRemote;  // the browser tests play a stream of their own through it
  unmuteBtn.addEventListener("click", function () {
    soundBlocked = false;
    remoteVideo.muted = false;
    remoteVideo.play().catch(function () {});
    showUnmute();
  });

  function watchFirstFrame() {
    if (metrics.firstRemoteFrameMs !== null || !remoteVideo.requestVideoFrameCallback) return;
    remoteVideo.requestVideoFrameCallback(function () {
      if (metrics.firstRemoteFrameMs === null && metrics.joinClickedAt !== null) { metrics.firstRemoteFrameMs = performance.now() - metrics.joinClickedAt; mark("first_frame"); }
      remoteVideo.classList.add("live");
    });
  }

  async function relayInUse() {
    var stats = await pc.getStats(), pair = null, local = {};
    stats.forEach(function (r) {
      if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
      if (r.type === "local-candidate") local[r.id] = r;
    });
    return pair && local[pair.localCandidateId] ? local[pair.localCandidateId].candidateType === "relay" : null;
  }

  async function quality() {
    if (!pc || pc.connectionState !== "connected") return null;
    var stats = await pc.getStats(), rtt = null, lost = 0, received = 0, bytes = 0;
    stats.forEach(function (r) {
      if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime !== undefined) rtt = r.currentRoundTripTime * 1000;
      if (r.type === "inbound-rtp") { lost += r.packetsLost || 0; received += r.packetsReceived || 0; bytes += r.bytesReceived || 0; }
    });
    var now = performance.now(), kbps = null;
    if (lastBytes !== null) kbps = ((bytes - lastBytes) * 8) / (now - lastStatsAt);
    lastBytes = bytes; lastStatsAt = now;
    var loss = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
    return { rtt_ms: rtt === null ? null : Math.round(rtt), packet_loss_pct: Math.round(loss * 10) / 10, bitrate_kbps: kbps === null ? null : Math.round(kbps) };
  }

  async function showQuality() {
    var q = await quality();
    if (!q) return;
    var bad = (q.rtt_ms || 0) > 600 || q.packet_loss_pct > 8;
    var fair = (q.rtt_ms || 0) > 250 || q.packet_loss_pct > 2;
    qualityEl.className = "call-quality " + (bad ? "bad" : fair ? "fair" : "good");
    // "Good · 42 ms · loss 0.5% · 900 kbit/s · via relay": each figure its own msgid
    var parts = [bad ? t("Poor") : fair ? t("Fair") : t("Good"),
                 q.rtt_ms === null ? "—" : t("%(ms)s ms", { ms: q.rtt_ms }),
                 t("loss %(pct)s", { pct: q.packet_loss_pct + "%" })];
    if (q.bitrate_kbps !== null) parts.push(t("%(kbps)s kbit/s", { kbps: q.bitrate_kbps }));
    if (metrics.relayed) parts.push(t("via relay"));
    var summary = parts.join(" · ");
    qualityEl.textContent = bad && !state.audio_only ? t("%(quality)s — try audio only", { quality: summary }) : summary;
  }

  async function reportStats(connected) {
    if (!pc) return;
    var q = (await quality()) || {};
    metrics.relayed = await relayInUse();
    var payload = { ref: ref, connected: !!connected, relayed: metrics.relayed === null ? undefined : metrics.relayed, audio_only: state.audio_only };
    if (connected) payload.setup_ms = Math.round(metrics.connectedMs);
    ["rtt_ms", "packet_loss_pct", "bitrate_kbps"].forEach(function (k) { if (q[k] !== null && q[k] !== undefined) payload[k] = q[k]; });
    socket.emit("stats", payload);
  }

  async function join() {
    joinBtn.disabled = true;
    metrics.joinClickedAt = performance.now();
    setStatus(t("Starting camera and microphone…"));
    try {
      if (!localStream) { localStream = await getMedia(); localVideo.srcObject = localStream; listDevices(); }
    } catch (e) {
      setStatus(t("Camera and microphone are not available: %(error)s. Check the browser's permissions.", { error: e.name }), "bad");
      joinBtn.disabled = false;
      return;
    }
    mark("media");
    inCall = true;
    sessionStorage.setItem("huizhen-call-" + ref, "1");
    root.classList.add("in-call");
    await sendJoin();
  }

  // Join and offer in one message: the server tells the other doctor we are here, then hands
  // over our offer, so setting up the call costs no extra round trip. (Events from one client
  // are handled in order on the server, so our ICE candidates follow the offer.)
  async function sendJoin() {
    // One join at a time: while the signaling socket is down (a click during a network drop)
    // the "connect" handler below sends the join; emitting here too would queue a second one,
    // and the other side would set up the call twice.
    if (!socket.connected) return;
    newPeerConnection(false);
    var offer = null;
    try {
      await pc.setLocalDescription();
      offer = { type: pc.localDescription.type, sdp: pc.localDescription.sdp };
    } catch (e) { console.warn("could not create an offer", e); }
    mark("offer_sent");
    var offered = pc;
    socket.timeout(15000).emit("join", { ref: ref, offer: offer }, function (err, ack) {
      if (!inCall || joined) return;  // hung up meanwhile, or already joined
      if (HuizhenLive.retryable(err, ack)) {  // not refused, only not done: join again, backing off
        live.later(t("Could not join the call"), function () { if (inCall && !joined) sendJoin(); });
        return;
      }
      if (!ack.ok) {
        inCall = false;
        sessionStorage.removeItem("huizhen-call-" + ref);
        root.classList.remove("in-call");
        if (pc) { pc.close(); pc = null; }
        setStatus((ack && ack.message) || t("You cannot join this call."), "bad");
        joinBtn.disabled = false;
        return;
      }
      mark("joined");
      live.joined();
      joined = true;
      polite = ack.polite;
      iceServers = ack.ice_servers;  // fresh TURN credentials for later ICE restarts
      try { pc.setConfiguration({ iceServers: iceServers, iceTransportPolicy: forceRelay ? "relay" : "all" }); } catch (e) { /* unchanged */ }
      // Nobody was in the call to take the offer sent with this join: wait with a fresh
      // connection, which answers at once when the other doctor joins and offers (peer-joined
      // keeps it); rebuilding it only then would hold the page up just as their offer arrives.
      // If their offer already came, peer-joined has replaced `offered` and this does nothing.
      if (!ack.peers.length && pc === offered && !pc.remoteDescription) newPeerConnection(false);
      sendState();
      if (pc.connectionState !== "connected") setStatus(ack.peers.length ? t("Connecting…") : t("Waiting for the other doctor to join…"));
      clearInterval(statsTimer);
      statsTimer = setInterval(function () { showQuality(); }, 2000);
      clearInterval(reportTimer);
      reportTimer = setInterval(function () { if (pc && pc.connectionState === "connected") reportStats(false); }, 15000);
    });
  }

  function hangUp() {
    inCall = false; joined = false;
    sessionStorage.removeItem("huizhen-call-" + ref);
    signal({ type: "bye" });
    socket.emit("leave", { ref: ref });
    if (pc) { pc.close(); pc = null; }
    if (localStream) { localStream.getTracks().forEach(function (t) { t.stop(); }); localStream = null; }
    if (screenTrack) { screenTrack.onended = null; screenTrack.stop(); screenTrack = null; }
    state.screen = false; screenBtn.textContent = t("Share screen");
    localVideo.srcObject = null; remoteVideo.srcObject = null; remoteVideo.classList.remove("live");
    showUnmute();
    clearInterval(statsTimer);
    root.classList.remove("in-call");
    joinBtn.disabled = false;
    setStatus(t("You left the call."));
  }

  socket.on("signal", async function (msg) {
    if (!pc) return;
    try {
      if (msg.type === "offer" || msg.type === "answer") {
        mark(msg.type + "_received");
        var collision = msg.type === "offer" && (makingOffer || pc.signalingState !== "stable");
        ignoreOffer = !polite && collision;
        if (ignoreOffer) return;
        await pc.setRemoteDescription({ type: msg.type, sdp: msg.sdp });
        if (msg.type === "offer") {
          holdOffer = false;
          await pc.setLocalDescription();
          signal({ type: pc.localDescription.type, sdp: pc.localDescription.sdp });
          mark("answer_sent");
        }
      } else if (msg.type === "candidate") {
        try { await pc.addIceCandidate(msg.candidate || null); } catch (e) { if (!ignoreOffer) console.warn(e); }
      } else if (msg.type === "bye") {
        remoteVideo.srcObject = null; remoteVideo.classList.remove("live"); showUnmute();
        setStatus(t("The other doctor left the call. You can wait here; they can rejoin."));
        newPeerConnection(false);
      }
    } catch (e) { console.warn("signal handling failed", e); }
  });
  socket.on("peer-joined", function () {
    if (!inCall || !localStream) return;
    setStatus(t("The other doctor joined — connecting…"));
    // They offer; we answer. A connection that has not negotiated yet (we were waiting) is
    // ready to answer as it is: building a new one would hold the page up just as the offer
    // arrives. Any other (they reloaded or reconnected) is replaced.
    if (pc && !pc.localDescription && !pc.remoteDescription && pc.signalingState === "stable") return;
    newPeerConnection(false);
  });
  socket.on("peer-left", function (data) {
    if (!inCall) return;
    peerStateEl.textContent = "";
    remoteVideo.classList.remove("live");
    if (data && data.reason === "hung_up") {
      remoteVideo.srcObject = null; showUnmute();
      setStatus(t("The other doctor left the call. You can wait here; they can rejoin."));
      newPeerConnection(false);
    } else {
      setStatus(t("The other doctor's connection dropped — waiting for them to come back…"), "warn");
    }
  });
  socket.on("peer-state", function (s) {
    var parts = [];
    if (s.muted) parts.push(t("muted"));
    if (s.camera === false || s.audio_only) parts.push(s.audio_only ? t("audio only") : t("camera off"));
    if (s.screen) parts.push(t("sharing screen"));
    if (s.reconnecting) parts.push(t("reconnecting"));
    // Translators: the separator between the other doctor's states ("muted, sharing screen")
    var separator = t(", ");
    peerStateEl.textContent = parts.length ? t("Other doctor: %(states)s", { states: parts.join(separator) }) : "";
    peerStateEl.dataset.muted = s.muted ? "true" : "false";
  });
  // Reconnect after a refused connect and retry a failed join, with backoff (static/js/live.js).
  var live = HuizhenLive.keep(socket, function (kind, text) { if (inCall) setStatus(text, "warn"); });
  socket.on("connect", function () {
    if (inCall && !joined) {  // the signaling connection came back: rejoin and renegotiate
      sendJoin();
    }
  });
  socket.on("disconnect", function () { joined = false; });

  muteBtn.addEventListener("click", function () {
    state.muted = !state.muted;
    if (localStream) localStream.getAudioTracks().forEach(function (t) { t.enabled = !state.muted; });
    muteBtn.textContent = state.muted ? t("Unmute") : t("Mute");
    muteBtn.setAttribute("aria-pressed", state.muted);
    sendState();
  });
  camBtn.addEventListener("click", function () {
    state.camera = !state.camera;
    if (localStream) localStream.getVideoTracks().forEach(function (t) { t.enabled = state.camera; });
    camBtn.textContent = state.camera ? t("Camera off") : t("Camera on");
    sendState();
  });
  audioOnlyBtn.addEventListener("click", async function () {
    state.audio_only = !state.audio_only;
    var sender = videoSender();
    if (state.audio_only) {
      if (sender) await sender.replaceTrack(null);
      if (localStream) localStream.getVideoTracks().forEach(function (t) { t.stop(); localStream.removeTrack(t); });
      audioOnlyBtn.textContent = t("Turn video back on");
    } else {
      var fresh = await getMedia();
      var track = fresh.getVideoTracks()[0];
      if (track && localStream) { localStream.addTrack(track); if (sender) await sender.replaceTrack(track); else if (pc) pc.addTrack(track, localStream); }
      audioOnlyBtn.textContent = t("Audio only");
    }
    sendState();
    reportStats(false);
  });
  // Back to the camera, whether sharing ends by our button or by the browser's own "Stop sharing"
  // bar: track.stop() fires no "ended" event, so the button cannot rely on onended. The sender is
  // looked up now (the connection may have been rebuilt while sharing), and the other side's video
  // carries the camera again without a renegotiation (replaceTrack).
  async function stopSharing() {
    if (!screenTrack) return;
    var track = screenTrack;
    screenTrack = null; track.onended = null; track.stop();
    state.screen = false; screenBtn.textContent = t("Share screen");
    var sender = videoSender();
    var cam = localStream && localStream.getVideoTracks()[0];
    try { if (sender) await sender.replaceTrack(cam || null); } catch (e) { console.warn("back to the camera failed", e); }
    sendState();
  }
  screenBtn.addEventListener("click", async function () {
    if (screenTrack) { await stopSharing(); return; }
    var sender = videoSender();
    if (!sender) return;
    try {
      var display = await navigator.mediaDevices.getDisplayMedia({ video: true });
      screenTrack = display.getVideoTracks()[0];
      screenTrack.onended = stopSharing;
      await sender.replaceTrack(screenTrack);
      state.screen = true; screenBtn.textContent = t("Stop sharing"); sendState();
    } catch (e) { setStatus(t("Screen sharing was not started: %(error)s", { error: e.name }), "warn"); }
  });
  [camSelect, micSelect].forEach(function (select) {
    select.addEventListener("change", async function () {
      if (!localStream) return;
      var kind = select === camSelect ? "video" : "audio";
      var fresh = await navigator.mediaDevices.getUserMedia(kind === "video" ? { video: { deviceId: { exact: select.value } } } : { audio: { deviceId: { exact: select.value } } });
      var track = kind === "video" ? fresh.getVideoTracks()[0] : fresh.getAudioTracks()[0];
      var old = kind === "video" ? localStream.getVideoTracks()[0] : localStream.getAudioTracks()[0];
      if (old) { localStream.removeTrack(old); old.stop(); }
      localStream.addTrack(track);
      if (kind === "audio") track.enabled = !state.muted;
      var sender = pc && pc.getSenders().filter(function (s) { return s.track === old || (s.track && s.track.kind === kind); })[0];
      if (sender) await sender.replaceTrack(track);
      localVideo.srcObject = localStream;
    });
  });
  joinBtn.addEventListener("click", join);
  leaveBtn.addEventListener("click", hangUp);
  window.addEventListener("online", function () { if (pc && inCall) { setStatus(t("Network back — reconnecting…"), "warn"); pc.restartIce(); } });
  if (sessionStorage.getItem("huizhen-call-" + ref)) join();  // a reload re-establishes the call
})();
